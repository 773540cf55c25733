//! CamInvoice: one cycle polls every connected member and turns what changed into the
//! DOCUMENT.* and ENTITY.REVOKED webhooks CamInvoice would have sent.
//!
//! Per member, one cycle is:
//! 1. load the member's record (start instant, poll cursor, refusals, revocation);
//!    a revoked member is skipped until its refresh token changes (reconnected);
//! 2. until the baseline walk has completed once, or when a resync is due, walk the list
//!    endpoint (both sides, all pages) through the same diff — the baseline, and the net under
//!    the poll;
//! 3. poll from the cursor minus the overlap window; skip items whose `updated_at` is already
//!    stored; fetch Get Document Detail only for the rest; diff in `updated_at` order;
//! 4. commit each chunk (state + events + member record with the advanced cursor) in one
//!    transaction. A failure stops the member at the failing item: everything before it is
//!    kept, the cursor stays before it, the next cycle resumes there.
//!
//! A refused refresh (not the Basic credentials: those are a config error) counts towards
//! `revoke_after_refusals`; reaching it emits ENTITY.REVOKED once and stops polling the member
//! — if CamInvoice accepted the member's refresh token at or after `start`. A member refused
//! from its first try may have been disconnected before `start` (its webhook went out then):
//! it is logged and shown as such in `status`, and no event is emitted.
//!
//! A hostile provider changes none of this (RELIABILITY.md, "Hostile provider and operator"):
//! a document listed twice is diffed once; a timestamp beyond `now + MAX_FUTURE_SKEW` never
//! moves the cursor; a poll answer (or a detail) over its size or item cap sends the member to
//! the list walk for the cycle, after which the poll resumes from the walk's start; unusable
//! items are skipped and summed up in one line per answer; an id that cannot be a URL path
//! segment is never requested.
//!
//! # Layout
//! - `member`: the member's phases and its cycle as a pure state machine (`step`);
//! - `sync`: one member's cycle driving that machine (walks, poll, revocation), its record;
//! - `apply`: chunked diff + commit of what a poll or a walk listed;
//! - `session`: the access-token cache and authenticated GETs, Get Document Detail;
//! - `roster`: the members polled (config + connections), rotated refresh tokens;
//! - `client` (HTTP calls, error classes), `token` (refresh answers), `model` (wire parsing,
//!   stored records), `diff` (pure rules), `connect` (onboarding a member).

mod apply;
pub mod client;
pub mod connect;
pub mod diff;
pub mod member;
pub mod model;
pub mod probe;
mod roster;
mod session;
mod sync;
pub mod token;

use self::client::{Api, DETAIL, POLL};
use self::member::Standing;
use self::roster::MemberCreds;
use self::sync::MemberError;
use self::token::AccessToken;
use super::{CycleContext, CycleReport, FailureKind, Provider, UnitFailure, UnitStatus};
use crate::config::{CamInvoiceSettings, HttpSettings, ResolveError, Secret};
use crate::http::Http;
use crate::metrics::AccountMetrics;
use crate::shard::Shard;
use crate::store::{Store, StoreError, Unit};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tracing::Instrument;

pub(crate) use self::roster::fingerprint;

/// One configured CamInvoice account.
pub struct CamInvoice {
    account: String,
    settings: CamInvoiceSettings,
    api: Api,
    /// The config's members, then members only the store knows (connected with
    /// `pollhook connect`). Only ever appended to: an index names one member for the whole
    /// run; an entry is replaced when a newer refresh token is stored for it.
    members: RwLock<Vec<Arc<MemberCreds>>>,
    /// Fingerprints of the config's refresh tokens, by endpoint id.
    configured: HashMap<String, String>,
    tokens: Mutex<HashMap<usize, AccessToken>>,
    /// Refresh tokens the provider rotated during this run (kept in memory only).
    rotated: Mutex<HashMap<usize, Secret>>,
    /// Members synced at once (the account's `concurrency`): with a thousand members, an
    /// unbounded start would hold every member's chunk of detail fetches in memory at once.
    member_pool: Arc<tokio::sync::Semaphore>,
    /// Documents of the account in hand at once, over all its members (`apply::IN_HAND`):
    /// a chunk takes its permits before its records are read and its details fetched, and
    /// gives them back once committed, so the memory of a burst bounds by design whatever
    /// the number of members syncing.
    in_hand: tokio::sync::Semaphore,
    /// The account's counters (provider anomalies are counted there).
    metrics: Arc<AccountMetrics>,
    /// Poll fields missing from every item of an answer: logged once an hour per account.
    drift: super::contract::DriftWatch,
}

impl CamInvoice {
    /// Resolves the account's secrets and builds its client.
    pub fn new(
        account: &str,
        s: &CamInvoiceSettings,
        settings: &HttpSettings,
        http: Http,
        metrics: Arc<AccountMetrics>,
    ) -> Result<CamInvoice, ResolveError> {
        let secret = s.client_secret.resolve()?;
        let mut members = Vec::new();
        for m in &s.members {
            let refresh_token = m.refresh_token.resolve()?;
            members.push(Arc::new(MemberCreds {
                endpoint_id: m.endpoint_id.clone(),
                fingerprint: fingerprint(refresh_token.expose()),
                refresh_token,
            }));
        }
        let configured = members
            .iter()
            .map(|m| (m.endpoint_id.clone(), m.fingerprint.clone()))
            .collect();
        let member_pool = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
        Ok(CamInvoice {
            account: account.to_string(),
            api: Api::new(http, &s.base_url, &s.client_id, &secret),
            settings: s.clone(),
            members: RwLock::new(members),
            configured,
            tokens: Mutex::new(HashMap::new()),
            rotated: Mutex::new(HashMap::new()),
            member_pool,
            in_hand: tokio::sync::Semaphore::new(apply::IN_HAND),
            drift: super::contract::DriftWatch::new("CamInvoice", account, Arc::clone(&metrics)),
            metrics,
        })
    }
}

impl Provider for CamInvoice {
    fn kind(&self) -> &'static str {
        "caminvoice"
    }

    fn account(&self) -> &str {
        &self.account
    }

    fn cycle(self: Arc<Self>, ctx: CycleContext) -> BoxFuture<'static, CycleReport> {
        Box::pin(async move {
            let mut report = CycleReport::default();
            if let Err(e) = self.sync_members(&ctx.store) {
                report.failures.push(UnitFailure::new(
                    None,
                    FailureKind::Store,
                    format!("cannot read the connected members from the state store: {e}"),
                ));
            }
            let owned: Vec<usize> = (0..self.member_count())
                .filter(|&idx| ctx.polls(&self.account, &self.member(idx).endpoint_id))
                .collect();
            let tasks: Vec<_> = owned
                .iter()
                .map(|&idx| {
                    let span =
                        tracing::info_span!("member", member = %self.member(idx).endpoint_id);
                    let (me, ctx, pool) = (
                        Arc::clone(&self),
                        ctx.clone(),
                        Arc::clone(&self.member_pool),
                    );
                    tokio::spawn(
                        async move {
                            let _turn = pool.acquire_owned().await.expect("never closed");
                            me.sync_member(idx, ctx).await
                        }
                        .instrument(span),
                    )
                })
                .collect();
            for (idx, t) in owned.into_iter().zip(tasks) {
                let member = self.member(idx);
                let endpoint = &member.endpoint_id;
                match t.await {
                    Ok(Ok(None)) => {}
                    Ok(Ok(Some(c))) => {
                        report.units += 1;
                        report.changed += c.changed;
                        report.resynced += c.resynced;
                        report.events += c.events;
                        report.duplicates += c.duplicates;
                    }
                    Ok(Err(e)) => {
                        report.units += 1;
                        report.failures.push(UnitFailure::new(
                            Some(format!("member {endpoint}")),
                            e.kind(),
                            e.to_string(),
                        ));
                    }
                    Err(e) => {
                        // A bug, never a provider's answer: still, the member's status says so.
                        let e = MemberError::Bug(format!("the sync task failed: {e}"));
                        self.note_failure(idx, &ctx.store, &e.to_string()).await;
                        report.failures.push(UnitFailure::new(
                            Some(format!("member {endpoint}")),
                            e.kind(),
                            e.to_string(),
                        ));
                    }
                }
            }
            report.requests = ctx.requests.snapshot();
            report.floor = report.units as u64 + report.changed;
            report.core_requests = [POLL, DETAIL]
                .iter()
                .filter_map(|k| report.requests.get(k))
                .sum();
            report
        })
    }

    fn probe(self: Arc<Self>) -> BoxFuture<'static, super::probe::ProbeReport> {
        Box::pin(async move { CamInvoice::run_probe(&self).await })
    }

    fn units(&self, store: &Store, shard: Shard) -> Result<Vec<String>, StoreError> {
        self.sync_members(store)?;
        Ok(crate::locks::read(&self.members)
            .iter()
            .filter(|m| shard.owns(&self.account, &m.endpoint_id))
            .map(|m| m.endpoint_id.clone())
            .collect())
    }

    fn status(&self, store: &Store, shard: Shard) -> Result<Vec<UnitStatus>, StoreError> {
        self.sync_members(store)?;
        let members = crate::locks::read(&self.members).clone();
        let mut out = Vec::new();
        for (idx, m) in members.iter().enumerate() {
            if !shard.owns(&self.account, &m.endpoint_id) {
                continue;
            }
            let rec = self.load_record(store, idx)?;
            let documents = store.count_state(Unit::new(&self.account, &m.endpoint_id))?;
            let state = match &rec {
                None => "never polled".to_string(),
                Some(r) => {
                    let same_token = r.revoked_token.as_deref() == Some(m.fingerprint.as_str());
                    match Standing::of(r) {
                        s if s.is_revoked() && !same_token => {
                            "reconnected, waiting for the next cycle".to_string()
                        }
                        Standing::RevokedBeforeStart { .. } => "revoked before `start` (CamInvoice refused its refresh token from the first try; no ENTITY.REVOKED emitted: that webhook went out before pollhook's history begins). Reconnect: `pollhook connect`, or a new refresh_token in the config".to_string(),
                        Standing::Revoked { .. } => "revoked (reconnect: `pollhook connect`, or a new refresh_token in the config)".to_string(),
                        _ if r.refusals > 0 => format!("refresh refused {} time(s)", r.refusals),
                        _ if r.last_error.is_some() => "failing".to_string(),
                        _ => "ok".to_string(),
                    }
                }
            };
            out.push(UnitStatus {
                unit: m.endpoint_id.clone(),
                state,
                last_success: rec.as_ref().and_then(|r| r.last_success),
                cursor: rec.as_ref().and_then(|r| r.cursor),
                documents,
                warnings: rec
                    .as_ref()
                    .map(|r| super::contract::status_lines("CamInvoice", &r.drift))
                    .unwrap_or_default(),
                last_error: rec.and_then(|r| r.last_error),
            });
        }
        Ok(out)
    }
}
