//! The Docker Engine API over its Unix socket, for what must be cheap: the
//! keepalived track script asks every 2 s whether this node is an active
//! Swarm manager. `docker info` starts a 40 MB Go client each time (seconds
//! on a loaded board, over keepalived's timeout under emulation, which then
//! moves the VIP off a healthy manager); one HTTP/1.0 request from this
//! already-installed binary costs milliseconds.
//!
//! HTTP/1.0 so the daemon answers with the whole body and closes the
//! connection (no keep-alive); a chunked answer is decoded all the same.

use serde::Deserialize;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Where dockerd listens (docker.io's docker.socket).
pub const SOCKET: &str = "run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot talk to the Docker daemon at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Docker daemon answered {path} with {status:?}")]
    Status { path: String, status: String },
    #[error("the Docker daemon's answer to {path} is not HTTP: {why}")]
    Malformed { path: String, why: &'static str },
    #[error("the Docker daemon's answer to {path} is not the expected JSON")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The part of `GET /info` the track script reads (the daemon's names).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    pub swarm: SwarmInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    pub local_node_state: String,
    /// True on a manager (also one that lost its Raft majority: the VIP must
    /// stay on a live manager then, not go nowhere).
    pub control_available: bool,
}

impl Info {
    /// What `docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'`
    /// = `active true` meant: this node is an active Swarm manager.
    pub fn is_active_manager(&self) -> bool {
        self.swarm.local_node_state == "active" && self.swarm.control_available
    }
}

/// `GET /info` on the daemon's socket under `root`.
pub fn info(root: &Path, timeout: Duration) -> Result<Info, EngineError> {
    let body = get(&root.join(SOCKET), "/info", timeout)?;
    serde_json::from_slice(&body).map_err(|source| EngineError::Json {
        path: "/info".into(),
        source,
    })
}

/// One GET; the body of a 200 answer.
fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Vec<u8>, EngineError> {
    let io = |source| EngineError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    body_of(&answer, path)
}

/// The body of an HTTP answer with status 200, de-chunked if need be.
fn body_of(answer: &[u8], path: &str) -> Result<Vec<u8>, EngineError> {
    let malformed = |why| EngineError::Malformed {
        path: path.into(),
        why,
    };
    let split = find(answer, b"\r\n\r\n").ok_or_else(|| malformed("no end of headers"))?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| malformed("headers not UTF-8"))?;
    let body = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(EngineError::Status {
            path: path.into(),
            status: status.to_owned(),
        });
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        dechunk(body).ok_or_else(|| malformed("bad chunked encoding"))
    } else {
        Ok(body.to_vec())
    }
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n")?;
        let size = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = size.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A daemon stand-in that answers one request with `answer` and records
    /// what it was asked.
    fn serve(root: &Path, answer: &'static [u8]) -> std::thread::JoinHandle<String> {
        std::fs::create_dir_all(root.join("run")).unwrap();
        let listener = UnixListener::bind(root.join(SOCKET)).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 256];
            while find(&request, b"\r\n\r\n").is_none() {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).unwrap();
            String::from_utf8(request).unwrap()
        })
    }

    const MANAGER: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n\
{\"ID\":\"x\",\"Containers\":0,\"Swarm\":{\"NodeID\":\"n\",\"LocalNodeState\":\"active\",\
\"ControlAvailable\":true,\"Error\":\"\"},\"Name\":\"master1\"}";

    #[test]
    fn an_active_manager_is_one_and_the_request_is_http_1_0() {
        let tmp = tempfile::tempdir().unwrap();
        let server = serve(tmp.path(), MANAGER);
        let info = info(tmp.path(), Duration::from_secs(5)).unwrap();
        assert!(info.is_active_manager(), "{info:?}");
        assert!(server.join().unwrap().starts_with("GET /info HTTP/1.0\r\n"));
    }

    #[test]
    fn workers_inactive_nodes_and_errors_are_not_managers() {
        let cases: [(&'static [u8], bool); 3] = [
            (
                b"HTTP/1.0 200 OK\r\n\r\n{\"Swarm\":{\"LocalNodeState\":\"active\",\"ControlAvailable\":false}}",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n{\"Swarm\":{\"LocalNodeState\":\"inactive\",\"ControlAvailable\":false}}",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\n\r\n{\"Swarm\":{\"LocalNodeState\":\"pending\",\"ControlAvailable\":true}}",
                false,
            ),
        ];
        for (answer, want) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let server = serve(tmp.path(), answer);
            let got = info(tmp.path(), Duration::from_secs(5)).unwrap();
            assert_eq!(got.is_active_manager(), want, "{got:?}");
            server.join().unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let server = serve(tmp.path(), b"HTTP/1.0 500 Internal Server Error\r\n\r\n{}");
        let err = info(tmp.path(), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, EngineError::Status { .. }), "{err}");
        server.join().unwrap();
        // No daemon at all.
        let tmp = tempfile::tempdir().unwrap();
        let err = info(tmp.path(), Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, EngineError::Io { .. }), "{err}");
    }

    #[test]
    fn a_chunked_answer_is_decoded() {
        let tmp = tempfile::tempdir().unwrap();
        let server = serve(
            tmp.path(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
1a\r\n{\"Swarm\":{\"LocalNodeState\"\r\n\
23\r\n:\"active\",\"ControlAvailable\":true}}\r\n0\r\n\r\n",
        );
        assert!(info(tmp.path(), Duration::from_secs(5))
            .unwrap()
            .is_active_manager());
        server.join().unwrap();
        assert_eq!(dechunk(b"3\r\nabc\r\n"), None, "a missing last chunk");
    }
}
