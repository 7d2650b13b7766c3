//! Independent stages at once, bounded by the cores: the rootfs stages of a mixed lab (arm64
//! under qemu-user, amd64 natively) and the images, each with its own progress line.

use super::BuildError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many stages run at once: one per core (each image's zstd and sha256 run on threads
/// of their own too, so more would only share the same cores).
pub(super) fn jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// `f` of every item, at most `jobs` at once, results in the items' order. Every item runs
/// (an image's outputs are complete or absent, so there is nothing to cancel); the first
/// error by order is returned.
pub(super) fn map_bounded<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> Result<R, BuildError> + Sync,
) -> Result<Vec<R>, BuildError> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<Result<R, BuildError>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                if let Ok(mut slot) = slots[i].lock() {
                    *slot = Some(result);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|slot| {
            let result = slot.into_inner().unwrap_or_else(|e| e.into_inner());
            result.unwrap_or_else(|| {
                Err(BuildError::Image {
                    image: "?".into(),
                    message: "a build thread stopped without a result".into(),
                })
            })
        })
        .collect()
}

/// Progress lines on stderr: spinners, one per running stage, or plain lines without a
/// terminal.
#[derive(Debug)]
pub(super) struct Progress {
    multi: Option<indicatif::MultiProgress>,
}

impl Progress {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            multi: enabled.then(indicatif::MultiProgress::new),
        }
    }

    pub(super) fn bar(&self, message: String) -> indicatif::ProgressBar {
        let Some(multi) = &self.multi else {
            eprintln!("{message}");
            return indicatif::ProgressBar::hidden();
        };
        let bar = multi.add(indicatif::ProgressBar::new_spinner());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar
    }

    /// Ends `bar` with `message` (printed as a line without a terminal).
    pub(super) fn finish(&self, bar: &indicatif::ProgressBar, message: String) {
        if self.multi.is_some() {
            bar.finish_with_message(message);
        } else {
            eprintln!("{message}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_once_in_order_and_the_first_error_wins() {
        let items: Vec<u32> = (0..9).collect();
        let ran = AtomicUsize::new(0);
        let out = map_bounded(2, &items, |i| {
            ran.fetch_add(1, Ordering::Relaxed);
            Ok(i * 10)
        })
        .expect("no error");
        assert_eq!(out, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(ran.load(Ordering::Relaxed), 9);
        let err = map_bounded(3, &items, |i| {
            if *i == 4 || *i == 7 {
                Err(BuildError::Image {
                    image: format!("i{i}"),
                    message: "planted".into(),
                })
            } else {
                Ok(*i)
            }
        })
        .expect_err("two fail");
        assert!(err.to_string().starts_with("image i4"), "{err}");
    }

    #[test]
    fn at_most_jobs_run_at_once() {
        let items: Vec<u32> = (0..8).collect();
        let (now, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        map_bounded(2, &items, |_| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(20));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .expect("no error");
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }
}
