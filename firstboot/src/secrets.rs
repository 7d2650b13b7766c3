//! Secrets delivered on the boot partition at flash time: moved to a
//! root-only file, then wiped from the FAT partition.

use crate::atomic::{remove_durable, wipe, write_atomic, WriteError};
use crate::bootfiles::{self, FindError, SECRETS_FILE};
use crate::root::Root;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;

/// Where the agent keeps them (root, 0600).
pub const SECRETS_PATH: &str = "etc/pibake/secrets";

/// Key of the Swarm worker join token.
pub const WORKER_TOKEN: &str = "swarm_worker_token";
/// Key of the Swarm manager join token.
pub const MANAGER_TOKEN: &str = "swarm_manager_token";

/// The secrets: a flat TOML table of strings. `Debug` shows keys only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(BTreeMap<String, String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl Secrets {
    /// Parses the secrets file. Errors never quote the text (it is secret).
    pub fn parse(text: &str) -> Result<Self, SecretsError> {
        toml::from_str::<BTreeMap<String, String>>(text)
            .map(Secrets)
            .map_err(|e| SecretsError::Parse {
                byte: e.span().map(|s| s.start),
            })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Fills a node file rendered at build time with secrets known only on
    /// the board. `@secret(NAME)@` is replaced by the secret's value; a line
    /// starting with `@if-secret(NAME)@` is kept (marker removed) only when
    /// that secret exists, so optional blocks (Wi-Fi PSK, keepalived
    /// authentication) disappear without it; a line naming a missing secret
    /// in `@secret(..)@` is dropped.
    pub fn fill(&self, content: &str) -> String {
        let mut out = String::with_capacity(content.len());
        for line in content.split_inclusive('\n') {
            let mut line = line;
            if let Some(rest) = line.strip_prefix("@if-secret(") {
                let Some((name, rest)) = rest.split_once(")@") else {
                    continue;
                };
                if self.get(name).is_none() {
                    continue;
                }
                line = rest;
            }
            match self.substitute(line) {
                Some(filled) => out.push_str(&filled),
                None => continue,
            }
        }
        out
    }

    fn substitute(&self, line: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = line;
        while let Some(start) = rest.find("@secret(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "@secret(".len()..];
            let (name, tail) = after.split_once(")@")?;
            out.push_str(self.get(name)?);
            rest = tail;
        }
        out.push_str(rest);
        Some(out)
    }

    /// Whether a text refers to any secret (such files are written 0600).
    pub fn refers_to_secrets(content: &str) -> bool {
        content.contains("@secret(") || content.contains("@if-secret(")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secrets file is not a TOML table of strings (near byte {byte:?})")]
    Parse { byte: Option<usize> },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Find(#[from] FindError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// What ingestion did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// No secrets on the boot partition.
    NothingThere,
    /// Moved to the root-only file, FAT copy wiped.
    Moved,
    /// Only a zeroed leftover of an interrupted wipe was there: deleted.
    LeftoverRemoved,
}

/// Moves the boot partition's secrets ([`SECRETS_FILE`], where the flasher
/// puts them; found by [`bootfiles::find`] in /boot/firmware or /boot/efi)
/// into the root-only file and wipes the FAT copy. The root copy is durable before the wipe starts, and a zeroed
/// leftover (crash during the wipe) is never taken for secrets.
pub fn ingest(root: &Root) -> Result<Ingested, SecretsError> {
    let Some(found) = bootfiles::find(root, SECRETS_FILE)? else {
        return Ok(Ingested::NothingThere);
    };
    let boot = found.path;
    let bytes = match std::fs::read(&boot) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ingested::NothingThere),
        Err(source) => return Err(SecretsError::Read { path: boot, source }),
    };
    if bytes.iter().all(|&b| b == 0) {
        remove_durable(&boot).map_err(|source| SecretsError::Read {
            path: boot.clone(),
            source,
        })?;
        return Ok(Ingested::LeftoverRemoved);
    }
    let text = String::from_utf8(bytes).map_err(|_| SecretsError::Parse { byte: None })?;
    Secrets::parse(&text)?;
    write_atomic(&root.at(SECRETS_PATH), text.as_bytes(), 0o600)?;
    wipe(&boot)?;
    Ok(Ingested::Moved)
}

/// Reads the ingested secrets (empty when none were delivered).
pub fn load(root: &Root) -> Result<Secrets, SecretsError> {
    let path = root.at(SECRETS_PATH);
    match std::fs::read_to_string(&path) {
        Ok(text) => Secrets::parse(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Secrets::default()),
        Err(source) => Err(SecretsError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_do_not_quote_the_text() {
        let err = Secrets::parse("swarm_worker_token = not-quoted-secret").err();
        let shown = format!(
            "{err:?} {}",
            err.as_ref().map(|e| e.to_string()).unwrap_or_default()
        );
        assert!(err.is_some());
        assert!(!shown.contains("not-quoted-secret"), "{shown}");
    }

    #[test]
    fn debug_shows_keys_only() -> anyhow::Result<()> {
        let s = Secrets::parse("swarm_worker_token = \"fake-token-value\"")?;
        assert_eq!(s.get(WORKER_TOKEN), Some("fake-token-value"));
        assert!(!format!("{s:?}").contains("fake-token-value"));
        Ok(())
    }
}

#[cfg(test)]
mod fill_tests {
    use super::*;

    #[test]
    fn fills_known_secrets_and_drops_lines_of_missing_ones() {
        let secrets = Secrets::parse("wifi_psk = \"not-a-real-psk\"\n").expect("parses");
        let text = "a\npsk=@secret(wifi_psk)@\n@if-secret(vrrp_pass)@    auth {\n@if-secret(wifi_psk)@kept\npass=@secret(vrrp_pass)@\nz\n";
        assert_eq!(secrets.fill(text), "a\npsk=not-a-real-psk\nkept\nz\n");
        assert_eq!(Secrets::default().fill(text), "a\nz\n");
        assert!(Secrets::refers_to_secrets(text));
        assert!(!Secrets::refers_to_secrets("plain"));
    }
}
