//! Swarm: init vs join, retries, idempotence, preconditions, no token in logs.

mod common;

use common::*;
use pibake_firstboot::journal::{Journal, Outcome, Record, Step};
use pibake_firstboot::root::Root;
use pibake_firstboot::swarm::{self, Joined};
use pibake_firstboot::{identity, Agent};
use std::rc::Rc;
use std::sync::{Mutex, OnceLock};

/// Every log line of this test binary (tests run in parallel: all of them
/// must be free of tokens, which is the point).
static LOGS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

#[derive(Debug)]
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut logs) = LOGS.get_or_init(Default::default).lock() {
            logs.push(record.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn capture_logs() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

fn logs() -> Vec<String> {
    LOGS.get_or_init(Default::default)
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default()
}

/// A card personalized as `serial`'s node with a verified clock this boot.
fn ready(dir: &std::path::Path, serial: &str, board: &Rc<Board>) -> anyhow::Result<Root> {
    capture_logs();
    let root = card(dir, serial, "02:00:00:00:00:99");
    ready_for_swarm(&root, board)?;
    Ok(root)
}

fn run(
    root: &Root,
    board: &Rc<Board>,
    clock: &FakeClock,
) -> (Result<Joined, swarm::SwarmError>, FakeRunner) {
    let runner = FakeRunner::new(root, board.clone());
    let result = swarm::run(&Agent {
        root: root.clone(),
        clock,
        runner: &runner,
    });
    (result, runner)
}

#[test]
fn first_manager_inits_with_its_own_address() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert_eq!(result?, Joined::Initialized);
    assert_eq!(
        runner.programs(),
        vec![
            "docker info --format {{.Swarm.LocalNodeState}}",
            "docker swarm init --advertise-addr 192.168.188.11",
        ]
    );
    assert_eq!(
        Journal::new(&root).read(Step::Swarm)?.map(|r| r.outcome),
        Some(Outcome::Done)
    );
    Ok(())
}

#[test]
fn worker_joins_with_the_worker_token_and_its_own_address() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &board)?;
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert_eq!(
        result?,
        Joined::Joined {
            via: [192, 168, 188, 10].into()
        }
    );
    let ran = runner.ran.borrow();
    assert_eq!(
        ran[1],
        [
            "docker",
            "swarm",
            "join",
            "--token",
            WORKER_TOKEN,
            "--advertise-addr",
            "192.168.188.21",
            "192.168.188.10:2377"
        ]
    );
    Ok(())
}

#[test]
fn other_manager_joins_with_the_manager_token_not_to_itself() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0012", &board)?;
    board
        .join_answers
        .borrow_mut()
        .push_back((1, "connection refused".into()));
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert_eq!(
        result?,
        Joined::Joined {
            via: [192, 168, 188, 11].into()
        }
    );
    let ran = runner.ran.borrow();
    assert_eq!(ran[1][4], MANAGER_TOKEN);
    assert_eq!(ran[1][6], "192.168.188.12");
    Ok(())
}

#[test]
fn retries_with_backoff_while_managers_are_unreachable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0022", &board)?;
    let unreachable =
        "Error response from daemon: rpc error: code = Unavailable desc = connection error";
    board
        .join_answers
        .borrow_mut()
        .extend((0..4).map(|_| (1, unreachable.to_owned())));
    let clock = FakeClock::at(NOW);
    let (result, runner) = run(&root, &board, &clock);
    assert!(matches!(result?, Joined::Joined { .. }));
    // Two rounds of two addresses failed: slept 2 s then 4 s.
    assert_eq!(clock.elapsed.get().as_secs(), 6);
    assert_eq!(
        runner
            .programs()
            .iter()
            .filter(|c| c.contains("swarm join"))
            .count(),
        5
    );
    Ok(())
}

#[test]
fn gives_up_when_no_manager_answers_in_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &board)?;
    board
        .join_answers
        .borrow_mut()
        .extend((0..100).map(|_| (1, "connection refused".to_owned())));
    let clock = FakeClock::at(NOW);
    let (result, _) = run(&root, &board, &clock);
    let err = result.expect_err("nobody answers");
    assert!(err.to_string().contains("no manager answered"), "{err}");
    assert!(
        clock.elapsed.get().as_secs() <= 60,
        "bounded by the table's wait"
    );
    let record = Journal::new(&root).read(Step::Swarm)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(!record.why.contains(WORKER_TOKEN));
    Ok(())
}

#[test]
fn wrong_token_fails_at_once_and_is_not_echoed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &board)?;
    board.join_answers.borrow_mut().push_back((
        1,
        format!("Error response from daemon: invalid join token {WORKER_TOKEN}"),
    ));
    let clock = FakeClock::at(NOW);
    let (result, _) = run(&root, &board, &clock);
    let err = result.expect_err("rejected");
    assert!(!err.to_string().contains(WORKER_TOKEN), "{err}");
    assert!(err.to_string().contains("<redacted>"), "{err}");
    assert_eq!(clock.elapsed.get().as_secs(), 0);
    Ok(())
}

#[test]
fn already_active_node_does_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &board)?;
    *board.swarm_state.borrow_mut() = "active".into();
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert_eq!(result?, Joined::AlreadyActive);
    assert_eq!(
        runner.programs(),
        vec!["docker info --format {{.Swarm.LocalNodeState}}"]
    );
    Ok(())
}

#[test]
fn node_outside_the_swarm_runs_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    capture_logs();
    let root = card(dir.path(), "none", "dc:a6:32:00:00:30");
    let runner = FakeRunner::new(&root, board.clone());
    identity::run(&Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    })?;
    Journal::new(&root).record(
        Step::Clock,
        &Record {
            outcome: Outcome::Done,
            at: NOW,
            why: "synchronized".into(),
            node: None,
            boot_id: Some("0b7c3e2a-0000-4000-8000-000000000001".into()),
        },
    )?;
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert_eq!(result?, Joined::NotInSwarm);
    assert!(runner.ran.borrow().is_empty());
    Ok(())
}

#[test]
fn needs_identity_and_a_clock_verified_in_this_boot() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &board)?;
    // The clock was verified in another boot.
    write(
        &root,
        "proc/sys/kernel/random/boot_id",
        "0b7c3e2a-0000-4000-8000-000000000002\n",
    );
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert!(result
        .expect_err("stale clock")
        .to_string()
        .contains("earlier boot"));
    assert!(runner.ran.borrow().is_empty());

    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "unknown", "02:00:00:00:00:99");
    let (result, runner) = run(&root, &board, &FakeClock::at(NOW));
    assert!(result
        .expect_err("no identity")
        .to_string()
        .contains("identity is not done"));
    assert!(runner.ran.borrow().is_empty());
    Ok(())
}

#[test]
fn token_never_reaches_the_logs() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0012", &board)?;
    board
        .join_answers
        .borrow_mut()
        .push_back((1, format!("echo of {MANAGER_TOKEN}")));
    let (result, _) = run(&root, &board, &FakeClock::at(NOW));
    result?;
    let logs = logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("docker swarm join --token <redacted>")),
        "the join was logged: {logs:?}"
    );
    for line in &logs {
        assert!(
            !line.contains(WORKER_TOKEN) && !line.contains(MANAGER_TOKEN),
            "{line}"
        );
    }
    Ok(())
}
