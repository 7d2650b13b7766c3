//! `[roles]` and the profiles they name (`profiles/<name>.toml`, with the
//! profiles they include).

use super::{p, parse_file, platform_help, shown, Validator};
use crate::diag::{Diagnostic, SourceFile};
use crate::model::raw::RawProfile;
use crate::model::{Platform, Profile, Role, CONFIG_TXT_MAX_LINE, FORMAT};
use pibake_firstboot::hostname;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

impl Validator<'_> {
    /// Loads every profile any role names (and what they include).
    pub(super) fn profiles(&mut self) -> BTreeMap<String, Profile> {
        let mut out = BTreeMap::new();
        let names: BTreeSet<String> = self.raw.roles.values().map(|r| r.profile.clone()).collect();
        for name in names {
            if let Some(profile) = self.profile(&name) {
                out.insert(name, profile);
            }
        }
        out
    }

    fn read_profile(&mut self, name: &str) -> Option<(PathBuf, RawProfile)> {
        if let Some(cached) = self.profile_cache.get(name) {
            return cached.clone();
        }
        let result = self.read_profile_uncached(name);
        self.profile_cache.insert(name.to_string(), result.clone());
        result
    }

    fn read_profile_uncached(&mut self, name: &str) -> Option<(PathBuf, RawProfile)> {
        if !hostname::is_dns_label(name) {
            return None;
        }
        let path = self.profiles_dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).ok()?;
        let file = SourceFile::new(path.clone(), text);
        let raw: Option<RawProfile> = parse_file(&file, self.diagnostics);
        self.profile_files.push(file);
        let raw = raw?;
        if raw.format != FORMAT {
            self.diagnostics.push(
                Diagnostic::error(
                    &path,
                    p(&["format"]),
                    format!("format {} is not known", raw.format),
                )
                .help(format!("write `format = {FORMAT}`")),
            );
        }
        Some((path, raw))
    }

    /// A profile: its includes' lists first, then its own.
    fn profile(&mut self, name: &str) -> Option<Profile> {
        let (path, raw) = self.read_profile(name)?;
        let mut profile = Profile {
            name: name.to_string(),
            file: path.clone(),
            description: raw.description.clone(),
            platforms: Vec::new(),
            packages: BTreeSet::new(),
            overlays: Vec::new(),
            services: BTreeSet::new(),
            config_txt: Vec::new(),
            own_rootfs: raw.own_rootfs,
            sources: Vec::new(),
        };
        for (i, include) in raw.include.iter().enumerate() {
            self.include(&mut profile, &path, i, include);
        }
        self.merge_profile(&mut profile, &path, &raw);
        profile.sources.sort_by(|a, b| a.name.cmp(&b.name));
        Some(profile)
    }

    /// Merges `include` (entry `index` of the `include` list of the profile
    /// at `path`) into `profile`.
    fn include(&mut self, profile: &mut Profile, path: &Path, index: usize, include: &str) {
        let Some((inc_path, inc)) = self.read_profile(include) else {
            self.diagnostics.push(
                Diagnostic::error(
                    path,
                    p(&["include", &index.to_string()]),
                    format!("profile `{include}` does not exist"),
                )
                .help(format!(
                    "add {}/{include}.toml or remove it from `include`",
                    shown(self.profiles_dir)
                )),
            );
            return;
        };
        if !inc.include.is_empty() {
            self.diagnostics.push(
                Diagnostic::error(
                    &inc_path,
                    p(&["include"]),
                    "an included profile cannot include others",
                )
                .help("list its includes in the including profile instead"),
            );
        }
        self.merge_profile(profile, &inc_path, &inc);
    }

    fn merge_profile(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        self.merge_platforms(profile, path, raw);
        self.merge_packages(profile, path, raw);
        self.merge_overlays(profile, path, raw);
        profile.services.extend(raw.services.iter().cloned());
        self.merge_config_txt(profile, path, raw);
        for (i, raw_source) in raw.sources.iter().enumerate() {
            let source = self.source(path, i, raw_source);
            if !profile.sources.iter().any(|s| s.name == source.name) {
                profile.sources.push(source);
            }
        }
    }

    fn merge_platforms(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        for (i, platform) in raw.platforms.iter().enumerate() {
            match Platform::parse(platform) {
                Some(pl) if !profile.platforms.contains(&pl) => profile.platforms.push(pl),
                Some(_) => {}
                None => self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["platforms", &i.to_string()]),
                        format!("unknown platform `{platform}`"),
                    )
                    .help(platform_help()),
                ),
            }
        }
    }

    fn merge_packages(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        for (i, package) in raw.packages.iter().enumerate() {
            if !pibake_inputs::resolve::valid_package_name(package) {
                self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["packages", &i.to_string()]),
                        format!("`{package}` is not a Debian package name"),
                    )
                    .help("use lower-case letters, digits, `+`, `-` and `.`"),
                );
            }
            profile.packages.insert(package.clone());
        }
    }

    fn merge_overlays(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        for (i, overlay) in raw.overlays.iter().enumerate() {
            if !self.overlays_dir.join(overlay).is_dir() {
                self.diagnostics.push(
                    Diagnostic::error(
                        path,
                        p(&["overlays", &i.to_string()]),
                        format!("overlay `{overlay}` does not exist"),
                    )
                    .help(format!(
                        "create {}/{overlay}/ or remove it",
                        shown(self.overlays_dir)
                    )),
                );
            }
            if !profile.overlays.contains(overlay) {
                profile.overlays.push(overlay.clone());
            }
        }
    }

    fn merge_config_txt(&mut self, profile: &mut Profile, path: &Path, raw: &RawProfile) {
        for (i, line) in raw.config_txt.iter().enumerate() {
            if line.chars().count() > CONFIG_TXT_MAX_LINE {
                self.diagnostics.push(
                    Diagnostic::error(path, p(&["config_txt", &i.to_string()]), format!(
                        "config.txt line is {} characters; the firmware silently cuts lines after {CONFIG_TXT_MAX_LINE}",
                        line.chars().count()
                    ))
                    .help("split it into several lines (e.g. one dtparam= per line)"),
                );
            }
            profile.config_txt.push(line.clone());
        }
    }

    pub(super) fn roles(&mut self, profiles: &BTreeMap<String, Profile>) -> BTreeMap<String, Role> {
        let mut roles = BTreeMap::new();
        for (name, role) in &self.raw.roles {
            if !hostname::is_dns_label(name) {
                self.error(
                    p(&["roles", name]),
                    format!("role name `{name}` is not a valid label"),
                    format!("use e.g. `{}`", hostname::suggest(name)),
                );
            }
            match profiles.get(&role.profile) {
                Some(profile) => {
                    roles.insert(
                        name.clone(),
                        Role {
                            name: name.clone(),
                            profile: profile.clone(),
                        },
                    );
                }
                None => self.missing_profile(name, &role.profile),
            }
        }
        roles
    }

    /// Role `role` names `profile`, which did not load.
    fn missing_profile(&mut self, role: &str, profile: &str) {
        // A profile that exists but failed to parse is already reported.
        let file = self.profiles_dir.join(format!("{profile}.toml"));
        if self
            .diagnostics
            .iter()
            .any(|d| d.file == file && d.is_error())
        {
            return;
        }
        let known = list_profiles(self.profiles_dir);
        self.error(
            p(&["roles", role, "profile"]),
            format!("profile `{profile}` does not exist"),
            format!(
                "profiles in {}: {}",
                shown(self.profiles_dir),
                known.join(", ")
            ),
        );
    }
}

fn list_profiles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".toml").map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
