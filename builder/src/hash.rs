//! Input hashes: the sha256 of a canonical encoding of what a stage reads.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// The inputs of a stage did not serialize, so they cannot be hashed.
#[derive(Debug, thiserror::Error)]
#[error("the inputs of `{domain}` cannot be encoded for hashing")]
pub struct HashError {
    pub domain: String,
    #[source]
    pub source: serde_json::Error,
}

/// A sha256 digest, shown as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputHash([u8; 32]);

impl InputHash {
    /// Hashes the canonical JSON of `value`: serde_json without
    /// `preserve_order` writes object keys sorted, and every map of the
    /// model is a BTreeMap, so equal values give equal bytes. A value that
    /// does not serialize is an error, never a hash (two failures must not
    /// hash alike and pass for a cached stage).
    pub fn of<T: Serialize + ?Sized>(domain: &str, value: &T) -> Result<InputHash, HashError> {
        let json = serde_json::to_value(value).map_err(|source| HashError {
            domain: domain.to_string(),
            source,
        })?;
        let mut hasher = Sha256::new();
        hasher.update(domain.as_bytes());
        hasher.update([0]);
        hasher.update(json.to_string().as_bytes());
        Ok(InputHash(hasher.finalize().into()))
    }

    pub fn of_bytes(bytes: &[u8]) -> InputHash {
        InputHash(Sha256::digest(bytes).into())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 12 hex digits, for tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Display for InputHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for InputHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for InputHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a sha256 in hex: {e}"))
        })?;
        Ok(InputHash(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn equal_values_hash_equal_and_domains_separate() {
        let a: BTreeMap<&str, u32> = [("b", 2), ("a", 1)].into_iter().collect();
        let b: BTreeMap<&str, u32> = [("a", 1), ("b", 2)].into_iter().collect();
        let of = |domain, value| InputHash::of(domain, value).expect("hashes");
        assert_eq!(of("x", &a), of("x", &b));
        assert_ne!(of("x", &a), of("y", &a));
        assert_eq!(of("x", &a).to_string().len(), 64);
        let back: InputHash =
            serde_json::from_value(serde_json::to_value(of("x", &a)).expect("json")).expect("hex");
        assert_eq!(back, of("x", &a));
    }

    /// A value that cannot be encoded is an error, not the hash of `null`.
    #[test]
    fn unencodable_inputs_are_an_error() {
        // JSON object keys must be strings: a map keyed by a tuple does not serialize.
        let bad: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
        let other: BTreeMap<(u8, u8), u8> = [((4, 5), 6)].into_iter().collect();
        let err = InputHash::of("x", &bad).expect_err("not encodable");
        assert!(err.to_string().contains("`x`"), "{err}");
        assert!(InputHash::of("x", &other).is_err());
    }
}
