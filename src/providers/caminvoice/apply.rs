//! Chunked apply: documents that may have changed (from a poll or a list walk) are diffed in
//! order, chunk by chunk ([`CHUNK`]), each chunk one commit of state, events and the member's
//! record (with the advanced cursor for a poll). Details are fetched only for documents whose
//! `updated_at` is not already stored; a document listed twice is diffed once; what an answer
//! held that was wrong is summed up in one line per kind.

use super::client::{ApiError, DETAIL};
use super::diff::{changed, diff, Observation};
use super::model::{self, Detail, DocState, MemberRecord, Side};
use super::session::Fetched;
use super::sync::{Counts, Stop};
use super::CamInvoice;
use crate::event::NewEvent;
use crate::providers::wire::Unusable;
use crate::providers::CycleContext;
use crate::store::{Batch, Unit};
use crate::time::{format_ms, judged, now_ms, trust_limit, Millis, MAX_FUTURE_SKEW};
use std::collections::HashMap;
use std::sync::Arc;

/// Documents diffed per commit: large enough to amortize the flush, small enough that a crash
/// or a failure repeats little work.
pub(super) const CHUNK: usize = 256;

/// Documents one account holds in hand at once, over all its members syncing together
/// (each chunk's candidates with their records, fetched details, events and batch, from its
/// first read to its commit): four chunks. Without it, `concurrency` members (32 in the
/// bench) each held a full chunk while they queued for the one committer — the peak of a
/// 100k-change burst grew with the members in flight, not with the work.
pub(super) const IN_HAND: usize = 4 * CHUNK;
// A chunk's permits are always to be had once the others are given back.
const _: () = assert!(CHUNK <= IN_HAND);

/// What one pass over a provider answer found wrong, logged as one line each at its end.
#[derive(Debug, Default)]
struct Notes {
    /// Documents skipped (no detail to be had, no status, no side, ...).
    skipped: Unusable,
    /// Timestamps quarantined for the first time (beyond `now + MAX_FUTURE_SKEW`).
    quarantined: Unusable,
    /// Entries of a document already listed in the same answer.
    duplicates: u64,
}

/// A document that may have changed, from the poll or the list.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub(super) document_id: String,
    /// `None` when the source did not say: then the detail decides.
    pub(super) updated_at: Option<Millis>,
    pub(super) side: Option<Side>,
    /// A list item that already carries the status: no detail call needed. (Boxed: a poll
    /// answer of 100,000 candidates has none.)
    pub(super) known: Option<Box<Detail>>,
}

impl CamInvoice {
    /// Diffs `items` in order and commits them chunk by chunk. With `advance_cursor` (the
    /// poll), the member's poll cursor follows the items fully processed, never past
    /// `now + MAX_FUTURE_SKEW`, and a detail over its cap stops the pass as
    /// [`Stop::Oversized`]; without (a list walk), such a document is skipped.
    ///
    /// A document listed more than once is diffed once, from its newest entry.
    pub(super) async fn apply(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
        items: &[Candidate],
        advance_cursor: bool,
    ) -> Result<Counts, Stop> {
        let mut notes = Notes::default();
        let items = distinct(items, &mut notes);
        let result = self
            .apply_distinct(idx, ctx, rec, &items, advance_cursor, &mut notes)
            .await;
        self.report(idx, &notes);
        result
    }

    async fn apply_distinct(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
        items: &[&Candidate],
        advance_cursor: bool,
        notes: &mut Notes,
    ) -> Result<Counts, Stop> {
        let mut total = Counts::default();
        let member = self.member(idx);
        for chunk in items.chunks(CHUNK) {
            // Never closed; `chunk.len() <= CHUNK < IN_HAND`.
            let _in_hand = self
                .in_hand
                .acquire_many(chunk.len() as u32)
                .await
                .expect("the in-hand semaphore is never closed");
            let limit = trust_limit(now_ms());
            let mut prevs = Vec::with_capacity(chunk.len());
            let mut need = Vec::new();
            for c in chunk {
                let prev = ctx
                    .store
                    .get_state(
                        Unit::new(&self.account, &member.endpoint_id),
                        &c.document_id,
                    )?
                    .and_then(|v| DocState::decode(&v));
                let status = c.known.as_ref().and_then(|d| d.status.as_deref());
                let is_changed = match (&prev, c.updated_at) {
                    // Seen before on the receiving side: only the supplier hears of later
                    // changes, so nothing can come of it — no detail call.
                    (Some(p), _) if p.side == Side::Receive && c.side == Some(Side::Receive) => {
                        false
                    }
                    (Some(p), Some(at)) => changed(p, at, status, limit),
                    _ => true,
                };
                if is_changed && status.is_none() {
                    need.push(c.document_id.clone());
                }
                prevs.push((prev, is_changed));
            }
            let mut fetched = self.fetch_details(idx, need, &ctx.requests).await;

            let now = now_ms();
            let mut batch = Batch::default();
            let mut cursor = rec.cursor;
            let mut failure = None;
            for (c, (prev, is_changed)) in chunk.iter().zip(prevs) {
                if is_changed {
                    let detail = match c.known.as_deref().filter(|d| d.status.is_some()) {
                        Some(d) => Fetched::Found(d.clone()),
                        None => match fetched.remove(&c.document_id) {
                            Some(Ok(d)) => d,
                            Some(Err(e)) if e.is_too_large() && advance_cursor => {
                                failure = Some(Stop::Oversized(e.to_string()));
                                break;
                            }
                            Some(Err(e)) if e.is_too_large() => {
                                self.metrics.anomaly("oversized_answer", 1);
                                Fetched::Gone("Get Document Detail answered over its size cap")
                            }
                            Some(Err(e)) => {
                                failure = Some(e.into());
                                break;
                            }
                            // Never: the items are distinct. A gap is a failure, not a panic.
                            None => {
                                failure = Some(Stop::Api(ApiError::Malformed {
                                    label: DETAIL,
                                    why: model::Malformed(format!(
                                        "no detail was fetched for {:?}",
                                        c.document_id
                                    )),
                                }));
                                break;
                            }
                        },
                    };
                    match detail {
                        Fetched::Gone(why) => notes
                            .skipped
                            .add(1, || format!("document {:?}: {why}", c.document_id)),
                        Fetched::Found(d) => {
                            if advance_cursor {
                                // The poll's changes make the member's rate; a walk's are
                                // its whole history (the baseline), not a rate.
                                let at = d.updated_at.or(c.updated_at).unwrap_or(now);
                                ctx.observed.note(&member.endpoint_id, at);
                                total.changed += 1;
                            } else {
                                total.resynced += 1;
                            }
                            self.diff_one(idx, c, &d, prev.as_ref(), rec, now, &mut batch, notes);
                        }
                    }
                }
                // A quarantined stamp never moves the cursor.
                if let Some(at) = c.updated_at.filter(|at| *at <= limit) {
                    cursor = Some(cursor.map_or(at, |cur| cur.max(at)));
                }
            }
            if advance_cursor {
                rec.cursor = cursor;
            }
            self.put_record(&mut batch, idx, rec);
            let committed = ctx.store.commit(batch).await?;
            total.events += committed.events as u64;
            total.duplicates += committed.duplicates as u64;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        Ok(total)
    }

    /// Logs what one pass over an answer found wrong, one line per kind, and counts it.
    fn report(&self, idx: usize, notes: &Notes) {
        let member = self.member(idx);
        let endpoint = &member.endpoint_id;
        if let Some(line) = notes.skipped.summary("document(s) skipped") {
            tracing::warn!(member = %endpoint, "{line}; the next list walk looks again");
        }
        if let Some(line) = notes.quarantined.summary("timestamp(s) quarantined") {
            tracing::warn!(member = %endpoint,
                "{line}: more than {} ahead of this host's clock, so never trusted for the cursor and judged as the time pollhook saw them (is either clock wrong?)",
                crate::time::format_duration(MAX_FUTURE_SKEW));
        }
        if notes.duplicates > 0 {
            tracing::debug!(member = %endpoint, duplicates = notes.duplicates,
                "documents listed more than once in one answer; each diffed once, from its newest entry");
        }
        self.metrics
            .anomaly("future_timestamp", notes.quarantined.count);
        self.metrics.anomaly("duplicate_id", notes.duplicates);
    }

    /// Diffs and commits documents whose details are already in hand, for member `idx`,
    /// exactly as a poll's changed documents are once fetched (chunked commits, cursor kept):
    /// the diff + commit half of a cycle without its requests. Returns the events committed.
    /// For `pollhook bench`, which measures that half alone.
    #[doc(hidden)]
    pub async fn apply_known(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        details: Vec<Detail>,
    ) -> Result<u64, String> {
        let mut rec = self
            .load_record(&ctx.store, idx)
            .map_err(|e| e.to_string())?
            .unwrap_or_else(|| MemberRecord {
                start: now_ms(),
                ..MemberRecord::default()
            });
        let candidates: Vec<Candidate> = details
            .into_iter()
            .map(|d| Candidate {
                document_id: d.document_id.clone(),
                updated_at: d.updated_at,
                side: Some(Side::Send),
                known: Some(Box::new(d)),
            })
            .collect();
        let counts = self
            .apply(idx, ctx, &mut rec, &candidates, true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(counts.events)
    }

    /// Runs the pure diff for one document and adds its state and events to `batch`.
    #[allow(clippy::too_many_arguments)]
    fn diff_one(
        &self,
        idx: usize,
        c: &Candidate,
        d: &Detail,
        prev: Option<&DocState>,
        rec: &MemberRecord,
        now: Millis,
        batch: &mut Batch,
        notes: &mut Notes,
    ) {
        let member = self.member(idx);
        let endpoint = &member.endpoint_id;
        let id = &c.document_id;
        let Some(status) = d.status.as_deref() else {
            notes
                .skipped
                .add(1, || format!("document {id:?}: the detail has no status"));
            return;
        };
        let Some(side) = c.side.or_else(|| d.side_for(endpoint)) else {
            notes.skipped.add(1, || format!(
                "document {id:?}: cannot tell whether this member sent or received it (poll type missing, parties do not match)"
            ));
            return;
        };
        let Some(updated_at) = d.updated_at.or(c.updated_at) else {
            notes
                .skipped
                .add(1, || format!("document {id:?}: no updated_at"));
            return;
        };
        let obs = Observation {
            side,
            status,
            created_at: d.created_at,
            updated_at,
        };
        let out = diff(prev, &obs, rec.start, rec.baseline_at.is_some(), now);
        let Some(record) = out.record else { return };
        if updated_at > trust_limit(now) {
            notes.quarantined.add(1, || {
                format!("document {id:?} updated_at {}", format_ms(updated_at))
            });
        }
        if status_is_unknown(status) {
            tracing::info!(member = %endpoint, document = ?id, status, "unknown document status, carried through as given");
        }
        // A quarantined stamp cannot tell two versions apart (a provider may stamp every
        // change with the same absurd value): the id and `occurred_at` take the moment
        // pollhook saw the change instead.
        let at = judged(updated_at, now);
        for emit in out.emits {
            batch.events.push(NewEvent {
                id: emit.id(&self.account, endpoint, id, at),
                provider: "caminvoice",
                account: self.account.clone(),
                event_type: emit.event_type().to_string(),
                occurred_at: at,
                detected_at: now,
                subject: format!("{endpoint}/{id}"),
                payload: emit.payload(id, endpoint),
            });
        }
        batch.put_state(Unit::new(&self.account, endpoint), id, record.encode());
    }
}

/// The candidates with one entry per document — its newest, the later one on a tie — in the
/// order they came; the others are counted in `notes.duplicates`.
fn distinct<'c>(items: &'c [Candidate], notes: &mut Notes) -> Vec<&'c Candidate> {
    let mut best: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, c) in items.iter().enumerate() {
        best.entry(c.document_id.as_str())
            .and_modify(|b| {
                if c.updated_at >= items[*b].updated_at {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    notes.duplicates += (items.len() - best.len()) as u64;
    items
        .iter()
        .enumerate()
        .filter(|(i, c)| best.get(c.document_id.as_str()) == Some(i))
        .map(|(_, c)| c)
        .collect()
}

fn status_is_unknown(status: &str) -> bool {
    !model::STATUSES.contains(&status)
}
