//! QEMU's machine protocol (QMP), for the one command the tests send: the
//! power button. A connection reads the greeting, leaves capabilities
//! negotiation with `qmp_capabilities`, sends the command and reads its
//! `return` (events in between are skipped).

use crate::{io_err, HarnessError, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Runs `command` (no arguments) on the QMP socket at `path`.
pub fn execute(path: &Path, command: &str) -> Result<()> {
    let stream = UnixStream::connect(path).map_err(io_err(path))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io_err(path))?;
    let mut writer = stream.try_clone().map_err(io_err(path))?;
    let mut reader = BufReader::new(stream);
    let greeting = read_message(&mut reader, path)?;
    if greeting.get("QMP").is_none() {
        return Err(HarnessError::Invalid(format!(
            "{}: no QMP greeting: {greeting}",
            path.display()
        )));
    }
    for cmd in ["qmp_capabilities", command] {
        let text = serde_json::json!({ "execute": cmd }).to_string();
        writeln!(writer, "{text}").map_err(io_err(path))?;
        await_return(&mut reader, path, cmd)?;
    }
    Ok(())
}

/// Reads messages until the command's answer: `return` is done, `error`
/// fails with QEMU's description.
fn await_return(reader: &mut impl BufRead, path: &Path, cmd: &str) -> Result<()> {
    loop {
        let msg = read_message(reader, path)?;
        if msg.get("return").is_some() {
            return Ok(());
        }
        if let Some(err) = msg.get("error") {
            return Err(HarnessError::Invalid(format!(
                "{}: QMP {cmd} failed: {err}",
                path.display()
            )));
        }
    }
}

fn read_message(reader: &mut impl BufRead, path: &Path) -> Result<Value> {
    let mut line = String::new();
    let n = reader.read_line(&mut line).map_err(io_err(path))?;
    if n == 0 {
        return Err(HarnessError::Invalid(format!(
            "{}: QMP closed the connection",
            path.display()
        )));
    }
    serde_json::from_str(&line)
        .map_err(|e| HarnessError::Invalid(format!("{}: QMP sent {line:?}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn events_before_the_return_are_skipped_and_errors_named() {
        let p = Path::new("qmp.sock");
        let mut ok = Cursor::new(
            "{\"event\": \"POWERDOWN\", \"timestamp\": {}}\n{\"return\": {}}\n".as_bytes(),
        );
        await_return(&mut ok, p, "system_powerdown").expect("test setup");
        let mut err = Cursor::new(
            "{\"error\": {\"class\": \"CommandNotFound\", \"desc\": \"nope\"}}\n".as_bytes(),
        );
        let e = await_return(&mut err, p, "system_powerdwn").expect_err("must fail");
        assert!(e.to_string().contains("CommandNotFound"), "{e}");
        let mut closed = Cursor::new(&b""[..]);
        assert!(await_return(&mut closed, p, "system_powerdown").is_err());
    }
}
