//! Writing an image to a card or file: bmap-aware, read back and checked, then the card's
//! node and secrets files put on its boot partition.
//!
//! Order: inspect the target and refuse unsafe ones, refuse a `--node` the image does not
//! serve (its node table, see [`crate::nodes`]), size the image and refuse a small target, ask,
//! write (mapped ranges only with a bmap, checking the image against the bmap
//! as it streams), fsync, drop the cached pages, read back and compare, write the boot files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::bmap::{BlockRange, Bmap, BmapError, ByteSpan, ChecksumKind, RangeHasher};
use crate::boot::{self, BootFilesError, NodeName};
use crate::nodes::{self, NodesError};
use crate::source::{self, ImageSource, SourceError};
use crate::target::{self, HostView, Target, TargetError, TargetKind};

/// Granularity of the zero-skipping for file targets without a bmap.
const BLOCK: usize = 4096;
const BUF: usize = 1 << 20;

/// Which block map to use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BmapChoice {
    /// `<image>.bmap`, `<image without .zst>.bmap` or `<stem>.bmap` if one exists.
    #[default]
    Auto,
    File(PathBuf),
    /// Write and verify every byte.
    Ignore,
}

/// What `pibake flash IMAGE TARGET` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct FlashOptions {
    /// `.img` or `.img.zst` (told by content).
    pub image: PathBuf,
    /// A block device or a regular file (created or replaced).
    pub target: PathBuf,
    pub bmap: BmapChoice,
    /// Written as `pibake-node.toml` (`node = "<name>"`) on the boot partition; must be a node
    /// the image's node table serves.
    pub node: Option<NodeName>,
    /// Copied as `pibake-secrets.toml` on the boot partition.
    pub secrets: Option<PathBuf>,
    /// Do not ask before overwriting a block device.
    pub yes: bool,
    /// Show progress bars (bytes, rate) on stderr.
    pub progress: bool,
}

/// How the written bytes were checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Each mapped range read back and hashed (SHA-256 or, for bmap 1.x, SHA-1).
    BmapRanges { ranges: usize },
    /// The whole image read back and hashed.
    WholeImage { sha256: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlashReport {
    pub target: Target,
    pub image_bytes: u64,
    /// Image bytes written to the target (mapped ranges with a bmap).
    pub bytes_written: u64,
    pub bytes_verified: u64,
    pub bmap: Option<PathBuf>,
    pub verification: Verification,
    /// Files put on the boot partition.
    pub boot_files: Vec<&'static str>,
    pub elapsed: Duration,
    /// From the start to the written bytes flushed, before the read-back (what `bmaptool
    /// copy`, which reads nothing back, is compared with).
    pub written_in: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Bmap(#[from] BmapError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    BootFiles(#[from] BootFilesError),
    #[error(transparent)]
    Nodes(#[from] NodesError),
    #[error("not confirmed: {0} was left untouched")]
    Declined(PathBuf),
    #[error(
        "block map {bmap} describes {bmap_bytes} bytes but the image {image} has {image_bytes}"
    )]
    BmapSize {
        bmap: PathBuf,
        bmap_bytes: u64,
        image: PathBuf,
        image_bytes: u64,
    },
    #[error("image {image} ends at byte {at}, before the end of what its block map covers")]
    ShortImage { image: PathBuf, at: u64 },
    #[error("image {image} does not match its block map at blocks {first}-{last} ({span}): wrong bmap or damaged image; nothing after it was written")]
    SourceMismatch {
        image: PathBuf,
        first: u64,
        last: u64,
        span: ByteSpan,
    },
    #[error("read-back of {target} differs from what was written at {span}{blocks}: the card or reader did not store it (try another card or reader)")]
    Verify {
        target: PathBuf,
        span: ByteSpan,
        blocks: String,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn ioe<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FlashError + 'a {
    move |source| FlashError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A callback given the target's path.
pub type TargetHook<'a> = &'a mut dyn FnMut(&Path) -> io::Result<()>;

/// Test seams: `before_verify` runs between writing and the read-back.
#[derive(Default)]
pub struct Hooks<'a> {
    pub before_verify: Option<TargetHook<'a>>,
}

impl std::fmt::Debug for Hooks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("before_verify", &self.before_verify.is_some())
            .finish()
    }
}

/// Flashes `opts.image` to `opts.target`. `confirm` gets a question and returns the answer;
/// it is asked only for block devices and only without `opts.yes`.
pub fn flash(
    opts: &FlashOptions,
    confirm: &mut dyn FnMut(&str) -> bool,
) -> Result<FlashReport, FlashError> {
    flash_with_hooks(opts, confirm, Hooks::default())
}

/// [`flash`] with test seams.
pub fn flash_with_hooks(
    opts: &FlashOptions,
    confirm: &mut dyn FnMut(&str) -> bool,
    mut hooks: Hooks<'_>,
) -> Result<FlashReport, FlashError> {
    let started = Instant::now();
    // Read the inputs that can fail cheaply before touching the target.
    let secrets = opts
        .secrets
        .as_deref()
        .map(boot::read_secrets)
        .transpose()?;
    refuse_source_as_target(opts)?;
    // Safety checks come before the device is even opened to read its size.
    if let Some(dev) = target::device_number(&opts.target)? {
        let host = HostView::current().map_err(ioe(
            "cannot read the host's mounts",
            Path::new("/proc/self/mountinfo"),
        ))?;
        host.check_device(&opts.target, dev)?;
    }
    let target = Target::inspect(&opts.target)?;
    // The node must be one the image serves; learnt from the image before anything is
    // written or asked.
    if let Some(n) = &opts.node {
        nodes::check(&opts.image, n, &opts.target)?;
    }

    let bmap_path = find_bmap(opts);
    let bmap = bmap_path.as_deref().map(Bmap::read).transpose()?;
    let image_bytes = match &bmap {
        Some(b) => {
            if let Some(n) = source::quick_size(&opts.image)? {
                if n != b.image_size {
                    let bmap = bmap_path.clone().unwrap_or_default();
                    return Err(FlashError::BmapSize {
                        bmap,
                        bmap_bytes: b.image_size,
                        image: opts.image.clone(),
                        image_bytes: n,
                    });
                }
            }
            b.image_size
        }
        None => match source::quick_size(&opts.image)? {
            Some(n) => n,
            None => source::measure(&opts.image)?.0,
        },
    };
    if let TargetKind::BlockDevice { bytes, .. } = target.kind {
        if bytes < image_bytes {
            return Err(TargetError::TooSmall {
                path: opts.target.clone(),
                target_bytes: bytes,
                image_bytes,
            }
            .into());
        }
        if !opts.yes {
            let q = format!(
                "Overwrite {}? Everything on it will be lost.",
                target.describe()
            );
            if !confirm(&q) {
                return Err(FlashError::Declined(opts.target.clone()));
            }
        }
    }

    let out = open_target(&target)?;
    if !target.is_device() {
        // A fresh sparse file of the image's size: unwritten ranges read as zeros.
        out.set_len(0)
            .and_then(|()| out.set_len(image_bytes))
            .map_err(ioe("cannot size the target file", &opts.target))?;
    }
    let mut src = ImageSource::open(&opts.image)?;
    let progress = Progress::new(opts.progress);
    let (bytes_written, written) = match &bmap {
        Some(b) => write_ranges(&mut src, b, &out, &opts.target, &progress)?,
        None => write_whole(&mut src, image_bytes, &out, &target, &progress)?,
    };
    out.sync_all()
        .map_err(ioe("cannot flush the target", &opts.target))?;
    let written_in = started.elapsed();
    drop_cache(&out);
    drop(out);

    if let Some(h) = hooks.before_verify.as_mut() {
        h(&opts.target).map_err(ioe("test hook failed on", &opts.target))?;
    }

    let kind = bmap.as_ref().map_or(ChecksumKind::Sha256, |b| b.checksum);
    let bytes_verified = verify(&opts.target, &written, kind, &progress)?;
    let verification = match (&bmap, written.first()) {
        (Some(_), _) => Verification::BmapRanges {
            ranges: written.len(),
        },
        (None, Some(w)) => Verification::WholeImage {
            sha256: w.hash.clone(),
        },
        (None, None) => Verification::WholeImage {
            sha256: String::new(),
        },
    };

    let mut files: Vec<(&'static str, Vec<u8>)> = Vec::new();
    if let Some(n) = &opts.node {
        files.push((boot::NODE_FILE, n.node_file().into_bytes()));
    }
    if let Some(s) = secrets {
        files.push((boot::SECRETS_FILE, s));
    }
    if !files.is_empty() {
        let disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&opts.target)
            .map_err(ioe("cannot reopen the target", &opts.target))?;
        let refs: Vec<(&'static str, &[u8])> =
            files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
        boot::write_boot_files(&disk, image_bytes, &opts.target, &refs)?;
        disk.sync_all()
            .map_err(ioe("cannot flush the target", &opts.target))?;
    }
    progress.finish();
    Ok(FlashReport {
        target,
        image_bytes,
        bytes_written,
        bytes_verified,
        bmap: bmap_path,
        verification,
        boot_files: files.iter().map(|(n, _)| *n).collect(),
        elapsed: started.elapsed(),
        written_in,
    })
}

fn refuse_source_as_target(opts: &FlashOptions) -> Result<(), FlashError> {
    let (Ok(a), Ok(b)) = (
        std::fs::metadata(&opts.image),
        std::fs::metadata(&opts.target),
    ) else {
        return Ok(());
    };
    if a.dev() == b.dev() && a.ino() == b.ino() {
        return Err(TargetError::IsSource {
            path: opts.target.clone(),
        }
        .into());
    }
    Ok(())
}

/// The bmap to use for `opts`, if any.
pub fn find_bmap(opts: &FlashOptions) -> Option<PathBuf> {
    match &opts.bmap {
        BmapChoice::Ignore => None,
        BmapChoice::File(p) => Some(p.clone()),
        BmapChoice::Auto => {
            let s = opts.image.to_string_lossy().into_owned();
            let no_zst = s.strip_suffix(".zst").unwrap_or(&s).to_owned();
            let stem = no_zst.strip_suffix(".img").unwrap_or(&no_zst).to_owned();
            [
                format!("{s}.bmap"),
                format!("{no_zst}.bmap"),
                format!("{stem}.bmap"),
            ]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
        }
    }
}

fn open_target(t: &Target) -> Result<File, FlashError> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if t.is_device() {
        // O_EXCL on a block device: the kernel refuses it while anything has it mounted or
        // claimed, closing the gap between our checks and the open.
        o.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
    } else {
        o.create(true);
    }
    o.open(&t.path)
        .map_err(ioe("cannot open the target for writing", &t.path))
}

/// After fsync, drop the target's cached pages so the read-back comes from the device.
fn drop_cache(f: &File) {
    // Advisory: if the kernel ignores it the read-back still compares real data, only perhaps
    // from cache; nothing to report.
    let _ = rustix::fs::fadvise(f.as_fd(), 0, None, rustix::fs::Advice::DontNeed);
}

/// A written span and the hash of what was written there.
#[derive(Debug)]
struct Written {
    span: ByteSpan,
    /// Block numbers for messages (bmap ranges only).
    blocks: Option<(u64, u64)>,
    hash: String,
}

fn write_ranges(
    src: &mut ImageSource,
    b: &Bmap,
    out: &File,
    path: &Path,
    p: &Progress,
) -> Result<(u64, Vec<Written>), FlashError> {
    p.start("write", b.mapped_bytes());
    let mut buf = vec![0u8; BUF];
    let mut w = out;
    let mut total = 0;
    let mut done = Vec::with_capacity(b.ranges.len());
    for r in &b.ranges {
        let span = b.span(r);
        if !src.skip_to(span.start, &mut buf)? {
            return Err(FlashError::ShortImage {
                image: src.path.clone(),
                at: src.position(),
            });
        }
        w.seek(SeekFrom::Start(span.start))
            .map_err(ioe("cannot seek the target", path))?;
        let mut h = RangeHasher::new(b.checksum);
        let mut left = span.end - span.start;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(BUF).min(BUF);
            if src.read_full(&mut buf[..n])? < n {
                return Err(FlashError::ShortImage {
                    image: src.path.clone(),
                    at: src.position(),
                });
            }
            h.update(&buf[..n]);
            w.write_all(&buf[..n])
                .map_err(ioe("cannot write the target", path))?;
            left -= n as u64;
            total += n as u64;
            p.inc(n as u64);
        }
        let hash = h.hex();
        if let Some(want) = &r.checksum {
            if *want != hash {
                return Err(source_mismatch(src, r, span));
            }
        }
        done.push(Written {
            span,
            blocks: Some((r.first, r.last)),
            hash,
        });
    }
    Ok((total, done))
}

fn source_mismatch(src: &ImageSource, r: &BlockRange, span: ByteSpan) -> FlashError {
    FlashError::SourceMismatch {
        image: src.path.clone(),
        first: r.first,
        last: r.last,
        span,
    }
}

/// No bmap: every byte of the image. A device gets every block; a fresh sparse file only the
/// non-zero ones (its holes already read as zeros).
fn write_whole(
    src: &mut ImageSource,
    image_bytes: u64,
    out: &File,
    t: &Target,
    p: &Progress,
) -> Result<(u64, Vec<Written>), FlashError> {
    p.start("write", image_bytes);
    let mut buf = vec![0u8; BUF];
    let mut w = out;
    let mut h = Sha256::new();
    let mut total = 0;
    loop {
        let at = src.position();
        let n = src.read_full(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        if t.is_device() {
            w.seek(SeekFrom::Start(at))
                .map_err(ioe("cannot seek the target", &t.path))?;
            w.write_all(&buf[..n])
                .map_err(ioe("cannot write the target", &t.path))?;
            total += n as u64;
        } else {
            for (i, blk) in buf[..n].chunks(BLOCK).enumerate() {
                if blk.iter().any(|&x| x != 0) {
                    w.seek(SeekFrom::Start(at + (i * BLOCK) as u64))
                        .map_err(ioe("cannot seek the target", &t.path))?;
                    w.write_all(blk)
                        .map_err(ioe("cannot write the target", &t.path))?;
                    total += blk.len() as u64;
                }
            }
        }
        p.inc(n as u64);
    }
    if src.position() != image_bytes {
        return Err(FlashError::ShortImage {
            image: src.path.clone(),
            at: src.position(),
        });
    }
    let span = ByteSpan {
        start: 0,
        end: image_bytes,
    };
    Ok((
        total,
        vec![Written {
            span,
            blocks: None,
            hash: hex::encode(h.finalize()),
        }],
    ))
}

/// Reads every written span back from a fresh descriptor and compares hashes.
fn verify(
    path: &Path,
    written: &[Written],
    kind: ChecksumKind,
    p: &Progress,
) -> Result<u64, FlashError> {
    let mut f = File::open(path).map_err(ioe("cannot reopen the target to verify", path))?;
    p.start(
        "verify",
        written.iter().map(|w| w.span.end - w.span.start).sum(),
    );
    let mut buf = vec![0u8; BUF];
    let mut total = 0;
    for w in written {
        f.seek(SeekFrom::Start(w.span.start))
            .map_err(ioe("cannot seek the target", path))?;
        let mut h = match w.blocks {
            Some(_) => RangeHasher::new(kind),
            None => RangeHasher::new(ChecksumKind::Sha256),
        };
        let mut left = w.span.end - w.span.start;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(BUF).min(BUF);
            f.read_exact(&mut buf[..n])
                .map_err(ioe("cannot read back the target", path))?;
            h.update(&buf[..n]);
            left -= n as u64;
            total += n as u64;
            p.inc(n as u64);
        }
        if h.hex() != w.hash {
            let blocks = w
                .blocks
                .map(|(a, b)| format!(" (blocks {a}-{b})"))
                .unwrap_or_default();
            return Err(FlashError::Verify {
                target: path.to_owned(),
                span: w.span,
                blocks,
            });
        }
    }
    Ok(total)
}

/// Optional progress on stderr.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(show: bool) -> Self {
        Self {
            bar: show.then(|| ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())),
        }
    }
    fn start(&self, what: &'static str, total: u64) {
        if let Some(b) = &self.bar {
            let style = ProgressStyle::with_template(
                "{msg:7} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            b.set_style(style);
            b.set_message(what);
            b.set_length(total);
            b.set_position(0);
            b.reset_eta();
        }
    }
    fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
