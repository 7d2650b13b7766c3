//! Stacks: deployed once, by the node that initializes the swarm, after the
//! swarm step; never on the other managers or the workers; a failed deploy
//! is journaled, shown by `status`, and retried by the next run.

mod common;

use common::*;
use pibake_firstboot::journal::{Journal, Outcome, Step};
use pibake_firstboot::root::Root;
use pibake_firstboot::stacks::{self, Deployed};
use pibake_firstboot::status::{self, State};
use pibake_firstboot::swarm::Joined;
use pibake_firstboot::table::stack_path;
use pibake_firstboot::{identity, Agent};
use std::rc::Rc;

const STACKS: [&str; 2] = ["db", "web"];

/// A card of the lab's image with two stacks (their compose files where the
/// builder puts them), personalized as `serial`'s node, its clock verified
/// in this boot, its docker outside any swarm.
fn ready(dir: &std::path::Path, serial: &str, board: &Rc<Board>) -> anyhow::Result<Root> {
    let root = card(dir, serial, "02:00:00:00:00:99");
    let mut table = lab_table();
    table.swarm.stacks = STACKS.map(str::to_owned).to_vec();
    write_table(&root, &table);
    for name in STACKS {
        write(
            &root,
            &stack_path(name),
            format!("services:\n  {name}:\n    image: {name}:1\n"),
        );
    }
    ready_for_swarm(&root, board)?;
    Ok(root)
}

fn deploys(runner: &FakeRunner) -> Vec<String> {
    runner
        .programs()
        .into_iter()
        .filter(|c| c.starts_with("docker stack deploy"))
        .collect()
}

fn deploy_of(root: &Root, name: &str) -> String {
    format!(
        "docker stack deploy --compose-file {} {name}",
        root.at(&stack_path(name)).display()
    )
}

#[test]
fn first_manager_deploys_each_stack_once_the_swarm_exists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    let (_, joined, deployed, runner) = swarm_command(&root, &board);
    assert_eq!(joined?, Joined::Initialized);
    assert_eq!(
        deployed.expect("the swarm step succeeded")?,
        Deployed::Now(vec!["db".into(), "web".into()])
    );
    assert_eq!(
        runner.programs(),
        vec![
            "docker info --format {{.Swarm.LocalNodeState}}".to_owned(),
            "docker swarm init --advertise-addr 192.168.188.11".to_owned(),
            deploy_of(&root, "db"),
            deploy_of(&root, "web"),
        ]
    );
    assert_eq!(
        board.stacks.borrow().iter().cloned().collect::<Vec<_>>(),
        ["db", "web"]
    );
    let record = Journal::new(&root).read(Step::Stacks)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    assert_eq!(record.why, "deployed db, web");
    let steps = status::status(&root);
    assert_eq!(steps.len(), 4);
    assert_eq!(steps[3].step, Step::Stacks);
    assert_eq!(steps[3].state, State::Done);
    Ok(())
}

/// Once done, the next boots deploy nothing (the swarm keeps the stacks; a
/// deploy would re-resolve tags and undo an operator's changes).
#[test]
fn the_next_boot_deploys_nothing_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    let (_, _, deployed, _) = swarm_command(&root, &board);
    assert!(matches!(deployed, Some(Ok(Deployed::Now(_)))));
    let before = snapshot_with_mtimes(dir.path());
    let (_, joined, deployed, runner) = swarm_command(&root, &board);
    assert_eq!(joined?, Joined::AlreadyActive);
    assert_eq!(deployed.expect("ran")?, Deployed::AlreadyDone);
    assert!(deploys(&runner).is_empty(), "{:?}", runner.programs());
    assert_eq!(snapshot_with_mtimes(dir.path()), before);
    Ok(())
}

#[test]
fn other_managers_and_workers_deploy_nothing() -> anyhow::Result<()> {
    for serial in ["10000000aaaa0012", "10000000aaaa0021"] {
        let dir = tempfile::tempdir()?;
        let board = Rc::new(Board::default());
        let root = ready(dir.path(), serial, &board)?;
        // Their images carry the table's stacks too (the second manager's
        // files): the table is the image's, not the node's.
        assert_eq!(stacks::stacks_here(&root)?, Vec::<String>::new());
        let (_, joined, deployed, runner) = swarm_command(&root, &board);
        assert!(matches!(joined?, Joined::Joined { .. }));
        assert_eq!(deployed.expect("ran")?, Deployed::NotHere);
        assert!(deploys(&runner).is_empty(), "{:?}", runner.programs());
        assert_eq!(Journal::new(&root).read(Step::Stacks)?, None);
        let steps = status::status(&root);
        assert!(
            steps.iter().all(|s| s.step != Step::Stacks),
            "{serial}: {steps:?}"
        );
    }
    Ok(())
}

#[test]
fn node_outside_the_swarm_deploys_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = card(dir.path(), "none", "dc:a6:32:00:00:30");
    let mut table = lab_table();
    table.swarm.stacks = vec!["web".into()];
    write_table(&root, &table);
    let runner = FakeRunner::new(&root, board.clone());
    identity::run(&Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    })?;
    let agent = Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    };
    assert_eq!(stacks::run(&agent)?, Deployed::NotHere);
    assert!(deploys(&runner).is_empty());
    Ok(())
}

/// A failed deploy is journaled with docker's reason (the other stacks are
/// still deployed), the command fails without a crash, `status` shows it,
/// and the next run deploys again until it is done.
#[test]
fn a_failed_deploy_is_reported_and_retried_by_the_next_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    board.deploy_answers.borrow_mut().push_back((
        1,
        "failed to create service db_db: Error response from daemon:\n  rpc error: code = InvalidArgument desc = port 5432 is already in use\n".into(),
    ));
    let (_, joined, deployed, runner) = swarm_command(&root, &board);
    assert_eq!(joined?, Joined::Initialized);
    let err = deployed.expect("ran").expect_err("db failed");
    assert!(
        err.to_string().contains(
            "stack db: failed to create service db_db: Error response from daemon: rpc error"
        ),
        "{err}"
    );
    assert_eq!(deploys(&runner).len(), 2, "web was still deployed");
    let record = Journal::new(&root).read(Step::Stacks)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(
        record.why.contains("port 5432 is already in use"),
        "{}",
        record.why
    );
    assert!(record.why.ends_with("; deployed web"), "{}", record.why);
    assert!(!record.why.contains('\n'), "{}", record.why);
    // The swarm itself is fine.
    let swarm = Journal::new(&root).read(Step::Swarm)?.expect("journaled");
    assert_eq!(swarm.outcome, Outcome::Done);
    let steps = status::status(&root);
    assert_eq!(steps[3].step, Step::Stacks);
    assert_eq!(steps[3].state, State::Failed);
    assert!(
        status::render(&steps).contains("stacks    FAILED"),
        "{}",
        status::render(&steps)
    );

    // The next boot: the swarm is there, both stacks are deployed again.
    let (_, joined, deployed, runner) = swarm_command(&root, &board);
    assert_eq!(joined?, Joined::AlreadyActive);
    assert_eq!(
        deployed.expect("ran")?,
        Deployed::Now(vec!["db".into(), "web".into()])
    );
    assert_eq!(
        deploys(&runner),
        [deploy_of(&root, "db"), deploy_of(&root, "web")]
    );
    let record = Journal::new(&root).read(Step::Stacks)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    Ok(())
}

/// Before the swarm step has succeeded, nothing is deployed; `status` shows
/// the step pending on the first manager only.
#[test]
fn nothing_is_deployed_before_the_swarm_exists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    let steps = status::status(&root);
    assert_eq!(steps[3].step, Step::Stacks);
    assert_eq!(steps[3].state, State::Pending);
    let runner = FakeRunner::new(&root, board.clone());
    let agent = Agent {
        root: root.clone(),
        clock: &FakeClock::at(NOW),
        runner: &runner,
    };
    let err = stacks::run(&agent).expect_err("no swarm yet");
    assert!(
        err.to_string().contains("the swarm step is not done"),
        "{err}"
    );
    assert!(runner.ran.borrow().is_empty());
    Ok(())
}

/// A stack name the builder's rule refuses never becomes a path or an argument.
#[test]
fn a_bad_stack_name_in_the_table_runs_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &board)?;
    let mut table = lab_table();
    table.swarm.stacks = vec!["web".into(), "--prune".into()];
    write_table(&root, &table);
    let (_, joined, deployed, runner) = swarm_command(&root, &board);
    joined?;
    let err = deployed.expect("ran").expect_err("bad name");
    assert!(err.to_string().contains("\"--prune\""), "{err}");
    assert!(deploys(&runner).is_empty());
    Ok(())
}
