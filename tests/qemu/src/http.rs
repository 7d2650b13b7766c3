//! HTTP GETs from the test's network, as a user's browser on the lab's
//! segment would make them: one now ([`get`]), or a steady series in the
//! background ([`Poller`]) whose answers tell how long a service was away
//! while a master died ([`Summary`]). Each GET is `curl` inside the
//! namespace, bounded by [`GET_BOUND`].

use crate::net::NetNs;
use crate::tool::{self, CURL};
use crate::{HarnessError, Result};
use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long one GET may take once connected. Five emulated VMs share two
/// host cores in the ring, so an answer through the routing mesh can take
/// over a second with nothing wrong (CI saw one); a browser would wait far
/// longer. An outage still shows as failures and as the gap between answers.
pub const GET_BOUND: Duration = Duration::from_secs(5);

/// How long connecting may take. Kept short so that while no one holds the
/// VIP the series goes on sampling about every second, which is what makes
/// the measured gap precise.
pub const CONNECT_BOUND: Duration = Duration::from_secs(1);

/// One GET: the page, or why there was none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was sent, from the poller's start.
    pub at: Duration,
    /// How long it took.
    pub took: Duration,
    pub answer: std::result::Result<String, String>,
}

fn curl(ns_name: &str, url: &str) -> Result<Command> {
    CURL.require()?;
    let mut cmd = tool::IP.command()?;
    cmd.args(["netns", "exec", ns_name, CURL.name])
        .args([
            "-sS",
            "--connect-timeout",
            &CONNECT_BOUND.as_secs().to_string(),
        ])
        .args(["--max-time", &GET_BOUND.as_secs().to_string(), url])
        .stdin(Stdio::null());
    Ok(cmd)
}

fn get_in(ns_name: &str, url: &str) -> Result<std::result::Result<String, String>> {
    let mut cmd = curl(ns_name, url)?;
    let command = tool::describe(&cmd);
    let out = cmd
        .output()
        .map_err(|source| HarnessError::Spawn { command, source })?;
    Ok(if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// One GET of `url` from inside `ns`.
pub fn get(ns: &NetNs, url: &str) -> Result<std::result::Result<String, String>> {
    get_in(ns.name(), url)
}

/// GETs of one URL every `interval`, in a thread, until [`Poller::stop`].
#[derive(Debug)]
pub struct Poller {
    start: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Sample>>>>,
}

impl Poller {
    pub fn start(ns: &NetNs, url: &str, interval: Duration) -> Result<Self> {
        curl(ns.name(), url)?;
        let (name, url) = (ns.name().to_owned(), url.to_owned());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let start = Instant::now();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let at = start.elapsed();
                let answer = get_in(&name, &url)?;
                samples.push(Sample {
                    at,
                    took: start.elapsed() - at,
                    answer,
                });
                if let Some(rest) = (at + interval).checked_sub(start.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
            Ok(samples)
        });
        Ok(Poller {
            start,
            stop,
            thread: Some(thread),
        })
    }

    /// Time since the poller started (the scale of [`Sample::at`]).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stops and returns every GET made.
    pub fn stop(mut self) -> Result<Vec<Sample>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(samples)) => samples,
            _ => Err(HarnessError::Invalid("the HTTP poller panicked".to_owned())),
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a series of GETs saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub answered: usize,
    pub failed: usize,
    /// The longest time between two answered GETs (from the first sample
    /// when the series began with failures, to the last one when it ended
    /// with them).
    pub longest_gap: Duration,
    /// Answers by the node the page names (one of `nodes`), or `?` for a
    /// page that names none of them.
    pub by_node: BTreeMap<String, usize>,
    /// The first failure's reason, if any.
    pub first_failure: Option<String>,
    /// The slowest answered GET.
    pub slowest: Duration,
}

/// Sums up `samples`; a page is credited to the first of `nodes` it names.
pub fn summarize(samples: &[Sample], nodes: &[&str]) -> Summary {
    let mut by_node = BTreeMap::new();
    let (mut answered, mut failed, mut first_failure) = (0, 0, None);
    let mut last_ok = samples.first().map(|s| s.at);
    let (mut longest_gap, mut slowest) = (Duration::ZERO, Duration::ZERO);
    for s in samples {
        match &s.answer {
            Ok(page) => {
                answered += 1;
                slowest = slowest.max(s.took);
                let node = nodes.iter().find(|n| names(page, n)).unwrap_or(&"?");
                *by_node.entry((*node).to_owned()).or_insert(0) += 1;
                if let Some(prev) = last_ok {
                    longest_gap = longest_gap.max(s.at.saturating_sub(prev));
                }
                last_ok = Some(s.at);
            }
            Err(why) => {
                failed += 1;
                first_failure.get_or_insert_with(|| why.clone());
            }
        }
    }
    if let (Some(prev), Some(last)) = (last_ok, samples.last()) {
        longest_gap = longest_gap.max(last.at.saturating_sub(prev));
    }
    Summary {
        answered,
        failed,
        longest_gap,
        by_node,
        first_failure,
        slowest,
    }
}

/// Whether a service has settled: the last `run` GETs were all answered
/// and between them every one of `nodes` answered. Until then a page
/// already seen from each node is no proof that the routing mesh serves
/// every request (CI saw a GET time out right after the second worker's
/// first answer, while that worker was still finishing its first boot).
pub fn settled(samples: &[Sample], nodes: &[&str], run: usize) -> bool {
    let Some(tail) = samples.len().checked_sub(run).map(|i| &samples[i..]) else {
        return false;
    };
    let sum = summarize(tail, nodes);
    sum.failed == 0 && nodes.iter().all(|n| sum.by_node.contains_key(*n))
}

/// Whether `page` names `node` as a word (worker1 is not worker10).
fn names(page: &str, node: &str) -> bool {
    page.match_indices(node).any(|(i, _)| {
        let after = page[i + node.len()..].chars().next();
        let before = page[..i].chars().next_back();
        !after.is_some_and(|c| c.is_ascii_alphanumeric())
            && !before.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(ms: u64, answer: std::result::Result<&str, &str>) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            // failures are slow, to show they do not count as the slowest answer
            took: Duration::from_millis(if answer.is_ok() { ms % 7 } else { 5000 }),
            answer: answer.map(str::to_owned).map_err(str::to_owned),
        }
    }

    #[test]
    fn gaps_failures_and_nodes_are_counted() {
        let nodes = ["worker1", "worker2", "worker10"];
        let samples = [
            s(0, Ok("<h1>worker1</h1>")),
            s(250, Ok("<h1>worker2</h1>")),
            s(500, Err("timeout")),
            s(750, Err("refused")),
            s(1000, Ok("<h1>worker10</h1>")),
            s(1250, Ok("hello")),
        ];
        let sum = summarize(&samples, &nodes);
        assert_eq!((sum.answered, sum.failed), (4, 2));
        assert_eq!(sum.longest_gap, Duration::from_millis(750));
        assert_eq!(sum.by_node.get("worker1"), Some(&1));
        assert_eq!(sum.by_node.get("worker10"), Some(&1));
        assert_eq!(sum.by_node.get("?"), Some(&1));
        assert_eq!(sum.first_failure.as_deref(), Some("timeout"));
        assert_eq!(sum.slowest, Duration::from_millis(1000 % 7));
    }

    #[test]
    fn a_series_that_ends_failing_counts_its_tail_as_a_gap() {
        let samples = [s(0, Ok("worker1")), s(400, Err("x")), s(3000, Err("x"))];
        let sum = summarize(&samples, &["worker1"]);
        assert_eq!(sum.longest_gap, Duration::from_millis(3000));
        let none = summarize(&[s(0, Err("x")), s(900, Err("x"))], &["worker1"]);
        assert_eq!(
            (none.answered, none.longest_gap),
            (0, Duration::from_millis(900))
        );
    }

    #[test]
    fn settled_needs_a_run_of_answers_from_every_node() {
        let nodes = ["worker1", "worker2"];
        let ok = |ms, n| s(ms, Ok(n));
        let both = [
            ok(0, "worker1"),
            ok(1, "worker2"),
            ok(2, "worker1"),
            ok(3, "worker2"),
        ];
        assert!(settled(&both, &nodes, 4));
        assert!(!settled(&both, &nodes, 5), "fewer GETs than the run");
        let one = [
            ok(0, "worker2"),
            ok(1, "worker1"),
            ok(2, "worker1"),
            ok(3, "worker1"),
        ];
        assert!(!settled(&one, &nodes, 3), "worker2 is not in the last run");
        let failing = [
            ok(0, "worker1"),
            ok(1, "worker2"),
            s(2, Err("timeout")),
            ok(3, "worker1"),
            ok(4, "worker2"),
        ];
        assert!(!settled(&failing, &nodes, 4), "a failure in the last run");
        assert!(settled(&failing, &nodes, 2));
    }
}
