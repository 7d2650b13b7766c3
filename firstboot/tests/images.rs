//! Preloaded images: loaded with `docker load` on every node whose image
//! carries some, first in the swarm command (before the join and the first
//! manager's deploy), once; a failed load is journaled with docker's reason,
//! shown by `status`, does not stop the join, and is retried by the next run.
//! Stacks that name a preloaded image are deployed with `--resolve-image
//! never`.

mod common;

use common::*;
use pibake_firstboot::images::Loaded;
use pibake_firstboot::journal::{Journal, Outcome, Step};
use pibake_firstboot::root::Root;
use pibake_firstboot::stacks::Deployed;
use pibake_firstboot::status::{self, State};
use pibake_firstboot::swarm::Joined;
use pibake_firstboot::table::{image_path, stack_path};
use std::rc::Rc;

/// A card of an image that carries the archives `names` (files where the
/// builder puts them), personalized as `serial`'s node, its clock verified,
/// its docker outside any swarm.
fn ready(
    dir: &std::path::Path,
    serial: &str,
    names: &[&str],
    board: &Rc<Board>,
) -> anyhow::Result<Root> {
    let root = card(dir, serial, "02:00:00:00:00:99");
    let mut table = lab_table();
    table.swarm.images = names.iter().map(|n| (*n).to_owned()).collect();
    table.swarm.stacks = vec!["web".into(), "db".into()];
    table.swarm.preloaded_stacks = vec!["web".into()];
    write_table(&root, &table);
    for name in names {
        write(&root, &image_path(name), format!("fake archive {name}\n"));
    }
    for name in ["web", "db"] {
        write(
            &root,
            &stack_path(name),
            format!("services:\n  {name}:\n    image: localhost/{name}:1\n"),
        );
    }
    ready_for_swarm(&root, board)?;
    Ok(root)
}

fn load_of(root: &Root, name: &str) -> String {
    format!(
        "docker load --input {}",
        root.at(&image_path(name)).display()
    )
}

fn loads(runner: &FakeRunner) -> Vec<String> {
    runner
        .programs()
        .into_iter()
        .filter(|c| c.starts_with("docker load"))
        .collect()
}

#[test]
fn a_worker_loads_its_images_before_it_joins() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &["web", "db"], &board)?;
    let (loaded, joined, deployed, runner) = swarm_command(&root, &board);
    assert_eq!(
        loaded?,
        Loaded::Now(vec![
            "web (localhost/web:1)".into(),
            "db (localhost/db:1)".into()
        ])
    );
    assert!(matches!(joined?, Joined::Joined { .. }));
    assert_eq!(deployed.expect("ran")?, Deployed::NotHere);
    let programs = runner.programs();
    assert_eq!(programs[..2], [load_of(&root, "web"), load_of(&root, "db")]);
    assert_eq!(
        programs[2], "docker info --format {{.Swarm.LocalNodeState}}",
        "the loads come before the swarm step: {programs:?}"
    );
    assert_eq!(
        board.images.borrow().iter().cloned().collect::<Vec<_>>(),
        ["localhost/db:1", "localhost/web:1"]
    );
    let record = Journal::new(&root).read(Step::Images)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    assert_eq!(
        record.why,
        "loaded web (localhost/web:1), db (localhost/db:1)"
    );
    let steps = status::status(&root);
    let names: Vec<Step> = steps.iter().map(|s| s.step).collect();
    assert_eq!(
        names,
        [Step::Identity, Step::Clock, Step::Images, Step::Swarm]
    );
    assert_eq!(steps[2].state, State::Done);
    Ok(())
}

/// Once done, the next boots load nothing (the engine keeps its images).
#[test]
fn the_next_boot_loads_nothing_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &["web"], &board)?;
    let (loaded, ..) = swarm_command(&root, &board);
    assert!(matches!(loaded?, Loaded::Now(_)));
    let before = snapshot_with_mtimes(dir.path());
    let (loaded, joined, _, runner) = swarm_command(&root, &board);
    assert_eq!(loaded?, Loaded::AlreadyDone);
    assert_eq!(joined?, Joined::AlreadyActive);
    assert!(loads(&runner).is_empty(), "{:?}", runner.programs());
    assert_eq!(snapshot_with_mtimes(dir.path()), before);
    Ok(())
}

/// An image without preloaded images loads nothing, journals nothing, and
/// `status` does not list the step.
#[test]
fn an_image_without_archives_loads_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &[], &board)?;
    let (loaded, joined, _, runner) = swarm_command(&root, &board);
    assert_eq!(loaded?, Loaded::NotHere);
    joined?;
    assert!(loads(&runner).is_empty(), "{:?}", runner.programs());
    assert_eq!(Journal::new(&root).read(Step::Images)?, None);
    assert!(status::status(&root).iter().all(|s| s.step != Step::Images));
    Ok(())
}

/// A failed load is journaled with docker's reason (the other archives are
/// still loaded), the node still joins, `status` shows it, and the next run
/// loads every archive again until it is done.
#[test]
fn a_failed_load_is_reported_and_retried_by_the_next_run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &["web", "db"], &board)?;
    let steps = status::status(&root);
    assert_eq!(
        (steps[2].step, steps[2].state),
        (Step::Images, State::Pending)
    );
    board.load_answers.borrow_mut().push_back((
        1,
        "Error processing tar file(exit status 1): write /usr/bin/busybox:\n  no space left on device\n".into(),
    ));
    let (loaded, joined, _, runner) = swarm_command(&root, &board);
    let err = loaded.expect_err("web failed");
    assert!(
        err.to_string()
            .contains("image web: Error processing tar file(exit status 1): write /usr/bin/busybox: no space left on device"),
        "{err}"
    );
    assert_eq!(loads(&runner).len(), 2, "db was still loaded");
    assert!(
        matches!(joined?, Joined::Joined { .. }),
        "the node still joins"
    );
    let record = Journal::new(&root).read(Step::Images)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(
        record.why.ends_with("; loaded db (localhost/db:1)"),
        "{}",
        record.why
    );
    assert!(!record.why.contains('\n'), "{}", record.why);
    let steps = status::status(&root);
    assert_eq!(
        (steps[2].step, steps[2].state),
        (Step::Images, State::Failed)
    );
    assert!(
        status::render(&steps).contains("images    FAILED"),
        "{}",
        status::render(&steps)
    );

    let (loaded, joined, _, runner) = swarm_command(&root, &board);
    assert_eq!(
        loaded?,
        Loaded::Now(vec![
            "web (localhost/web:1)".into(),
            "db (localhost/db:1)".into()
        ])
    );
    assert_eq!(joined?, Joined::AlreadyActive);
    assert_eq!(
        loads(&runner),
        [load_of(&root, "web"), load_of(&root, "db")]
    );
    let record = Journal::new(&root).read(Step::Images)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    Ok(())
}

/// On the first manager (here one that carries the archives too), the loads
/// come before the deploys; the stack that names a preloaded image is deployed
/// with `--resolve-image never`, the other as before.
#[test]
fn preloaded_stacks_are_deployed_without_resolving_their_images() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0011", &["web"], &board)?;
    let (loaded, joined, deployed, runner) = swarm_command(&root, &board);
    loaded?;
    assert_eq!(joined?, Joined::Initialized);
    assert_eq!(
        deployed.expect("ran")?,
        Deployed::Now(vec!["web".into(), "db".into()])
    );
    let web = root.at(&stack_path("web")).display().to_string();
    let db = root.at(&stack_path("db")).display().to_string();
    assert_eq!(
        runner.programs(),
        [
            load_of(&root, "web"),
            "docker info --format {{.Swarm.LocalNodeState}}".to_owned(),
            "docker swarm init --advertise-addr 192.168.188.11".to_owned(),
            format!("docker stack deploy --compose-file {web} --resolve-image never web"),
            format!("docker stack deploy --compose-file {db} db"),
        ]
    );
    assert_eq!(
        board
            .unresolved
            .borrow()
            .iter()
            .cloned()
            .collect::<Vec<_>>(),
        ["web"]
    );
    let names: Vec<Step> = status::status(&root).iter().map(|s| s.step).collect();
    assert_eq!(names, Step::EVERY);
    Ok(())
}

/// An image name the builder's rule refuses never becomes a path or an argument.
#[test]
fn a_bad_image_name_in_the_table_runs_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let board = Rc::new(Board::default());
    let root = ready(dir.path(), "10000000aaaa0021", &["web"], &board)?;
    let mut table = lab_table();
    table.swarm.images = vec!["web".into(), "../../etc/passwd".into()];
    write_table(&root, &table);
    let (loaded, ..) = swarm_command(&root, &board);
    let err = loaded.expect_err("bad name");
    assert!(err.to_string().contains("\"../../etc/passwd\""), "{err}");
    let record = Journal::new(&root).read(Step::Images)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(board.images.borrow().is_empty());
    Ok(())
}
