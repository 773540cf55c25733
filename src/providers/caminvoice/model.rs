//! CamInvoice wire shapes (lenient: unknown fields ignored, every listed variant accepted) and
//! the compact records pollhook keeps per document and per member.
//!
//! Answers are read through [`wire::read`](crate::providers::wire::read) with a [`Shape`]: only
//! the fields the diff needs are kept, everything else is skipped unbuilt, so a hostile answer
//! (millions of `0`s, arrays nested a million deep) costs its body and nothing more. A malformed
//! or unexpected answer becomes a [`Malformed`] error that says what was expected, never a
//! panic, and one bad item does not hide the good ones next to it: it is counted in
//! [`Unusable`], which the caller logs as one line per answer.

use crate::providers::contract::{Class, Field, Need, Presence};
use crate::providers::wire::{check_id, read, read_each, Node, Page, Shape, Unusable};
pub use crate::providers::wire::{json, timestamp, Malformed};
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Poll items kept from one answer at most (about 11 MB of the documented items; a poll after
/// a busy day of 100,000 changes fits). A longer answer is not read further: the member walks
/// the list instead.
pub const MAX_POLL_ITEMS: usize = 100_000;
/// Entries kept from one list page at most (ten times the largest `page_size`).
pub const MAX_LIST_ITEMS: usize = 10_000;

/// Which side of a document a member is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The member is the supplier (poll `type` = `SEND`).
    Send,
    /// The member is the customer (poll `type` = `RECEIVE`).
    Receive,
}

impl Side {
    pub fn from_poll_type(t: &str) -> Option<Side> {
        match t.to_ascii_uppercase().as_str() {
            "SEND" | "SENT" => Some(Side::Send),
            "RECEIVE" | "RECEIVED" => Some(Side::Receive),
            _ => None,
        }
    }
}

/// One item of `GET /document/poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollItem {
    pub document_id: String,
    pub updated_at: Millis,
    /// `None` when the item's `type` is missing or unknown; the detail decides then.
    pub side: Option<Side>,
}

/// A poll answer: the usable items, the unusable ones counted, and whether it listed more
/// than [`MAX_POLL_ITEMS`] (then `items` is incomplete — empty when the body was large enough
/// to be counted first, see [`poll_items`] — and must not move the cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollAnswer {
    pub items: Vec<PollItem>,
    pub unusable: Unusable,
    /// Every element the answer listed.
    pub listed: u64,
    pub over_cap: bool,
    /// How many items carried each of [`poll_fields`].
    pub presence: Presence,
}

/// Bytes per item above which a poll body is counted before it is read ([`poll_items`]):
/// an item with an id and a time takes more.
const COUNT_FIRST_BYTES_PER_ITEM: usize = 32;

const POLL_FIELDS: [&str; 3] = ["document_id", "updated_at", "type"];

/// The statuses the documentation lists (today's, then the pre-2025 `SENT` and `PENDING`).
pub const STATUSES: [&str; 11] = [
    "VALID",
    "DELIVERED",
    "ACKNOWLEDGED",
    "IN_PROCESS",
    "UNDER_QUERY",
    "CONDITIONALLY_ACCEPTED",
    "ACCEPTED",
    "REJECTED",
    "PAID",
    "SENT",
    "PENDING",
];

fn statuses() -> Class {
    Class::Choice {
        known: STATUSES.map(String::from).to_vec(),
        fold_case: false,
    }
}

/// What pollhook reads of a poll item ([`POLL_FIELDS`], in order).
pub fn poll_fields() -> Vec<Field> {
    use Need::{Required, Useful};
    vec![
        Field::new("document_id", Class::Id, Required, "the document to fetch"),
        Field::new(
            "updated_at",
            Class::Timestamp,
            Required,
            "the version (a seen one costs no detail call) and the cursor",
        ),
        Field::new(
            "type",
            Class::Choice {
                known: ["SEND", "RECEIVE", "SENT", "RECEIVED"]
                    .map(String::from)
                    .to_vec(),
                fold_case: true,
            },
            Useful,
            "the member's side; else the detail's parties decide",
        ),
    ]
}

/// What pollhook reads of Get Document Detail and of a list entry ([`DETAIL_FIELDS`], in
/// order). In a list entry only `document_id` is required: without a status, the detail is
/// fetched.
pub fn detail_fields(list: bool) -> Vec<Field> {
    use Need::{Required, Useful};
    let status_need = if list { Useful } else { Required };
    vec![
        Field::new("document_id", Class::Id, Required, "the document"),
        Field::new(
            "status",
            statuses(),
            status_need,
            if list {
                "the status; else one detail call per entry"
            } else {
                "decides the event"
            },
        ),
        Field::new(
            "supplier_id",
            Class::Id,
            Useful,
            "the member's side when the poll gives no type",
        ),
        Field::new(
            "customer_id",
            Class::Id,
            Useful,
            "the member's side when the poll gives no type",
        ),
        Field::new(
            "created_at",
            Class::Timestamp,
            Useful,
            "first sight: was it created after `start`",
        ),
        Field::new(
            "updated_at",
            Class::Timestamp,
            Useful,
            "the version; else the poll item's",
        ),
    ]
}

/// Counts `node`'s `fields` (an item read through their shape) in `p`.
fn note_all(p: &mut Presence, fields: &[Field], node: &Node) {
    for (i, f) in fields.iter().enumerate() {
        p.note(i, node.field(i), true, &f.class);
    }
}

/// Parses a poll answer: a bare array (documented) or `{"documents": [...]}` (or `data`).
/// Items without a usable `document_id`/`updated_at` are counted beside the good items; an
/// answer whose elements are not even objects (`[0,0,…]`) is [`Malformed`]. Each
/// item becomes a [`PollItem`] as soon as it is read: an answer costs its body and its items.
pub fn poll_items(body: &[u8]) -> Result<PollAnswer, Malformed> {
    let mut items = Vec::new();
    let mut unusable = Unusable::default();
    let fields = poll_fields();
    let mut presence = Presence::new("poll items", &fields);
    // An answer over the cap is refused whole (the cycle walks the list instead): a body
    // that may list that many is counted first, keeping nothing, so that a burst does not
    // hold 100,000 parsed items only to drop them (~10 MB beside the body).
    if body.len() > MAX_POLL_ITEMS * COUNT_FIRST_BYTES_PER_ITEM {
        let seen = read_each(
            body,
            &["documents", "data"],
            &Shape::record(POLL_FIELDS),
            MAX_POLL_ITEMS,
            |_, _| {},
        )?;
        // (Anything else — not found, junk, within the cap — is read as before.)
        if seen.found && !seen.is_junk() && seen.dropped > 0 {
            return Ok(PollAnswer {
                items,
                unusable,
                listed: seen.total(),
                over_cap: true,
                presence,
            });
        }
    }
    let seen = read_each(
        body,
        &["documents", "data"],
        &Shape::record(POLL_FIELDS),
        MAX_POLL_ITEMS,
        |i, mut node| {
            note_all(&mut presence, &fields, &node);
            let (id, at) = (node.take(0).into_text(), node.field(1).timestamp());
            match (id, at) {
                (Some(document_id), Some(updated_at)) => match check_id(&document_id) {
                    Ok(()) => items.push(PollItem {
                        document_id,
                        updated_at,
                        side: node.field(2).as_str().and_then(Side::from_poll_type),
                    }),
                    Err(why) => unusable.add(1, || format!("poll item {i}: {why}")),
                },
                _ => unusable.add(1, || {
                    format!("poll item {i} lacks a document_id or a readable updated_at")
                }),
            }
        },
    )?;
    if !seen.found {
        return Err(Malformed(if body.trim_ascii_start().starts_with(b"{") {
            "expected a JSON array or {\"documents\": [...]}, got an object without `documents`"
                .into()
        } else {
            "expected a JSON array or {\"documents\": [...]}".into()
        }));
    }
    if let Some((at, kind)) = seen.first_mismatch {
        unusable.add(seen.mismatched, || {
            format!("poll item {at} is {kind}, not an object")
        });
    }
    if seen.is_junk() {
        return Err(unusable.junk(seen.total(), "a document"));
    }
    items.shrink_to_fit();
    Ok(PollAnswer {
        items,
        unusable,
        listed: seen.total(),
        over_cap: seen.dropped > 0,
        presence,
    })
}

/// The parts of Get Document Detail (or a list item) the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    pub document_id: String,
    /// `None` when absent (a list item may be a summary): then fetch the detail.
    pub status: Option<String>,
    pub supplier_id: Option<String>,
    pub customer_id: Option<String>,
    pub created_at: Option<Millis>,
    pub updated_at: Option<Millis>,
}

const DETAIL_FIELDS: [&str; 6] = [
    "document_id",
    "status",
    "supplier_id",
    "customer_id",
    "created_at",
    "updated_at",
];

fn detail_shape() -> Shape {
    Shape::record(DETAIL_FIELDS)
}

impl Detail {
    /// A document object read through the detail shape.
    fn from_node(node: &Node) -> Result<Detail, Malformed> {
        if !node.is_object() {
            return Err(Malformed("expected a document object".into()));
        }
        let document_id = node
            .field(0)
            .text()
            .ok_or_else(|| Malformed("the document has no document_id".into()))?;
        check_id(&document_id).map_err(Malformed)?;
        Ok(Detail {
            document_id,
            status: node.field(1).text(),
            supplier_id: node.field(2).text(),
            customer_id: node.field(3).text(),
            created_at: node.field(4).timestamp(),
            updated_at: node.field(5).timestamp(),
        })
    }

    /// The member's side, from the parties (when the poll item did not say).
    pub fn side_for(&self, endpoint_id: &str) -> Option<Side> {
        if self.supplier_id.as_deref() == Some(endpoint_id) {
            Some(Side::Send)
        } else if self.customer_id.as_deref() == Some(endpoint_id) {
            Some(Side::Receive)
        } else {
            None
        }
    }
}

/// Parses Get Document Detail: the object itself, or under `data`.
pub fn detail(body: &[u8]) -> Result<Detail, Malformed> {
    detail_read(body).map(|(d, _)| d)
}

/// [`detail`], and which fields it carried ([`detail_fields`]).
pub fn detail_read(body: &[u8]) -> Result<(Detail, Presence), Malformed> {
    let mut fields: Vec<(&str, Shape)> = DETAIL_FIELDS.map(|k| (k, Shape::scalar())).to_vec();
    fields.push(("data", detail_shape()));
    let node = read(body, &Shape::object(fields))?;
    let data = node.field(DETAIL_FIELDS.len());
    let doc = if data.is_object() && node.field(0).is_absent() {
        data
    } else {
        &node
    };
    let contract = detail_fields(false);
    let mut presence = Presence::new("document details", &contract);
    note_all(&mut presence, &contract, doc);
    Ok((Detail::from_node(doc)?, presence))
}

/// One page of the list endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub page: Page<Detail>,
    /// From `pagination.total_pages`, when given.
    pub total_pages: Option<u64>,
    /// How many entries carried each of [`detail_fields`].
    pub presence: Presence,
}

pub fn list_page(body: &[u8]) -> Result<ListPage, Malformed> {
    let shape = Shape::object([
        ("data", Shape::array(detail_shape(), MAX_LIST_ITEMS)),
        ("pagination", Shape::record(["total_pages"])),
    ]);
    let mut node = read(body, &shape)?.into_fields().unwrap_or_default();
    let total_pages = node.get(1).and_then(|p| p.field(0).count());
    let Some(data) = node
        .get_mut(0)
        .map(std::mem::take)
        .and_then(Node::into_items)
    else {
        return Err(Malformed(
            "expected {\"data\": [...], \"pagination\": {...}}".into(),
        ));
    };
    let contract = detail_fields(true);
    let mut presence = Presence::new("list entries", &contract);
    for (_, n) in &data.kept {
        if n.is_object() {
            note_all(&mut presence, &contract, n);
        }
    }
    Ok(ListPage {
        page: data.page("list item", "a document", Detail::from_node)?,
        total_pages,
        presence,
    })
}

/// An error body: `{"message"}` (refresh, revoke, bearer calls) or
/// `{"error", "error_description"}` (Basic-auth calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorBody {
    /// `{"error": ...}`: the client credentials themselves were judged.
    Client(String),
    /// `{"message": ...}` or anything else.
    Message(String),
}

pub fn error_body(body: &[u8]) -> ErrorBody {
    let shape = Shape::record(["error", "error_description", "message"]);
    let v = read(body, &shape).unwrap_or_default();
    let error = v.field(0);
    if !error.is_absent() {
        let desc = v.field(1).as_str().unwrap_or("");
        let code = error.as_str().unwrap_or("error");
        return ErrorBody::Client(if desc.is_empty() {
            code.to_string()
        } else {
            format!("{code}: {desc}")
        });
    }
    match v.field(2).as_str() {
        Some(m) => ErrorBody::Message(m.to_string()),
        None => ErrorBody::Message("(no message)".to_string()),
    }
}

// ------------------------------------------------------------------ stored records

/// What pollhook remembers of one document for one member: 10 bytes plus the status when it is
/// not one of the documented values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocState {
    pub side: Side,
    pub status: String,
    pub updated_at: Millis,
}

// Documented statuses get a one-byte code (their position in [`STATUSES`] + 1); anything
// else is stored as its text.

impl DocState {
    /// `[side][updated_at i64 BE][status code][status text if code = 0]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(10);
        out.push(match self.side {
            Side::Send => b'S',
            Side::Receive => b'R',
        });
        out.extend_from_slice(&self.updated_at.to_be_bytes());
        match STATUSES.iter().position(|s| *s == self.status) {
            Some(i) => out.push(i as u8 + 1),
            None => {
                out.push(0);
                out.extend_from_slice(self.status.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DocState> {
        let side = match bytes.first()? {
            b'S' => Side::Send,
            b'R' => Side::Receive,
            _ => return None,
        };
        let updated_at = i64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?);
        let status = match *bytes.get(9)? {
            0 => String::from_utf8(bytes[10..].to_vec()).ok()?,
            n => STATUSES.get(n as usize - 1)?.to_string(),
        };
        Some(DocState {
            side,
            status,
            updated_at,
        })
    }
}

/// Per-member progress, kept in the store's `cursors` tree (small JSON: one per member).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Changes before this instant are history: never emitted.
    pub start: Millis,
    /// Greatest `updated_at` fully processed from the poll (inclusive).
    #[serde(default)]
    pub cursor: Option<Millis>,
    #[serde(default)]
    pub last_success: Option<Millis>,
    #[serde(default)]
    pub last_resync: Option<Millis>,
    /// When the first complete list walk began: documents first seen later are new.
    #[serde(default)]
    pub baseline_at: Option<Millis>,
    /// Consecutive refused refreshes.
    #[serde(default)]
    pub refusals: u32,
    /// Set when revoked: the fingerprint of the refresh token that was refused.
    #[serde(default)]
    pub revoked_token: Option<String>,
    /// When CamInvoice last accepted a refresh token of this member: the evidence that the
    /// member was connected at or after `start` (a later reconnection is later still).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Millis>,
    /// Revoked with no such evidence: the disconnection may predate `start`, so its
    /// ENTITY.REVOKED webhook went out before pollhook's history begins, and none was emitted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked_before_start: bool,
    /// The member's last access token, so that a restart (or the next `once`) does not
    /// refresh a token still valid. A secret: masked in `Debug`, never printed or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<StoredAccess>,
    /// Masked by [`crate::redact`] when set and again when read back.
    #[serde(default)]
    pub last_error: Option<crate::redact::Redacted>,
    /// Fields of the poll answer that drifted (missing from every item), since when.
    #[serde(
        default,
        skip_serializing_if = "crate::providers::contract::DriftMarks::is_empty"
    )]
    pub drift: crate::providers::contract::DriftMarks,
}

/// An access token kept in the member's record, with its lifetime and the refresh token it
/// goes with (a fingerprint): a token stored for another refresh token (the member was
/// reconnected, or the config changed) is not used.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAccess {
    pub token: String,
    pub issued_at: Millis,
    pub expires_at: Millis,
    /// [`super::roster::fingerprint`] of the refresh token in use when it was stored.
    pub refresh: String,
}

impl std::fmt::Debug for StoredAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccess")
            .field("token", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("refresh", &self.refresh)
            .finish()
    }
}

/// A member's refresh token kept in the store (`connections` tree): from `pollhook connect`,
/// or rotated by CamInvoice during a refresh. It is a secret: never printed or logged.
#[derive(Clone, Serialize, Deserialize)]
pub struct Connection {
    pub refresh_token: String,
    /// `connect` (the connect flow) or `rotated` (a refresh answer carried a new one).
    pub source: String,
    /// When it was stored.
    pub stored_at: Millis,
    /// The fingerprint of the config's refresh token for this member when this record was
    /// written (`None`: the member was not in the config). The record is newer than the
    /// config exactly while the config still holds that token.
    #[serde(default)]
    pub config_fingerprint: Option<String>,
    /// `business_info` of the connect answer, as CamInvoice sent it.
    #[serde(default)]
    pub business_info: Value,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("refresh_token", &"<redacted>")
            .field("source", &self.source)
            .field("stored_at", &self.stored_at)
            .field("config_fingerprint", &self.config_fingerprint)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Whether this record, rather than the config's token `config_fingerprint` (`None`: the
    /// member is not in the config), holds the member's current refresh token.
    pub fn supersedes(&self, config_fingerprint: Option<&str>) -> bool {
        match config_fingerprint {
            None => true,
            Some(fp) => self.config_fingerprint.as_deref() == Some(fp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_access_token_round_trips_and_never_prints() {
        let rec = MemberRecord {
            access: Some(StoredAccess {
                token: "at-very-secret".into(),
                issued_at: 1,
                expires_at: 2,
                refresh: "00ff".into(),
            }),
            ..MemberRecord::default()
        };
        assert!(!format!("{rec:?}").contains("very-secret"), "{rec:?}");
        let bytes = serde_json::to_vec(&rec).unwrap();
        assert_eq!(serde_json::from_slice::<MemberRecord>(&bytes).unwrap(), rec);
        // A record of an older pollhook (no token) reads as no token.
        let old: MemberRecord = serde_json::from_str(r#"{"start":5}"#).unwrap();
        assert_eq!(old.access, None);
    }

    #[test]
    fn poll_accepts_both_wrappers_and_reports_bad_items() {
        let bare = br#"[{"document_id":"d1","updated_at":"2024-03-07T07:16:07.859Z","type":"SEND"},
                        {"document_id":"d2","updated_at":"2024-03-07T07:16:08","type":"RECEIVE","extra":1}]"#;
        let a = poll_items(bare).unwrap();
        assert_eq!(a.items.len(), 2);
        assert_eq!(a.unusable.count, 0);
        assert_eq!(a.items[1].side, Some(Side::Receive));
        let wrapped = br#"{"documents":[{"document_id":"d1","updated_at":"2024-03-07T07:16:07.859Z","type":"MYSTERY"},{"updated_at":"x"},0,0]}"#;
        let a = poll_items(wrapped).unwrap();
        assert_eq!(a.items.len(), 1);
        assert_eq!(a.items[0].side, None);
        assert_eq!((a.unusable.count, a.listed, a.over_cap), (3, 4, false));
        assert_eq!(
            a.unusable.first.as_deref(),
            Some("poll item 1 lacks a document_id or a readable updated_at")
        );
        assert_eq!(poll_items(b"[]").unwrap().items, vec![]);
        let data = br#"{"data":[{"document_id":"d1","updated_at":1}]}"#;
        assert_eq!(poll_items(data).unwrap().items.len(), 1);
        let long = format!(
            r#"[{{"document_id":"{}","updated_at":1}}]"#,
            "x".repeat(2000)
        );
        let a = poll_items(long.as_bytes()).unwrap();
        assert_eq!((a.items.len(), a.unusable.count), (0, 1));
    }

    #[test]
    fn a_poll_answer_beyond_the_item_cap_says_so() {
        let item = r#"{"document_id":"d","updated_at":1},"#;
        let body = format!("[{}0]", item.repeat(MAX_POLL_ITEMS + 1));
        let a = poll_items(body.as_bytes()).unwrap();
        assert!(a.over_cap);
        assert!(
            a.items.is_empty(),
            "nothing is kept of an answer refused whole"
        );
        assert_eq!(a.listed, MAX_POLL_ITEMS as u64 + 2);
    }

    #[test]
    fn malformed_answers_say_what_went_wrong() {
        assert!(poll_items(b"<html>502 Bad Gateway</html>")
            .unwrap_err()
            .0
            .contains("HTML page"));
        assert!(poll_items(br#"[{"document_id":"d1","upd"#)
            .unwrap_err()
            .0
            .contains("truncated"));
        assert!(poll_items(br#"{"items":[]}"#)
            .unwrap_err()
            .0
            .contains("documents"));
        assert!(detail(br#"{"status":"PAID"}"#)
            .unwrap_err()
            .0
            .contains("document_id"));
        assert!(list_page(br#"[]"#).is_err());
        assert!(poll_items(b"[0,0,0]").unwrap_err().0.contains(
            "listed 3 item(s), none of them a document object (first: poll item 0 is a number"
        ));
        assert!(list_page(br#"{"data":[[],[]]}"#).is_err());
        assert_eq!(poll_items(b"[]").unwrap().listed, 0, "empty is not junk");
    }

    #[test]
    fn detail_and_list_pages_parse() {
        let d = detail(br#"{"document_id":"d1","status":"ACCEPTED","supplier_id":"KHUID1","customer_id":"KHUID2",
                           "created_at":"2024-03-07T07:16:07.859Z","updated_at":"2024-03-07T07:17:07.859Z"}"#)
        .unwrap();
        assert_eq!(d.status.as_deref(), Some("ACCEPTED"));
        assert_eq!(d.side_for("KHUID2"), Some(Side::Receive));
        assert_eq!(d.side_for("KHUID9"), None);
        let p = list_page(br#"{"data":[{"document_id":"a"},{"nope":1},[]],"pagination":{"page":1,"size":20,"total_counts":2,"total_pages":"3"}}"#).unwrap();
        assert_eq!(p.page.items.len(), 1);
        assert_eq!((p.page.unusable.count, p.page.listed), (2, 3));
        assert_eq!(p.total_pages, Some(3));
        let wrapped =
            detail(br#"{"data":{"document_id":"d2","status":"PAID","x":[[[]]]}}"#).unwrap();
        assert_eq!(
            (wrapped.document_id.as_str(), wrapped.status.as_deref()),
            ("d2", Some("PAID"))
        );
    }

    #[test]
    fn error_bodies_tell_client_refusal_from_refresh_refusal() {
        assert_eq!(
            error_body(
                br#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#
            ),
            ErrorBody::Client("invalid_client: Invalid client credentials".into())
        );
        assert_eq!(
            error_body(br#"{"message":"Invalid refresh token"}"#),
            ErrorBody::Message("Invalid refresh token".into())
        );
        assert_eq!(
            error_body(b"garbage"),
            ErrorBody::Message("(no message)".into())
        );
    }

    #[test]
    fn doc_state_round_trips_known_and_unknown_statuses() {
        for status in ["VALID", "PAID", "PENDING", "DISPUTED_BY_ROBOT", "ស្ថានភាព"]
        {
            let s = DocState {
                side: Side::Receive,
                status: status.into(),
                updated_at: 1_709_795_767_859,
            };
            let bytes = s.encode();
            assert_eq!(DocState::decode(&bytes), Some(s.clone()));
            if STATUSES.contains(&status) {
                assert_eq!(bytes.len(), 10);
            }
        }
        assert_eq!(DocState::decode(b"X"), None);
    }
}
