//! The shared HTTP client: timeouts, retries with exponential backoff and full jitter on 5xx,
//! 429, timeouts and connection errors, `Retry-After` honoured up to a cap, bounded body size.
//!
//! Providers build requests; this module decides when to try again, and paces every attempt
//! through the account's [`Gcra`] limiter when it has one. It never logs headers or
//! bodies (they carry tokens), only the endpoint label, status and the wait.

use crate::config::HttpSettings;
use crate::metrics::AccountMetrics;
use crate::pacing::Gcra;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The longest single backoff step, whatever the retry count.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bodies larger than this are refused: no provider answer is legitimately this big.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// An answer that is not a retryable failure: any 1xx-4xx except 429.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Requests actually sent, retries included.
    pub attempts: u32,
}

/// A request that kept failing.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{label}: no usable answer after {attempts} attempt(s): {last}")]
    GaveUp {
        label: String,
        attempts: u32,
        last: String,
    },
}

impl HttpError {
    /// Requests sent before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            HttpError::GaveUp { attempts, .. } => *attempts,
        }
    }
}

/// Why one attempt failed, and how long the server asked us to wait.
enum Failure {
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    Transport(String),
}

/// Requests sent, by endpoint label (retries included).
#[derive(Debug, Default)]
pub struct RequestCount(std::sync::Mutex<BTreeMap<&'static str, u64>>);

impl RequestCount {
    pub fn add(&self, label: &'static str, n: u32) {
        *self.0.lock().unwrap().entry(label).or_default() += n as u64;
    }
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap().clone()
    }
    pub fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

/// An HTTP client with one retry policy.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    settings: HttpSettings,
    /// Every attempt, retries included, waits for a slot here when set.
    pacer: Option<Arc<Gcra>>,
    /// Told of every completed attempt (metrics, and the watchdog's progress).
    observer: Option<Arc<AccountMetrics>>,
}

impl Http {
    pub fn new(settings: &HttpSettings) -> Http {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("pollhook/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds (rustls, no custom roots)");
        Http {
            client,
            settings: settings.clone(),
            pacer: None,
            observer: None,
        }
    }

    /// Reports every completed attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<AccountMetrics>) -> Http {
        self.observer = Some(observer);
        self
    }

    /// Paces every attempt through `pacer`.
    pub fn with_pacer(mut self, pacer: Arc<Gcra>) -> Http {
        self.pacer = Some(pacer);
        self
    }

    /// The configured per-request behaviour.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// Sends the request `make` builds, retrying per the policy. `label` names the endpoint in
    /// logs and errors (`"GET /api/v1/document/poll"`).
    /// [`send`](Http::send), adding the requests sent (retries included) to `count`.
    pub async fn send_counted(
        &self,
        label: &'static str,
        count: &RequestCount,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, HttpError> {
        let result = self.send(label, make).await;
        count.add(
            label,
            result
                .as_ref()
                .map_or_else(HttpError::attempts, |r| r.attempts),
        );
        result
    }

    pub async fn send(
        &self,
        label: &str,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, HttpError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = self.attempt(&make).await;
            if let Some(o) = &self.observer {
                o.request(
                    label,
                    match &outcome {
                        Ok((status, _)) | Err(Failure::Status { status, .. }) => Some(*status),
                        Err(Failure::Transport(_)) => None,
                    },
                );
            }
            let failure = match outcome {
                Ok((status, body)) => {
                    return Ok(Reply {
                        status,
                        body,
                        attempts,
                    })
                }
                Err(f) => f,
            };
            let (what, wait) = match &failure {
                Failure::Status {
                    status,
                    retry_after,
                } => {
                    let wait = match retry_after {
                        Some(ra) if *ra > self.settings.retry_after_cap => {
                            tracing::warn!(endpoint = label, asked = ?ra, cap = ?self.settings.retry_after_cap,
                                "Retry-After longer than retry_after_cap; waiting the cap instead");
                            self.settings.retry_after_cap
                        }
                        Some(ra) => *ra,
                        None => self.backoff(attempts),
                    };
                    (format!("HTTP {status}"), wait)
                }
                Failure::Transport(e) => (e.clone(), self.backoff(attempts)),
            };
            if attempts > self.settings.max_retries {
                return Err(HttpError::GaveUp {
                    label: label.to_string(),
                    attempts,
                    last: what,
                });
            }
            tracing::warn!(endpoint = label, attempt = attempts, error = %what, wait = ?wait, "request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        make: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), Failure> {
        if let Some(p) = &self.pacer {
            p.acquire().await;
        }
        let mut resp = make(&self.client)
            .send()
            .await
            .map_err(|e| Failure::Transport(describe(&e)))?;
        let status = resp.status().as_u16();
        if status == 429 || status >= 500 {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(Failure::Status {
                status,
                retry_after,
            });
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY {
                        return Err(Failure::Transport(format!(
                            "response body over {MAX_BODY} bytes"
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Transport(format!(
                        "reading the body: {}",
                        describe(&e)
                    )))
                }
            }
        }
        Ok((status, body))
    }

    /// Full jitter: a random wait up to `base * 2^(attempt-1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .settings
            .retry_base
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(MAX_BACKOFF);
        let ms = ceiling.as_millis() as u64;
        Duration::from_millis(fastrand::u64(ms / 2..=ms.max(1)))
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!(
            "cannot connect: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string())
        )
    } else {
        e.to_string()
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let http = Http::new(&HttpSettings {
            retry_base: Duration::from_millis(100),
            ..HttpSettings::default()
        });
        for _ in 0..50 {
            let first = http.backoff(1);
            assert!(
                first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
                "{first:?}"
            );
            let third = http.backoff(3);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            assert!(http.backoff(30) <= MAX_BACKOFF);
        }
    }
}
