//! An emulated GPS receiver: NMEA 0183 sentences once a second, for a time
//! the test chooses, into the UART of the GPS node's VM.
//!
//! The receiver is a pair of FIFOs, `<base>.in` and `<base>.out`, behind
//! QEMU's `pipe` chardev on the VM's first PL011 (`ttyAMA0`, the Pi 4's
//! header UART with disable-bt), so the image's gpsd and chrony read it
//! unchanged. Each second the feed sends `$GPGGA`, `$GPGSA` and `$GPRMC` (a
//! 3D fix, status A, the date): what gpsd needs to report time to chrony.
//! What the guest writes to its receiver (gpsd's probes) is read and
//! dropped, as a receiver without a configuration port would.
//!
//! A real receiver sends the sentences of second S some 0.1-0.5 s after S
//! (the image's NMEA refclock says `offset 0.5`, overlays/gps): the feed
//! sends them a lag (given to [`Feed::start`]) after S, so that the GPS node's clock ends near
//! the feed's time rather than a constant half second off it.
//!
//! A UART keeps nothing for a reader that is not there: while the guest has
//! not opened ttyAMA0, QEMU takes no bytes, and a FIFO would hold a backlog
//! of old seconds for gpsd to read as a burst when it opens. So a second is
//! written only when the FIFO is empty (FIONREAD): at most one stale second
//! is ever queued.

use crate::{io_err, HarnessError, Result};
use pibake_host::civil::{civil_from_days, days_from_civil};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The receiver's place: a fixed point (the lab's city), 45 m up.
const LATITUDE: &str = "5231.000,N";
const LONGITUDE: &str = "01324.000,E";

/// The time the feed sends: the host's clock moved by a fixed offset.
#[derive(Debug, Clone, Copy)]
pub struct GpsClock {
    /// GPS time minus host time, seconds.
    pub offset_secs: i64,
}

impl GpsClock {
    /// GPS time now, seconds since the epoch (fractional).
    pub fn now(&self) -> f64 {
        host_now() + self.offset_secs as f64
    }
}

/// The host's clock, seconds since the epoch (fractional).
pub fn host_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A running feed: its FIFOs and the thread that writes them. Stopped on
/// drop, FIFOs removed.
#[derive(Debug)]
pub struct Feed {
    base: PathBuf,
    clock: GpsClock,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Opens a FIFO for reading and writing, non-blocking: opening never
/// waits for the other end, and a write never fails for want of a reader.
fn open_fifo(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io_err(path))
}

fn make_fifo(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_err(path)(e.into()))
}

impl Feed {
    /// Makes `<base>.in` and `<base>.out` and sends the sentences of
    /// `clock`, each second `lag` after it, into `<base>.in`.
    pub fn start(base: &Path, clock: GpsClock, lag: Duration) -> Result<Self> {
        let (inp, out) = (base.with_extension("in"), base.with_extension("out"));
        make_fifo(&inp)?;
        make_fifo(&out)?;
        let (to_guest, from_guest) = (open_fifo(&inp)?, open_fifo(&out)?);
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || serve(to_guest, from_guest, clock, lag, &s, &n));
        Ok(Feed {
            base: base.to_owned(),
            clock,
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// The chardev's `path=` (QEMU adds `.in` and `.out`).
    pub fn base(&self) -> &Path {
        &self.base
    }

    pub fn clock(&self) -> GpsClock {
        self.clock
    }

    /// Seconds written so far.
    pub fn seconds_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for ext in ["in", "out"] {
            let _ = std::fs::remove_file(self.base.with_extension(ext));
        }
    }
}

fn serve(
    mut to_guest: File,
    mut from_guest: File,
    clock: GpsClock,
    lag: Duration,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let mut sink = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        // The next second whose send time (second + lag) is still ahead.
        let second = (now - lag.as_secs_f64()).floor() as i64 + 1;
        let wait = second as f64 + lag.as_secs_f64() - now;
        std::thread::sleep(Duration::from_secs_f64(wait.clamp(0.0, 1.0)));
        while matches!(from_guest.read(&mut sink), Ok(n) if n > 0) {}
        if rustix::io::ioctl_fionread(&to_guest).is_ok_and(|queued| queued == 0)
            && to_guest.write_all(sentences(second).as_bytes()).is_ok()
        {
            sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The sentences of one second (`unix` seconds, UTC): GGA, GSA, RMC.
pub fn sentences(unix: i64) -> String {
    let (date, time) = utc(unix);
    let mut out = String::new();
    for body in [
        format!("GPGGA,{time}.00,{LATITUDE},{LONGITUDE},1,08,0.9,45.0,M,44.0,M,,"),
        "GPGSA,A,3,01,03,06,09,12,17,19,23,,,,,1.6,0.9,1.3".to_owned(),
        format!("GPRMC,{time}.00,A,{LATITUDE},{LONGITUDE},0.0,0.0,{date},,,A"),
    ] {
        let _ = write!(out, "${body}*{:02X}\r\n", checksum(&body));
    }
    out
}

/// NMEA's checksum: the XOR of the bytes between `$` and `*`.
pub fn checksum(body: &str) -> u8 {
    body.bytes().fold(0, |a, b| a ^ b)
}

/// `(ddmmyy, hhmmss)` of a Unix time.
fn utc(unix: i64) -> (String, String) {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (
        format!("{d:02}{m:02}{:02}", y.rem_euclid(100)),
        format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60),
    )
}

/// Parses the time of a `$GPRMC` sentence back (for the tests of the feed).
pub fn rmc_time(sentence: &str) -> Result<i64> {
    let bad = || HarnessError::Invalid(format!("not a valid $GPRMC: {sentence:?}"));
    let (body, sum) = sentence
        .trim()
        .strip_prefix('$')
        .and_then(|s| s.split_once('*'))
        .ok_or_else(bad)?;
    if u8::from_str_radix(sum, 16).ok() != Some(checksum(body)) {
        return Err(bad());
    }
    let f: Vec<&str> = body.split(',').collect();
    if f.first() != Some(&"GPRMC") || f.get(2) != Some(&"A") || f.len() < 10 {
        return Err(bad());
    }
    let num = |s: &str, r: std::ops::Range<usize>| s.get(r).and_then(|v| v.parse::<i64>().ok());
    let (t, d) = (f[1], f[9]);
    let (hh, mm, ss) = (num(t, 0..2), num(t, 2..4), num(t, 4..6));
    let (dd, mo, yy) = (num(d, 0..2), num(d, 2..4), num(d, 4..6));
    let (Some(hh), Some(mm), Some(ss), Some(dd), Some(mo), Some(yy)) = (hh, mm, ss, dd, mo, yy)
    else {
        return Err(bad());
    };
    let days = days_from_civil(2000 + yy, mo, dd);
    Ok(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The classic example of the NMEA 0183 standard's RMC sentence.
    #[test]
    fn checksum_matches_the_standard_example() {
        assert_eq!(
            checksum("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"),
            0x6A
        );
    }

    #[test]
    fn sentences_carry_the_chosen_second() {
        // 2026-12-04T05:17:42Z
        let t = 1_796_361_462;
        let text = sentences(t);
        let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("$GPGGA,051742.00,"), "{}", lines[0]);
        assert!(lines[2].contains(",041226,"), "{}", lines[2]);
        assert_eq!(rmc_time(lines[2]).expect("test setup"), t);
        // Every sentence's checksum holds.
        for l in &lines {
            let (body, sum) = l[1..].split_once('*').expect("test setup");
            assert_eq!(
                u8::from_str_radix(sum, 16).expect("test setup"),
                checksum(body),
                "{l}"
            );
        }
    }

    #[test]
    fn a_corrupt_sentence_is_refused() {
        let good = sentences(1_796_361_462);
        let rmc = good.lines().nth(2).expect("test setup");
        assert!(rmc_time(rmc).is_ok());
        let bad = rmc.replace(",A,", ",V,");
        assert!(rmc_time(&bad).is_err(), "a void fix was accepted");
        let flipped = rmc.replacen("05", "06", 1);
        assert!(rmc_time(&flipped).is_err(), "a wrong checksum was accepted");
    }

    /// What QEMU reads: `<base>.in`, blocking.
    fn reader(feed: &Feed) -> File {
        File::open(feed.base().with_extension("in")).expect("test setup")
    }

    /// A reader gets one second's sentences about once a second,
    /// each for the feed's clock.
    #[test]
    fn the_feed_sends_its_clock_once_a_second() {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().expect("test setup");
        let clock = GpsClock {
            offset_secs: 3 * 86_400 + 12_345,
        };
        let feed = Feed::start(&dir.path().join("gps"), clock, Duration::from_millis(500))
            .expect("test setup");
        let mut lines = BufReader::new(reader(&feed)).lines();
        let mut seconds = Vec::new();
        while seconds.len() < 3 {
            let line = lines.next().expect("test setup").expect("test setup");
            if line.starts_with("$GPRMC") {
                let got = rmc_time(&line).expect("test setup");
                let now = clock.now();
                // Sent `lag` after its second: received between 0.4 and
                // 1.5 s after it, however loaded the machine.
                let age = now - got as f64;
                assert!(
                    (0.4..1.5).contains(&age),
                    "second {got} received {age:.2} s after it"
                );
                seconds.push(got);
            }
        }
        assert_eq!(seconds[1], seconds[0] + 1);
        assert_eq!(seconds[2], seconds[1] + 1);
        // The third may be read before the feed has counted it.
        assert!(feed.seconds_sent() >= 2);
    }

    /// A reader that does not read gets one second queued,
    /// not a backlog: what it reads later is at most one second old, then
    /// current.
    #[test]
    fn an_unread_feed_queues_no_backlog() {
        use std::io::{BufRead, BufReader};
        let dir = tempfile::tempdir().expect("test setup");
        let clock = GpsClock { offset_secs: 0 };
        let feed = Feed::start(&dir.path().join("gps"), clock, Duration::from_millis(100))
            .expect("test setup");
        std::thread::sleep(Duration::from_millis(3500));
        assert!(
            feed.seconds_sent() <= 1,
            "{} seconds queued",
            feed.seconds_sent()
        );
        let mut lines = BufReader::new(reader(&feed)).lines();
        let mut ages = Vec::new();
        while ages.len() < 2 {
            let line = lines.next().expect("test setup").expect("test setup");
            if line.starts_with("$GPRMC") {
                ages.push(clock.now() - rmc_time(&line).expect("test setup") as f64);
            }
        }
        assert!(
            ages[1] < 1.5,
            "the second sentence read is {:.1} s old",
            ages[1]
        );
    }
}
