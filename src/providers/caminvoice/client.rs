//! CamInvoice HTTP calls: Basic-auth refresh, Bearer GETs with one refresh-and-retry on 401,
//! and a per-account limit on requests in flight.
//!
//! Classifies failures the way the sync needs them: the Basic credentials refused (a config
//! error), a refresh token refused (a step towards ENTITY.REVOKED), not found, malformed, or
//! the network. Never puts a token or a token answer into an error.

use super::model::{error_body, ErrorBody, Malformed};
use super::token::{parse_refresh, Refreshed};
use crate::config::Secret;
use crate::http::{Http, HttpError, Reply};
use crate::providers::RequestCount;
use crate::time::now_ms;
use base64::Engine;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub const TOKEN: &str = "POST /api/v1/auth/token";
pub const POLL: &str = "GET /api/v1/document/poll";
pub const DETAIL: &str = "GET /api/v1/document/{id}";
pub const LIST: &str = "GET /api/v1/document";
pub const CONNECT: &str = "POST /api/v1/auth/authorize/connect";

/// The largest answer read from each endpoint, in bytes (RELIABILITY.md, "Memory per
/// answer"): a poll of 100,000 documented items is about 11 MB, a list page of 1,000 entries
/// about 1.3 MB, a detail about 1 KB, a token answer a few KB. A larger answer is refused
/// unread ([`HttpError::TooLarge`]): a poll then gives way to the list walk, a detail to the
/// list entry.
pub fn body_cap(label: &str) -> usize {
    match label {
        POLL => 16 << 20,
        LIST => 8 << 20,
        DETAIL => 1 << 20,
        _ => 256 << 10,
    }
}

/// What the connect exchange returns (the access token is not kept: the first cycle refreshes).
pub struct Connected {
    pub refresh_token: Secret,
    pub endpoint_id: String,
    /// `business_info` as CamInvoice sent it.
    pub business_info: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("CamInvoice refused the client credentials ({0}); check client_id and client_secret of this account")]
    ClientRejected(String),
    #[error("CamInvoice refused the refresh token (HTTP {status}: {message})")]
    RefreshRefused { status: u16, message: String },
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

/// The HTTP side of one CamInvoice account.
pub struct Api {
    http: Http,
    base: String,
    basic: Secret,
    in_flight: Arc<Semaphore>,
}

impl Api {
    pub fn new(http: Http, base_url: &str, client_id: &str, client_secret: &Secret) -> Api {
        let creds = format!("{client_id}:{}", client_secret.expose());
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(creds)
        );
        let permits = http.settings().concurrency;
        Api {
            http,
            base: base_url.to_string(),
            basic: Secret::new(basic),
            in_flight: Arc::new(Semaphore::new(permits)),
        }
    }

    async fn send(
        &self,
        label: &'static str,
        count: &RequestCount,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, ApiError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("semaphore never closed");
        Ok(self
            .http
            .send_counted(label, body_cap(label), count, make)
            .await?)
    }

    /// `POST /api/v1/auth/token` with Basic auth.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        count: &RequestCount,
    ) -> Result<Refreshed, ApiError> {
        let r = self.refresh_answer(refresh_token, count).await?;
        parse_refresh(&r.body, now_ms()).map_err(|why| ApiError::Malformed {
            label: TOKEN,
            why: Malformed(why),
        })
    }

    /// [`Api::refresh`]'s successful answer, unread (for `pollhook probe`, which reads it with
    /// the same parser and reports its shape). It holds tokens: never print it.
    pub async fn refresh_answer(
        &self,
        refresh_token: &Secret,
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}/api/v1/auth/token", self.base);
        let body = serde_json::json!({ "refresh_token": refresh_token.expose() });
        let r = self
            .send(TOKEN, count, |c| {
                c.post(&url)
                    .header(reqwest::header::AUTHORIZATION, self.basic.expose())
                    .json(&body)
            })
            .await?;
        match r.status {
            200..=299 => Ok(r),
            400 | 401 | 403 => match error_body(&r.body) {
                ErrorBody::Client(m) => Err(ApiError::ClientRejected(m)),
                ErrorBody::Message(message) => Err(ApiError::RefreshRefused {
                    status: r.status,
                    message,
                }),
            },
            status => Err(ApiError::Status {
                label: TOKEN,
                status,
                message: message_of(&r.body),
            }),
        }
    }

    /// `POST /api/v1/auth/authorize/connect` with Basic auth: exchanges the `authToken` the
    /// connect page redirected with for the member's tokens and `business_info`.
    pub async fn authorize_connect(
        &self,
        auth_token: &Secret,
        count: &RequestCount,
    ) -> Result<Connected, ApiError> {
        let url = format!("{}/api/v1/auth/authorize/connect", self.base);
        let body = serde_json::json!({ "auth_token": auth_token.expose() });
        let r = self
            .send(CONNECT, count, |c| {
                c.post(&url)
                    .header(reqwest::header::AUTHORIZATION, self.basic.expose())
                    .json(&body)
            })
            .await?;
        let malformed = |why: &str| ApiError::Malformed {
            label: CONNECT,
            why: Malformed(why.to_string()),
        };
        match r.status {
            200..=299 => {
                let v: serde_json::Value = serde_json::from_slice(&r.body)
                    .map_err(|_| malformed("the answer is not JSON"))?;
                let v = v.get("data").filter(|d| d.is_object()).unwrap_or(&v);
                let refresh_token = v
                    .get("refresh_token")
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| malformed("no refresh_token in the answer"))?;
                let business_info = v.get("business_info").cloned().unwrap_or_default();
                let endpoint_id = business_info
                    .get("endpoint_id")
                    .and_then(|e| e.as_str())
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| malformed("no business_info.endpoint_id in the answer"))?;
                Ok(Connected {
                    refresh_token: Secret::new(refresh_token),
                    endpoint_id: endpoint_id.to_string(),
                    business_info,
                })
            }
            400 | 401 | 403 => match error_body(&r.body) {
                ErrorBody::Client(m) => Err(ApiError::ClientRejected(m)),
                ErrorBody::Message(message) => Err(ApiError::Status {
                    label: CONNECT,
                    status: r.status,
                    message: format!("{message} (authTokens are single-use and expire after about 24 h: open the connect URL again)"),
                }),
            },
            status => Err(ApiError::Status {
                label: CONNECT,
                status,
                message: message_of(&r.body),
            }),
        }
    }

    /// A Bearer GET of `path` (with query). Returns 2xx, 401 and 404 answers to the caller.
    pub async fn get(
        &self,
        label: &'static str,
        path: &str,
        token: &Secret,
        count: &RequestCount,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{}", self.base, path);
        let r = self
            .send(label, count, |c| c.get(&url).bearer_auth(token.expose()))
            .await?;
        match r.status {
            200..=299 | 401 | 404 => Ok(r),
            status => Err(ApiError::Status {
                label,
                status,
                message: message_of(&r.body),
            }),
        }
    }
}

/// A short, printable reason from an error body (never the whole body; masked before it is
/// shortened).
fn message_of(body: &[u8]) -> String {
    match error_body(body) {
        ErrorBody::Client(m) | ErrorBody::Message(m) => crate::redact::clip(&m, 200),
    }
}
