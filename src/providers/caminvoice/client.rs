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
        match self.http.send(label, make).await {
            Ok(r) => {
                count.add(label, r.attempts);
                Ok(r)
            }
            Err(e) => {
                count.add(label, e.attempts());
                Err(e.into())
            }
        }
    }

    /// `POST /api/v1/auth/token` with Basic auth.
    pub async fn refresh(
        &self,
        refresh_token: &Secret,
        count: &RequestCount,
    ) -> Result<Refreshed, ApiError> {
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
            200..=299 => parse_refresh(&r.body, now_ms()).map_err(|why| ApiError::Malformed {
                label: TOKEN,
                why: Malformed(why),
            }),
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

/// A short, printable reason from an error body (never the whole body).
fn message_of(body: &[u8]) -> String {
    match error_body(body) {
        ErrorBody::Client(m) | ErrorBody::Message(m) => m.chars().take(200).collect(),
    }
}
