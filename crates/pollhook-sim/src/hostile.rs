//! A hostile provider: answers that are legal HTTP and legal JSON but absurd, for the tests that
//! attack pollhook the way a broken or malicious provider would.
//!
//! This module owns the switchable hostile *variants* ([`Hostility`]: duplicated and reordered
//! items, phantom documents with ids such as `..` or control characters, list entries without
//! a status), the per-document *poisoned timestamps* ([`Simulator::poison_updated_at`]: a
//! document or invoice shows `9999-12-31T23:59:59.999Z`, or `i64::MAX` ms, until its next real
//! change), and the *junk bodies* of the [`FaultKind`](super::FaultKind) variants `ZeroArray`,
//! `NestedArrays` and `Padded`. None of it changes the world or the journal: a poisoned
//! timestamp is a lie about a real change, so the webhook the provider would have sent is still
//! in the ground truth; phantom documents do not exist, so no webhook names them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::op_world::Invoice;
use super::world::{Side, World};
use super::{fmt_ts, Simulator};

/// Hostile answer variants of the CamInvoice API, switched with [`Simulator::set_hostility`].
/// The default is an honest provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostility {
    /// Every poll item and every list entry appears twice, the copy right after the original.
    #[serde(default)]
    pub duplicate_items: bool,
    /// Poll answers and list pages list their items in reverse order.
    #[serde(default)]
    pub reverse_order: bool,
    /// List entries carry only `document_id`, `created_at` and `updated_at` (summaries: the
    /// client must fetch each detail for the status).
    #[serde(default)]
    pub list_without_status: bool,
    /// Documents that do not exist, listed with these ids in every poll answer and on the
    /// first list page of the sending side (status `DELIVERED`); their detail is a 404.
    #[serde(default)]
    pub phantom_ids: Vec<String>,
}

/// The hostile part of the world: the variant in force and the poisoned timestamps.
#[derive(Debug, Default)]
pub struct HostileState {
    pub variant: Hostility,
    /// When the phantoms appeared: their `updated_at` and `created_at`.
    phantoms_at: Option<DateTime<Utc>>,
    /// Document or invoice id -> (its real `updated_at` when poisoned, the value shown instead).
    /// The lie lasts until the item's real `updated_at` moves.
    stamps: HashMap<String, (DateTime<Utc>, Value)>,
}

impl HostileState {
    /// The `updated_at` to show for an item whose real one is `real`, when poisoned.
    fn shown(&self, id: &str, real: DateTime<Utc>) -> Option<&Value> {
        match self.stamps.get(id) {
            Some((at, v)) if *at == real => Some(v),
            _ => None,
        }
    }
}

impl Simulator {
    /// Switches the hostile variant from now on (the default: honest answers).
    pub fn set_hostility(&self, h: Hostility) {
        self.with(|w| {
            w.hostile.phantoms_at = Some(w.now());
            w.hostile.variant = h;
        });
    }

    /// Makes the CamInvoice document or OnlinePajak invoice `id` show `shown` as its
    /// `updated_at` (`updatedAt`) in every answer — poll, list, detail, Bulk Fetch, Retrieve —
    /// until it next changes; a poll or Bulk Fetch lists it whatever the cursor, as a server that
    /// stored that value would. `false` if no such document or invoice exists.
    pub fn poison_updated_at(&self, id: &str, shown: Value) -> bool {
        self.with(|w| {
            let real = w
                .documents
                .iter()
                .find(|d| d.id == id)
                .map(|d| d.updated_at)
                .or_else(|| {
                    w.op.invoices
                        .iter()
                        .find(|i| i.id == id)
                        .map(|i| i.updated_at)
                });
            match real {
                Some(real) => {
                    w.hostile.stamps.insert(id.to_string(), (real, shown));
                    true
                }
                None => false,
            }
        })
    }

    /// Drops every queued fault (what is left of their counts).
    pub fn clear_faults(&self) {
        self.with(|w| w.clear_faults());
    }

    /// Ids of every CamInvoice document, in creation order.
    pub fn document_ids(&self) -> Vec<String> {
        self.with(|w| w.documents.iter().map(|d| d.id.clone()).collect())
    }

    /// Ids of every OnlinePajak invoice, in creation order.
    pub fn invoice_ids(&self) -> Vec<String> {
        self.with(|w| w.op.invoices.iter().map(|i| i.id.clone()).collect())
    }
}

/// A poll answer for member `m` as the hostile provider gives it: poisoned timestamps shown
/// (poisoned documents listed whatever `since`), phantoms added, duplicates and order applied.
pub(crate) fn poll(w: &World, m: usize, mut items: Vec<Value>) -> Vec<Value> {
    let h = &w.hostile;
    if h.stamps.is_empty() && h.variant == Hostility::default() {
        return items;
    }
    for item in items.iter_mut() {
        let id = item["document_id"].as_str().unwrap_or_default().to_string();
        if let Some(d) = w.visible_document(m, &id) {
            if let Some(v) = h.shown(&id, d.updated_at) {
                item["updated_at"] = v.clone();
            }
        }
    }
    for (id, (real, v)) in &h.stamps {
        let Some(d) = w.visible_document(m, id) else {
            continue;
        };
        if d.updated_at != *real || items.iter().any(|i| i["document_id"] == id.as_str()) {
            continue;
        }
        let side = match w.side(d, m) {
            Some(Side::Send) => "SEND",
            _ => "RECEIVE",
        };
        items.push(json!({"document_id": id, "updated_at": v, "type": side}));
    }
    let at = fmt_ts(h.phantoms_at.unwrap_or_else(|| w.now()));
    for id in &h.variant.phantom_ids {
        items.push(json!({"document_id": id, "updated_at": at, "type": "SEND"}));
    }
    shape(&h.variant, items)
}

/// One list page's entries as the hostile provider gives them (`first`: page 1 of the side).
pub(crate) fn list(
    w: &World,
    m: usize,
    side: Side,
    first: bool,
    entries: Vec<Value>,
) -> Vec<Value> {
    let h = &w.hostile;
    if h.stamps.is_empty() && h.variant == Hostility::default() {
        return entries;
    }
    let mut entries: Vec<Value> = entries.into_iter().map(|e| detail(w, e)).collect();
    if first && side == Side::Send {
        let at = fmt_ts(h.phantoms_at.unwrap_or_else(|| w.now()));
        let me = &w.businesses[m].endpoint_id;
        for id in &h.variant.phantom_ids {
            entries.push(json!({
                "document_id": id, "supplier_id": me, "customer_id": "KHUID99999999",
                "status": "DELIVERED", "created_at": at, "updated_at": at,
            }));
        }
    }
    if h.variant.list_without_status {
        for e in entries.iter_mut() {
            *e = json!({
                "document_id": e["document_id"],
                "created_at": e["created_at"],
                "updated_at": e["updated_at"],
            });
        }
    }
    shape(&h.variant, entries)
}

/// A Get Document Detail object with its poisoned `updated_at`, if any.
pub(crate) fn detail(w: &World, mut d: Value) -> Value {
    let id = d["document_id"].as_str().unwrap_or_default().to_string();
    let real = w
        .documents
        .iter()
        .find(|x| x.id == id)
        .map(|x| x.updated_at);
    if let Some(v) = real.and_then(|r| w.hostile.shown(&id, r)) {
        d["updated_at"] = v.clone();
    }
    d
}

/// Bulk Fetch's invoices for a company, poisoned ones moved to the end (their shown
/// `updatedAt` is later than any real one) and listed whatever `from`.
pub(crate) fn op_bulk<'w>(w: &'w World, c: usize, mut found: Vec<&'w Invoice>) -> Vec<&'w Invoice> {
    let stamps = &w.hostile.stamps;
    if stamps.is_empty() {
        return found;
    }
    let poisoned = |i: &Invoice| w.hostile.shown(&i.id, i.updated_at).is_some();
    found.retain(|i| !poisoned(i));
    let mut extra: Vec<&Invoice> =
        w.op.invoices
            .iter()
            .filter(|i| i.company == c && poisoned(i))
            .collect();
    extra.sort_by(|a, b| a.id.cmp(&b.id));
    found.extend(extra);
    found
}

/// An INVOICE object with its poisoned `updatedAt`, if any.
pub(crate) fn op_invoice(w: &World, inv: &Invoice, mut v: Value) -> Value {
    if let Some(s) = w.hostile.shown(&inv.id, inv.updated_at) {
        v["updatedAt"] = s.clone();
    }
    v
}

fn shape(h: &Hostility, mut items: Vec<Value>) -> Vec<Value> {
    if h.duplicate_items {
        items = items.into_iter().flat_map(|i| [i.clone(), i]).collect();
    }
    if h.reverse_order {
        items.reverse();
    }
    items
}

// ----- junk bodies -----------------------------------------------------------------------

/// What a junk body is made of.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Junk {
    /// `[0,0,0,…,0]`: millions of items, none usable.
    Zeros,
    /// `[[[…]]]`: nested far beyond any parser's recursion limit.
    Nested,
    /// Poll items of documents that do not exist (`phantom-000000001`, …): each well formed.
    Phantoms,
}

/// One phantom poll item; every one is [`PHANTOM_LEN`] bytes.
fn phantom(k: usize) -> String {
    format!(
        r#"{{"document_id":"phantom-{k:09}","updated_at":"2024-03-07T07:16:07.859Z","type":"SEND"}}"#
    )
}

const PHANTOM_LEN: usize = 89;

/// A streamed body of about `bytes` bytes of `junk` (for `Phantoms`: `bytes` items) with no
/// Content-Length (the client only learns the size by reading), produced 64 KiB at a time so
/// that the simulator holds none of it.
pub(crate) fn junk_body(junk: Junk, bytes: usize) -> Body {
    let len = match junk {
        Junk::Zeros => bytes.max(3) | 1,
        Junk::Nested => bytes.max(2) & !1,
        Junk::Phantoms => 2 + bytes * (PHANTOM_LEN + 1) - usize::from(bytes > 0),
    };
    Body::from_stream(JunkStream { junk, len, at: 0 })
}

/// `bytes` bytes of nested arrays, as text.
pub(crate) fn nested_text(bytes: usize) -> String {
    let d = (bytes / 2).max(1);
    let mut s = String::with_capacity(2 * d);
    s.extend(std::iter::repeat('[').take(d));
    s.extend(std::iter::repeat(']').take(d));
    s
}

/// The real answer `body` with about `bytes` bytes of nested arrays added: as a member
/// `"padding"` of an object, or as a first element of an array. Anything else is unchanged.
pub(crate) fn padded(body: &[u8], bytes: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    let junk = nested_text(bytes);
    let out = if let Some(inner) = t.strip_prefix('{') {
        let sep = if inner.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        format!("{{\"padding\":{junk}{sep}{inner}")
    } else if let Some(inner) = t.strip_prefix('[') {
        let sep = if inner.trim_start().starts_with(']') {
            ""
        } else {
            ","
        };
        format!("[{junk}{sep}{inner}")
    } else {
        t.to_string()
    };
    out.into_bytes()
}

struct JunkStream {
    junk: Junk,
    len: usize,
    at: usize,
}

impl JunkStream {
    fn byte(&self, i: usize) -> u8 {
        match self.junk {
            Junk::Phantoms if i == 0 => b'[',
            Junk::Phantoms if i == self.len - 1 => b']',
            Junk::Phantoms => {
                let (k, at) = ((i - 1) / (PHANTOM_LEN + 1), (i - 1) % (PHANTOM_LEN + 1));
                if at == PHANTOM_LEN {
                    b','
                } else {
                    phantom(k).as_bytes()[at]
                }
            }
            Junk::Zeros if i == 0 => b'[',
            Junk::Zeros if i == self.len - 1 => b']',
            Junk::Zeros if (i - 1) % 2 == 0 => b'0',
            Junk::Zeros => b',',
            Junk::Nested if i < self.len / 2 => b'[',
            Junk::Nested => b']',
        }
    }
}

impl futures_core::Stream for JunkStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.next_chunk().map(|c| Ok(Bytes::from(c))))
    }
}

impl JunkStream {
    /// The next (up to) 64 KiB.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.at >= self.len {
            return None;
        }
        let end = (self.at + 64 * 1024).min(self.len);
        let chunk: Vec<u8> = match self.junk {
            // Whole items at a time (formatting one per byte would be slow).
            Junk::Phantoms => {
                let mut text = Vec::with_capacity(end - self.at + PHANTOM_LEN);
                let mut i = self.at;
                while i < end {
                    let (k, at) = (
                        (i.max(1) - 1) / (PHANTOM_LEN + 1),
                        (i.max(1) - 1) % (PHANTOM_LEN + 1),
                    );
                    if i == 0 || i == self.len - 1 || at != 0 {
                        text.push(self.byte(i));
                        i += 1;
                    } else {
                        let item = phantom(k);
                        let take = item.len().min(end - i);
                        text.extend_from_slice(&item.as_bytes()[..take]);
                        i += take;
                    }
                }
                text
            }
            _ => (self.at..end).map(|i| self.byte(i)).collect(),
        };
        self.at = end;
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(junk: Junk, bytes: usize) -> Vec<u8> {
        let s = JunkStream {
            junk,
            len: match junk {
                Junk::Zeros => bytes.max(3) | 1,
                Junk::Nested => bytes.max(2) & !1,
                Junk::Phantoms => 2 + bytes * (PHANTOM_LEN + 1) - usize::from(bytes > 0),
            },
            at: 0,
        };
        (0..s.len).map(|i| s.byte(i)).collect()
    }

    #[test]
    fn phantoms_stream_as_valid_poll_items() {
        assert_eq!(phantom(7).len(), PHANTOM_LEN);
        let bytes = collect(Junk::Phantoms, 3);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[2]["document_id"], "phantom-000000002");
        assert_eq!(collect(Junk::Phantoms, 0), b"[]");
        // Streamed whole items at a time, the same bytes.
        let mut s = JunkStream {
            junk: Junk::Phantoms,
            len: 2 + 2000 * (PHANTOM_LEN + 1) - 1,
            at: 0,
        };
        let mut streamed = Vec::new();
        while let Some(chunk) = s.next_chunk() {
            streamed.extend_from_slice(&chunk);
        }
        assert_eq!(streamed, collect(Junk::Phantoms, 2000));
    }

    #[test]
    fn junk_is_valid_json_of_the_asked_size() {
        let zeros = collect(Junk::Zeros, 20);
        assert_eq!(zeros, b"[0,0,0,0,0,0,0,0,0,0]");
        let v: Vec<u8> = serde_json::from_slice(&zeros).unwrap();
        assert_eq!(v.len(), 10);
        assert_eq!(collect(Junk::Nested, 6), b"[[[]]]");
        assert_eq!(nested_text(6), "[[[]]]");
    }

    #[test]
    fn padding_keeps_the_real_answer() {
        let p = padded(br#"{"document_id":"d1"}"#, 4);
        assert_eq!(p, br#"{"padding":[[]],"document_id":"d1"}"#);
        assert_eq!(padded(b"[1]", 2), b"[[],1]");
        assert_eq!(padded(b"[]", 2), b"[[]]");
        assert_eq!(padded(b"{}", 2), br#"{"padding":[]}"#);
    }
}
