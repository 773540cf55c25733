//! One member's cycle: the state machine of `member.rs` driven against the API — the list walk
//! (baseline, resync, or standing in for an over-large poll), the poll from the cursor — and
//! what the cycle leaves in the member's record: progress, refusals, a revocation and its
//! ENTITY.REVOKED, the last error. Also the member's record itself (load, put).

use super::apply::{Candidate, CHUNK};
use super::client::{ApiError, LIST, POLL};
use super::diff;
use super::member::{self, Action, Observation, Standing, State};
use super::model::{self, MemberRecord, Side};
use super::CamInvoice;
use crate::config::Start;
use crate::event::NewEvent;
use crate::providers::contract::Need;
use crate::providers::{CycleContext, FailureKind};
use crate::store::{Batch, Store, StoreError, Unit};
use crate::time::{
    format_duration, format_ms, format_naive_seconds, now_ms, trust_limit, MAX_FUTURE_SKEW,
};
use std::sync::Arc;

/// List pages walked per side in one cycle at most: a guard against a server whose pages
/// never end.
const MAX_PAGES: u64 = 100_000;

/// Why a member's cycle stopped early.
#[derive(Debug, thiserror::Error)]
pub(super) enum Stop {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The poll (or a detail it led to) was over its cap: the list walk stands in.
    #[error("{0}")]
    Oversized(String),
}

/// Why one member's cycle failed, by phase (its line in the cycle report).
#[derive(Debug, thiserror::Error)]
pub(super) enum MemberError {
    /// Reading the member's record, or committing what the cycle did.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The work stopped: a request failed for good, an unusable answer, the store mid-work,
    /// or the daemon's shutdown.
    #[error(transparent)]
    Work(Stop),
    /// CamInvoice refused the member's refresh token, `left` refusals short of revocation.
    #[error("{source}; {left} more refusal(s) and it counts as revoked")]
    Refused { source: ApiError, left: u32 },
    /// A bug: the state machine ended nowhere, or the member's task failed.
    #[error("{0} (a bug; please report it)")]
    Bug(String),
}

impl MemberError {
    pub(super) fn kind(&self) -> FailureKind {
        match self {
            MemberError::Store(_) | MemberError::Work(Stop::Store(_)) => FailureKind::Store,
            MemberError::Work(Stop::Api(ApiError::Http(h))) if h.is_shutdown() => {
                FailureKind::Interrupted
            }
            MemberError::Work(_) | MemberError::Refused { .. } => FailureKind::Provider,
            MemberError::Bug(_) => FailureKind::Bug,
        }
    }
}

/// Tallies of one member's cycle.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    /// Documents the poll showed changed (each costs one detail call).
    pub(super) changed: u64,
    /// Documents the list walk showed changed (no detail call when the item has a status).
    pub(super) resynced: u64,
    pub(super) events: u64,
    pub(super) duplicates: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.changed += o.changed;
        self.resynced += o.resynced;
        self.events += o.events;
        self.duplicates += o.duplicates;
    }
}

/// The work an action asked for; its outcome is the state machine's next observation.
enum Work {
    /// Begin the cycle again (after a reconnection).
    Begin,
    Walk,
    Poll,
}

impl CamInvoice {
    /// The member's record (`None` before its first cycle).
    pub(super) fn load_record(
        &self,
        store: &Store,
        idx: usize,
    ) -> Result<Option<MemberRecord>, StoreError> {
        let m = self.member(idx);
        Ok(
            match store.get_cursor(Unit::new(&self.account, &m.endpoint_id))? {
                None => None,
                Some(v) => match serde_json::from_slice(&v) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        return Err(StoreError::Corrupt(format!(
                            "member record of {}: {e}",
                            self.member(idx).endpoint_id
                        )))
                    }
                },
            },
        )
    }

    /// Adds the member's record to `batch`, with the access token in use (if any).
    pub(super) fn put_record(&self, batch: &mut Batch, idx: usize, rec: &MemberRecord) {
        let m = self.member(idx);
        let rec = MemberRecord {
            access: self.access_to_keep(idx),
            ..rec.clone()
        };
        batch.put_cursor(
            Unit::new(&self.account, &m.endpoint_id),
            serde_json::to_vec(&rec).expect("member record serializes"),
        );
    }

    /// Polls from the cursor minus the overlap window. An answer over its size or item cap is
    /// [`Stop::Oversized`]; one that lists elements but not one object (`[0,0,…]`) is not the
    /// documented answer: a failure, nothing moves. Objects without a usable id or timestamp
    /// are skipped (one warning line) and the cycle goes on.
    async fn poll(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
    ) -> Result<Counts, Stop> {
        let overlap = self.settings.overlap.as_millis() as i64;
        let since = rec.cursor.unwrap_or(rec.start).saturating_sub(overlap);
        let path = format!(
            "/api/v1/document/poll?last_synced_at={}",
            format_naive_seconds(since)
        );
        let r = match self.get_collection(idx, POLL, &path, &ctx.requests).await {
            Err(e) if e.is_too_large() => return Err(Stop::Oversized(e.to_string())),
            r => r?,
        };
        let answer =
            model::poll_items(&r.body).map_err(|why| ApiError::Malformed { label: POLL, why })?;
        drop(r);
        self.metrics.anomaly("unusable_item", answer.unusable.count);
        if answer.over_cap {
            return Err(Stop::Oversized(format!(
                "{POLL}: the answer lists {} items, more than {}",
                answer.listed,
                model::MAX_POLL_ITEMS
            )));
        }
        let drifted = self
            .drift
            .observe(&answer.presence, &mut rec.drift, |name| {
                let effect = match model::poll_fields()
                    .iter()
                    .find(|f| f.name == name)
                    .map(|f| f.need)
                {
                    Some(Need::Required) => "poll items without it are skipped",
                    _ => "the detail's parties decide the member's side instead",
                };
                format!(
                    "{effect}; CamInvoice documents this name, so pollhook has no override for it"
                )
            });
        if let Some(line) = answer.unusable.summary("unusable poll item(s) skipped") {
            if drifted {
                tracing::debug!(member = %self.member(idx).endpoint_id, "{line}");
            } else {
                tracing::warn!(member = %self.member(idx).endpoint_id, "{line}; the next list walk looks again");
            }
        }
        // Oldest first (a document listed twice keeps its newest entry: `apply`).
        let mut items = answer.items;
        items.sort_by_key(|i| i.updated_at);
        let candidates: Vec<Candidate> = items
            .into_iter()
            .map(|it| Candidate {
                document_id: it.document_id,
                updated_at: Some(it.updated_at),
                side: it.side,
                known: None,
            })
            .collect();
        self.apply(idx, ctx, rec, &candidates, true).await
    }

    /// Walks the list endpoint, both sides, every page, through the same diff, committed a
    /// [`CHUNK`] of entries at a time (a failed walk loses at most its uncommitted pages: the
    /// next walk sees them again). A page over its cap is asked again as two pages of half
    /// the size.
    async fn resync(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
    ) -> Result<Counts, Stop> {
        let mut total = Counts::default();
        let mut pending: Vec<Candidate> = Vec::with_capacity(CHUNK);
        for (kind, side) in [
            (self.settings.list_send_type.as_str(), Side::Send),
            ("received", Side::Receive),
        ] {
            let mut size = u64::from(self.settings.page_size);
            let mut page = 1u64;
            for _ in 0..MAX_PAGES {
                let path = format!("/api/v1/document?type={kind}&page={page}&size={size}");
                let r = match self.get_collection(idx, LIST, &path, &ctx.requests).await {
                    Err(e) if e.is_too_large() && size > 1 => {
                        tracing::warn!(member = %self.member(idx).endpoint_id,
                            "{e}: asking for pages of {} instead", size / 2);
                        self.metrics.anomaly("oversized_answer", 1);
                        (page, size) = (2 * page - 1, size / 2);
                        continue;
                    }
                    r => r?,
                };
                let model::ListPage {
                    page: p,
                    total_pages,
                    ..
                } = model::list_page(&r.body)
                    .map_err(|why| ApiError::Malformed { label: LIST, why })?;
                drop(r);
                self.metrics.anomaly("unusable_item", p.unusable.count);
                if let Some(line) = p.unusable.summary("unusable list entries skipped") {
                    tracing::warn!(member = %self.member(idx).endpoint_id, "page {page}: {line}");
                }
                pending.extend(p.items.into_iter().map(|d| Candidate {
                    document_id: d.document_id.clone(),
                    updated_at: d.updated_at,
                    side: Some(side),
                    known: Some(Box::new(d)),
                }));
                let more = match total_pages {
                    Some(t) => page < t,
                    None => p.listed >= size,
                };
                let last = !more || p.listed == 0;
                // Pages are gathered into whole chunks, one commit (and flush) each: a commit
                // per page made a 100,000-change walk at 1M documents 10,002 flushed commits
                // of ~10 events, and sled's memory grew with them (peak 75.5 MB against
                // 62.4 gathered; BENCHMARKS.md, issue 12 follow-up).
                if last || pending.len() >= CHUNK {
                    total += self.apply(idx, ctx, rec, &pending, false).await?;
                    pending.clear();
                }
                if last {
                    break;
                }
                page += 1;
            }
            if !pending.is_empty() {
                total += self.apply(idx, ctx, rec, &pending, false).await?;
                pending.clear();
            }
        }
        Ok(total)
    }

    /// One member's whole cycle: `Ok(None)` when it is revoked and was skipped, `Err` with a
    /// line for the operator when it failed. Drives [`member::step`]: performs each action,
    /// feeds back what it saw, and keeps the member's record on the way.
    pub(super) async fn sync_member(
        self: Arc<Self>,
        idx: usize,
        ctx: CycleContext,
    ) -> Result<Option<Counts>, MemberError> {
        let m = self.member(idx);
        let existing = self.load_record(&ctx.store, idx)?;
        let mut rec = existing.unwrap_or_else(|| MemberRecord {
            start: match ctx.start {
                Start::Now => now_ms(),
                Start::At(t) => t,
            },
            ..MemberRecord::default()
        });
        self.adopt_stored_access(idx, &rec);
        let begin = Observation::Begin {
            resync: ctx.resync,
            token_changed: rec
                .revoked_token
                .as_deref()
                .is_some_and(|fp| fp != m.fingerprint),
        };
        let revoke_after = self.settings.revoke_after_refusals;
        let mut state = State::Idle(Standing::of(&rec));
        let mut observation = begin;
        let mut counts = Counts::default();
        let mut batch = Batch::default();
        // What stopped the last piece of work (the text behind Oversized, Refused, Failed),
        // and the error itself when it failed.
        let mut why = String::new();
        let mut failure: Option<Stop> = None;
        let mut cursor_checked = false;
        let result: Result<(), MemberError> = loop {
            let (actions, next) = member::step(state, observation, revoke_after);
            state = next;
            let mut work = None;
            let mut end = None;
            for action in actions {
                match action {
                    Action::Skip => {
                        tracing::debug!(member = %m.endpoint_id, "revoked; not polled until reconnected (a new refresh_token)");
                        return Ok(None);
                    }
                    Action::Reconnect => {
                        tracing::info!(member = %m.endpoint_id, "refresh_token changed since the revocation: polling again");
                        rec.revoked_token = None;
                        rec.revoked_before_start = false;
                        rec.refusals = 0;
                        work = Some(Work::Begin);
                    }
                    Action::Walk(_) => work = Some(Work::Walk),
                    Action::Poll => work = Some(Work::Poll),
                    Action::Baselined { began } => rec.baseline_at = Some(began),
                    Action::Oversized => {
                        self.metrics.anomaly("oversized_answer", 1);
                        tracing::warn!(member = %m.endpoint_id,
                            "{why}: walking the list instead; the poll resumes from the walk's start");
                    }
                    Action::ResumeAfter { began } => {
                        // The walk saw every document as of its start; a provider clock up to
                        // the skew allowance behind this one is covered too (the poll adds the
                        // overlap).
                        let resume = began.saturating_sub(MAX_FUTURE_SKEW.as_millis() as i64);
                        rec.cursor = Some(rec.cursor.map_or(resume, |c| c.max(resume)));
                    }
                    Action::Succeed => {
                        rec.last_success = Some(now_ms());
                        rec.last_error = None;
                        rec.refusals = 0;
                        end = Some(Ok(()));
                    }
                    Action::Fail { refusals_left } => {
                        end = Some(Err(match (failure.take(), refusals_left) {
                            (Some(Stop::Api(source)), Some(left)) => {
                                MemberError::Refused { source, left }
                            }
                            (Some(stop), None) => MemberError::Work(stop),
                            (stop, _) => MemberError::Bug(format!(
                                "the member's cycle failed in {state:?} after {stop:?}"
                            )),
                        }))
                    }
                    Action::EmitRevoked => {
                        let (payload, id) =
                            diff::revoked(&self.account, &m.endpoint_id, &m.fingerprint);
                        let now = now_ms();
                        batch.events.push(NewEvent {
                            id,
                            provider: "caminvoice",
                            account: self.account.clone(),
                            event_type: diff::REVOKED.to_string(),
                            occurred_at: now,
                            detected_at: now,
                            subject: format!("{}/", m.endpoint_id),
                            payload,
                        });
                    }
                    Action::Revoke => {
                        rec.revoked_token = Some(m.fingerprint.clone());
                        tracing::warn!(member = %m.endpoint_id, refusals = rec.refusals,
                            "{why}: the member is revoked; ENTITY.REVOKED emitted, polling stops until it is reconnected");
                        end = Some(Ok(()));
                    }
                    Action::RevokeBeforeStart => {
                        rec.revoked_token = Some(m.fingerprint.clone());
                        rec.revoked_before_start = true;
                        tracing::warn!(member = %m.endpoint_id, refusals = rec.refusals,
                            "{why}, and it never accepted this member's refresh token since `start`: the member was disconnected before, so its ENTITY.REVOKED webhook went out before pollhook's history begins and none is emitted; polling stops until it is reconnected");
                        end = Some(Ok(()));
                    }
                }
            }
            if let Some(end) = end {
                break end;
            }
            if !cursor_checked {
                cursor_checked = true;
                self.check_cursor(&m.endpoint_id, &mut rec);
            }
            observation = match work {
                Some(Work::Begin) => begin,
                Some(Work::Walk) => {
                    let began = now_ms();
                    match self.resync(idx, &ctx, &mut rec).await {
                        Ok(c) => {
                            counts += c;
                            rec.last_resync = Some(now_ms());
                            Observation::Walked { began }
                        }
                        Err(e) => {
                            let seen = self.observe_failure(idx, &mut rec, &e, &mut why);
                            failure = Some(e);
                            seen
                        }
                    }
                }
                Some(Work::Poll) => match self.poll(idx, &ctx, &mut rec).await {
                    Ok(c) => {
                        counts += c;
                        Observation::Polled
                    }
                    Err(Stop::Oversized(w)) => {
                        why = w;
                        Observation::Oversized
                    }
                    Err(e) => {
                        let seen = self.observe_failure(idx, &mut rec, &e, &mut why);
                        failure = Some(e);
                        seen
                    }
                },
                // Never: every step ends the cycle or asks for work (`member::tests`).
                None => {
                    break Err(MemberError::Bug(format!(
                        "the member's state machine stopped in {state:?}"
                    )))
                }
            };
        };
        self.note_accepted(idx, &mut rec);
        self.put_record(&mut batch, idx, &rec);
        counts.events += ctx.store.commit(batch).await?.events as u64;
        if let Err(e) = self.keep_rotated(idx, &ctx.store).await {
            tracing::warn!(member = %m.endpoint_id, "cannot store the rotated refresh token ({e}); it is used for this run only");
        }
        result.map(|_| Some(counts))
    }

    /// A stored poll cursor beyond `now + MAX_FUTURE_SKEW` (a timestamp from the future stored
    /// by an older pollhook, or this clock went back) is forgotten: polling from `start` again.
    fn check_cursor(&self, endpoint: &str, rec: &mut MemberRecord) {
        if let Some(c) = rec.cursor.filter(|c| *c > trust_limit(now_ms())) {
            tracing::warn!(member = %endpoint,
                "the stored poll cursor {} is ahead of this host's clock by more than {} (a timestamp from the future stored by an older pollhook, or this clock went back): polling from `start` again; documents already seen cost nothing",
                format_ms(c), format_duration(MAX_FUTURE_SKEW));
            rec.cursor = None;
        }
    }

    /// Every cached access token was issued by an accepted refresh of this member: the
    /// evidence that it was connected ([`member::seen_connected`]).
    fn note_accepted(&self, idx: usize, rec: &mut MemberRecord) {
        if let Some(t) = crate::locks::lock(&self.tokens).get(&idx) {
            rec.accepted_at = Some(rec.accepted_at.unwrap_or(t.issued_at).max(t.issued_at));
        }
    }

    /// What a failure of the member's work tells the state machine: a refused refresh (counted
    /// in the record), or anything else (the record keeps it as the last error, unless the
    /// daemon's shutdown cut the work short). `why` gets the text for the operator.
    fn observe_failure(
        &self,
        idx: usize,
        rec: &mut MemberRecord,
        e: &Stop,
        why: &mut String,
    ) -> Observation {
        match e {
            Stop::Api(refused @ ApiError::RefreshRefused { .. }) => {
                self.note_accepted(idx, rec);
                rec.refusals += 1;
                *why = refused.to_string();
                rec.last_error = Some(why.clone().into());
                Observation::Refused {
                    refusals: rec.refusals,
                    seen_connected: member::seen_connected(rec),
                }
            }
            e => {
                // A cycle cut short by the daemon's shutdown did not fail: keep the last error.
                if !matches!(e, Stop::Api(ApiError::Http(h)) if h.is_shutdown()) {
                    rec.last_error = Some(e.to_string().into());
                }
                *why = e.to_string();
                Observation::Failed
            }
        }
    }

    /// Records `why` as the member's last error (for `status`), keeping everything else.
    pub(super) async fn note_failure(&self, idx: usize, store: &Store, why: &str) {
        let Ok(Some(mut rec)) = self.load_record(store, idx) else {
            return;
        };
        rec.last_error = Some(why.into());
        let mut batch = Batch::default();
        self.put_record(&mut batch, idx, &rec);
        if let Err(e) = store.commit(batch).await {
            tracing::warn!(member = %self.member(idx).endpoint_id, "cannot record the failure: {e}");
        }
    }
}
