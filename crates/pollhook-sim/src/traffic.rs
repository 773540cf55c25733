//! The seeded traffic generator: what happens on the network, one step at a time.
//!
//! This module owns the *decisions*: which documents move and where to, which are created, and
//! when a member disconnects. It draws every choice from the world's seeded RNG, and the number
//! of draws never depends on the clock, so the same seed gives the same journal. What a change
//! means (visibility, webhooks) is [`World`]'s business, not this module's.
//!
//! Rules kept here: a step changes any one document at most once (a poller polling between
//! steps can see every change); a document only moves while both parties are active; a member
//! is revoked only after a quiet period with no journal entries for it, never the last one,
//! at most `max_revocations` times.

use chrono::{DateTime, TimeDelta, Utc};

use super::world::{DocType, Status, World};

/// How many existing documents one step tries to move (inclusive range).
const MOVES_PER_STEP: std::ops::RangeInclusive<usize> = 2..=4;

/// Below this many movable documents a step creates extra ones, so traffic never dries up.
const LOW_WATER: usize = 6;

/// One traffic step at the simulated now; returns how many webhooks it journaled.
pub fn step(w: &mut World) -> usize {
    let before = w.journal.len();
    let now = w.now();
    revocations(w, now);

    let mut movable: Vec<usize> = (0..w.documents.len())
        .filter(|&d| {
            let doc = &w.documents[d];
            !doc.status.is_final() && w.is_active(doc.supplier) && w.is_active(doc.customer)
        })
        .collect();
    let available = movable.len();
    let wanted = w.rng.usize(MOVES_PER_STEP).min(available);
    // Partial Fisher-Yates: the first `wanted` entries become a uniform sample.
    for i in 0..wanted {
        let j = w.rng.usize(i..available);
        movable.swap(i, j);
    }
    for &d in &movable[..wanted] {
        if let Some(to) = next_status(&mut w.rng, w.documents[d].status) {
            w.set_status(d, to, now, true);
        }
    }

    let mut creations = match w.rng.u8(0..100) {
        0..=29 => 0,
        30..=84 => 1,
        _ => 2,
    };
    if available < LOW_WATER {
        creations += 2;
    }
    for _ in 0..creations {
        create_random(w, now);
    }
    w.journal.len() - before
}

/// Disconnections. Each connected member rolls `revoke_probability`; the first hit (if the
/// generator may still revoke and it is not the last member) starts *leaving*: no new traffic
/// involves it, and it is revoked as soon as its last journal entry is `revoke_quiet` old.
/// The number of draws depends only on how many members are connected, not on the clock.
fn revocations(w: &mut World, now: DateTime<Utc>) {
    let quiet = TimeDelta::from_std(w.cfg.revoke_quiet).unwrap_or(TimeDelta::MAX);
    let is_quiet = |w: &World, m: usize| {
        w.last_journaled
            .get(&w.businesses[m].endpoint_id)
            .map_or(true, |&last| now - last >= quiet)
    };
    let revoke = |w: &mut World, m: usize| {
        if w.revoke(m) {
            w.auto_revocations += 1;
        }
    };

    if let Some(m) = w.leaving {
        if !w.is_connected(m) || w.connected().len() <= 1 {
            w.leaving = None; // revoked meanwhile, or it would be the last member
        } else if is_quiet(w, m) {
            revoke(w, m);
        }
    }

    let candidates: Vec<usize> = w
        .connected()
        .into_iter()
        .filter(|&m| w.leaving != Some(m))
        .collect();
    let mut chosen = None;
    for &m in &candidates {
        let roll = w.rng.f64();
        if chosen.is_none() && roll < w.cfg.revoke_probability {
            chosen = Some(m);
        }
    }
    let Some(m) = chosen else {
        return;
    };
    if w.leaving.is_some() || w.auto_revocations >= w.cfg.max_revocations || candidates.len() < 2 {
        return;
    }
    if is_quiet(w, m) {
        revoke(w, m);
    } else {
        w.leaving = Some(m);
    }
}

/// The history that existed before the run: documents created 1-48 h ago, moved along their
/// lifecycle in the past, and never journaled (their webhooks went out before the run).
pub fn seed_history(w: &mut World) {
    const HOUR_MS: i64 = 3_600_000;
    let now = w.now();
    let mut ages_ms: Vec<i64> = (0..w.cfg.initial_documents)
        .map(|_| w.rng.i64(HOUR_MS..48 * HOUR_MS))
        .collect();
    ages_ms.sort_unstable_by(|a, b| b.cmp(a)); // oldest first, so numbers follow time
    let latest = now - TimeDelta::minutes(1);
    for age in ages_ms {
        let created = now - TimeDelta::milliseconds(age);
        let Some(d) = create_random(w, created) else {
            break;
        };
        let moves = [0, 1, 1, 1, 2, 2, 3, 4, 5][w.rng.usize(0..9)];
        let spacing = (age / (moves + 1)).max(60_001);
        let mut at = created;
        for _ in 0..moves {
            let Some(to) = next_status(&mut w.rng, w.documents[d].status) else {
                break;
            };
            at += TimeDelta::milliseconds(w.rng.i64(60_000..spacing));
            if at >= latest {
                break;
            }
            w.set_status(d, to, at, false);
        }
    }
}

/// Where the customer (or, from `VALID`, the network) takes a document next; `None` once final.
pub fn next_status(rng: &mut fastrand::Rng, from: Status) -> Option<Status> {
    let table = successors(from);
    if table.is_empty() {
        return None;
    }
    let mut roll = rng.u8(0..100);
    for &(to, weight) in table {
        if roll < weight {
            return Some(to);
        }
        roll -= weight;
    }
    table.last().map(|&(to, _)| to)
}

/// The plausible next statuses and their weights in percent (empty once final).
pub fn successors(from: Status) -> &'static [(Status, u8)] {
    use Status::*;
    match from {
        Valid => &[(Delivered, 100)],
        Delivered => &[
            (Acknowledged, 50),
            (InProcess, 15),
            (Accepted, 15),
            (UnderQuery, 10),
            (Rejected, 10),
        ],
        Acknowledged => &[
            (InProcess, 50),
            (Accepted, 20),
            (UnderQuery, 15),
            (Rejected, 15),
        ],
        InProcess => &[
            (Accepted, 60),
            (ConditionallyAccepted, 15),
            (UnderQuery, 15),
            (Rejected, 10),
        ],
        UnderQuery => &[
            (InProcess, 40),
            (ConditionallyAccepted, 20),
            (Accepted, 20),
            (Rejected, 20),
        ],
        ConditionallyAccepted => &[(Accepted, 60), (Paid, 30), (Rejected, 10)],
        Accepted => &[(Paid, 100)],
        Paid | Rejected => &[],
    }
}

/// An invoice from member `endpoint_id` to an active business that is not a member, delivered
/// at once (DOCUMENT.DELIVERED to the member: only this member sees it change); `false` if it
/// is not an active member.
pub fn create_for(w: &mut World, endpoint_id: &str) -> bool {
    let Some(member) = w.find_business(endpoint_id) else {
        return false;
    };
    if !w.is_connected(member) || !w.is_active(member) {
        return false;
    }
    let others: Vec<usize> = (0..w.businesses.len())
        .filter(|&i| i != member && !w.is_connected(i) && w.is_active(i))
        .collect();
    if others.is_empty() {
        return false;
    }
    let other = others[w.rng.usize(0..others.len())];
    let now = w.now();
    let d = w.create_document(member, other, DocType::Invoice, None, now);
    w.set_status(d, Status::Delivered, now, true);
    true
}

/// Creates a `VALID` document between an active member and another active business.
fn create_random(w: &mut World, at: DateTime<Utc>) -> Option<usize> {
    let members: Vec<usize> = w
        .connected()
        .into_iter()
        .filter(|&m| w.is_active(m))
        .collect();
    if members.is_empty() {
        return None;
    }
    let member = members[w.rng.usize(0..members.len())];
    let others: Vec<usize> = (0..w.businesses.len())
        .filter(|&i| i != member && w.is_active(i))
        .collect();
    if others.is_empty() {
        return None;
    }
    let other = others[w.rng.usize(0..others.len())];
    let (supplier, customer) = if w.rng.bool() {
        (member, other)
    } else {
        (other, member)
    };
    let wanted = match w.rng.u8(0..100) {
        0..=79 => DocType::Invoice,
        80..=91 => DocType::CreditNote,
        _ => DocType::DebitNote,
    };
    // A note refers to the latest delivered invoice between the same two parties.
    let reference = match wanted {
        DocType::Invoice => None,
        _ => w.documents.iter().rposition(|d| {
            d.doc_type == DocType::Invoice
                && d.supplier == supplier
                && d.customer == customer
                && d.status.is_delivered()
        }),
    };
    let doc_type = if reference.is_some() {
        wanted
    } else {
        DocType::Invoice
    };
    Some(w.create_document(supplier, customer, doc_type, reference, at))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::super::{SimConfig, Simulator};
    use super::*;

    /// `steps` steps, the simulated clock moving `gap` between them.
    fn run(cfg: SimConfig, steps: usize, gap: Duration) -> Simulator {
        let sim = Simulator::new(cfg);
        for _ in 0..steps {
            sim.step();
            sim.advance_clock(gap);
        }
        sim
    }

    /// CamInvoice's payloads (OnlinePajak's carry wall-clock dates; `op_traffic` tests them).
    fn payloads(sim: &Simulator) -> Vec<String> {
        sim.journal()
            .into_iter()
            .filter(|e| e.event_type != "PPN_INVOICE_APPROVED")
            .map(|e| e.payload)
            .collect()
    }

    #[test]
    fn same_seed_gives_the_same_journal() {
        let a = run(SimConfig::default(), 30, Duration::ZERO);
        let b = run(SimConfig::default(), 30, Duration::ZERO);
        assert!(payloads(&a).len() > 30);
        assert_eq!(payloads(&a), payloads(&b));
        let other = run(
            SimConfig {
                seed: 2,
                ..SimConfig::default()
            },
            30,
            Duration::ZERO,
        );
        assert_ne!(payloads(&a), payloads(&other));
    }

    #[test]
    fn twenty_default_steps_a_second_apart_show_all_four_event_types() {
        let sim = run(SimConfig::default(), 20, Duration::from_secs(1));
        let types: BTreeSet<String> = sim.journal().into_iter().map(|e| e.event_type).collect();
        let expected: BTreeSet<String> = [
            "DOCUMENT.DELIVERED",
            "DOCUMENT.RECEIVED",
            "DOCUMENT.STATUS_UPDATED",
            "ENTITY.REVOKED",
            // OnlinePajak's one event, from the same steps.
            "PPN_INVOICE_APPROVED",
        ]
        .map(String::from)
        .into();
        assert_eq!(types, expected);
    }

    #[test]
    fn a_default_step_journals_a_readable_handful() {
        let sim = Simulator::new(SimConfig::default());
        let counts: Vec<usize> = (0..20)
            .map(|_| {
                let before = sim.journal().len();
                sim.step();
                sim.advance_clock(Duration::from_secs(1));
                // CamInvoice's share of the step; OnlinePajak's is tested in `op_traffic`.
                sim.journal()[before..]
                    .iter()
                    .filter(|e| e.event_type != "PPN_INVOICE_APPROVED")
                    .count()
            })
            .collect();
        let total: usize = counts.iter().sum();
        assert!((40..=120).contains(&total), "{counts:?}");
        assert!(counts.iter().all(|&n| n <= 10), "{counts:?}");
    }

    #[test]
    fn a_step_changes_a_document_at_most_once() {
        let sim = Simulator::new(SimConfig::default());
        for _ in 0..40 {
            sim.advance_clock(Duration::from_secs(1));
            let before: Vec<(Status, DateTime<Utc>)> = sim.with(|w| {
                w.documents
                    .iter()
                    .map(|d| (d.status, d.updated_at))
                    .collect()
            });
            sim.step();
            sim.with(|w| {
                // A second change in the same step would bump updated_at by 1 ms.
                let mut instants = BTreeSet::new();
                for (i, d) in w.documents.iter().enumerate() {
                    match before.get(i) {
                        Some(&(status, at)) if at == d.updated_at => assert_eq!(status, d.status),
                        Some(&(status, _)) => {
                            assert!(
                                successors(status).iter().any(|&(s, _)| s == d.status),
                                "{status:?} -> {:?} is not one move",
                                d.status
                            );
                            instants.insert(d.updated_at);
                        }
                        None => {
                            assert_eq!(d.status, Status::Valid);
                            instants.insert(d.updated_at);
                        }
                    }
                }
                assert!(instants.len() <= 1, "{instants:?}");
            });
        }
    }

    #[test]
    fn history_is_in_the_past_and_not_journaled() {
        let sim = Simulator::new(SimConfig::default());
        assert_eq!(sim.document_count(), 12);
        assert!(sim.journal().is_empty());
        sim.with(|w| {
            let now = w.now();
            for d in &w.documents {
                assert!(d.created_at <= d.updated_at);
                assert!(d.updated_at < now - TimeDelta::seconds(59));
                assert!(d.created_at > now - TimeDelta::hours(49));
                assert!(w.is_connected(d.supplier) || w.is_connected(d.customer));
            }
            let statuses: BTreeSet<&str> = w.documents.iter().map(|d| d.status.as_str()).collect();
            assert!(statuses.len() >= 3, "assorted statuses: {statuses:?}");
        });
    }

    #[test]
    fn revocation_waits_for_quiet_and_then_nothing_involves_the_member() {
        let cfg = SimConfig {
            revoke_probability: 1.0,
            ..SimConfig::default()
        };
        let sim = Simulator::new(cfg);
        // Fast steps: no member is ever quiet for 3 s (the run's start counts as activity).
        let started = sim.with(|w| w.now());
        for _ in 0..20 {
            sim.step();
        }
        assert!(sim
            .journal()
            .iter()
            .all(|e| e.event_type != "ENTITY.REVOKED"));
        assert!(
            sim.with(|w| w.leaving.is_some()),
            "a member is waiting to leave"
        );
        for _ in 0..10 {
            sim.step();
            sim.advance_clock(Duration::from_millis(500));
        }
        let journal = sim.journal();
        let revoked: Vec<_> = journal
            .iter()
            .filter(|e| e.event_type == "ENTITY.REVOKED")
            .collect();
        assert_eq!(revoked.len(), 1, "max_revocations = 1");
        let r = revoked[0];
        let previous = journal
            .iter()
            .filter(|e| e.endpoint_id == r.endpoint_id && e.seq < r.seq)
            .map(|e| e.at)
            .max()
            .unwrap_or(started);
        assert!(
            r.at - previous >= TimeDelta::seconds(3),
            "{previous} {}",
            r.at
        );
        let count_before = sim.document_count();
        let touched_before: Vec<String> = sim.with(|w| {
            let i = w.find_business(&r.endpoint_id).unwrap();
            w.documents
                .iter()
                .filter(|d| d.supplier == i || d.customer == i)
                .map(|d| format!("{}{}", d.id, d.updated_at))
                .collect()
        });
        for _ in 0..30 {
            sim.step();
            sim.advance_clock(Duration::from_secs(1));
        }
        assert!(sim.document_count() > count_before);
        assert!(sim
            .journal()
            .iter()
            .all(|e| e.seq <= r.seq || e.endpoint_id != r.endpoint_id));
        let touched_after: Vec<String> = sim.with(|w| {
            let i = w.find_business(&r.endpoint_id).unwrap();
            w.documents
                .iter()
                .filter(|d| d.supplier == i || d.customer == i)
                .map(|d| format!("{}{}", d.id, d.updated_at))
                .collect()
        });
        assert_eq!(
            touched_before, touched_after,
            "no traffic involves a revoked member"
        );
    }

    #[test]
    fn the_last_connected_member_is_never_revoked_by_the_generator() {
        let sim = Simulator::new(SimConfig {
            members: 2,
            revoke_probability: 1.0,
            max_revocations: 5,
            ..SimConfig::default()
        });
        for _ in 0..30 {
            sim.step();
            sim.advance_clock(Duration::from_secs(5));
        }
        let revoked = sim
            .journal()
            .iter()
            .filter(|e| e.event_type == "ENTITY.REVOKED")
            .count();
        assert_eq!(revoked, 1);
        assert_eq!(sim.credentials().members.len(), 1);
    }

    #[test]
    fn every_document_involves_a_member_and_notes_carry_a_reference() {
        let sim = run(SimConfig::default(), 60, Duration::from_millis(10));
        sim.with(|w| {
            let mut notes = 0;
            for d in &w.documents {
                let ever_member = |i: usize| w.businesses[i].connections > 0;
                assert!(ever_member(d.supplier) || ever_member(d.customer));
                assert_ne!(d.supplier, d.customer);
                match d.doc_type {
                    DocType::Invoice => assert!(d.reference.is_none()),
                    _ => {
                        notes += 1;
                        let r = &w.documents[d.reference.unwrap()];
                        assert_eq!((r.supplier, r.customer), (d.supplier, d.customer));
                    }
                }
            }
            assert!(notes > 0);
        });
    }
}
