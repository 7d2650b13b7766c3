//! `[swarm.images.<name>]`: container images preloaded for a lab without a
//! registry. Each archive is read (not trusted): a tar holding `manifest.json`
//! (`docker save`) or `index.json` (an OCI layout), whose image config names
//! one platform, whose Debian architecture is that of a role running Docker,
//! so that some image of the cluster carries it (the preload rule,
//! [`carries`]).

use super::swarm::io_reason;
use super::{p, Validator};
use crate::model::{carries, Node, PreloadImage, Role};
use pibake_image::oci::{self, ArchiveInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

impl Validator<'_> {
    pub(super) fn images(
        &mut self,
        nodes: &BTreeMap<String, Node>,
        roles: &BTreeMap<String, Role>,
    ) -> BTreeMap<String, PreloadImage> {
        let mut images = BTreeMap::new();
        for (name, raw) in &self.raw.swarm.images {
            if !self.swarm_label(
                "images",
                name,
                "it names the archive in the images (/var/lib/pibake/images/<name>.tar) and in pibake.lock",
            ) {
                continue;
            }
            let field = p(&["swarm", "images", name, "archive"]);
            let shown = raw.archive.as_str();
            if shown.trim().is_empty() {
                self.error(
                    field,
                    "no archive",
                    "name the image's archive, relative to the cluster file: archive = \"oci/web-arm64.tar\" (made by `docker save -o oci/web-arm64.tar <image>`)",
                );
                continue;
            }
            let path = self.base_dir().join(shown);
            let Some(info) = self.archive(&field, shown, &path) else {
                continue;
            };
            let Some((platform, arch)) = self.platform(&field, shown, &info) else {
                continue;
            };
            if !self.carried(&field, shown, &platform, arch, nodes, roles) {
                continue;
            }
            let tags = info.tags();
            if tags.is_empty() {
                self.warning(
                    field.clone(),
                    format!("the archive `{shown}` gives its image no tag"),
                    "tag the image before saving it (`docker tag <id> localhost/web:1`, then `docker save -o <archive> localhost/web:1`): a compose file names an image by its tag",
                );
            }
            images.insert(
                name.clone(),
                PreloadImage {
                    name: name.clone(),
                    archive: shown.to_owned(),
                    path,
                    arch: arch.to_owned(),
                    platform: platform.to_string(),
                    tags,
                },
            );
        }
        images
    }

    /// The archive's images, or an error saying why it is not an image archive.
    fn archive(
        &mut self,
        field: &crate::diag::FieldPath,
        shown: &str,
        path: &Path,
    ) -> Option<ArchiveInfo> {
        let opened = std::fs::metadata(path).and_then(|m| {
            if m.is_dir() {
                Err(std::io::ErrorKind::IsADirectory.into())
            } else {
                std::fs::File::open(path)
            }
        });
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                let help = self.relative_path_help();
                self.error(
                    field.clone(),
                    format!("cannot read the archive `{shown}`: {}", io_reason(&e)),
                    help,
                );
                return None;
            }
        };
        match oci::read_archive(std::io::BufReader::new(file)) {
            Ok(info) => Some(info),
            Err(e) => {
                self.error(
                    field.clone(),
                    format!("`{shown}` is not an image archive: {e}"),
                    "give the file `docker save -o <archive> <image>` writes (or `skopeo copy … docker-archive:<archive>`): a tar with manifest.json, or an OCI layout with index.json",
                );
                None
            }
        }
    }

    /// The one platform of the archive's images and its Debian architecture.
    fn platform(
        &mut self,
        field: &crate::diag::FieldPath,
        shown: &str,
        info: &ArchiveInfo,
    ) -> Option<(oci::Platform, &'static str)> {
        let platforms = info.platforms();
        if platforms.len() > 1 {
            let list: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            self.error(
                field.clone(),
                format!(
                    "the archive `{shown}` holds images of several platforms: {}",
                    list.join(", ")
                ),
                "save one platform per archive (`docker save --platform linux/arm64 …`) and name each in its own [swarm.images.<name>]",
            );
            return None;
        }
        let platform = (*platforms.first()?).clone();
        match platform.debian_arch() {
            Some(arch) => Some((platform, arch)),
            None => {
                self.error(
                    field.clone(),
                    format!("the archive `{shown}` holds a {platform} image, which no Debian architecture runs"),
                    "save the image for the architecture of the nodes that run it (linux/arm64 for Raspberry Pis, linux/amd64 for pc-efi)",
                );
                None
            }
        }
    }

    /// Whether some role's images carry an image of `arch`; else an error naming
    /// the architectures of the roles that run Docker.
    fn carried(
        &mut self,
        field: &crate::diag::FieldPath,
        shown: &str,
        platform: &oci::Platform,
        arch: &str,
        nodes: &BTreeMap<String, Node>,
        roles: &BTreeMap<String, Role>,
    ) -> bool {
        let role_arch = |role: &str| {
            nodes
                .values()
                .filter(|n| n.role == role)
                .find_map(|n| n.platform.arch())
        };
        if roles
            .iter()
            .any(|(name, role)| carries(&role.profile, role_arch(name), arch))
        {
            return true;
        }
        let docker: BTreeSet<String> = roles
            .iter()
            .filter(|(_, role)| role.profile.runs_docker())
            .filter_map(|(name, _)| Some(format!("{} ({name})", role_arch(name)?)))
            .collect();
        let (message, help) = if docker.is_empty() {
            (
                format!("no role runs Docker to load the archive `{shown}`"),
                "preloaded images are loaded by the Docker engine: give a role a profile with docker.io (the `worker` profile has it)".to_owned(),
            )
        } else {
            let list: Vec<String> = docker.into_iter().collect();
            (
                format!(
                    "no image of the cluster would carry the archive `{shown}`: its image is {platform} ({arch}), the roles that run Docker are {}",
                    list.join(", ")
                ),
                "save the image for the architecture of the nodes that run it (`docker save --platform linux/arm64 …` for Raspberry Pis, linux/amd64 for pc-efi)".to_owned(),
            )
        };
        self.error(field.clone(), message, help);
        false
    }
}
