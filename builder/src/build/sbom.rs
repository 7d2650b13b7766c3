//! The SBOM written beside each image (`<name>.spdx.json`): an SPDX 2.3 JSON document with
//! one package for the image (its sha256, the element the document describes) and one per
//! Debian package of its architecture's closure in the lock (name, version, the .deb's
//! sha256, a purl, the license its DEP-5 copyright file declares), the image CONTAINS each.
//!
//! Deterministic like the image: no randomness, no wall clock. The namespace is derived from
//! the image's sha256, `created` is the image's SOURCE_DATE_EPOCH, the packages and
//! relationships are sorted and the fields written in one fixed order (typed structs). No
//! download location is written (NOASSERTION): the lock names sources, never mirrors.
//!
//! It lives in the builder, not in pibake-image beside the manifest: it is written here only
//! (nothing reads it back), and it needs the lock's packages (pibake-inputs), which
//! pibake-image does not depend on.

use pibake_image::tree::ContentSource;
use pibake_image::{EntryKind, EntryPath, Rootfs, Tree};
use pibake_inputs::LockedPackage;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;

/// The SPDX version of the documents written.
pub const SPDX_VERSION: &str = "SPDX-2.3";

const NOASSERTION: &str = "NOASSERTION";
const DOCUMENT_ID: &str = "SPDXRef-DOCUMENT";
const IMAGE_ID: &str = "SPDXRef-Image";
/// The namespace's base: `.invalid` (RFC 2606) never resolves, the document names no host.
const NAMESPACE_BASE: &str = "https://pibake.invalid/spdx";
/// A copyright file bigger than this is read only this far (the `Files: *` stanza is first).
const COPYRIGHT_READ_LIMIT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    #[error("the image's sha256 `{0}` is not 64 lower-case hex digits")]
    ImageSha256(String),
    #[error("SOURCE_DATE_EPOCH {0} is past the year 9999")]
    Epoch(u64),
    #[error("packages {first} and {second} get the same SPDX id {id}")]
    DuplicateId {
        id: String,
        first: String,
        second: String,
    },
    #[error("serializing the SBOM")]
    Json(#[from] serde_json::Error),
}

/// Everything one image's SBOM says.
#[derive(Debug, Clone, Copy)]
pub struct Sbom<'a> {
    /// The image's name (`lab-worker`); its file is `<name>.img`.
    pub image: &'a str,
    /// Hex sha256 of the `.img`.
    pub image_sha256: &'a str,
    pub source_date_epoch: u64,
    /// pibake's version, for the creator `Tool: pibake-<version>`.
    pub tool_version: &'a str,
    /// The closure of the image's architecture.
    pub packages: &'a [LockedPackage],
    /// Package name → the SPDX expression it declares (see [`declared_licenses`]); the
    /// others are NOASSERTION.
    pub licenses: &'a BTreeMap<String, String>,
    /// The lock's sources that are Debian's archive (the host's mirror and its suites): their
    /// packages' supplier is `Organization: Debian`, the others' NOASSERTION.
    pub debian_origins: &'a BTreeSet<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    package_file_name: String,
    supplier: String,
    download_location: &'static str,
    files_analyzed: bool,
    checksums: Vec<Checksum>,
    license_concluded: &'static str,
    license_declared: String,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary_package_purpose: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

impl Sbom<'_> {
    /// The document as pretty JSON (what `build` writes as `<name>.spdx.json`).
    pub fn to_json(&self) -> Result<Vec<u8>, SbomError> {
        let sha = self.image_sha256;
        if sha.len() != 64
            || !sha
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(SbomError::ImageSha256(sha.to_string()));
        }
        let mut packages = vec![Package {
            spdx_id: IMAGE_ID.to_string(),
            name: self.image.to_string(),
            version_info: None,
            package_file_name: format!("{}.img", self.image),
            supplier: NOASSERTION.to_string(),
            download_location: NOASSERTION,
            files_analyzed: false,
            checksums: vec![sha256(sha.to_string())],
            license_concluded: NOASSERTION,
            license_declared: NOASSERTION.to_string(),
            copyright_text: NOASSERTION,
            source_info: None,
            primary_package_purpose: Some("OPERATING_SYSTEM"),
            external_refs: Vec::new(),
            comment: format!(
                "The disk image {}.img built by pibake from the Debian packages it contains.",
                self.image
            ),
        }];
        let mut relationships = vec![Relationship {
            spdx_element_id: DOCUMENT_ID.to_string(),
            relationship_type: "DESCRIBES",
            related_spdx_element: IMAGE_ID.to_string(),
        }];
        let mut debs: Vec<&LockedPackage> = self.packages.iter().collect();
        debs.sort_by(|a, b| {
            (&a.name, &a.architecture, &a.version).cmp(&(&b.name, &b.architecture, &b.version))
        });
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for p in debs {
            let id = package_id(p);
            let label = format!("{} {} ({})", p.name, p.version, p.architecture);
            if let Some(first) = ids.insert(id.clone(), label.clone()) {
                return Err(SbomError::DuplicateId {
                    id,
                    first,
                    second: label,
                });
            }
            let debian = self.debian_origins.contains(&p.origin);
            packages.push(Package {
                spdx_id: id.clone(),
                name: p.name.clone(),
                version_info: Some(p.version.clone()),
                package_file_name: p
                    .filename
                    .rsplit('/')
                    .next()
                    .unwrap_or(&p.filename)
                    .to_string(),
                supplier: if debian {
                    "Organization: Debian".to_string()
                } else {
                    NOASSERTION.to_string()
                },
                download_location: NOASSERTION,
                files_analyzed: false,
                checksums: vec![sha256(p.sha256.to_hex())],
                license_concluded: NOASSERTION,
                license_declared: self
                    .licenses
                    .get(&p.name)
                    .cloned()
                    .unwrap_or_else(|| NOASSERTION.to_string()),
                copyright_text: NOASSERTION,
                source_info: Some(format!(
                    "built from the {}source package {}",
                    if debian { "Debian " } else { "" },
                    p.source
                )),
                primary_package_purpose: None,
                external_refs: vec![ExternalRef {
                    reference_category: "PACKAGE-MANAGER",
                    reference_type: "purl",
                    reference_locator: purl(&p.name, &p.version, &p.architecture),
                }],
                comment: format!("From the apt source `{}` of the lock.", p.origin),
            });
            relationships.push(Relationship {
                spdx_element_id: IMAGE_ID.to_string(),
                relationship_type: "CONTAINS",
                related_spdx_element: id,
            });
        }
        relationships[1..].sort();
        let document = Document {
            spdx_version: SPDX_VERSION,
            data_license: "CC0-1.0",
            spdx_id: DOCUMENT_ID,
            name: self.image.to_string(),
            document_namespace: format!("{NAMESPACE_BASE}/{}-{sha}", self.image),
            creation_info: CreationInfo {
                created: rfc3339_utc(self.source_date_epoch)?,
                creators: vec![format!("Tool: pibake-{}", self.tool_version)],
            },
            packages,
            relationships,
        };
        let mut json = serde_json::to_vec_pretty(&document)?;
        json.push(b'\n');
        Ok(json)
    }
}

fn sha256(hex: String) -> Checksum {
    Checksum {
        algorithm: "SHA256",
        checksum_value: hex,
    }
}

/// `SPDXRef-deb-<name>-<arch>`: an SPDX id allows only letters, digits, `.` and `-`, so any
/// other byte (the `+` of `libstdc++6`) and the upper-case letters are written `X` and two
/// hex digits (`libstdcX2BX2B6`), which keeps different names apart.
fn package_id(p: &LockedPackage) -> String {
    fn escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("X{b:02X}"));
            }
        }
        out
    }
    format!(
        "SPDXRef-deb-{}-{}",
        escape(&p.name),
        escape(&p.architecture)
    )
}

/// The package URL of a Debian package: `pkg:deb/debian/<name>@<version>?arch=<arch>`.
pub fn purl(name: &str, version: &str, arch: &str) -> String {
    format!(
        "pkg:deb/debian/{}@{}?arch={}",
        purl_encode(&name.to_lowercase()),
        purl_encode(version),
        purl_encode(arch)
    )
}

/// Percent-encoding of a purl component (the purl specification's "Character encoding"): the
/// alphanumerics, `.-_~` and the colon stay, every other byte of the UTF-8 is `%XX`. So an
/// epoch's colon stays (`1:2.4.47-2`, as the specification's deb examples write it) and a
/// `+` becomes `%2B`.
pub fn purl_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYY-MM-DDThh:mm:ssZ` of a Unix time.
fn rfc3339_utc(epoch: u64) -> Result<String, SbomError> {
    pibake_host::civil::rfc3339_utc(epoch).ok_or(SbomError::Epoch(epoch))
}

/// Package name → the license its `/usr/share/doc/<name>/copyright` declares: the `License:`
/// of the `Files: *` stanza of a DEP-5 (machine-readable) file, when that is a valid SPDX
/// expression ([`spdx_expression`]). Packages without one are left out (NOASSERTION).
/// Symbolic links are followed (a library's doc directory is often a link to its
/// `-common` package's).
pub fn declared_licenses(
    rootfs: &Rootfs,
    packages: &[LockedPackage],
) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in packages {
        if out.contains_key(&p.name) {
            continue;
        }
        let path = format!("usr/share/doc/{}/copyright", p.name);
        let Some(content) = resolve(rootfs.tree(), &path) else {
            continue;
        };
        let mut bytes = Vec::new();
        rootfs
            .open(content)?
            .take(COPYRIGHT_READ_LIMIT)
            .read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        if let Some(expr) = dep5_license(&text).and_then(spdx_expression) {
            out.insert(p.name.clone(), expr);
        }
    }
    Ok(out)
}

/// The content of the regular file at `path`, following symbolic links (at most 40, like the
/// kernel) in every component; a directory the tar does not list is taken as there.
fn resolve<'t>(tree: &'t Tree, path: &str) -> Option<&'t pibake_image::Content> {
    let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(component) = pending.pop_front() {
        match component.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => done.push(component),
        }
        let entry = EntryPath::new(&done.join("/"))
            .ok()
            .and_then(|p| tree.get(&p));
        match entry.map(|e| &e.kind) {
            None | Some(EntryKind::Dir) if !pending.is_empty() => {}
            Some(EntryKind::Symlink(target)) => {
                links += 1;
                if links > 40 {
                    return None;
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                let mut next: VecDeque<String> = target.split('/').map(str::to_string).collect();
                next.extend(pending);
                pending = next;
            }
            Some(EntryKind::File(content)) if pending.is_empty() => return Some(content),
            _ => return None,
        }
    }
    None
}

/// The first line of the `License:` field of the `Files: *` stanza of a DEP-5 copyright
/// file (one whose first paragraph has a `Format:` field); `None` for any other file.
pub fn dep5_license(text: &str) -> Option<&str> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(std::mem::take(&mut current));
            }
        } else if !line.starts_with('#') {
            current.push(line);
        }
    }
    if !current.is_empty() {
        paragraphs.push(current);
    }
    let mut paragraphs = paragraphs.into_iter();
    field(&paragraphs.next()?, "format")?;
    for paragraph in paragraphs {
        let Some((first, continued)) = field(&paragraph, "files") else {
            continue;
        };
        let mut files = first
            .split_whitespace()
            .chain(continued.iter().flat_map(|l| l.split_whitespace()));
        if files.any(|f| f == "*") {
            let (synopsis, _) = field(&paragraph, "license")?;
            return (!synopsis.is_empty()).then_some(synopsis);
        }
    }
    None
}

/// A deb822 field of a paragraph, its name matched case-insensitively: the value on the
/// field's own line (trimmed) and its continuation lines.
fn field<'a>(paragraph: &[&'a str], name: &str) -> Option<(&'a str, Vec<&'a str>)> {
    let at = paragraph.iter().position(|line| {
        !line.starts_with([' ', '\t'])
            && line
                .split_once(':')
                .is_some_and(|(key, _)| key.trim().eq_ignore_ascii_case(name))
    })?;
    let (_, value) = paragraph[at].split_once(':')?;
    let continued = paragraph[at + 1..]
        .iter()
        .take_while(|l| l.starts_with([' ', '\t']))
        .copied()
        .collect();
    Some((value.trim(), continued))
}

/// `text` as a valid SPDX license expression in its canonical form, or `None`. As SPDX 2.3
/// Annex D says, the operators `AND`, `OR` and `WITH` are matched case-sensitively (the
/// DEP-5 `or` of `GPL-2+ or Artistic` is not one) and the identifiers case-insensitively
/// (`BSD-3-clause` is `BSD-3-Clause`). Only identifiers of the SPDX license list that are not
/// deprecated are taken: a `LicenseRef-` would need its text in the document, and DEP-5's
/// own names (`GPL-2+`, `Expat`, `public-domain`) are none.
pub fn spdx_expression(text: &str) -> Option<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_whitespace() || c == '(' || c == ')' {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        } else {
            word.push(c);
        }
    }
    let mut canonical: Vec<String> = Vec::with_capacity(tokens.len());
    let mut after_with = false;
    for token in tokens {
        let next = match token.as_str() {
            "(" | ")" | "AND" | "OR" | "WITH" => token.clone(),
            exception if after_with => spdx::identifiers::EXCEPTIONS
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(exception))
                .filter(|e| e.flags & spdx::flags::IS_DEPRECATED == 0)?
                .name
                .to_string(),
            license => {
                let (id, plus) = match license.strip_suffix('+') {
                    Some(id) => (id, "+"),
                    None => (license, ""),
                };
                let found = spdx::identifiers::LICENSES
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(id))
                    .filter(|l| l.flags & spdx::flags::IS_DEPRECATED == 0)?;
                format!("{}{plus}", found.name)
            }
        };
        after_with = token == "WITH";
        canonical.push(next);
    }
    let mut out = String::new();
    for (i, token) in canonical.iter().enumerate() {
        if i > 0 && token != ")" && canonical[i - 1] != "(" {
            out.push(' ');
        }
        out.push_str(token);
    }
    let parsed = spdx::Expression::parse_mode(&out, spdx::ParseMode::STRICT).ok()?;
    let only_listed = parsed
        .requirements()
        .all(|r| matches!(r.req.license, spdx::LicenseItem::Spdx { .. }));
    only_listed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pibake_image::{Content, Entry, Layer};

    fn deb(name: &str, version: &str, arch: &str) -> LockedPackage {
        LockedPackage {
            name: name.into(),
            version: version.into(),
            architecture: arch.into(),
            filename: format!("pool/main/x/{name}/{name}_{version}_{arch}.deb"),
            size: 1,
            sha256: pibake_inputs::Sha256::of(name.as_bytes()),
            source: name.into(),
            origin: "debian".into(),
        }
    }

    /// Cases of the purl specification's deb type tests, and a name with `+`.
    #[test]
    fn purls_are_encoded_as_the_specification_writes_them() {
        assert_eq!(
            purl("curl", "7.50.3-1", "i386"),
            "pkg:deb/debian/curl@7.50.3-1?arch=i386"
        );
        assert_eq!(
            purl("attr", "1:2.4.47-2", "source"),
            "pkg:deb/debian/attr@1:2.4.47-2?arch=source"
        );
        assert_eq!(
            purl("attr", "1:2.4.47-2+b1", "amd64"),
            "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64"
        );
        assert_eq!(
            purl("libstdc++6", "14.2.0-19~bpo12+1", "arm64"),
            "pkg:deb/debian/libstdc%2B%2B6@14.2.0-19~bpo12%2B1?arch=arm64"
        );
        assert_eq!(purl_encode("a b/c@d?e#f%"), "a%20b%2Fc%40d%3Fe%23f%25");
        assert_eq!(purl_encode("é"), "%C3%A9");
    }

    #[test]
    fn ids_keep_apart_names_an_spdx_id_cannot_spell() {
        let a = package_id(&deb("libstdc++6", "1", "arm64"));
        assert_eq!(a, "SPDXRef-deb-libstdcX2BX2B6-arm64");
        assert_ne!(a, package_id(&deb("libstdc--6", "1", "arm64")));
        assert_ne!(a, package_id(&deb("libstdcX2BX2B6", "1", "arm64")));
        let (name, arch) = ("g++", "all");
        let doc = Sbom {
            image: "x",
            image_sha256: &"0".repeat(64),
            source_date_epoch: 0,
            tool_version: "0",
            packages: &[deb(name, "1", arch), deb(name, "2", arch)],
            licenses: &BTreeMap::new(),
            debian_origins: &BTreeSet::new(),
        };
        let err = doc.to_json().expect_err("two versions of one package");
        assert!(err.to_string().contains("SPDXRef-deb-gX2BX2B-all"), "{err}");
    }

    #[test]
    fn created_is_the_epoch_in_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0).expect("date"), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_utc(1_796_005_301).expect("date"),
            "2026-11-30T02:21:41Z"
        );
        assert!(rfc3339_utc(u64::MAX).is_err());
    }

    #[test]
    fn renders_are_identical_and_sorted() {
        let packages = [
            deb("zlib1g", "1:1.3", "arm64"),
            deb("adduser", "3.152", "all"),
        ];
        let licenses = BTreeMap::from([("zlib1g".to_string(), "Zlib".to_string())]);
        let origins = BTreeSet::from(["debian".to_string()]);
        let sha = "ab".repeat(32);
        let doc = Sbom {
            image: "lab-worker",
            image_sha256: &sha,
            source_date_epoch: 1_700_000_000,
            tool_version: "1.2.3",
            packages: &packages,
            licenses: &licenses,
            debian_origins: &origins,
        };
        let one = doc.to_json().expect("render");
        assert_eq!(one, doc.to_json().expect("render again"));
        let mut reversed = packages.clone();
        reversed.reverse();
        let other = Sbom {
            packages: &reversed,
            ..doc
        };
        assert_eq!(one, other.to_json().expect("render"), "order of the lock");
        let v: serde_json::Value = serde_json::from_slice(&one).expect("json");
        assert_eq!(
            v["documentNamespace"],
            format!("https://pibake.invalid/spdx/lab-worker-{sha}")
        );
        assert_eq!(v["creationInfo"]["creators"][0], "Tool: pibake-1.2.3");
        let names: Vec<&str> = v["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| p["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["lab-worker", "adduser", "zlib1g"]);
        assert_eq!(v["packages"][2]["licenseDeclared"], "Zlib");
        assert_eq!(v["packages"][1]["licenseDeclared"], "NOASSERTION");
        assert_eq!(
            v["packages"][2]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/zlib1g@1:1.3?arch=arm64"
        );
        assert!(Sbom {
            image_sha256: "AB",
            ..doc
        }
        .to_json()
        .is_err());
    }

    #[test]
    fn spdx_expressions_are_taken_only_when_valid() {
        let ok = |t: &str, want: &str| assert_eq!(spdx_expression(t).as_deref(), Some(want), "{t}");
        ok("Apache-2.0", "Apache-2.0");
        ok("BSD-3-clause", "BSD-3-Clause");
        ok("GPL-2.0-or-later", "GPL-2.0-or-later");
        ok(
            "(MIT OR Apache-2.0) AND Zlib",
            "(MIT OR Apache-2.0) AND Zlib",
        );
        ok("( MIT  OR  0bsd )", "(MIT OR 0BSD)");
        ok(
            "GPL-2.0-only WITH linux-syscall-note",
            "GPL-2.0-only WITH Linux-syscall-note",
        );
        ok("Apache-2.0+", "Apache-2.0+");
        for bad in [
            "GPL-2+",
            "GPL-2.0+",
            "LGPL-2.1",
            "Expat",
            "public-domain",
            "MIT or Apache-2.0",
            "MIT OR",
            "LicenseRef-foo",
            "MIT WITH Apache-2.0",
            "",
        ] {
            assert_eq!(spdx_expression(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_license_of_the_files_star_stanza_of_dep5() {
        let dep5 = "Format: https://example.org/copyright-format/1.0/\n\
                    Upstream-Name: zlib\n\
                    \n\
                    Files: *\n\
                    Copyright: 1995-2024 Jean-loup Gailly and Mark Adler\n\
                    License: Zlib\n\
                    \x20This software is provided 'as-is', ...\n\
                    \n\
                    Files: debian/*\n\
                    License: GPL-2+\n";
        assert_eq!(dep5_license(dep5), Some("Zlib"));
        let later =
            "Format: x\n\nFiles: debian/*\nLicense: GPL-2+\n\nFiles: src/*\n  *\nLicense: MIT\r\n";
        assert_eq!(dep5_license(later), Some("MIT"), "continued Files, CRLF");
        assert_eq!(
            dep5_license("This is zlib, free software.\n\nFiles: *\nLicense: Zlib\n"),
            None
        );
        assert_eq!(dep5_license("Format: x\n\nFiles: *\nCopyright: me\n"), None);
    }

    fn path(p: &str) -> EntryPath {
        EntryPath::new(p).expect("path")
    }

    #[test]
    fn licenses_are_read_from_the_tree_through_links() {
        let copyright = |license: &str| {
            Content::bytes(format!(
                "Format: x\n\nFiles: *\nCopyright: y\nLicense: {license}\n"
            ))
        };
        let mut rootfs = Rootfs::empty();
        rootfs.apply_layer(&Layer {
            name: "docs".into(),
            entries: vec![
                Entry::file(
                    path("usr/share/doc/zlib1g/copyright"),
                    copyright("Zlib"),
                    0o644,
                ),
                Entry::file(
                    path("usr/share/doc/curl/copyright"),
                    copyright("curl"),
                    0o644,
                ),
                Entry::file(
                    path("usr/share/doc/perl/copyright"),
                    copyright("GPL-1+ or Artistic"),
                    0o644,
                ),
                Entry::file(
                    path("usr/share/doc/old/copyright"),
                    Content::bytes("not DEP-5\n"),
                    0o644,
                ),
                Entry::symlink(path("usr/share/doc/libcurl4"), "curl"),
                Entry::symlink(path("usr/share/doc/zlib1g-dev"), "/usr/share/doc/zlib1g"),
                Entry::dir(path("usr/share/doc/loop"), 0o755),
                Entry::symlink(path("usr/share/doc/loop/copyright"), "../loop/copyright"),
            ],
        });
        let packages: Vec<LockedPackage> = [
            "zlib1g",
            "zlib1g-dev",
            "curl",
            "libcurl4",
            "perl",
            "old",
            "loop",
            "absent",
        ]
        .iter()
        .map(|n| deb(n, "1", "arm64"))
        .collect();
        let got = declared_licenses(&rootfs, &packages).expect("read");
        let want: BTreeMap<String, String> = [
            ("curl", "curl"),
            ("libcurl4", "curl"),
            ("zlib1g", "Zlib"),
            ("zlib1g-dev", "Zlib"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }
}
