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

pub mod client;
pub mod connect;
pub mod diff;
pub mod model;
pub mod token;

use self::client::{Api, ApiError, DETAIL, LIST, POLL};
use self::diff::{changed, diff, Observation};
use self::model::{Connection, Detail, DocState, MemberRecord, Side};
use self::token::AccessToken;
use super::wire::{addressable, segment, Unusable};
use super::{CycleContext, CycleReport, Provider, RequestCount, UnitStatus};
use crate::config::{CamInvoiceSettings, HttpSettings, Secret, Start};
use crate::event::NewEvent;
use crate::http::{Http, Reply};
use crate::metrics::AccountMetrics;
use crate::shard::Shard;
use crate::store::{Batch, Store, StoreError, Unit};
use crate::time::{
    format_ms, format_naive_seconds, judged, now_ms, trust_limit, Millis, MAX_FUTURE_SKEW,
};
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tracing::Instrument;

/// Documents diffed per commit: large enough to amortize the flush, small enough that a crash
/// or a failure repeats little work.
const CHUNK: usize = 256;

/// List pages walked per side in one cycle at most: a guard against a server whose pages
/// never end.
const MAX_PAGES: u64 = 100_000;

struct MemberCreds {
    endpoint_id: String,
    refresh_token: Secret,
    /// Identifies the refresh token without revealing it (first 16 hex of SHA-256).
    fingerprint: String,
}

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
    /// The account's counters (provider anomalies are counted there).
    metrics: Arc<AccountMetrics>,
}

/// Why a member's cycle stopped early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The poll (or a detail it led to) was over its cap: the list walk stands in.
    #[error("{0}")]
    Oversized(String),
}

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

/// What Get Document Detail gave for one document.
enum Fetched {
    Found(Detail),
    /// No detail to be had (404, an id that is not a path segment, an answer over its cap in
    /// a list walk): the document is skipped for this cycle; the next walk looks again.
    Gone(&'static str),
}

/// Tallies of one member's cycle.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Documents the poll showed changed (each costs one detail call).
    changed: u64,
    /// Documents the list walk showed changed (no detail call when the item has a status).
    resynced: u64,
    events: u64,
    duplicates: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.changed += o.changed;
        self.resynced += o.resynced;
        self.events += o.events;
        self.duplicates += o.duplicates;
    }
}

/// A document that may have changed, from the poll or the list.
#[derive(Debug, Clone)]
struct Candidate {
    document_id: String,
    /// `None` when the source did not say: then the detail decides.
    updated_at: Option<Millis>,
    side: Option<Side>,
    /// A list item that already carries the status: no detail call needed. (Boxed: a poll
    /// answer of 100,000 candidates has none.)
    known: Option<Box<Detail>>,
}

/// Identifies a refresh token without revealing it: the first 16 hex digits of its SHA-256.
pub(crate) fn fingerprint(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl CamInvoice {
    /// Resolves the account's secrets and builds its client.
    pub fn new(
        account: &str,
        s: &CamInvoiceSettings,
        settings: &HttpSettings,
        http: Http,
        metrics: Arc<AccountMetrics>,
    ) -> Result<CamInvoice, String> {
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
            metrics,
        })
    }

    /// Member `idx`, as currently known.
    fn member(&self, idx: usize) -> Arc<MemberCreds> {
        Arc::clone(&self.members.read().unwrap_or_else(|p| p.into_inner())[idx])
    }

    fn member_count(&self) -> usize {
        self.members.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes in the refresh tokens stored in the `connections` tree: a member only the store
    /// knows joins the polling; a stored token replaces the config's when it is newer (see
    /// [`Connection::supersedes`]). Logs changes only.
    fn sync_members(&self, store: &Store) -> Result<(), StoreError> {
        for (endpoint, bytes) in store.connections(&self.account)? {
            let conn: Connection = match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(member = %endpoint, "unreadable connection record in the state store ({e}); ignored");
                    continue;
                }
            };
            if !conn.supersedes(self.configured.get(&endpoint).map(String::as_str)) {
                continue;
            }
            let creds = Arc::new(MemberCreds {
                endpoint_id: endpoint.clone(),
                fingerprint: fingerprint(&conn.refresh_token),
                refresh_token: Secret::new(conn.refresh_token),
            });
            let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
            match members.iter().position(|m| m.endpoint_id == endpoint) {
                Some(i) if members[i].fingerprint == creds.fingerprint => {}
                Some(i) => {
                    members[i] = creds;
                    drop(members); // never hold the members and rotated locks together
                    self.rotated.lock().unwrap().remove(&i);
                    tracing::info!(member = %endpoint, source = %conn.source, stored_at = %crate::time::format_ms(conn.stored_at),
                        "using the refresh token from the state store (newer than the config's)");
                }
                None => {
                    members.push(creds);
                    tracing::info!(member = %endpoint, source = %conn.source,
                        "member connected with `pollhook connect`: polling it");
                }
            }
        }
        Ok(())
    }

    /// Stores a refresh token CamInvoice rotated during this cycle, so that it outlives the
    /// run (and takes precedence over the config's until the config changes).
    async fn keep_rotated(&self, idx: usize, store: &Store) -> Result<(), StoreError> {
        let Some(new) = self.rotated.lock().unwrap().get(&idx).cloned() else {
            return Ok(());
        };
        let m = self.member(idx);
        let business_info = store
            .connections(&self.account)?
            .into_iter()
            .find(|(e, _)| *e == m.endpoint_id)
            .and_then(|(_, v)| serde_json::from_slice::<Connection>(&v).ok())
            .map(|c| c.business_info)
            .unwrap_or_default();
        let conn = Connection {
            refresh_token: new.expose().to_string(),
            source: "rotated".into(),
            stored_at: now_ms(),
            config_fingerprint: self.configured.get(&m.endpoint_id).cloned(),
            business_info,
        };
        let value = serde_json::to_vec(&conn).expect("a connection record serializes");
        store
            .put_connection(Unit::new(&self.account, &m.endpoint_id), value)
            .await?;
        self.members.write().unwrap_or_else(|p| p.into_inner())[idx] = Arc::new(MemberCreds {
            endpoint_id: m.endpoint_id.clone(),
            fingerprint: fingerprint(new.expose()),
            refresh_token: new,
        });
        self.rotated.lock().unwrap().remove(&idx);
        tracing::info!(member = %m.endpoint_id, "stored the refresh token CamInvoice rotated; it takes precedence over the config's");
        Ok(())
    }

    fn load_record(&self, store: &Store, idx: usize) -> Result<Option<MemberRecord>, StoreError> {
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

    /// Adds the member's record to `batch`.
    fn put_record(&self, batch: &mut Batch, idx: usize, rec: &MemberRecord) {
        let m = self.member(idx);
        batch.put_cursor(
            Unit::new(&self.account, &m.endpoint_id),
            serde_json::to_vec(rec).expect("member record serializes"),
        );
    }

    /// A usable access token, refreshed ahead of expiry or when `force`d (after a 401).
    async fn token(
        &self,
        idx: usize,
        force: bool,
        count: &RequestCount,
    ) -> Result<Secret, ApiError> {
        if !force {
            if let Some(t) = self.tokens.lock().unwrap().get(&idx) {
                if !t.needs_refresh(now_ms()) {
                    return Ok(t.token.clone());
                }
            }
        }
        let rotated = self.rotated.lock().unwrap().get(&idx).cloned();
        let refresh_token = rotated.unwrap_or_else(|| self.member(idx).refresh_token.clone());
        let fresh = self.api.refresh(&refresh_token, count).await?;
        if let Some(new) = fresh.refresh_token {
            if new != refresh_token {
                tracing::warn!(member = %self.member(idx).endpoint_id,
                    "CamInvoice returned a new refresh token; using it (stored in the state store at the end of the cycle)");
                self.rotated.lock().unwrap().insert(idx, new);
            }
        }
        let token = fresh.access.token.clone();
        self.tokens.lock().unwrap().insert(idx, fresh.access);
        Ok(token)
    }

    /// A Bearer GET with one refresh-and-retry on 401.
    async fn get(
        &self,
        idx: usize,
        label: &'static str,
        path: &str,
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let token = self.token(idx, false, count).await?;
        let r = self.api.get(label, path, &token, count).await?;
        if r.status != 401 {
            return Ok(r);
        }
        tracing::debug!(member = %self.member(idx).endpoint_id, endpoint = label, "401: refreshing the token and retrying once");
        let token = self.token(idx, true, count).await?;
        let r = self.api.get(label, path, &token, count).await?;
        if r.status == 401 {
            return Err(ApiError::Status {
                label,
                status: 401,
                message: "Unauthorized even with a freshly refreshed token".into(),
            });
        }
        Ok(r)
    }

    /// A Bearer GET of a collection (poll, list), where a 404 can only mean a wrong base_url.
    async fn get_collection(
        &self,
        idx: usize,
        label: &'static str,
        path: &str,
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let r = self.get(idx, label, path, count).await?;
        if r.status == 404 {
            return Err(ApiError::Status {
                label,
                status: 404,
                message: "not found; check base_url".into(),
            });
        }
        Ok(r)
    }

    /// Get Document Detail. An id that cannot be a URL path segment (`.`, `..`) is never
    /// requested: `/api/v1/document/..` would reach another path.
    async fn detail(
        &self,
        idx: usize,
        document_id: &str,
        count: &RequestCount,
    ) -> Result<Fetched, ApiError> {
        if !addressable(document_id) {
            return Ok(Fetched::Gone(
                "its id cannot be sent as a URL path segment (Get Document Detail)",
            ));
        }
        let path = format!("/api/v1/document/{}", segment(document_id));
        let r = self.get(idx, DETAIL, &path, count).await?;
        if r.status == 404 {
            return Ok(Fetched::Gone("Get Document Detail answers 404"));
        }
        model::detail(&r.body)
            .map(Fetched::Found)
            .map_err(|why| ApiError::Malformed { label: DETAIL, why })
    }

    /// Details for `ids` (distinct), fetched concurrently (the account's in-flight limit
    /// applies).
    async fn fetch_details(
        self: &Arc<Self>,
        idx: usize,
        ids: Vec<String>,
        count: &Arc<RequestCount>,
    ) -> HashMap<String, Result<Fetched, ApiError>> {
        let tasks: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let me = Arc::clone(self);
                let count = Arc::clone(count);
                let task = tokio::spawn({
                    let id = id.clone();
                    async move { me.detail(idx, &id, &count).await }
                });
                (id, task)
            })
            .collect();
        let mut out = HashMap::with_capacity(tasks.len());
        for (id, t) in tasks {
            let r = t.await.unwrap_or_else(|e| {
                Err(ApiError::Malformed {
                    label: DETAIL,
                    why: model::Malformed(format!("the fetch task failed: {e}")),
                })
            });
            out.insert(id, r);
        }
        out
    }

    /// Diffs `items` in order and commits them chunk by chunk. With `advance_cursor` (the
    /// poll), the member's poll cursor follows the items fully processed, never past
    /// `now + MAX_FUTURE_SKEW`, and a detail over its cap stops the pass as
    /// [`Stop::Oversized`]; without (a list walk), such a document is skipped.
    ///
    /// A document listed more than once is diffed once, from its newest entry.
    async fn apply(
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
        if let Some(line) = answer.unusable.summary("unusable poll item(s) skipped") {
            tracing::warn!(member = %self.member(idx).endpoint_id, "{line}; the next list walk looks again");
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

    /// Walks the list endpoint, both sides, every page, through the same diff. A page over
    /// its cap is asked again as two pages of half the size.
    async fn resync(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
    ) -> Result<Counts, Stop> {
        let mut total = Counts::default();
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
                } = model::list_page(&r.body)
                    .map_err(|why| ApiError::Malformed { label: LIST, why })?;
                drop(r);
                self.metrics.anomaly("unusable_item", p.unusable.count);
                if let Some(line) = p.unusable.summary("unusable list entries skipped") {
                    tracing::warn!(member = %self.member(idx).endpoint_id, "page {page}: {line}");
                }
                let candidates: Vec<Candidate> = p
                    .items
                    .into_iter()
                    .map(|d| Candidate {
                        document_id: d.document_id.clone(),
                        updated_at: d.updated_at,
                        side: Some(side),
                        known: Some(Box::new(d)),
                    })
                    .collect();
                total += self.apply(idx, ctx, rec, &candidates, false).await?;
                let more = match total_pages {
                    Some(t) => page < t,
                    None => p.listed >= size,
                };
                if !more || p.listed == 0 {
                    break;
                }
                page += 1;
            }
        }
        Ok(total)
    }

    /// One member's whole cycle: `Ok(None)` when it is revoked and was skipped, `Err` with a
    /// line for the operator when it failed.
    async fn sync_member(
        self: Arc<Self>,
        idx: usize,
        ctx: CycleContext,
    ) -> Result<Option<Counts>, String> {
        let m = self.member(idx);
        let existing = self
            .load_record(&ctx.store, idx)
            .map_err(|e| e.to_string())?;
        let mut rec = existing.unwrap_or_else(|| MemberRecord {
            start: match ctx.start {
                Start::Now => now_ms(),
                Start::At(t) => t,
            },
            ..MemberRecord::default()
        });
        if let Some(fp) = &rec.revoked_token {
            if *fp == m.fingerprint {
                tracing::debug!(member = %m.endpoint_id, "revoked; not polled until reconnected (a new refresh_token)");
                return Ok(None);
            }
            tracing::info!(member = %m.endpoint_id, "refresh_token changed since the revocation: polling again");
            rec.revoked_token = None;
            rec.revoked_before_start = false;
            rec.refusals = 0;
        }

        if let Some(c) = rec.cursor.filter(|c| *c > trust_limit(now_ms())) {
            tracing::warn!(member = %m.endpoint_id,
                "the stored poll cursor {} is ahead of this host's clock by more than {} (a timestamp from the future stored by an older pollhook, or this clock went back): polling from `start` again; documents already seen cost nothing",
                format_ms(c), crate::time::format_duration(MAX_FUTURE_SKEW));
            rec.cursor = None;
        }

        let mut counts = Counts::default();
        let run: Result<(), Stop> = async {
            let needs_baseline = rec.baseline_at.is_none();
            let mut walked = None;
            if needs_baseline || ctx.resync {
                let began = now_ms();
                counts += self.resync(idx, &ctx, &mut rec).await?;
                rec.last_resync = Some(now_ms());
                if needs_baseline {
                    rec.baseline_at = Some(began);
                }
                walked = Some(began);
            }
            match self.poll(idx, &ctx, &mut rec).await {
                Err(Stop::Oversized(why)) => {
                    self.metrics.anomaly("oversized_answer", 1);
                    tracing::warn!(member = %m.endpoint_id,
                        "{why}: walking the list instead; the poll resumes from the walk's start");
                    let began = match walked {
                        Some(began) => began,
                        None => {
                            let began = now_ms();
                            counts += self.resync(idx, &ctx, &mut rec).await?;
                            rec.last_resync = Some(now_ms());
                            began
                        }
                    };
                    // The walk saw every document as of its start; a provider clock up to the
                    // skew allowance behind this one is covered too (the poll adds the overlap).
                    let resume = began.saturating_sub(MAX_FUTURE_SKEW.as_millis() as i64);
                    rec.cursor = Some(rec.cursor.map_or(resume, |c| c.max(resume)));
                }
                polled => counts += polled?,
            }
            Ok(())
        }
        .await;

        // Every cached access token was issued by an accepted refresh of this member.
        if let Some(t) = self.tokens.lock().unwrap().get(&idx) {
            rec.accepted_at = Some(rec.accepted_at.unwrap_or(t.issued_at).max(t.issued_at));
        }
        let mut batch = Batch::default();
        let result = match run {
            Ok(()) => {
                rec.last_success = Some(now_ms());
                rec.last_error = None;
                rec.refusals = 0;
                Ok(counts)
            }
            Err(Stop::Api(ApiError::RefreshRefused { status, message })) => {
                rec.refusals += 1;
                let why =
                    format!("CamInvoice refused the refresh token (HTTP {status}: {message})");
                rec.last_error = Some(why.clone().into());
                // Connected at or after `start`: CamInvoice accepted its token since then.
                let seen_connected = [rec.accepted_at, rec.last_success]
                    .into_iter()
                    .flatten()
                    .any(|t| t >= rec.start);
                if rec.refusals >= self.settings.revoke_after_refusals && !seen_connected {
                    rec.revoked_token = Some(m.fingerprint.clone());
                    rec.revoked_before_start = true;
                    tracing::warn!(member = %m.endpoint_id, refusals = rec.refusals,
                        "{why}, and it never accepted this member's refresh token since `start`: the member was disconnected before, so its ENTITY.REVOKED webhook went out before pollhook's history begins and none is emitted; polling stops until it is reconnected");
                    Ok(counts)
                } else if rec.refusals >= self.settings.revoke_after_refusals {
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
                    rec.revoked_token = Some(m.fingerprint.clone());
                    tracing::warn!(member = %m.endpoint_id, refusals = rec.refusals,
                        "{why}: the member is revoked; ENTITY.REVOKED emitted, polling stops until it is reconnected");
                    Ok(counts)
                } else {
                    Err(format!(
                        "{why}; {} more refusal(s) and it counts as revoked",
                        self.settings.revoke_after_refusals - rec.refusals
                    ))
                }
            }
            Err(e) => {
                // A cycle cut short by the daemon's shutdown did not fail: keep the last error.
                if !matches!(&e, Stop::Api(ApiError::Http(h)) if h.is_shutdown()) {
                    rec.last_error = Some(e.to_string().into());
                }
                Err(e.to_string())
            }
        };
        self.put_record(&mut batch, idx, &rec);
        match ctx.store.commit(batch).await {
            Ok(c) => counts.events += c.events as u64,
            Err(e) => return Err(e.to_string()),
        }
        if let Err(e) = self.keep_rotated(idx, &ctx.store).await {
            tracing::warn!(member = %m.endpoint_id, "cannot store the rotated refresh token ({e}); it is used for this run only");
        }
        result.map(|_| Some(counts))
    }
}

impl CamInvoice {
    /// Records `why` as the member's last error (for `status`), keeping everything else.
    async fn note_failure(&self, idx: usize, store: &Store, why: &str) {
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
    !matches!(
        status,
        "VALID"
            | "DELIVERED"
            | "ACKNOWLEDGED"
            | "IN_PROCESS"
            | "UNDER_QUERY"
            | "CONDITIONALLY_ACCEPTED"
            | "ACCEPTED"
            | "REJECTED"
            | "PAID"
            | "SENT"
            | "PENDING"
    )
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
                report.failures.push(
                    format!("cannot read the connected members from the state store: {e}").into(),
                );
            }
            let owned: Vec<usize> = (0..self.member_count())
                .filter(|&idx| ctx.shard.owns(&self.account, &self.member(idx).endpoint_id))
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
                    Ok(Err(why)) => {
                        report.units += 1;
                        report
                            .failures
                            .push(format!("member {endpoint}: {why}").into());
                    }
                    Err(e) => {
                        // A bug, never a provider's answer: still, the member's status says so.
                        let why = format!("the sync task failed (a bug; please report it): {e}");
                        self.note_failure(idx, &ctx.store, &why).await;
                        report
                            .failures
                            .push(format!("member {endpoint}: {why}").into());
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

    fn status(&self, store: &Store, shard: Shard) -> Result<Vec<UnitStatus>, StoreError> {
        self.sync_members(store)?;
        let members = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for (idx, m) in members.iter().enumerate() {
            if !shard.owns(&self.account, &m.endpoint_id) {
                continue;
            }
            let rec = self.load_record(store, idx)?;
            let documents = store.count_state(Unit::new(&self.account, &m.endpoint_id))?;
            let state = match &rec {
                None => "never polled".to_string(),
                Some(r)
                    if r.revoked_token.as_deref() == Some(m.fingerprint.as_str())
                        && r.revoked_before_start =>
                {
                    "revoked before `start` (CamInvoice refused its refresh token from the first try; no ENTITY.REVOKED emitted: that webhook went out before pollhook's history begins). Reconnect: `pollhook connect`, or a new refresh_token in the config".to_string()
                }
                Some(r) if r.revoked_token.as_deref() == Some(m.fingerprint.as_str()) => {
                    "revoked (reconnect: `pollhook connect`, or a new refresh_token in the config)"
                        .to_string()
                }
                Some(r) if r.revoked_token.is_some() => {
                    "reconnected, waiting for the next cycle".to_string()
                }
                Some(r) if r.refusals > 0 => format!("refresh refused {} time(s)", r.refusals),
                Some(r) if r.last_error.is_some() => "failing".to_string(),
                Some(_) => "ok".to_string(),
            };
            out.push(UnitStatus {
                unit: m.endpoint_id.clone(),
                state,
                last_success: rec.as_ref().and_then(|r| r.last_success),
                cursor: rec.as_ref().and_then(|r| r.cursor),
                documents,
                last_error: rec.and_then(|r| r.last_error),
            });
        }
        Ok(out)
    }
}
