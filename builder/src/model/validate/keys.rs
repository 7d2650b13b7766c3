//! The keys each table of a file may hold, read from the raw types
//! themselves (no hand-kept list to fall behind `raw.rs`).
//!
//! serde's derived `Deserialize` of a struct hands its deserializer the
//! struct's field names (`deserialize_struct(name, FIELDS, visitor)`).
//! [`Schema::of`] drives a type's `Deserialize` with a deserializer that
//! invents one value of each shape asked for (a struct with all its fields,
//! one map entry, one sequence element, `Some`), and records the field
//! names of every struct it meets under the path of its table. A map key
//! or a sequence index is `*` in such a path.

use crate::diag::FieldPath;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::collections::BTreeMap;

type Error = de::value::Error;

/// Known keys by table path; `*` stands for a user-chosen name or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Schema {
    pub(super) tables: BTreeMap<FieldPath, &'static [&'static str]>,
}

impl Schema {
    /// The tables of `T` and their fields.
    pub(super) fn of<T: DeserializeOwned>() -> Schema {
        let mut tables = BTreeMap::new();
        let walker = Walker {
            path: Vec::new(),
            tables: &mut tables,
        };
        // Every shape is invented, so deserializing cannot fail on a value;
        // the tables recorded on the way are the result either way.
        let _ = T::deserialize(walker);
        Schema { tables }
    }

    /// The keys allowed in the table at `parent`, if it is a table of the schema.
    pub(super) fn known_keys(&self, parent: &[String]) -> Option<&'static [&'static str]> {
        self.tables.iter().find_map(|(pattern, keys)| {
            (pattern.len() == parent.len()
                && pattern
                    .iter()
                    .zip(parent)
                    .all(|(pat, part)| pat == "*" || pat == part))
            .then_some(*keys)
        })
    }
}

struct Walker<'a> {
    path: FieldPath,
    tables: &'a mut BTreeMap<FieldPath, &'static [&'static str]>,
}

impl Walker<'_> {
    fn child(&mut self, part: &str) -> Walker<'_> {
        let mut path = self.path.clone();
        path.push(part.to_string());
        Walker {
            path,
            tables: self.tables,
        }
    }
}

/// Invents a scalar for each of `deserialize_<ty>`.
macro_rules! scalar {
    ($($method:ident => $visit:ident($value:expr)),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.$visit($value)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Walker<'_> {
    type Error = Error;

    scalar! {
        deserialize_bool => visit_bool(false),
        deserialize_i8 => visit_i64(0),
        deserialize_i16 => visit_i64(0),
        deserialize_i32 => visit_i64(0),
        deserialize_i64 => visit_i64(0),
        deserialize_u8 => visit_u64(0),
        deserialize_u16 => visit_u64(0),
        deserialize_u32 => visit_u64(0),
        deserialize_u64 => visit_u64(0),
        deserialize_f32 => visit_f64(0.0),
        deserialize_f64 => visit_f64(0.0),
        deserialize_char => visit_char('x'),
        deserialize_str => visit_str(""),
        deserialize_string => visit_str(""),
        deserialize_bytes => visit_bytes(b""),
        deserialize_byte_buf => visit_bytes(b""),
        deserialize_identifier => visit_str(""),
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(Entries {
            walker: self,
            keys: &["*"],
            next: 0,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Entries {
            walker: self,
            keys: &["*"],
            next: 0,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.tables.insert(self.path.clone(), fields);
        visitor.visit_map(Entries {
            walker: self,
            keys: fields,
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first = variants.first().copied().unwrap_or("");
        visitor.visit_enum(first.into_deserializer())
    }
}

/// The entries of an invented map, struct or sequence: one per key.
struct Entries<'a> {
    walker: Walker<'a>,
    keys: &'static [&'static str],
    next: usize,
}

impl Entries<'_> {
    /// The path part of the current entry (its key; `*` for an index).
    fn current(&self) -> &'static str {
        self.keys[self.next - 1]
    }
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(key) = self.keys.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        seed.deserialize((*key).into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let part = self.current();
        seed.deserialize(self.walker.child(part))
    }
}

impl<'de> de::SeqAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.next >= self.keys.len() {
            return Ok(None);
        }
        self.next += 1;
        let part = self.current();
        seed.deserialize(self.walker.child(part)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::raw::{RawCluster, RawProfile};
    use super::*;

    fn keys(schema: &Schema, path: &[&str]) -> Vec<&'static str> {
        let path: FieldPath = path.iter().map(|s| (*s).to_string()).collect();
        schema.known_keys(&path).unwrap_or_default().to_vec()
    }

    #[test]
    fn the_cluster_schema_has_every_table_of_raw_rs() {
        let schema = Schema::of::<RawCluster>();
        let paths: Vec<String> = schema.tables.keys().map(|p| p.join(".")).collect();
        assert_eq!(
            paths,
            [
                "",
                "button",
                "cluster",
                "cluster.admin",
                "image",
                "kernel",
                "network",
                "network.dhcp_range",
                "network.wifi",
                "nodes.*",
                "roles.*",
                "swarm",
                "swarm.images.*",
                "swarm.stacks.*",
                "time",
                "time.gate",
                "time.gps",
                "vip",
            ]
        );
        let node = keys(&schema, &["nodes", "worker1"]);
        assert!(
            node.contains(&"mac") && node.contains(&"config_txt"),
            "{node:?}"
        );
        assert_eq!(keys(&schema, &["vip", "holders"]), Vec::<&str>::new());
        assert!(keys(&schema, &["swarm"]).contains(&"stacks"));
        assert_eq!(keys(&schema, &["swarm", "stacks", "web"]), ["compose"]);
        assert!(keys(&schema, &["swarm"]).contains(&"images"));
        assert_eq!(keys(&schema, &["swarm", "images", "web"]), ["archive"]);
    }

    #[test]
    fn the_profile_schema_reaches_into_sources() {
        let schema = Schema::of::<RawProfile>();
        assert_eq!(
            keys(&schema, &["sources", "0"]),
            [
                "name",
                "uri",
                "suite",
                "components",
                "keyring",
                "trusted",
                "pin_priority"
            ]
        );
        assert!(keys(&schema, &[]).contains(&"own_rootfs"));
    }

    /// Every key a file of this kind holds (every field of raw.rs, as serde
    /// writes them back) is known to the schema; for a `complete` file,
    /// every table of the schema is one serde writes.
    fn assert_schema_covers<T: DeserializeOwned + serde::Serialize>(text: &str, complete: bool) {
        let raw: T = toml::from_str(text).expect("parses");
        let value = toml::Value::try_from(&raw).expect("serializes");
        let schema = Schema::of::<T>();
        let mut seen = Vec::new();
        walk(&value, &mut Vec::new(), &schema, &mut seen);
        if !complete {
            return;
        }
        for (pattern, keys) in &schema.tables {
            assert!(
                seen.iter().any(|p: &FieldPath| Schema {
                    tables: [(pattern.clone(), *keys)].into()
                }
                .known_keys(p)
                .is_some()),
                "table {pattern:?} of the schema is in no file"
            );
        }
    }

    fn walk(value: &toml::Value, path: &mut FieldPath, schema: &Schema, seen: &mut Vec<FieldPath>) {
        match value {
            toml::Value::Table(table) => {
                let known = schema.known_keys(path);
                if known.is_some() {
                    seen.push(path.clone());
                }
                for (key, inner) in table {
                    if let Some(known) = known {
                        assert!(known.contains(&key.as_str()), "{path:?}: `{key}` unknown");
                    }
                    path.push(key.clone());
                    walk(inner, path, schema, seen);
                    path.pop();
                }
            }
            toml::Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    path.push(i.to_string());
                    walk(inner, path, schema, seen);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_field_serde_writes_is_a_known_key() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let full = r#"
format = 1
[cluster]
name = "c"
domain = "c.internal"
timezone = "UTC"
[cluster.admin]
user = "admin"
[network]
subnet = "10.0.0.0/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
dhcp_range = { start = "10.0.0.100", end = "10.0.0.200" }
wifi = { ssid = "s", country = "DE" }
[roles.r]
profile = "p"
[nodes.n]
role = "r"
platform = "rpi4"
address = "10.0.0.2"
mac = "dc:a6:32:01:02:03"
serial = "10000000abcdef01"
[vip]
address = "10.0.0.3"
virtual_router_id = 1
holders = { n = 100 }
[time.gps]
node = "n"
[swarm]
managers = ["n"]
[swarm.stacks.web]
compose = "stacks/web.yml"
[swarm.images.web]
archive = "oci/web-arm64.tar"
"#;
        assert_schema_covers::<RawCluster>(full, true);
        let lab = std::fs::read_to_string(dir.join("examples/lab/cluster.toml")).expect("lab");
        assert_schema_covers::<RawCluster>(&lab, false);
        let profile = r#"
format = 1
[[sources]]
name = "s"
uri = "file:/srv/repo"
suite = "./"
keyring = "k.gpg"
pin_priority = 990
"#;
        assert_schema_covers::<RawProfile>(profile, true);
    }
}
