//! Every validation rule: a small bad cluster file and the exact located
//! report expected (golden, `tests/fixtures/check/<rule>.expected`).

mod common;

use pibake::model;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn report(fixture: &str) -> (bool, String) {
    common::enter_workspace();
    let mut checked = model::load(Path::new(fixture)).expect("fixture readable");
    checked.check_model(pibake::boot::lint);
    (checked.has_errors(), checked.report())
}

fn check_rule(rule: &str, expect_errors: bool, must_contain: &str) {
    let fixture = format!("tests/fixtures/check/{rule}.toml");
    let (has_errors, text) = report(&fixture);
    assert_eq!(
        has_errors, expect_errors,
        "{rule}: errors expected = {expect_errors}\n{text}"
    );
    assert!(
        text.contains(must_contain),
        "{rule}: report lacks `{must_contain}`:\n{text}"
    );
    let findings = ["error:", "warning:", "note:"]
        .iter()
        .any(|kind| text.lines().any(|l| l.starts_with(kind)));
    assert!(
        !findings || text.contains(&format!("--> {fixture}:")),
        "{rule}: the report is not located in the file:\n{text}"
    );
    common::golden(
        Path::new(&format!("tests/fixtures/check/{rule}.expected")),
        &text,
    );
}

#[test]
fn valid_fixture_passes() {
    let (has_errors, text) = report("tests/fixtures/check/valid.toml");
    assert!(!has_errors, "{text}");
    assert!(text.ends_with("0 error(s), 0 warning(s)\n"), "{text}");
}

#[test]
fn lab_passes_with_its_one_warning() {
    let (has_errors, text) = report("examples/lab/cluster.toml");
    assert!(!has_errors, "{text}");
    assert!(text.ends_with("0 error(s), 1 warning(s)\n"), "{text}");
    assert!(
        text.contains("two Swarm managers tolerate zero failures"),
        "{text}"
    );
}

/// One test per rule (`name: "<fixture>", <errors expected>, "<needle>";`)
/// and [`RULES`], the fixtures they check: the goldens of
/// `tests/fixtures/check/` are exactly `<fixture>.expected` of these.
macro_rules! rules {
    ($($(#[$meta:meta])* $name:ident: $file:literal, $errors:literal, $needle:literal;)*) => {
        $(
            $(#[$meta])*
            #[test]
            fn $name() {
                check_rule($file, $errors, $needle);
            }
        )*

        /// The fixtures of `tests/fixtures/check/` checked by a rule.
        const RULES: &[&str] = &[$($file),*];
    };
}

rules! {
    unknown_keys: "unknown-keys", true, "unknown key `adress`";
    duplicate_node_name: "duplicate-node-name", true, "duplicate key";
    duplicate_address: "duplicate-address", true, "already used by node `m1`";
    duplicate_mac: "duplicate-mac", true, "MAC 2c:cf:67:00:00:11 is already used";
    duplicate_serial: "duplicate-serial", true, "serial 10000000aabbcc20 is already used";
    address_outside_subnet: "address-outside-subnet", true, "10.8.0.21 is outside the subnet";
    address_in_dhcp_range: "address-in-dhcp-range", true, "inside the DHCP range";
    gateway_outside_subnet: "gateway-outside-subnet", true, "network.gateway: 10.9.1.1 is outside";
    /// A resolver beyond the gateway is normal (a public or an upstream one).
    dns_beyond_the_subnet_is_accepted: "dns-beyond-subnet", false, "0 error(s)";
    dns_vip_network_broadcast_and_non_unicast_refused: "dns-not-a-resolver", true, "network.dns[0]: 10.9.0.2 is the VIP";
    vip_outside_subnet: "vip-outside-subnet", true, "vip.address: 10.10.0.2 is outside";
    vip_equals_node: "vip-equals-node", true, "is node `w1`'s own address";
    vip_in_dhcp_range: "vip-in-dhcp-range", true, "the VIP 10.9.0.120 is inside the DHCP range";
    bad_hostname: "bad-hostname", true, "rename the node `worker-1`";
    uppercase_node_name_refused: "uppercase-node-name", true, "rename the node `worker1`";
    multicast_mac_refused: "multicast-mac", true, "01:00:5e:00:00:fb is a multicast address";
    all_zero_mac_refused: "zero-mac", true, "00:00:00:00:00:00 is the all-zero address";
    unknown_role: "unknown-role", true, "did you mean `worker`?";
    unknown_platform: "unknown-platform", true, "unknown platform `rpi3`";
    unknown_profile: "unknown-profile", true, "profile `workers` does not exist";
    platform_cannot_run_packages: "platform-cannot-run-packages", true, "cannot run the packages of profile `aux`";
    priorities_not_distinct: "priorities-not-distinct", true, "priority 100 is also `m1`'s";
    vip_holder_not_master: "vip-holder-not-master", true, "VIP holder `w1` (role `worker`) is not a master";
    gps_without_uart: "gps-without-uart", true, "has no UART for a GPS receiver";
    config_txt_too_long: "config-txt-too-long", true, "the firmware silently cuts lines after 98";
    bad_format_version: "bad-format-version", true, "format 2 is not known";
    private_key: "private-key", true, "this is a private key";
    warning_two_managers: "warning-two-managers", false, "two Swarm managers tolerate zero failures";
    stack_with_a_compose_file_passes: "stack-valid", false, "0 error(s), 0 warning(s)";
    stack_compose_file_missing: "stack-missing-file", true, "swarm.stacks.web.compose: cannot read the compose file `stacks/missing.yml`";
    stack_compose_file_not_yaml: "stack-bad-yaml", true, "the compose file `stacks/bad-yaml.yml` is not valid YAML";
    stack_compose_file_without_services: "stack-no-services", true, "has no top-level `services`";
    stack_name_not_a_label: "stack-bad-name", true, "stack name `Web_App` has '_'";
    stack_unknown_key: "stack-unknown-key", true, "did you mean `compose`?";
    image_archive_passes: "image-valid", false, "0 error(s), 0 warning(s)";
    image_archive_missing: "image-missing-file", true, "swarm.images.web.archive: cannot read the archive `oci/missing.tar`: no such file";
    image_archive_is_a_directory: "image-directory", true, "cannot read the archive `oci`: it is a directory";
    image_archive_empty_path: "image-no-archive", true, "swarm.images.web.archive: no archive";
    image_not_an_archive: "image-not-an-archive", true, "`oci/not-an-archive.tar` is not an image archive: not a tar archive";
    image_for_no_image_of_the_cluster: "image-wrong-arch", true, "its image is linux/amd64 (amd64), the roles that run Docker are arm64 (aux), arm64 (master), arm64 (worker)";
    image_without_a_tag_is_a_warning: "image-untagged", false, "the archive `oci/untagged-arm64.tar` gives its image no tag";
    image_name_not_a_label: "image-bad-name", true, "image name `Web_App` has '_'";
    image_unknown_key: "image-unknown-key", true, "did you mean `archive`?";
}

/// The check fixtures' archives are what the OCI writer makes (rewritten with
/// `PIBAKE_BLESS=1`), so they are the format pibake reads, not hand-made.
#[test]
fn fixture_archives_are_the_writers() {
    for (file, arch, tags) in [
        ("web-arm64.tar", "arm64", &["localhost/fixture/web:1"][..]),
        ("web-amd64.tar", "amd64", &["localhost/fixture/web:1"][..]),
        ("untagged-arm64.tar", "arm64", &[][..]),
    ] {
        common::golden_bytes(
            &Path::new("tests/fixtures/check/oci").join(file),
            &common::fixture_archive(arch, tags),
        );
    }
}

/// A valid archive is in the model with its architecture and tags, as read
/// from it.
#[test]
fn an_image_carries_its_architecture_and_tags() {
    common::enter_workspace();
    let checked =
        model::load(Path::new("tests/fixtures/check/image-valid.toml")).expect("readable");
    let cluster = checked.cluster.expect("valid");
    let web = &cluster.swarm.images["web"];
    assert_eq!(
        (
            web.arch.as_str(),
            web.platform.as_str(),
            web.archive.as_str()
        ),
        ("arm64", "linux/arm64", "oci/web-arm64.tar")
    );
    assert_eq!(web.tags, ["localhost/fixture/web:1"]);
    assert_eq!(
        web.path,
        Path::new("tests/fixtures/check/oci/web-arm64.tar")
    );
    // Every role of the fixture runs Docker on arm64: all carry it.
    for role in ["aux", "master", "worker"] {
        assert_eq!(cluster.images_of_role(role).len(), 1, "{role}");
    }
}

/// A valid stack is in the model with the compose file's text, as checked.
#[test]
fn a_stack_carries_its_compose_file() {
    common::enter_workspace();
    let checked =
        model::load(Path::new("tests/fixtures/check/stack-valid.toml")).expect("readable");
    let cluster = checked.cluster.expect("valid");
    let web = &cluster.swarm.stacks["web"];
    assert_eq!(web.name, "web");
    assert_eq!(
        web.content,
        std::fs::read_to_string("tests/fixtures/check/stacks/web.yml").expect("compose file")
    );
}

const MACOS_GOLDEN: &str = "tests/fixtures/check-macos/cluster.expected";
const TZ_UNKNOWN_GOLDEN: &str = "tests/fixtures/check-tzdata/unknown-zone.expected";
const TZ_MISSPELLED_GOLDEN: &str = "tests/fixtures/check-tzdata/misspelled-zone.expected";
const TZ_BEFORE_FETCH_GOLDEN: &str =
    "tests/fixtures/check-tzdata/unknown-zone-before-fetch.expected";

/// Every report golden in the fixture directories of this file's tests is
/// one a test compares: a rule's, or one of the single tests'.
#[test]
fn no_stale_report_goldens() {
    let mut generated: BTreeSet<PathBuf> = RULES
        .iter()
        .map(|rule| PathBuf::from(format!("tests/fixtures/check/{rule}.expected")))
        .collect();
    generated.extend(
        [
            MACOS_GOLDEN,
            TZ_UNKNOWN_GOLDEN,
            TZ_MISSPELLED_GOLDEN,
            TZ_BEFORE_FETCH_GOLDEN,
            PC_EFI_GOLDEN,
        ]
        .map(PathBuf::from),
    );
    for dir in [
        "tests/fixtures/check",
        "tests/fixtures/check-macos",
        "tests/fixtures/check-tzdata",
        "tests/fixtures/check-pc-efi",
    ] {
        common::assert_no_stale_goldens(
            Path::new(dir),
            false,
            common::is_expected_report,
            &generated,
        );
    }
}

/// The config.txt lines pibake renders are checked on the built model, in
/// the boot module: none of the lab's is too long, nor is the widest
/// shutdown-button line a valid `[button]` can give.
#[test]
fn rendered_config_txt_lines_are_linted_on_the_model() {
    common::enter_workspace();
    let checked = model::load(Path::new("examples/lab/cluster.toml")).expect("lab readable");
    let mut cluster = checked.cluster.expect("lab is valid");
    assert_eq!(pibake::boot::lint(&cluster), []);
    let button = cluster.button.as_mut().expect("the lab has a button");
    button.gpio = 27;
    button.hold_ms = 10_000;
    button.pull = "down".into();
    for platform in [model::Platform::Rpi4, model::Platform::Rpi5] {
        let line = pibake::boot::button_line(platform, button);
        assert!(line.len() <= model::CONFIG_TXT_MAX_LINE, "{line}");
    }
    assert_eq!(pibake::boot::lint(&cluster), []);
}

#[test]
fn manager_on_macos_is_a_warning() {
    let (has_errors, text) = report("tests/fixtures/check-macos/cluster.toml");
    assert!(!has_errors, "{text}");
    assert!(
        text.contains("warning: swarm.managers[0]: manager `mini1` runs on macos"),
        "{text}"
    );
    common::golden(Path::new(MACOS_GOLDEN), &text);
}

#[test]
fn unknown_button_pull_is_refused() {
    common::enter_workspace();
    let base = std::fs::read_to_string("tests/fixtures/check/valid.toml").expect("valid fixture");
    let text = format!(
        "{base}\n[button]\ngpio = 3\npull = \"{}\"\n",
        "u".repeat(40)
    );
    // Inside the workspace so the profiles are found.
    let path = common::workspace_root().join("target/check-bad-button-pull.toml");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
    let checked = model::load(&path).expect("readable");
    let report = checked.report();
    assert!(checked.has_errors());
    assert!(report.contains("button.pull: unknown pull"), "{report}");
}

/// The lab's locked tzdata, as the fixture lock pins it.
const TZDATA_ENTRY: &str =
    "2c1c561091402883430d0d47c57a3c0aa00b44afc8a6239265065a87211a5c11-tzdata_2026f-0+deb13u1_all.deb";

/// A store holding a small stand-in for the locked tzdata .deb under the
/// fixture lock's entry name: a few zones (TZif files), links to them, a
/// link out of zoneinfo, a `right/` zone and a table that is no zone.
fn tzdata_store() -> tempfile::TempDir {
    fn add(
        tar: &mut tar::Builder<impl std::io::Write>,
        path: &str,
        kind: tar::EntryType,
        body: &[u8],
        link: Option<&str>,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        header.set_size(body.len() as u64);
        header.set_mtime(0);
        if let Some(target) = link {
            header.set_link_name(target).expect("link name");
        }
        tar.append_data(&mut header, path, body).expect("tar entry");
    }
    let tzif = b"TZif2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let mut data = tar::Builder::new(xz2::write::XzEncoder::new(Vec::new(), 6));
    use tar::EntryType as T;
    for dir in [
        "./",
        "./usr/",
        "./usr/share/",
        "./usr/share/zoneinfo/",
        "./usr/share/zoneinfo/Europe/",
        "./usr/share/zoneinfo/Etc/",
        "./usr/share/zoneinfo/America/",
        "./usr/share/zoneinfo/right/",
        "./usr/share/zoneinfo/right/Europe/",
    ] {
        add(&mut data, dir, T::Directory, b"", None);
    }
    add(
        &mut data,
        "./usr/share/doc/tzdata/copyright",
        T::Regular,
        b"text\n",
        None,
    );
    for zone in [
        "Europe/Berlin",
        "Europe/Brussels",
        "Etc/UTC",
        "America/New_York",
        "right/Europe/Berlin",
    ] {
        add(
            &mut data,
            &format!("./usr/share/zoneinfo/{zone}"),
            T::Regular,
            tzif,
            None,
        );
    }
    add(
        &mut data,
        "./usr/share/zoneinfo/zone1970.tab",
        T::Regular,
        b"# tzdb timezone descriptions\n",
        None,
    );
    add(
        &mut data,
        "./usr/share/zoneinfo/UTC",
        T::Symlink,
        b"",
        Some("Etc/UTC"),
    );
    add(
        &mut data,
        "./usr/share/zoneinfo/Europe/Busingen",
        T::Symlink,
        b"",
        Some("../Europe/Brussels"),
    );
    add(
        &mut data,
        "./usr/share/zoneinfo/Etc/Universal",
        T::Link,
        b"",
        Some("./usr/share/zoneinfo/Etc/UTC"),
    );
    add(
        &mut data,
        "./usr/share/zoneinfo/posixrules",
        T::Symlink,
        b"",
        Some("America/New_York"),
    );
    add(
        &mut data,
        "./usr/share/zoneinfo/localtime",
        T::Symlink,
        b"",
        Some("/etc/localtime"),
    );
    let data = data.into_inner().expect("tar").finish().expect("xz");
    let control = tar::Builder::new(Vec::new()).into_inner().expect("tar");
    let store = tempfile::tempdir().expect("store");
    let deb = std::fs::File::create(store.path().join(TZDATA_ENTRY)).expect("deb");
    let mut ar = ar::Builder::new(deb);
    for (name, body) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar", &control[..]),
        ("data.tar.xz", &data[..]),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), body.len() as u64);
        ar.append(&header, body).expect("ar member");
    }
    store
}

/// The report of `fixture` checked with the store at `store`.
fn tz_report(fixture: &str, store: &Path) -> (bool, String) {
    common::enter_workspace();
    let mut checked = model::load(Path::new(fixture)).expect("fixture readable");
    checked.check_locked_inputs(Some(store));
    (checked.has_errors(), checked.report())
}

#[test]
fn stand_in_tzdata_zone_list() {
    let store = tzdata_store();
    let deb = std::fs::File::open(store.path().join(TZDATA_ENTRY)).expect("deb");
    let zones = model::tz::zone_names(deb).expect("zones");
    let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
    assert_eq!(
        zones,
        [
            "America/New_York",
            "Etc/UTC",
            "Etc/Universal",
            "Europe/Berlin",
            "Europe/Brussels",
            "Europe/Busingen",
            "UTC"
        ]
    );
}

#[test]
fn unknown_zone_is_refused_by_the_locked_tzdata() {
    let store = tzdata_store();
    let fixture = "tests/fixtures/check-tzdata/unknown-zone.toml";
    let (has_errors, text) = tz_report(fixture, store.path());
    assert!(has_errors, "{text}");
    assert!(
        text.contains("error: cluster.timezone: `Mars/Olympus` is not a time zone of tzdata 2026f-0+deb13u1, which tests/fixtures/check-tzdata/pibake.lock pins"),
        "{text}"
    );
    assert!(text.contains(&format!("--> {fixture}:6:12")), "{text}");
    common::golden(Path::new(TZ_UNKNOWN_GOLDEN), &text);
}

#[test]
fn misspelled_zone_gets_the_close_names() {
    let store = tzdata_store();
    let fixture = "tests/fixtures/check-tzdata/misspelled-zone.toml";
    let (has_errors, text) = tz_report(fixture, store.path());
    assert!(has_errors, "{text}");
    assert!(text.contains("did you mean `Europe/Berlin`"), "{text}");
    common::golden(Path::new(TZ_MISSPELLED_GOLDEN), &text);
}

#[test]
fn legacy_zone_points_at_tzdata_legacy() {
    let store = tzdata_store();
    let (has_errors, text) =
        tz_report("tests/fixtures/check-tzdata/legacy-zone.toml", store.path());
    assert!(has_errors, "{text}");
    assert!(text.contains("`US/Pacific` is not a time zone"), "{text}");
    assert!(text.contains("are in tzdata-legacy"), "{text}");
}

#[test]
fn known_zone_passes_without_a_note() {
    let store = tzdata_store();
    let (has_errors, text) = tz_report("tests/fixtures/check-tzdata/known-zone.toml", store.path());
    assert!(!has_errors, "{text}");
    assert!(!text.contains("cluster.timezone"), "{text}");
}

#[test]
fn zone_before_fetch_is_a_note_not_silence() {
    let empty = tempfile::tempdir().expect("store");
    let fixture = "tests/fixtures/check-tzdata/unknown-zone.toml";
    let (has_errors, text) = tz_report(fixture, empty.path());
    assert!(!has_errors, "{text}");
    assert!(
        text.contains("note: cluster.timezone: `Mars/Olympus` is checked against the zones of tzdata 2026f-0+deb13u1 once it is in the store"),
        "{text}"
    );
    common::golden(Path::new(TZ_BEFORE_FETCH_GOLDEN), &text);
    // Without a lock, the note says what comes first.
    let (has_errors, text) = tz_report("tests/fixtures/check/valid.toml", empty.path());
    assert!(!has_errors, "{text}");
    assert!(
        text.contains("once `pibake lock` and `pibake fetch` have run"),
        "{text}"
    );
}

#[test]
fn build_refuses_a_zone_the_locked_tzdata_lacks() {
    let store = tzdata_store();
    common::enter_workspace();
    let lock = pibake_inputs::Lock::read(Path::new("tests/fixtures/check-tzdata/pibake.lock"))
        .expect("lock");
    let cluster = |fixture: &str| {
        let checked = model::load(Path::new(fixture)).expect("fixture readable");
        checked.cluster.expect("valid by the file alone")
    };
    let err = model::verify_timezone(
        &cluster("tests/fixtures/check-tzdata/unknown-zone.toml"),
        &lock,
        store.path(),
    )
    .expect_err("Mars/Olympus is no zone");
    let text = err.to_string();
    assert!(
        text.starts_with("tests/fixtures/check-tzdata/unknown-zone.toml:6:12: cluster.timezone: `Mars/Olympus` is not a time zone of tzdata 2026f-0+deb13u1"),
        "{text}"
    );
    model::verify_timezone(
        &cluster("tests/fixtures/check-tzdata/known-zone.toml"),
        &lock,
        store.path(),
    )
    .expect("Europe/Berlin is a zone");
}

const PC_EFI_GOLDEN: &str = "tests/fixtures/check-pc-efi/cluster.expected";

/// pc-efi nodes boot through UEFI (no config.txt lines), their serial is
/// the DMI one, and one role's image serves one architecture.
#[test]
fn pc_efi_nodes_have_no_config_txt_and_roles_one_architecture() {
    let (has_errors, text) = report("tests/fixtures/check-pc-efi/cluster.toml");
    assert!(has_errors, "{text}");
    assert!(
        text.contains("error: nodes.mac1.config_txt: node `mac1` is pc-efi: it boots through UEFI and has no config.txt"),
        "{text}"
    );
    assert!(
        text.contains("error: nodes.m2.platform: role `master` has nodes on arm64 (`m1`: rpi5) and on amd64 (`m2`: pc-efi)"),
        "{text}"
    );
    // m2's Apple serial is a valid DMI serial; mac1's has a space.
    assert!(
        !text.contains("`C07ABC123XYZ` is not a board serial"),
        "{text}"
    );
    assert!(
        text.contains("error: nodes.mac1.serial: `C07 ABC` is not a board serial"),
        "{text}"
    );
    assert!(text.ends_with("3 error(s), 0 warning(s)\n"), "{text}");
    common::golden(Path::new(PC_EFI_GOLDEN), &text);
}
