//! The lab's web image: the same bytes twice (and the ones the lab's lock pins), read as
//! a docker-save and an OCI archive by skopeo, and its httpd really serving the page
//! that names the host it runs on (the layer unpacked and run under qemu-aarch64 through
//! binfmt_misc, in a UTS namespace of its own).

use pibake_image::oci;
use pibake_webimage::image::TAG;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("webimage/ is in the workspace")
        .to_path_buf()
}

/// The archive made into `dir` (the .deb from the default store, fetched once).
fn made(dir: &Path, name: &str) -> (PathBuf, pibake_webimage::Made) {
    let store = pibake_inputs::Store::open(
        pibake_inputs::Store::default_root().expect("a home for the store"),
    )
    .expect("store");
    let out = dir.join(name);
    let made = pibake_webimage::make(&store, &out, false).expect("the web image");
    (out, made)
}

/// The sha256 the lab's lock pins for its `web` archive.
fn locked_sha256() -> String {
    let path = workspace().join("examples/lab/pibake.lock");
    let lock = pibake_inputs::Lock::read(&path).expect("the lab's lock");
    lock.images
        .iter()
        .find(|i| i.name == "web")
        .map(|i| i.sha256.to_hex())
        .expect("the lab's lock pins the web archive")
}

#[test]
fn two_runs_give_the_archive_the_labs_lock_pins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, first) = made(dir.path(), "a.tar");
    let (b, second) = made(dir.path(), "b.tar");
    assert_eq!(first, second);
    assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    assert_eq!(
        first.sha256,
        locked_sha256(),
        "the generator no longer makes the archive the lab's lock pins: if on purpose, run \
         `cargo xtask web-image` and `pibake lock -c examples/lab/cluster.toml`"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&a).expect("a").permissions());
    assert_eq!(mode & 0o777, 0o644);
    eprintln!(
        "web archive: sha256 {} ({} bytes), twice",
        first.sha256, first.size
    );
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo (`cargo xtask setup` installs it)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn skopeo_reads_it_as_a_docker_and_an_oci_archive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, _) = made(dir.path(), "web.tar");
    let archive = archive.display().to_string();
    // docker-archive: manifest.json, the image found by its RepoTag.
    let tag = TAG.rsplit_once(':').expect("a tag").1;
    for reference in [
        format!("docker-archive:{archive}:{TAG}"),
        format!("oci-archive:{archive}:{tag}"),
    ] {
        let inspected: serde_json::Value =
            serde_json::from_str(&skopeo(&["inspect", &reference])).expect("json");
        assert_eq!(inspected["Architecture"], "arm64", "{reference}");
        assert_eq!(inspected["Os"], "linux", "{reference}");
        assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
        // A copy reads every blob against its digest.
        let copy = dir.path().join(format!("copy-{}", reference.len()));
        skopeo(&[
            "copy",
            "--quiet",
            &reference,
            &format!("dir:{}", copy.display()),
        ]);
    }
}

/// The page the image serves, fetched over loopback from a run of its entrypoint in
/// the unpacked layer, with `hostname` as the container's host name.
fn page_served_as(hostname: &str) -> String {
    let (answer, mut server) = serve_as(hostname);
    server.stop();
    answer
}

/// A run of the entrypoint as PID 1 of a PID namespace of its own, as in a container.
struct Server {
    /// `unshare --fork`, which waits for the namespace's PID 1 and exits with it.
    unshare: std::process::Child,
    /// The entrypoint: PID 1 in its namespace.
    init: i32,
    _dir: tempfile::TempDir,
}

impl Server {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.init.to_string()])
            .status();
        let _ = self.unshare.wait();
    }
}

fn serve_as(hostname: &str) -> (String, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (archive, _) = made(dir.path(), "web.tar");
    let open = || std::fs::File::open(&archive).expect("archive");
    let info = oci::read_archive(open()).expect("readable");
    let layer = oci::read_member(open(), &info.images[0].layers[0]).expect("layer");
    let root = dir.path().join("root");
    tar::Archive::new(&layer[..]).unpack(&root).expect("unpack");
    // What a container's /dev always has (sh opens it for a job's stdin).
    std::fs::create_dir_all(root.join("dev")).expect("dev");
    let made_null = Command::new("mknod")
        .args(["-m", "666"])
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()
        .expect("mknod");
    assert!(
        made_null.success(),
        "mknod /dev/null in the unpacked layer (as root)"
    );
    assert!(
        std::fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")
            .is_ok_and(|s| s.contains("flags: ") && s.lines().any(|l| l.starts_with("flags:") && l.contains('F'))),
        "qemu-aarch64 is not registered with binfmt_misc (fix-binary flag): `cargo xtask setup` does it"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // unshare and chroot need root: the suite runs as root (CI's fresh root too).
    let mut httpd = Command::new("unshare")
        .args(["--uts", "--pid", "--fork"])
        .arg("chroot")
        .arg(&root)
        .args([
            "/bin/sh",
            "-c",
            &format!("busybox hostname {hostname} && exec /entrypoint.sh"),
        ])
        .env_clear()
        // chroot is in /usr/sbin; the image has /usr/bin (and /bin, a link to it).
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let started = Instant::now();
    let answer = loop {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream
                .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
                .expect("request");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("answer");
            break answer;
        }
        if let Ok(Some(status)) = httpd.try_wait() {
            panic!(
                "the entrypoint ended ({status}) before serving: run as root? (unshare, chroot)"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "httpd never listened on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let children = format!("/proc/{0}/task/{0}/children", httpd.id());
    let init = std::fs::read_to_string(&children)
        .expect("unshare's children")
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the namespace's PID 1");
    (
        answer,
        Server {
            unshare: httpd,
            init,
            _dir: dir,
        },
    )
}

/// `docker stop` and a board's shutdown send SIGTERM to the container's PID 1: the
/// server must end (it once ignored it, and a board's power-off waited 90 s for it).
#[test]
fn sigterm_stops_the_server_as_pid_1() {
    let (answer, mut server) = serve_as("worker8");
    assert!(answer.contains("<h1>worker8</h1>"), "{answer}");
    let sent = Command::new("kill")
        .args(["-TERM", &server.init.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let started = Instant::now();
    let ended = loop {
        if let Ok(Some(status)) = server.unshare.try_wait() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if ended.is_none() {
        server.stop();
    }
    let status = ended.expect("the server ignored SIGTERM as PID 1 for 10 s");
    assert!(status.success(), "{status}");
}

#[test]
fn httpd_serves_a_page_naming_the_node() {
    let answer = page_served_as("worker7");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("<h1>worker7</h1>"), "{answer}");
    assert!(!answer.contains("localhost"), "{answer}");
}
