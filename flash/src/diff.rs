//! What changed between two builds: packages, files and the boot configuration lines, read
//! from each image's `.manifest.json` (and, when a manifest lacks the boot texts, from the
//! image's FAT partition).
//!
//! The manifest is the one the builder writes, [`pibake_image::manifest::Manifest`]: packages
//! as a name → version map, files with octal string modes (`"0644"`), boot texts by file
//! name. Every key is optional when read; a mode that is not octal is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use fatfs::{FileSystem, FsOptions};
pub use pibake_image::manifest::{Manifest, ManifestFile};
use pibake_image::table;
use pibake_image::window::Window;

/// The boot files whose lines are compared.
pub const BOOT_FILES: [&str; 2] = ["config.txt", "cmdline.txt"];

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    #[error("{path}: not a pibake manifest")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no manifest for image {image}: expected {manifest}")]
    NoManifest { image: PathBuf, manifest: PathBuf },
    #[error("{path}: file {file:?} has mode {mode:?}, want an octal string like \"0644\"")]
    Mode {
        path: PathBuf,
        file: String,
        mode: String,
    },
    #[error("cannot read the boot partition of {0}")]
    Boot(PathBuf, #[source] io::Error),
    #[error("cannot read the partition table of {0}")]
    Table(PathBuf, #[source] table::ReadTableError),
}

/// One file as a manifest lists it, with its mode read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// Parses a manifest's text; every file's mode must be octal.
pub fn parse(text: &str, path: &Path) -> Result<Manifest, DiffError> {
    let m = Manifest::from_json(text.as_bytes()).map_err(|source| DiffError::Json {
        path: path.to_owned(),
        source,
    })?;
    if let Some(bad) = m.files.iter().find(|f| f.mode_bits().is_none()) {
        return Err(DiffError::Mode {
            path: path.to_owned(),
            file: bad.path.clone(),
            mode: bad.mode.clone(),
        });
    }
    Ok(m)
}

/// Reads and parses a manifest file.
pub fn read(path: &Path) -> Result<Manifest, DiffError> {
    let text = std::fs::read_to_string(path).map_err(|e| DiffError::Read(path.to_owned(), e))?;
    parse(&text, path)
}

/// The files of a manifest by path.
fn files_of(m: &Manifest) -> BTreeMap<&str, FileEntry> {
    m.files
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                FileEntry {
                    mode: f.mode_bits(),
                    uid: f.uid,
                    gid: f.gid,
                    sha256: f.sha256.clone(),
                    size: f.size,
                },
            )
        })
        .collect()
}

/// `x.img` / `x.img.zst` → `x.manifest.json` beside it.
pub fn manifest_path(image: &Path) -> PathBuf {
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".zst").unwrap_or(&name);
    let stem = stem.strip_suffix(".img").unwrap_or(stem);
    image.with_file_name(format!("{stem}.manifest.json"))
}

/// A manifest given directly (`*.json`) or the one beside an image; boot texts the manifest
/// lacks are read from a raw image's FAT partition.
pub fn load(path: &Path) -> Result<Manifest, DiffError> {
    if path.extension().is_some_and(|e| e == "json") {
        return read(path);
    }
    let mpath = manifest_path(path);
    if !mpath.is_file() {
        return Err(DiffError::NoManifest {
            image: path.to_owned(),
            manifest: mpath,
        });
    }
    let mut m = read(&mpath)?;
    let raw = {
        let s = path.to_string_lossy();
        PathBuf::from(s.strip_suffix(".zst").unwrap_or(&s))
    };
    if BOOT_FILES.iter().any(|f| !m.boot.contains_key(*f))
        && raw.is_file()
        && !crate::source::is_zstd(&raw)
    {
        for (name, text) in read_boot_texts(&raw)? {
            m.boot.entry(name).or_insert(text);
        }
    }
    Ok(m)
}

/// config.txt and cmdline.txt from partition 1 of a raw image, read with fatfs.
pub fn read_boot_texts(image: &Path) -> Result<BTreeMap<String, String>, DiffError> {
    let f = File::open(image).map_err(|e| DiffError::Read(image.to_owned(), e))?;
    let len = f
        .metadata()
        .map_err(|e| DiffError::Read(image.to_owned(), e))?
        .len();
    let t = table::read_table(&mut &f, len).map_err(|e| DiffError::Table(image.to_owned(), e))?;
    let berr = |e| DiffError::Boot(image.to_owned(), e);
    let p = t
        .partitions()
        .iter()
        .find(|p| p.number == 1 && p.kind.is_fat())
        .ok_or_else(|| {
            berr(io::Error::new(
                io::ErrorKind::NotFound,
                "no FAT partition 1",
            ))
        })?;
    // Read-only descriptor: any write fatfs might try fails instead of touching the image.
    let fs = FileSystem::new(
        Window::new(&f, p.start, p.len).map_err(berr)?,
        FsOptions::new(),
    )
    .map_err(berr)?;
    let mut out = BTreeMap::new();
    for name in BOOT_FILES {
        match fs.root_dir().open_file(name) {
            Ok(mut file) => {
                let mut s = String::new();
                file.read_to_string(&mut s).map_err(berr)?;
                out.insert(name.to_owned(), s);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(berr(e)),
        }
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageChange {
    Added {
        name: String,
        version: String,
    },
    Removed {
        name: String,
        version: String,
    },
    Version {
        name: String,
        from: String,
        to: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileChange {
    Added {
        path: String,
        entry: FileEntry,
    },
    Removed {
        path: String,
    },
    /// Content and/or metadata changed; the fields say which.
    Changed {
        path: String,
        content: Option<(Option<u64>, Option<u64>)>,
        mode: Option<(Option<u32>, Option<u32>)>,
        owner: Option<((u32, u32), (u32, u32))>,
    },
}

/// A boot file's changed lines, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineDiff {
    pub file: String,
    /// `('-', line)` removed, `('+', line)` added.
    pub lines: Vec<(char, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDiff {
    pub a: String,
    pub b: String,
    pub packages: Vec<PackageChange>,
    pub files: Vec<FileChange>,
    pub boot: Vec<LineDiff>,
}

/// Compares two images or manifests.
pub fn diff(a: &Path, b: &Path) -> Result<ImageDiff, DiffError> {
    let ma = load(a)?;
    let mb = load(b)?;
    let label = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Ok(diff_manifests(&label(a), &ma, &label(b), &mb))
}

/// Compares two parsed manifests; `a`, `b` label them in the rendering.
pub fn diff_manifests(a: &str, ma: &Manifest, b: &str, mb: &Manifest) -> ImageDiff {
    let mut packages = Vec::new();
    for (name, va) in &ma.packages {
        match mb.packages.get(name) {
            None => packages.push(PackageChange::Removed {
                name: name.clone(),
                version: va.clone(),
            }),
            Some(vb) if vb != va => packages.push(PackageChange::Version {
                name: name.clone(),
                from: va.clone(),
                to: vb.clone(),
            }),
            Some(_) => {}
        }
    }
    for (name, vb) in &mb.packages {
        if !ma.packages.contains_key(name) {
            packages.push(PackageChange::Added {
                name: name.clone(),
                version: vb.clone(),
            });
        }
    }
    packages.sort_by(|x, y| pkg_name(x).cmp(pkg_name(y)));

    let mut files = Vec::new();
    let (fa, fb) = (files_of(ma), files_of(mb));
    let paths: std::collections::BTreeSet<&str> = fa.keys().chain(fb.keys()).copied().collect();
    for p in paths {
        match (fa.get(p), fb.get(p)) {
            (Some(_), None) => files.push(FileChange::Removed { path: p.to_owned() }),
            (None, Some(e)) => files.push(FileChange::Added {
                path: p.to_owned(),
                entry: e.clone(),
            }),
            (Some(x), Some(y)) => {
                let content =
                    (x.sha256 != y.sha256 || x.size != y.size).then_some((x.size, y.size));
                let mode = (x.mode != y.mode).then_some((x.mode, y.mode));
                let owner =
                    ((x.uid, x.gid) != (y.uid, y.gid)).then_some(((x.uid, x.gid), (y.uid, y.gid)));
                if content.is_some() || mode.is_some() || owner.is_some() {
                    files.push(FileChange::Changed {
                        path: p.to_owned(),
                        content,
                        mode,
                        owner,
                    });
                }
            }
            (None, None) => {}
        }
    }

    let mut boot = Vec::new();
    let names: std::collections::BTreeSet<&String> = ma.boot.keys().chain(mb.boot.keys()).collect();
    for name in names {
        let ta = ma.boot.get(name).map_or("", String::as_str);
        let tb = mb.boot.get(name).map_or("", String::as_str);
        let lines = line_diff(ta, tb);
        if !lines.is_empty() {
            boot.push(LineDiff {
                file: name.clone(),
                lines,
            });
        }
    }
    ImageDiff {
        a: a.to_owned(),
        b: b.to_owned(),
        packages,
        files,
        boot,
    }
}

fn pkg_name(c: &PackageChange) -> &str {
    match c {
        PackageChange::Added { name, .. }
        | PackageChange::Removed { name, .. }
        | PackageChange::Version { name, .. } => name,
    }
}

fn line_diff(a: &str, b: &str) -> Vec<(char, String)> {
    use similar::{ChangeTag, TextDiff};
    TextDiff::from_lines(a, b)
        .iter_all_changes()
        .filter_map(|c| {
            let tag = match c.tag() {
                ChangeTag::Delete => '-',
                ChangeTag::Insert => '+',
                ChangeTag::Equal => return None,
            };
            Some((tag, c.value().trim_end_matches('\n').to_owned()))
        })
        .collect()
}

fn mode_s(m: Option<u32>) -> String {
    m.map_or_else(|| "?".to_owned(), |m| format!("{m:04o}"))
}

fn size_s(s: Option<u64>) -> String {
    s.map_or_else(|| "?".to_owned(), |s| s.to_string())
}

impl ImageDiff {
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.files.is_empty() && self.boot.is_empty()
    }

    /// Stable text: sections in a fixed order, entries sorted, no timestamps.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- {}\n+++ {}", self.a, self.b);
        let (mut add, mut rem, mut chg) = (0, 0, 0);
        for p in &self.packages {
            match p {
                PackageChange::Added { .. } => add += 1,
                PackageChange::Removed { .. } => rem += 1,
                PackageChange::Version { .. } => chg += 1,
            }
        }
        let _ = writeln!(s, "packages: {add} added, {rem} removed, {chg} changed");
        for p in &self.packages {
            let _ = match p {
                PackageChange::Added { name, version } => writeln!(s, "  + {name} {version}"),
                PackageChange::Removed { name, version } => writeln!(s, "  - {name} {version}"),
                PackageChange::Version { name, from, to } => {
                    writeln!(s, "  ~ {name} {from} -> {to}")
                }
            };
        }
        let (mut add, mut rem, mut chg) = (0, 0, 0);
        for f in &self.files {
            match f {
                FileChange::Added { .. } => add += 1,
                FileChange::Removed { .. } => rem += 1,
                FileChange::Changed { .. } => chg += 1,
            }
        }
        let _ = writeln!(s, "files: {add} added, {rem} removed, {chg} changed");
        for f in &self.files {
            let _ = match f {
                FileChange::Added { path, entry } => writeln!(
                    s,
                    "  + {path} ({} {}:{}, {} bytes)",
                    mode_s(entry.mode),
                    entry.uid,
                    entry.gid,
                    size_s(entry.size)
                ),
                FileChange::Removed { path } => writeln!(s, "  - {path}"),
                FileChange::Changed {
                    path,
                    content,
                    mode,
                    owner,
                } => {
                    let mut parts = Vec::new();
                    if let Some((x, y)) = content {
                        parts.push(format!("content ({} -> {} bytes)", size_s(*x), size_s(*y)));
                    }
                    if let Some((x, y)) = mode {
                        parts.push(format!("mode {} -> {}", mode_s(*x), mode_s(*y)));
                    }
                    if let Some(((u1, g1), (u2, g2))) = owner {
                        parts.push(format!("owner {u1}:{g1} -> {u2}:{g2}"));
                    }
                    writeln!(s, "  ~ {path}: {}", parts.join(", "))
                }
            };
        }
        for name in BOOT_FILES {
            match self.boot.iter().find(|d| d.file == name) {
                None => {
                    let _ = writeln!(s, "{name}: unchanged");
                }
                Some(d) => {
                    let _ = writeln!(s, "{name}:");
                    for (tag, line) in &d.lines {
                        let _ = writeln!(s, "  {tag} {line}");
                    }
                }
            }
        }
        for d in self
            .boot
            .iter()
            .filter(|d| !BOOT_FILES.contains(&d.file.as_str()))
        {
            let _ = writeln!(s, "{}:", d.file);
            for (tag, line) in &d.lines {
                let _ = writeln!(s, "  {tag} {line}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_are_read_and_others_refused() -> anyhow::Result<()> {
        let m = parse(
            r#"{"packages":{"a":"1"},"files":[{"path":"/x","mode":"0600","uid":0,"gid":0}],"inputs":{}}"#,
            Path::new("m.json"),
        )?;
        assert_eq!(m.packages.get("a").map(String::as_str), Some("1"));
        assert_eq!(files_of(&m).get("/x").and_then(|f| f.mode), Some(0o600));
        // The builder writes modes as octal strings; anything else is not its manifest.
        for bad in [r#""mode":"rw-r--r--""#, r#""mode":420"#] {
            let text = format!(r#"{{"files":[{{"path":"/x",{bad}}}]}}"#);
            assert!(parse(&text, Path::new("m.json")).is_err(), "{text}");
        }
        Ok(())
    }

    #[test]
    fn version_changes_and_removals() -> anyhow::Result<()> {
        let a = parse(
            r#"{"packages":{"a":"1","b":"2"},"files":[{"path":"/x","mode":"0644","uid":0,"gid":0,"sha256":"aa","size":1}]}"#,
            Path::new("a"),
        )?;
        let b = parse(r#"{"packages":{"a":"1.1"}}"#, Path::new("b"))?;
        let d = diff_manifests("a", &a, "b", &b);
        assert_eq!(
            d.packages,
            [
                PackageChange::Version {
                    name: "a".into(),
                    from: "1".into(),
                    to: "1.1".into()
                },
                PackageChange::Removed {
                    name: "b".into(),
                    version: "2".into()
                },
            ]
        );
        assert_eq!(d.files, [FileChange::Removed { path: "/x".into() }]);
        assert!(d.render().contains("  ~ a 1 -> 1.1\n"), "{}", d.render());
        Ok(())
    }

    #[test]
    fn manifest_beside_image() {
        assert_eq!(
            manifest_path(Path::new("/o/lab-worker.img.zst")),
            Path::new("/o/lab-worker.manifest.json")
        );
        assert_eq!(
            manifest_path(Path::new("/o/lab-worker.img")),
            Path::new("/o/lab-worker.manifest.json")
        );
    }
}
