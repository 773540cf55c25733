//! The OnlinePajak traffic generator: drafts, submissions, DJP answers and revisions, one step
//! at a time, plus the pre-run history.
//!
//! This module owns the OnlinePajak *decisions*. It draws every choice from the OnlinePajak RNG
//! (never the CamInvoice one) and the number of draws never depends on the clock, so the same
//! seed gives the same journal. What a change means (fields, stamps, the webhook) is
//! [`OpWorld`](super::op_world::OpWorld)'s business.
//!
//! Rules kept here: a step changes any one invoice at most once (its candidates are chosen
//! from the state before the step, and a new draft does not move in the step that made it);
//! DJP answers in a later step than the submission; replacements and cancellations are only
//! made of approved invoices, are sent to DJP at once and are always approved.

use chrono::{DateTime, TimeDelta, Utc};

use super::op_world::{Approval, OpDocType};
use super::world::World;

/// Chance in percent that DJP answers a pending invoice in a given step.
const ANSWER_PERCENT: u8 = 70;

/// Chance in percent that DJP approves (rather than rejects) a normal invoice or credit note.
const APPROVE_PERCENT: u8 = 85;

/// Chance in percent that a draft is sent to DJP in a given step.
const SUBMIT_PERCENT: u8 = 70;

/// Chance in percent, per company and step, of one replacement (else of one cancellation, in
/// the next band).
const REPLACE_PERCENT: u8 = 10;
const CANCEL_PERCENT: u8 = 5;

/// One step for every company at `now`; returns how many webhooks it journaled.
pub fn step(w: &mut World, now: DateTime<Utc>) -> usize {
    let before = w.journal.len();
    for c in 0..w.op.companies.len() {
        company_step(w, c, now);
    }
    w.journal.len() - before
}

fn company_step(w: &mut World, c: usize, now: DateTime<Utc>) {
    // Every candidate list is taken before anything moves: one change per invoice per step.
    let with_status = |w: &World, status: Approval| -> Vec<usize> {
        (0..w.op.invoices.len())
            .filter(|&i| w.op.invoices[i].company == c && w.op.invoices[i].status == status)
            .collect()
    };
    let pending = with_status(w, Approval::InProgress);
    let drafts = with_status(w, Approval::Draft);
    let revisable: Vec<usize> = with_status(w, Approval::Approved)
        .into_iter()
        .filter(|&i| {
            matches!(
                w.op.invoices[i].doc_type,
                OpDocType::Normal | OpDocType::Replacement
            )
        })
        .collect();

    for i in pending {
        if w.op.rng.u8(0..100) >= ANSWER_PERCENT {
            continue;
        }
        let approved = match w.op.invoices[i].doc_type {
            OpDocType::Normal | OpDocType::CreditNote => w.op.rng.u8(0..100) < APPROVE_PERCENT,
            OpDocType::Replacement | OpDocType::Cancellation => true,
        };
        w.op_answer(i, approved, now);
    }

    for i in drafts {
        if w.op.rng.u8(0..100) < SUBMIT_PERCENT {
            w.op.submit(i, now, true);
        }
    }

    let roll = w.op.rng.u8(0..100);
    let revision = if roll < REPLACE_PERCENT {
        Some(OpDocType::Replacement)
    } else if roll < REPLACE_PERCENT + CANCEL_PERCENT {
        Some(OpDocType::Cancellation)
    } else {
        None
    };
    if let Some(doc_type) = revision.filter(|_| !revisable.is_empty()) {
        let i = revisable[w.op.rng.usize(0..revisable.len())];
        w.op.revise(i, doc_type, now, true);
    }

    let creations = match w.op.rng.u8(0..100) {
        0..=14 => 0,
        15..=49 => 1,
        50..=89 => 2,
        _ => 3,
    };
    for _ in 0..creations {
        let doc_type = random_doc_type(&mut w.op.rng);
        w.op.create(c, doc_type, now, true);
    }
}

/// Mostly normal invoices, occasionally a credit note.
fn random_doc_type(rng: &mut fastrand::Rng) -> OpDocType {
    if rng.u8(0..100) < 5 {
        OpDocType::CreditNote
    } else {
        OpDocType::Normal
    }
}

/// The history before the run: `op_initial_invoices` per company, created 1-48 h ago and moved
/// along within 45 minutes of their creation, never journaled (their webhooks went out before
/// the run). Some are left as drafts or pending, so the run answers them.
pub fn seed_history(w: &mut World) {
    const HOUR_MS: i64 = 3_600_000;
    let now = w.now();
    let minutes = |rng: &mut fastrand::Rng, range: std::ops::Range<i64>| {
        TimeDelta::milliseconds(rng.i64(range.start * 60_000..range.end * 60_000))
    };
    for c in 0..w.op.companies.len() {
        let mut ages_ms: Vec<i64> = (0..w.cfg.op_initial_invoices)
            .map(|_| w.op.rng.i64(HOUR_MS..48 * HOUR_MS))
            .collect();
        ages_ms.sort_unstable_by(|a, b| b.cmp(a)); // oldest first, so numbers follow time
        for age in ages_ms {
            let op = &mut w.op;
            let mut at = now - TimeDelta::milliseconds(age);
            let doc_type = random_doc_type(&mut op.rng);
            let i = op.create(c, doc_type, at, false);
            let fate = op.rng.u8(0..100);
            if fate < 10 {
                continue; // still a draft
            }
            at += minutes(&mut op.rng, 1..5);
            op.submit(i, at, false);
            if fate < 25 {
                continue; // DJP has not answered yet
            }
            at += minutes(&mut op.rng, 1..10);
            op.answer(i, fate >= 35, at, false);
            if fate < 35 || doc_type != OpDocType::Normal {
                continue;
            }
            let revision = match fate {
                35..=49 => OpDocType::Replacement,
                50..=54 => OpDocType::Cancellation,
                _ => continue,
            };
            at += minutes(&mut op.rng, 5..20);
            op.revise(i, revision, at, false);
            at += minutes(&mut op.rng, 1..10);
            op.answer(i, true, at, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use serde_json::Value;

    use super::super::{SimConfig, Simulator};
    use super::*;

    fn op_entries(sim: &Simulator) -> Vec<super::super::JournalEntry> {
        sim.journal()
            .into_iter()
            .filter(|e| e.event_type == "PPN_INVOICE_APPROVED")
            .collect()
    }

    fn run(cfg: SimConfig, steps: usize) -> Simulator {
        let sim = Simulator::new(cfg);
        for _ in 0..steps {
            sim.step();
            sim.advance_clock(Duration::from_secs(1));
        }
        sim
    }

    #[test]
    fn history_is_in_the_past_not_journaled_and_leaves_work_for_the_run() {
        let sim = Simulator::new(SimConfig::default());
        assert!(op_entries(&sim).is_empty());
        sim.with(|w| {
            assert_eq!(w.op.invoices.len(), 12, "6 per company");
            let now = w.now();
            for inv in &w.op.invoices {
                assert!(inv.updated_at < now - TimeDelta::minutes(14));
                assert!(inv.updated_at > now - TimeDelta::hours(49));
            }
            let statuses: BTreeSet<&str> =
                w.op.invoices.iter().map(|i| i.status.as_str()).collect();
            assert!(statuses.contains("APPROVED"), "{statuses:?}");
        });
        // The same seed makes the same history.
        let again = Simulator::new(SimConfig::default());
        let ids = |s: &Simulator| {
            s.with(|w| {
                w.op.invoices
                    .iter()
                    .map(|i| i.id.clone())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(ids(&sim), ids(&again));
    }

    #[test]
    fn default_steps_journal_one_to_three_webhooks_per_company_on_average() {
        let sim = run(SimConfig::default(), 60);
        let mut per_company: BTreeMap<String, usize> = BTreeMap::new();
        for e in op_entries(&sim) {
            *per_company.entry(e.endpoint_id).or_default() += 1;
        }
        assert_eq!(per_company.len(), 2, "{per_company:?}");
        for (npwp, n) in &per_company {
            assert!((60..=180).contains(n), "{npwp}: {n} in 60 steps");
        }
    }

    #[test]
    fn a_step_changes_an_invoice_at_most_once_and_answers_only_what_was_pending() {
        let sim = Simulator::new(SimConfig::default());
        for _ in 0..60 {
            sim.advance_clock(Duration::from_secs(1));
            let before: Vec<(Approval, u32, DateTime<Utc>)> = sim.with(|w| {
                w.op.invoices
                    .iter()
                    .map(|i| (i.status, i.revision, i.updated_at))
                    .collect()
            });
            let journal_before = sim.journal().len();
            sim.step();
            sim.with(|w| {
                let now = w.now();
                for (k, inv) in w.op.invoices.iter().enumerate() {
                    let Some(&(status, revision, at)) = before.get(k) else {
                        assert_eq!(inv.status, Approval::Draft, "new invoices are drafts");
                        continue;
                    };
                    if at == inv.updated_at {
                        assert_eq!((status, revision), (inv.status, inv.revision));
                        continue;
                    }
                    // Exactly one move; a second one would need another 1 ms stamp too.
                    assert!(inv.updated_at <= now + TimeDelta::milliseconds(1));
                    let one_move = match (status, inv.status) {
                        (Approval::Draft, Approval::InProgress) => revision == inv.revision,
                        (Approval::InProgress, Approval::Approved | Approval::Rejected) => {
                            revision == inv.revision
                        }
                        (Approval::Approved, Approval::InProgress) => inv.revision == revision + 1,
                        _ => false,
                    };
                    assert!(
                        one_move,
                        "{status:?}/{revision} -> {:?}/{}",
                        inv.status, inv.revision
                    );
                }
            });
            // Every entry of this step is an answer to an invoice pending before the step.
            for e in op_entries(&sim)
                .iter()
                .filter(|e| e.seq as usize > journal_before)
            {
                let v: Value = serde_json::from_str(&e.payload).unwrap();
                let id = v["event_data"]["reference_number"].as_str().unwrap();
                let k = sim.with(|w| w.op.invoices.iter().position(|i| i.id == id).unwrap());
                assert_eq!(before[k].0, Approval::InProgress, "{id}");
            }
        }
    }

    #[test]
    fn sixty_steps_show_rejections_replacements_cancellations_and_a_credit_note() {
        let sim = run(SimConfig::default(), 120);
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for e in op_entries(&sim) {
            let v: Value = serde_json::from_str(&e.payload).unwrap();
            let d = &v["event_data"];
            seen.insert(format!("{} {}", d["type"].as_str().unwrap(), d["approved"]));
            if d["approved"] == false {
                assert_eq!(d["document_number"], "");
                assert_ne!(d["djp_response_message"], "");
            }
        }
        for wanted in [
            "normal true",
            "normal false",
            "replacement true",
            "cancellation true",
        ] {
            assert!(seen.contains(wanted), "no {wanted}: {seen:?}");
        }
        assert!(
            seen.iter().any(|s| s.starts_with("2 ")),
            "no credit note: {seen:?}"
        );
    }

    #[test]
    fn same_seed_gives_the_same_onlinepajak_journal_and_another_seed_another() {
        let payloads = |sim: &Simulator| -> Vec<String> {
            op_entries(sim)
                .into_iter()
                .map(|e| {
                    // event_date depends on the wall clock: compare everything else.
                    let mut v: Value = serde_json::from_str(&e.payload).unwrap();
                    v["event_date"] = Value::Null;
                    v.to_string()
                })
                .collect()
        };
        let a = payloads(&run(SimConfig::default(), 30));
        let b = payloads(&run(SimConfig::default(), 30));
        assert!(a.len() > 30, "{}", a.len());
        assert_eq!(a, b);
        let c = payloads(&run(
            SimConfig {
                seed: 2,
                ..SimConfig::default()
            },
            30,
        ));
        assert_ne!(a, c);
    }
}
