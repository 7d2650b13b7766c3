//! Reading a Debian package without unpacking it: an `ar` archive whose
//! `control.tar[.gz|.xz|.zst]` and `data.tar[...]` members are tars.

use std::io::{self, Read};

/// Which tar member of a .deb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// `control.tar*`: the package's control file and maintainer scripts.
    Control,
    /// `data.tar*`: the files the package installs.
    Data,
}

/// Runs `f` on the decompressed tar of `member`; an error names what is wrong
/// (`ar: …`, `data.tar.xz: …`).
pub fn with_member<T>(
    deb: impl Read,
    member: Member,
    f: impl FnOnce(&mut dyn Read) -> io::Result<T>,
) -> Result<T, String> {
    let stem = match member {
        Member::Control => "control.tar",
        Member::Data => "data.tar",
    };
    let mut ar = ar::Archive::new(deb);
    while let Some(entry) = ar.next_entry() {
        let entry = entry.map_err(|e| format!("ar: {e}"))?;
        let id = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let id = id.trim_end_matches('/').to_owned();
        let Some(ext) = id.strip_prefix(stem) else {
            continue;
        };
        let mut inner: Box<dyn Read + '_> = match ext {
            "" => Box::new(entry),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            ".xz" => Box::new(xz2::read::XzDecoder::new(entry)),
            ".zst" => Box::new(zstd::Decoder::new(entry).map_err(|e| format!("zstd: {e}"))?),
            _ => return Err(format!("{id}: unknown compression")),
        };
        return f(&mut inner).map_err(|e| format!("{id}: {e}"));
    }
    Err(format!("no {stem} member"))
}
