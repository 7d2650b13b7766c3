#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use pibake_image::dtbo::{apply, compile, compile_all, DtboError};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/dtbo")
}

const PI4: &str = "bcm2711-rpi-4-b.dtb";
const PI5_C0: &str = "bcm2712-rpi-5-b.dtb";
const PI5_D0: &str = "bcm2712-d-rpi-5-b.dtb";

/// The upstream base DTBs from the Debian kernel package named by PIBAKE_KERNEL_DEB, written
/// into `dir`: the 7.x `linux-base-<ver>` (usr/lib/modules/<ver>/dtb/broadcom/) or the 6.12
/// `linux-image-<ver>` (usr/lib/linux-image-<ver>/broadcom/): any `/broadcom/<name>` entry.
/// Fails unless all three trees are there (the 6.12 kernel has no D0 tree and no RP1).
fn base_dtbs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let deb = std::env::var_os("PIBAKE_KERNEL_DEB").unwrap_or_else(|| {
        panic!("PIBAKE_KERNEL_DEB is not set: point it at Debian trixie-backports' linux-base-7*-arm64 .deb (the 7.x kernel's DTBs; `cargo xtask test` picks it from the store after `pibake fetch` of examples/lab)")
    });
    need("dpkg-deb", "dpkg");
    let mut child = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run dpkg-deb");
    let mut ar = tar::Archive::new(child.stdout.take().expect("stdout"));
    let mut found = Vec::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        if e.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = e.path().expect("path").to_string_lossy().into_owned();
        for want in [PI4, PI5_C0, PI5_D0] {
            if name.ends_with(&format!("/broadcom/{want}")) && !found.contains(&want) {
                let mut v = Vec::new();
                e.read_to_end(&mut v).expect("read dtb");
                std::fs::write(dir.join(want), v).expect("write dtb");
                found.push(want);
            }
        }
    }
    assert!(child.wait().expect("dpkg-deb").success(), "dpkg-deb failed");
    let missing: Vec<&str> = [PI4, PI5_C0, PI5_D0]
        .into_iter()
        .filter(|w| !found.contains(w))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lacks {missing:?} under .../broadcom/: the Pi 5 overlays need the 7.x kernel's trees (linux-base-7*-arm64)",
        deb.to_string_lossy()
    );
    (dir.join(PI4), dir.join(PI5_C0), dir.join(PI5_D0))
}

fn fdtget(dtb: &Path, node: &str, prop: &str) -> String {
    run(Command::new("fdtget").arg(dtb).arg(node).arg(prop))
        .trim()
        .to_owned()
}

/// Whether `node` has `prop` (booleans such as bias-pull-up are empty properties).
fn has_prop(dtb: &Path, node: &str, prop: &str) -> bool {
    run(Command::new("fdtget").arg("-p").arg(dtb).arg(node))
        .lines()
        .any(|l| l == prop)
}

/// Compiles every overlay into a fresh directory.
fn compiled() -> (tempfile::TempDir, Vec<PathBuf>) {
    need("dtc", "device-tree-compiler");
    need("fdtoverlay", "device-tree-compiler");
    let d = tmpdir();
    let out = compile_all(&src_dir(), d.path()).unwrap();
    (d, out)
}

/// `overlay` (a .dtbo in `dir`) applied to `base`, written beside it.
fn applied(dir: &Path, overlay: &str, base: &Path) -> Result<PathBuf, DtboError> {
    let res = dir.join(format!(
        "{overlay}-on-{}",
        base.file_name().unwrap().to_string_lossy()
    ));
    apply(base, &dir.join(format!("{overlay}.dtbo")), &res).map(|_| res)
}

#[test]
fn overlays_compile_reproducibly_with_exported_targets() {
    let (d, out) = compiled();
    let names: Vec<String> = out
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "bcm2712d0.dtbo",
            "disable-bt.dtbo",
            "gpio-shutdown-pi5.dtbo",
            "gpio-shutdown.dtbo",
            "pps-gpio-pi5.dtbo",
            "pps-gpio.dtbo",
        ]
    );
    // Reproducible outputs.
    let d2 = tmpdir();
    let again = compile_all(&src_dir(), d2.path()).unwrap();
    for (a, b) in out.iter().zip(&again) {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    // Compiled with -@: the base tree's labels are resolved by the firmware.
    for o in &out {
        let syms = run(Command::new("fdtget").arg("-p").arg(o).arg("/__fixups__"));
        assert!(!syms.trim().is_empty(), "{} has no fixups", o.display());
    }
    let gs = d.path().join("gpio-shutdown.dtbo");
    assert!(!fdtget(&gs, "/__overrides__", "gpio_pin").is_empty());
    for (o, params) in [
        (
            "gpio-shutdown-pi5",
            &[
                "gpio_pin",
                "active_low",
                "debounce",
                "pull_up",
                "pull_down",
                "pull_off",
            ][..],
        ),
        (
            "pps-gpio-pi5",
            &[
                "gpiopin",
                "assert_falling_edge",
                "capture_clear",
                "pull_up",
                "pull_down",
            ][..],
        ),
    ] {
        let dtbo = d.path().join(format!("{o}.dtbo"));
        let got = run(Command::new("fdtget")
            .arg("-p")
            .arg(&dtbo)
            .arg("/__overrides__"));
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, params, "{o}'s parameters");
    }
}

#[test]
fn pi4_overlays_apply_to_the_pi4_tree_only() {
    let (d, _) = compiled();
    let (pi4, c0, d0) = base_dtbs(d.path());
    let dir = d.path();
    let g = applied(dir, "gpio-shutdown", &pi4).unwrap();
    assert_eq!(
        fdtget(&g, "/pibake_power_button", "compatible"),
        "gpio-keys"
    );
    assert_eq!(
        fdtget(&g, "/pibake_power_button/power_key", "linux,code"),
        "116"
    );
    assert_eq!(
        fdtget(&g, "/pibake_power_button/power_key", "debounce-interval"),
        "100"
    );
    let gpio_phandle = fdtget(&g, "/soc/gpio@7e200000", "phandle");
    assert_eq!(
        fdtget(&g, "/pibake_power_button/power_key", "gpios"),
        format!("{gpio_phandle} 3 1")
    );
    assert_eq!(
        fdtget(
            &g,
            "/soc/gpio@7e200000/pibake_power_button_pins",
            "brcm,pull"
        ),
        "2"
    );

    let p = applied(dir, "pps-gpio", &pi4).unwrap();
    assert_eq!(fdtget(&p, "/pibake_pps", "compatible"), "pps-gpio");
    assert_eq!(
        fdtget(&p, "/pibake_pps", "gpios"),
        format!("{gpio_phandle} 18 0")
    );

    let b = applied(dir, "disable-bt", &pi4).unwrap();
    assert_eq!(fdtget(&b, "/soc/serial@7e215040", "status"), "disabled");
    assert_eq!(
        fdtget(&b, "/soc/serial@7e201000/bluetooth", "status"),
        "disabled"
    );
    let tx = fdtget(&b, "/soc/serial@7e201000", "pinctrl-0");
    let gpio14 = fdtget(&b, &fdtget(&b, "/__symbols__", "uart0_gpio14"), "phandle");
    assert_eq!(tx, gpio14, "uart0 not routed to GPIO14/15");
    assert_eq!(fdtget(&b, "/aliases", "serial0"), "/soc/serial@7e201000");

    // The upstream Pi 5 trees have RP1's header GPIOs as `rp1_gpio` and no `gpio`, `uart0`
    // or `uart1` label: the Pi 4 overlays cannot apply there (the firmware would skip them).
    for base in [&c0, &d0] {
        for o in ["gpio-shutdown", "pps-gpio", "disable-bt"] {
            let e = applied(dir, o, base).unwrap_err();
            assert!(e.to_string().contains(o), "{e}");
        }
        let syms = run(Command::new("fdtget")
            .arg("-p")
            .arg(base)
            .arg("/__symbols__"));
        assert!(
            !syms
                .lines()
                .any(|l| ["gpio", "uart0", "uart1"].contains(&l)),
            "{} now has gpio/uart0/uart1 symbols",
            base.display()
        );
    }
    // And the Pi 5 ones need RP1: not on the Pi 4 tree.
    for o in ["gpio-shutdown-pi5", "pps-gpio-pi5", "bcm2712d0"] {
        let e = applied(dir, o, &pi4).unwrap_err();
        assert!(e.to_string().contains(o), "{e}");
    }
}

/// The Pi 5 button and PPS nodes in `t` (a Pi 5 tree with gpio-shutdown-pi5 and
/// pps-gpio-pi5 applied), for the given pin, flags, pull and debounce.
fn check_pi5_button(t: &Path, pin: u32, flags: u32, pull: &str, debounce: u32) {
    let rp1_path = fdtget(t, "/__symbols__", "rp1_gpio");
    let rp1 = fdtget(t, &rp1_path, "phandle");
    let key = "/pibake_power_button/power_key";
    assert_eq!(fdtget(t, "/pibake_power_button", "compatible"), "gpio-keys");
    assert_eq!(fdtget(t, "/pibake_power_button", "status"), "okay");
    assert_eq!(fdtget(t, key, "linux,code"), "116");
    assert_eq!(fdtget(t, key, "gpios"), format!("{rp1} {pin} {flags}"));
    assert_eq!(fdtget(t, key, "debounce-interval"), debounce.to_string());
    let pins = format!("{rp1_path}/pibake-power-button-state");
    assert_eq!(
        fdtget(t, "/pibake_power_button", "pinctrl-0"),
        fdtget(t, &pins, "phandle")
    );
    assert_eq!(fdtget(t, &pins, "pins"), format!("gpio{pin}"));
    assert_eq!(fdtget(t, &pins, "function"), "gpio");
    for bias in ["bias-pull-up", "bias-pull-down", "bias-disable"] {
        assert_eq!(has_prop(t, &pins, bias), bias == pull, "{pins} {bias}");
    }
    assert!(!has_prop(t, &pins, "brcm,pins"));
}

fn check_pi5_pps(t: &Path, pin: u32, pull: &str) {
    let rp1_path = fdtget(t, "/__symbols__", "rp1_gpio");
    let rp1 = fdtget(t, &rp1_path, "phandle");
    assert_eq!(fdtget(t, "/pibake_pps", "compatible"), "pps-gpio");
    assert_eq!(fdtget(t, "/pibake_pps", "gpios"), format!("{rp1} {pin} 0"));
    let pins = format!("{rp1_path}/pibake-pps-state");
    assert_eq!(
        fdtget(t, "/pibake_pps", "pinctrl-0"),
        fdtget(t, &pins, "phandle")
    );
    assert_eq!(fdtget(t, &pins, "pins"), format!("gpio{pin}"));
    assert_eq!(fdtget(t, &pins, "function"), "gpio");
    for bias in ["bias-pull-up", "bias-pull-down", "bias-disable"] {
        assert_eq!(has_prop(t, &pins, bias), bias == pull, "{pins} {bias}");
    }
}

#[test]
fn pi5_overlays_apply_to_the_c0_and_d0_trees() {
    let (d, _) = compiled();
    let (_, c0, d0) = base_dtbs(d.path());
    let dir = d.path();
    for base in [&c0, &d0] {
        // The on-board power button stays as it was.
        let onboard = fdtget(base, "/gpio-keys/power-button", "gpios");
        let g = applied(dir, "gpio-shutdown-pi5", base).unwrap();
        check_pi5_button(&g, 3, 1, "bias-pull-up", 100);
        assert_eq!(fdtget(&g, "/gpio-keys/power-button", "gpios"), onboard);
        let p = applied(dir, "pps-gpio-pi5", base).unwrap();
        check_pi5_pps(&p, 18, "bias-disable");
        assert!(!has_prop(&p, "/pibake_pps", "assert-falling-edge"));
        // Both at once (the usual cluster node), on top of each other.
        let both = applied(dir, "pps-gpio-pi5", &g).unwrap();
        check_pi5_button(&both, 3, 1, "bias-pull-up", 100);
        check_pi5_pps(&both, 18, "bias-disable");
    }
    // On a D0 board the firmware applies bcm2712d0 first, then config.txt's overlays.
    let d0_made = applied(dir, "bcm2712d0", &c0).unwrap();
    let g = applied(dir, "gpio-shutdown-pi5", &d0_made).unwrap();
    check_pi5_button(&g, 3, 1, "bias-pull-up", 100);
}

/// The firmware's parameter syntax, as documented for config.txt `dtoverlay=name,param=value`
/// (integer cells `prop:offset`, booleans `prop?`, inverted booleans `prop!`, string lookup
/// tables `prop{key=value,...}`), applied to a copy of `dtbo` as the firmware does before
/// merging. Only those forms (the ones pibake's overlays use) are implemented; anything
/// else fails the test. Returns the patched copy, or an error for an unknown parameter or a
/// value the lookup table rejects.
fn with_params(dtbo: &Path, params: &[(&str, &str)]) -> Result<PathBuf, String> {
    let out = dtbo.with_extension(format!(
        "{}.dtbo",
        params
            .iter()
            .map(|(k, v)| format!("{k}-{v}"))
            .collect::<Vec<_>>()
            .join("_")
    ));
    std::fs::copy(dtbo, &out).unwrap();
    // phandle -> node path, from the overlay's own labels.
    let mut nodes = BTreeMap::new();
    let syms = run(Command::new("fdtget")
        .arg("-p")
        .arg(&out)
        .arg("/__symbols__"));
    for label in syms.lines() {
        let path = fdtget(&out, "/__symbols__", label);
        nodes.insert(fdtget(&out, &path, "phandle"), path);
    }
    for (param, value) in params {
        let known = run(Command::new("fdtget")
            .arg("-p")
            .arg(&out)
            .arg("/__overrides__"));
        if !known.lines().any(|l| l == *param) {
            return Err(format!("unknown parameter {param}"));
        }
        let raw = run(Command::new("fdtget")
            .args(["-t", "bx"])
            .arg(&out)
            .arg("/__overrides__")
            .arg(param));
        let bytes: Vec<u8> = raw
            .split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let phandle = u32::from_be_bytes(rest[..4].try_into().unwrap()).to_string();
            let end = rest[4..].iter().position(|&b| b == 0).unwrap();
            let spec = std::str::from_utf8(&rest[4..4 + end]).unwrap().to_owned();
            rest = &rest[4 + end + 1..];
            let node = nodes
                .get(&phandle)
                .unwrap_or_else(|| panic!("{param}: no labelled node has phandle {phandle}"));
            let truth = matches!(*value, "" | "1" | "on" | "true" | "yes" | "y");
            let put = |args: &[&str]| {
                run(Command::new("fdtput").args(args));
            };
            let file = out.to_str().unwrap();
            if let Some(prop) = spec.strip_suffix('?').or(spec.strip_suffix('!')) {
                let set = truth == spec.ends_with('?');
                if set {
                    put(&[file, node, prop]);
                } else if has_prop(&out, node, prop) {
                    put(&["-d", file, node, prop]);
                }
            } else if let Some((prop, table)) = spec.split_once('{') {
                let table = table.strip_suffix('}').expect("lookup table closes");
                let mapped = table
                    .split(',')
                    .find_map(|kv| kv.split_once('=').filter(|(k, _)| k == value))
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("{param}={value}: not in the lookup table"))?;
                put(&["-t", "s", file, node, prop, mapped]);
            } else if let Some((prop, offset)) = spec.split_once(':') {
                let offset: usize = offset.parse().expect("byte offset");
                assert_eq!(offset % 4, 0, "{spec}: cell-aligned offsets only");
                // Hex: an unresolved phandle (0xffffffff) would print as -1.
                let mut cells: Vec<String> = run(Command::new("fdtget")
                    .args(["-t", "x"])
                    .arg(&out)
                    .arg(node)
                    .arg(prop))
                .split_whitespace()
                .map(str::to_owned)
                .collect();
                let v: u32 = value.parse().map_err(|_| format!("{param}={value}"))?;
                cells[offset / 4] = format!("{v:x}");
                let mut args = vec!["-t", "x", file, node, prop];
                args.extend(cells.iter().map(String::as_str));
                put(&args);
            } else {
                panic!("{param}: parameter form {spec:?} not implemented here");
            }
        }
    }
    Ok(out)
}

#[test]
fn pi5_overlay_parameters_reach_their_targets() {
    let (d, _) = compiled();
    let (_, c0, _) = base_dtbs(d.path());
    let dir = d.path();
    let gs = dir.join("gpio-shutdown-pi5.dtbo");
    let pps = dir.join("pps-gpio-pi5.dtbo");
    let on_c0 = |o: &Path| {
        let res = o.with_extension("on-c0.dtb");
        apply(&c0, o, &res).unwrap();
        res
    };

    // pibake's Pi 5 line: dtoverlay=gpio-shutdown-pi5,debounce=3000
    let t = on_c0(&with_params(&gs, &[("debounce", "3000")]).unwrap());
    check_pi5_button(&t, 3, 1, "bias-pull-up", 3000);
    let t = on_c0(
        &with_params(
            &gs,
            &[("gpio_pin", "17"), ("active_low", "0"), ("pull_down", "on")],
        )
        .unwrap(),
    );
    check_pi5_button(&t, 17, 0, "bias-pull-down", 100);
    let t = on_c0(&with_params(&gs, &[("pull_off", "on")]).unwrap());
    check_pi5_button(&t, 3, 1, "bias-disable", 100);
    // Pins outside the header's GPIO0-27 are refused by the lookup table.
    assert!(with_params(&gs, &[("gpio_pin", "28")])
        .unwrap_err()
        .contains("lookup"));
    assert!(with_params(&gs, &[("gpio_pull", "2")])
        .unwrap_err()
        .contains("unknown parameter"));

    let t = on_c0(&with_params(&pps, &[("gpiopin", "4"), ("pull_up", "on")]).unwrap());
    check_pi5_pps(&t, 4, "bias-pull-up");
    let t = on_c0(&with_params(&pps, &[("assert_falling_edge", "on")]).unwrap());
    check_pi5_pps(&t, 18, "bias-disable");
    assert!(has_prop(&t, "/pibake_pps", "assert-falling-edge"));
}

/// A device tree as node path -> property -> value, from `dtc -I dtb -O dts -s` (sorted;
/// dtc prints one property a line).
type Tree = BTreeMap<String, BTreeMap<String, String>>;

fn tree(dtb: &Path) -> Tree {
    let dts = run(Command::new("dtc")
        .args(["-q", "-I", "dtb", "-O", "dts", "-s"])
        .arg(dtb));
    let mut t = Tree::new();
    let mut path: Vec<String> = Vec::new();
    let join = |p: &[String]| {
        if p.len() <= 1 {
            "/".to_owned()
        } else {
            p[1..].iter().fold(String::new(), |s, n| format!("{s}/{n}"))
        }
    };
    for line in dts.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("/dts-v1/") || line.starts_with("/memreserve/") {
            continue;
        }
        if let Some(name) = line.strip_suffix(" {") {
            path.push(name.to_owned());
            t.entry(join(&path)).or_default();
        } else if line == "};" {
            path.pop().expect("balanced braces");
        } else {
            let prop = line.strip_suffix(';').expect("a property line ends with ;");
            let (name, value) = prop.split_once(" = ").unwrap_or((prop, ""));
            t.entry(join(&path))
                .or_default()
                .insert(name.to_owned(), value.to_owned());
        }
    }
    assert!(path.is_empty(), "unbalanced dts from {}", dtb.display());
    t
}

/// Differences between two trees, one a line, beyond `allowed` (node path, property).
fn differences(made: &Tree, want: &Tree, allowed: &[(&str, &str, &str)]) -> Vec<String> {
    let ok = |node: &str, prop: &str| allowed.iter().any(|(n, p, _)| *n == node && *p == prop);
    let mut out = Vec::new();
    for node in made
        .keys()
        .chain(want.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (made.get(node), want.get(node)) {
            (Some(_), None) => out.push(format!("node {node} only in the overlaid C0 tree")),
            (None, Some(_)) => out.push(format!("node {node} missing from the overlaid C0 tree")),
            (Some(a), Some(b)) => {
                for prop in a
                    .keys()
                    .chain(b.keys())
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    if ok(node, prop) {
                        continue;
                    }
                    match (a.get(prop), b.get(prop)) {
                        (x, y) if x == y => {}
                        (x, y) => out.push(format!("{node} {prop}: overlaid C0 {x:?}, D0 {y:?}")),
                    }
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// What fdtoverlay(C0, bcm2712d0) may differ in from the D0 tree, with the reason. Empty:
/// every C0/D0 difference is a property the overlay overwrites or adds (none is a deletion,
/// which an overlay could not do); the overlay declares no labels, so no __symbols__ entry
/// is added; it adds no node, so phandle numbers stay as in both upstream trees. The
/// comparison is exact, phandle values included.
const D0_ALLOWED: &[(&str, &str, &str)] = &[];

fn d0_differences(dir: &Path, dtbo: &Path, c0: &Path, d0: &Path) -> Vec<String> {
    let made = dir.join(format!(
        "{}-on-c0.dtb",
        dtbo.file_stem().unwrap().to_string_lossy()
    ));
    apply(c0, dtbo, &made).unwrap();
    differences(&tree(&made), &tree(d0), D0_ALLOWED)
}

#[test]
fn bcm2712d0_turns_the_c0_tree_into_the_d0_tree() {
    let (d, _) = compiled();
    let (_, c0, d0) = base_dtbs(d.path());
    let dir = d.path();
    // The two upstream trees do differ (else this proves nothing).
    let base_diff = differences(&tree(&c0), &tree(&d0), &[]);
    assert!(base_diff.len() >= 4, "{base_diff:#?}");
    let diff = d0_differences(dir, &dir.join("bcm2712d0.dtbo"), &c0, &d0);
    assert!(
        diff.is_empty(),
        "C0 + bcm2712d0 != D0:\n{}",
        diff.join("\n")
    );

    // A planted fault is caught: the overlay without its last fragment (the UART's
    // interrupt) leaves exactly that difference.
    let src = std::fs::read_to_string(src_dir().join("bcm2712d0.dts")).unwrap();
    let cut = src
        .find("\tfragment@3")
        .expect("fragment@3 in bcm2712d0.dts");
    let planted = format!("{}}};\n", &src[..cut]);
    let pdir = dir.join("planted");
    std::fs::create_dir(&pdir).unwrap();
    std::fs::write(pdir.join("bcm2712d0.dts"), planted).unwrap();
    let pdtbo = compile(&pdir.join("bcm2712d0.dts"), &pdir).unwrap();
    let diff = d0_differences(&pdir, &pdtbo, &c0, &d0);
    assert_eq!(
        diff,
        ["/soc@107c000000/serial@7d001000 interrupts: overlaid C0 Some(\"<0x00 0x79 0x04>\"), D0 Some(\"<0x00 0x78 0x04>\")"],
    );
}

#[test]
fn compile_failure_names_the_overlay() {
    let d = tmpdir();
    let src = d.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::copy(src_dir().join("pps-gpio.dts"), src.join("pps-gpio.dts")).unwrap();
    std::fs::write(
        src.join("broken-thing.dts"),
        "/dts-v1/;\n/plugin/;\n/ { fragment@0 { target = <&gpio>; __overlay__ { x = <1>; } };\n",
    )
    .unwrap();
    let e = compile_all(&src, d.path()).unwrap_err();
    assert!(
        matches!(&e, DtboError::Compile { name, .. } if name == "broken-thing"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("overlay broken-thing: dtc failed"),
        "{e}"
    );
}
