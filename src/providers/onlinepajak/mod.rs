//! OnlinePajak: one cycle per account (one company: an NPWP and its token) turns completed DJP
//! approvals into the PPN_INVOICE_APPROVED webhooks OnlinePajak would have sent.
//!
//! A cycle walks Bulk Fetch from the cursor minus the overlap window, oldest change first, by
//! keyset: each next request starts at the last `updatedAt` received (inclusive), so an invoice
//! updated while the walk runs moves behind it and is read later, never skipped. An item that
//! lacks the status or `updatedAt` is Retrieved; nothing else costs a call. Each page is one
//! commit (state + events + the account record with the advanced cursor). Every attempt waits
//! for the account's GCRA limiter, whose state is saved with the record so that restarts do not
//! get a fresh burst: the provider's 100-a-minute limit is never reached by pollhook itself.

pub mod api;
pub mod client;
pub mod diff;
pub mod model;
pub mod probe;

use self::client::{Api, ApiError};
use self::model::{InvoiceRecord, Unreadable};
use super::contract::{self, DriftMarks, DriftWatch, Need};
use super::wire::{addressable, Unusable};
use super::{CycleContext, CycleReport, FailureKind, Provider, UnitFailure, UnitStatus};
use crate::config::{OnlinePajakSettings, ResolveError, Start};
use crate::event::NewEvent;
use crate::http::Http;
use crate::metrics::AccountMetrics;
use crate::pacing::Gcra;
use crate::shard::Shard;
use crate::store::{Batch, Store, StoreError, Unit};
use crate::time::{
    format_duration, format_ms, now_ms, supersedes, trust_limit, Millis, MAX_FUTURE_SKEW,
};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;

/// Pages walked in one cycle at most: a guard against a server that never stops paging.
const MAX_PAGES: u32 = 100_000;

/// One configured OnlinePajak account.
pub struct OnlinePajak {
    account: String,
    settings: OnlinePajakSettings,
    api: Api,
    pacer: Arc<Gcra>,
    /// The account's counters (provider anomalies are counted there).
    metrics: Arc<AccountMetrics>,
    /// Mapped fields missing from every invoice of an answer: logged once an hour.
    drift: DriftWatch,
}

/// The account's progress, kept in the store's `cursors` tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct AccountRecord {
    start: Millis,
    #[serde(default)]
    cursor: Option<Millis>,
    #[serde(default)]
    last_success: Option<Millis>,
    #[serde(default)]
    last_error: Option<crate::redact::Redacted>,
    /// The GCRA limiter's state (epoch ms) at the end of the last cycle.
    #[serde(default)]
    pacer_tat: Millis,
    /// Mapped fields that drifted (missing from every invoice of an answer), since when.
    #[serde(default, skip_serializing_if = "DriftMarks::is_empty")]
    drift: DriftMarks,
}

#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    changed: u64,
    retrieved: u64,
    pages: u64,
    events: u64,
    duplicates: u64,
}

impl OnlinePajak {
    pub fn new(
        account: &str,
        s: &OnlinePajakSettings,
        http: Http,
        metrics: Arc<AccountMetrics>,
    ) -> Result<OnlinePajak, ResolveError> {
        let token = s.token.resolve()?;
        let pacer = Arc::new(Gcra::per_minute(s.rate_limit, s.rate_burst));
        let http = http.with_pacer(Arc::clone(&pacer));
        Ok(OnlinePajak {
            account: account.to_string(),
            api: Api::new(
                http,
                &s.base_url,
                &token,
                s.raw_auth,
                api::ApiMap::with_overrides(&s.api),
            ),
            settings: s.clone(),
            pacer,
            drift: DriftWatch::new("OnlinePajak", account, Arc::clone(&metrics)),
            metrics,
        })
    }

    /// What to check when the mapped field `name` drifted, for the warning.
    fn advice(&self, name: &str) -> String {
        let fields = self.api.map.fields();
        let Some(f) = fields.iter().find(|f| f.name == name) else {
            return "check [accounts.api]".into();
        };
        let effect = match f.need {
            Need::Required => {
                "invoices without it are not processed (each is Retrieved once per change at most)"
            }
            Need::Useful => "payloads carry it empty",
        };
        format!(
            "{effect}; the name is `{}` in [accounts.api]",
            f.setting.unwrap_or("?")
        )
    }

    /// The company: the unit the store keys this account's records by.
    fn unit(&self) -> Unit<'_> {
        Unit::new(&self.account, &self.settings.npwp)
    }

    /// The company as reports and `status` name it.
    fn unit_name(&self) -> String {
        format!("npwp {}", self.settings.npwp)
    }

    fn load_record(&self, store: &Store) -> Result<Option<AccountRecord>, StoreError> {
        match store.get_cursor(self.unit())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| {
                StoreError::Corrupt(format!("record of account {}: {e}", self.account))
            }),
        }
    }

    /// Adds the account's record to `batch`.
    fn put_record(&self, batch: &mut Batch, rec: &AccountRecord) {
        batch.put_cursor(
            self.unit(),
            serde_json::to_vec(rec).expect("record serializes"),
        );
    }

    /// Walks Bulk Fetch from the cursor and commits page by page. A page over its cap is asked
    /// again at half the size; a timestamp beyond `now + MAX_FUTURE_SKEW` neither moves the
    /// cursor nor the keyset.
    async fn walk(&self, ctx: &CycleContext, rec: &mut AccountRecord) -> Result<Counts, Stop> {
        let mut size = self.settings.page_size;
        let first_page = self.api.map.first_page;
        let overlap = self.settings.overlap.as_millis() as i64;
        let mut from = rec.cursor.unwrap_or(rec.start).saturating_sub(overlap);
        let mut page_no = first_page;
        let mut counts = Counts::default();
        let map_id = self.api.map.fingerprint();
        // Which gaps (no status, no `updatedAt`) a Retrieve this cycle could not fill: an
        // invoice with the same gap is not Retrieved again in this cycle.
        let mut futile: HashSet<(bool, bool)> = HashSet::new();
        for _ in 0..MAX_PAGES {
            let page = match self
                .api
                .bulk_fetch(from, page_no, size, &ctx.requests)
                .await
            {
                Err(e) if e.is_too_large() && size > 1 => {
                    tracing::warn!(account = %self.account, "{e}: asking for pages of {} instead", size / 2);
                    self.metrics.anomaly("oversized_answer", 1);
                    (size, page_no) = (size / 2, first_page);
                    continue;
                }
                bulk => bulk?,
            };
            let presence = page.presence;
            let page = page.page;
            counts.pages += 1;
            self.metrics.anomaly("unusable_item", page.unusable.count);
            let drifted = self
                .drift
                .observe(&presence, &mut rec.drift, |f| self.advice(f));
            if let Some(line) = page.unusable.summary("unusable invoice(s) skipped") {
                if drifted {
                    tracing::debug!(account = %self.account, "{line}");
                } else {
                    tracing::warn!(account = %self.account, "{line}");
                }
            }
            let mut notes = Notes::default();
            let mut last_at = None;
            let mut batch = Batch::default();
            let now = now_ms();
            let limit = trust_limit(now);
            for listed in page.items {
                if let Some(at) = listed.updated_at.filter(|at| *at <= limit) {
                    last_at = Some(at);
                }
                // Keyed by the id Bulk Fetch listed (a Retrieve answers for that id).
                let key = listed.id.clone();
                let stored = ctx
                    .store
                    .get_state(self.unit(), &key)?
                    .and_then(|v| InvoiceRecord::decode(&v))
                    .unwrap_or_default();
                let prev = stored.state.clone();
                // Not newer: skipped unread (a quarantined stored stamp says nothing: the diff
                // compares the whole version).
                if let (Some(p), Some(at)) = (&prev, listed.updated_at) {
                    if p.updated_at <= limit && !supersedes(at, p.updated_at, limit) {
                        continue;
                    }
                }
                let gap = listed.gap();
                let inv = if listed.is_complete() {
                    listed
                } else if !addressable(&listed.id) {
                    notes.skipped.add(1, || format!("invoice {:?}: incomplete, and its id cannot be sent as a URL path segment (Retrieve)", listed.id));
                    continue;
                } else if stored
                    .unreadable
                    .is_some_and(|u| u.covers(map_id, listed.updated_at))
                    || futile.contains(&gap)
                {
                    // Retrieve could not complete this version (or, this cycle, one with the
                    // same gap): the drift warning says why; no call.
                    notes.incomplete += 1;
                    continue;
                } else {
                    counts.retrieved += 1;
                    match self.api.retrieve(&listed.id, &ctx.requests).await {
                        Ok(Some(full)) if full.invoice.is_complete() => full.invoice,
                        Ok(Some(full)) => {
                            self.drift
                                .observe(&full.presence, &mut rec.drift, |f| self.advice(f));
                            futile.insert(gap);
                            notes.incomplete += 1;
                            if let Some(version) = listed.updated_at {
                                let record = InvoiceRecord {
                                    unreadable: Some(Unreadable {
                                        map: map_id,
                                        version,
                                    }),
                                    ..stored
                                };
                                batch.put_state(self.unit(), &key, record.encode());
                            }
                            continue;
                        }
                        Ok(None) => {
                            notes.skipped.add(1, || {
                                format!(
                                    "invoice {:?}: listed by Bulk Fetch but Retrieve answers 404",
                                    listed.id
                                )
                            });
                            continue;
                        }
                        Err(e) if e.is_too_large() => {
                            self.metrics.anomaly("oversized_answer", 1);
                            notes
                                .skipped
                                .add(1, || format!("invoice {:?}: {e}", listed.id));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                let (Some(status), Some(updated_at)) =
                    (inv.approval_status.clone(), inv.updated_at)
                else {
                    continue;
                };
                let out = diff::diff(
                    prev.as_ref(),
                    &inv,
                    updated_at,
                    &status,
                    rec.start,
                    &self.api.map,
                    now,
                );
                let Some(record) = out.record else { continue };
                counts.changed += 1;
                if updated_at > limit {
                    notes.quarantined.add(1, || {
                        format!("invoice {:?} updatedAt {}", inv.id, format_ms(updated_at))
                    });
                }
                if let Some(approved) = out.emit {
                    let npwp = if inv.npwp.is_empty() {
                        &self.settings.npwp
                    } else {
                        &inv.npwp
                    };
                    batch.events.push(NewEvent {
                        id: diff::id(&self.account, npwp, &inv, &status),
                        provider: "onlinepajak",
                        account: self.account.clone(),
                        event_type: diff::APPROVED_EVENT.to_string(),
                        occurred_at: diff::answered_at(&inv, updated_at, now),
                        detected_at: now,
                        subject: format!("{}/{}", self.settings.npwp, inv.id),
                        payload: diff::payload(
                            &inv,
                            approved,
                            &self.settings.npwp,
                            now,
                            &self.api.map,
                        ),
                    });
                }
                if updated_at <= limit {
                    rec.cursor = Some(rec.cursor.map_or(updated_at, |c| c.max(updated_at)));
                }
                let record = InvoiceRecord {
                    state: Some(record),
                    unreadable: None,
                };
                batch.put_state(self.unit(), &key, record.encode());
            }
            self.report(&notes);
            rec.pacer_tat = self.pacer.tat_ms();
            self.put_record(&mut batch, rec);
            let c = ctx.store.commit(batch).await?;
            counts.events += c.events as u64;
            counts.duplicates += c.duplicates as u64;
            if page.listed < u64::from(size) {
                return Ok(counts);
            }
            match last_at {
                Some(at) if at > from => {
                    from = at;
                    page_no = first_page;
                }
                // A full page of one instant (or without trusted timestamps): the next page.
                _ => page_no += 1,
            }
        }
        tracing::warn!(account = %self.account, "stopped after {MAX_PAGES} pages in one cycle; the next cycle goes on from the cursor");
        Ok(counts)
    }

    /// Logs what one page held that was wrong, one line per kind, and counts it.
    fn report(&self, notes: &Notes) {
        if let Some(line) = notes.skipped.summary("invoice(s) skipped") {
            tracing::warn!(account = %self.account, "{line}; the next cycle looks again");
        }
        if let Some(line) = notes.quarantined.summary("timestamp(s) quarantined") {
            tracing::warn!(account = %self.account,
                "{line}: more than {} ahead of this host's clock, so never trusted for the cursor and judged as the time pollhook saw them (is either clock wrong?)",
                format_duration(MAX_FUTURE_SKEW));
        }
        self.metrics
            .anomaly("future_timestamp", notes.quarantined.count);
        if notes.incomplete > 0 {
            tracing::debug!(account = %self.account, incomplete = notes.incomplete,
                "invoices without an approval status or updatedAt even when retrieved: not retrieved again until they change (or [accounts.api] does)");
        }
    }
}

/// What one page held that was wrong, logged as one line per kind.
#[derive(Debug, Default)]
struct Notes {
    skipped: Unusable,
    quarantined: Unusable,
    /// Invoices Retrieve could not complete (a drifted field: the drift warning covers them).
    incomplete: u64,
}

impl Provider for OnlinePajak {
    fn kind(&self) -> &'static str {
        "onlinepajak"
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn cycle(self: Arc<Self>, ctx: CycleContext) -> BoxFuture<'static, CycleReport> {
        Box::pin(async move {
            if !ctx.shard.owns(&self.account, &self.settings.npwp) {
                return CycleReport::default();
            }
            let mut report = CycleReport {
                units: 1,
                ..CycleReport::default()
            };
            let mut rec = match self.load_record(&ctx.store) {
                Ok(Some(r)) => r,
                Ok(None) => AccountRecord {
                    start: match ctx.start {
                        Start::Now => now_ms(),
                        Start::At(t) => t,
                    },
                    ..AccountRecord::default()
                },
                Err(e) => {
                    report.failures.push(UnitFailure::new(
                        Some(self.unit_name()),
                        FailureKind::Store,
                        e.to_string(),
                    ));
                    return report;
                }
            };
            if let Some(c) = rec.cursor.filter(|c| *c > trust_limit(now_ms())) {
                tracing::warn!(account = %self.account,
                    "the stored cursor {} is ahead of this host's clock by more than {} (a timestamp from the future stored by an older pollhook, or this clock went back): fetching from `start` again; invoices already seen cost nothing",
                    format_ms(c), format_duration(MAX_FUTURE_SKEW));
                rec.cursor = None;
            }
            self.pacer.restore(rec.pacer_tat);
            let result = self.walk(&ctx, &mut rec).await;
            rec.pacer_tat = self.pacer.tat_ms();
            match &result {
                Ok(c) => {
                    rec.last_success = Some(now_ms());
                    rec.last_error = None;
                    report.changed = c.changed;
                    report.events = c.events;
                    report.duplicates = c.duplicates;
                    // The floor: one Bulk Fetch per page of changed invoices (at least one to ask),
                    // plus the Retrieves the list items could not spare.
                    report.floor = c
                        .changed
                        .div_ceil(u64::from(self.settings.page_size))
                        .max(1)
                        + c.retrieved;
                }
                Err(e) => {
                    // A cycle cut short by the daemon's shutdown did not fail.
                    let kind = match e {
                        Stop::Api(ApiError::Http(h)) if h.is_shutdown() => FailureKind::Interrupted,
                        Stop::Api(_) => FailureKind::Provider,
                        Stop::Store(_) => FailureKind::Store,
                    };
                    if kind != FailureKind::Interrupted {
                        rec.last_error = Some(e.to_string().into());
                    }
                    report.failures.push(UnitFailure::new(
                        Some(self.unit_name()),
                        kind,
                        format!("{e}; nothing is lost, the next cycle retries from the cursor"),
                    ));
                }
            }
            let mut batch = Batch::default();
            self.put_record(&mut batch, &rec);
            if let Err(e) = ctx.store.commit(batch).await {
                report.failures.push(UnitFailure::new(
                    Some(self.unit_name()),
                    FailureKind::Store,
                    e.to_string(),
                ));
            }
            report.requests = ctx.requests.snapshot();
            report.core_requests = report.requests.values().sum();
            report
        })
    }

    fn probe(self: Arc<Self>) -> BoxFuture<'static, super::probe::ProbeReport> {
        Box::pin(async move { self.run_probe().await })
    }

    fn status(&self, store: &Store, shard: Shard) -> Result<Vec<UnitStatus>, StoreError> {
        if !shard.owns(&self.account, &self.settings.npwp) {
            return Ok(Vec::new());
        }
        let rec = self.load_record(store)?;
        let documents = store.count_state(self.unit())?;
        Ok(vec![UnitStatus {
            unit: self.unit_name(),
            state: match &rec {
                None => "never polled".into(),
                Some(r) if r.last_error.is_some() => "failing".into(),
                Some(_) => "ok".into(),
            },
            last_success: rec.as_ref().and_then(|r| r.last_success),
            cursor: rec.as_ref().and_then(|r| r.cursor),
            documents,
            warnings: rec
                .as_ref()
                .map(|r| contract::status_lines("OnlinePajak", &r.drift))
                .unwrap_or_default(),
            last_error: rec.and_then(|r| r.last_error),
        }])
    }
}
