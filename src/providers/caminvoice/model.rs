//! CamInvoice wire shapes (lenient: unknown fields ignored, every listed variant accepted) and
//! the compact records pollhook keeps per document and per member.
//!
//! Parsing goes through `serde_json::Value` so that a malformed or unexpected answer becomes
//! a [`Malformed`] error that says what was expected, never a panic, and so that one bad item
//! does not hide the good ones next to it.

pub use crate::providers::wire::{json, timestamp, Malformed};
use crate::time::Millis;
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

fn string(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
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

/// Parses a poll answer: a bare array (documented) or `{"documents": [...]}`. Items without a
/// usable `document_id`/`updated_at` are returned as errors beside the good items.
pub fn poll_items(body: &[u8]) -> Result<(Vec<PollItem>, Vec<String>), Malformed> {
    // The documented bare array is split into raw items without building a tree of the whole
    // answer (a poll after a busy day can list 100,000 documents); anything else takes the
    // general path, which also words the errors.
    if let Ok(raw) = serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
        let mut good = Vec::with_capacity(raw.len());
        let mut bad = Vec::new();
        for (i, item) in raw.iter().enumerate() {
            let v: Value = serde_json::from_str(item.get()).unwrap_or(Value::Null);
            poll_item(i, &v, &mut good, &mut bad);
        }
        return Ok((good, bad));
    }
    let v = json(body)?;
    let items = match &v {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("documents").or_else(|| o.get("data")) {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Malformed(
                    "expected a JSON array or {\"documents\": [...]}, got an object without `documents`".into(),
                ))
            }
        },
        _ => return Err(Malformed("expected a JSON array or {\"documents\": [...]}".into())),
    };
    let mut good = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.iter().enumerate() {
        poll_item(i, item, &mut good, &mut bad);
    }
    Ok((good, bad))
}

/// Item `i` of a poll answer, into `good` or, unusable, as a line into `bad`.
fn poll_item(i: usize, item: &Value, good: &mut Vec<PollItem>, bad: &mut Vec<String>) {
    let id = string(item, "document_id");
    let at = item.get("updated_at").and_then(timestamp);
    match (id, at) {
        (Some(document_id), Some(updated_at)) => good.push(PollItem {
            document_id,
            updated_at,
            side: item
                .get("type")
                .and_then(Value::as_str)
                .and_then(Side::from_poll_type),
        }),
        _ => bad.push(format!(
            "poll item {i} lacks a document_id or a readable updated_at"
        )),
    }
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

impl Detail {
    pub fn from_value(v: &Value) -> Result<Detail, Malformed> {
        if !v.is_object() {
            return Err(Malformed("expected a document object".into()));
        }
        let document_id = string(v, "document_id")
            .ok_or_else(|| Malformed("the document has no document_id".into()))?;
        Ok(Detail {
            document_id,
            status: string(v, "status"),
            supplier_id: string(v, "supplier_id"),
            customer_id: string(v, "customer_id"),
            created_at: v.get("created_at").and_then(timestamp),
            updated_at: v.get("updated_at").and_then(timestamp),
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
    let v = json(body)?;
    match v.get("data") {
        Some(inner) if inner.is_object() && v.get("document_id").is_none() => {
            Detail::from_value(inner)
        }
        _ => Detail::from_value(&v),
    }
}

/// One page of the list endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Detail>,
    pub bad: Vec<String>,
    /// From `pagination.total_pages`, when given.
    pub total_pages: Option<u64>,
}

pub fn list_page(body: &[u8]) -> Result<ListPage, Malformed> {
    let v = json(body)?;
    let data = match v.get("data") {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(Malformed(
                "expected {\"data\": [...], \"pagination\": {...}}".into(),
            ))
        }
    };
    let mut items = Vec::with_capacity(data.len());
    let mut bad = Vec::new();
    for (i, d) in data.iter().enumerate() {
        match Detail::from_value(d) {
            Ok(d) => items.push(d),
            Err(e) => bad.push(format!("list item {i}: {e}")),
        }
    }
    let total_pages = v
        .get("pagination")
        .and_then(|p| p.get("total_pages"))
        .and_then(|t| match t {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
    Ok(ListPage {
        items,
        bad,
        total_pages,
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
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(e) = v.get("error") {
        let desc = v
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let code = e.as_str().unwrap_or("error");
        return ErrorBody::Client(if desc.is_empty() {
            code.to_string()
        } else {
            format!("{code}: {desc}")
        });
    }
    match v.get("message").and_then(Value::as_str) {
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

/// Documented statuses get a one-byte code; anything else is stored as its text.
const STATUSES: [&str; 11] = [
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
    /// Masked by [`crate::redact`] when set and again when read back.
    #[serde(default)]
    pub last_error: Option<crate::redact::Redacted>,
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
    fn poll_accepts_both_wrappers_and_reports_bad_items() {
        let bare = br#"[{"document_id":"d1","updated_at":"2024-03-07T07:16:07.859Z","type":"SEND"},
                        {"document_id":"d2","updated_at":"2024-03-07T07:16:08","type":"RECEIVE","extra":1}]"#;
        let (items, bad) = poll_items(bare).unwrap();
        assert_eq!(items.len(), 2);
        assert!(bad.is_empty());
        assert_eq!(items[1].side, Some(Side::Receive));
        let wrapped = br#"{"documents":[{"document_id":"d1","updated_at":"2024-03-07T07:16:07.859Z","type":"MYSTERY"},{"updated_at":"x"}]}"#;
        let (items, bad) = poll_items(wrapped).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].side, None);
        assert_eq!(bad.len(), 1);
        assert_eq!(poll_items(b"[]").unwrap().0, vec![]);
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
    }

    #[test]
    fn detail_and_list_pages_parse() {
        let d = detail(br#"{"document_id":"d1","status":"ACCEPTED","supplier_id":"KHUID1","customer_id":"KHUID2",
                           "created_at":"2024-03-07T07:16:07.859Z","updated_at":"2024-03-07T07:17:07.859Z"}"#)
        .unwrap();
        assert_eq!(d.status.as_deref(), Some("ACCEPTED"));
        assert_eq!(d.side_for("KHUID2"), Some(Side::Receive));
        assert_eq!(d.side_for("KHUID9"), None);
        let p = list_page(br#"{"data":[{"document_id":"a"},{"nope":1}],"pagination":{"page":1,"size":20,"total_counts":2,"total_pages":"3"}}"#).unwrap();
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.total_pages, Some(3));
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
