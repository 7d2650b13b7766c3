//! The agent's access to the running system, behind small traits so every
//! step is tested on the host with fakes: a clock and a command runner.
//! (The filesystem is reached through [`crate::root::Root`].)

use std::fmt;
use std::io;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

/// Wall-clock time, elapsed time and sleeping.
pub trait Clock: std::fmt::Debug {
    /// Wall-clock time (what the clock gate judges and the journal records).
    fn now(&self) -> SystemTime;
    /// Monotonic time since the agent started: waits are bounded by this,
    /// never by the wall clock, which chrony may step.
    fn elapsed(&self) -> Duration;
    fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One argument of a command; secrets are never displayed.
#[derive(Clone, PartialEq, Eq)]
pub enum Arg {
    Plain(String),
    Secret(String),
}

impl Arg {
    pub fn value(&self) -> &str {
        match self {
            Arg::Plain(s) | Arg::Secret(s) => s,
        }
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Plain(s) => write!(f, "{s:?}"),
            Arg::Secret(_) => f.write_str("<redacted>"),
        }
    }
}

/// A command to run; its `Display` is the command line with secrets redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<Arg>,
}

impl Cmd {
    pub fn new(program: &str) -> Self {
        Cmd {
            program: program.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Plain(arg.into()));
        self
    }

    /// Adds an argument that must never appear in logs or errors.
    pub fn secret(mut self, arg: impl Into<String>) -> Self {
        self.args.push(Arg::Secret(arg.into()));
        self
    }

    /// Program and arguments, secrets included: only for executing.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str())
            .chain(self.args.iter().map(Arg::value))
            .collect()
    }

    /// Removes every secret argument's value from `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for arg in &self.args {
            if let Arg::Secret(secret) = arg {
                if !secret.is_empty() {
                    out = out.replace(secret.as_str(), "<redacted>");
                }
            }
        }
        out
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            match arg {
                Arg::Plain(s) => write!(f, " {s}")?,
                Arg::Secret(_) => f.write_str(" <redacted>")?,
            }
        }
        Ok(())
    }
}

/// What a finished command returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Why `cmd` failed, on one line (for the journal and `status`): its
    /// stderr's non-empty lines, else its exit code.
    pub fn reason(&self, cmd: &Cmd) -> String {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        if lines.is_empty() {
            format!("`{cmd}` exited with {:?}", self.code)
        } else {
            lines.join(" ")
        }
    }
}

/// Runs external commands.
pub trait CommandRunner: std::fmt::Debug {
    fn run(&self, cmd: &Cmd) -> io::Result<Output>;
}

/// Runs commands as processes (stdin closed, output captured).
#[derive(Debug, Default)]
pub struct ProcessRunner;

impl CommandRunner for ProcessRunner {
    fn run(&self, cmd: &Cmd) -> io::Result<Output> {
        let out = std::process::Command::new(&cmd.program)
            .args(cmd.args.iter().map(Arg::value))
            .stdin(Stdio::null())
            .output()?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{cmd}`")]
    Spawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("`{cmd}` failed (exit {code:?}): {stderr}")]
    Failed {
        cmd: String,
        code: Option<i32>,
        stderr: String,
    },
}

/// Runs `cmd`, logging it and its result with secrets redacted. The output
/// returned is redacted too, so callers cannot leak a secret by logging it.
pub fn run_logged(runner: &dyn CommandRunner, cmd: &Cmd) -> Result<Output, CommandError> {
    log::info!("running {cmd}");
    let out = runner.run(cmd).map_err(|source| CommandError::Spawn {
        cmd: cmd.to_string(),
        source,
    })?;
    let out = Output {
        code: out.code,
        stdout: cmd.redact(&out.stdout),
        stderr: cmd.redact(&out.stderr),
    };
    if out.success() {
        log::debug!("`{cmd}` succeeded");
    } else {
        log::warn!("`{cmd}` exited with {:?}: {}", out.code, out.stderr.trim());
    }
    Ok(out)
}

/// Like [`run_logged`] but a non-zero exit is an error.
pub fn run_checked(runner: &dyn CommandRunner, cmd: &Cmd) -> Result<Output, CommandError> {
    let out = run_logged(runner, cmd)?;
    if out.success() {
        Ok(out)
    } else {
        Err(CommandError::Failed {
            cmd: cmd.to_string(),
            code: out.code,
            stderr: out.stderr.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        let cmd = Cmd::new("docker")
            .arg("swarm")
            .arg("join")
            .arg("--token")
            .secret("SWMTKN-1-fake");
        assert_eq!(cmd.to_string(), "docker swarm join --token <redacted>");
        assert!(!format!("{cmd:?}").contains("SWMTKN"));
        assert_eq!(
            cmd.redact("bad token SWMTKN-1-fake"),
            "bad token <redacted>"
        );
        assert_eq!(cmd.argv()[4], "SWMTKN-1-fake");
    }
}
