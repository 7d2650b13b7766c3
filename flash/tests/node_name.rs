//! `--node` takes the agent's host-name rule (lower case only), not a copy of it: a name the
//! agent would refuse at first boot is refused before anything is written, with the name that
//! would be right.

use pibake_flash::NodeName;

#[test]
fn upper_case_node_is_refused_with_the_lower_case_name() {
    let err = "Worker1"
        .parse::<NodeName>()
        .expect_err("the agent refuses upper-case host names");
    let text = err.to_string();
    assert!(
        text.contains("\"Worker1\" has upper-case letters"),
        "{text}"
    );
    assert!(text.contains("e.g. `worker1`"), "{text}");
}

#[test]
fn flash_and_the_agent_share_one_name_type_and_node_file() -> anyhow::Result<()> {
    let name: pibake_firstboot::hostname::NodeName = "worker1".parse::<NodeName>()?;
    assert_eq!(name.node_file(), "node = \"worker1\"\n");
    for bad in ["", "w_1", "-w", "w-", "a\"b", &"a".repeat(64)] {
        assert!(bad.parse::<NodeName>().is_err(), "{bad:?} accepted");
    }
    Ok(())
}
