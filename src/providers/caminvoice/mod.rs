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

pub mod client;
pub mod diff;
pub mod model;
pub mod token;

use self::client::{Api, ApiError, DETAIL, LIST, POLL};
use self::diff::{diff, Observation};
use self::model::{Connection, Detail, DocState, MemberRecord, Side};
use self::token::AccessToken;
use super::wire::segment;
use super::{
    unit_prefix, BoxFuture, CycleContext, CycleReport, Provider, RequestCount, UnitStatus,
};
use crate::config::{CamInvoiceSettings, HttpSettings, Secret, Start};
use crate::event::NewEvent;
use crate::http::{Http, Reply};
use crate::store::{Batch, Store, StoreError};
use crate::time::{format_naive_seconds, now_ms, Millis};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tracing::Instrument;

/// Documents diffed per commit: large enough to amortize the flush, small enough that a crash
/// or a failure repeats little work.
const CHUNK: usize = 256;

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
}

/// Why a member's cycle stopped early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// A list item that already carries the status: no detail call needed.
    known: Option<Detail>,
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
            .put_connection(&self.account, &m.endpoint_id, value)
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

    fn record_key(&self, idx: usize) -> Vec<u8> {
        let mut k = unit_prefix(&self.account, &self.member(idx).endpoint_id);
        k.pop();
        k
    }

    fn doc_key(&self, idx: usize, document_id: &str) -> Vec<u8> {
        let mut k = unit_prefix(&self.account, &self.member(idx).endpoint_id);
        k.extend_from_slice(document_id.as_bytes());
        k
    }

    fn load_record(&self, store: &Store, idx: usize) -> Result<Option<MemberRecord>, StoreError> {
        Ok(match store.get_cursor(&self.record_key(idx))? {
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
        })
    }

    fn record_entry(&self, idx: usize, rec: &MemberRecord) -> (Vec<u8>, Vec<u8>) {
        (
            self.record_key(idx),
            serde_json::to_vec(rec).expect("member record serializes"),
        )
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

    /// Get Document Detail; `None` when CamInvoice answers 404.
    async fn detail(
        &self,
        idx: usize,
        document_id: &str,
        count: &RequestCount,
    ) -> Result<Option<Detail>, ApiError> {
        let path = format!("/api/v1/document/{}", segment(document_id));
        let r = self.get(idx, DETAIL, &path, count).await?;
        if r.status == 404 {
            return Ok(None);
        }
        model::detail(&r.body)
            .map(Some)
            .map_err(|why| ApiError::Malformed { label: DETAIL, why })
    }

    /// Details for `ids`, fetched concurrently (the account's in-flight limit applies).
    async fn fetch_details(
        self: &Arc<Self>,
        idx: usize,
        ids: Vec<String>,
        count: &Arc<RequestCount>,
    ) -> HashMap<String, Result<Option<Detail>, ApiError>> {
        let tasks: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let me = Arc::clone(self);
                let count = Arc::clone(count);
                tokio::spawn(async move {
                    let r = me.detail(idx, &id, &count).await;
                    (id, r)
                })
            })
            .collect();
        let mut out = HashMap::with_capacity(tasks.len());
        for t in tasks {
            let (id, r) = t.await.expect("a detail fetch task panicked");
            out.insert(id, r);
        }
        out
    }

    /// Diffs `items` in order and commits them chunk by chunk. With `advance_cursor`, the
    /// member's poll cursor follows the items fully processed.
    async fn apply(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
        items: &[Candidate],
        advance_cursor: bool,
    ) -> Result<Counts, Stop> {
        let member = self.member(idx);
        let endpoint = &member.endpoint_id;
        let mut total = Counts::default();
        for chunk in items.chunks(CHUNK) {
            let mut prevs = Vec::with_capacity(chunk.len());
            let mut need = Vec::new();
            for c in chunk {
                let prev = ctx
                    .store
                    .get_state(&self.doc_key(idx, &c.document_id))?
                    .and_then(|v| DocState::decode(&v));
                let changed = match (&prev, c.updated_at) {
                    (Some(p), Some(at)) => at > p.updated_at,
                    _ => true,
                };
                if changed && c.known.as_ref().and_then(|d| d.status.as_ref()).is_none() {
                    need.push(c.document_id.clone());
                }
                prevs.push((prev, changed));
            }
            let mut fetched = self.fetch_details(idx, need, &ctx.requests).await;

            let now = now_ms();
            let mut batch = Batch::default();
            let mut cursor = rec.cursor;
            let mut failure = None;
            for (c, (prev, changed)) in chunk.iter().zip(prevs) {
                if changed {
                    let detail = match c.known.clone().filter(|d| d.status.is_some()) {
                        Some(d) => Some(d),
                        None => match fetched
                            .remove(&c.document_id)
                            .expect("every needed detail was fetched")
                        {
                            Ok(d) => d,
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        },
                    };
                    match detail {
                        None => tracing::warn!(member = %endpoint, document = %c.document_id,
                            "listed by the poll but Get Document Detail answers 404; skipped"),
                        Some(d) => {
                            if advance_cursor {
                                total.changed += 1;
                            } else {
                                total.resynced += 1;
                            }
                            self.diff_one(idx, c, &d, prev.as_ref(), rec, now, &mut batch);
                        }
                    }
                }
                if let Some(at) = c.updated_at {
                    cursor = Some(cursor.map_or(at, |cur| cur.max(at)));
                }
            }
            if advance_cursor {
                rec.cursor = cursor;
            }
            batch.cursors.push(self.record_entry(idx, rec));
            let committed = ctx.store.commit(batch).await?;
            total.events += committed.events as u64;
            total.duplicates += committed.duplicates as u64;
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
        Ok(total)
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
                known: Some(d),
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
    ) {
        let member = self.member(idx);
        let endpoint = &member.endpoint_id;
        let Some(status) = d.status.as_deref() else {
            tracing::warn!(member = %endpoint, document = %c.document_id, "the document detail has no status; skipped");
            return;
        };
        let Some(side) = c.side.or_else(|| d.side_for(endpoint)) else {
            tracing::warn!(member = %endpoint, document = %c.document_id,
                "cannot tell whether this member sent or received the document (poll type missing, parties do not match); skipped");
            return;
        };
        let Some(updated_at) = d.updated_at.or(c.updated_at) else {
            tracing::warn!(member = %endpoint, document = %c.document_id, "the document has no updated_at; skipped");
            return;
        };
        let obs = Observation {
            side,
            status,
            created_at: d.created_at,
            updated_at,
        };
        let out = diff(prev, &obs, rec.start, rec.baseline_at.is_some());
        let Some(record) = out.record else { return };
        if status_is_unknown(status) {
            tracing::info!(member = %endpoint, document = %c.document_id, status, "unknown document status, carried through as given");
        }
        for emit in out.emits {
            batch.events.push(NewEvent {
                id: emit.id(&self.account, endpoint, &c.document_id, updated_at),
                provider: "caminvoice",
                account: self.account.clone(),
                event_type: emit.event_type().to_string(),
                occurred_at: updated_at,
                detected_at: now,
                subject: format!("{endpoint}/{}", c.document_id),
                payload: emit.payload(&c.document_id, endpoint),
            });
        }
        batch
            .state
            .push((self.doc_key(idx, &c.document_id), record.encode()));
    }

    /// Polls from the cursor minus the overlap window.
    async fn poll(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
    ) -> Result<Counts, Stop> {
        let overlap = self.settings.overlap.as_millis() as i64;
        let since = rec.cursor.unwrap_or(rec.start) - overlap;
        let path = format!(
            "/api/v1/document/poll?last_synced_at={}",
            format_naive_seconds(since)
        );
        let r = self.get_collection(idx, POLL, &path, &ctx.requests).await?;
        let (mut items, bad) =
            model::poll_items(&r.body).map_err(|why| ApiError::Malformed { label: POLL, why })?;
        drop(r);
        for b in bad {
            tracing::warn!(member = %self.member(idx).endpoint_id, "{b}; skipped (the next resync looks again)");
        }
        // Oldest first; a document listed twice keeps its newest entry.
        items.sort_by_key(|i| i.updated_at);
        let mut last: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            last.insert(&it.document_id, i);
        }
        let keep: Vec<bool> = items
            .iter()
            .enumerate()
            .map(|(i, it)| last[it.document_id.as_str()] == i)
            .collect();
        drop(last);
        let candidates: Vec<Candidate> = items
            .into_iter()
            .zip(keep)
            .filter(|(_, keep)| *keep)
            .map(|(it, _)| Candidate {
                document_id: it.document_id,
                updated_at: Some(it.updated_at),
                side: it.side,
                known: None,
            })
            .collect();
        self.apply(idx, ctx, rec, &candidates, true).await
    }

    /// Walks the list endpoint, both sides, every page, through the same diff.
    async fn resync(
        self: &Arc<Self>,
        idx: usize,
        ctx: &CycleContext,
        rec: &mut MemberRecord,
    ) -> Result<Counts, Stop> {
        let size = self.settings.page_size;
        let mut total = Counts::default();
        for (kind, side) in [
            (self.settings.list_send_type.as_str(), Side::Send),
            ("received", Side::Receive),
        ] {
            let mut page = 1u64;
            loop {
                let path = format!("/api/v1/document?type={kind}&page={page}&size={size}");
                let r = self.get_collection(idx, LIST, &path, &ctx.requests).await?;
                let p = model::list_page(&r.body)
                    .map_err(|why| ApiError::Malformed { label: LIST, why })?;
                for b in &p.bad {
                    tracing::warn!(member = %self.member(idx).endpoint_id, "{b}; skipped");
                }
                let n = p.items.len() as u64;
                let candidates: Vec<Candidate> = p
                    .items
                    .into_iter()
                    .map(|d| Candidate {
                        document_id: d.document_id.clone(),
                        updated_at: d.updated_at,
                        side: Some(side),
                        known: Some(d),
                    })
                    .collect();
                total += self.apply(idx, ctx, rec, &candidates, false).await?;
                let more = match p.total_pages {
                    Some(t) => page < t,
                    None => n == size as u64,
                };
                if !more || n == 0 {
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

        let mut counts = Counts::default();
        let run: Result<(), Stop> = async {
            let needs_baseline = rec.baseline_at.is_none();
            if needs_baseline || ctx.resync {
                let began = now_ms();
                counts += self.resync(idx, &ctx, &mut rec).await?;
                rec.last_resync = Some(now_ms());
                if needs_baseline {
                    rec.baseline_at = Some(began);
                }
            }
            counts += self.poll(idx, &ctx, &mut rec).await?;
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
        batch.cursors.push(self.record_entry(idx, &rec));
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
            let tasks: Vec<_> = (0..self.member_count())
                .map(|idx| {
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
            for (idx, t) in tasks.into_iter().enumerate() {
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
                    Err(e) => report
                        .failures
                        .push(format!("member {endpoint}: the sync task failed: {e}").into()),
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

    fn status(&self, store: &Store) -> Result<Vec<UnitStatus>, StoreError> {
        self.sync_members(store)?;
        let members = self
            .members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for (idx, m) in members.iter().enumerate() {
            let rec = self.load_record(store, idx)?;
            let documents = store.count_state(&unit_prefix(&self.account, &m.endpoint_id))?;
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
