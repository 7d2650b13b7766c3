//! The image: one layer (busybox and its `sh`, the entrypoint, an empty /www) and its
//! archive, tagged [`TAG`], for arm64 Linux.

use crate::busybox::{Contents, BINARY, COPYRIGHT, DEB};
use pibake_image::oci::{self, ImageToWrite, OciError, Platform, RuntimeConfig, Written};
use pibake_image::tar::{Rootfs, SourceDateEpoch};
use pibake_image::{Content, Entry, EntryPath, Layer};
use std::io::Write;

/// The tag `docker load` gives the image, and the lab's compose file names. `localhost/`
/// names no registry anyone runs: the pull the Swarm's task runner tries before it
/// starts a task fails at once (connection refused) instead of waiting on DNS in an
/// isolated lab, and nobody else's image can come under this name.
pub const TAG: &str = "localhost/pibake/web:1";

/// Where the entrypoint is in the image.
pub const ENTRYPOINT: &str = "entrypoint.sh";

/// The entrypoint script.
pub const ENTRYPOINT_SCRIPT: &str = include_str!("entrypoint.sh");

fn path(p: &str) -> Result<EntryPath, OciError> {
    EntryPath::new(p).map_err(|e| OciError::Bad {
        member: "layer".into(),
        what: e.to_string(),
    })
}

/// The layer's tar: `/usr/bin/busybox` with `sh` beside it, `/bin` → `usr/bin` (merged
/// /usr, so `#!/bin/sh` works), busybox's copyright file, `/entrypoint.sh`, `/www`.
pub fn layer(contents: &Contents) -> Result<Vec<u8>, OciError> {
    let entries = vec![
        Entry::file(
            path(BINARY)?,
            Content::bytes(contents.busybox.clone()),
            0o755,
        ),
        Entry::symlink(path("usr/bin/sh")?, "busybox"),
        Entry::symlink(path("bin")?, "usr/bin"),
        Entry::file(
            path(COPYRIGHT)?,
            Content::bytes(contents.copyright.clone()),
            0o644,
        ),
        Entry::file(path(ENTRYPOINT)?, Content::bytes(ENTRYPOINT_SCRIPT), 0o755),
        Entry::dir(path("www")?, 0o755),
    ];
    let mut tree = Rootfs::empty();
    tree.apply_layer(&Layer {
        name: "web".into(),
        entries,
    });
    let mut out = Vec::new();
    tree.write_tar(&mut out, SourceDateEpoch(contents.epoch))
        .map_err(OciError::Write)?;
    Ok(out)
}

/// The archive of the image, written to `out`.
pub fn write_archive<W: Write>(out: W, contents: &Contents) -> Result<Written, OciError> {
    let layers = [layer(contents)?];
    let tags = [TAG.to_owned()];
    let created_by = format!(
        "pibake-webimage: {} {} ({}, {}) and /{ENTRYPOINT}",
        DEB.name, DEB.version, DEB.suite, DEB.architecture
    );
    oci::write_archive(
        out,
        &ImageToWrite {
            platform: Platform {
                architecture: "arm64".into(),
                os: "linux".into(),
                variant: None,
            },
            runtime: RuntimeConfig {
                entrypoint: vec![format!("/{ENTRYPOINT}")],
                env: vec!["PATH=/usr/bin:/bin".into()],
                exposed_ports: vec!["80/tcp".into()],
                working_dir: "/".into(),
            },
            layers: &layers,
            tags: &tags,
            epoch: SourceDateEpoch(contents.epoch),
            created_by: &created_by,
        },
    )
}
