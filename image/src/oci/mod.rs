//! OCI image archives as `docker save` of Docker 25 and later writes them: an OCI
//! image layout (`oci-layout`, `index.json`, `blobs/sha256/<hex>`) and, beside it,
//! Docker's own `manifest.json`, in one tar. `docker load -i` reads such a file
//! on a board that has no registry to pull from.
//!
//! [`write`] makes a single-platform image of uncompressed layers, deterministically
//! (the project's tar writer: sorted entries, SOURCE_DATE_EPOCH times, root-owned);
//! [`read`] finds what pibake checks and locks in any such archive (ours or
//! `docker save`'s): each image's platform, from its config, and its tags.

mod read;
mod write;

pub use read::{read_archive, read_member, ArchiveImage, ArchiveInfo, Layout};
pub use write::{write_archive, ImageToWrite, RuntimeConfig, Written};

use serde::{Deserialize, Serialize};

/// `mediaType` of an OCI image index (`index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// `mediaType` of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `mediaType` of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// `mediaType` of an uncompressed layer (what `docker save` writes).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker's manifest list, which `index.json` may point at instead of an OCI index.
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// The annotation of `index.json` that carries the full image name (containerd's, Docker's).
pub const IMAGE_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation of a reference's tag (`1` of `localhost/pibake/web:1`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An image's platform, as its config names it (Go's names: `arm64`, `amd64`, `arm`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    /// `v7` of `arm`, `v8` of `arm64`; most images leave it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The Debian architecture whose images run this platform's containers, if any:
    /// Go's `arm64` is Debian's `arm64`, `amd64` is `amd64`, `arm` v7 is `armhf`, …
    pub fn debian_arch(&self) -> Option<&'static str> {
        if self.os != "linux" {
            return None;
        }
        Some(
            match (self.architecture.as_str(), self.variant.as_deref()) {
                ("arm64", _) => "arm64",
                ("amd64", _) => "amd64",
                ("arm", Some("v7") | None) => "armhf",
                ("arm", Some("v6" | "v5")) => "armel",
                ("386", _) => "i386",
                ("ppc64le", _) => "ppc64el",
                ("s390x", _) => "s390x",
                ("riscv64", _) => "riscv64",
                _ => return None,
            },
        )
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor (`mediaType`, `digest`, `size`) of the OCI image spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The member of a blob in the layout: `blobs/sha256/<hex>` for `sha256:<hex>`.
pub fn blob_path(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("blobs/sha256/{hex}"))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// What is wrong with an archive, or why one could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("not a tar archive: {0}")]
    NotTar(#[source] std::io::Error),
    #[error("holds neither manifest.json (docker save) nor index.json (an OCI image layout)")]
    NoManifest,
    #[error("{member} is not what it should be: {what}")]
    Bad { member: String, what: String },
    #[error("{member} names {missing}, which the archive does not hold")]
    Missing { member: String, missing: String },
    #[error("{member} is larger than {limit} bytes: not an image's metadata")]
    TooLarge { member: String, limit: u64 },
    #[error("{member} does not have its digest {expected} (its sha256 is {actual})")]
    Digest {
        member: String,
        expected: String,
        actual: String,
    },
    #[error("holds no image")]
    Empty,
    #[error("cannot write the archive")]
    Write(#[source] crate::tar::TarError),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn go_architectures_are_debian_ones() {
        assert_eq!(platform("arm64", Some("v8")).debian_arch(), Some("arm64"));
        assert_eq!(platform("amd64", None).debian_arch(), Some("amd64"));
        assert_eq!(platform("arm", Some("v7")).debian_arch(), Some("armhf"));
        assert_eq!(platform("arm", Some("v6")).debian_arch(), Some("armel"));
        assert_eq!(platform("ppc64le", None).debian_arch(), Some("ppc64el"));
        assert_eq!(platform("mips64le", None).debian_arch(), None);
        let windows = Platform {
            os: "windows".into(),
            ..platform("amd64", None)
        };
        assert_eq!(windows.debian_arch(), None);
        assert_eq!(platform("arm", Some("v7")).to_string(), "linux/arm/v7");
    }

    #[test]
    fn blobs_live_under_their_digest() {
        let d = digest_of(b"x");
        assert_eq!(blob_path(&d), Some(format!("blobs/sha256/{}", &d[7..])));
        assert_eq!(blob_path("sha512:ab"), None);
        assert_eq!(blob_path("sha256:../../etc/passwd"), None);
    }
}
