//! Every validation rule: a small bad cluster file and the exact located
//! report expected (golden, `tests/fixtures/check/<rule>.expected`).

mod common;

use pibake::model;
use std::path::Path;

fn report(fixture: &str) -> (bool, String) {
    common::enter_workspace();
    let checked = model::load(Path::new(fixture)).expect("fixture readable");
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
    assert!(
        text.contains(&format!("--> {fixture}:")),
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

macro_rules! rule {
    ($name:ident, $file:literal, $errors:literal, $needle:literal) => {
        #[test]
        fn $name() {
            check_rule($file, $errors, $needle);
        }
    };
}

rule!(unknown_keys, "unknown-keys", true, "unknown key `adress`");
rule!(
    duplicate_node_name,
    "duplicate-node-name",
    true,
    "duplicate key"
);
rule!(
    duplicate_address,
    "duplicate-address",
    true,
    "already used by node `m1`"
);
rule!(
    duplicate_mac,
    "duplicate-mac",
    true,
    "MAC 2c:cf:67:00:00:11 is already used"
);
rule!(
    duplicate_serial,
    "duplicate-serial",
    true,
    "serial 10000000aabbcc20 is already used"
);
rule!(
    address_outside_subnet,
    "address-outside-subnet",
    true,
    "10.8.0.21 is outside the subnet"
);
rule!(
    address_in_dhcp_range,
    "address-in-dhcp-range",
    true,
    "inside the DHCP range"
);
rule!(
    gateway_outside_subnet,
    "gateway-outside-subnet",
    true,
    "network.gateway: 10.9.1.1 is outside"
);
// A resolver beyond the gateway is normal (a public or an upstream one).
rule!(
    dns_beyond_the_subnet_is_accepted,
    "dns-beyond-subnet",
    false,
    "0 error(s)"
);
rule!(
    dns_vip_network_broadcast_and_non_unicast_refused,
    "dns-not-a-resolver",
    true,
    "network.dns[0]: 10.9.0.2 is the VIP"
);
rule!(
    vip_outside_subnet,
    "vip-outside-subnet",
    true,
    "vip.address: 10.10.0.2 is outside"
);
rule!(
    vip_equals_node,
    "vip-equals-node",
    true,
    "is node `w1`'s own address"
);
rule!(
    vip_in_dhcp_range,
    "vip-in-dhcp-range",
    true,
    "the VIP 10.9.0.120 is inside the DHCP range"
);
rule!(
    bad_hostname,
    "bad-hostname",
    true,
    "rename the node `worker-1`"
);
rule!(
    uppercase_node_name_refused,
    "uppercase-node-name",
    true,
    "rename the node `worker1`"
);
rule!(
    multicast_mac_refused,
    "multicast-mac",
    true,
    "01:00:5e:00:00:fb is a multicast address"
);
rule!(
    all_zero_mac_refused,
    "zero-mac",
    true,
    "00:00:00:00:00:00 is the all-zero address"
);
rule!(unknown_role, "unknown-role", true, "did you mean `worker`?");
rule!(
    unknown_platform,
    "unknown-platform",
    true,
    "unknown platform `rpi3`"
);
rule!(
    unknown_profile,
    "unknown-profile",
    true,
    "profile `workers` does not exist"
);
rule!(
    platform_cannot_run_packages,
    "platform-cannot-run-packages",
    true,
    "cannot run the packages of profile `worker`"
);
rule!(
    priorities_not_distinct,
    "priorities-not-distinct",
    true,
    "priority 100 is also `m1`'s"
);
rule!(
    vip_holder_not_master,
    "vip-holder-not-master",
    true,
    "VIP holder `w1` (role `worker`) is not a master"
);
rule!(
    gps_without_uart,
    "gps-without-uart",
    true,
    "has no UART for a GPS receiver"
);
rule!(
    config_txt_too_long,
    "config-txt-too-long",
    true,
    "the firmware silently cuts lines after 98"
);
rule!(
    bad_format_version,
    "bad-format-version",
    true,
    "format 2 is not known"
);
rule!(private_key, "private-key", true, "this is a private key");
rule!(
    warning_two_managers,
    "warning-two-managers",
    false,
    "two Swarm managers tolerate zero failures"
);

#[test]
fn manager_on_macos_is_a_warning() {
    let (has_errors, text) = report("tests/fixtures/check-macos/cluster.toml");
    assert!(!has_errors, "{text}");
    assert!(
        text.contains("warning: swarm.managers[0]: manager `mini1` runs on macos"),
        "{text}"
    );
    common::golden(
        Path::new("tests/fixtures/check-macos/cluster.expected"),
        &text,
    );
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
