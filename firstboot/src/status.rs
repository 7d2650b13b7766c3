//! `status`: what each step did, when and why.

use crate::journal::{Journal, JournalError, Outcome, Step};
use crate::root::Root;
use serde::Serialize;

/// State of one step as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Done,
    Failed,
    Pending,
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepStatus {
    pub step: Step,
    pub state: State,
    /// Unix seconds of the board's wall clock when recorded.
    pub at: Option<u64>,
    /// The same as UTC RFC 3339.
    pub at_utc: Option<String>,
    pub why: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Reads the state of every step from the journal, in the order they run:
/// the steps every node runs, `images` and `stacks` where they apply
/// ([`shows`]).
pub fn status(root: &Root) -> Vec<StepStatus> {
    let journal = Journal::new(root);
    Step::EVERY
        .into_iter()
        .filter(|&step| Step::ALL.contains(&step) || shows(root, &journal, step))
        .map(|step| match journal.read(step) {
            Ok(Some(r)) => StepStatus {
                step,
                state: match r.outcome {
                    Outcome::Done => State::Done,
                    Outcome::Failed => State::Failed,
                },
                at: Some(r.at),
                at_utc: Some(rfc3339(r.at)),
                why: r.why,
                node: r.node,
            },
            Ok(None) => StepStatus {
                step,
                state: State::Pending,
                at: None,
                at_utc: None,
                why: "not run yet".to_owned(),
                node: None,
            },
            Err(e) => StepStatus {
                step,
                state: State::Failed,
                at: None,
                at_utc: None,
                why: crate::error_chain(&e as &JournalError),
                node: None,
            },
        })
        .collect()
}

/// Whether `status` lists a step not every node runs: once it is journaled,
/// and while it is pending where it applies (`stacks` on the node that
/// deploys stacks, by the identity journal's node and the node table;
/// `images` on the nodes of an image that carries some); never elsewhere.
fn shows(root: &Root, journal: &Journal, step: Step) -> bool {
    let applies = match step {
        Step::Stacks => crate::stacks::stacks_here(root).is_ok_and(|s| !s.is_empty()),
        Step::Images => crate::images::images_here(root).is_ok_and(|s| !s.is_empty()),
        _ => true,
    };
    applies || !matches!(journal.read(step), Ok(None))
}

/// Human-readable table.
pub fn render(steps: &[StepStatus]) -> String {
    let mut out = String::new();
    for s in steps {
        let state = match s.state {
            State::Done => "done",
            State::Failed => "FAILED",
            State::Pending => "pending",
        };
        let at = s.at_utc.as_deref().unwrap_or("-");
        out.push_str(&format!(
            "{:<9} {:<8} {:<20} {}\n",
            s.step.name(),
            state,
            at,
            s.why
        ));
    }
    out
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic
/// Gregorian; H. Hinnant's algorithm). The host crates share
/// `pibake_host::civil`; the agent keeps this std-only copy because it runs on
/// the board, is cross-built with Debian's rustc and takes no host crate.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
