//! The shared HTTP client: timeouts, retries with exponential backoff and equal jitter
//! ([`crate::backoff`]) on 5xx, 429, timeouts and connection errors, `Retry-After` honoured up
//! to a cap, a body cap per request (an answer over it is refused unread, never retried). Also
//! the one builder of reqwest clients ([`client`]).
//!
//! Providers build requests; this module decides when to try again, and paces every attempt
//! through the account's [`Gcra`] limiter when it has one. It never logs headers or
//! bodies (they carry tokens), only the endpoint label, status and the wait. A transport
//! failure names the host:port and the innermost cause ("connection refused to
//! 127.0.0.1:8080"), never the path or query.
//!
//! Once the daemon's [`Stop`] is set, nothing more is sent: an attempt in flight is abandoned,
//! a backoff or pacing wait ends, and the request fails with [`HttpError::Stopped`] (its caller
//! keeps what it committed; the next start does the rest).

use crate::backoff::{Backoff, MAX_STEP};
use crate::config::HttpSettings;
use crate::pacing::Gcra;
use crate::redact::Redacted;
use crate::shutdown::Stop;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
        last: Redacted,
    },
    /// The answer was larger than the endpoint's cap. Not retried: the same question gets the
    /// same answer; the caller decides how to go on without it.
    #[error("{label}: the answer is larger than {limit} bytes{}; not read further", size.map(|s| format!(" ({s} bytes announced)")).unwrap_or_default())]
    TooLarge {
        label: String,
        limit: usize,
        /// The Content-Length, when the server announced one.
        size: Option<u64>,
        attempts: u32,
    },
    #[error("{label}: not sent: pollhook is shutting down")]
    Stopped { label: String, attempts: u32 },
}

impl HttpError {
    /// Requests sent before giving up.
    pub fn attempts(&self) -> u32 {
        match self {
            HttpError::GaveUp { attempts, .. }
            | HttpError::TooLarge { attempts, .. }
            | HttpError::Stopped { attempts, .. } => *attempts,
        }
    }

    /// Whether the answer was refused for its size.
    pub fn is_too_large(&self) -> bool {
        matches!(self, HttpError::TooLarge { .. })
    }

    /// Whether the request was cut short by the daemon's shutdown (not a provider failure).
    pub fn is_shutdown(&self) -> bool {
        matches!(self, HttpError::Stopped { .. })
    }
}

/// Why one attempt failed, and how long the server asked us to wait.
enum Failure {
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    Transport(String),
    /// Over the cap (the announced size, if any).
    TooLarge(Option<u64>),
}

/// Requests sent, by endpoint label (retries included).
#[derive(Debug, Default)]
pub struct RequestCount(std::sync::Mutex<BTreeMap<&'static str, u64>>);

impl RequestCount {
    pub fn add(&self, label: &'static str, n: u32) {
        *crate::locks::lock(&self.0).entry(label).or_default() += n as u64;
    }
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        crate::locks::lock(&self.0).clone()
    }
    pub fn total(&self) -> u64 {
        crate::locks::lock(&self.0).values().sum()
    }
}

/// Told of every completed attempt: an account's metrics implement it (request counters, and
/// the progress the watchdog's rule reads). Defined here so that `http` knows no metrics type.
pub trait Observer: Send + Sync {
    /// One attempt of `endpoint` completed: `status` is `None` when no answer came (timeout,
    /// refused connection, a body over its cap).
    fn request(&self, endpoint: &str, status: Option<u16>);
}

/// An HTTP client with one retry policy.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    settings: HttpSettings,
    /// Every attempt, retries included, waits for a slot here when set.
    pacer: Option<Arc<Gcra>>,
    /// Told of every completed attempt (metrics, and the watchdog's progress).
    observer: Option<Arc<dyn Observer>>,
    /// Once set, nothing more is sent.
    stop: Stop,
}

impl Http {
    pub fn new(settings: &HttpSettings) -> Http {
        let client = client(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .build()
            .expect("the HTTP client builds (rustls, no custom roots)");
        Http {
            client,
            settings: settings.clone(),
            pacer: None,
            observer: None,
            stop: Stop::never(),
        }
    }

    /// Sends nothing more once `stop` is set (the daemon's shutdown).
    pub fn with_stop(mut self, stop: Stop) -> Http {
        self.stop = stop;
        self
    }

    /// Reports every completed attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Http {
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

    /// [`send`](Http::send), adding the requests sent (retries included) to `count`.
    pub async fn send_counted(
        &self,
        label: &'static str,
        limit: usize,
        count: &RequestCount,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, HttpError> {
        let result = self.send(label, limit, make).await;
        count.add(
            label,
            result
                .as_ref()
                .map_or_else(HttpError::attempts, |r| r.attempts),
        );
        result
    }

    /// Sends the request `make` builds, retrying per the policy. `label` names the endpoint in
    /// logs and errors (`"GET /api/v1/document/poll"`). An answer larger than `limit` bytes is
    /// [`HttpError::TooLarge`] at once (refused on its Content-Length before any of it is read,
    /// or as soon as the bytes read pass the limit), never retried.
    pub async fn send(
        &self,
        label: &str,
        limit: usize,
        make: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Reply, HttpError> {
        let mut attempts = 0;
        let stopped = |attempts| HttpError::Stopped {
            label: label.to_string(),
            attempts,
        };
        loop {
            if self.stop.is_set() {
                return Err(stopped(attempts));
            }
            attempts += 1;
            let outcome = tokio::select! {
                o = self.attempt(&make, limit) => o,
                _ = self.stop.wait() => return Err(stopped(attempts)),
            };
            if let Some(o) = &self.observer {
                o.request(
                    label,
                    match &outcome {
                        Ok((status, _)) | Err(Failure::Status { status, .. }) => Some(*status),
                        Err(Failure::Transport(_) | Failure::TooLarge(_)) => None,
                    },
                );
            }
            let (what, wait) = match outcome {
                Ok((status, body)) => {
                    return Ok(Reply {
                        status,
                        body,
                        attempts,
                    })
                }
                Err(Failure::TooLarge(size)) => {
                    return Err(HttpError::TooLarge {
                        label: label.to_string(),
                        limit,
                        size,
                        attempts,
                    })
                }
                Err(Failure::Status {
                    status,
                    retry_after,
                }) => {
                    let wait = match retry_after {
                        Some(ra) if ra > self.settings.retry_after_cap => {
                            tracing::warn!(endpoint = label, asked = ?ra, cap = ?self.settings.retry_after_cap,
                                "Retry-After longer than retry_after_cap; waiting the cap instead");
                            self.settings.retry_after_cap
                        }
                        Some(ra) => ra,
                        None => self.backoff().delay(attempts),
                    };
                    (format!("HTTP {status}"), wait)
                }
                Err(Failure::Transport(e)) => (e, self.backoff().delay(attempts)),
            };
            if attempts > self.settings.max_retries {
                return Err(HttpError::GaveUp {
                    label: label.to_string(),
                    attempts,
                    last: what.into(),
                });
            }
            let what = Redacted::from(what);
            tracing::warn!(endpoint = label, attempt = attempts, error = %what, wait = ?wait, "request failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.wait() => return Err(stopped(attempts)),
            }
        }
    }

    async fn attempt(
        &self,
        make: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<(u16, Vec<u8>), Failure> {
        if let Some(p) = &self.pacer {
            p.acquire().await;
        }
        let mut resp = make(&self.client)
            .send()
            .await
            .map_err(|e| Failure::Transport(describe(&e, self.settings.timeout)))?;
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
        let announced = resp.content_length();
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(Failure::TooLarge(announced));
        }
        // Grown at most to the limit: a body never holds more than `limit` bytes of capacity.
        let mut body = Vec::with_capacity(announced.map_or(0, |n| n as usize));
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let len = body.len() + chunk.len();
                    if len > limit {
                        return Err(Failure::TooLarge(announced));
                    }
                    if len > body.capacity() {
                        body.reserve_exact(len.max(2 * body.capacity()).min(limit) - body.len());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Transport(format!(
                        "reading the body: {}",
                        describe(&e, self.settings.timeout)
                    )))
                }
            }
        }
        Ok((status, body))
    }

    /// Between attempts: from `retry_base`, doubling, at most [`MAX_STEP`].
    fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.retry_base, MAX_STEP)
    }
}

/// A reqwest client as pollhook makes every one: its user agent, the whole-request `timeout`,
/// and no redirects (a redirect is an answer to report, never to follow: a request's
/// credentials must not travel to another address).
pub fn client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("pollhook/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// One line for a transport failure: what happened, to which host:port, and the innermost
/// cause the OS or TLS gave — e.g. "connection refused to 127.0.0.1:8080", "cannot resolve
/// api.example: failed to lookup address information: ...", "timed out after 30s waiting for
/// api.example:443". Never the path or query (they carry document ids, not needed here).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    let target = e
        .url()
        .map(|u| {
            let host = u.host_str().unwrap_or("?");
            match u.port_or_known_default() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            }
        })
        .unwrap_or_else(|| "the server".to_string());
    // The chain below reqwest's own message ("error sending request for url (...)"), minus the
    // generic links ("client error (Connect)").
    let mut causes: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        let text = s.to_string();
        if !text.starts_with("client error (") && !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    let innermost = causes.last().cloned().unwrap_or_else(|| e.to_string());
    let dns = causes.iter().any(|c| c.starts_with("dns error"));
    if e.is_timeout() || io_kind == Some(std::io::ErrorKind::TimedOut) {
        let phase = if e.is_connect() {
            "connecting to"
        } else {
            "waiting for"
        };
        format!(
            "timed out after {} {phase} {target}",
            crate::time::format_duration(timeout)
        )
    } else if io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
        format!("connection refused to {target}")
    } else if dns {
        let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        format!("cannot resolve {host}: {innermost}")
    } else if e.is_connect() {
        format!("cannot connect to {target}: {innermost}")
    } else {
        format!("{target}: {innermost}")
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (when.timestamp() - crate::time::now_ms().div_euclid(1000)).max(0);
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

    /// A one-trick HTTP server on 127.0.0.1:0: every connection gets `head`, then, when
    /// `endless`, 64 KiB chunks until the client hangs up. Returns its URL and a count of the
    /// connections it accepted.
    async fn server(
        head: &'static str,
        endless: bool,
    ) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = format!("10000\r\n{}\r\n", "0".repeat(0x10000));
                    while endless && conn.write_all(chunk.as_bytes()).await.is_ok() {}
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused_once_and_not_retried() {
        let http = Http::new(&HttpSettings {
            retry_base: Duration::from_millis(1),
            ..HttpSettings::default()
        });
        // Announced: refused on the Content-Length, before the body.
        let (url, accepted) =
            server("HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n", false).await;
        let e = http
            .send("GET /x", 1 << 20, |c| c.get(&url))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                HttpError::TooLarge {
                    size: Some(20_000_000),
                    attempts: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("larger than 1048576 bytes (20000000 bytes announced)"),
            "{e}"
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Not announced (chunked, endless): cut as soon as the bytes read pass the cap.
        let (url, accepted) = server(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            true,
        )
        .await;
        let e = http
            .send("GET /x", 1 << 20, |c| c.get(&url))
            .await
            .unwrap_err();
        assert!(e.is_too_large() && e.attempts() == 1, "{e:?}");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Under the cap: read whole.
        let (url, _) = server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", false).await;
        let r = http.send("GET /x", 2, |c| c.get(&url)).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"[]".as_slice()));
    }

    /// A port on 127.0.0.1 where nothing listens.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_host_port_and_the_cause() {
        let port = closed_port();
        let http = Http::new(&HttpSettings {
            max_retries: 0,
            ..HttpSettings::default()
        });
        let url = format!("http://127.0.0.1:{port}/api/v1/document/poll?last_synced_at=x");
        let e = http
            .send("GET poll", 1 << 20, |c| c.get(&url))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.ends_with(&format!("connection refused to 127.0.0.1:{port}")),
            "{text}"
        );
        assert!(!text.contains("last_synced_at"), "{text}");
    }

    /// A server that counts connections and never answers; `close` hangs up at once instead.
    async fn silent_server(close: bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if !close {
                    held.push(sock);
                }
            }
        });
        (url, seen)
    }

    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn once_stopped_an_attempt_in_flight_and_a_backoff_end_and_nothing_is_sent() {
        use std::sync::atomic::Ordering::SeqCst;
        // In flight: the server accepted and never answers; the timeout is far away.
        let (url, seen) = silent_server(false).await;
        let (trigger, stop) = crate::shutdown::channel();
        let http = Http::new(&HttpSettings {
            timeout: Duration::from_secs(300),
            ..HttpSettings::default()
        })
        .with_stop(stop);
        let call = tokio::spawn({
            let http = http.clone();
            async move { http.send("GET x", 1 << 20, |c| c.get(&url)).await }
        });
        until("the request is in flight", || seen.load(SeqCst) == 1).await;
        let began = std::time::Instant::now();
        trigger.fire();
        let e = call.await.unwrap().unwrap_err();
        assert!(
            e.is_shutdown() && e.to_string().contains("shutting down"),
            "{e}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        // Nothing new once stopped.
        let e = http
            .send("GET x", 1 << 20, |c| c.get("http://127.0.0.1:9/"))
            .await
            .unwrap_err();
        assert_eq!(e.attempts(), 0, "{e}");

        // In a backoff: the first attempt failed, the retry is 30 s away.
        let (url, seen) = silent_server(true).await;
        let (trigger, stop) = crate::shutdown::channel();
        let http = Http::new(&HttpSettings {
            retry_base: Duration::from_secs(60),
            ..HttpSettings::default()
        })
        .with_stop(stop);
        let call = tokio::spawn(async move { http.send("GET x", 1 << 20, |c| c.get(&url)).await });
        until("the first attempt failed", || seen.load(SeqCst) == 1).await;
        let began = std::time::Instant::now();
        trigger.fire();
        let e = call.await.unwrap().unwrap_err();
        assert!(e.is_shutdown(), "{e}");
        assert_eq!(seen.load(SeqCst), 1, "no retry after the stop");
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
    }
}
