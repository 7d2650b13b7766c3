//! Identity against a temporary root: each source and its precedence,
//! ambiguous and missing matches, secrets, node files, root device.

mod common;

use common::*;
use pibake_firstboot::bootfiles::{BootPartition, NODE_FILE};
use pibake_firstboot::growroot::{find_root_device, GrowError, RootDevice};
use pibake_firstboot::hostname::NodeName;
use pibake_firstboot::identity::{self, choose, Source};
use pibake_firstboot::journal::{Journal, Outcome, Step};
use pibake_firstboot::root::Root;
use pibake_firstboot::table::NodeTable;
use pibake_firstboot::{load_table, Agent};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::rc::Rc;

/// Identity on a board of no serial or MAC of the table, which must fail (`why`); the
/// error and the commands it ran.
fn identity_fails(root: &Root, why: &str) -> (identity::IdentityError, FakeRunner) {
    let runner = FakeRunner::new(root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    let err = identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })
    .expect_err(why);
    (err, runner)
}

fn chosen(root: &Root) -> anyhow::Result<(String, Source)> {
    let c = choose(root, &load_table(root)?)?;
    Ok((c.node, c.source))
}

#[test]
fn serial_is_read_without_its_nul() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "02:00:00:00:00:99");
    assert_eq!(chosen(&root)?, ("w1".to_owned(), Source::Serial));
    Ok(())
}

#[test]
fn serial_matches_regardless_of_case() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000AAAA0022", "02:00:00:00:00:99");
    assert_eq!(chosen(&root)?, ("w2".to_owned(), Source::Serial));
    Ok(())
}

/// An x86 machine (a Mac Mini, a Proxmox VM given an SMBIOS serial) has no
/// device tree: its DMI product serial is its board serial; firmware
/// placeholders are none, and the MAC decides.
#[test]
fn dmi_serial_on_a_machine_without_a_device_tree() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "unused", "02:00:00:00:00:99");
    fs::remove_file(root.at(identity::DT_SERIAL))?;
    let mut table = load_table(&root)?;
    table.nodes.get_mut("m2").expect("m2").serial = Some("c07abc123xyz".into());
    write_table(&root, &table);
    write(&root, identity::DMI_SERIAL, "C07ABC123XYZ\n");
    assert_eq!(chosen(&root)?, ("m2".to_owned(), Source::Serial));
    for placeholder in ["To be filled by O.E.M.\n", "0\n", "\n"] {
        write(&root, identity::DMI_SERIAL, placeholder);
        assert_eq!(identity::board_serial(&root)?, None, "{placeholder:?}");
    }
    write(&root, "sys/class/net/eth0/address", "dc:a6:32:00:00:12\n");
    assert_eq!(chosen(&root)?, ("m2".to_owned(), Source::Mac));
    Ok(())
}

#[test]
fn mac_when_the_serial_is_unknown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "DC:A6:32:00:00:30");
    assert_eq!(chosen(&root)?, ("aux".to_owned(), Source::Mac));
    Ok(())
}

#[test]
fn cmdline_beats_serial_and_mac() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write(
        &root,
        "proc/cmdline",
        "root=/dev/mmcblk0p2 pibake.node=m2 rootwait\n",
    );
    assert_eq!(chosen(&root)?, ("m2".to_owned(), Source::Cmdline));
    Ok(())
}

#[test]
fn boot_file_beats_cmdline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write(
        &root,
        "proc/cmdline",
        "root=/dev/mmcblk0p2 pibake.node=m2\n",
    );
    write(&root, "boot/firmware/pibake-node.toml", "node = \"w2\"\n");
    assert_eq!(chosen(&root)?, ("w2".to_owned(), Source::BootFile));
    Ok(())
}

#[test]
fn explicit_unknown_name_is_an_error_not_a_guess() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write(&root, "boot/firmware/pibake-node.toml", "node = \"w9\"\n");
    let err = choose(&root, &load_table(&root)?).expect_err("w9 is not in the table");
    assert!(err.to_string().contains("\"w9\""), "{err}");
    write(&root, "boot/firmware/pibake-node.toml", "nod = \"w1\"\n");
    assert!(
        choose(&root, &load_table(&root)?).is_err(),
        "unknown key refused"
    );
    Ok(())
}

#[test]
fn ambiguous_serial_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    let mut table = lab_table();
    table.nodes.get_mut("w2").expect("w2").serial = Some("10000000aaaa0021".to_owned());
    write_table(&root, &table);
    let err = choose(&root, &table).expect_err("two nodes share the serial");
    let text = err.to_string();
    assert!(
        text.contains("several") && text.contains("w1") && text.contains("w2"),
        "{text}"
    );
    Ok(())
}

#[test]
fn ambiguous_mac_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "dc:a6:32:00:00:21");
    let mut table = lab_table();
    table.nodes.get_mut("m1").expect("m1").mac = Some("dc:a6:32:00:00:21".to_owned());
    write_table(&root, &table);
    assert!(choose(&root, &table).is_err());
    Ok(())
}

#[test]
fn unknown_board_stays_on_dhcp() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let board = Rc::new(Board::default());
    let runner = FakeRunner::new(&root, board);
    let clock = FakeClock::at(NOW);
    let agent = Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    };
    let err = identity::run(&agent).expect_err("no node matches");
    assert!(err.to_string().contains("no node matches"), "{err}");
    assert!(
        err.to_string()
            .contains("no /boot/firmware/pibake-node.toml or /boot/efi/pibake-node.toml"),
        "{err}"
    );
    // Nothing network-related, no hostname, secrets left alone, no command.
    assert!(!root.at("etc/NetworkManager").exists());
    assert!(!root.at("etc/hostname").exists());
    assert!(!root.at("etc/hosts").exists());
    assert!(root.at("boot/firmware/pibake-secrets.toml").exists());
    assert!(runner.ran.borrow().is_empty());
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(record.why.contains("no node matches"), "{}", record.why);
    assert_eq!(record.at, NOW);
    Ok(())
}

#[test]
fn single_node_table_picks_its_node() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let mut table = lab_table();
    table.nodes.retain(|name, _| name == "w2");
    let w2 = table.nodes.get_mut("w2").expect("w2");
    w2.serial = None;
    w2.mac = None;
    write_table(&root, &table);
    assert_eq!(chosen(&root)?, ("w2".to_owned(), Source::OnlyNode));
    Ok(())
}

#[test]
fn single_node_table_refuses_a_board_that_contradicts_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let mut table: NodeTable = lab_table();
    table.nodes.retain(|name, _| name == "w2");
    write_table(&root, &table);
    let err = choose(&root, &table).expect_err("serial differs");
    assert!(err.to_string().contains("10000000ffffffff"), "{err}");
    Ok(())
}

/// The node table is on the boot partition only: the root's old
/// /etc/pibake/nodes.toml is no table, and a card without
/// pibake-nodes.toml in /boot/firmware or /boot/efi fails, naming both.
#[test]
fn no_node_table_on_the_boot_partition_is_refused_naming_both_places() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    fs::remove_file(root.at("boot/firmware/pibake-nodes.toml"))?;
    write(
        &root,
        "etc/pibake/nodes.toml",
        lab_table().to_toml().expect("table encodes"),
    );
    let (err, runner) = identity_fails(&root, "no table on the boot partition");
    let text = pibake_firstboot::error_chain(&err);
    assert!(
        text.contains("no /boot/firmware/pibake-nodes.toml or /boot/efi/pibake-nodes.toml"),
        "{text}"
    );
    assert!(!root.at("etc/hostname").exists());
    assert!(root.at("boot/firmware/pibake-secrets.toml").exists());
    assert!(runner.ran.borrow().is_empty());
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(record.why.contains("no node table"), "{}", record.why);
    Ok(())
}

/// A table in both boot directories was not all put there by pibake: refused,
/// as the node file is.
#[test]
fn node_table_in_both_boot_directories_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write_table_on(&root, BootPartition::Esp, &lab_table());
    let err = load_table(&root).expect_err("ambiguous");
    let text = pibake_firstboot::error_chain(&err);
    for p in [
        "boot/firmware/pibake-nodes.toml",
        "boot/efi/pibake-nodes.toml",
    ] {
        assert!(text.contains(&root.at(p).display().to_string()), "{text}");
    }
    Ok(())
}

/// Identity reads the table and leaves it on the FAT as the builder wrote it
/// (only the secrets copy is wiped), on a Pi card and on a pc-efi disk; a
/// later boot reads it again.
#[test]
fn the_node_table_stays_on_the_boot_partition() -> anyhow::Result<()> {
    type Make = fn(&std::path::Path, &str, &str) -> Root;
    for (make, partition, disk) in [
        (card as Make, BootPartition::PiFirmware, None),
        (pc_disk as Make, BootPartition::Esp, Some("/dev/nvme0n1")),
    ] {
        let dir = tempfile::tempdir()?;
        let root = make(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
        let table = root.at(&partition.path_of(pibake_firstboot::bootfiles::TABLE_FILE));
        let bytes = fs::read(&table)?;
        let before = fs::metadata(&table)?;
        for boot in 0..2 {
            let board = disk.map_or_else(Board::default, Board::with_root_disk);
            let runner = FakeRunner::new(&root, Rc::new(board));
            let clock = FakeClock::at(NOW);
            let choice = identity::run(&Agent {
                root: root.clone(),
                clock: &clock,
                runner: &runner,
            })?;
            assert_eq!(choice.node, "w1", "{partition:?}, boot {boot}");
            assert!(
                fs::read(&table)? == bytes,
                "{partition:?}, boot {boot}: the table changed"
            );
            let after = fs::metadata(&table)?;
            assert_eq!(
                (after.ino(), after.mode(), after.mtime(), after.mtime_nsec()),
                (
                    before.ino(),
                    before.mode(),
                    before.mtime(),
                    before.mtime_nsec()
                ),
                "{partition:?}, boot {boot}: the table was rewritten"
            );
            let secrets = partition.path_of(pibake_firstboot::bootfiles::SECRETS_FILE);
            assert!(!root.at(&secrets).exists(), "{partition:?}: secrets wiped");
        }
    }
    Ok(())
}

fn personalize_w1(dir: &std::path::Path) -> anyhow::Result<(Root, FakeRunner)> {
    let root = card(dir, "10000000aaaa0021", "dc:a6:32:00:00:21");
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    let agent = Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    };
    let choice = identity::run(&agent)?;
    assert_eq!(choice.node, "w1");
    Ok((root, runner))
}

#[test]
fn node_files_are_installed_root_owned_with_their_modes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, _) = personalize_w1(dir.path())?;
    let keyfile = root.at("etc/NetworkManager/system-connections/eth0.nmconnection");
    assert_eq!(fs::read_to_string(&keyfile)?, W1_KEYFILE);
    let meta = fs::metadata(&keyfile)?;
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "NetworkManager ignores other modes"
    );
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    assert_eq!(
        fs::metadata(root.at("etc/keepalived/keepalived.conf"))?.mode() & 0o7777,
        0o640
    );
    assert_eq!(fs::read_to_string(root.at("etc/hostname"))?, "w1\n");
    assert_eq!(
        fs::read_to_string(root.at("proc/sys/kernel/hostname"))?,
        "w1"
    );
    assert!(fs::read_to_string(root.at("etc/hosts"))?.contains("192.168.188.21 w1"));
    assert!(
        !root.at("etc/default/gpsd").exists(),
        "aux's files stay off w1"
    );
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(
        (record.outcome, record.node.as_deref()),
        (Outcome::Done, Some("w1"))
    );
    Ok(())
}

#[test]
fn secrets_move_to_a_root_only_file_and_leave_the_boot_partition() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, _) = personalize_w1(dir.path())?;
    assert!(!root.at("boot/firmware/pibake-secrets.toml").exists());
    let kept = root.at("etc/pibake/secrets");
    assert!(fs::read_to_string(&kept)?.contains(WORKER_TOKEN));
    let meta = fs::metadata(&kept)?;
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    Ok(())
}

#[test]
fn host_keys_and_root_growth_run_through_the_runner() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, runner) = personalize_w1(dir.path())?;
    let prefix = root.dir().display().to_string();
    assert_eq!(
        runner.programs(),
        vec![
            format!("ssh-keygen -A -f {prefix}"),
            "growpart /dev/mmcblk0 2".to_owned(),
            "resize2fs /dev/mmcblk0p2".to_owned(),
        ]
    );
    assert!(root.at("etc/ssh/ssh_host_ed25519_key.pub").exists());
    Ok(())
}

#[test]
fn half_written_host_key_is_made_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    // Power cut while ssh-keygen wrote: private key without public key.
    write(&root, "etc/ssh/ssh_host_ed25519_key", "");
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })?;
    assert_eq!(
        fs::read_to_string(root.at("etc/ssh/ssh_host_ed25519_key"))?,
        "fake ed25519 private key\n"
    );
    Ok(())
}

#[test]
fn moved_card_is_not_personalized_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (root, _) = personalize_w1(dir.path())?;
    write(
        &root,
        "proc/device-tree/serial-number",
        "10000000aaaa0022\0",
    );
    let (err, _) = identity_fails(&root, "this board is w2, the card is w1");
    assert!(err.to_string().contains("personalized as w1"), "{err}");
    assert_eq!(fs::read_to_string(root.at("etc/hostname"))?, "w1\n");
    Ok(())
}

/// The agent and `pibake check`/`pibake flash` share one host-name rule
/// (`pibake_firstboot::hostname`): lower case only. A table that somehow
/// names an upper-case node is refused before the host name is set, and the
/// error says what the name would be.
#[test]
fn upper_case_node_name_is_refused_with_the_lower_case_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000ffffffff", "02:00:00:00:00:99");
    let mut table = lab_table();
    let w1 = table.nodes.remove("w1").expect("w1");
    table.nodes.insert("Worker1".to_owned(), w1);
    write_table(&root, &table);
    write(
        &root,
        "boot/firmware/pibake-node.toml",
        "node = \"Worker1\"\n",
    );
    let (err, _) = identity_fails(&root, "Worker1 is not a host name");
    let text = pibake_firstboot::error_chain(&err);
    assert!(
        text.contains("node name \"Worker1\" has upper-case letters"),
        "{text}"
    );
    assert!(text.contains("e.g. `worker1`"), "{text}");
    assert!(!root.at("etc/hostname").exists());
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(record.why.contains("upper-case"), "{}", record.why);
    Ok(())
}

/// What `pibake flash --node` writes to the boot partition is what identity
/// reads: one definition of the node file, on either kind of boot partition.
#[test]
fn node_file_as_flash_writes_it_is_chosen() -> anyhow::Result<()> {
    for partition in BootPartition::ALL {
        let dir = tempfile::tempdir()?;
        let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
        let name: NodeName = "w2".parse()?;
        write(&root, &partition.path_of(NODE_FILE), name.node_file());
        assert_eq!(
            chosen(&root)?,
            ("w2".to_owned(), Source::BootFile),
            "{partition:?}"
        );
    }
    Ok(())
}

fn personalize_pc(root: &Root) -> anyhow::Result<FakeRunner> {
    let runner = FakeRunner::new(root, Rc::new(Board::with_root_disk("/dev/nvme0n1")));
    let clock = FakeClock::at(NOW);
    identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })?;
    Ok(runner)
}

/// A pc-efi machine: node file and secrets on the ESP (/boot/efi), root on
/// an NVMe disk by GPT PARTUUID.
#[test]
fn pc_efi_machine_is_personalized_from_the_esp() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = pc_disk(dir.path(), "C07KX0AADWYL", "02:00:00:00:00:99");
    write(&root, "boot/efi/pibake-node.toml", "node = \"w2\"\n");
    let runner = personalize_pc(&root)?;
    assert_eq!(fs::read_to_string(root.at("etc/hostname"))?, "w2\n");
    assert!(!root.at("boot/efi/pibake-secrets.toml").exists(), "wiped");
    assert!(fs::read_to_string(root.at("etc/pibake/secrets"))?.contains(WORKER_TOKEN));
    assert!(
        root.at("boot/efi/EFI/BOOT/BOOTX64.EFI").exists(),
        "the loader stays"
    );
    assert!(!root.at("boot/firmware").exists(), "no Pi directory made");
    let prefix = root.dir().display().to_string();
    assert_eq!(
        runner.programs(),
        vec![
            format!("ssh-keygen -A -f {prefix}"),
            "growpart /dev/nvme0n1 2".to_owned(),
            "resize2fs /dev/nvme0n1p2".to_owned(),
        ]
    );
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(
        (record.outcome, record.node.as_deref(), record.why.as_str()),
        (
            Outcome::Done,
            Some("w2"),
            "node w2 chosen by boot partition pibake-node.toml"
        )
    );
    Ok(())
}

/// Without a node file a pc-efi machine is known by its DMI serial.
#[test]
fn pc_efi_machine_without_node_file_is_chosen_by_dmi_serial() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = pc_disk(dir.path(), "10000000aaaa0021", "02:00:00:00:00:99");
    assert_eq!(chosen(&root)?, ("w1".to_owned(), Source::Serial));
    personalize_pc(&root)?;
    assert_eq!(fs::read_to_string(root.at("etc/hostname"))?, "w1\n");
    Ok(())
}

/// One boot partition is mounted on one of the two directories: a node file
/// in both was not all put there by pibake, and the agent does not guess.
#[test]
fn node_file_in_both_boot_directories_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = pc_disk(dir.path(), "10000000aaaa0021", "02:00:00:00:00:99");
    write(&root, "boot/efi/pibake-node.toml", "node = \"w2\"\n");
    write(&root, "boot/firmware/pibake-node.toml", "node = \"w1\"\n");
    let runner = FakeRunner::new(&root, Rc::new(Board::with_root_disk("/dev/nvme0n1")));
    let clock = FakeClock::at(NOW);
    let err = identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })
    .expect_err("ambiguous");
    let text = pibake_firstboot::error_chain(&err);
    for p in [
        "boot/efi/pibake-node.toml",
        "boot/firmware/pibake-node.toml",
    ] {
        assert!(text.contains(&root.at(p).display().to_string()), "{text}");
    }
    assert!(!root.at("etc/hostname").exists());
    assert!(
        root.at("boot/efi/pibake-secrets.toml").exists(),
        "secrets left alone"
    );
    assert!(runner.ran.borrow().is_empty());
    Ok(())
}

/// Secrets in both boot directories: not ingested, the step fails.
#[test]
fn secrets_in_both_boot_directories_are_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write(
        &root,
        "boot/efi/pibake-secrets.toml",
        "swarm_worker_token = \"other\"\n",
    );
    let (err, _) = identity_fails(&root, "ambiguous");
    assert!(
        pibake_firstboot::error_chain(&err).contains("is in both"),
        "{err}"
    );
    assert!(!root.at("etc/pibake/secrets").exists());
    assert!(root.at("boot/firmware/pibake-secrets.toml").exists());
    assert!(root.at("boot/efi/pibake-secrets.toml").exists());
    Ok(())
}

#[test]
fn bad_node_file_path_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    let mut table = lab_table();
    table.nodes.get_mut("w1").expect("w1").files[0].path = "/etc/../../escape".to_owned();
    write_table(&root, &table);
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    assert!(identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner
    })
    .is_err());
    assert!(!dir.path().parent().expect("parent").join("escape").exists());
    Ok(())
}

#[test]
fn root_device_from_partuuid() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "1", "2");
    let dev = find_root_device(&root)?;
    assert_eq!(
        dev,
        RootDevice {
            disk: "/dev/mmcblk0".into(),
            partition: 2,
            device: "/dev/mmcblk0p2".into()
        }
    );
    Ok(())
}

#[test]
fn root_device_from_mountinfo_and_sysfs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = Root::new(dir.path());
    write(&root, "proc/cmdline", "root=/dev/root rootwait\n");
    write(
        &root,
        "proc/self/mountinfo",
        "22 1 254:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n\
         23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw\n",
    );
    let part = "sys/devices/platform/virtio/block/vda/vda2";
    write(&root, &format!("{part}/partition"), "2\n");
    fs::create_dir_all(root.at("sys/dev/block"))?;
    std::os::unix::fs::symlink(
        "../../devices/platform/virtio/block/vda/vda2",
        root.at("sys/dev/block/254:2"),
    )?;
    let dev = find_root_device(&root)?;
    assert_eq!(
        (dev.disk.as_str(), dev.partition, dev.device.as_str()),
        ("/dev/vda", 2, "/dev/vda2")
    );
    Ok(())
}

fn root_device(root: &Root) -> anyhow::Result<(String, u32, String)> {
    let d = find_root_device(root)?;
    Ok((d.disk, d.partition, d.device))
}

fn dev(disk: &str, partition: u32, device: &str) -> (String, u32, String) {
    (disk.to_owned(), partition, device.to_owned())
}

/// Each way the root is named on a Pi and an x86 machine, through
/// `root=/dev/…`, `root=PARTUUID=` and mountinfo, with and without sysfs.
#[test]
fn root_device_of_every_disk_kind() -> anyhow::Result<()> {
    // (disk, partition device, /sys/devices parent, major:minor)
    let kinds = [
        (
            "mmcblk0",
            "mmcblk0p2",
            "platform/fe340000.mmc/mmc_host/mmc0/mmc0:0001/block",
            "179:2",
        ),
        (
            "sda",
            "sda2",
            "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block",
            "8:2",
        ),
        (
            "vda",
            "vda2",
            "pci0000:00/0000:00:04.0/virtio1/block",
            "254:2",
        ),
        (
            "nvme0n1",
            "nvme0n1p2",
            "pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme0",
            "259:2",
        ),
    ];
    for (disk, part, parent, majmin) in kinds {
        let want = dev(&format!("/dev/{disk}"), 2, &format!("/dev/{part}"));
        // root=/dev/<part>, by name alone (no sysfs).
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        write(
            &root,
            "proc/cmdline",
            format!("root=/dev/{part} rootwait\n"),
        );
        assert_eq!(root_device(&root)?, want, "root=/dev/{part}");
        // The same with sysfs, which then decides.
        sys_block(&root, parent, disk, part, majmin, 2);
        assert_eq!(root_device(&root)?, want, "root=/dev/{part} with sysfs");
        // root=PARTUUID= (a GPT GUID, upper case on the command line) through udev's link.
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        write(
            &root,
            "proc/cmdline",
            format!(
                "root=PARTUUID={} rootwait\n",
                PC_ROOT_PARTUUID.to_ascii_uppercase()
            ),
        );
        fs::create_dir_all(root.at("dev/disk/by-partuuid"))?;
        std::os::unix::fs::symlink(
            format!("../../{part}"),
            root.at(&format!("dev/disk/by-partuuid/{PC_ROOT_PARTUUID}")),
        )?;
        assert_eq!(root_device(&root)?, want, "PARTUUID → {part}");
        // No root= at all: mountinfo's device number through /sys/dev/block.
        let dir = tempfile::tempdir()?;
        let root = Root::new(dir.path());
        write(&root, "proc/cmdline", "quiet\n");
        write(
            &root,
            "proc/self/mountinfo",
            format!("22 1 {majmin} / / rw,relatime shared:1 - ext4 /dev/{part} rw\n"),
        );
        sys_block(&root, parent, disk, part, majmin, 2);
        assert_eq!(root_device(&root)?, want, "mountinfo {majmin}");
    }
    Ok(())
}

/// sysfs tells a whole disk from a partition where the name cannot
/// (`nvme0n1` also reads as partition 1 of a disk `nvme0n`).
#[test]
fn root_on_a_whole_disk_is_not_grown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = Root::new(dir.path());
    write(&root, "proc/cmdline", "root=/dev/nvme0n1 rootwait\n");
    let devdir = "devices/pci0000:00/0000:00:1d.0/0000:02:00.0/nvme/nvme0/nvme0n1";
    write(&root, &format!("sys/{devdir}/size"), "1000215216\n");
    fs::create_dir_all(root.at("sys/class/block"))?;
    std::os::unix::fs::symlink(
        format!("../../{devdir}"),
        root.at("sys/class/block/nvme0n1"),
    )?;
    let err = find_root_device(&root).expect_err("a whole disk");
    assert!(
        matches!(err, GrowError::NotAPartition(ref n) if n == "nvme0n1"),
        "{err}"
    );
    Ok(())
}

#[test]
fn root_not_grown_is_a_warning_not_a_failure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    write(&root, "proc/cmdline", "quiet\n");
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })?;
    let record = Journal::new(&root)
        .read(Step::Identity)?
        .expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    assert!(
        record.why.contains("root filesystem not grown"),
        "{}",
        record.why
    );
    assert!(fs::metadata(root.at("etc/hostname"))?.permissions().mode() & 0o777 == 0o644);
    Ok(())
}
