//! The OnlinePajak diff: stored invoice version + one observed invoice -> new version and at
//! most one PPN_INVOICE_APPROVED. Pure functions, tested by tables.
//!
//! Rules (onlinepajak.md, synthesis rule): an invoice whose approval status moves into APPROVED
//! or REJECTED — from any other state, or as a new revision / document type (a replacement or
//! a cancellation approved again) — gives one event, `approved` = (status == APPROVED). First
//! seen already answered: an event only when DJP answered at or after `start` (`approvedAt`,
//! or `updatedAt` when the API gives no `approvedAt`). Seen twice: nothing. A timestamp beyond
//! `now + MAX_FUTURE_SKEW` is quarantined: kept as the version, judged as `now`.

use super::api::ApiMap;
use super::model::{Invoice, InvoiceState};
use crate::event::event_id;
use crate::time::{format_ms, judged, parse_timestamp, supersedes, trust_limit, Millis};
use serde::Serialize;

pub const APPROVED_EVENT: &str = "PPN_INVOICE_APPROVED";

/// The verdict for one observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The version to store; `None` when the observation is not newer than the stored one.
    pub record: Option<InvoiceState>,
    /// `Some(approved)` when a PPN_INVOICE_APPROVED is due.
    pub emit: Option<bool>,
}

/// When DJP answered, as judged at `now`: `approvedAt`, else `updatedAt`; a quarantined one
/// stands for `now`. The event's `occurred_at`, and what first sight is judged by.
pub fn answered_at(inv: &Invoice, updated_at: Millis, now: Millis) -> Millis {
    let at = inv
        .approved_at
        .as_deref()
        .and_then(parse_timestamp)
        .unwrap_or(updated_at);
    judged(at, now)
}

/// Whether an observed invoice stamped `updated_at` changes the stored version `prev`. A
/// stored quarantined stamp cannot say "unchanged": any other stamp, status, revision or
/// document type does.
pub fn changed(
    prev: &InvoiceState,
    inv: &Invoice,
    updated_at: Millis,
    status: &str,
    limit: Millis,
) -> bool {
    supersedes(updated_at, prev.updated_at, limit)
        || (prev.updated_at > limit
            && (prev.status != status
                || prev.revision != inv.revision
                || prev.document_type != inv.document_type))
}

/// Compares an observed invoice (complete: status and `updatedAt` known) with the stored
/// version, at `now`.
pub fn diff(
    prev: Option<&InvoiceState>,
    inv: &Invoice,
    updated_at: Millis,
    status: &str,
    start: Millis,
    map: &ApiMap,
    now: Millis,
) -> Verdict {
    if prev.is_some_and(|p| !changed(p, inv, updated_at, status, trust_limit(now))) {
        return Verdict {
            record: None,
            emit: None,
        };
    }
    let record = InvoiceState {
        status: status.to_string(),
        revision: inv.revision,
        document_type: inv.document_type.clone(),
        updated_at,
    };
    let outcome = map.outcome(status);
    let emit = match (prev, outcome) {
        (_, None) => None,
        (Some(p), Some(approved)) => {
            let same_answer = p.status == record.status
                && p.revision == record.revision
                && p.document_type == record.document_type;
            (!same_answer).then_some(approved)
        }
        (None, Some(approved)) => (answered_at(inv, updated_at, now) >= start).then_some(approved),
    };
    Verdict {
        record: Some(record),
        emit,
    }
}

/// The webhook body, keys in the documented order.
#[derive(Serialize)]
struct Payload<'a> {
    npwp: &'a str,
    user_email: &'a str,
    event_name: &'a str,
    event_date: &'a str,
    event_data: EventData<'a>,
}

#[derive(Serialize)]
struct EventData<'a> {
    reference_number: &'a str,
    document_number: &'a str,
    client_reference_id: &'a str,
    commercial_invoice_number: &'a str,
    tax_period: &'a str,
    revision: i64,
    #[serde(rename = "type")]
    kind: &'a str,
    approved: bool,
    djp_response_message: &'a str,
    pdf_download_link: &'a str,
}

/// The PPN_INVOICE_APPROVED body for `inv`. `account_npwp` stands in when the invoice does not
/// name its company; `detected_at` when it has no `approvedAt`.
pub fn payload(
    inv: &Invoice,
    approved: bool,
    account_npwp: &str,
    detected_at: Millis,
    map: &ApiMap,
) -> String {
    let fallback_date = format_ms(detected_at);
    let p = Payload {
        npwp: if inv.npwp.is_empty() {
            account_npwp
        } else {
            &inv.npwp
        },
        user_email: &inv.created_by,
        event_name: APPROVED_EVENT,
        event_date: inv.approved_at.as_deref().unwrap_or(&fallback_date),
        event_data: EventData {
            reference_number: &inv.id,
            document_number: &inv.document_number,
            client_reference_id: &inv.client_reference_id,
            commercial_invoice_number: &inv.commercial_invoice_number,
            tax_period: &inv.tax_period,
            revision: inv.revision,
            kind: map.type_name(&inv.document_type),
            approved,
            djp_response_message: &inv.djp_response_message,
            pdf_download_link: &inv.pdf_download_link,
        },
    };
    serde_json::to_string(&p).expect("payload serializes")
}

/// Derived from (npwp, id, revision, documentType, approvalStatus): re-detection gives the same id.
pub fn id(account: &str, npwp: &str, inv: &Invoice, status: &str) -> String {
    event_id(&[
        "onlinepajak",
        account,
        npwp,
        APPROVED_EVENT,
        &inv.id,
        &inv.revision.to_string(),
        &inv.document_type,
        status,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Millis = 1_000_000;
    const NOW: Millis = START + 100_000_000;

    fn inv(revision: i64, document_type: &str, approved_at: Option<Millis>) -> Invoice {
        Invoice {
            id: "490e6ab5-3aa2-4e76-9569-c84aecc56c73".into(),
            document_number: "001-19.00000005".into(),
            client_reference_id: "FC8C2DA9A924EB81DBC695E8A587F".into(),
            commercial_invoice_number: "INV/2019/I/0001-A".into(),
            tax_period: "2019/01".into(),
            revision,
            document_type: document_type.into(),
            approval_status: None,
            djp_response_message: "Approved Successfully".into(),
            pdf_download_link: "".into(),
            created_by: "".into(),
            npwp: "12.312.312.0-001.123".into(),
            approved_at: approved_at.map(format_ms),
            updated_at: None,
        }
    }

    fn st(status: &str, revision: i64, t: &str, at: Millis) -> InvoiceState {
        InvoiceState {
            status: status.into(),
            revision,
            document_type: t.into(),
            updated_at: at,
        }
    }

    /// (prev, revision, type, status, approved_at, updated_at, expected emit, stored?)
    type Case<'a> = (
        Option<InvoiceState>,
        i64,
        &'a str,
        &'a str,
        Option<Millis>,
        Millis,
        Option<bool>,
        bool,
    );

    #[test]
    fn approvals_rejections_revisions_and_first_sight() {
        let m = ApiMap::default();
        let t = START + 500;
        // (prev, revision, type, status, approved_at, updated_at, expected emit, stored?)
        let cases: Vec<Case> = vec![
            (
                Some(st("APPROVAL_IN_PROGRESS", 0, "1", START)),
                0,
                "1",
                "APPROVED",
                Some(t),
                t,
                Some(true),
                true,
            ),
            (
                Some(st("APPROVAL_IN_PROGRESS", 0, "1", START)),
                0,
                "1",
                "REJECTED",
                Some(t),
                t,
                Some(false),
                true,
            ),
            (
                Some(st("DRAFT", 0, "1", START)),
                0,
                "1",
                "APPROVED",
                Some(t),
                t,
                Some(true),
                true,
            ),
            (
                Some(st("DRAFT", 0, "1", START)),
                0,
                "1",
                "APPROVAL_IN_PROGRESS",
                None,
                t,
                None,
                true,
            ),
            // a replacement (new revision, type 5) approved again: a new event
            (
                Some(st("APPROVED", 0, "1", START)),
                1,
                "5",
                "APPROVED",
                Some(t),
                t,
                Some(true),
                true,
            ),
            (
                Some(st("APPROVED", 0, "1", START)),
                1,
                "4",
                "APPROVED",
                Some(t),
                t,
                Some(true),
                true,
            ),
            // the same answer with a newer updatedAt (e.g. a PDF link added): nothing
            (
                Some(st("APPROVED", 1, "5", START)),
                1,
                "5",
                "APPROVED",
                Some(t),
                t,
                None,
                true,
            ),
            // seen twice / older: no change
            (
                Some(st("APPROVED", 0, "1", t)),
                0,
                "1",
                "APPROVED",
                Some(t),
                t,
                None,
                false,
            ),
            (
                Some(st("APPROVED", 0, "1", t)),
                0,
                "1",
                "REJECTED",
                Some(t),
                t - 1,
                None,
                false,
            ),
            // first sight, answered after start / before start / no approvedAt
            (None, 0, "1", "APPROVED", Some(t), t, Some(true), true),
            (None, 0, "1", "REJECTED", Some(START), t, Some(false), true),
            (None, 0, "1", "APPROVED", Some(START - 1), t, None, true),
            (None, 0, "1", "APPROVED", None, t, Some(true), true),
            (None, 0, "1", "APPROVED", None, START - 1, None, true),
            (None, 0, "1", "DRAFT", None, t, None, true),
            // an unknown status is stored and carried, never an event
            (
                Some(st("APPROVED", 0, "1", START)),
                0,
                "1",
                "ARCHIVED",
                None,
                t,
                None,
                true,
            ),
        ];
        for (i, (prev, rev, ty, status, approved_at, updated, want, stored)) in
            cases.into_iter().enumerate()
        {
            let o = diff(
                prev.as_ref(),
                &inv(rev, ty, approved_at),
                updated,
                status,
                START,
                &m,
                NOW,
            );
            assert_eq!(o.emit, want, "case {i}");
            assert_eq!(o.record.is_some(), stored, "case {i}");
        }
    }

    #[test]
    fn a_timestamp_from_the_future_is_kept_but_judged_as_now() {
        let m = ApiMap::default();
        let far = i64::MAX;
        // First sight, answered "in 9999": judged at NOW, after start: emitted.
        let o = diff(
            None,
            &inv(0, "1", Some(253_402_300_799_999)),
            far,
            "APPROVED",
            START,
            &m,
            NOW,
        );
        assert_eq!(
            (o.emit, o.record.map(|r| r.updated_at)),
            (Some(true), Some(far))
        );
        assert_eq!(answered_at(&inv(0, "1", None), far, NOW), NOW);
        assert_eq!(answered_at(&inv(0, "1", Some(START)), far, NOW), START);
        // The poisoned version again: nothing; a sane one after it: a change.
        let poisoned = st("APPROVED", 0, "1", far);
        let o = diff(
            Some(&poisoned),
            &inv(0, "1", None),
            far,
            "APPROVED",
            START,
            &m,
            NOW,
        );
        assert_eq!(o.record, None);
        let o = diff(
            Some(&poisoned),
            &inv(1, "5", None),
            START + 5,
            "APPROVED",
            START,
            &m,
            NOW,
        );
        assert_eq!(o.emit, Some(true));
        // A new answer under the same poisoned stamp: a change too.
        let o = diff(
            Some(&poisoned),
            &inv(0, "1", None),
            far,
            "REJECTED",
            START,
            &m,
            NOW,
        );
        assert_eq!(o.emit, Some(false));
    }

    #[test]
    fn the_payload_matches_the_documented_sample_in_keys_order_and_types() {
        let sample = r#"{
          "npwp": "12.312.312.0-001.123",
          "user_email": "",
          "event_name": "PPN_INVOICE_APPROVED",
          "event_date": "2019-08-28T11:55:37.151Z",
          "event_data": {
            "reference_number": "490e6ab5-3aa2-4e76-9569-c84aecc56c73",
            "document_number": "001-19.00000005",
            "client_reference_id": "FC8C2DA9A924EB81DBC695E8A587F",
            "commercial_invoice_number": "INV/2019/I/0001-A",
            "tax_period": "2019/01",
            "revision": 0,
            "type": "normal",
            "approved": true,
            "djp_response_message": "Approved Successfully",
            "pdf_download_link": ""
          }
        }"#;
        let mut i = inv(0, "1", None);
        i.approved_at = Some("2019-08-28T11:55:37.151Z".into());
        let ours = payload(&i, true, "unused", 0, &ApiMap::default());
        // Byte equality with the sample, re-serialized compactly in its own key order.
        let sample_value: serde_json::Value = serde_json::from_str(sample).unwrap();
        assert_eq!(ours, serde_json::to_string(&sample_value).unwrap());
        // And the JSON types, explicitly.
        let v: serde_json::Value = serde_json::from_str(&ours).unwrap();
        assert!(v["event_data"]["revision"].is_i64());
        assert!(v["event_data"]["approved"].is_boolean());
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "npwp",
                "user_email",
                "event_name",
                "event_date",
                "event_data"
            ]
        );
    }

    #[test]
    fn fallbacks_and_type_names() {
        let mut i = inv(2, "2", None);
        i.npwp.clear();
        let p = payload(
            &i,
            false,
            "0011223344556677",
            1_709_795_767_859,
            &ApiMap::default(),
        );
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["npwp"], "0011223344556677");
        assert_eq!(v["event_date"], "2024-03-07T07:16:07.859Z");
        assert_eq!(v["event_data"]["type"], "2");
        assert_eq!(v["event_data"]["approved"], false);
        let a = id("acc", "n", &inv(0, "1", None), "APPROVED");
        assert_eq!(a, id("acc", "n", &inv(0, "1", None), "APPROVED"));
        assert_ne!(a, id("acc", "n", &inv(1, "5", None), "APPROVED"));
        assert_ne!(a, id("acc", "n", &inv(0, "1", None), "REJECTED"));
    }
}
