//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF distribution
//! registry) serving plain HTTP on a loopback port, its storage in a temp directory, stopped
//! (and the directory removed) on drop. Used by this crate's tests and the builder's.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("docker-registry is not installed: run `apt-get install docker-registry` (`cargo xtask setup` does)")]
    Missing,
    #[error("starting docker-registry: {0}")]
    Io(#[from] std::io::Error),
    #[error("docker-registry did not answer on 127.0.0.1:{port} within 30 s; its log:\n{log}")]
    NoAnswer { port: u16, log: String },
}

impl Registry {
    pub fn start() -> Result<Self, RegistryError> {
        if !Path::new("/usr/bin/docker-registry").exists() {
            return Err(RegistryError::Missing);
        }
        let dir = tempfile::Builder::new()
            .prefix("pibake-registry-")
            .tempdir()?;
        // A port the kernel gave and took back: the registry binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let registry = Self { child, port, dir };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if registry.answers() {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(RegistryError::NoAnswer {
            port,
            log: std::fs::read_to_string(registry.dir.path().join("registry.log"))
                .unwrap_or_default(),
        })
    }

    /// `GET /v2/` answers 200 (the distribution API's "I am a registry").
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        let mut answer = String::new();
        s.write_all(req.as_bytes()).is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.starts_with("HTTP/1.1 200")
    }

    /// The cache URL of `repository` in this registry.
    pub fn url(&self, repository: &str) -> String {
        format!("http://127.0.0.1:{}/{repository}", self.port)
    }

    /// Where the registry keeps a blob's bytes (its filesystem driver's layout), for tests
    /// that tamper with one.
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&sha256_hex[..2])
            .join(sha256_hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
