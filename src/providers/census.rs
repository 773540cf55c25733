//! A census of any JSON answer, bounded: for every object found at a path (up to [`MAX_DEPTH`]
//! containers deep), which keys it has, of which JSON kinds, with which scalar values; for every
//! array, how many elements of which kinds. `pollhook probe` describes an answer's shape with it
//! ("a bare array of 12 objects", `{data: {content: [100 objects], page, …}}`) and compares the
//! keys an answer carries — those pollhook reads and those it does not, which is how a renamed
//! field is found — with what the provider's own parser made of the same body.
//!
//! It streams like [`wire::read`](super::wire::read): no tree of the answer is built, and what
//! it keeps is capped ([`MAX_PATHS`] paths, [`MAX_KEYS`] keys each, [`MAX_VALUES`] distinct
//! values of at most [`MAX_VALUE_CHARS`] characters per key) whatever the answer's size. Pure.
//!
//! Paths: `""` is the body, `data.content` a member, `[]` the elements of the array before it
//! (`[]` the elements of a bare array, `data.content[]` the invoices of a Bulk Fetch page).

use super::wire::Malformed;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// Containers deeper than this are counted by kind at their key, not looked into.
pub const MAX_DEPTH: usize = 5;
/// Paths with objects or arrays kept at most.
pub const MAX_PATHS: usize = 32;
/// Distinct keys kept per path.
pub const MAX_KEYS: usize = 48;
/// Distinct scalar values kept per key.
pub const MAX_VALUES: usize = 16;
/// A kept value is clipped to this many characters.
pub const MAX_VALUE_CHARS: usize = 64;

/// What one answer held, by path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    /// The kind of the body itself (`"object"`, `"array"`, ...).
    pub root: &'static str,
    pub spots: BTreeMap<String, Spot>,
}

/// What was found at one path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spot {
    /// Values of each kind found here (counted for the body and for array elements; a member's
    /// kinds are in its parent's [`KeyStats`]).
    pub kinds: BTreeMap<&'static str, u64>,
    /// Objects found here.
    pub objects: u64,
    /// Their keys, in the order first seen.
    pub keys: Vec<(String, KeyStats)>,
    /// Distinct keys beyond [`MAX_KEYS`] (not kept).
    pub more_keys: u64,
    /// Arrays found here, and their elements in all.
    pub arrays: u64,
    pub elements: u64,
}

/// One key of the objects at a path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyStats {
    /// Objects that carry the key (any value, null included).
    pub count: u64,
    /// The JSON kinds of its values, with counts.
    pub kinds: BTreeMap<&'static str, u64>,
    /// Distinct scalar values (strings as they are, numbers and bools as text), with counts.
    pub values: Vec<(String, u64)>,
    /// Whether distinct values beyond [`MAX_VALUES`] were seen (then `values` is a sample).
    pub more_values: bool,
}

impl KeyStats {
    /// Carried with a value that is not null.
    pub fn non_null(&self) -> u64 {
        self.count - self.kinds.get("null").copied().unwrap_or(0)
    }

    fn add(&mut self, kind: &'static str, value: Option<String>) {
        self.count += 1;
        *self.kinds.entry(kind).or_default() += 1;
        if let Some(v) = value {
            self.value(v, 1);
        }
    }

    /// Counts `n` more of value `v` (kept while there is room).
    fn value(&mut self, v: String, n: u64) {
        match self.values.iter().position(|(x, _)| *x == v) {
            Some(i) => self.values[i].1 += n,
            None if self.values.len() < MAX_VALUES => self.values.push((v, n)),
            None => self.more_values = true,
        }
    }

    fn merge(&mut self, o: &KeyStats) {
        self.count += o.count;
        for (k, n) in &o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        for (v, n) in &o.values {
            self.value(v.clone(), *n);
        }
        self.more_values |= o.more_values;
    }

    /// The kinds, most frequent first: `"string"`, or `"string 10, null 2"`.
    pub fn kinds_text(&self) -> String {
        let mut k: Vec<(&&str, &u64)> = self.kinds.iter().collect();
        k.sort_by(|a, b| b.1.cmp(a.1));
        if k.len() == 1 {
            return k[0].0.to_string();
        }
        k.iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Spot {
    pub fn key(&self, name: &str) -> Option<&KeyStats> {
        self.keys.iter().find(|(k, _)| k == name).map(|(_, s)| s)
    }

    fn key_mut(&mut self, name: &str) -> Option<&mut KeyStats> {
        if let Some(i) = self.keys.iter().position(|(k, _)| k == name) {
            return Some(&mut self.keys[i].1);
        }
        if self.keys.len() >= MAX_KEYS {
            self.more_keys += 1;
            return None;
        }
        self.keys.push((name.to_string(), KeyStats::default()));
        self.keys.last_mut().map(|(_, s)| s)
    }

    fn merge(&mut self, o: &Spot) {
        for (k, n) in &o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        self.objects += o.objects;
        self.arrays += o.arrays;
        self.elements += o.elements;
        self.more_keys += o.more_keys;
        for (name, stats) in &o.keys {
            if let Some(s) = self.key_mut(name) {
                s.merge(stats);
            }
        }
    }
}

impl Census {
    /// The census of `body`; [`Malformed`] when it is not JSON (with the same diagnosis as
    /// the parsers give).
    pub fn of(body: &[u8]) -> Result<Census, Malformed> {
        let mut census = Census::default();
        let mut de = serde_json::Deserializer::from_slice(body);
        let (root, _) = At {
            census: &mut census,
            path: String::new(),
            depth: 0,
            element: true,
        }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| super::wire::diagnose(body, &e))?;
        census.root = root;
        Ok(census)
    }

    /// What was found at `path`.
    pub fn at(&self, path: &str) -> Option<&Spot> {
        self.spots.get(path)
    }

    /// Adds another answer's census (the same endpoint asked again): counts and values summed.
    pub fn merge(&mut self, o: &Census) {
        if self.root.is_empty() {
            self.root = o.root;
        }
        for (path, spot) in &o.spots {
            let room = self.spots.len() < MAX_PATHS;
            match self.spots.get_mut(path) {
                Some(s) => s.merge(spot),
                None if room => {
                    self.spots.insert(path.clone(), spot.clone());
                }
                None => {}
            }
        }
    }

    /// Paths (under `prefix`) of arrays whose elements are objects, with how many: where a
    /// list of items sits.
    pub fn arrays_of_objects(&self, prefix: &str) -> Vec<(String, u64)> {
        self.spots
            .iter()
            .filter_map(|(p, s)| {
                let array = p.strip_suffix("[]")?;
                let under = prefix.is_empty()
                    || array == prefix
                    || array.starts_with(&format!("{prefix}."));
                (under && s.objects > 0).then(|| (array.to_string(), s.objects))
            })
            .collect()
    }

    /// The answer's shape in one line: `a bare array of 12 objects`, `{documents: [12 objects]}`,
    /// `{success: {code, message}, data: {content: [100 objects], page, size, …}}`.
    pub fn outline(&self) -> String {
        match self.root {
            "array" => format!("a bare array of {}", self.elements_text("")),
            "object" => self.object_text("", 3),
            "" => "no JSON".to_string(),
            other => format!("a bare {other}"),
        }
    }

    /// `12 objects`, `3 numbers, 2 objects`, `0 items`.
    fn elements_text(&self, array: &str) -> String {
        let Some(s) = self.spots.get(&format!("{array}[]")) else {
            let n = self.spots.get(array).map_or(0, |s| s.elements);
            return format!("{n} items");
        };
        let mut k: Vec<(&&str, &u64)> = s.kinds.iter().collect();
        k.sort_by(|a, b| b.1.cmp(a.1));
        k.iter()
            .map(|(kind, n)| format!("{n} {}", plural(kind, **n)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn object_text(&self, path: &str, depth: usize) -> String {
        let Some(s) = self.spots.get(path) else {
            return "{…}".to_string();
        };
        if depth == 0 {
            return "{…}".to_string();
        }
        const SHOWN: usize = 8;
        let mut parts: Vec<String> = Vec::new();
        for (key, stats) in s.keys.iter().take(SHOWN) {
            let child = join(path, key);
            let part = if stats.kinds.contains_key("array") && self.spots.contains_key(&child) {
                format!("{key}: [{}]", self.elements_text(&child))
            } else if stats.kinds.contains_key("object") && self.spots.contains_key(&child) {
                format!("{key}: {}", self.object_text(&child, depth - 1))
            } else {
                key.clone()
            };
            parts.push(part);
        }
        let more = s.keys.len().saturating_sub(SHOWN) as u64 + s.more_keys;
        if more > 0 {
            parts.push(format!("… {more} more"));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn plural(kind: &str, n: u64) -> String {
    match (kind, n) {
        (k, 1) => k.to_string(),
        ("null", _) => "nulls".to_string(),
        (k, _) => format!("{k}s"),
    }
}

/// `path.key` (or `key` at the top).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A scalar's text, clipped to [`MAX_VALUE_CHARS`].
fn clipped(s: &str) -> String {
    s.chars().take(MAX_VALUE_CHARS).collect()
}

/// Visits one value at `path`: returns its kind, and its text when it is a scalar.
struct At<'c> {
    census: &'c mut Census,
    path: String,
    depth: usize,
    /// The body or an array element: its kind is counted at its own path.
    element: bool,
}

type Seen = (&'static str, Option<String>);

impl At<'_> {
    fn spot(&mut self) -> Option<&mut Spot> {
        let full = self.census.spots.len() >= MAX_PATHS;
        match self.census.spots.contains_key(&self.path) {
            true => self.census.spots.get_mut(&self.path),
            false if full => None,
            false => Some(self.census.spots.entry(self.path.clone()).or_default()),
        }
    }

    fn scalar(mut self, kind: &'static str, text: Option<String>) -> Seen {
        if self.element {
            if let Some(s) = self.spot() {
                *s.kinds.entry(kind).or_default() += 1;
            }
        }
        (kind, text.map(|t| clipped(&t)))
    }
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Seen;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for At<'_> {
    type Value = Seen;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Seen, E> {
        Ok(self.scalar("bool", Some(v.to_string())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Seen, E> {
        Ok(self.scalar("number", Some(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Seen, E> {
        Ok(self.scalar("number", Some(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Seen, E> {
        Ok(self.scalar("number", Some(v.to_string())))
    }
    fn visit_str<E>(self, v: &str) -> Result<Seen, E> {
        Ok(self.scalar("string", Some(v.to_string())))
    }
    fn visit_unit<E>(self) -> Result<Seen, E> {
        Ok(self.scalar("null", None))
    }
    fn visit_none<E>(self) -> Result<Seen, E> {
        Ok(self.scalar("null", None))
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Seen, A::Error> {
        let element = self.element;
        let deeper = self.depth < MAX_DEPTH;
        let mut n = 0u64;
        let items = format!("{}[]", self.path);
        if deeper {
            loop {
                let at = At {
                    census: &mut *self.census,
                    path: items.clone(),
                    depth: self.depth + 1,
                    element: true,
                };
                match seq.next_element_seed(at)? {
                    Some(_) => n += 1,
                    None => break,
                }
            }
        } else {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n += 1;
            }
        }
        if let Some(s) = self.spot() {
            if element {
                *s.kinds.entry("array").or_default() += 1;
            }
            s.arrays += 1;
            s.elements += n;
        }
        Ok(("array", None))
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Seen, A::Error> {
        let element = self.element;
        let deeper = self.depth < MAX_DEPTH;
        if let Some(s) = self.spot() {
            if element {
                *s.kinds.entry("object").or_default() += 1;
            }
            s.objects += 1;
        }
        while let Some(key) = map.next_key::<String>()? {
            let seen = if deeper {
                map.next_value_seed(At {
                    census: &mut *self.census,
                    path: join(&self.path, &key),
                    depth: self.depth + 1,
                    element: false,
                })?
            } else {
                map.next_value_seed(KindOnly)?
            };
            if let Some(stats) = self.spot().and_then(|s| s.key_mut(&key)) {
                stats.add(seen.0, seen.1);
            }
        }
        Ok(("object", None))
    }
}

/// A value's kind, its content skipped.
struct KindOnly;

impl<'de> DeserializeSeed<'de> for KindOnly {
    type Value = Seen;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Seen, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindOnly {
    type Value = Seen;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
        Ok(("bool", None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Seen, E> {
        Ok(("number", None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Seen, E> {
        Ok(("number", None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Seen, E> {
        Ok(("number", None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Seen, E> {
        Ok(("string", None))
    }
    fn visit_unit<E>(self) -> Result<Seen, E> {
        Ok(("null", None))
    }
    fn visit_none<E>(self) -> Result<Seen, E> {
        Ok(("null", None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Seen, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(("array", None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(("object", None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_answer_in_both_wrappers() {
        let bare = br#"[{"document_id":"d1","updated_at":"2024-03-07T07:16:07.859Z","type":"SEND"},
                        {"document_id":"d2","updated_at":"2024-03-07T07:16:08Z","type":"RECEIVE","x":null}]"#;
        let c = Census::of(bare).unwrap();
        assert_eq!(c.outline(), "a bare array of 2 objects");
        let items = c.at("[]").unwrap();
        assert_eq!(items.objects, 2);
        let t = items.key("type").unwrap();
        assert_eq!(t.count, 2);
        assert_eq!(
            t.values,
            [("SEND".to_string(), 1), ("RECEIVE".to_string(), 1)]
        );
        assert_eq!(items.key("x").unwrap().non_null(), 0);
        let wrapped = format!(r#"{{"documents":{}}}"#, std::str::from_utf8(bare).unwrap());
        let c = Census::of(wrapped.as_bytes()).unwrap();
        assert_eq!(c.outline(), "{documents: [2 objects]}");
        assert_eq!(c.arrays_of_objects(""), [("documents".to_string(), 2)]);
        assert_eq!(
            c.at("documents[]")
                .unwrap()
                .key("document_id")
                .unwrap()
                .count,
            2
        );
    }

    #[test]
    fn an_envelope_outlines_to_three_levels() {
        let body = br#"{"success":{"code":"00","message":"ok"},"data":{"content":[{"id":"a","approvalStatus":"APPROVED"},{"id":"b","approvalStatus":"DRAFT","more":{"deep":[1,2]}}],"page":1,"size":100,"totalPages":1,"totalElements":2}}"#;
        let c = Census::of(body).unwrap();
        assert_eq!(
            c.outline(),
            "{success: {code, message}, data: {content: [2 objects], page, size, totalPages, totalElements}}"
        );
        let inv = c.at("data.content[]").unwrap();
        assert_eq!(inv.key("approvalStatus").unwrap().values.len(), 2);
        assert_eq!(inv.key("more").unwrap().kinds_text(), "object");
        assert_eq!(
            c.arrays_of_objects("data"),
            [("data.content".to_string(), 2)]
        );
        assert_eq!(
            Census::of(b"[1,{},2]").unwrap().outline(),
            "a bare array of 2 numbers, 1 object"
        );
    }

    #[test]
    fn what_is_kept_is_bounded_whatever_the_answer() {
        // Many distinct keys and values, nesting far beyond the depth cap, a huge array.
        let mut obj = String::from("{");
        for k in 0..500 {
            obj.push_str(&format!("\"k{k}\":\"{}\",", "v".repeat(1000)));
        }
        obj.push_str("\"deep\":");
        obj.push_str(&"[".repeat(10_000));
        obj.push_str(&"]".repeat(10_000));
        obj.push('}');
        let items: Vec<String> = (0..2000)
            .map(|i| format!(r#"{{"id":"{i}","s":"{}"}}"#, i % 100))
            .collect();
        let body = format!(r#"{{"a":{obj},"b":[{}]}}"#, items.join(","));
        let c = Census::of(body.as_bytes()).unwrap();
        assert!(c.spots.len() <= MAX_PATHS);
        let a = c.at("a").unwrap();
        assert_eq!(a.keys.len(), MAX_KEYS);
        assert!(a.more_keys > 0);
        assert!(a.keys[0].1.values[0].0.chars().count() <= MAX_VALUE_CHARS);
        let b = c.at("b[]").unwrap();
        assert_eq!(b.objects, 2000);
        let s = b.key("s").unwrap();
        assert_eq!((s.values.len(), s.more_values), (MAX_VALUES, true));
        assert!(Census::of(b"{\"a\":").unwrap_err().0.contains("truncated"));
        assert_eq!(Census::of(b"7").unwrap().outline(), "a bare number");
    }

    #[test]
    fn censuses_of_the_same_endpoint_merge() {
        let mut a = Census::of(br#"{"status":"PAID","document_id":"a"}"#).unwrap();
        let b = Census::of(br#"{"status":"paid","document_id":"b"}"#).unwrap();
        a.merge(&b);
        let s = a.at("").unwrap().key("status").unwrap();
        assert_eq!(s.count, 2);
        assert_eq!(s.values.len(), 2);
    }
}
