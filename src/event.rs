//! The event envelope: what every sink receives, and how event ids are made.
//!
//! A provider's diff produces [`NewEvent`]s (type, deterministic id, the exact webhook payload
//! bytes). The store assigns a sequence number at commit and writes the envelope line built by
//! [`NewEvent::to_line`]; sinks read it back as [`StoredEvent`]. The payload is embedded as raw
//! JSON so its bytes — key order included — are exactly what the provider's webhook would POST.
//!
//! This module does no I/O.

use crate::time::{format_ms, Millis};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// An event found by a diff, before it has a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Deterministic id, see [`event_id`].
    pub id: String,
    /// `"caminvoice"`, `"onlinepajak"`.
    pub provider: &'static str,
    /// The configured account name.
    pub account: String,
    /// The webhook event type, e.g. `DOCUMENT.STATUS_UPDATED`.
    pub event_type: String,
    /// When the change happened at the provider (its timestamp), as far as polling can tell.
    pub occurred_at: Millis,
    /// When pollhook saw it.
    pub detected_at: Millis,
    /// Ordering key for per-document delivery: the member/company and document it concerns.
    pub subject: String,
    /// The webhook body, compact JSON, exactly as the provider would send it.
    pub payload: String,
}

/// The envelope as written: one JSON object per line in the JSONL sink.
#[derive(Serialize)]
struct EnvelopeOut<'a> {
    id: &'a str,
    seq: u64,
    provider: &'a str,
    account: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    occurred_at: String,
    detected_at: String,
    payload: &'a RawValue,
}

/// An envelope read back from the outbox.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    pub seq: u64,
    pub provider: String,
    pub account: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: String,
    pub detected_at: String,
    pub payload: Box<RawValue>,
}

impl NewEvent {
    /// The envelope line (no trailing newline) for this event at sequence `seq`.
    ///
    /// # Panics
    /// Never for payloads built by this crate's diffs; a payload that is not valid JSON is a
    /// programming error and is caught by the providers' table tests.
    pub fn to_line(&self, seq: u64) -> Vec<u8> {
        let payload: &RawValue = serde_json::from_str(&self.payload)
            .expect("diff produced a payload that is not valid JSON");
        let out = EnvelopeOut {
            id: &self.id,
            seq,
            provider: self.provider,
            account: &self.account,
            event_type: &self.event_type,
            occurred_at: format_ms(self.occurred_at),
            detected_at: format_ms(self.detected_at),
            payload,
        };
        serde_json::to_vec(&out).expect("envelope serializes")
    }
}

/// One outbox entry: its sequence number and the envelope line as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    pub line: Vec<u8>,
}

impl StoredEvent {
    /// Parses the envelope; a failure means the store holds something this version did not
    /// write, which is reported, never silently skipped.
    pub fn envelope(&self) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(&self.line)
    }
}

/// A deterministic event id: `evt_` + 32 hex digits of SHA-256 over the parts.
///
/// The parts name what caused the event (provider, account, member or company, event type,
/// document, and the state version). Detecting the same change again — after a crash, or from
/// a resync — gives the same id, so consumers can dedupe on it.
pub fn event_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut id = String::with_capacity(36);
    id.push_str("evt_");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEvent {
        NewEvent {
            id: event_id(&["caminvoice", "acme", "KHUID1", "DOCUMENT.DELIVERED", "d1"]),
            provider: "caminvoice",
            account: "acme".into(),
            event_type: "DOCUMENT.DELIVERED".into(),
            occurred_at: 1_709_795_767_859,
            detected_at: 1_709_795_790_002,
            subject: "KHUID1/d1".into(),
            payload: r#"{"type":"DOCUMENT.DELIVERED","document_id":"d1","endpoint_id":"KHUID1"}"#
                .into(),
        }
    }

    #[test]
    fn envelope_line_keeps_payload_bytes_and_field_order() {
        let ev = sample();
        let line = String::from_utf8(ev.to_line(17)).unwrap();
        let expected = format!(
            r#"{{"id":"{}","seq":17,"provider":"caminvoice","account":"acme","type":"DOCUMENT.DELIVERED","occurred_at":"2024-03-07T07:16:07.859Z","detected_at":"2024-03-07T07:16:30.002Z","payload":{}}}"#,
            ev.id, ev.payload
        );
        assert_eq!(line, expected);
        let back = StoredEvent {
            seq: 17,
            line: line.into_bytes(),
        }
        .envelope()
        .unwrap();
        assert_eq!(back.payload.get(), ev.payload);
        assert_eq!(back.seq, 17);
    }

    #[test]
    fn ids_are_deterministic_and_part_boundaries_matter() {
        assert_eq!(event_id(&["a", "b"]), event_id(&["a", "b"]));
        assert_ne!(event_id(&["ab", ""]), event_id(&["a", "b"]));
        assert_eq!(event_id(&["x"]).len(), 36);
        assert!(event_id(&["x"]).starts_with("evt_"));
    }
}
