//! Small driver for the bench script (`inputs/bench/fetch.sh`): lock, fetch and lay out the
//! locked files for a local server. The real CLI is `pibake` (builder/).
//!
//! inputs lock <lock> <suite> <pkg>...        lock against the host's Debian mirror
//! inputs fetch <lock> <store> [<uri>]         fetch from the host mirror or from <uri>
//! inputs layout <lock> <store> <dir>          hard-link locked files at their pool paths

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pibake_inputs::fetch::{self, FetchOptions};
use pibake_inputs::resolve::{self, LockRequest};
use pibake_inputs::sources::host_debian_source;
use pibake_inputs::{Lock, Store};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a[..] {
        ["lock", lock, suite, ref pkgs @ ..] => {
            let req = LockRequest {
                arch: "arm64".into(),
                suite: suite.into(),
                sources: vec![host_debian_source(Path::new("/etc/apt"), suite)?],
                packages: pkgs.iter().map(|s| s.to_string()).collect(),
                include_required: true,
            };
            let work = tempfile::tempdir()?;
            let t0 = Instant::now();
            let mut l = pibake_inputs::Lock::new(suite);
            l.set_closure(resolve::lock(&req, work.path())?);
            let secs = t0.elapsed().as_secs_f64();
            l.write(Path::new(lock))?;
            let bytes: u64 = l.packages().iter().map(|p| p.size).sum();
            println!("lock: {} packages, {:.1} MiB, {secs:.2} s", l.packages().len(), bytes as f64 / 1048576.0);
        }
        ["fetch", lock, store, ref rest @ ..] => {
            let l = Lock::read(Path::new(lock))?;
            let mut src = host_debian_source(Path::new("/etc/apt"), &l.suite)?;
            if let [uri] = rest {
                src.uri = uri.to_string();
            }
            let t0 = Instant::now();
            let r = fetch::fetch(&l, &[src], &Store::open(store)?, &FetchOptions { progress: false, ..FetchOptions::default() })?;
            let secs = t0.elapsed().as_secs_f64();
            println!(
                "fetch: {} files, {:.1} MiB in {secs:.3} s ({:.0} MiB/s)",
                r.fetched.len(),
                r.bytes as f64 / 1048576.0,
                r.bytes as f64 / 1048576.0 / secs
            );
        }
        ["layout", lock, store, dir] => {
            let l = Lock::read(Path::new(lock))?;
            let store = Store::open(store)?;
            for p in l.packages() {
                let dest = Path::new(dir).join(&p.filename);
                std::fs::create_dir_all(dest.parent().context("no parent")?)?;
                if !dest.exists() {
                    std::fs::hard_link(store.path_of(&p.entry_name()?), &dest)?;
                }
                println!("{}", p.filename);
            }
        }
        _ => bail!("usage: inputs lock <lock> <suite> <pkg>... | fetch <lock> <store> [<uri>] | layout <lock> <store> <dir>"),
    }
    Ok(())
}
