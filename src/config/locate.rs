//! Key paths into the YAML document and their line:column.
//!
//! serde_yaml exposes positions only on errors, so to find where `pools[2].servers[0]` is written
//! we walk the document down that path with a seed that fails on purpose at the target node: the
//! error serde_yaml returns carries the node's mark. The same walk can deserialize a typed value
//! at a path, which gives positioned errors for one list item at a time.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A key path such as `pools[0].tls.pins[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// The path with one more mapping key.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_owned()));
        p
    }

    /// The path with one more sequence index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

const MARKER: &str = "\u{0}pinion-locate";

/// Where the node at `path` starts, if the path exists in `text`.
pub fn position_of(text: &str, path: &KeyPath) -> Option<Position> {
    locate(text, path, false)
}

/// Where the mapping key that ends `path` is written (for "unknown key" errors).
pub fn key_position_of(text: &str, path: &KeyPath) -> Option<Position> {
    locate(text, path, true)
}

fn locate(text: &str, path: &KeyPath, at_key: bool) -> Option<Position> {
    let de = serde_yaml::Deserializer::from_str(text);
    let err = match (At {
        path: &path.0,
        target: Fail,
        at_key,
    })
    .deserialize(de)
    {
        Ok(()) => return None,
        Err(e) => e,
    };
    if !err.to_string().contains(MARKER) {
        return None;
    }
    err.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    })
}

/// Deserializes the node at `path` as `T` straight from the text, so that an error carries the
/// full key path and position. `None` when the path does not exist.
pub fn parse_at<T: de::DeserializeOwned>(
    text: &str,
    path: &KeyPath,
) -> Option<Result<T, serde_yaml::Error>> {
    let de = serde_yaml::Deserializer::from_str(text);
    let result = At {
        path: &path.0,
        target: PhantomData::<T>,
        at_key: false,
    }
    .deserialize(de);
    match result {
        Err(e) if e.to_string().contains(MISSING) => None,
        other => Some(other),
    }
}

const MISSING: &str = "\u{0}pinion-missing";

struct Fail;

impl<'de> DeserializeSeed<'de> for Fail {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(FailVisitor)
    }
}

struct FailVisitor;

impl<'de> Visitor<'de> for FailVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(MARKER))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(MARKER))
    }
}

/// Walks down `path`, then hands the node to `target` (or, with `at_key`, fails at the key
/// that ends the path).
struct At<'p, S> {
    path: &'p [Seg],
    target: S,
    at_key: bool,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for At<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        match self.path.split_first() {
            None => self.target.deserialize(d),
            Some((Seg::Key(key), rest)) => d.deserialize_map(Walk {
                key: Some(key),
                index: 0,
                rest,
                target: self.target,
                at_key: self.at_key,
            }),
            Some((Seg::Index(index), rest)) => d.deserialize_seq(Walk {
                key: None,
                index: *index,
                rest,
                target: self.target,
                at_key: self.at_key,
            }),
        }
    }
}

struct Walk<'p, S> {
    key: Option<&'p str>,
    index: usize,
    rest: &'p [Seg],
    target: S,
    at_key: bool,
}

/// Reads a mapping key and tells whether it is the wanted one; fails there when asked to.
struct KeySeed<'p> {
    want: &'p str,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        // Decided inside the visitor, so that serde_yaml marks the error with the key's position.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.decide(v == self.want)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.decide(v.to_string() == self.want)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.decide(v.to_string() == self.want)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

impl KeySeed<'_> {
    fn decide<E: de::Error>(&self, matches: bool) -> Result<bool, E> {
        if matches && self.fail {
            return Err(E::custom(MARKER));
        }
        Ok(matches)
    }
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Walk<'_, S> {
    type Value = S::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<S::Value, A::Error> {
        let Some(want) = self.key else {
            return Err(de::Error::custom(MISSING));
        };
        let mut target = Some(self.target);
        let mut found = None;
        let seed = || KeySeed {
            want,
            fail: self.at_key && self.rest.is_empty(),
        };
        while let Some(matches) = map.next_key_seed(seed())? {
            match (matches, target.take()) {
                (true, Some(t)) => {
                    found = Some(map.next_value_seed(At {
                        path: self.rest,
                        target: t,
                        at_key: self.at_key,
                    })?);
                }
                (_, t) => {
                    target = t;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        found.ok_or_else(|| de::Error::custom(MISSING))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<S::Value, A::Error> {
        if self.key.is_some() {
            return Err(de::Error::custom(MISSING));
        }
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(MISSING));
            }
        }
        let found = seq.next_element_seed(At {
            path: self.rest,
            target: self.target,
            at_key: self.at_key,
        })?;
        let Some(found) = found else {
            return Err(de::Error::custom(MISSING));
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "a: 1\npools:\n  - name: x\n    servers:\n      - 1.2.3.4:5\n      - address: b:1\n        weight: 2\n";

    fn path(segs: &[Seg]) -> KeyPath {
        KeyPath(segs.to_vec())
    }

    #[test]
    fn finds_nested_list_items_and_keys() {
        let p = path(&[
            Seg::Key("pools".into()),
            Seg::Index(0),
            Seg::Key("servers".into()),
            Seg::Index(1),
            Seg::Key("weight".into()),
        ]);
        assert_eq!(
            position_of(DOC, &p),
            Some(Position {
                line: 7,
                column: 17
            })
        );
        let p = path(&[
            Seg::Key("pools".into()),
            Seg::Index(0),
            Seg::Key("servers".into()),
            Seg::Index(0),
        ]);
        assert_eq!(position_of(DOC, &p), Some(Position { line: 5, column: 9 }));
    }

    #[test]
    fn keys_can_be_located_instead_of_their_values() {
        let p = path(&[
            Seg::Key("pools".into()),
            Seg::Index(0),
            Seg::Key("servers".into()),
        ]);
        assert_eq!(
            key_position_of(DOC, &p),
            Some(Position { line: 4, column: 5 })
        );
        assert_eq!(position_of(DOC, &p), Some(Position { line: 5, column: 7 }));
    }

    #[test]
    fn root_keys_are_located() {
        let doc = "a: 1\npools:\n  - x\nb: 2\n";
        let p = KeyPath::default().key("b");
        assert_eq!(
            key_position_of(doc, &p),
            Some(Position { line: 4, column: 1 })
        );
    }

    #[test]
    fn missing_paths_have_no_position() {
        let p = path(&[Seg::Key("pools".into()), Seg::Index(3)]);
        assert_eq!(position_of(DOC, &p), None);
        let p = path(&[Seg::Key("nope".into())]);
        assert_eq!(position_of(DOC, &p), None);
    }

    #[test]
    fn parse_at_reports_typed_errors_with_full_path() {
        let p = path(&[
            Seg::Key("pools".into()),
            Seg::Index(0),
            Seg::Key("name".into()),
        ]);
        let r: Result<u32, _> = parse_at(DOC, &p).expect("path exists");
        let e = r.expect_err("a string is not a u32");
        assert!(e.to_string().contains("pools[0].name"), "{e}");
        assert_eq!(e.location().map(|l| l.line()), Some(3));
    }

    #[test]
    fn key_path_display_matches_serde_yaml_style() {
        let p = KeyPath::default()
            .key("pools")
            .index(2)
            .key("tls")
            .key("pins")
            .index(0);
        assert_eq!(p.to_string(), "pools[2].tls.pins[0]");
    }
}
