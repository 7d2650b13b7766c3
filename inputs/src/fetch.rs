//! Fetch: download what a lock needs and the store lacks, in parallel, verifying size and
//! sha256 while streaming. Transient failures are retried with backoff; a mismatch stores
//! nothing and names the package and both hashes. Offline mode never touches the network.

use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Sha256;
use crate::lock::{Lock, LockError, LockedPackage};
use crate::sources::Source;
use crate::store::{EntryName, Expected, Store, StoreError};

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Parallel downloads.
    pub jobs: usize,
    /// Never touch the network: fail listing every missing input.
    pub offline: bool,
    /// Attempts per URL after the first, for transient errors.
    pub retries: u32,
    /// First retry delay; doubles each time.
    pub backoff: Duration,
    /// Connect and read timeout.
    pub timeout: Duration,
    /// Draw a progress bar on stderr (bytes and files).
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            jobs: 4,
            offline: false,
            retries: 4,
            backoff: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
            progress: true,
        }
    }
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Entries downloaded now.
    pub fetched: Vec<EntryName>,
    /// Inputs already in the store.
    pub present: usize,
    /// Bytes downloaded and stored.
    pub bytes: u64,
}

/// Received content that is not what the lock pins.
#[derive(Debug, thiserror::Error)]
#[error("{package}: sha256 mismatch from {url}: expected {expected} ({expected_size} bytes), received {received} ({received_size} bytes); nothing stored")]
pub struct Mismatch {
    pub package: String,
    pub url: String,
    pub expected: Sha256,
    pub expected_size: u64,
    pub received: Sha256,
    pub received_size: u64,
}

/// A fetch that failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("offline: {} inputs missing from the store (run `pibake fetch` with network):\n  {}", missing.len(), missing.join("\n  "))]
    Offline { missing: Vec<String> },
    #[error(transparent)]
    Mismatch(Box<Mismatch>),
    #[error("{package}: lock says origin {origin:?}, which is not a configured source")]
    UnknownOrigin { package: String, origin: String },
    #[error("{package}: {url}: {message}")]
    Download {
        package: String,
        url: String,
        message: String,
    },
    #[error("{package}")]
    Store {
        package: String,
        source: Box<StoreError>,
    },
    #[error("{} of {total} downloads failed:\n  {}", errors.len(), errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Several {
        total: usize,
        errors: Vec<FetchError>,
    },
}

fn describe(p: &LockedPackage) -> String {
    format!("{} {} ({})", p.name, p.version, p.architecture)
}

/// The packages (of a lock or one of its closures) that the store lacks.
pub fn missing<'a>(
    packages: impl IntoIterator<Item = &'a LockedPackage>,
    store: &Store,
) -> Result<Vec<&'a LockedPackage>, LockError> {
    let mut out = Vec::new();
    for p in packages {
        if !store.contains(&p.entry_name()?) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Fails listing every missing input unless the store has them all (`--offline` builds).
pub fn check_offline<'a>(
    packages: impl IntoIterator<Item = &'a LockedPackage>,
    store: &Store,
) -> Result<(), FetchError> {
    let m = missing(packages, store)?;
    if m.is_empty() {
        return Ok(());
    }
    let missing = m
        .iter()
        .map(|p| Ok(format!("{} = {}", describe(p), p.entry_name()?)))
        .collect::<Result<_, LockError>>()?;
    Err(FetchError::Offline { missing })
}

enum Attempt {
    Done(EntryName),
    Transient(FetchError),
    NotFound(FetchError),
    Fatal(FetchError),
}

/// Reader that feeds the progress bar and remembers how much it passed on.
struct Counting<'a, R> {
    inner: R,
    bar: &'a ProgressBar,
    n: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn attempt(
    agent: &ureq::Agent,
    store: &Store,
    p: &LockedPackage,
    url: &str,
    bar: &ProgressBar,
) -> Result<Attempt, FetchError> {
    let entry = p.entry_name()?;
    let dl = |message: String| FetchError::Download {
        package: describe(p),
        url: url.to_owned(),
        message,
    };
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let e = dl(format!("HTTP {code} {}", r.status_text()));
            return Ok(match code {
                404 | 410 => Attempt::NotFound(e),
                408 | 429 | 500..=599 => Attempt::Transient(e),
                _ => Attempt::Fatal(e),
            });
        }
        Err(e) => return Ok(Attempt::Transient(dl(e.to_string()))),
    };
    let mut body = Counting {
        inner: resp.into_reader(),
        bar,
        n: 0,
    };
    let expected = Expected {
        sha256: p.sha256,
        size: p.size,
    };
    let res = store.insert_reader(entry.name(), Some(expected), &mut body);
    let counted = body.n;
    let undo = || bar.set_position(bar.position().saturating_sub(counted));
    Ok(match res {
        Ok(e) => Attempt::Done(e),
        Err(StoreError::Source { source, .. }) => {
            undo();
            Attempt::Transient(dl(format!("download interrupted: {source}")))
        }
        Err(StoreError::Mismatch { received_size, .. }) if received_size < p.size => {
            // A short body is a broken transfer, not a different file: try again.
            undo();
            Attempt::Transient(dl(format!(
                "connection closed after {received_size} of {} bytes",
                p.size
            )))
        }
        Err(StoreError::Mismatch {
            received,
            received_size,
            ..
        }) => {
            undo();
            Attempt::Fatal(FetchError::Mismatch(Box::new(Mismatch {
                package: describe(p),
                url: url.to_owned(),
                expected: p.sha256,
                expected_size: p.size,
                received,
                received_size,
            })))
        }
        Err(StoreError::TooLong { .. }) => {
            undo();
            Attempt::Fatal(dl(format!(
                "more than the expected {} bytes; nothing stored",
                p.size
            )))
        }
        Err(source) => {
            undo();
            Attempt::Fatal(FetchError::Store {
                package: describe(p),
                source: Box::new(source),
            })
        }
    })
}

fn fetch_one(
    agent: &ureq::Agent,
    store: &Store,
    sources: &[Source],
    p: &LockedPackage,
    opts: &FetchOptions,
    bar: &ProgressBar,
) -> Result<EntryName, FetchError> {
    // The source apt chose first; the others may mirror the same path.
    let first =
        sources
            .iter()
            .find(|s| s.name == p.origin)
            .ok_or_else(|| FetchError::UnknownOrigin {
                package: describe(p),
                origin: p.origin.clone(),
            })?;
    let mut last = None;
    for s in std::iter::once(first).chain(sources.iter().filter(|s| s.name != p.origin)) {
        let url = s.url_of(&p.filename);
        let mut delay = opts.backoff;
        for n in 0..=opts.retries {
            match attempt(agent, store, p, &url, bar)? {
                Attempt::Done(e) => return Ok(e),
                Attempt::Fatal(e) => return Err(e),
                Attempt::NotFound(e) => {
                    last = Some(e);
                    break;
                }
                Attempt::Transient(e) => {
                    last = Some(e);
                    if n < opts.retries {
                        std::thread::sleep(delay);
                        delay = delay.saturating_mul(2);
                    }
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| FetchError::UnknownOrigin {
        package: describe(p),
        origin: p.origin.clone(),
    }))
}

/// Downloads every package of `lock` the store lacks from `sources`.
pub fn fetch(
    lock: &Lock,
    sources: &[Source],
    store: &Store,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    let all = lock.packages();
    let todo = missing(all.iter().copied(), store)?;
    let present = all.len() - todo.len();
    if todo.is_empty() {
        return Ok(FetchReport {
            present,
            ..FetchReport::default()
        });
    }
    if opts.offline {
        return Err(check_offline(all.iter().copied(), store)
            .err()
            .unwrap_or(FetchError::Offline { missing: vec![] }));
    }
    let total: u64 = todo.iter().map(|p| p.size).sum();
    let bar = if opts.progress {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
    ) {
        bar.set_style(style);
    }
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(opts.timeout)
        .timeout_read(opts.timeout)
        .build();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let fetched = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    bar.set_message(format!("0/{} files", todo.len()));
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.clamp(1, 32).min(todo.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = todo.get(i) else { break };
                let r = fetch_one(&agent, store, sources, p, opts, &bar);
                let k = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{k}/{} files", todo.len()));
                match r {
                    Ok(e) => fetched.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                    Err(e) => errors.lock().unwrap_or_else(|e| e.into_inner()).push(e),
                }
            });
        }
    });
    bar.finish_and_clear();
    let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
    if !errors.is_empty() {
        return Err(if errors.len() == 1 && todo.len() == 1 {
            errors.remove(0)
        } else {
            errors.sort_by_key(ToString::to_string);
            FetchError::Several {
                total: todo.len(),
                errors,
            }
        });
    }
    let mut fetched = fetched.into_inner().unwrap_or_else(|e| e.into_inner());
    fetched.sort();
    Ok(FetchReport {
        fetched,
        present,
        bytes: total,
    })
}

/// Convenience for callers with a lock file on disk.
pub fn fetch_lock_file(
    path: &Path,
    sources: &[Source],
    store: &Store,
    opts: &FetchOptions,
) -> Result<FetchReport, FetchError> {
    fetch(&Lock::read(path)?, sources, store, opts)
}
