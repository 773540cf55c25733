//! Fidelity: how closely the events pollhook emitted match the webhooks the provider would
//! have sent (the simulator's ground-truth journal). Used by `demo` and by the tests.
//!
//! Matching is by payload bytes, as a multiset: every ground-truth webhook must appear once
//! with an identical payload. Each match then has its envelope checked against the truth: the
//! `type`, `provider` and `account` the webhook belongs to, and `occurred_at`, the instant of
//! the change. Also counted: events nobody expected, duplicate event ids, and documents whose
//! events came in another order than the provider's.
//!
//! It reads the daemon's output with its own small `Envelope` struct and its own time
//! helpers: the oracle shares no code with the daemon it grades (this crate does not depend on
//! `pollhook`).

use crate::{pollhook_recipient, JournalEntry, SimCredentials};
use chrono::{DateTime, SecondsFormat};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// The fields of an envelope line that fidelity checks (the daemon's contract with its
/// consumers: README, "Event envelope").
#[derive(Debug, Deserialize)]
struct Envelope {
    id: String,
    provider: String,
    account: String,
    #[serde(rename = "type")]
    event_type: String,
    occurred_at: String,
    #[serde(default)]
    detected_at: String,
    payload: Box<RawValue>,
}

/// RFC 3339 UTC with milliseconds, as the envelope writes instants.
pub fn format_ms(ms: Millis) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An RFC 3339 instant in milliseconds.
fn parse_ms(text: &str) -> Option<Millis> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// One emitted event as read back from a JSONL log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub id: String,
    pub provider: String,
    pub account: String,
    pub event_type: String,
    pub occurred_at: String,
    /// When the daemon detected it (the detection latency is `detected_at − occurred_at`).
    pub detected_at: String,
    pub payload: String,
}

/// Reads every envelope line of a JSONL file.
pub fn read_jsonl(text: &str) -> Result<Vec<Emitted>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let env: Envelope = serde_json::from_str(l)
                .map_err(|e| format!("line {}: not an envelope: {e}", i + 1))?;
            Ok(Emitted {
                id: env.id,
                provider: env.provider,
                account: env.account,
                event_type: env.event_type,
                occurred_at: env.occurred_at,
                detected_at: env.detected_at,
                payload: env.payload.get().to_string(),
            })
        })
        .collect()
}

/// One ground-truth webhook, with the envelope a daemon configured by
/// [`crate::pollhook_config`] must give it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub provider: String,
    pub account: String,
    pub event_type: String,
    /// The instant of the change that caused the webhook.
    pub at: Millis,
    pub payload: String,
}

/// The journal entries at or after `since` as [`Expected`] events.
pub fn expected(journal: &[JournalEntry], creds: &SimCredentials, since: Millis) -> Vec<Expected> {
    journal
        .iter()
        .filter(|j| j.at.timestamp_millis() >= since)
        .map(|j| {
            let (provider, account) = pollhook_recipient(creds, j);
            Expected {
                provider: provider.to_string(),
                account,
                event_type: j.event_type.clone(),
                at: j.at.timestamp_millis(),
                payload: j.payload.clone(),
            }
        })
        .collect()
}

/// A matched event whose envelope disagrees with the ground truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `type`, `provider`, `account` or `occurred_at`.
    pub field: &'static str,
    pub expected: String,
    pub emitted: String,
    pub payload: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Ground-truth webhooks.
    pub expected: usize,
    /// Of those, emitted with an identical payload.
    pub matched: usize,
    /// Ground-truth payloads never emitted.
    pub missing: Vec<String>,
    /// Emitted payloads the ground truth does not have.
    pub unexpected: Vec<String>,
    /// Matched events whose envelope fields differ from the truth's.
    pub mismatches: Vec<Mismatch>,
    /// Event ids that occur more than once.
    pub duplicate_ids: usize,
    /// Documents whose matched events came in a different order than the ground truth.
    pub out_of_order: usize,
}

impl Report {
    pub fn percent(&self) -> f64 {
        if self.expected == 0 {
            100.0
        } else {
            100.0 * self.matched as f64 / self.expected as f64
        }
    }

    pub fn perfect(&self) -> bool {
        self.matched == self.expected
            && self.unexpected.is_empty()
            && self.mismatches.is_empty()
            && self.duplicate_ids == 0
            && self.out_of_order == 0
    }
}

/// The document (or entity) a payload is about: its ordering key. CamInvoice:
/// `endpoint_id/document_id`; OnlinePajak: `npwp/reference_number`.
fn subject(payload: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    let field = |path: &[&str]| {
        let mut x = &v;
        for k in path {
            x = &x[*k];
        }
        x.as_str().unwrap_or("").to_string()
    };
    match v.get("event_name") {
        Some(_) => format!(
            "{}/{}",
            field(&["npwp"]),
            field(&["event_data", "reference_number"])
        ),
        None => format!("{}/{}", field(&["endpoint_id"]), field(&["document_id"])),
    }
}

/// Compares the ground truth (in the provider's order) with emitted events (in log order).
pub fn compare(truth: &[Expected], emitted: &[Emitted]) -> Report {
    // Identical payloads (rare) pair up in order: the k-th truth with the k-th emitted.
    let mut pool: HashMap<&str, VecDeque<&Emitted>> = HashMap::new();
    for e in emitted {
        pool.entry(e.payload.as_str()).or_default().push_back(e);
    }
    let mut report = Report {
        expected: truth.len(),
        ..Report::default()
    };
    for t in truth {
        match pool
            .get_mut(t.payload.as_str())
            .and_then(VecDeque::pop_front)
        {
            Some(e) => {
                report.matched += 1;
                check_envelope(t, e, &mut report.mismatches);
            }
            None => report.missing.push(t.payload.clone()),
        }
    }
    for (payload, left) in pool {
        for _ in left {
            report.unexpected.push(payload.to_string());
        }
    }
    let mut ids = HashSet::new();
    report.duplicate_ids = emitted
        .iter()
        .filter(|e| !ids.insert(e.id.as_str()))
        .count();

    // Per subject, the emitted events that the truth has must come in the truth's order: a
    // subsequence of it (polling may miss overwritten ones, never reorder).
    let mut want: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for t in truth {
        want.entry(subject(&t.payload))
            .or_default()
            .push(&t.payload);
    }
    let mut got: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for e in emitted {
        got.entry(subject(&e.payload)).or_default().push(&e.payload);
    }
    for (s, w) in &want {
        let g = got.get(s).map(Vec::as_slice).unwrap_or_default();
        let mut rest = w.iter();
        let in_order = g
            .iter()
            .filter(|p| w.contains(p))
            .all(|p| rest.any(|x| x == p));
        if !in_order {
            report.out_of_order += 1;
        }
    }
    report
}

/// The envelope of `e` against the truth `t`. `occurred_at` is the change's instant; an
/// ENTITY.REVOKED is only ever seen through a refused refresh, so its instant is when pollhook
/// found out: never before the revocation.
fn check_envelope(t: &Expected, e: &Emitted, out: &mut Vec<Mismatch>) {
    let mut differ = |field, expected: &str, emitted: &str| {
        out.push(Mismatch {
            field,
            expected: expected.to_string(),
            emitted: emitted.to_string(),
            payload: t.payload.clone(),
        })
    };
    for (field, want, got) in [
        ("type", &t.event_type, &e.event_type),
        ("provider", &t.provider, &e.provider),
        ("account", &t.account, &e.account),
    ] {
        if want != got {
            differ(field, want, got);
        }
    }
    let on_time = match parse_ms(&e.occurred_at) {
        Some(at) if t.event_type == "ENTITY.REVOKED" => at >= t.at,
        Some(at) => at == t.at,
        None => false,
    };
    if !on_time {
        differ("occurred_at", &format_ms(t.at), &e.occurred_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Millis = 1_709_795_767_859;

    fn type_of(payload: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        v.get("type")
            .or_else(|| v.get("event_name"))
            .and_then(|t| t.as_str())
            .unwrap()
            .to_string()
    }

    fn t(payload: &str) -> Expected {
        Expected {
            provider: "caminvoice".into(),
            account: "acme".into(),
            event_type: type_of(payload),
            at: AT,
            payload: payload.into(),
        }
    }

    fn em(id: &str, payload: &str) -> Emitted {
        Emitted {
            id: id.into(),
            provider: "caminvoice".into(),
            account: "acme".into(),
            event_type: type_of(payload),
            occurred_at: format_ms(AT),
            detected_at: format_ms(AT),
            payload: payload.into(),
        }
    }

    const D1: &str = r#"{"type":"DOCUMENT.DELIVERED","document_id":"d","endpoint_id":"K"}"#;
    const S1: &str = r#"{"type":"DOCUMENT.STATUS_UPDATED","document_id":"d","endpoint_id":"K","status":"ACCEPTED"}"#;
    const R2: &str = r#"{"type":"DOCUMENT.RECEIVED","document_id":"e","endpoint_id":"K"}"#;
    const X1: &str = r#"{"type":"ENTITY.REVOKED","endpoint_id":"K"}"#;

    #[test]
    fn events_of_different_invoices_may_interleave() {
        let a = r#"{"npwp":"1","event_name":"PPN_INVOICE_APPROVED","event_data":{"reference_number":"a"}}"#;
        let b = r#"{"npwp":"2","event_name":"PPN_INVOICE_APPROVED","event_data":{"reference_number":"b"}}"#;
        let r = compare(&[t(a), t(b)], &[em("1", b), em("2", a)]);
        assert!(r.perfect(), "{r:?}");
    }

    #[test]
    fn a_perfect_match() {
        let r = compare(&[t(D1), t(S1)], &[em("1", D1), em("2", S1)]);
        assert!(r.perfect(), "{r:?}");
        assert_eq!(r.percent(), 100.0);
        // a missed event is missing, not disorder
        let r = compare(&[t(D1), t(S1), t(S1)], &[em("1", D1), em("2", S1)]);
        assert_eq!((r.missing.len(), r.out_of_order), (1, 0));
    }

    #[test]
    fn missing_unexpected_duplicates_and_order_are_each_counted() {
        let r = compare(
            &[t(D1), t(S1), t(R2)],
            &[em("2", S1), em("1", D1), em("1", D1)],
        );
        assert_eq!(r.matched, 2);
        assert_eq!(r.missing, vec![R2.to_string()]);
        assert_eq!(r.unexpected, vec![D1.to_string()]);
        assert_eq!(r.duplicate_ids, 1);
        assert_eq!(r.out_of_order, 1);
        assert!(!r.perfect());
    }

    #[test]
    fn a_wrong_envelope_field_spoils_a_payload_match() {
        type Spoil = fn(&mut Emitted);
        let wrong: [(&str, Spoil); 4] = [
            ("type", |e| e.event_type = "DOCUMENT.RECEIVED".into()),
            ("provider", |e| e.provider = "onlinepajak".into()),
            ("account", |e| e.account = "other".into()),
            ("occurred_at", |e| e.occurred_at = format_ms(AT + 1)),
        ];
        for (field, spoil) in wrong {
            let mut e = em("1", D1);
            spoil(&mut e);
            let r = compare(&[t(D1)], &[e.clone()]);
            assert_eq!(r.matched, 1, "the payload still matches");
            assert!(!r.perfect(), "{field}");
            assert_eq!(r.mismatches.len(), 1, "{field}: {r:?}");
            assert_eq!(r.mismatches[0].field, field);
            assert_eq!(r.mismatches[0].payload, D1);
        }
        let mut e = em("1", D1);
        e.occurred_at = "not a time".into();
        assert_eq!(compare(&[t(D1)], &[e]).mismatches[0].field, "occurred_at");
    }

    #[test]
    fn a_revocation_may_be_dated_when_it_was_detected_but_never_before_it() {
        let mut later = em("1", X1);
        later.occurred_at = format_ms(AT + 30_000);
        assert!(compare(&[t(X1)], &[later]).perfect());
        let mut earlier = em("1", X1);
        earlier.occurred_at = format_ms(AT - 1);
        assert_eq!(compare(&[t(X1)], &[earlier]).mismatches.len(), 1);
    }
}
