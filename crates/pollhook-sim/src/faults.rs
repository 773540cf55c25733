//! Request counting and fault injection for the simulated API.
//!
//! This module owns the one layer wrapped around every CamInvoice route: it counts the request
//! under its route key (`"GET /api/v1/document/{id}"`) and, when a queued [`Fault`] matches,
//! answers with the fault instead of (or around) the real handler. It never decides what the
//! real answer is; the admin routes are never counted nor faulted.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::hostile::{self, Junk};
use super::Simulator;

/// A fault for the next `count` requests whose route key contains `path_contains`.
///
/// As JSON (for `POST /_sim/fault`):
/// `{"path_contains": "poll", "count": 2, "kind": {"type": "ServerError", "status": 503}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Substring of the route key, e.g. `"poll"`, `"POST /api/v1/auth/token"`; empty = any.
    #[serde(default)]
    pub path_contains: String,
    /// How many matching requests get the fault before it is used up.
    pub count: u32,
    /// What those requests get.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault for the next `count` requests whose route key contains `path_contains`.
    pub fn new(path_contains: impl Into<String>, count: u32, kind: FaultKind) -> Self {
        Fault {
            path_contains: path_contains.into(),
            count,
            kind,
        }
    }

    /// Whether this fault applies to a request with route key `key`.
    pub(crate) fn matches(&self, key: &str) -> bool {
        self.count > 0 && key.contains(&self.path_contains)
    }
}

/// What a faulted request gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum FaultKind {
    /// `status` (a 5xx; anything else outside 500-599 becomes 500) with a JSON body.
    ServerError {
        /// HTTP status to answer with.
        status: u16,
    },
    /// 429 with `Retry-After: retry_after_secs` and `{"message":"Too many requests"}`.
    RateLimited {
        /// Seconds for the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Sleeps `millis`, then answers normally (a slow upstream; client timeouts fire).
    Stall {
        /// How long to sleep before handling the request.
        millis: u64,
    },
    /// 200 with a body that is not JSON; the request is not handled.
    MalformedJson,
    /// The real answer (the request IS handled) with its body cut in half.
    Truncated,
    /// 502 with an HTML proxy error page.
    HtmlPage,
    /// 401 `{"message":"Unauthorized"}`, whatever the credentials.
    Unauthorized,
    /// 200 with `[0,0,0,…]` of about `bytes` bytes, streamed without a Content-Length; the
    /// request is not handled.
    ZeroArray {
        /// Size of the body.
        bytes: usize,
    },
    /// 200 with `[[[…]]]` of about `bytes` bytes, streamed without a Content-Length; the
    /// request is not handled.
    NestedArrays {
        /// Size of the body.
        bytes: usize,
    },
    /// 200 with a JSON array of `count` well-formed poll items of documents that do not exist
    /// (`phantom-000000000`, …; 90 bytes each), streamed without a Content-Length; the request
    /// is not handled.
    Phantoms {
        /// Items in the array.
        count: usize,
    },
    /// The real answer (the request IS handled) with about `bytes` bytes of nested arrays
    /// added: an extra member `"padding"` of an object, or an extra first element of an array.
    Padded {
        /// Size of the padding.
        bytes: usize,
    },
    /// `status` with a `{"message"}` that quotes the request's credentials back, as careless
    /// servers do: the `Authorization` header, its Basic credentials decoded, the request body
    /// (a refresh token), and the base64 of each token found in it. The request is not handled.
    EchoCredentials {
        /// HTTP status to answer with (e.g. 401 on the token endpoint, 400 on a GET).
        status: u16,
    },
}

/// Which injected faults fired, so a test can prove that the fault it injected happened (and
/// was not, say, used up by another request or never reached).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// Faults applied, by `"<kind> <route key>"`, e.g. `"Stall GET /api/v1/document/{id}"`.
    pub fired: BTreeMap<String, u64>,
    /// Stalled requests whose client hung up before the stall was over (a client timeout).
    pub stalls_abandoned: u64,
    /// Stalled requests that were answered after the whole stall (the client waited).
    pub stalls_answered: u64,
}

impl FaultCounts {
    /// Counts one application of `kind` to a request with route key `key`.
    pub(crate) fn fired(&mut self, kind: &FaultKind, key: &str) {
        *self
            .fired
            .entry(format!("{} {key}", kind_name(kind)))
            .or_default() += 1;
    }

    /// How many times a fault of `kind` (its name, e.g. `"Stall"`) fired on routes whose key
    /// contains `route`.
    pub fn count(&self, kind: &str, route: &str) -> u64 {
        self.fired
            .iter()
            .filter(|(k, _)| {
                k.split_once(' ')
                    .is_some_and(|(name, key)| name == kind && key.contains(route))
            })
            .map(|(_, n)| n)
            .sum()
    }
}

/// `Stall { millis: 3000 }` -> `"Stall"`.
fn kind_name(kind: &FaultKind) -> String {
    let debug = format!("{kind:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Counts a stall as abandoned unless it was answered: the handler future is dropped when the
/// client closes the connection mid-stall.
struct StallWatch {
    sim: Simulator,
    answered: bool,
}

impl Drop for StallWatch {
    fn drop(&mut self) {
        let answered = self.answered;
        self.sim.with(|w| {
            if answered {
                w.fault_counts.stalls_answered += 1;
            } else {
                w.fault_counts.stalls_abandoned += 1;
            }
        });
    }
}

/// The state of the layer around one route.
#[derive(Clone)]
pub(crate) struct Guard {
    pub sim: Simulator,
    /// The route template, e.g. `/api/v1/document/{id}`.
    pub template: &'static str,
}

/// Counts the request and applies the first queued fault that matches it.
pub(crate) async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let key = format!("{} {}", req.method(), g.template);
    let (fault, latency) = g.sim.with(|w| {
        *w.requests.entry(key.clone()).or_default() += 1;
        w.first_request.get_or_insert_with(std::time::Instant::now);
        (w.take_fault(&key), w.cfg.latency)
    });
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let Some(kind) = fault else {
        return next.run(req).await;
    };
    if let FaultKind::EchoCredentials { status } = kind {
        return echo_credentials(req, status).await;
    }
    tracing::debug!(%key, ?kind, "simulator fault");
    match kind {
        FaultKind::ServerError { status } => {
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(StatusCode::is_server_error)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = json!({"message": "Internal server error"});
            (status, axum::Json(body)).into_response()
        }
        FaultKind::RateLimited { retry_after_secs } => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"message": "Too many requests"})),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            resp
        }
        FaultKind::Stall { millis } => {
            let mut watch = StallWatch {
                sim: g.sim.clone(),
                answered: false,
            };
            tokio::time::sleep(Duration::from_millis(millis)).await;
            let resp = next.run(req).await;
            watch.answered = true;
            resp
        }
        FaultKind::MalformedJson => raw(
            StatusCode::OK,
            "application/json",
            "{\"data\": [{\"document_id\": \"",
        ),
        FaultKind::Truncated => truncate(next.run(req).await).await,
        FaultKind::HtmlPage => raw(StatusCode::BAD_GATEWAY, "text/html", HTML_502),
        FaultKind::ZeroArray { bytes } => json_body(hostile::junk_body(Junk::Zeros, bytes)),
        FaultKind::NestedArrays { bytes } => json_body(hostile::junk_body(Junk::Nested, bytes)),
        FaultKind::Phantoms { count } => json_body(hostile::junk_body(Junk::Phantoms, count)),
        FaultKind::Padded { bytes } => {
            let (mut parts, body) = next.run(req).await.into_parts();
            let real = to_bytes(body, usize::MAX).await.unwrap_or_default();
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(hostile::padded(&real, bytes)))
        }
        FaultKind::EchoCredentials { .. } => unreachable!("answered above"),
        FaultKind::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Unauthorized"})),
        )
            .into_response(),
    }
}

/// A careless server's error: every credential of the request quoted back, raw and encoded.
async fn echo_credentials(req: Request, status: u16) -> Response {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = to_bytes(req.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let body = String::from_utf8_lossy(&body).into_owned();
    let mut parts = vec![format!("Authorization: {auth}"), format!("request: {body}")];
    if let Some(basic) = auth.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic)
            .unwrap_or_default();
        parts.push(format!(
            "client credentials {}",
            String::from_utf8_lossy(&decoded)
        ));
    }
    if let Some(bearer) = auth.strip_prefix("Bearer ") {
        parts.push(format!("token (base64) {}", b64(bearer)));
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
        for key in ["refresh_token", "auth_token"] {
            if let Some(t) = v.get(key).and_then(|t| t.as_str()) {
                parts.push(format!("{key} (base64) {}", b64(t)));
            }
        }
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    let message = format!("rejected; you sent {}", parts.join("; "));
    (status, axum::Json(json!({ "message": message }))).into_response()
}

/// The real response with the first half of its body.
async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(half))
}

/// 200 with `body` as JSON.
fn json_body(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn raw(status: StatusCode, content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_json_shape_is_internally_tagged() {
        let f: Fault = serde_json::from_str(
            r#"{"path_contains":"poll","count":2,"kind":{"type":"RateLimited","retry_after_secs":7}}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            Fault::new(
                "poll",
                2,
                FaultKind::RateLimited {
                    retry_after_secs: 7
                }
            )
        );
        let unit: Fault =
            serde_json::from_str(r#"{"count":1,"kind":{"type":"HtmlPage"}}"#).unwrap();
        assert_eq!(unit, Fault::new("", 1, FaultKind::HtmlPage));
    }

    #[test]
    fn fired_faults_are_counted_by_kind_and_route() {
        let mut c = FaultCounts::default();
        c.fired(&FaultKind::Stall { millis: 5 }, "GET /api/v1/document/{id}");
        c.fired(
            &FaultKind::ServerError { status: 503 },
            "GET /api/v1/document/poll",
        );
        c.fired(
            &FaultKind::ServerError { status: 502 },
            "GET /v2.0/invoices/sale",
        );
        c.fired(&FaultKind::MalformedJson, "GET /v2.0/invoices/sale");
        assert_eq!(c.count("Stall", "{id}"), 1);
        assert_eq!(c.count("Stall", "poll"), 0);
        assert_eq!(c.count("ServerError", ""), 2);
        assert_eq!(c.count("ServerError", "poll"), 1);
        assert_eq!(c.count("MalformedJson", "/v2.0/"), 1);
        assert_eq!(c.fired["Stall GET /api/v1/document/{id}"], 1);
    }

    #[test]
    fn empty_filter_matches_any_route_but_a_used_up_fault_matches_none() {
        let f = Fault::new("", 1, FaultKind::MalformedJson);
        assert!(f.matches("GET /api/v1/document/{id}"));
        let used = Fault::new("", 0, FaultKind::MalformedJson);
        assert!(!used.matches("GET /api/v1/document/{id}"));
        assert!(!Fault::new("token", 1, FaultKind::HtmlPage).matches("GET /api/v1/document/poll"));
    }
}
