//! Crash safety: a run cut between any two phases, then a clean run, ends in
//! the same tree as an uninterrupted run; a second run changes nothing.

mod common;

use common::*;
use pibake_firstboot::identity::{self, choose, run_phase, Phase};
use pibake_firstboot::{load_table, Agent};
use std::rc::Rc;

fn uninterrupted() -> anyhow::Result<(tempfile::TempDir, Tree)> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    identity::run(&Agent {
        root,
        clock: &clock,
        runner: &runner,
    })?;
    let tree = snapshot(dir.path());
    Ok((dir, tree))
}

#[test]
fn crash_between_any_two_phases_then_rerun_converges() -> anyhow::Result<()> {
    let (_keep, expected) = uninterrupted()?;
    for done in 0..=Phase::ALL.len() {
        let dir = tempfile::tempdir()?;
        let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
        // The board (partition table) outlives the crash, the process not.
        let board = Rc::new(Board::default());
        {
            let runner = FakeRunner::new(&root, board.clone());
            let clock = FakeClock::at(NOW);
            let agent = Agent {
                root: root.clone(),
                clock: &clock,
                runner: &runner,
            };
            let table = load_table(&root)?;
            let choice = choose(&root, &table)?;
            for phase in &Phase::ALL[..done] {
                run_phase(&agent, &table, &choice, *phase)?;
            }
            // Power cut in the middle of an atomic write of the next file:
            // its temp file is left behind.
            write(&root, "etc/.hostname.pibake-tmp", "w");
        }
        let runner = FakeRunner::new(&root, board);
        let clock = FakeClock::at(NOW);
        identity::run(&Agent {
            root: root.clone(),
            clock: &clock,
            runner: &runner,
        })?;
        let got = snapshot(dir.path());
        let differ: Vec<&String> = expected
            .keys()
            .chain(got.keys())
            .filter(|k| expected.get(*k) != got.get(*k))
            .collect();
        assert!(
            differ.is_empty(),
            "crash after {done} phases: differs in {differ:?}"
        );
    }
    Ok(())
}

#[test]
fn crash_during_the_secrets_wipe_keeps_the_secrets() -> anyhow::Result<()> {
    let (_keep, expected) = uninterrupted()?;
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    // Ingested, then the power went while the FAT copy was zeroed.
    let text = std::fs::read(root.at("boot/firmware/pibake-secrets.toml"))?;
    write(&root, "etc/pibake/secrets", &text);
    std::fs::set_permissions(
        root.at("etc/pibake/secrets"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    write(
        &root,
        "boot/firmware/pibake-secrets.toml",
        vec![0u8; text.len()],
    );
    let runner = FakeRunner::new(&root, Rc::new(Board::default()));
    let clock = FakeClock::at(NOW);
    identity::run(&Agent {
        root: root.clone(),
        clock: &clock,
        runner: &runner,
    })?;
    assert_eq!(
        snapshot(dir.path()),
        expected,
        "zeros were not taken for secrets"
    );
    Ok(())
}

#[test]
fn second_run_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "10000000aaaa0021", "dc:a6:32:00:00:21");
    let board = Rc::new(Board::default());
    let runner = FakeRunner::new(&root, board.clone());
    identity::run(&Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    })?;
    let first = snapshot_with_mtimes(dir.path());
    // The next boot, a day later.
    let runner = FakeRunner::new(&root, board);
    identity::run(&Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW + 86_400),
        runner: &runner,
    })?;
    assert_eq!(snapshot_with_mtimes(dir.path()), first);
    Ok(())
}
