//! Test fixtures: real .debs built with dpkg-deb, flat repositories indexed with
//! dpkg-scanpackages, and a tiny HTTP server on 127.0.0.1 with fault injection.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use pibake_inputs::release::format_date;
use pibake_inputs::Source;

/// Fails with a clear message when a host tool is missing.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(found, Ok(true)),
        "{tool} not found: apt-get install {package}"
    );
}

/// A package to build.
pub struct Pkg<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub depends: &'a str,
    pub priority: &'a str,
    /// Bytes of payload (deterministic filler derived from `seed`).
    pub size: usize,
    pub seed: u8,
}

impl<'a> Pkg<'a> {
    pub fn new(name: &'a str, version: &'a str) -> Self {
        Self {
            name,
            version,
            depends: "",
            priority: "optional",
            size: 1000,
            seed: 0,
        }
    }
}

/// Builds `pkg` for arm64 into `out_dir` with dpkg-deb; returns the .deb path.
pub fn make_deb(out_dir: &Path, pkg: &Pkg) -> Result<PathBuf> {
    need("dpkg-deb", "dpkg");
    let work = tempfile::tempdir()?;
    let root = work.path().join("root");
    fs::create_dir_all(root.join("DEBIAN"))?;
    fs::create_dir_all(root.join("usr/share/doc").join(pkg.name))?;
    let mut control = format!(
        "Package: {}\nVersion: {}\nArchitecture: arm64\nMaintainer: Test <test@example.invalid>\nPriority: {}\nSection: misc\nDescription: test package {}\n",
        pkg.name, pkg.version, pkg.priority, pkg.name
    );
    if !pkg.depends.is_empty() {
        control.push_str(&format!("Depends: {}\n", pkg.depends));
    }
    fs::write(root.join("DEBIAN/control"), control)?;
    // Incompressible-ish filler so sizes are real.
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(pkg.seed).wrapping_mul(0x85eb_ca6b);
    let payload: Vec<u8> = (0..pkg.size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    fs::write(
        root.join("usr/share/doc").join(pkg.name).join("payload"),
        payload,
    )?;
    fs::create_dir_all(out_dir)?;
    // Pool file names leave out the epoch, as Debian's do.
    let upstream = pkg.version.split_once(':').map_or(pkg.version, |(_, v)| v);
    let deb = out_dir.join(format!("{}_{upstream}_arm64.deb", pkg.name));
    let st = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()?;
    if !st.status.success() {
        bail!("dpkg-deb: {}", String::from_utf8_lossy(&st.stderr));
    }
    Ok(deb)
}

/// Indexes the flat repository `dir` (Packages from dpkg-scanpackages, Release with `date`
/// and `origin`).
pub fn index_repo(dir: &Path, origin: &str, date: i64) -> Result<()> {
    need("dpkg-scanpackages", "dpkg-dev");
    let out = Command::new("dpkg-scanpackages")
        .args(["-m", ".", "/dev/null"])
        .current_dir(dir)
        .output()?;
    if !out.status.success() {
        bail!(
            "dpkg-scanpackages: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fs::write(dir.join("Packages"), &out.stdout)?;
    let sha = pibake_inputs::Sha256::of(&out.stdout);
    let release = format!(
        "Origin: {origin}\nLabel: {origin}\nArchitectures: arm64\nDate: {}\nSHA256:\n {sha} {} Packages\n",
        format_date(date),
        out.stdout.len()
    );
    fs::write(dir.join("Release"), release)?;
    Ok(())
}

/// A trusted flat source served by `server` under `/path`.
pub fn flat_source(name: &str, server: &Server, path: &str) -> Source {
    Source {
        name: name.into(),
        uri: format!("{}/{path}", server.url()),
        suite: "./".into(),
        components: vec![],
        keyring: None,
        trusted: true,
        pin_priority: None,
        pin_packages: Vec::new(),
    }
}

/// What the server does with a request whose file name matches.
#[derive(Debug, Default)]
pub struct Faults {
    /// Flip a byte of the body.
    pub corrupt: BTreeSet<String>,
    /// Send half the body, then hold the connection open.
    pub stall: BTreeSet<String>,
    /// Answer 503 once.
    pub fail_once: BTreeSet<String>,
    /// Pause between 64 KiB chunks (to make downloads overlap).
    pub throttle: Option<Duration>,
}

/// A file server on 127.0.0.1 (thread per connection).
pub struct Server {
    pub port: u16,
    pub faults: Arc<Mutex<Faults>>,
    /// Requests served for .deb files.
    pub deb_requests: Arc<AtomicUsize>,
    /// Connections currently stalled.
    pub stalled: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(root: &Path) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let deb_requests = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicUsize::new(0));
        let (f, d, s, root) = (
            faults.clone(),
            deb_requests.clone(),
            stalled.clone(),
            root.to_owned(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (f, d, s, root) = (f.clone(), d.clone(), s.clone(), root.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &f, &d, &s);
                });
            }
        });
        Ok(Self {
            port,
            faults,
            deb_requests,
            stalled,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decode(p: &str) -> String {
    let mut out = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn serve(
    mut conn: TcpStream,
    root: &Path,
    faults: &Mutex<Faults>,
    debs: &AtomicUsize,
    stalled: &AtomicUsize,
) -> Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        decode(parts.next().unwrap_or("/")),
    );
    let rel: PathBuf = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
        .collect();
    let file = root.join(&rel);
    let base = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Ok(mut body) = fs::read(&file) else {
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    };
    if base.ends_with(".deb") {
        debs.fetch_add(1, Ordering::SeqCst);
    }
    let (corrupt, stall, fail, throttle) = {
        let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
        let fail = f.fail_once.remove(&base);
        (
            f.corrupt.contains(&base),
            f.stall.contains(&base),
            fail,
            f.throttle,
        )
    };
    if fail {
        conn.write_all(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    if corrupt {
        let mid = body.len() / 2;
        body[mid] ^= 0xff;
    }
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len());
    conn.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    if stall {
        conn.write_all(&body[..body.len() / 2])?;
        conn.flush()?;
        stalled.fetch_add(1, Ordering::SeqCst);
        // Hold the connection until the client goes away.
        let mut sink = [0u8; 1];
        let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = conn.read(&mut sink);
        return Ok(());
    }
    for chunk in body.chunks(64 * 1024) {
        conn.write_all(chunk)?;
        if let Some(t) = throttle {
            std::thread::sleep(t);
        }
    }
    Ok(())
}
