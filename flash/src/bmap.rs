//! Reading bmaptool's block maps (format 1.x with SHA-1 and 2.x with SHA-256 range checksums),
//! as written by `bmaptool create` and by `pibake_image::assemble::bmap_xml`.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum BmapError {
    #[error("cannot read the block map {0}")]
    Read(PathBuf, #[source] std::io::Error),
    #[error("block map {path}: not XML")]
    Xml {
        path: PathBuf,
        #[source]
        source: roxmltree::Error,
    },
    #[error("block map {path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// Which hash the `chksum` attributes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumKind {
    Sha1,
    Sha256,
}

/// Inclusive block range `first..=last` with its expected checksum (lower-case hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRange {
    pub first: u64,
    pub last: u64,
    pub checksum: Option<String>,
}

impl BlockRange {
    pub fn blocks(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// A parsed block map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub checksum: ChecksumKind,
    /// Sorted, non-overlapping.
    pub ranges: Vec<BlockRange>,
}

/// A byte span of the image, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSpan {
    pub start: u64,
    pub end: u64,
}

impl fmt::Display for ByteSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bytes {}..{}", self.start, self.end)
    }
}

impl Bmap {
    pub fn read(path: &Path) -> Result<Self, BmapError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| BmapError::Read(path.to_owned(), e))?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, BmapError> {
        let bad = |what: String| BmapError::Invalid {
            path: path.to_owned(),
            what,
        };
        let doc = roxmltree::Document::parse(text).map_err(|source| BmapError::Xml {
            path: path.to_owned(),
            source,
        })?;
        let root = doc.root_element();
        if root.tag_name().name() != "bmap" {
            return Err(bad(format!(
                "root element is <{}>, want <bmap>",
                root.tag_name().name()
            )));
        }
        let version = root.attribute("version").unwrap_or("");
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| bad(format!("bad version {version:?}")))?;
        if !(1..=2).contains(&major) {
            return Err(bad(format!(
                "unsupported bmap version {version} (this reads 1.x and 2.x)"
            )));
        }
        let child = |name: &str| root.children().find(|n| n.has_tag_name(name));
        let num = |name: &str| -> Result<u64, BmapError> {
            let t = child(name)
                .and_then(|n| n.text())
                .ok_or_else(|| bad(format!("missing <{name}>")))?;
            t.trim()
                .parse()
                .map_err(|_| bad(format!("<{name}> is not a number: {:?}", t.trim())))
        };
        let image_size = num("ImageSize")?;
        let block_size = num("BlockSize")?;
        if block_size == 0 || block_size % 512 != 0 {
            return Err(bad(format!(
                "block size {block_size} is not a positive multiple of 512"
            )));
        }
        let checksum = match child("ChecksumType").and_then(|n| n.text()).map(str::trim) {
            Some("sha256") => ChecksumKind::Sha256,
            Some("sha1") => ChecksumKind::Sha1,
            None if major == 1 => ChecksumKind::Sha1,
            other => return Err(bad(format!("unsupported checksum type {other:?}"))),
        };
        if major >= 2 {
            check_file_checksum(text, child("BmapFileChecksum").and_then(|n| n.text()))
                .map_err(bad)?;
        }
        let map = child("BlockMap").ok_or_else(|| bad("missing <BlockMap>".to_owned()))?;
        let blocks = image_size.div_ceil(block_size);
        let mut ranges: Vec<BlockRange> = Vec::new();
        for r in map.children().filter(|n| n.has_tag_name("Range")) {
            let t = r.text().unwrap_or("").trim();
            let parse = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(format!("bad range {t:?}")))
            };
            let (first, last) = match t.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => (parse(t)?, parse(t)?),
            };
            if first > last || last >= blocks {
                return Err(bad(format!(
                    "range {t:?} outside the image's {blocks} blocks"
                )));
            }
            if ranges.last().is_some_and(|p| p.last >= first) {
                return Err(bad(format!(
                    "range {t:?} overlaps or precedes the previous one"
                )));
            }
            ranges.push(BlockRange {
                first,
                last,
                checksum: r.attribute("chksum").map(str::to_ascii_lowercase),
            });
        }
        Ok(Self {
            image_size,
            block_size,
            checksum,
            ranges,
        })
    }

    /// Bytes of the image covered by `r` (the last block may be cut by the image's end).
    pub fn span(&self, r: &BlockRange) -> ByteSpan {
        ByteSpan {
            start: r.first * self.block_size,
            end: ((r.last + 1) * self.block_size).min(self.image_size),
        }
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| self.span(r))
            .map(|s| s.end - s.start)
            .sum()
    }
}

/// bmaptool 2.x: SHA-256 of the file with the checksum's own digits replaced by zeros.
fn check_file_checksum(text: &str, field: Option<&str>) -> Result<(), String> {
    let Some(want) = field.map(str::trim) else {
        return Ok(());
    };
    if want.len() != 64 {
        return Err(format!("<BmapFileChecksum> {want:?} is not a SHA-256"));
    }
    let zeroed = text.replacen(want, &"0".repeat(64), 1);
    let got = hex::encode(Sha256::digest(zeroed.as_bytes()));
    if !got.eq_ignore_ascii_case(want) {
        return Err(format!("file checksum mismatch (file says {want}, content hashes to {got}): the bmap was edited or damaged"));
    }
    Ok(())
}

/// The running hash of one range, of the bmap's kind.
#[derive(Debug)]
pub(crate) enum RangeHasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl RangeHasher {
    pub(crate) fn new(kind: ChecksumKind) -> Self {
        match kind {
            ChecksumKind::Sha1 => Self::Sha1(sha1::Sha1::new()),
            ChecksumKind::Sha256 => Self::Sha256(Sha256::new()),
        }
    }
    pub(crate) fn update(&mut self, b: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(b),
            Self::Sha256(h) => h.update(b),
        }
    }
    pub(crate) fn hex(self) -> String {
        match self {
            Self::Sha1(h) => hex::encode(h.finalize()),
            Self::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pibake_image::assemble::{bmap_xml, MappedRange};

    #[test]
    fn reads_what_the_image_crate_writes() {
        let ranges = vec![
            MappedRange {
                first: 0,
                last: 0,
                sha256: "a".repeat(64),
            },
            MappedRange {
                first: 5,
                last: 9,
                sha256: "b".repeat(64),
            },
        ];
        let xml = bmap_xml(10 * 4096 + 100, &ranges);
        let b = Bmap::parse(&xml, Path::new("x.bmap")).expect("parses");
        assert_eq!(b.image_size, 41060);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.checksum, ChecksumKind::Sha256);
        assert_eq!(b.ranges.len(), 2);
        assert_eq!((b.ranges[1].first, b.ranges[1].last), (5, 9));
        assert_eq!(
            b.ranges[1].checksum.as_deref(),
            Some("b".repeat(64).as_str())
        );
        assert_eq!(b.mapped_bytes(), 6 * 4096);
    }

    #[test]
    fn edited_bmap_is_refused() {
        let xml = bmap_xml(
            8192,
            &[MappedRange {
                first: 0,
                last: 1,
                sha256: "c".repeat(64),
            }],
        );
        let edited = xml.replace("0-1", "0-0");
        let e = Bmap::parse(&edited, Path::new("x.bmap")).expect_err("checksum must fail");
        assert!(e.to_string().contains("file checksum mismatch"), "{e}");
    }

    #[test]
    fn range_outside_image_is_refused() {
        let text = "<bmap version=\"1.4\"><ImageSize>4096</ImageSize><BlockSize>4096</BlockSize>\
            <BlockMap><Range chksum=\"00\">0-3</Range></BlockMap></bmap>";
        let e = Bmap::parse(text, Path::new("x.bmap")).expect_err("out of range");
        assert!(e.to_string().contains("outside"), "{e}");
    }
}
