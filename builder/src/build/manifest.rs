//! The manifest stage: every entry of the finished tree, and the manifest written beside the
//! image (the one type, [`pibake_image::manifest::Manifest`], that `diff` and `flash` read).

use super::{image_err, io, BuildError};
use pibake_image::manifest::{Manifest, ManifestFile};
use pibake_image::tree::ContentSource;
use pibake_image::{EntryKind, EntryPath, Rootfs, Tree};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Every entry of `tree` (the root's, or the boot partition's split off it: then `under` is
/// its mount point, which its paths are relative to), its content read from `rootfs`.
pub(super) fn files(
    image: &str,
    tree: &Tree,
    under: Option<&EntryPath>,
    rootfs: &Rootfs,
) -> Result<Vec<ManifestFile>, BuildError> {
    let mut files = Vec::new();
    for entry in tree.iter() {
        let (kind, size, sha256, target) = match &entry.kind {
            EntryKind::File(content) => {
                let mut hasher = Sha256::new();
                let mut reader = rootfs.open(content).map_err(|e| {
                    image_err(image, format!("reading {}: {e}", entry.path.as_str()))
                })?;
                let size = std::io::copy(&mut reader, &mut hasher).map_err(|e| {
                    image_err(image, format!("reading {}: {e}", entry.path.as_str()))
                })?;
                (
                    "file",
                    Some(size),
                    Some(hex::encode(hasher.finalize())),
                    None,
                )
            }
            EntryKind::Dir => ("dir", None, None, None),
            EntryKind::Symlink(t) => ("symlink", None, None, Some(t.clone())),
            EntryKind::CharDevice { .. } => ("char", None, None, None),
            EntryKind::BlockDevice { .. } => ("block", None, None, None),
            EntryKind::Fifo => ("fifo", None, None, None),
            EntryKind::Delete => continue,
        };
        files.push(ManifestFile {
            path: match under {
                Some(dir) => format!("/{dir}/{}", entry.path.as_str()),
                None => format!("/{}", entry.path.as_str()),
            },
            kind: kind.to_string(),
            mode: ManifestFile::mode_text(entry.mode),
            uid: entry.uid,
            gid: entry.gid,
            size,
            sha256,
            target,
        });
    }
    Ok(files)
}

/// The root's entries and the boot partition's, in one list by path (as the whole tree
/// lists them).
pub(super) fn merged(root: &[ManifestFile], boot: Vec<ManifestFile>) -> Vec<ManifestFile> {
    let mut all: Vec<ManifestFile> = root.iter().cloned().chain(boot).collect();
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// Writes `manifest` to `path` (temp file and rename).
pub(super) fn write(path: &Path, manifest: &Manifest) -> Result<(), BuildError> {
    let json = manifest
        .to_json()
        .map_err(|e| image_err(&manifest.name, e.to_string()))?;
    pibake_image::atomic::write(path, &json).map_err(|e| io("cannot write", path)(e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pibake_image::{Content, Entry, EntryPath, Layer};

    fn path(p: &str) -> EntryPath {
        EntryPath::new(p).expect("valid path")
    }

    fn written(dir: &Path, name: &str, hostname: &str, version: &str) -> std::path::PathBuf {
        let mut rootfs = Rootfs::empty();
        rootfs.apply_layer(&Layer {
            name: "t".into(),
            entries: vec![
                Entry::dir(path("etc"), 0o755),
                Entry::file(
                    path("etc/hostname"),
                    Content::bytes(hostname.as_bytes().to_vec()),
                    0o600,
                ),
                Entry::symlink(path("etc/localtime"), "/usr/share/zoneinfo/UTC"),
            ],
        });
        let manifest = Manifest {
            format: pibake_image::manifest::MANIFEST_FORMAT,
            name: name.into(),
            nodes: Some(vec!["w1".into()]),
            packages: [("chrony".to_string(), version.to_string())].into(),
            boot: [("config.txt".to_string(), "arm_64bit=1\n".to_string())].into(),
            files: files(name, rootfs.tree(), None, &rootfs).expect("files"),
            ..Manifest::default()
        };
        let file = dir.join(format!("{name}.manifest.json"));
        write(&file, &manifest).expect("write");
        file
    }

    /// `pibake diff` reads what the build writes (one manifest type).
    #[test]
    fn diff_reads_a_builder_written_manifest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = written(dir.path(), "a", "w1\n", "4.6");
        let b = written(dir.path(), "b", "w2-longer\n", "4.7");
        let read = pibake_flash::diff::load(&a).expect("diff reads it");
        assert_eq!(read.files.len(), 3);
        assert_eq!(read.files[1].mode, "0600");
        let d = pibake_flash::diff::diff(&a, &b).expect("diff");
        assert_eq!(d.packages.len(), 1, "{}", d.render());
        assert_eq!(d.files.len(), 1, "{}", d.render());
        assert!(
            d.render()
                .contains("~ /etc/hostname: content (3 -> 10 bytes)"),
            "{}",
            d.render()
        );
        assert!(pibake_flash::diff::diff(&a, &a).expect("diff").is_empty());
    }
}
