//! Input hashes: the sha256 of a canonical encoding of what a stage reads.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// A sha256 digest, shown as 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InputHash([u8; 32]);

impl InputHash {
    /// Hashes the canonical JSON of `value`: serde_json without
    /// `preserve_order` writes object keys sorted, and every map of the
    /// model is a BTreeMap, so equal values give equal bytes.
    pub fn of<T: Serialize + ?Sized>(domain: &str, value: &T) -> InputHash {
        let json = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        let mut hasher = Sha256::new();
        hasher.update(domain.as_bytes());
        hasher.update([0]);
        hasher.update(json.to_string().as_bytes());
        InputHash(hasher.finalize().into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn equal_values_hash_equal_and_domains_separate() {
        let a: BTreeMap<&str, u32> = [("b", 2), ("a", 1)].into_iter().collect();
        let b: BTreeMap<&str, u32> = [("a", 1), ("b", 2)].into_iter().collect();
        assert_eq!(InputHash::of("x", &a), InputHash::of("x", &b));
        assert_ne!(InputHash::of("x", &a), InputHash::of("y", &a));
        assert_eq!(InputHash::of("x", &a).to_string().len(), 64);
    }
}
