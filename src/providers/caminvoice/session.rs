//! A member's session with CamInvoice: its access-token cache (refreshed ahead of expiry, or
//! after a 401), the Bearer GETs with one refresh-and-retry on 401, and Get Document Detail
//! (one, or many at once within the account's in-flight limit).

use super::client::{ApiError, DETAIL};
use super::model::{self, Detail, MemberRecord, StoredAccess};
use super::roster::fingerprint;
use super::token::AccessToken;
use super::CamInvoice;
use crate::config::Secret;
use crate::http::Reply;
use crate::providers::wire::{addressable, segment};
use crate::providers::RequestCount;
use crate::time::now_ms;
use std::collections::HashMap;
use std::sync::Arc;

/// What Get Document Detail gave for one document.
pub(super) enum Fetched {
    Found(Detail),
    /// No detail to be had (404, an id that is not a path segment, an answer over its cap in
    /// a list walk): the document is skipped for this cycle; the next walk looks again.
    Gone(&'static str),
}

impl CamInvoice {
    /// A usable access token, refreshed ahead of expiry or when `force`d (after a 401).
    pub(super) async fn token(
        &self,
        idx: usize,
        force: bool,
        count: &RequestCount,
    ) -> Result<Secret, ApiError> {
        if force {
            // Rejected: never kept (nor stored) again, even if the refresh fails.
            crate::locks::lock(&self.tokens).remove(&idx);
        } else if let Some(t) = crate::locks::lock(&self.tokens).get(&idx) {
            if !t.needs_refresh(now_ms()) {
                return Ok(t.token.clone());
            }
        }
        let rotated = crate::locks::lock(&self.rotated).get(&idx).cloned();
        let refresh_token = rotated.unwrap_or_else(|| self.member(idx).refresh_token.clone());
        let fresh = self.api.refresh(&refresh_token, count).await?;
        if let Some(new) = fresh.refresh_token {
            if new != refresh_token {
                tracing::warn!(member = %self.member(idx).endpoint_id,
                    "CamInvoice returned a new refresh token; using it (stored in the state store at the end of the cycle)");
                crate::locks::lock(&self.rotated).insert(idx, new);
            }
        }
        let token = fresh.access.token.clone();
        crate::locks::lock(&self.tokens).insert(idx, fresh.access);
        Ok(token)
    }

    /// The access token in use for member `idx`, as its record keeps it (with the refresh
    /// token it goes with: a rotated one once stored, else the member's).
    pub(super) fn access_to_keep(&self, idx: usize) -> Option<StoredAccess> {
        let t = crate::locks::lock(&self.tokens).get(&idx).cloned()?;
        let rotated = crate::locks::lock(&self.rotated).get(&idx).cloned();
        let refresh = match rotated {
            Some(r) => fingerprint(r.expose()),
            None => self.member(idx).fingerprint.clone(),
        };
        Some(StoredAccess {
            token: t.token.expose().to_string(),
            issued_at: t.issued_at,
            expires_at: t.expires_at,
            refresh,
        })
    }

    /// Takes the access token the member's record kept (a previous run's), when none is
    /// cached and it goes with the member's current refresh token; [`CamInvoice::token`]
    /// refreshes it when it is due, and a 401 replaces it.
    pub(super) fn adopt_stored_access(&self, idx: usize, rec: &MemberRecord) {
        let Some(a) = &rec.access else {
            return;
        };
        if a.refresh != self.member(idx).fingerprint || a.token.is_empty() {
            return;
        }
        crate::locks::lock(&self.tokens)
            .entry(idx)
            .or_insert_with(|| AccessToken {
                token: Secret::new(a.token.clone()),
                issued_at: a.issued_at,
                expires_at: a.expires_at,
            });
    }

    /// A Bearer GET with one refresh-and-retry on 401.
    pub(super) async fn get(
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
    pub(super) async fn get_collection(
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
    pub(super) async fn detail(
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
    pub(super) async fn fetch_details(
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
}
