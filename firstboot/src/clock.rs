//! The clock gate: is the system clock true enough for TLS and Swarm?
//!
//! Verified only when chrony tracks a real reference (not local mode, not
//! none), leap status is normal, offset and root distance are under the
//! table's limits, the kernel's maximum error is under 16 s, and the clock is
//! not earlier than the image's build time.

use crate::atomic::write_atomic;
use crate::journal::{Journal, Outcome, Record, Step};
use crate::system::{run_checked, unix_seconds, Clock, Cmd, CommandRunner};
use crate::table::NodeTable;
use crate::{error_chain, load_table, Agent, LoadTableError};
use std::fmt;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// File whose mtime systemd uses as a floor for the clock at boot.
pub const CLOCK_FILE: &str = "var/lib/systemd/timesync/clock";

/// chrony's reference id in local mode (127.127.1.1).
pub const REFID_LOCAL: u32 = 0x7F7F_0101;

/// Kernel maximum error above which the clock is unsynchronized (the same
/// test systemd's ntp_synced() applies).
pub const KERNEL_MAXERROR: Duration = Duration::from_secs(16);

/// chrony's leap status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leap {
    Normal,
    InsertSecond,
    DeleteSecond,
    NotSynchronised,
}

/// The part of `chronyc -c tracking` the gate judges.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracking {
    pub ref_id: u32,
    pub ref_name: String,
    pub stratum: u32,
    /// System time offset from true time, seconds (sign ignored).
    pub offset: f64,
    pub root_delay: f64,
    pub root_dispersion: f64,
    pub leap: Leap,
}

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("chronyc tracking output has {found} fields, expected 14: {line:?}")]
    Fields { found: usize, line: String },
    #[error("chronyc tracking field {field} is not valid: {value:?}")]
    Field { field: &'static str, value: String },
    #[error(transparent)]
    Command(#[from] crate::system::CommandError),
    #[error("timedatectl answered {0:?} for NTPSynchronized")]
    Timedatectl(String),
    #[error(transparent)]
    Table(#[from] LoadTableError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error(transparent)]
    Write(#[from] crate::atomic::WriteError),
    #[error("cannot set the time of {path}")]
    Touch {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("clock not verified within {waited} s: {why}")]
    Unverified { waited: u64, why: String },
}

impl Tracking {
    /// Parses one line of `chronyc -c tracking`: reference id (hex), name,
    /// stratum, ref time, system offset, last offset, RMS offset, frequency,
    /// residual frequency, skew, root delay, root dispersion, update
    /// interval, leap status.
    pub fn parse_csv(line: &str) -> Result<Self, ClockError> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 14 {
            return Err(ClockError::Fields {
                found: f.len(),
                line: line.trim().to_owned(),
            });
        }
        let bad = |field, value: &str| ClockError::Field {
            field,
            value: value.to_owned(),
        };
        let num = |field, i: usize| -> Result<f64, ClockError> {
            f[i].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(field, f[i]))
        };
        Ok(Tracking {
            ref_id: u32::from_str_radix(f[0], 16).map_err(|_| bad("reference id", f[0]))?,
            ref_name: f[1].to_owned(),
            stratum: f[2].parse().map_err(|_| bad("stratum", f[2]))?,
            offset: num("system time", 4)?.abs(),
            root_delay: num("root delay", 10)?,
            root_dispersion: num("root dispersion", 11)?,
            leap: match f[13] {
                "Normal" => Leap::Normal,
                "Insert second" => Leap::InsertSecond,
                "Delete second" => Leap::DeleteSecond,
                "Not synchronised" => Leap::NotSynchronised,
                other => return Err(bad("leap status", other)),
            },
        })
    }

    /// Root distance: half the root delay plus the root dispersion.
    pub fn root_distance(&self) -> f64 {
        self.root_delay / 2.0 + self.root_dispersion
    }
}

/// chrony's view of the clock.
pub trait ChronyClient: fmt::Debug {
    fn tracking(&self) -> Result<Tracking, ClockError>;
}

/// The kernel's view of the clock.
pub trait KernelClock: fmt::Debug {
    /// True when the kernel's maximum error (adjtimex maxerror) is under
    /// [`KERNEL_MAXERROR`].
    fn maxerror_ok(&self) -> Result<bool, ClockError>;
}

/// Asks chronyd through `chronyc -c tracking`.
#[derive(Debug)]
pub struct Chronyc<'a>(pub &'a dyn CommandRunner);

impl ChronyClient for Chronyc<'_> {
    fn tracking(&self) -> Result<Tracking, ClockError> {
        let out = run_checked(self.0, &Cmd::new("chronyc").arg("-c").arg("tracking"))?;
        Tracking::parse_csv(out.stdout.lines().next().unwrap_or(""))
    }
}

/// Reads the kernel's verdict through `timedatectl show -p NTPSynchronized`:
/// systemd computes it as adjtimex maxerror < 16 s (systemd PR #13245),
/// and reading adjtimex directly would need `unsafe` (no maintained crate
/// has a safe wrapper), which this workspace denies.
#[derive(Debug)]
pub struct Timedatectl<'a>(pub &'a dyn CommandRunner);

impl KernelClock for Timedatectl<'_> {
    fn maxerror_ok(&self) -> Result<bool, ClockError> {
        let cmd = Cmd::new("timedatectl")
            .arg("show")
            .arg("--property=NTPSynchronized")
            .arg("--value");
        let out = run_checked(self.0, &cmd)?;
        match out.stdout.trim() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(ClockError::Timedatectl(other.to_owned())),
        }
    }
}

/// Why the clock is not (yet) verified.
#[derive(Debug, Clone, PartialEq)]
pub enum Unverified {
    /// chrony has no reference at all.
    NoReference,
    /// chrony serves its own clock (`local stratum`): looks synced, is not.
    LocalMode,
    Leap(Leap),
    Offset {
        seconds: f64,
        limit: f64,
    },
    RootDistance {
        seconds: f64,
        limit: f64,
    },
    KernelMaxError,
    BeforeBuild {
        now: u64,
        build: u64,
    },
}

impl fmt::Display for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unverified::NoReference => f.write_str("chrony has no reference"),
            Unverified::LocalMode => {
                f.write_str("chrony is in local mode (reference 7F7F0101), not synchronized")
            }
            Unverified::Leap(leap) => write!(f, "chrony leap status is {leap:?}, not Normal"),
            Unverified::Offset { seconds, limit } => {
                write!(f, "offset {seconds:.6} s is over the limit {limit:.3} s")
            }
            Unverified::RootDistance { seconds, limit } => {
                write!(
                    f,
                    "root distance {seconds:.6} s is over the limit {limit:.3} s"
                )
            }
            Unverified::KernelMaxError => f.write_str("kernel maximum error is 16 s or more"),
            Unverified::BeforeBuild { now, build } => write!(
                f,
                "clock reads {now}, earlier than the image's build time {build}"
            ),
        }
    }
}

/// Judges one observation of the clock.
pub fn judge(
    tracking: &Tracking,
    maxerror_ok: bool,
    now: SystemTime,
    table: &NodeTable,
) -> Result<(), Unverified> {
    if tracking.ref_id == 0 {
        return Err(Unverified::NoReference);
    }
    if tracking.ref_id == REFID_LOCAL {
        return Err(Unverified::LocalMode);
    }
    if tracking.leap != Leap::Normal {
        return Err(Unverified::Leap(tracking.leap));
    }
    let limit = table.clock.max_offset_ms as f64 / 1000.0;
    if tracking.offset > limit {
        return Err(Unverified::Offset {
            seconds: tracking.offset,
            limit,
        });
    }
    let limit = table.clock.max_root_distance_ms as f64 / 1000.0;
    if tracking.root_distance() > limit {
        return Err(Unverified::RootDistance {
            seconds: tracking.root_distance(),
            limit,
        });
    }
    if !maxerror_ok {
        return Err(Unverified::KernelMaxError);
    }
    let now = unix_seconds(now);
    if now < table.build_epoch {
        return Err(Unverified::BeforeBuild {
            now,
            build: table.build_epoch,
        });
    }
    Ok(())
}

/// Pause between two looks at chrony.
pub const POLL: Duration = Duration::from_secs(2);

/// Waits (bounded by the table's `clock.wait_seconds`) for a verified clock;
/// journals the verdict; on success sets the systemd clock file's mtime to
/// now. Returns the last reason as an error when time runs out.
pub fn run(
    agent: &Agent<'_>,
    chrony: &dyn ChronyClient,
    kernel: &dyn KernelClock,
) -> Result<Tracking, ClockError> {
    let journal = Journal::new(&agent.root);
    let boot_id = crate::journal::boot_id(&agent.root);
    let result = wait(agent, chrony, kernel);
    let record = |outcome, why: String| Record {
        outcome,
        at: unix_seconds(agent.clock.now()),
        why,
        node: None,
        boot_id: boot_id.clone(),
    };
    match &result {
        Ok(t) => {
            touch_clock_file(agent)?;
            let why = format!(
                "synchronized to {} (stratum {}), offset {:.6} s, root distance {:.6} s",
                t.ref_name,
                t.stratum,
                t.offset,
                t.root_distance()
            );
            log::info!("clock verified: {why}");
            journal.record(Step::Clock, &record(Outcome::Done, why))?;
        }
        Err(e) => {
            let why = error_chain(e);
            log::error!("clock not verified: {why}");
            journal.record(Step::Clock, &record(Outcome::Failed, why))?;
        }
    }
    result
}

fn wait(
    agent: &Agent<'_>,
    chrony: &dyn ChronyClient,
    kernel: &dyn KernelClock,
) -> Result<Tracking, ClockError> {
    let table = load_table(&agent.root)?;
    let limit = Duration::from_secs(table.clock.wait_seconds);
    let start = agent.clock.elapsed();
    loop {
        let why = match observe(agent.clock, chrony, kernel, &table) {
            Ok(tracking) => return Ok(tracking),
            Err(why) => why,
        };
        let waited = agent.clock.elapsed().saturating_sub(start);
        if waited >= limit {
            return Err(ClockError::Unverified {
                waited: waited.as_secs(),
                why,
            });
        }
        log::info!("clock not verified yet: {why}");
        agent.clock.sleep(POLL.min(limit - waited));
    }
}

fn observe(
    clock: &dyn Clock,
    chrony: &dyn ChronyClient,
    kernel: &dyn KernelClock,
    table: &NodeTable,
) -> Result<Tracking, String> {
    let tracking = chrony.tracking().map_err(|e| error_chain(&e))?;
    let maxerror_ok = kernel.maxerror_ok().map_err(|e| error_chain(&e))?;
    judge(&tracking, maxerror_ok, clock.now(), table).map_err(|u| u.to_string())?;
    Ok(tracking)
}

/// Sets the systemd clock file's mtime to now (creating it if needed), so
/// the next boot starts from a recent floor.
fn touch_clock_file(agent: &Agent<'_>) -> Result<(), ClockError> {
    let path = agent.root.at(CLOCK_FILE);
    if !path.exists() {
        write_atomic(&path, b"", 0o644)?;
    }
    let touch = || -> std::io::Result<()> {
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_modified(agent.clock.now())?;
        file.sync_all()
    };
    touch().map_err(|cause| ClockError::Touch {
        path: path.clone(),
        cause,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_csv() -> anyhow::Result<()> {
        let t = Tracking::parse_csv(
            "50505300,PPS,1,1700000000.123456789,-0.000000123,0.000000100,0.000000200,-1.234,0.000,0.010,0.000001000,0.000010000,16.0,Normal\n",
        )?;
        assert_eq!(t.ref_id, 0x5050_5300);
        assert_eq!(t.ref_name, "PPS");
        assert!((t.offset - 0.000000123).abs() < 1e-12);
        assert!((t.root_distance() - 0.0000105).abs() < 1e-12);
        assert_eq!(t.leap, Leap::Normal);
        assert!(Tracking::parse_csv("1,2,3").is_err());
        Ok(())
    }
}
