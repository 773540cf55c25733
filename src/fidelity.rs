//! Fidelity: how closely the events pollhook emitted match the webhooks the provider would
//! have sent (the simulator's ground-truth journal). Used by `demo` and by the tests.
//!
//! Matching is by payload bytes, as a multiset: every ground-truth webhook must appear once
//! with an identical payload. Also counted: events nobody expected, duplicate event ids, and
//! documents whose events came in another order than the provider's.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One emitted event as read back from a JSONL log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub id: String,
    pub event_type: String,
    pub payload: String,
}

/// Reads every envelope line of a JSONL file.
pub fn read_jsonl(text: &str) -> Result<Vec<Emitted>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let env: crate::event::Envelope = serde_json::from_str(l)
                .map_err(|e| format!("line {}: not an envelope: {e}", i + 1))?;
            Ok(Emitted {
                id: env.id,
                event_type: env.event_type,
                payload: env.payload.get().to_string(),
            })
        })
        .collect()
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

/// Compares ground-truth payloads (in the provider's order) with emitted events (in log order).
pub fn compare(truth: &[String], emitted: &[Emitted]) -> Report {
    let mut pool: HashMap<&str, usize> = HashMap::new();
    for e in emitted {
        *pool.entry(e.payload.as_str()).or_default() += 1;
    }
    let mut report = Report {
        expected: truth.len(),
        ..Report::default()
    };
    for t in truth {
        match pool.get_mut(t.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                report.matched += 1;
            }
            _ => report.missing.push(t.clone()),
        }
    }
    for (payload, n) in pool {
        for _ in 0..n {
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
        want.entry(subject(t)).or_default().push(t);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn em(id: &str, p: &str) -> Emitted {
        Emitted {
            id: id.into(),
            event_type: "T".into(),
            payload: p.into(),
        }
    }

    const D1: &str = r#"{"type":"DOCUMENT.DELIVERED","document_id":"d","endpoint_id":"K"}"#;
    const S1: &str = r#"{"type":"DOCUMENT.STATUS_UPDATED","document_id":"d","endpoint_id":"K","status":"ACCEPTED"}"#;
    const R2: &str = r#"{"type":"DOCUMENT.RECEIVED","document_id":"e","endpoint_id":"K"}"#;

    #[test]
    fn events_of_different_invoices_may_interleave() {
        let a = r#"{"npwp":"1","event_name":"PPN_INVOICE_APPROVED","event_data":{"reference_number":"a"}}"#;
        let b = r#"{"npwp":"2","event_name":"PPN_INVOICE_APPROVED","event_data":{"reference_number":"b"}}"#;
        let r = compare(&[a.into(), b.into()], &[em("1", b), em("2", a)]);
        assert!(r.perfect(), "{r:?}");
    }

    #[test]
    fn a_perfect_match() {
        let r = compare(&[D1.into(), S1.into()], &[em("1", D1), em("2", S1)]);
        assert!(r.perfect(), "{r:?}");
        assert_eq!(r.percent(), 100.0);
        // a missed event is missing, not disorder
        let r = compare(
            &[D1.into(), S1.into(), S1.into()],
            &[em("1", D1), em("2", S1)],
        );
        assert_eq!((r.missing.len(), r.out_of_order), (1, 0));
    }

    #[test]
    fn missing_unexpected_duplicates_and_order_are_each_counted() {
        let r = compare(
            &[D1.into(), S1.into(), R2.into()],
            &[em("2", S1), em("1", D1), em("1", D1)],
        );
        assert_eq!(r.matched, 2);
        assert_eq!(r.missing, vec![R2.to_string()]);
        assert_eq!(r.unexpected, vec![D1.to_string()]);
        assert_eq!(r.duplicate_ids, 1);
        assert_eq!(r.out_of_order, 1);
        assert!(!r.perfect());
    }
}
