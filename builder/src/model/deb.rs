//! Reading the files of a Debian package (`ar` archive → `data.tar[.xz|.gz|.zst]`)
//! without unpacking it: what `pibake check` learns from locked packages.

use std::io::{self, Read};

/// Runs `f` on the package's data tar (decompressed); an error names what is wrong.
pub fn with_data_tar<T>(
    deb: impl Read,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<T, String> {
    let mut ar = ar::Archive::new(deb);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| format!("ar: {e}"))?;
        let id = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let id = id.trim_end_matches('/').to_owned();
        let mut data: Box<dyn Read + '_> = match id.as_str() {
            "data.tar" => Box::new(entry),
            "data.tar.xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            "data.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data.tar.zst" => {
                Box::new(zstd::Decoder::new(entry).map_err(|e| format!("zstd: {e}"))?)
            }
            _ => continue,
        };
        return f(&mut data).map_err(|e| format!("{id}: {e}"));
    }
    Err("no data.tar member".into())
}
