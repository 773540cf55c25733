//! The CamInvoice diff: stored state + one observation -> new state + the webhooks
//! CamInvoice would have sent. Pure functions, no I/O, tested by tables.
//!
//! The rules are caminvoice.md's "How polling maps to those events":
//! - RECEIVE side: first sight -> DOCUMENT.RECEIVED; later changes send nothing (the customer
//!   made them).
//! - SEND side: becoming DELIVERED -> DOCUMENT.DELIVERED; becoming a customer status (or an
//!   unknown one) -> DOCUMENT.STATUS_UPDATED; a jump that skipped delivery emits DELIVERED first.
//! - First sight is judged against `start`, so nothing the webhooks sent before it is emitted.
//!   Once the member's baseline list walk is complete, a document seen for the first time was
//!   not in it, so it appeared after the baseline (and after `start`): it counts as new even if
//!   its `created_at` is older (e.g. a VALID document the customer could not see yet).
//! - An observation not newer than the stored one changes nothing (seen twice = one event).
//! - A timestamp beyond `now + MAX_FUTURE_SKEW` is quarantined (`time::judged`): it is kept as
//!   the document's version (the same answer again changes nothing) but judged as `now`
//!   wherever an instant decides; a stored quarantined version is replaced by any other.

use super::model::{DocState, Side};
use crate::event::event_id;
use crate::time::{judged, supersedes, trust_limit, Millis};
use serde::Serialize;

pub const DELIVERED: &str = "DOCUMENT.DELIVERED";
pub const RECEIVED: &str = "DOCUMENT.RECEIVED";
pub const STATUS_UPDATED: &str = "DOCUMENT.STATUS_UPDATED";
pub const REVOKED: &str = "ENTITY.REVOKED";

/// Where a status stands in the document's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Validated, not yet on the customer's side (`VALID`, pre-2025 `PENDING`).
    Submitted,
    /// On the customer's side (`DELIVERED`, pre-2025 `SENT`).
    Delivered,
    /// Set by the customer: ACKNOWLEDGED .. PAID, REJECTED, and any status we do not know.
    CustomerSet,
}

fn phase(status: &str) -> Phase {
    match status {
        "VALID" | "PENDING" => Phase::Submitted,
        "DELIVERED" | "SENT" => Phase::Delivered,
        _ => Phase::CustomerSet,
    }
}

/// One look at a document, from a detail or a list item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation<'a> {
    pub side: Side,
    pub status: &'a str,
    pub created_at: Option<Millis>,
    pub updated_at: Millis,
}

/// A webhook to emit, before it has a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    Delivered,
    Received,
    StatusUpdated(String),
}

/// The diff's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The record to store, or `None` when the observation is not newer than what is stored.
    pub record: Option<DocState>,
    pub emits: Vec<Emit>,
}

/// Whether an observation stamped `at` (with `status`, when known) may change the stored
/// `prev`. A stored quarantined stamp cannot say "unchanged": any other stamp, any other
/// status, or an unknown status (a poll item: fetch the detail) may.
pub fn changed(prev: &DocState, at: Millis, status: Option<&str>, limit: Millis) -> bool {
    if prev.updated_at > limit {
        supersedes(at, prev.updated_at, limit) || status.map_or(true, |s| s != prev.status)
    } else {
        supersedes(at, prev.updated_at, limit)
    }
}

/// Compares an observation with the stored record. `start` is the member's start instant;
/// `after_baseline` says the member's baseline list walk completed before this observation;
/// `now` is when it was made (timestamps beyond `now + MAX_FUTURE_SKEW` are judged as `now`).
pub fn diff(
    prev: Option<&DocState>,
    obs: &Observation,
    start: Millis,
    after_baseline: bool,
    now: Millis,
) -> Verdict {
    if let Some(p) = prev {
        if !changed(p, obs.updated_at, Some(obs.status), trust_limit(now)) {
            return Verdict {
                record: None,
                emits: vec![],
            };
        }
    }
    let updated_at = judged(obs.updated_at, now);
    let created_at = obs.created_at.map(|c| judged(c, now));
    let record = Some(DocState {
        side: obs.side,
        status: obs.status.to_string(),
        updated_at: obs.updated_at,
    });
    let phase_now = phase(obs.status);
    let emits = match (prev, obs.side) {
        // Seen before: only the supplier hears of changes.
        (Some(_), Side::Receive) => vec![],
        (Some(p), Side::Send) if p.status == obs.status => vec![],
        (Some(p), Side::Send) => match (phase(&p.status), phase_now) {
            (Phase::Submitted, Phase::Delivered) => vec![Emit::Delivered],
            (Phase::Submitted, Phase::CustomerSet) => {
                vec![Emit::Delivered, Emit::StatusUpdated(obs.status.to_string())]
            }
            (_, Phase::CustomerSet) => vec![Emit::StatusUpdated(obs.status.to_string())],
            // Back to an earlier phase: no webhook exists for that.
            (_, Phase::Submitted) | (Phase::Delivered | Phase::CustomerSet, Phase::Delivered) => {
                vec![]
            }
        },
        // First sight of history: a silent baseline.
        (None, _) if updated_at < start => vec![],
        (None, Side::Send) => {
            let created_after_start = after_baseline || created_at.is_some_and(|c| c >= start);
            match phase_now {
                Phase::Submitted => vec![],
                Phase::Delivered => vec![Emit::Delivered],
                Phase::CustomerSet if created_after_start => {
                    vec![Emit::Delivered, Emit::StatusUpdated(obs.status.to_string())]
                }
                Phase::CustomerSet => vec![Emit::StatusUpdated(obs.status.to_string())],
            }
        }
        (None, Side::Receive) => {
            if after_baseline
                || created_at.is_some_and(|c| c >= start)
                || phase_now == Phase::Delivered
            {
                vec![Emit::Received]
            } else {
                vec![]
            }
        }
    };
    Verdict { record, emits }
}

/// The document webhook body, keys in the documented order.
#[derive(Serialize)]
struct DocumentPayload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    document_id: &'a str,
    endpoint_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
}

/// The ENTITY.REVOKED webhook body.
#[derive(Serialize)]
struct RevokedPayload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    endpoint_id: &'a str,
}

impl Emit {
    pub fn event_type(&self) -> &'static str {
        match self {
            Emit::Delivered => DELIVERED,
            Emit::Received => RECEIVED,
            Emit::StatusUpdated(_) => STATUS_UPDATED,
        }
    }

    /// The exact webhook body for this emit.
    pub fn payload(&self, document_id: &str, endpoint_id: &str) -> String {
        let p = DocumentPayload {
            event_type: self.event_type(),
            document_id,
            endpoint_id,
            status: match self {
                Emit::StatusUpdated(s) => Some(s),
                _ => None,
            },
        };
        serde_json::to_string(&p).expect("payload serializes")
    }

    /// The deterministic id. Delivery and receipt happen once per document; a status update is
    /// identified by the status and the `updated_at` that carried it.
    pub fn id(
        &self,
        account: &str,
        endpoint_id: &str,
        document_id: &str,
        updated_at: Millis,
    ) -> String {
        let base = [
            "caminvoice",
            account,
            endpoint_id,
            self.event_type(),
            document_id,
        ];
        match self {
            Emit::StatusUpdated(s) => {
                let at = updated_at.to_string();
                event_id(&[&base[..], &[s.as_str(), at.as_str()]].concat())
            }
            _ => event_id(&base),
        }
    }
}

/// The ENTITY.REVOKED body and id. `token_fingerprint` makes a revoke after a reconnect a new event.
pub fn revoked(account: &str, endpoint_id: &str, token_fingerprint: &str) -> (String, String) {
    let payload = serde_json::to_string(&RevokedPayload {
        event_type: REVOKED,
        endpoint_id,
    })
    .expect("payload serializes");
    let id = event_id(&[
        "caminvoice",
        account,
        endpoint_id,
        REVOKED,
        token_fingerprint,
    ]);
    (payload, id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Emit::*;

    const START: Millis = 1_000_000;
    const BEFORE: Millis = START - 10;
    const AFTER: Millis = START + 10;
    /// When the observations are made: every stamp of the tables is long before it.
    const NOW: Millis = START + 100_000_000;

    fn st(side: Side, status: &str, at: Millis) -> DocState {
        DocState {
            side,
            status: status.into(),
            updated_at: at,
        }
    }

    fn su(s: &str) -> Emit {
        StatusUpdated(s.into())
    }

    /// (prev, side, status, created_at, updated_at, expected emits, stored?)
    type Case<'a> = (
        Option<(&'a str, Millis)>,
        Side,
        &'a str,
        Option<Millis>,
        Millis,
        Vec<Emit>,
        bool,
    );

    fn check(cases: Vec<Case>) {
        check_with(false, cases)
    }

    fn check_with(after_baseline: bool, cases: Vec<Case>) {
        for (i, (prev, side, status, created, updated, want, stored)) in
            cases.into_iter().enumerate()
        {
            let prev_state = prev.map(|(s, at)| st(side, s, at));
            let obs = Observation {
                side,
                status,
                created_at: created,
                updated_at: updated,
            };
            let out = diff(prev_state.as_ref(), &obs, START, after_baseline, NOW);
            assert_eq!(out.emits, want, "case {i}: {prev:?} -> {status} ({side:?})");
            assert_eq!(out.record.is_some(), stored, "case {i}: stored?");
            if let Some(r) = out.record {
                assert_eq!(r, st(side, status, updated), "case {i}");
            }
        }
    }

    #[test]
    fn supplier_side_transitions() {
        use Side::Send as S;
        let t = AFTER + 100;
        check(vec![
            (
                Some(("VALID", AFTER)),
                S,
                "DELIVERED",
                None,
                t,
                vec![Delivered],
                true,
            ),
            (
                Some(("PENDING", AFTER)),
                S,
                "SENT",
                None,
                t,
                vec![Delivered],
                true,
            ),
            (
                Some(("DELIVERED", AFTER)),
                S,
                "ACKNOWLEDGED",
                None,
                t,
                vec![su("ACKNOWLEDGED")],
                true,
            ),
            (
                Some(("ACKNOWLEDGED", AFTER)),
                S,
                "IN_PROCESS",
                None,
                t,
                vec![su("IN_PROCESS")],
                true,
            ),
            (
                Some(("IN_PROCESS", AFTER)),
                S,
                "UNDER_QUERY",
                None,
                t,
                vec![su("UNDER_QUERY")],
                true,
            ),
            (
                Some(("UNDER_QUERY", AFTER)),
                S,
                "CONDITIONALLY_ACCEPTED",
                None,
                t,
                vec![su("CONDITIONALLY_ACCEPTED")],
                true,
            ),
            (
                Some(("CONDITIONALLY_ACCEPTED", AFTER)),
                S,
                "ACCEPTED",
                None,
                t,
                vec![su("ACCEPTED")],
                true,
            ),
            (
                Some(("ACCEPTED", AFTER)),
                S,
                "PAID",
                None,
                t,
                vec![su("PAID")],
                true,
            ),
            (
                Some(("DELIVERED", AFTER)),
                S,
                "REJECTED",
                None,
                t,
                vec![su("REJECTED")],
                true,
            ),
            // skipped DELIVERED: the webhooks would have sent both
            (
                Some(("VALID", AFTER)),
                S,
                "ACCEPTED",
                None,
                t,
                vec![Delivered, su("ACCEPTED")],
                true,
            ),
            // unknown status: carried through as a string
            (
                Some(("DELIVERED", AFTER)),
                S,
                "ESCALATED_TO_AUDIT",
                None,
                t,
                vec![su("ESCALATED_TO_AUDIT")],
                true,
            ),
            (
                Some(("VALID", AFTER)),
                S,
                "ESCALATED_TO_AUDIT",
                None,
                t,
                vec![Delivered, su("ESCALATED_TO_AUDIT")],
                true,
            ),
            // same status, newer updated_at: store, emit nothing
            (
                Some(("ACCEPTED", AFTER)),
                S,
                "ACCEPTED",
                None,
                t,
                vec![],
                true,
            ),
            // backwards in phase: nothing to send
            (
                Some(("ACCEPTED", AFTER)),
                S,
                "DELIVERED",
                None,
                t,
                vec![],
                true,
            ),
            (
                Some(("DELIVERED", AFTER)),
                S,
                "VALID",
                None,
                t,
                vec![],
                true,
            ),
            // the same observation twice, or an older one: no change at all
            (Some(("ACCEPTED", t)), S, "ACCEPTED", None, t, vec![], false),
            (
                Some(("DELIVERED", t)),
                S,
                "ACCEPTED",
                None,
                t,
                vec![],
                false,
            ),
            (Some(("PAID", t)), S, "ACCEPTED", None, t - 1, vec![], false),
        ]);
    }

    #[test]
    fn customer_side_hears_only_of_arrival() {
        use Side::Receive as R;
        let t = AFTER + 100;
        check(vec![
            (
                Some(("DELIVERED", AFTER)),
                R,
                "ACCEPTED",
                None,
                t,
                vec![],
                true,
            ),
            (Some(("ACCEPTED", AFTER)), R, "PAID", None, t, vec![], true),
            (None, R, "DELIVERED", Some(AFTER), t, vec![Received], true),
            (None, R, "DELIVERED", Some(BEFORE), t, vec![Received], true),
            (None, R, "ACCEPTED", Some(AFTER), t, vec![Received], true),
            // created before start and already acted on: received before start
            (None, R, "ACCEPTED", Some(BEFORE), t, vec![], true),
            (None, R, "ACCEPTED", None, t, vec![], true),
        ]);
    }

    #[test]
    fn first_sight_is_judged_against_start() {
        use Side::{Receive as R, Send as S};
        check(vec![
            // history: a silent baseline, whatever the status
            (None, S, "DELIVERED", Some(BEFORE), BEFORE, vec![], true),
            (None, S, "PAID", Some(BEFORE - 5), BEFORE, vec![], true),
            (None, R, "DELIVERED", Some(BEFORE), BEFORE, vec![], true),
            // after start
            (None, S, "VALID", Some(AFTER), AFTER, vec![], true),
            (
                None,
                S,
                "DELIVERED",
                Some(BEFORE),
                AFTER,
                vec![Delivered],
                true,
            ),
            (
                None,
                S,
                "ACCEPTED",
                Some(AFTER),
                AFTER,
                vec![Delivered, su("ACCEPTED")],
                true,
            ),
            (
                None,
                S,
                "ACCEPTED",
                Some(BEFORE),
                AFTER,
                vec![su("ACCEPTED")],
                true,
            ),
            (None, S, "MYSTERY", None, AFTER, vec![su("MYSTERY")], true),
            // exactly at start counts as after
            (
                None,
                S,
                "DELIVERED",
                Some(START),
                START,
                vec![Delivered],
                true,
            ),
        ]);
    }

    #[test]
    fn after_a_complete_baseline_a_first_sight_is_new_whatever_its_created_at() {
        use Side::{Receive as R, Send as S};
        let t = AFTER + 100;
        check_with(
            true,
            vec![
                // a VALID document the customer could not see at the baseline, acted on since
                (None, R, "ACCEPTED", Some(BEFORE), t, vec![Received], true),
                (
                    None,
                    S,
                    "ACCEPTED",
                    Some(BEFORE),
                    t,
                    vec![Delivered, su("ACCEPTED")],
                    true,
                ),
                (None, S, "VALID", Some(BEFORE), t, vec![], true),
                // still: history before start stays silent
                (None, R, "DELIVERED", Some(BEFORE), BEFORE, vec![], true),
                // and later changes follow the usual rules
                (
                    Some(("DELIVERED", AFTER)),
                    R,
                    "ACCEPTED",
                    None,
                    t,
                    vec![],
                    true,
                ),
            ],
        );
    }

    #[test]
    fn a_timestamp_from_the_future_is_kept_but_judged_as_now() {
        use Side::{Receive as R, Send as S};
        let far = i64::MAX;
        let limit = trust_limit(NOW);
        check(vec![
            // first sight: judged at NOW (after start), stored with the provider's stamp
            (None, S, "DELIVERED", None, far, vec![Delivered], true),
            (None, R, "DELIVERED", Some(far), far, vec![Received], true),
            (
                None,
                S,
                "ACCEPTED",
                Some(far),
                far,
                vec![Delivered, su("ACCEPTED")],
                true,
            ),
            // a poisoned version seen again: nothing; a changed status with it: a change
            (
                Some(("DELIVERED", far)),
                S,
                "DELIVERED",
                None,
                far,
                vec![],
                false,
            ),
            (
                Some(("DELIVERED", far)),
                S,
                "ACCEPTED",
                None,
                far,
                vec![su("ACCEPTED")],
                true,
            ),
            // a sane version after a poisoned one supersedes it
            (
                Some(("DELIVERED", far)),
                S,
                "PAID",
                None,
                AFTER,
                vec![su("PAID")],
                true,
            ),
            // within the allowance a stamp is trusted: an older one stays older
            (
                Some(("PAID", limit)),
                S,
                "ACCEPTED",
                None,
                AFTER,
                vec![],
                false,
            ),
        ]);
        let p = st(S, "DELIVERED", far);
        assert!(changed(&p, AFTER, None, limit));
        assert!(
            changed(&p, far, None, limit),
            "a poll item: the detail decides"
        );
        assert!(!changed(&p, far, Some("DELIVERED"), limit));
        assert!(changed(&p, far, Some("PAID"), limit));
        assert!(!changed(
            &st(S, "PAID", AFTER),
            AFTER,
            Some("ACCEPTED"),
            limit
        ));
    }

    #[test]
    fn payloads_match_the_documented_example_byte_for_byte() {
        let p = su("ACCEPTED").payload("df5dcf78-e78b-4396-87bb-2d2a44c1302e", "KHUID000001");
        assert_eq!(
            p,
            r#"{"type":"DOCUMENT.STATUS_UPDATED","document_id":"df5dcf78-e78b-4396-87bb-2d2a44c1302e","endpoint_id":"KHUID000001","status":"ACCEPTED"}"#
        );
        assert_eq!(
            Delivered.payload("d", "K"),
            r#"{"type":"DOCUMENT.DELIVERED","document_id":"d","endpoint_id":"K"}"#
        );
        assert_eq!(
            Received.payload("d", "K"),
            r#"{"type":"DOCUMENT.RECEIVED","document_id":"d","endpoint_id":"K"}"#
        );
        assert_eq!(
            revoked("a", "K", "fp").0,
            r#"{"type":"ENTITY.REVOKED","endpoint_id":"K"}"#
        );
    }

    #[test]
    fn ids_are_stable_per_cause() {
        assert_eq!(
            Delivered.id("a", "K", "d", 1),
            Delivered.id("a", "K", "d", 2)
        );
        assert_ne!(
            su("PAID").id("a", "K", "d", 1),
            su("PAID").id("a", "K", "d", 2)
        );
        assert_ne!(
            su("PAID").id("a", "K", "d", 1),
            su("ACCEPTED").id("a", "K", "d", 1)
        );
        assert_ne!(
            Delivered.id("a", "K", "d", 1),
            Delivered.id("b", "K", "d", 1)
        );
        assert_ne!(revoked("a", "K", "fp1").1, revoked("a", "K", "fp2").1);
    }
}
