//! Signing keys, as Nix writes its binary-cache keys: `<name>:<base64>`, the name saying
//! whose key it is (`lab-ci-1`), the base64 the 32 bytes of an ed25519 seed (secret) or
//! public key. A signature names its key, so a puller with several trusted keys knows
//! which one to check.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use std::fmt;
use std::path::{Path, PathBuf};

/// A key file or text that is not a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what}: want `<name>:<base64 of 32 bytes>`, the name of letters, digits, `.`, `_` or `-` (at most 64)")]
    Format { what: String },
    #[error("{what}: not an ed25519 public key")]
    NotAPoint { what: String },
    #[error("no randomness for a new key")]
    Random(#[source] getrandom::Error),
    #[error("{path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} exists: a key is never overwritten (remove it, or pick another --out)")]
    Exists(std::path::PathBuf),
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A key's name: letters, digits, `.`, `_`, `-`, 1 to 64 of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyName(String);

impl KeyName {
    pub fn new(name: &str) -> Option<Self> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        ok.then(|| Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name:base64` → the name and the 32 bytes.
fn split(text: &str, what: &str) -> Result<(KeyName, [u8; 32]), KeyError> {
    let err = || KeyError::Format {
        what: what.to_owned(),
    };
    let (name, b64) = text.trim().split_once(':').ok_or_else(err)?;
    let name = KeyName::new(name).ok_or_else(err)?;
    let bytes = STANDARD.decode(b64).map_err(|_| err())?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| err())?;
    Ok((name, bytes))
}

/// Writes `text` to `path` with `mode`, complete or absent (the mode is set before a byte
/// is written, so a secret is never readable by others).
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let atomic_err = |e: pibake_host::atomic::AtomicError| err(e.source);
    let mut tmp = pibake_host::atomic::temp_beside(path).map_err(atomic_err)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(err)?;
    pibake_host::atomic::persist(tmp, path).map_err(atomic_err)
}

/// A secret signing key.
pub struct SecretKey {
    name: KeyName,
    key: SigningKey,
}

impl fmt::Debug for SecretKey {
    // Never the key itself: it would end in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    /// A new key from the operating system's randomness.
    pub fn generate(name: KeyName) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(KeyError::Random)?;
        Ok(Self {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads `name:base64-seed`; `what` names the source in errors (a file's path).
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let (name, seed) = split(text, what)?;
        Ok(Self {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads a key file written by [`SecretKey::write_new`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_text(path)?, &path.display().to_string())
    }

    /// Writes the key to `path` (mode 0600) and its public key to `path.pub`, each
    /// complete or absent; refuses to overwrite either. Returns the public key's path.
    pub fn write_new(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let public = PathBuf::from(format!("{}.pub", path.display()));
        for p in [path, public.as_path()] {
            if p.exists() {
                return Err(KeyError::Exists(p.to_owned()));
            }
        }
        write_file(path, &self.to_text(), 0o600)?;
        // A public key is for giving away: readable by all, unlike the secret.
        write_file(&public, &self.public().to_text(), 0o644)?;
        Ok(public)
    }

    /// The text of the key file (secret: written 0600).
    pub fn to_text(&self) -> String {
        format!("{}:{}\n", self.name, STANDARD.encode(self.key.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signature of `message`, naming this key.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key: self.name.to_string(),
            signature: STANDARD.encode(self.key.sign(message).to_bytes()),
        }
    }
}

/// A public key a puller trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: KeyName,
    key: VerifyingKey,
}

impl PublicKey {
    /// Reads a public key file (`<name>:<base64>`, as `pibake key generate` writes `.pub`).
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_text(path)?, &path.display().to_string())
    }

    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split(text, what)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint {
            what: what.to_owned(),
        })?;
        Ok(Self { name, key })
    }

    pub fn name(&self) -> &KeyName {
        &self.name
    }

    pub fn to_text(&self) -> String {
        format!("{}:{}\n", self.name, STANDARD.encode(self.key.to_bytes()))
    }

    /// Whether `sig` is this key's signature of `message` (strict: no malleable forms).
    pub fn verifies(&self, message: &[u8], sig: &Signature) -> bool {
        if sig.key != self.name.as_str() {
            return false;
        }
        let Ok(bytes) = STANDARD.decode(&sig.signature) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// A signature as an artifact carries it: the key's name and the base64 signature.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> KeyName {
        KeyName::new(n).expect("name")
    }

    #[test]
    fn keys_round_trip_and_sign() -> Result<(), KeyError> {
        let secret = SecretKey::generate(name("lab-ci-1"))?;
        let again = SecretKey::parse(&secret.to_text(), "key")?;
        assert_eq!(again.public(), secret.public());
        let public = PublicKey::parse(&secret.public().to_text(), "pub")?;
        let sig = secret.sign(b"statement");
        assert!(public.verifies(b"statement", &sig));
        assert!(!public.verifies(b"statement!", &sig), "another message");
        let other = SecretKey::generate(name("lab-ci-1"))?;
        assert!(
            !other.public().verifies(b"statement", &sig),
            "another key of the same name"
        );
        let renamed = Signature {
            key: "other".into(),
            ..sig.clone()
        };
        assert!(
            !public.verifies(b"statement", &renamed),
            "another key's name"
        );
        let mut bytes = STANDARD.decode(&sig.signature).expect("b64");
        bytes[0] ^= 1;
        let flipped = Signature {
            signature: STANDARD.encode(bytes),
            ..sig
        };
        assert!(!public.verifies(b"statement", &flipped), "a flipped bit");
        assert!(format!("{secret:?}").contains("lab-ci-1"));
        assert!(!format!("{secret:?}").contains(secret.to_text().trim()));
        Ok(())
    }

    #[test]
    fn key_files_are_written_private_and_never_overwritten() -> Result<(), KeyError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().map_err(|source| KeyError::Io {
            path: "tmp".into(),
            source,
        })?;
        let path = dir.path().join("lab.key");
        let secret = SecretKey::generate(name("lab"))?;
        let public = secret.write_new(&path)?;
        let mode = std::fs::metadata(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let public_mode = std::fs::metadata(&public).map_err(|source| KeyError::Io {
            path: public.clone(),
            source,
        })?;
        assert_eq!(public_mode.permissions().mode() & 0o777, 0o644);
        assert_eq!(SecretKey::read(&path)?.public(), PublicKey::read(&public)?);
        let err = SecretKey::generate(name("lab"))?
            .write_new(&path)
            .expect_err("overwrote");
        assert!(matches!(err, KeyError::Exists(_)), "{err}");
        assert_eq!(
            SecretKey::read(&path)?.public(),
            secret.public(),
            "the first key stayed"
        );
        Ok(())
    }

    #[test]
    fn bad_key_texts_are_refused() {
        for bad in [
            "",
            "no-colon",
            ":AAAA",
            "name:not base64!",
            "name:AAAA",
            "bad name:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(SecretKey::parse(bad, "t").is_err(), "{bad:?}");
            assert!(PublicKey::parse(bad, "t").is_err(), "{bad:?}");
        }
        assert!(KeyName::new(&"a".repeat(65)).is_none());
    }
}
