//! OnlinePajak HTTP calls: Bulk Fetch and Retrieve through the [`ApiMap`], the token sent as
//! `Bearer <token>` or bare (`auth_scheme`), every attempt paced by the account's GCRA limiter.
//!
//! Classifies failures: the gateway refusing the token (`Unauthorized`, `Invalid signature`)
//! is [`ApiError::Rejected`] — a configuration problem the operator must fix; 404 on Retrieve
//! is "gone"; anything else carries the envelope's own code and message.

use super::api::ApiMap;
use super::model::{error_text, page, retrieved, BulkPage, Retrieved};
use crate::config::Secret;
use crate::http::{Http, HttpError, Reply};
use crate::providers::wire::{segment, Malformed};
use crate::providers::RequestCount;
use crate::time::{format_ms, Millis};

pub const BULK_FETCH: &str = "GET invoices (bulk fetch)";
pub const RETRIEVE: &str = "GET invoice (retrieve)";

/// The largest answer read from each endpoint, in bytes (RELIABILITY.md, "Memory per
/// answer"): a Bulk Fetch page of 1,000 invoices is about 0.7 MB, one invoice under 1 KB. A
/// larger page is asked again at half the size; a larger invoice is skipped.
pub fn body_cap(label: &str) -> usize {
    match label {
        BULK_FETCH => 8 << 20,
        _ => 1 << 20,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("OnlinePajak rejected the token ({0}); check `token` and `auth_scheme` (\"bearer\" sends `Bearer <token>`, \"raw\" the bare token)")]
    Rejected(String),
    #[error("{label} answered HTTP {status}: {message}")]
    Status {
        label: &'static str,
        status: u16,
        message: String,
    },
    #[error("{label}: {why}")]
    Malformed { label: &'static str, why: Malformed },
    #[error("{0}")]
    Http(#[from] HttpError),
}

impl ApiError {
    /// Whether the answer was refused for its size.
    pub fn is_too_large(&self) -> bool {
        matches!(self, ApiError::Http(e) if e.is_too_large())
    }
}

pub struct Api {
    http: Http,
    base: String,
    /// The whole `Authorization` header value.
    authorization: Secret,
    pub map: ApiMap,
}

impl Api {
    pub fn new(http: Http, base_url: &str, token: &Secret, raw: bool, map: ApiMap) -> Api {
        let authorization = if raw {
            token.clone()
        } else {
            Secret::new(format!("Bearer {}", token.expose()))
        };
        Api {
            http,
            base: base_url.to_string(),
            authorization,
            map,
        }
    }

    async fn get(
        &self,
        label: &'static str,
        path: &str,
        query: &[(&str, String)],
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{}", self.base, path);
        let r = self
            .http
            .send_counted(label, body_cap(label), count, |c| {
                c.get(&url)
                    .query(query)
                    .header(reqwest::header::AUTHORIZATION, self.authorization.expose())
            })
            .await?;
        match r.status {
            200..=299 | 404 => Ok(r),
            401 | 403 => Err(ApiError::Rejected(error_text(&r.body))),
            status => Err(ApiError::Status {
                label,
                status,
                message: error_text(&r.body),
            }),
        }
    }

    /// One Bulk Fetch page of invoices updated at or after `from`, oldest change first.
    pub async fn bulk_fetch(
        &self,
        from: Millis,
        page_no: u32,
        size: u32,
        count: &RequestCount,
    ) -> Result<BulkPage, ApiError> {
        let r = self.bulk_fetch_answer(from, page_no, size, count).await?;
        page(&r.body, &self.map).map_err(|why| ApiError::Malformed {
            label: BULK_FETCH,
            why,
        })
    }

    /// [`Api::bulk_fetch`]'s answer, unread (for `pollhook probe`, which reads it with the
    /// same parser and also takes its census).
    pub async fn bulk_fetch_answer(
        &self,
        from: Millis,
        page_no: u32,
        size: u32,
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let m = &self.map;
        let query = [
            (m.page_param.as_str(), page_no.to_string()),
            (m.size_param.as_str(), size.to_string()),
            (m.updated_from_param.as_str(), format_ms(from)),
            (m.sort_param.as_str(), m.sort_value.clone()),
        ];
        let r = self.get(BULK_FETCH, &m.list_path, &query, count).await?;
        if r.status == 404 {
            return Err(ApiError::Status {
                label: BULK_FETCH,
                status: 404,
                message: format!(
                    "not found; check base_url and api.list_path ({})",
                    m.list_path
                ),
            });
        }
        Ok(r)
    }

    /// Retrieve one invoice; `None` when OnlinePajak answers 404.
    pub async fn retrieve(
        &self,
        id: &str,
        count: &RequestCount,
    ) -> Result<Option<Retrieved>, ApiError> {
        let Some(r) = self.retrieve_answer(id, count).await? else {
            return Ok(None);
        };
        retrieved(&r.body, &self.map)
            .map(Some)
            .map_err(|why| ApiError::Malformed {
                label: RETRIEVE,
                why,
            })
    }

    /// [`Api::retrieve`]'s answer, unread; `None` for a 404.
    pub async fn retrieve_answer(
        &self,
        id: &str,
        count: &RequestCount,
    ) -> Result<Option<Reply>, ApiError> {
        let path = self.map.retrieve_path.replace("{id}", &segment(id));
        let r = self.get(RETRIEVE, &path, &[], count).await?;
        Ok((r.status != 404).then_some(r))
    }
}
