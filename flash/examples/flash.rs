//! Driver for flash/bench/flash.sh until `pibake flash` exists:
//! `flash IMAGE TARGET [--no-bmap] [--node NAME]` prints `bytes_written=N image_bytes=N seconds=S`.

use std::path::PathBuf;

use pibake_flash::{flash, BmapChoice, FlashOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(image), Some(target)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: flash IMAGE TARGET [--no-bmap] [--node NAME]");
    };
    let mut o = FlashOptions {
        image: PathBuf::from(image),
        target: PathBuf::from(target),
        yes: true,
        ..FlashOptions::default()
    };
    let mut rest = args[2..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--no-bmap" => o.bmap = BmapChoice::Ignore,
            "--node" => {
                o.node = Some(
                    rest.next()
                        .map(|s| s.parse())
                        .transpose()?
                        .ok_or_else(|| anyhow::anyhow!("--node NAME"))?,
                )
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let r = flash(&o, &mut |_| true)?;
    println!(
        "bytes_written={} image_bytes={} bytes_verified={} seconds={:.3} written_seconds={:.3}",
        r.bytes_written,
        r.image_bytes,
        r.bytes_verified,
        r.elapsed.as_secs_f64(),
        r.written_in.as_secs_f64()
    );
    Ok(())
}
