//! Worlds at benchmark scale: many members, up to millions of documents, and churn on demand.
//!
//! The traffic generator (`traffic`) plays a realistic, seeded mix of events a few at a time;
//! a benchmark needs the opposite: N documents in place at once, then exactly C of them
//! changed between two cycles. Both go through [`World::create_document`] and
//! [`World::set_status`], so the poll and list indices, visibility and the journal follow the
//! same rules as everywhere else.
//!
//! The bulk world: members `0..M` are suppliers, each of `N / M` documents (round robin);
//! the customers are businesses outside the integration, so every document is tracked
//! exactly once, on the send side. Documents start `DELIVERED`, 48 h in the past: history
//! the daemon's baseline takes in silently. A change moves a document one customer status
//! further (`ACKNOWLEDGED` .. `PAID`), journaling the `DOCUMENT.STATUS_UPDATED` CamInvoice
//! sends its supplier.

use chrono::TimeDelta;

use super::world::{DocType, Status, World};
use super::{SimConfig, Simulator};

/// Businesses outside the integration that receive the bulk documents.
const CUSTOMERS: usize = 16;

impl Simulator {
    /// A world of `members` connected suppliers holding `documents` delivered documents in
    /// total, and nothing else (no OnlinePajak companies, no pre-run history).
    pub fn bulk(members: usize, documents: usize, seed: u64) -> Simulator {
        let cfg = SimConfig {
            seed,
            members,
            outsiders: CUSTOMERS,
            initial_documents: 0,
            op_companies: 0,
            op_initial_invoices: 0,
            revoke_probability: 0.0,
            max_revocations: 0,
            ..SimConfig::default()
        };
        let sim = Simulator::new(cfg);
        sim.with(|w| {
            let first = w.now() - TimeDelta::hours(48);
            for i in 0..documents {
                let created = first + TimeDelta::milliseconds(i as i64);
                let d = w.create_document(
                    i % members.max(1),
                    members + i % CUSTOMERS,
                    DocType::Invoice,
                    None,
                    created,
                );
                w.set_status(d, Status::Delivered, created, false);
            }
        });
        sim
    }

    /// Moves `count` documents (round robin, skipping those at a final status) one customer
    /// status further, now, journaling each change. Returns how many changed: fewer than
    /// `count` only when too few documents can still change.
    pub fn churn(&self, count: usize) -> usize {
        self.with(|w| churn(w, count))
    }
}

fn churn(w: &mut World, count: usize) -> usize {
    let total = w.documents.len();
    let now = w.now();
    let (mut changed, mut looked) = (0, 0);
    while changed < count && looked < total {
        let d = w.churn_next % total;
        w.churn_next += 1;
        looked += 1;
        let Some(to) = next_customer_status(w.documents[d].status) else {
            continue;
        };
        w.set_status(d, to, now, true);
        changed += 1;
        looked = 0;
    }
    changed
}

/// The next status of the bulk documents' life, `None` at the end of it.
fn next_customer_status(s: Status) -> Option<Status> {
    Some(match s {
        Status::Valid => Status::Delivered,
        Status::Delivered => Status::Acknowledged,
        Status::Acknowledged => Status::InProcess,
        Status::InProcess => Status::UnderQuery,
        Status::UnderQuery => Status::ConditionallyAccepted,
        Status::ConditionallyAccepted => Status::Accepted,
        Status::Accepted => Status::Paid,
        Status::Paid | Status::Rejected => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_world_spreads_documents_over_members_and_journals_nothing() {
        let sim = Simulator::bulk(3, 10, 5);
        sim.with(|w| {
            assert_eq!(w.documents.len(), 10);
            assert!(w.journal.is_empty());
            for m in 0..3 {
                let sent = w.list_page(m, super::super::world::Side::Send, None, 0, 100);
                assert_eq!(sent.0, [4, 3, 3][m]);
            }
            assert!(w.documents.iter().all(|d| d.status == Status::Delivered));
            assert!(w.documents.iter().all(|d| d.updated_at < w.now()));
        });
        assert_eq!(sim.credentials().members.len(), 3);
    }

    #[test]
    fn churn_changes_exactly_count_documents_and_journals_one_webhook_each() {
        let sim = Simulator::bulk(2, 10, 5);
        assert_eq!(sim.churn(4), 4);
        assert_eq!(sim.journal().len(), 4);
        assert!(sim
            .journal()
            .iter()
            .all(|j| j.event_type == "DOCUMENT.STATUS_UPDATED"));
        // Round robin: the next four are other documents.
        assert_eq!(sim.churn(4), 4);
        let ids: std::collections::HashSet<String> =
            sim.journal().iter().map(|j| j.payload.clone()).collect();
        assert_eq!(ids.len(), 8);
        // Six moves take every document to PAID; then nothing can change.
        assert_eq!(sim.churn(1_000), 10 * 6 - 8);
        assert_eq!(sim.churn(1), 0);
    }
}
