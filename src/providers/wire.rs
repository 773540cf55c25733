//! Reading provider answers: JSON read through a [`Shape`] (only the wanted fields are kept,
//! everything else is skipped without being built), with a diagnosis when it is not JSON (HTML
//! from a proxy, a truncated body); lenient scalars; timestamps in the forms providers use;
//! ids and URL path segments; the one-line summary of an answer's unusable items. Shared by
//! every provider; pure.
//!
//! **Memory per answer.** [`read`] never builds a tree of the answer: a field or an element the
//! shape does not ask for is skipped by serde_json's iterative skipper (one byte of stack per
//! level of nesting, no recursion limit to trip), an element of the wrong kind (`0` where an
//! object is expected) is only counted, and an array keeps at most its shape's cap of elements.
//! What an answer costs is its body (capped per endpoint by `http`) plus the wanted fields of at
//! most `cap` items.

use crate::time::{parse_timestamp, Millis};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use std::fmt;

/// An answer that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// The longest document or invoice id pollhook accepts (ids are uuids; a longer one is
/// hostile and would go into URLs, store keys and logs).
pub const MAX_ID_LEN: usize = 1024;

/// Parses a body as JSON, with an error that says where it broke.
pub fn json(body: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| diagnose(body, &e))
}

/// Why `body` is not JSON: serde's error, with a hint for an HTML page or a truncated body.
pub fn diagnose(body: &[u8], e: &serde_json::Error) -> Malformed {
    let hint = if body.trim_ascii_start().starts_with(b"<") {
        " (looks like an HTML page: a proxy or gateway answered instead of the API)"
    } else if e.is_eof() {
        " (the body is truncated)"
    } else {
        ""
    };
    Malformed(format!("the answer is not valid JSON: {e}{hint}"))
}

/// What to keep of a JSON value. A value of a kind the shape does not accept is skipped and
/// read as [`Node::Skipped`].
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Accept a scalar (string, number, bool, null).
    scalar: bool,
    /// Accept an object, keeping these keys (the others are skipped).
    fields: Option<Vec<(String, Shape)>>,
    /// Accept an array of elements of this shape, keeping at most this many.
    items: Option<(Box<Shape>, usize)>,
}

impl Shape {
    /// A scalar: a string, a number, a bool or null.
    pub fn scalar() -> Shape {
        Shape {
            scalar: true,
            ..Shape::default()
        }
    }

    /// An object; only `fields` are read, in this order in [`Node::Object`].
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Shape)>) -> Shape {
        Shape {
            fields: Some(fields.into_iter().map(|(k, s)| (k.into(), s)).collect()),
            ..Shape::default()
        }
    }

    /// An object of scalar fields.
    pub fn record<K: Into<String>>(keys: impl IntoIterator<Item = K>) -> Shape {
        Shape::object(keys.into_iter().map(|k| (k, Shape::scalar())))
    }

    /// An array of `item`s, at most `cap` of them kept (the rest are counted, not read).
    pub fn array(item: Shape, cap: usize) -> Shape {
        Shape::default().or_array(item, cap)
    }

    /// This shape, or else an array of `item`s.
    pub fn or_array(mut self, item: Shape, cap: usize) -> Shape {
        self.items = Some((Box::new(item), cap));
        self
    }

    /// This shape, or else a scalar.
    pub fn or_scalar(mut self) -> Shape {
        self.scalar = true;
        self
    }
}

/// What [`read`] kept of a value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Node {
    /// The key was not there.
    #[default]
    Absent,
    Null,
    Bool(bool),
    Number(Number),
    Str(String),
    /// A value of a kind the shape did not accept (an array or object where a scalar was
    /// expected, ...): skipped unread.
    Skipped(&'static str),
    /// The shape's fields, in the shape's order ([`Node::Absent`] for a missing one).
    Object(Vec<Node>),
    Array(Items),
}

/// The elements of an array that fit the shape, and a count of those that did not.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Items {
    /// (position in the array, element) of the elements of the shape's kind.
    pub kept: Vec<(u64, Node)>,
    /// Elements of another kind (a `0` where an object belongs): counted, not kept.
    pub mismatched: u64,
    /// The first of those, by position.
    pub first_mismatch: Option<(u64, &'static str)>,
    /// Elements beyond the shape's cap: counted, not read.
    pub dropped: u64,
}

impl Items {
    /// Every element the array had.
    pub fn total(&self) -> u64 {
        self.kept.len() as u64 + self.mismatched + self.dropped
    }

    /// Elements, and none of the item's kind (`[0,0,…]` where objects belong): the answer is
    /// not the documented list at all. (Objects with unusable fields are bad items, not this.)
    pub fn is_junk(&self) -> bool {
        self.kept.is_empty() && self.mismatched > 0
    }

    /// One page of `what`s (`"list item"`), each kept element through `convert`: those that do
    /// not convert are counted; a page beyond the cap, or without one `kind` object
    /// (`"a document"`), is [`Malformed`].
    pub fn page<T>(
        self,
        what: &str,
        kind: &str,
        convert: impl Fn(&Node) -> Result<T, Malformed>,
    ) -> Result<Page<T>, Malformed> {
        let listed = self.total();
        if self.dropped > 0 {
            return Err(Malformed(format!(
                "a page of {listed} {what}s (more than {}); lower page_size",
                self.kept.len()
            )));
        }
        let mut unusable = Unusable::default();
        unusable.add_mismatched(&self, what);
        if self.is_junk() {
            return Err(unusable.junk(listed, kind));
        }
        let mut items = Vec::with_capacity(self.kept.len());
        for (i, node) in &self.kept {
            match convert(node) {
                Ok(item) => items.push(item),
                Err(e) => unusable.add(1, || format!("{what} {i}: {e}")),
            }
        }
        Ok(Page {
            items,
            unusable,
            listed,
        })
    }
}

/// The usable items of one page, the unusable ones counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub unusable: Unusable,
    /// Every element the page listed, usable or not.
    pub listed: u64,
}

static ABSENT: Node = Node::Absent;

impl Node {
    /// Field `i` of an object (in its shape's order); absent for anything else.
    pub fn field(&self, i: usize) -> &Node {
        match self {
            Node::Object(f) => f.get(i).unwrap_or(&ABSENT),
            _ => &ABSENT,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self, Node::Absent)
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Node::Object(_))
    }

    /// Field `i` of an object, taken out (absent afterwards).
    pub fn take(&mut self, i: usize) -> Node {
        match self {
            Node::Object(f) => f.get_mut(i).map(std::mem::take).unwrap_or_default(),
            _ => Node::Absent,
        }
    }

    /// [`Node::text`], taking the string rather than copying it.
    pub fn into_text(self) -> Option<String> {
        match self {
            Node::Str(s) if !s.is_empty() => Some(s),
            Node::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The fields of an object, taken out.
    pub fn into_fields(self) -> Option<Vec<Node>> {
        match self {
            Node::Object(f) => Some(f),
            _ => None,
        }
    }

    /// The elements of an array, taken out.
    pub fn into_items(self) -> Option<Items> {
        match self {
            Node::Array(i) => Some(i),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A non-empty string, or a number's text.
    pub fn text(&self) -> Option<String> {
        match self {
            Node::Str(s) if !s.is_empty() => Some(s.clone()),
            Node::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A string, a number's or a bool's text; "" for anything else.
    pub fn text_or_empty(&self) -> String {
        match self {
            Node::Str(s) => s.clone(),
            Node::Number(n) => n.to_string(),
            Node::Bool(b) => b.to_string(),
            _ => String::new(),
        }
    }

    /// A timestamp: a string (RFC 3339 or zone-less UTC) or a number (epoch s or ms).
    pub fn timestamp(&self) -> Option<Millis> {
        match self {
            Node::Str(s) => parse_timestamp(s),
            Node::Number(n) => epoch(n),
            _ => None,
        }
    }

    /// A count: a non-negative integer, or a string of one.
    pub fn count(&self) -> Option<u64> {
        match self {
            Node::Number(n) => n.as_u64(),
            Node::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// What the value is, for a message (never the content of a string).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Absent => "absent",
            Node::Null => "null",
            Node::Bool(_) => "a bool",
            Node::Number(_) => "a number",
            Node::Str(_) => "a string",
            Node::Skipped(k) => k,
            Node::Object(_) => "an object",
            Node::Array(_) => "an array",
        }
    }
}

/// Reads `body` through `shape`, keeping only what the shape asks for.
pub fn read(body: &[u8], shape: &Shape) -> Result<Node, Malformed> {
    let mut de = serde_json::Deserializer::from_slice(body);
    ShapeSeed(shape)
        .deserialize(&mut de)
        .and_then(|node| de.end().map(|()| node))
        .map_err(|e| diagnose(body, &e))
}

/// What [`read_each`] saw of an array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Elements handed to the callback.
    pub kept: u64,
    /// Elements of another kind than the item shape (counted, not read).
    pub mismatched: u64,
    pub first_mismatch: Option<(u64, &'static str)>,
    /// Elements beyond the cap (counted, not read).
    pub dropped: u64,
    /// Whether the body held such an array at all.
    pub found: bool,
}

impl Seen {
    pub fn total(&self) -> u64 {
        self.kept + self.mismatched + self.dropped
    }

    /// Elements, and none of the item's kind (see [`Items::is_junk`]).
    pub fn is_junk(&self) -> bool {
        self.kept == 0 && self.mismatched > 0
    }
}

/// Reads an array of `item`s — the body itself, or the first member named in `wrappers` of
/// the body's object that is an array — handing each element to `each` as soon as it is read
/// (at most `cap` of them): the elements are never all held as [`Node`]s at once.
pub fn read_each(
    body: &[u8],
    wrappers: &[&str],
    item: &Shape,
    cap: usize,
    each: impl FnMut(u64, Node),
) -> Result<Seen, Malformed> {
    let mut each = each;
    let mut seen = Seen::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    EachSeed {
        wrappers,
        item,
        cap,
        each: &mut each,
        seen: &mut seen,
        top: true,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| diagnose(body, &e))?;
    Ok(seen)
}

struct EachSeed<'a, F> {
    wrappers: &'a [&'a str],
    item: &'a Shape,
    cap: usize,
    each: &'a mut F,
    seen: &'a mut Seen,
    /// The body itself (a wrapper object is looked into only there).
    top: bool,
}

impl<'de, F: FnMut(u64, Node)> DeserializeSeed<'de> for EachSeed<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(u64, Node)> Visitor<'de> for EachSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let seen = self.seen;
        if seen.found {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        seen.found = true;
        let mut at = 0u64;
        loop {
            if seen.kept < self.cap as u64 {
                match seq.next_element_seed(ShapeSeed(self.item))? {
                    None => break,
                    Some(Node::Skipped(kind)) => {
                        seen.mismatched += 1;
                        seen.first_mismatch.get_or_insert((at, kind));
                    }
                    Some(node) => {
                        seen.kept += 1;
                        (self.each)(at, node);
                    }
                }
            } else {
                match seq.next_element::<IgnoredAny>()? {
                    None => break,
                    Some(_) => seen.dropped += 1,
                }
            }
            at += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let wrappers: Vec<(String, Shape)> = if self.top {
            self.wrappers
                .iter()
                .map(|w| (w.to_string(), Shape::default()))
                .collect()
        } else {
            Vec::new()
        };
        while let Some(key) = map.next_key_seed(KeySeed(&wrappers))? {
            match key {
                Some(_) => map.next_value_seed(EachSeed {
                    wrappers: self.wrappers,
                    item: self.item,
                    cap: self.cap,
                    each: &mut *self.each,
                    seen: &mut *self.seen,
                    top: false,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ShapeSeed<'s>(&'s Shape);

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_> {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl ShapeSeed<'_> {
    fn scalar(&self, node: Node, kind: &'static str) -> Node {
        if self.0.scalar {
            node
        } else {
            Node::Skipped(kind)
        }
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_> {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(self.scalar(Node::Bool(v), "a bool"))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(self.scalar(Node::Number(v.into()), "a number"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(self.scalar(Node::Number(v.into()), "a number"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        let n = Number::from_f64(v).map_or(Node::Null, Node::Number);
        Ok(self.scalar(n, "a number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        if self.0.scalar {
            Ok(Node::Str(v.to_string()))
        } else {
            Ok(Node::Skipped("a string"))
        }
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(self.scalar(Node::Str(v), "a string"))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(self.scalar(Node::Null, "null"))
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(self.scalar(Node::Null, "null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let Some((item, cap)) = &self.0.items else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Node::Skipped("an array"));
        };
        let mut items = Items::default();
        let mut at = 0u64;
        loop {
            if items.kept.len() < *cap {
                match seq.next_element_seed(ShapeSeed(item))? {
                    None => break,
                    Some(Node::Skipped(kind)) => {
                        items.mismatched += 1;
                        items.first_mismatch.get_or_insert((at, kind));
                    }
                    Some(node) => items.kept.push((at, node)),
                }
            } else {
                match seq.next_element::<IgnoredAny>()? {
                    None => break,
                    Some(_) => items.dropped += 1,
                }
            }
            at += 1;
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(fields) = &self.0.fields else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Node::Skipped("an object"));
        };
        let mut slots: Vec<Node> = fields.iter().map(|_| Node::Absent).collect();
        while let Some(key) = map.next_key_seed(KeySeed(fields))? {
            match key {
                // A repeated key: the last one wins, as in a JSON object read whole.
                Some(i) => slots[i] = map.next_value_seed(ShapeSeed(&fields[i].1))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Node::Object(slots))
    }
}

/// A map key, as the position of the wanted field it names (`None`: not wanted).
struct KeySeed<'s>(&'s [(String, Shape)]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|(k, _)| k == v))
    }
}

/// Unusable items of one answer, summed up for one log line: how many, and the first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unusable {
    pub count: u64,
    /// Why the first one is unusable.
    pub first: Option<String>,
}

impl Unusable {
    /// Counts `n` more, keeping `why` (made only when needed) if none was kept yet.
    pub fn add(&mut self, n: u64, why: impl FnOnce() -> String) {
        if n > 0 {
            self.count += n;
            if self.first.is_none() {
                self.first = Some(why());
            }
        }
    }

    /// The elements of `items` that were not even of the item's kind.
    pub fn add_mismatched(&mut self, items: &Items, what: &str) {
        if let Some((at, kind)) = items.first_mismatch {
            self.add(items.mismatched, || {
                format!("{what} {at} is {kind}, not an object")
            });
        }
    }

    /// The error of an answer that listed `listed` elements and not one `kind` object
    /// ([`Items::is_junk`]): it is not the documented answer at all.
    pub fn junk(&self, listed: u64, kind: &str) -> Malformed {
        Malformed(format!(
            "the answer listed {listed} item(s), none of them {kind} object (first: {}); nothing was processed",
            self.first.as_deref().unwrap_or("?")
        ))
    }

    /// `"{count} {what} (first: {first})"`, or `None` when there were none.
    pub fn summary(&self, what: &str) -> Option<String> {
        (self.count > 0).then(|| {
            format!(
                "{} {what} (first: {})",
                self.count,
                self.first.as_deref().unwrap_or("?")
            )
        })
    }
}

/// Why `id` cannot be a document or invoice id, if it cannot.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_LEN {
        Err(format!(
            "an id of {} bytes (more than {MAX_ID_LEN})",
            id.len()
        ))
    } else {
        Ok(())
    }
}

/// Whether `id` can be sent as one URL path segment. `.` and `..` cannot: URL parsers resolve
/// them (even percent-encoded) and the request would reach another path.
pub fn addressable(id: &str) -> bool {
    !matches!(id, "" | "." | "..")
}

/// A timestamp from a string (RFC 3339 or zone-less UTC) or a number (epoch s or ms).
pub fn timestamp(v: &Value) -> Option<Millis> {
    match v {
        Value::String(s) => parse_timestamp(s),
        Value::Number(n) => epoch(n),
        _ => None,
    }
}

/// Epoch seconds, or milliseconds when the number is too large to be seconds.
fn epoch(n: &Number) -> Option<Millis> {
    let n = n.as_i64()?;
    if n > 100_000_000_000 {
        Some(n)
    } else {
        n.checked_mul(1000)
    }
}

/// Percent-encodes a URL path segment (ids are uuids; anything else is escaped).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_shape() -> Shape {
        let item = Shape::record(["document_id", "updated_at"]);
        Shape::object([("documents", Shape::array(item.clone(), 3))]).or_array(item, 3)
    }

    #[test]
    fn read_keeps_the_wanted_fields_and_counts_the_rest() {
        let body = br#"[{"document_id":"a","updated_at":1,"x":[[[[]]]]},0,"s",{"document_id":7,"document_id":"b"},{},{},{}]"#;
        let Node::Array(items) = read(body, &poll_shape()).unwrap() else {
            panic!("an array")
        };
        assert_eq!(items.kept.len(), 3);
        assert_eq!((items.mismatched, items.dropped, items.total()), (2, 2, 7));
        assert_eq!(items.first_mismatch, Some((1, "a number")));
        let (at, first) = &items.kept[0];
        assert_eq!((*at, first.field(0).text().as_deref()), (0, Some("a")));
        assert_eq!(first.field(1).timestamp(), Some(1000));
        assert_eq!(
            items.kept[1].1.field(0).as_str(),
            Some("b"),
            "last key wins"
        );
        assert!(items.kept[2].1.field(0).is_absent());
        let wrapped = read(
            br#"{"documents":[{"document_id":"a"}],"n":{"deep":[1]}}"#,
            &poll_shape(),
        )
        .unwrap();
        assert_eq!(wrapped.field(0).clone().into_items().unwrap().kept.len(), 1);
        assert_eq!(
            read(b"7", &poll_shape()).unwrap(),
            Node::Skipped("a number")
        );
    }

    #[test]
    fn read_skips_nesting_far_beyond_the_recursion_limit() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let body = format!(r#"{{"documents":[{{"document_id":"a","x":{deep}}},{deep}]}}"#);
        let node = read(body.as_bytes(), &poll_shape()).unwrap();
        let items = node.field(0).clone().into_items().unwrap();
        assert_eq!((items.kept.len(), items.mismatched), (1, 1));
        assert_eq!(
            read(deep.as_bytes(), &poll_shape()).unwrap().kind(),
            "an array"
        );
        assert!(read(b"[{", &poll_shape())
            .unwrap_err()
            .0
            .contains("truncated"));
        assert!(read(b"<html>", &poll_shape())
            .unwrap_err()
            .0
            .contains("HTML"));
        assert!(read(b"[] x", &poll_shape()).is_err(), "trailing characters");
    }

    #[test]
    fn read_each_hands_over_the_elements_one_by_one() {
        let item = Shape::record(["document_id"]);
        let mut got = Vec::new();
        let body =
            br#"{"x":[1],"documents":[{"document_id":"a"},0,{"document_id":"b"},{}],"data":[{}]}"#;
        let seen = read_each(body, &["documents", "data"], &item, 2, |at, n| {
            got.push((at, n.field(0).text()))
        })
        .unwrap();
        assert_eq!(got, [(0, Some("a".into())), (2, Some("b".into()))]);
        assert_eq!(
            (seen.kept, seen.mismatched, seen.dropped, seen.found),
            (2, 1, 1, true)
        );
        assert_eq!(seen.first_mismatch, Some((1, "a number")));
        let seen = read_each(b"[0,0]", &[], &item, 9, |_, _| unreachable!()).unwrap();
        assert!(seen.is_junk() && seen.found);
        let seen = read_each(br#"{"documents":5}"#, &["documents"], &item, 9, |_, _| {}).unwrap();
        assert!(!seen.found);
        assert!(read_each(b"[{", &[], &item, 9, |_, _| {})
            .unwrap_err()
            .0
            .contains("truncated"));
    }

    #[test]
    fn unusable_items_are_one_line() {
        let mut u = Unusable::default();
        assert_eq!(u.summary("unusable items skipped"), None);
        u.add(2, || "item 3: no id".into());
        u.add(5, || unreachable!("only the first is described"));
        assert_eq!(
            u.summary("unusable items skipped").unwrap(),
            "7 unusable items skipped (first: item 3: no id)"
        );
    }

    #[test]
    fn ids_that_cannot_be_a_path_segment() {
        for id in ["", ".", ".."] {
            assert!(!addressable(id), "{id:?}");
        }
        for id in ["...", "a.b", ".x", "%2e%2e", "\u{1b}"] {
            assert!(addressable(id), "{id:?}");
        }
        assert!(check_id(&"x".repeat(MAX_ID_LEN)).is_ok());
        assert!(check_id(&"x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn segments_escape_everything_but_unreserved() {
        assert_eq!(segment("df5dcf78-e78b"), "df5dcf78-e78b");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn timestamps_from_strings_and_numbers() {
        assert_eq!(
            timestamp(&Value::from("2024-03-07T07:16:07.859Z")),
            Some(1_709_795_767_859)
        );
        assert_eq!(
            timestamp(&Value::from(1_709_795_767)),
            Some(1_709_795_767_000)
        );
        assert_eq!(
            timestamp(&Value::from(1_709_795_767_859i64)),
            Some(1_709_795_767_859)
        );
        assert_eq!(timestamp(&Value::Null), None);
        assert_eq!(
            timestamp(&Value::from(i64::MIN)),
            None,
            "found by tests/parsers.rs: overflowed"
        );
    }
}
