//! Host names: the one rule for a node's name, shared by `pibake check` (the
//! cluster file), `pibake flash` (`--node`, the boot partition's node file)
//! and the agent (which makes it the board's host name).
//!
//! A node name is an RFC 1123 label in **lower case**: 1–63 characters of
//! `a-z`, `0-9` and `-`, not starting or ending with `-`. Upper case is
//! refused, not folded: the name is also a key of the node table, the value
//! of `pibake.node=` and of the node file, and the Swarm's node name, so it
//! has one spelling everywhere. Errors suggest the name that would be right
//! ([`suggest`]).
//!
//! [`is_dns_label`] is the same label without the case rule, for names that
//! DNS compares case-insensitively (domains, NTP servers).

use std::fmt;
use std::str::FromStr;

/// Longest label DNS allows (RFC 1035 2.3.4).
pub const MAX_LEN: usize = 63;

/// The rule in words, for error messages.
pub const RULE: &str = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'";

/// A valid node name (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);

/// What is wrong with a would-be node name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Empty,
    /// Its length in bytes.
    TooLong(usize),
    /// A character other than an ASCII letter, digit or `-` (the first one).
    BadChar(char),
    UpperCase,
    EdgeHyphen,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("is empty"),
            Problem::TooLong(len) => write!(f, "is {len} characters long, over {MAX_LEN}"),
            Problem::BadChar(c) => write!(f, "has {c:?}, which is not a-z, 0-9 or '-'"),
            Problem::UpperCase => f.write_str("has upper-case letters; host names are lower case"),
            Problem::EdgeHyphen => f.write_str("starts or ends with '-'"),
        }
    }
}

/// A name that is not a valid node name, with why and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node name {name:?} {problem}: a node name is a host name, {RULE}; e.g. `{}`", suggest(.name))]
pub struct NodeNameError {
    pub name: String,
    pub problem: Problem,
}

impl NodeNameError {
    /// The name this one would be if it were valid ([`suggest`]).
    pub fn suggestion(&self) -> String {
        suggest(&self.name)
    }
}

/// Why `name` is not an RFC 1123 label, ignoring case; `None` when it is one.
fn label_problem(name: &str) -> Option<Problem> {
    if name.is_empty() {
        return Some(Problem::Empty);
    }
    if name.len() > MAX_LEN {
        return Some(Problem::TooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Some(Problem::BadChar(c));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(Problem::EdgeHyphen);
    }
    None
}

/// Whether `label` is an RFC 1123 label in either case: a part of a DNS
/// name, which DNS compares case-insensitively (`Pool.NTP.org`). Node names
/// are stricter: [`NodeName`].
pub fn is_dns_label(label: &str) -> bool {
    label_problem(label).is_none()
}

/// Whether `name` is a dot-separated DNS name of [`is_dns_label`] labels.
pub fn is_dns_name(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(is_dns_label)
}

/// The valid node name closest to `name`: lower case, every other character
/// a `-`, no `-` at either end, at most 63 characters (`node` if nothing is
/// left).
pub fn suggest(name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cut: String = mapped.trim_matches('-').chars().take(MAX_LEN).collect();
    let cut = cut.trim_end_matches('-');
    if cut.is_empty() {
        "node".to_owned()
    } else {
        cut.to_owned()
    }
}

impl NodeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The content of the boot partition's node file
    /// ([`crate::bootfiles::NODE_FILE`], read by [`crate::identity::choose`])
    /// naming this node. The name's alphabet needs no TOML escaping.
    pub fn node_file(&self) -> String {
        format!("node = \"{}\"\n", self.0)
    }
}

impl FromStr for NodeName {
    type Err = NodeNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let problem = label_problem(s).or_else(|| {
            s.bytes()
                .any(|b| b.is_ascii_uppercase())
                .then_some(Problem::UpperCase)
        });
        match problem {
            None => Ok(NodeName(s.to_owned())),
            Some(problem) => Err(NodeNameError {
                name: s.to_owned(),
                problem,
            }),
        }
    }
}

impl TryFrom<String> for NodeName {
    type Error = NodeNameError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<NodeName> for String {
    fn from(name: NodeName) -> String {
        name.0
    }
}

impl AsRef<str> for NodeName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for NodeName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> Option<Problem> {
        name.parse::<NodeName>().err().map(|e| e.problem)
    }

    #[test]
    fn lower_case_labels_are_node_names() {
        let long = "a".repeat(63);
        for good in ["w1", "worker-1", "0", "1a", long.as_str()] {
            assert_eq!(
                good.parse::<NodeName>().map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
    }

    #[test]
    fn each_problem_is_named() {
        assert_eq!(problem(""), Some(Problem::Empty));
        assert_eq!(problem(&"a".repeat(64)), Some(Problem::TooLong(64)));
        assert_eq!(problem("Worker1"), Some(Problem::UpperCase));
        assert_eq!(problem("w_1"), Some(Problem::BadChar('_')));
        assert_eq!(problem("w.lab"), Some(Problem::BadChar('.')));
        assert_eq!(problem("a\"b"), Some(Problem::BadChar('"')));
        assert_eq!(problem("wörker"), Some(Problem::BadChar('ö')));
        assert_eq!(problem("-w"), Some(Problem::EdgeHyphen));
        assert_eq!(problem("w-"), Some(Problem::EdgeHyphen));
    }

    #[test]
    fn errors_say_what_would_be_right() {
        let e = "Worker1".parse::<NodeName>().expect_err("upper case");
        assert_eq!(e.suggestion(), "worker1");
        let text = e.to_string();
        assert!(
            text.contains("\"Worker1\" has upper-case letters"),
            "{text}"
        );
        assert!(text.contains("e.g. `worker1`"), "{text}");
        assert_eq!(suggest("Worker_1"), "worker-1");
        assert_eq!(suggest("--"), "node");
        assert_eq!(suggest(&format!("{}-b", "a".repeat(62))), "a".repeat(62));
        for bad in ["", "Worker_1", "-x-", "ab!", &"Z".repeat(70)] {
            let s = suggest(bad);
            assert!(s.parse::<NodeName>().is_ok(), "{bad:?} -> {s:?}");
        }
    }

    #[test]
    fn dns_labels_ignore_case() {
        assert!(is_dns_label("Pool"));
        assert!(!is_dns_label("a_b"));
        assert!(is_dns_name("Pool.NTP.org"));
        assert!(!is_dns_name("pool..org"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn serde_validates() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct File {
            node: NodeName,
        }
        let file: File = toml::from_str("node = \"w1\"").expect("valid");
        assert_eq!(file.node.node_file(), "node = \"w1\"\n");
        assert_eq!(
            toml::to_string(&file).expect("encodes"),
            file.node.node_file()
        );
        let err = toml::from_str::<File>("node = \"W1\"")
            .err()
            .expect("upper case refused");
        assert!(err.to_string().contains("upper-case"), "{err}");
    }
}
