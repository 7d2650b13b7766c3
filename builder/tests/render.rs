//! Golden files for everything rendered for the lab, and the real daemons'
//! verdict on what we render (keepalived -t, chronyd -p).

mod common;

use pibake::boot::KernelFiles;
use pibake::model::{self, Cluster};
use pibake::plan::{self, LockInfo, Selection};
use pibake::render::{EntryKind, LayerEntry};
use pibake::spec::{ImageSpec, PRESET_PATH};
use pibake_firstboot::secrets::Secrets;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn lab() -> Cluster {
    common::enter_workspace();
    let checked = model::load(Path::new("examples/lab/cluster.toml")).expect("lab readable");
    assert!(!checked.has_errors(), "{}", checked.report());
    checked.cluster.expect("lab is valid")
}

/// The plan of `cluster` at the goldens' build epoch (their node tables carry it).
fn plan_of(cluster: &Cluster, selection: &Selection) -> plan::Plan {
    let mut lock = LockInfo::read(&cluster.file).expect("lock info");
    for closure in lock.closures.values_mut() {
        closure.source_date_epoch = 1_700_000_000;
    }
    plan::plan(cluster, &lock, selection).expect("plan")
}

/// The spec of `role`'s image, as `plan` makes it for `build`.
fn spec_of(cluster: &Cluster, role: &str) -> ImageSpec {
    let selection = Selection {
        roles: vec![role.to_string()],
        ..Selection::default()
    };
    let mut plan = plan_of(cluster, &selection);
    assert_eq!(plan.images.len(), 1);
    plan.images.remove(0).spec
}

/// Every generated file of an image as (golden path, text): its layers, the preset the
/// services stage writes, and the node table's files.
fn rendered_files(image: &str, spec: &ImageSpec) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let preset = LayerEntry {
        path: PRESET_PATH.to_string(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        kind: EntryKind::File(spec.services.preset().into_bytes()),
    };
    for entry in spec.layers.iter().flat_map(|l| &l.entries).chain([&preset]) {
        let text = match &entry.kind {
            EntryKind::File(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            EntryKind::Symlink(target) => format!("symlink -> {target}\n"),
            EntryKind::Stored { entry, size } => format!("store entry {entry} ({size} bytes)\n"),
        };
        out.insert(
            format!("{image}/image/{}", entry.path),
            format!(
                "# mode {:04o} uid {} gid {}\n{text}",
                entry.mode, entry.uid, entry.gid
            ),
        );
    }
    for (node, entry) in &spec.node_table.nodes {
        for file in &entry.files {
            out.insert(
                format!("{image}/nodes/{node}{}", file.path),
                format!("# mode {:04o}\n{}", file.mode, file.content),
            );
        }
    }
    out
}

/// The boot files pibake renders, by path on the boot partition, for the
/// placeholder kernel and a fixed root PARTUUID: config.txt and cmdline.txt
/// on a Pi, loader.conf and the loader entry on pc-efi; and the node table.
fn boot_files(spec: &ImageSpec) -> BTreeMap<String, String> {
    let kernel = KernelFiles::placeholder();
    if spec.boot.is_efi() {
        pibake::spec::BootSpec::efi_loader_files(&spec.name, &kernel, "0a1b2c3d-02")
            .expect("the placeholder kernel has an initrd")
    } else {
        BTreeMap::from([
            (
                "config.txt".to_string(),
                spec.boot.config_txt(&spec.name, &kernel),
            ),
            (
                "cmdline.txt".to_string(),
                spec.boot.cmdline_txt("0a1b2c3d-02"),
            ),
        ])
    }
    .into_iter()
    .chain([(
        pibake_firstboot::bootfiles::TABLE_FILE.to_string(),
        spec.node_table.to_toml().expect("the table encodes"),
    )])
    .collect()
}

/// The goldens other tests compare: the lab's plan (below) and picture
/// (picture.rs), and the SBOM renderer's (sbom.rs).
const OTHER_LAB_GOLDENS: [&str; 3] = [
    common::LAB_PLAN_GOLDEN,
    common::LAB_PICTURE_GOLDEN,
    common::SBOM_GOLDEN,
];

#[test]
fn lab_rendered_files_match_goldens() {
    let cluster = lab();
    let mut seen = 0;
    let mut generated = BTreeSet::from(OTHER_LAB_GOLDENS.map(PathBuf::from));
    for role in cluster.roles.keys() {
        let spec = spec_of(&cluster, role);
        for (path, text) in rendered_files(role, &spec) {
            let path = PathBuf::from("tests/golden/lab").join(path);
            common::golden(&path, &text);
            generated.insert(path);
            seen += 1;
        }
        let boot = boot_files(&spec);
        for (name, text) in &boot {
            let path = PathBuf::from(format!("tests/golden/lab/{role}/boot/{name}"));
            common::golden(&path, text);
            generated.insert(path);
        }
        if let Some(config) = boot.get("config.txt") {
            for line in config.lines() {
                assert!(line.len() <= 98, "config.txt line too long: {line}");
            }
            assert_eq!(boot["cmdline.txt"].lines().count(), 1);
        } else {
            let entry = &boot[&pibake_image::efi::entry_path()];
            let parsed = pibake_image::efi::LoaderEntry::parse(entry).expect("entry parses");
            assert_eq!(parsed.root(), Some("PARTUUID=0a1b2c3d-02"));
        }
    }
    assert!(seen > 20, "only {seen} files rendered");
    // A file of a role, node or path the lab no longer renders is stale.
    common::assert_no_stale_goldens(Path::new("tests/golden"), true, |_| true, &generated);
}

fn node_file<'a>(spec: &'a ImageSpec, node: &str, path: &str) -> Option<&'a str> {
    spec.node_table.nodes[node]
        .files
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.content.as_str())
}

/// The GPS node's two refclock choices (overlays/gps), copied by chrony-pps.
const NMEA_ONLY: &str = "/etc/pibake/chrony/nmea-only.conf";
const WITH_PPS: &str = "/etc/pibake/chrony/with-pps.conf";

#[test]
fn only_the_gps_node_gets_gpsd_and_refclocks() {
    let cluster = lab();
    for role in cluster.roles.keys() {
        let rendered = spec_of(&cluster, role);
        for node in rendered.node_table.nodes.keys() {
            let gpsd = node_file(&rendered, node, "/etc/default/gpsd");
            let chrony =
                node_file(&rendered, node, "/etc/chrony/chrony.conf").expect("chrony.conf");
            let sources = [NMEA_ONLY, WITH_PPS].map(|f| node_file(&rendered, node, f));
            if node == "aux1" {
                assert!(gpsd.is_some_and(|g| g.contains("GPSD_OPTIONS=\"-n\"")));
                assert!(
                    !chrony.lines().any(|l| l.starts_with("refclock")),
                    "refclocks baked in:\n{chrony}"
                );
                assert!(chrony.contains("confdir /run/pibake/chrony"));
                assert!(chrony.contains("allow 192.168.188.0/24"));
                for source in sources {
                    assert!(source.is_some_and(
                        |s| s.contains("refclock SOCK /var/run/chrony.clk.ttyAMA0.sock")
                    ));
                }
            } else {
                assert!(gpsd.is_none(), "{node} got a gpsd config");
                assert!(
                    sources.iter().all(Option::is_none),
                    "{node} got GPS refclocks"
                );
                assert!(!chrony.contains("refclock"), "{node} has a refclock");
                assert!(
                    chrony.contains("server 192.168.188.20 iburst prefer minpoll 2 maxpoll 6"),
                    "{node}: {chrony}"
                );
            }
        }
        // gpsd's units are enabled only where the role is the GPS role.
        let preset = rendered.services.preset();
        if role == "aux" {
            assert!(preset.contains("enable gpsd.service"), "{role}: {preset}");
        } else {
            assert!(!preset.contains("enable gpsd"), "{role}: {preset}");
            assert!(preset.contains("disable gpsd.service"), "{role}: {preset}");
            assert!(preset.contains("disable gpsd.socket"), "{role}: {preset}");
        }
    }
}

#[test]
fn two_master_vip_gets_two_distinct_priorities() {
    let cluster = lab();
    let rendered = spec_of(&cluster, "master");
    let mut priorities = Vec::new();
    for node in ["master1", "master2"] {
        let conf =
            node_file(&rendered, node, "/etc/keepalived/keepalived.conf").expect("keepalived.conf");
        let priority = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("priority "))
            .expect("priority line")
            .to_string();
        assert!(
            conf.contains("nopreempt") && conf.contains("state BACKUP"),
            "{conf}"
        );
        priorities.push(priority);
    }
    assert_ne!(priorities[0], priorities[1]);
    // Workers carry no keepalived config.
    let workers = spec_of(&cluster, "worker");
    assert!(node_file(&workers, "worker1", "/etc/keepalived/keepalived.conf").is_none());
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!("{name} is not installed: run `cargo xtask setup` (apt-get install keepalived chrony)");
}

#[test]
fn keepalived_accepts_rendered_configs() {
    let cluster = lab();
    let rendered = spec_of(&cluster, "master");
    let dir = tempfile::tempdir().expect("tempdir");
    let with_password = Secrets::parse("keepalived_password = \"fixture1\"\n").expect("secrets");
    for (node, secrets) in [
        ("master1", Secrets::default()),
        ("master2", Secrets::default()),
        ("master1", with_password.clone()),
    ] {
        // On the board the agent fills secrets in; check both outcomes.
        let conf = secrets
            .fill(node_file(&rendered, node, "/etc/keepalived/keepalived.conf").expect("conf"));
        assert_eq!(
            conf.contains("auth_pass fixture1"),
            secrets.get("keepalived_password").is_some()
        );
        assert!(!conf.contains("@secret") && !conf.contains("@if-secret"));
        // keepalived -t checks script paths too: point the track script at a
        // root-owned executable that exists on the host.
        let conf = conf.replace("/usr/local/libexec/pibake/swarm-manager-check", "/bin/true");
        let path = dir.path().join(format!("{node}.conf"));
        std::fs::write(&path, conf).expect("write");
        let out = Command::new(tool("keepalived"))
            .arg("-t")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run keepalived");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "keepalived -t refused {node}: {stderr}"
        );
    }
    // A planted fault is refused, so the check above can fail.
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "vrrp_instance x {\n    virtual_router_id 999\n}\n").expect("write");
    let out = Command::new(tool("keepalived"))
        .arg("-t")
        .arg("-f")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success(), "keepalived accepted a bad config");
}

#[test]
fn chronyd_parses_rendered_configs() {
    let cluster = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    for role in cluster.roles.keys() {
        let rendered = spec_of(&cluster, role);
        for node in rendered.node_table.nodes.keys() {
            let conf = node_file(&rendered, node, "/etc/chrony/chrony.conf").expect("conf");
            let path = dir.path().join(format!("{node}.conf"));
            std::fs::write(&path, conf).expect("write");
            let out = Command::new(tool("chronyd"))
                .arg("-p")
                .arg("-f")
                .arg(&path)
                .output()
                .expect("run chronyd");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "chronyd -p refused {node}: {stderr}");
            assert!(stdout.contains("rtcsync"), "{node}: {stdout}");
        }
    }
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, "refclock PPS\nserver\n").expect("write");
    let out = Command::new(tool("chronyd"))
        .arg("-p")
        .arg("-f")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success(), "chronyd accepted a bad config");
}

/// chronyd refuses to start with a missing refclock device, so the GPS
/// node's refclocks come from a directory that chrony.service's
/// ExecStartPre fills at each start (overlays/gps): PPS locked to NMEA when
/// /dev/pps0 exists, NMEA alone and selectable when it does not (time
/// degrades, it never stops). chronyd -p reads the result both ways.
#[test]
fn gps_node_offers_the_pps_refclock_only_with_its_device() {
    let cluster = lab();
    let rendered = spec_of(&cluster, "aux");
    let conf = node_file(&rendered, "aux1", "/etc/chrony/chrony.conf").expect("conf");
    assert!(
        !conf.contains("\nrefclock PPS"),
        "PPS refclock baked in:\n{conf}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let confdir = dir.path().join("confd");
    let sources = dir.path().join("sources");
    std::fs::create_dir_all(&sources).expect("mkdir");
    for file in [NMEA_ONLY, WITH_PPS] {
        let text = node_file(&rendered, "aux1", file).expect("GPS refclock file");
        let name = Path::new(file).file_name().expect("name");
        std::fs::write(sources.join(name), text).expect("write");
    }
    let line = "confdir /run/pibake/chrony";
    assert!(conf.contains(line), "{conf}");
    let path = dir.path().join("aux1.conf");
    std::fs::write(
        &path,
        conf.replace(line, &format!("confdir {}", confdir.display())),
    )
    .expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../overlays/gps/root/usr/local/libexec/pibake/chrony-pps");
    let chrony_sees = |device: &Path| -> String {
        let out = Command::new("sh")
            .arg(&script)
            .env("PIBAKE_CHRONY_CONFDIR", &confdir)
            .env("PIBAKE_PPS_DEVICE", device)
            .env("PIBAKE_CHRONY_SOURCES", &sources)
            .output()
            .expect("run chrony-pps");
        assert!(out.status.success(), "{out:?}");
        let parsed = Command::new(tool("chronyd"))
            .arg("-p")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run chronyd");
        assert!(parsed.status.success(), "chronyd -p: {parsed:?}");
        String::from_utf8_lossy(&parsed.stdout).into_owned()
    };
    let nmea = |text: &str| -> String {
        text.lines()
            .find(|l| l.starts_with("refclock SOCK"))
            .unwrap_or_default()
            .to_owned()
    };
    let without = chrony_sees(&dir.path().join("no-pps0"));
    assert!(!without.contains("refclock PPS"), "{without}");
    let alone = nmea(&without);
    assert!(
        alone.contains("refid NMEA") && !alone.contains("noselect"),
        "without PPS, NMEA must be selectable: {without}"
    );
    // Any character device stands in for /dev/pps0.
    let with = chrony_sees(Path::new("/dev/null"));
    assert!(
        with.contains("refclock PPS /dev/pps0 lock NMEA refid GPS"),
        "{with}"
    );
    assert!(
        nmea(&with).contains("noselect"),
        "with PPS, NMEA only numbers the seconds: {with}"
    );
    let again = chrony_sees(&dir.path().join("no-pps0"));
    assert!(
        !again.contains("refclock PPS"),
        "a stale PPS line stayed:\n{again}"
    );
    assert_eq!(
        std::fs::read_dir(&confdir).expect("confdir").count(),
        1,
        "the helper leaves one file in chrony's confdir"
    );

    // systemd accepts the drop-in on Debian's chrony.service.
    let root = tempfile::tempdir().expect("tempdir");
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays/gps/root");
    let dropin = "etc/systemd/system/chrony.service.d/pibake-pps.conf";
    let helper = "usr/local/libexec/pibake/chrony-pps";
    for (from, to) in [
        (overlay.join(dropin), root.path().join(dropin)),
        (overlay.join(helper), root.path().join(helper)),
        (tool("chronyd"), root.path().join("usr/sbin/chronyd")),
    ] {
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    // The host's units (chrony.service and what it orders against).
    std::fs::create_dir_all(root.path().join("usr/lib/systemd")).expect("mkdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(root.path().join("usr/lib/systemd/"))
        .status()
        .expect("cp");
    assert!(status.success());
    {
        use std::os::unix::fs::PermissionsExt;
        let exe = root.path().join(helper);
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg(root.path().join("usr/lib/systemd/system/chrony.service"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("pibake"),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn plan_hashes_are_stable_and_local() {
    let cluster = lab();
    let lock = LockInfo::read(Path::new("examples/lab/cluster.toml")).expect("lock info");
    let per_role = plan::plan(&cluster, &lock, &Selection::default()).expect("plan");
    let again = plan::plan(&cluster, &lock, &Selection::default()).expect("plan");
    assert_eq!(per_role, again);
    let names: Vec<&str> = per_role
        .images
        .iter()
        .map(|i| i.spec.name.as_str())
        .collect();
    assert_eq!(names, ["lab-aux", "lab-master", "lab-worker"]);

    let per_node_sel = Selection {
        per_node: true,
        ..Selection::default()
    };
    let per_node = plan::plan(&cluster, &lock, &per_node_sel).expect("plan");
    assert_eq!(per_node.images.len(), 9);

    let mut moved = cluster.clone();
    moved.nodes.get_mut("worker3").expect("worker3").address =
        "192.168.188.33".parse().expect("ip");
    let moved_role = plan::plan(&moved, &lock, &Selection::default()).expect("plan");
    let moved_node = plan::plan(&moved, &lock, &per_node_sel).expect("plan");
    // No rootfs stage changes.
    assert_eq!(moved_role.rootfs, per_role.rootfs);
    assert_eq!(moved_node.rootfs, per_node.rootfs);
    // Per node: only worker3's image changes.
    for (a, b) in per_node.images.iter().zip(&moved_node.images) {
        assert_eq!(a.spec.name, b.spec.name);
        assert_eq!(
            a.input_hash == b.input_hash,
            a.spec.name != "lab-worker3",
            "{}",
            a.spec.name
        );
    }
    // Per role: only the worker image (its node table) changes.
    for (a, b) in per_role.images.iter().zip(&moved_role.images) {
        assert_eq!(
            a.input_hash == b.input_hash,
            a.spec.name != "lab-worker",
            "{}",
            a.spec.name
        );
    }
    common::golden(Path::new(common::LAB_PLAN_GOLDEN), &per_role.to_table());
}

#[test]
fn wifi_keyfile_takes_its_psk_only_from_secrets() {
    common::enter_workspace();
    let text = std::fs::read_to_string("tests/fixtures/check/valid.toml").expect("fixture");
    let text = text.replace(
        "[roles.worker]",
        "[network.wifi]\nssid = \"labnet\"\ncountry = \"DE\"\n\n[roles.worker]",
    );
    let path = common::workspace_root().join("tests/fixtures/check/wifi.toml");
    std::fs::write(&path, text).expect("write");
    let checked = model::load(Path::new("tests/fixtures/check/wifi.toml")).expect("readable");
    std::fs::remove_file(&path).expect("cleanup");
    assert!(!checked.has_errors(), "{}", checked.report());
    let cluster = checked.cluster.expect("valid");
    let rendered = spec_of(&cluster, "worker");
    let file = rendered.node_table.nodes["w1"]
        .files
        .iter()
        .find(|f| f.path.ends_with("pibake-wifi.nmconnection"))
        .expect("wifi keyfile");
    assert_eq!(file.mode, 0o600);
    assert!(file.content.contains("ssid=labnet"));
    assert!(
        file.content.contains("psk=@secret(wifi_psk)@"),
        "no PSK may be baked: {}",
        file.content
    );
    let secrets = Secrets::parse("wifi_psk = \"fixture-psk-0\"\n").expect("secrets");
    assert!(secrets.fill(&file.content).contains("psk=fixture-psk-0\n"));
    assert!(!Secrets::default().fill(&file.content).contains("psk="));
}

/// A path into a JSON value.
type JsonPath = Vec<serde_json::Value>;

fn leaves(value: &serde_json::Value, at: &mut JsonPath, out: &mut Vec<JsonPath>) {
    use serde_json::Value;
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                at.push(Value::from(key.as_str()));
                leaves(v, at, out);
                at.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                at.push(Value::from(i));
                leaves(v, at, out);
                at.pop();
            }
        }
        _ => out.push(at.clone()),
    }
}

fn leaf_mut<'a>(value: &'a mut serde_json::Value, at: &JsonPath) -> &'a mut serde_json::Value {
    at.iter().fold(value, |v, step| match step {
        serde_json::Value::String(key) => &mut v[key.as_str()],
        other => &mut v[other.as_u64().expect("index") as usize],
    })
}

/// `layers.*.entries.*.path`: the path with indices as `*`.
fn pattern(at: &JsonPath) -> String {
    at.iter()
        .map(|s| s.as_str().map_or("*".to_string(), str::to_string))
        .collect::<Vec<_>>()
        .join(".")
}

/// Values of the leaf's type that differ from it; enum-like strings try every name the
/// model's enums use.
fn candidates(leaf: &serde_json::Value) -> Vec<serde_json::Value> {
    use serde_json::{json, Value};
    const NAMES: [&str; 10] = [
        "rpi4",
        "rpi5",
        "pc-efi",
        "debian",
        "raspberrypi",
        "mbr",
        "gpt",
        "init",
        "manager",
        "worker",
    ];
    match leaf {
        Value::String(s) => {
            let mut out = vec![json!(format!("{s}x"))];
            for (i, c) in s
                .char_indices()
                .filter(|(i, _)| *i == 0 || *i == s.len() - 1)
            {
                let swapped = if c == '1' { '2' } else { '1' };
                out.push(json!(format!("{}{swapped}{}", &s[..i], &s[i + 1..])));
            }
            out.extend(NAMES.iter().filter(|n| *n != s).map(|n| json!(n)));
            out
        }
        Value::Number(n) => {
            let n = n.as_u64().expect("the spec's numbers are unsigned");
            vec![json!(n + 1), json!(n.saturating_sub(1))]
        }
        Value::Bool(b) => vec![json!(!b)],
        Value::Null => vec![json!("x"), json!(1), json!(true)],
        Value::Array(_) => vec![json!(["x"]), json!([1])],
        Value::Object(_) => vec![json!({"x": "x"})],
    }
}

/// Every part of an image's spec reaches its input hash: each leaf of the serialized spec
/// (nested boot fields, layer contents, the node table, services, rootfs...) is changed in
/// turn, read back as a spec, and the hash must change. A field added to `ImageSpec` is in
/// the walk by itself; the round trip fails for one that skips serialization (it would be
/// used by `build` without being hashed).
#[test]
fn every_part_of_the_spec_reaches_the_input_hash() {
    let mut cluster = lab();
    // Give every optional part a value somewhere: a node's own config.txt lines.
    cluster.nodes.get_mut("aux1").expect("aux1").config_txt = vec!["dtparam=audio=off".into()];
    let per_role = plan_of(&cluster, &Selection::default());
    let aux1 = plan_of(
        &cluster,
        &Selection {
            nodes: vec!["aux1".into()],
            ..Selection::default()
        },
    );
    // The fields that stay out of the root hash, as this test knows them: a change to the
    // list must come with a reason (reproducible.rs builds images that differ in the node
    // table around one stored root and compares them with from-scratch builds).
    assert_eq!(
        pibake::spec::NOT_IN_ROOT.as_slice(),
        ["name", "node", "nodes", "node_table"].as_slice()
    );
    let root = common::workspace_root().display().to_string();
    let mut mutated = BTreeSet::new();
    let mut unmutated = BTreeSet::new();
    for image in per_role.images.iter().chain(&aux1.images) {
        let spec = &image.spec;
        assert_eq!(spec.input_hash().expect("hash"), image.input_hash);
        assert_eq!(spec.root_hash().expect("hash"), image.root_hash);
        let json = serde_json::to_value(spec).expect("spec serializes");
        assert!(
            !json.to_string().contains(&root),
            "a host path is in the spec of {}",
            spec.name
        );
        let back: ImageSpec = serde_json::from_value(json.clone()).expect("spec reads back");
        // (Not assert_eq: the spec's Debug is long.)
        assert!(
            back == *spec,
            "a field of {} skips serialization: it would not be hashed",
            spec.name
        );
        let mut all = Vec::new();
        leaves(&json, &mut Vec::new(), &mut all);
        assert!(all.len() > 100, "only {} leaves", all.len());
        for at in all {
            let leaf = leaf_mut(&mut json.clone(), &at).clone();
            let changed = candidates(&leaf).into_iter().find_map(|candidate| {
                let mut value = json.clone();
                *leaf_mut(&mut value, &at) = candidate;
                serde_json::from_value::<ImageSpec>(value)
                    .ok()
                    .filter(|m| m != spec)
            });
            match changed {
                Some(m) => {
                    assert_ne!(
                        m.input_hash().expect("hash"),
                        image.input_hash,
                        "{}: changing {} leaves the input hash alone",
                        spec.name,
                        pattern(&at)
                    );
                    // The root hash too, unless the field stays out of the root.
                    let top = at[0].as_str().unwrap_or_default();
                    let root_changed = m.root_hash().expect("hash") != image.root_hash;
                    assert_eq!(
                        root_changed,
                        !pibake::spec::NOT_IN_ROOT.contains(&top),
                        "{}: changing {} (not in the root: {:?}) changes the root hash: {root_changed}",
                        spec.name,
                        pattern(&at),
                        pibake::spec::NOT_IN_ROOT
                    );
                    mutated.insert(pattern(&at));
                }
                None => {
                    // A null or empty part whose type has no scalar value: another spec
                    // of the lab must have it filled in.
                    assert!(
                        leaf.is_null() || leaf.as_array().is_some_and(Vec::is_empty),
                        "{}: cannot change {} = {leaf}: teach candidates() its type",
                        spec.name,
                        pattern(&at)
                    );
                    unmutated.insert(pattern(&at));
                }
            }
        }
    }
    for p in unmutated {
        assert!(
            mutated.iter().any(|m| m.starts_with(&p)),
            "{p} is empty in every spec of the test, so it is not known to reach the hash"
        );
    }
    // The nested boot fields were among them.
    for p in [
        "boot.gps.gps.pps_gpio",
        "boot.gps.platform",
        "boot.button.hold_ms",
        "boot.platforms.*",
        "boot.node_config_txt.*",
        "boot.table",
        "services.disable.*",
        "rootfs.input_hash",
        "layers.*.entries.*.kind.file.text",
        "node_table.nodes.aux1.address",
        "name",
    ] {
        assert!(mutated.contains(p), "{p} was not changed: {mutated:?}");
    }
}

/// Templates see the README's context table, not the model: the model's host paths (and
/// any field the view leaves out) are not there to render.
#[test]
fn templates_see_the_view_not_the_model() {
    let mut cluster = lab();
    let dir = tempfile::tempdir().expect("tempdir");
    let probe = dir.path().join("probe/root");
    std::fs::create_dir_all(&probe).expect("mkdir");
    cluster.overlays_dir = dir.path().to_path_buf();
    cluster
        .roles
        .get_mut("worker")
        .expect("worker")
        .profile
        .overlays = vec!["probe".into()];
    let render = |template: &str| {
        std::fs::write(probe.join("x.tera"), template).expect("write");
        plan::plan(
            &cluster,
            &LockInfo::read(&cluster.file).expect("lock"),
            &Selection {
                roles: vec!["worker".into()],
                ..Selection::default()
            },
        )
    };
    let ok = render("{{ cluster.name }} {{ cluster.network.subnet }} {{ prefix_len }}\n")
        .expect("the view's fields render");
    let EntryKind::File(text) = &ok.images[0].spec.layers[0].entries[0].kind else {
        panic!("a file")
    };
    assert_eq!(String::from_utf8_lossy(text), "lab 192.168.188.0/24 24\n");
    for hidden in [
        "cluster.file",
        "cluster.overlays_dir",
        "cluster.roles",
        "cluster.nodes",
        "cluster.suite",
    ] {
        let err = render(&format!("{{{{ {hidden} }}}}\n")).expect_err(hidden);
        assert!(err.to_string().contains("render"), "{hidden}: {err}");
    }
}

/// The README's table of template fields, expanded: `cluster.network.subnet, .gateway`
/// names `cluster.network.subnet` and `cluster.network.gateway`.
fn readme_template_fields() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(common::workspace_root().join("README.md")).expect("README");
    let table = readme
        .split("| Field | What it is |")
        .nth(1)
        .expect("README has the template context table");
    let mut fields = BTreeSet::new();
    for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
        let cell = row.split('|').nth(1).expect("a cell");
        let mut parent = String::new();
        for name in cell.split(',').map(|n| n.trim().trim_matches('`')) {
            let full = match name.strip_prefix('.') {
                Some(rest) => format!("{parent}.{rest}"),
                None => name.to_string(),
            };
            parent = full
                .rsplit_once('.')
                .map_or(String::new(), |(p, _)| p.to_string());
            fields.insert(full);
        }
    }
    fields
}

/// Leaf paths of a context: objects are walked, lists and nulls are leaves.
fn context_fields(value: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                context_fields(v, &path, out);
            }
        }
        _ => {
            out.insert(at.to_string());
        }
    }
}

/// The README documents exactly the fields templates see (checked on a VIP holder, the
/// fields of whose `vrrp` are set; a null part, such as the lab's absent Wi-Fi, stands for
/// the fields below it).
#[test]
fn readme_documents_the_template_context() {
    let cluster = lab();
    let documented = readme_template_fields();
    let nodes: Vec<_> = cluster.nodes_of_role("master").collect();
    let scope = pibake::render::ImageScope {
        name: "lab-master",
        role: "master",
        nodes: nodes.clone(),
        build_epoch: 0,
        archives: vec![],
    };
    let json = pibake::render::context_json(&cluster, &scope, Some(nodes[0])).expect("context");
    let mut seen = BTreeSet::new();
    context_fields(&json, "", &mut seen);
    for field in &seen {
        assert!(
            documented.contains(field)
                || documented
                    .iter()
                    .any(|d| d.starts_with(&format!("{field}."))),
            "templates see `{field}`, which the README's table does not list"
        );
    }
    for field in &documented {
        assert!(
            seen.iter()
                .any(|s| s == field || field.starts_with(&format!("{s}."))),
            "the README lists `{field}`, which templates do not see"
        );
    }
}

/// The lab is two architectures: the masters' image is pc-efi on the amd64
/// rootfs, the Pis' on the arm64 one; each stage is hashed from its own
/// closure, so a change to one architecture's closure leaves the other's
/// rootfs (the 10–15 minute emulated one) where it was.
#[test]
fn the_lab_plans_one_rootfs_per_architecture() {
    let cluster = lab();
    let lock = LockInfo::read(Path::new("examples/lab/cluster.toml")).expect("lock info");
    let plan = plan::plan(&cluster, &lock, &Selection::default()).expect("plan");
    let arch_of = |image: &str| {
        let spec = &plan
            .images
            .iter()
            .find(|i| i.spec.name == image)
            .expect(image)
            .spec;
        (
            plan.rootfs[&spec.rootfs.id].arch.as_str(),
            spec.boot.is_efi(),
            spec.boot.table,
        )
    };
    use pibake::model::TableKind;
    assert_eq!(arch_of("lab-master"), ("amd64", true, TableKind::Gpt));
    assert_eq!(arch_of("lab-worker"), ("arm64", false, TableKind::Mbr));
    assert_eq!(arch_of("lab-aux"), ("arm64", false, TableKind::Mbr));
    let master = &plan.rootfs["lab-rootfs-amd64"];
    for package in ["linux-image-amd64", "systemd-boot-efi", "keepalived"] {
        assert!(
            master.packages.contains(package),
            "{package} not in {:?}",
            master.packages
        );
    }
    let pis = &plan.rootfs["lab-rootfs"];
    assert!(pis.packages.contains("raspi-firmware") && !pis.packages.contains("systemd-boot-efi"));
    assert!(pis
        .files
        .contains_key(pibake_image::pi5::INITRAMFS_MODULES_FILE));
    assert!(master.files.is_empty(), "{:?}", master.files.keys());

    // Another amd64 closure (a package updated there) changes the amd64
    // rootfs only.
    let mut amd64_moved = lock.clone();
    let closure = amd64_moved
        .closures
        .get_mut("amd64")
        .expect("amd64 closure");
    closure.closure = pibake::hash::InputHash::of_bytes(b"another amd64 closure");
    let again = plan::plan(&cluster, &amd64_moved, &Selection::default()).expect("plan");
    assert_eq!(again.rootfs["lab-rootfs"], plan.rootfs["lab-rootfs"]);
    assert_ne!(
        again.rootfs["lab-rootfs-amd64"].input_hash,
        master.input_hash
    );
    let worker = |p: &plan::Plan| {
        p.images
            .iter()
            .find(|i| i.spec.name == "lab-worker")
            .map(|i| i.input_hash)
    };
    assert_eq!(worker(&again), worker(&plan));
}

/// `[swarm.stacks]`: the compose files go into the images of the Swarm
/// managers only, as /etc/pibake/stacks/<name>.yml (0644, root), in a
/// `stacks` layer before the node table, which names them; their content is
/// part of the spec, so of the input hash. The other images do not change.
#[test]
fn stacks_go_into_the_manager_images_only() {
    // The lab without its own stack, and then with this one.
    let mut cluster = lab();
    cluster.swarm.stacks.clear();
    let lock = LockInfo::read(Path::new("examples/lab/cluster.toml")).expect("lock info");
    let mut with = cluster.clone();
    let web = "services:\n  web:\n    image: nginx:1.27\n";
    with.swarm.stacks.insert(
        "web".into(),
        model::Stack {
            name: "web".into(),
            compose: PathBuf::from("stacks/web.yml"),
            content: web.into(),
            images: BTreeSet::from(["nginx:1.27".to_owned()]),
        },
    );
    let stack_file = "etc/pibake/stacks/web.yml";
    let carries = |spec: &ImageSpec| {
        spec.layers
            .iter()
            .flat_map(|l| l.entries.iter().map(move |e| (l.overlay.as_str(), e)))
            .find(|(_, e)| e.path == stack_file)
            .map(|(layer, e)| (layer.to_owned(), e.clone()))
    };
    for selection in [
        Selection::default(),
        Selection {
            per_node: true,
            ..Selection::default()
        },
    ] {
        let before = plan::plan(&cluster, &lock, &selection).expect("plan");
        let after = plan::plan(&with, &lock, &selection).expect("plan");
        assert_eq!(before.rootfs, after.rootfs);
        for (a, b) in before.images.iter().zip(&after.images) {
            let spec = &b.spec;
            let manager = spec.nodes.iter().any(|n| with.swarm.managers.contains(n));
            assert_eq!(a.input_hash != b.input_hash, manager, "{}", spec.name);
            match carries(spec) {
                Some((layer, entry)) => {
                    assert!(
                        manager,
                        "{} is no manager's image but carries the stack",
                        spec.name
                    );
                    assert_eq!(layer, "stacks");
                    assert_eq!((entry.mode, entry.uid, entry.gid), (0o644, 0, 0));
                    assert_eq!(entry.kind, EntryKind::File(web.as_bytes().to_vec()));
                    assert_eq!(spec.node_table.swarm.stacks, ["web"], "{}", spec.name);
                    // The node table goes to the boot partition, never into a layer.
                    assert!(spec.layers.iter().all(|l| l.overlay != "node-table"));
                }
                None => {
                    assert!(!manager, "manager image {} lacks the stack", spec.name);
                    assert!(spec.node_table.swarm.stacks.is_empty(), "{}", spec.name);
                    assert_eq!(a.spec, b.spec, "{}", spec.name);
                }
            }
        }
    }
    // Another compose file is another master image.
    let mut edited = with.clone();
    edited.swarm.stacks.get_mut("web").expect("web").content =
        "services:\n  web:\n    image: nginx:1.28\n".into();
    let master = |c: &Cluster| {
        plan::plan(c, &lock, &Selection::default())
            .expect("plan")
            .images
            .into_iter()
            .find(|i| i.spec.name == "lab-master")
            .map(|i| i.input_hash)
    };
    assert_ne!(master(&with), master(&edited));
}
