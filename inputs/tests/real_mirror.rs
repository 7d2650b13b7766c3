//! Locks a small real package set for arm64 trixie against the Debian mirror of the host's
//! apt configuration, twice in fresh work directories, and checks both locks are identical.
//! Needs network access to that mirror (the machine's own apt sources).

use std::collections::BTreeSet;
use std::path::Path;

use pibake_inputs::resolve::{self, LockRequest};
use pibake_inputs::sources::host_debian_source;

#[test]
fn real_mirror_lock_is_stable() -> anyhow::Result<()> {
    let debian = host_debian_source(Path::new("/etc/apt"), "trixie")?;
    let req = LockRequest {
        arch: "arm64".into(),
        suite: "trixie".into(),
        sources: vec![debian],
        packages: ["systemd-sysv", "openssh-server"].map(String::from).into(),
        include_required: true,
    };
    let t0 = std::time::Instant::now();
    let a = resolve::lock(&req, tempfile::tempdir()?.path())?;
    eprintln!("lock time (fresh work dir): {:.1?}", t0.elapsed());
    let b = resolve::lock(&req, tempfile::tempdir()?.path())?;
    let file = |c: &pibake_inputs::Closure| {
        let mut lock = pibake_inputs::Lock::new("trixie");
        lock.set_closure(c.clone());
        lock
    };
    let (ta, tb) = (file(&a).to_toml()?, file(&b).to_toml()?);
    assert_eq!(ta, tb, "two locks of the same request differ");

    let names: BTreeSet<&str> = a.packages.iter().map(|p| p.name.as_str()).collect();
    for must in [
        "systemd-sysv",
        "openssh-server",
        "systemd",
        "libc6",
        "dpkg",
        "base-files",
        "bash",
    ] {
        assert!(names.contains(must), "{must} missing from the closure");
    }
    for p in &a.packages {
        assert!(
            p.architecture == "arm64" || p.architecture == "all",
            "{} is {}",
            p.name,
            p.architecture
        );
        assert!(
            p.filename.starts_with("pool/main/"),
            "{} at {}",
            p.name,
            p.filename
        );
        assert_eq!(p.origin, "debian");
        assert!(p.size > 0);
    }
    let sysv = a
        .packages
        .iter()
        .find(|p| p.name == "systemd-sysv")
        .map(|p| p.source.as_str());
    assert_eq!(sysv, Some("systemd"));
    // trixie was released in 2025; its Release date cannot be older.
    assert!(
        a.source_date_epoch > 1_735_689_600,
        "SOURCE_DATE_EPOCH {}",
        a.source_date_epoch
    );
    assert!(a.missing(&req.packages).is_empty());
    eprintln!(
        "{} packages locked, lock digest {}",
        a.packages.len(),
        file(&a).digest()?
    );
    Ok(())
}
