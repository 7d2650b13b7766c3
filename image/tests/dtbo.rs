#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use pibake_image::dtbo::{apply, compile_all, DtboError};

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/dtbo")
}

/// Pi 4 and Pi 5 base DTBs from Debian's kernel package named by PIBAKE_KERNEL_DEB.
fn base_dtbs(dir: &Path) -> (PathBuf, PathBuf) {
    let deb = std::env::var_os("PIBAKE_KERNEL_DEB").unwrap_or_else(|| {
        panic!("PIBAKE_KERNEL_DEB is not set: point it at Debian trixie's linux-image-6.12*-arm64 .deb (e.g. `apt-get download linux-image-6.12.<n>+deb13-arm64` with an arm64 trixie apt config)")
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
        let name = e.path().expect("path").to_string_lossy().into_owned();
        for want in ["bcm2711-rpi-4-b.dtb", "bcm2712-rpi-5-b.dtb"] {
            if name.ends_with(&format!("/broadcom/{want}")) {
                let mut v = Vec::new();
                e.read_to_end(&mut v).expect("read dtb");
                std::fs::write(dir.join(want), v).expect("write dtb");
                found.push(want);
            }
        }
    }
    let _ = child.wait();
    assert_eq!(
        found.len(),
        2,
        "{} lacks the Pi 4/Pi 5 DTBs under usr/lib/linux-image-*/broadcom/",
        deb.to_string_lossy()
    );
    (
        dir.join("bcm2711-rpi-4-b.dtb"),
        dir.join("bcm2712-rpi-5-b.dtb"),
    )
}

fn fdtget(dtb: &Path, node: &str, prop: &str) -> String {
    run(Command::new("fdtget").arg(dtb).arg(node).arg(prop))
        .trim()
        .to_owned()
}

#[test]
fn overlays_compile_and_apply_to_debian_pi4_dtb() {
    need("dtc", "device-tree-compiler");
    need("fdtoverlay", "device-tree-compiler");
    let d = tmpdir();
    let out = compile_all(&src_dir(), d.path()).unwrap();
    let names: Vec<String> = out
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["disable-bt.dtbo", "gpio-shutdown.dtbo", "pps-gpio.dtbo"]
    );
    // Reproducible outputs.
    let d2 = tmpdir();
    let again = compile_all(&src_dir(), d2.path()).unwrap();
    for (a, b) in out.iter().zip(&again) {
        assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    }
    // Compiled with -@: the parameters' targets are exported for the firmware.
    for o in &out {
        let syms = run(Command::new("fdtget").arg("-p").arg(o).arg("/__fixups__"));
        assert!(!syms.trim().is_empty(), "{} has no fixups", o.display());
    }
    let gs = d.path().join("gpio-shutdown.dtbo");
    assert!(!fdtget(&gs, "/__overrides__", "gpio_pin").is_empty());

    let (pi4, pi5) = base_dtbs(d.path());
    let applied = |o: &str, base: &Path| -> Result<PathBuf, DtboError> {
        let res = d.path().join(format!(
            "{o}-on-{}",
            base.file_name().unwrap().to_string_lossy()
        ));
        apply(base, &d.path().join(format!("{o}.dtbo")), &res).map(|_| res)
    };
    let g = applied("gpio-shutdown", &pi4).unwrap();
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

    let p = applied("pps-gpio", &pi4).unwrap();
    assert_eq!(fdtget(&p, "/pibake_pps", "compatible"), "pps-gpio");
    assert_eq!(
        fdtget(&p, "/pibake_pps", "gpios"),
        format!("{gpio_phandle} 18 0")
    );

    let b = applied("disable-bt", &pi4).unwrap();
    assert_eq!(fdtget(&b, "/soc/serial@7e215040", "status"), "disabled");
    assert_eq!(
        fdtget(&b, "/soc/serial@7e201000/bluetooth", "status"),
        "disabled"
    );
    let tx = fdtget(&b, "/soc/serial@7e201000", "pinctrl-0");
    let gpio14 = fdtget(&b, &fdtget(&b, "/__symbols__", "uart0_gpio14"), "phandle");
    assert_eq!(tx, gpio14, "uart0 not routed to GPIO14/15");
    assert_eq!(fdtget(&b, "/aliases", "serial0"), "/soc/serial@7e201000");

    // Debian's Pi 5 DTB describes no RP1, so no header GPIO controller (`gpio` label) and no
    // PL011 uart0/uart1: none of the three can apply there. This pins that fact: if a
    // future kernel adds RP1, this assertion fails and the overlays can be extended.
    for o in ["gpio-shutdown", "pps-gpio", "disable-bt"] {
        let e = applied(o, &pi5).unwrap_err();
        assert!(e.to_string().contains(o), "{e}");
    }
    let syms = run(Command::new("fdtget")
        .arg("-p")
        .arg(&pi5)
        .arg("/__symbols__"));
    assert!(
        !syms.lines().any(|l| l == "gpio" || l == "uart0"),
        "Pi 5 DTB now has gpio/uart0 symbols: {syms}"
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
