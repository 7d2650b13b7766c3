//! The image to flash: a raw `.img` or a `.img.zst` decoded as a stream (never unpacked to disk).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read the image {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {path} is empty")]
    Empty { path: PathBuf },
}

fn ioe(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Raw or zstd-compressed, told by the content's magic bytes (not the file name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

/// An image opened for one forward pass.
pub struct ImageSource {
    pub path: PathBuf,
    pub compression: Compression,
    reader: Box<ReadDebug>,
    pos: u64,
}

type ReadDebug = dyn Read + Send;

impl std::fmt::Debug for ImageSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSource")
            .field("path", &self.path)
            .field("compression", &self.compression)
            .field("pos", &self.pos)
            .finish()
    }
}

impl ImageSource {
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let mut f = File::open(path).map_err(ioe(path))?;
        let compression = detect(&mut f).map_err(ioe(path))?;
        let reader: Box<ReadDebug> = match compression {
            Compression::None => Box::new(BufReader::with_capacity(1 << 20, f)),
            Compression::Zstd => Box::new(zstd::Decoder::new(f).map_err(ioe(path))?),
        };
        Ok(Self {
            path: path.to_owned(),
            compression,
            reader,
            pos: 0,
        })
    }

    /// Current offset in the decoded image.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Reads up to `buf.len()` bytes, short only at the end of the image.
    pub fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, SourceError> {
        let mut n = 0;
        while n < buf.len() {
            match self.reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(SourceError::Io {
                        path: self.path.clone(),
                        source: e,
                    })
                }
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Skips forward to `to` (decoding and dropping for zstd). Returns false if the image ends first.
    pub fn skip_to(&mut self, to: u64, scratch: &mut [u8]) -> Result<bool, SourceError> {
        while self.pos < to {
            let want = usize::try_from(to - self.pos)
                .unwrap_or(usize::MAX)
                .min(scratch.len());
            if self.read_full(&mut scratch[..want])? < want {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn detect(f: &mut File) -> io::Result<Compression> {
    let mut m = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let k = f.read(&mut m[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(if n == 4 && m == ZSTD_MAGIC {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Size and SHA-256 of the decoded image. Raw images take their size from metadata but are
/// still hashed; zstd frames without a content size need this pass for the size check.
pub fn measure(path: &Path) -> Result<(u64, String), SourceError> {
    let mut src = ImageSource::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read_full(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    if src.pos == 0 {
        return Err(SourceError::Empty {
            path: path.to_owned(),
        });
    }
    Ok((src.pos, hex::encode(h.finalize())))
}

/// Decoded size without decoding: a raw file's length. None for zstd (a stream may hold several
/// frames, and ours carry no content size), where [`measure`] has to decode.
pub fn quick_size(path: &Path) -> Result<Option<u64>, SourceError> {
    let mut f = File::open(path).map_err(ioe(path))?;
    match detect(&mut f).map_err(ioe(path))? {
        Compression::None => Ok(Some(f.metadata().map_err(ioe(path))?.len())),
        Compression::Zstd => Ok(None),
    }
}

/// True when the file starts with the zstd magic number.
pub fn is_zstd(path: &Path) -> bool {
    File::open(path)
        .and_then(|mut f| detect(&mut f))
        .is_ok_and(|c| c == Compression::Zstd)
}
