//! The clock gate's verdicts and its bounded wait.

mod common;

use common::*;
use pibake_firstboot::clock::{
    self, judge, Chronyc, Timedatectl, Tracking, Unverified, CLOCK_FILE,
};
use pibake_firstboot::journal::{Journal, Outcome, Step};
use pibake_firstboot::Agent;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn gps() -> Tracking {
    Tracking::parse_csv(&tracking_line(
        "50505300",
        "PPS",
        -0.000000450,
        0.000001,
        0.000020,
        "Normal",
    ))
    .expect("parses")
}

#[test]
fn synced_gps_is_verified() {
    assert_eq!(judge(&gps(), true, at(NOW), &lab_table()), Ok(()));
    let nmea_gps = Tracking::parse_csv(&tracking_line(
        "47505300", "GPS", 0.0000012, 0.0, 0.00001, "Normal",
    ))
    .expect("parses");
    assert_eq!(judge(&nmea_gps, true, at(NOW), &lab_table()), Ok(()));
}

#[test]
fn local_mode_is_never_verified() {
    let local = Tracking::parse_csv(&tracking_line("7F7F0101", "", 0.0, 0.0, 0.0, "Normal"))
        .expect("parses");
    assert_eq!(
        judge(&local, true, at(NOW), &lab_table()),
        Err(Unverified::LocalMode)
    );
}

#[test]
fn no_reference_is_not_verified() {
    let none = Tracking::parse_csv(&tracking_line(
        "00000000",
        "",
        0.0,
        1.0,
        1.0,
        "Not synchronised",
    ))
    .expect("parses");
    assert_eq!(
        judge(&none, false, at(NOW), &lab_table()),
        Err(Unverified::NoReference)
    );
}

#[test]
fn leap_status_must_be_normal() {
    let mut t = gps();
    t.leap = clock::Leap::NotSynchronised;
    assert!(matches!(
        judge(&t, true, at(NOW), &lab_table()),
        Err(Unverified::Leap(_))
    ));
}

#[test]
fn clock_before_build_time_is_not_verified() {
    assert_eq!(
        judge(&gps(), true, at(BUILD_EPOCH - 1), &lab_table()),
        Err(Unverified::BeforeBuild {
            now: BUILD_EPOCH - 1,
            build: BUILD_EPOCH
        })
    );
    assert_eq!(judge(&gps(), true, at(BUILD_EPOCH), &lab_table()), Ok(()));
}

#[test]
fn large_offset_is_not_verified_whatever_its_sign() {
    for offset in [0.25, -0.25] {
        let t = Tracking::parse_csv(&tracking_line(
            "C0A8BC1E",
            "192.168.188.30",
            offset,
            0.001,
            0.001,
            "Normal",
        ))
        .expect("parses");
        assert!(matches!(
            judge(&t, true, at(NOW), &lab_table()),
            Err(Unverified::Offset { .. })
        ));
    }
}

#[test]
fn large_root_distance_is_not_verified() {
    // 1.2/2 + 0.5 = 1.1 s > 1 s.
    let t = Tracking::parse_csv(&tracking_line("C0A8BC1E", "ntp", 0.001, 1.2, 0.5, "Normal"))
        .expect("parses");
    assert!(matches!(
        judge(&t, true, at(NOW), &lab_table()),
        Err(Unverified::RootDistance { .. })
    ));
}

#[test]
fn kernel_maxerror_of_16s_or_more_is_not_verified() {
    assert_eq!(
        judge(&gps(), false, at(NOW), &lab_table()),
        Err(Unverified::KernelMaxError)
    );
}

fn gate(
    root: &pibake_firstboot::root::Root,
    board: Rc<Board>,
    clock: &FakeClock,
) -> (Result<Tracking, clock::ClockError>, Vec<String>) {
    let runner = FakeRunner::new(root, board);
    let agent = Agent {
        root: root.clone(),
        clock,
        runner: &runner,
    };
    let result = clock::run(&agent, &Chronyc(&runner), &Timedatectl(&runner));
    (result, runner.programs())
}

#[test]
fn waits_for_sync_then_records_it_and_touches_the_clock_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "x", "y");
    let board = Rc::new(Board::default());
    board.ntp_synchronized.set(true);
    board.tracking.borrow_mut().extend([
        tracking_line("00000000", "", 0.0, 0.0, 0.0, "Not synchronised"),
        tracking_line("7F7F0101", "", 0.0, 0.0, 0.0, "Normal"),
        tracking_line("50505300", "PPS", 0.0000004, 0.000001, 0.00002, "Normal"),
    ]);
    let clock = FakeClock::at(NOW);
    let (result, ran) = gate(&root, board, &clock);
    let t = result?;
    assert_eq!(t.ref_name, "PPS");
    assert_eq!(ran.iter().filter(|c| c.starts_with("chronyc")).count(), 3);
    assert_eq!(clock.elapsed.get(), 2 * clock::POLL);
    let record = Journal::new(&root).read(Step::Clock)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Done);
    assert!(record.why.contains("PPS"), "{}", record.why);
    assert_eq!(
        record.boot_id.as_deref(),
        Some("0b7c3e2a-0000-4000-8000-000000000001")
    );
    let mtime = std::fs::metadata(root.at(CLOCK_FILE))?.modified()?;
    assert_eq!(mtime, clock.now_time());
    Ok(())
}

#[test]
fn gives_up_after_the_bounded_wait() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = card(dir.path(), "x", "y");
    let board = Rc::new(Board::default());
    board.ntp_synchronized.set(true);
    board
        .tracking
        .borrow_mut()
        .push_back(tracking_line("7F7F0101", "", 0.0, 0.0, 0.0, "Normal"));
    let clock = FakeClock::at(NOW);
    let (result, _) = gate(&root, board, &clock);
    let err = result.expect_err("local mode never verifies");
    assert!(err.to_string().contains("local mode"), "{err}");
    assert_eq!(
        clock.elapsed.get(),
        Duration::from_secs(30),
        "wait_seconds of the table"
    );
    let record = Journal::new(&root).read(Step::Clock)?.expect("journaled");
    assert_eq!(record.outcome, Outcome::Failed);
    assert!(
        !root.at(CLOCK_FILE).exists(),
        "no floor from an unverified clock"
    );
    Ok(())
}

trait NowTime {
    fn now_time(&self) -> SystemTime;
}

impl NowTime for FakeClock {
    fn now_time(&self) -> SystemTime {
        at(self.wall.get())
    }
}
