//! `pibake-webimage --out FILE [--store DIR] [--offline]`: makes the lab's web server
//! archive (see the library) and prints its sha256 and size.

use anyhow::Context as _;
use std::path::PathBuf;

const USAGE: &str = "usage: pibake-webimage --out FILE [--store DIR] [--offline]";

fn main() -> anyhow::Result<()> {
    let mut out = None;
    let mut store = None;
    let mut offline = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--store" => store = Some(PathBuf::from(args.next().context(USAGE)?)),
            "--offline" => offline = true,
            _ => anyhow::bail!("unknown argument {arg:?}\n{USAGE}"),
        }
    }
    let out = out.context(USAGE)?;
    let root = match store {
        Some(dir) => dir,
        None => pibake_inputs::Store::default_root()?,
    };
    let store = pibake_inputs::Store::open(root)?;
    let made = pibake_webimage::make(&store, &out, offline)?;
    eprintln!(
        "{}: sha256 {} ({} bytes), {} for linux/arm64",
        out.display(),
        made.sha256,
        made.size,
        pibake_webimage::image::TAG
    );
    Ok(())
}
