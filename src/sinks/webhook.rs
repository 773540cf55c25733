//! The webhook sink: POSTs each event's payload to a local receiver, signed as Standard
//! Webhooks prescribe, so consumer code written for the provider's webhooks keeps working.
//!
//! Headers: `webhook-id` (the event id, stable across retries and replays),
//! `webhook-timestamp` (unix seconds of this attempt), `webhook-signature` (`v1,<base64
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` per secret, space-separated; the key is the
//! base64 after `whsec_`), `content-type: application/json`. The answer decides: 2xx
//! delivered; 410 gone (a dead letter now); 429 and 5xx retried after Retry-After (capped) or
//! on the schedule; 3xx and other 4xx failures retried on the schedule. Redirects are never
//! followed: a receiver that moved must be reconfigured, not guessed.
//!
//! Secret values live only in the HMAC keys; they never reach a log line or an error.

use super::{BuildError, Endpoint, Job, Outcome};
use crate::config::{whsec_key, WebhookSettings};
use base64::Engine as _;
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// Bytes of a refusing receiver's body quoted in the error.
const BODY_QUOTED: usize = 300;

/// A webhook sink.
pub struct Webhook {
    url: String,
    keys: Vec<Vec<u8>>,
    client: reqwest::Client,
    retry_after_cap: Duration,
}

impl Webhook {
    /// Resolves and decodes the secrets and builds the client (no redirects, the timeout).
    pub fn new(name: &str, s: &WebhookSettings) -> Result<Webhook, BuildError> {
        let mut keys = Vec::new();
        for r in &s.secrets {
            let secret = r.resolve().map_err(|source| BuildError::Secret {
                sink: name.to_string(),
                source,
            })?;
            let key = whsec_key(secret.expose()).map_err(|why| BuildError::BadSecret {
                sink: name.to_string(),
                message: format!("{}: {why}", r.origin),
            })?;
            keys.push(key);
        }
        let client =
            crate::http::client(s.timeout)
                .build()
                .map_err(|source| BuildError::Client {
                    sink: name.to_string(),
                    source,
                })?;
        Ok(Webhook {
            url: s.url.clone(),
            keys,
            client,
            retry_after_cap: s.retry_after_cap,
        })
    }

    async fn attempt(&self, job: &Job) -> Outcome {
        let body = job.envelope.payload.get().as_bytes().to_vec();
        let id = &job.envelope.id;
        let timestamp = crate::time::now_ms().div_euclid(1000);
        let resp = self
            .client
            .post(&self.url)
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature(&self.keys, id, timestamp, &body),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                let why = if e.is_timeout() {
                    "no answer within the sink's `timeout`".to_string()
                } else if e.is_connect() {
                    format!(
                        "cannot connect ({}); is the receiver running?",
                        std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    )
                } else {
                    e.to_string()
                };
                return Outcome::Failed {
                    error: format!("POST {}: {why}", self.url),
                    retry_after: None,
                };
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        if status.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::http::parse_retry_after)
            .map(|ra| {
                if ra > self.retry_after_cap {
                    tracing::warn!(asked = ?ra, cap = ?self.retry_after_cap, "Retry-After longer than retry_after_cap; waiting the cap instead");
                }
                ra.min(self.retry_after_cap)
            });
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let quoted = quote(resp).await;
        match code {
            410 => Outcome::Gone {
                error: format!("the receiver answered 410 Gone{quoted}: it will never take this event, so it is not retried"),
            },
            429 | 500..=599 => Outcome::Failed {
                error: format!("the receiver answered {status}{quoted}"),
                retry_after,
            },
            300..=399 => Outcome::Failed {
                error: format!(
                    "the receiver answered {status} (redirect to {}); redirects are not followed: set `url` to the final address",
                    location.as_deref().unwrap_or("nowhere")
                ),
                retry_after: None,
            },
            _ => Outcome::Failed {
                error: format!("the receiver refused the event with {status}{quoted}"),
                retry_after: None,
            },
        }
    }
}

impl Endpoint for Webhook {
    fn deliver(&self, job: Job) -> BoxFuture<'_, Outcome> {
        Box::pin(async move { self.attempt(&job).await })
    }
}

/// `v1,<sig>` for each key, space-separated: the `webhook-signature` header.
pub fn signature(keys: &[Vec<u8>], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            format!("v1,{sig}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `: <the start of the body>` for error messages, or nothing.
async fn quote(resp: reqwest::Response) -> String {
    let mut resp = resp;
    let mut body = Vec::new();
    while body.len() < BODY_QUOTED {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    let text: String = String::from_utf8_lossy(&body)
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let text = crate::redact::clip(&text, BODY_QUOTED);
    if text.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", text.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_conformance_vector() {
        let key = whsec_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        assert_eq!(
            signature(
                &[key],
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553,
                br#"{"email":"test@example.com","username":"test_user"}"#
            ),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn one_signature_per_secret_space_separated() {
        let a = whsec_key("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let b = whsec_key("whsec_AAECAwQF").unwrap();
        let both = signature(&[a.clone(), b.clone()], "id", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            vec![
                signature(&[a], "id", 1, b"{}"),
                signature(&[b], "id", 1, b"{}")
            ]
        );
    }
}
