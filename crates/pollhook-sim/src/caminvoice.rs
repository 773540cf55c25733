//! The CamInvoice API over HTTP: routes, authentication checks and response variants.
//!
//! This module owns the wire: which route answers what, with which status code, error body
//! and response shape (the token and poll variants of `caminvoice.md`). It reads and changes
//! the world only through [`World`](super::world::World) methods and never journals by itself
//! except through them. Every route is wrapped in the [`faults`](super::faults) layer.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::faults::{guard, Guard};
use super::world::{DocType, RefreshError, Side};
use super::{fmt_ts, PollTimezone, PollVariant, Simulator, TokenVariant};

/// Largest `size` the list endpoint honours (larger values are clamped).
const MAX_PAGE_SIZE: usize = 100;

/// The CamInvoice routes, each counted and fault-injectable, plus a JSON 404 fallback.
pub fn routes(sim: &Simulator) -> Router {
    let guarded = |template: &'static str, route: MethodRouter<Simulator>| {
        let g = Guard {
            sim: sim.clone(),
            template,
        };
        route.layer(from_fn_with_state(g, guard))
    };
    let r = |router: Router<Simulator>, template: &'static str, route| {
        router.route(template, guarded(template, route))
    };
    let mut router = Router::new();
    router = r(router, "/api/v1/auth/token", post(refresh));
    router = r(
        router,
        "/api/v1/auth/authorize/connect",
        post(authorize_connect),
    );
    router = r(router, "/api/v1/auth/revoke", post(revoke));
    router = r(router, "/connect", get(connect_page));
    router = r(router, "/api/v1/document/poll", get(poll));
    router = r(router, "/api/v1/document", get(list));
    router = r(router, "/api/v1/document/{id}", get(detail));
    router = r(router, "/api/v1/business/{endpoint_id}", get(business));
    router.fallback(not_found).with_state(sim.clone())
}

// ----- helpers ---------------------------------------------------------------------------

/// A refusal: the status and JSON error body a handler answers with instead.
pub struct Refusal(StatusCode, Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        reply(self.0, self.1)
    }
}

/// What every handler returns.
type Answer = Result<Response, Refusal>;

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn ok(body: Value) -> Answer {
    Ok(reply(StatusCode::OK, body))
}

/// `{"message": text}` with `status`.
fn refuse(status: StatusCode, text: &str) -> Refusal {
    Refusal(status, json!({"message": text}))
}

fn invalid_client() -> Refusal {
    Refusal(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_client", "error_description": "Invalid client credentials"}),
    )
}

fn unauthorized() -> Refusal {
    refuse(StatusCode::UNAUTHORIZED, "Unauthorized")
}

fn unprocessable(text: &str) -> Refusal {
    refuse(StatusCode::UNPROCESSABLE_ENTITY, text)
}

/// The credentials of an `Authorization: <scheme> <credentials>` header.
fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let (given, credentials) = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then_some(credentials.trim())
}

/// Checks `Authorization: Basic base64(client_id:client_secret)`.
fn check_basic(sim: &Simulator, headers: &HeaderMap) -> Result<(), Refusal> {
    let expected = sim.with(|w| format!("{}:{}", w.cfg.client_id, w.cfg.client_secret));
    let given = authorization(headers, "basic").and_then(|b64| STANDARD.decode(b64).ok());
    match given {
        Some(given) if given == expected.as_bytes() => Ok(()),
        _ => Err(invalid_client()),
    }
}

/// The member behind `Authorization: Bearer <token>`, or a 401.
fn check_bearer(sim: &Simulator, headers: &HeaderMap) -> Result<usize, Refusal> {
    let token = authorization(headers, "bearer").ok_or_else(unauthorized)?;
    sim.with(|w| w.bearer(token)).ok_or_else(unauthorized)
}

/// A non-empty string field of a JSON object body, or a 422 naming it.
fn body_field(body: &Bytes, field: &str) -> Result<String, Refusal> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field)?.as_str().map(str::to_string))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| unprocessable(&format!("{field} is required")))
}

/// `15m`, `2s`, `1d`: the duration strings some clients see.
pub fn duration_string(ttl: Duration) -> String {
    let secs = ttl.as_secs();
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Reads `last_synced_at`: `YYYY-MM-DDTHH:MM:SS`, optional fraction, optional `Z`/`±hh:mm`.
pub fn parse_last_synced(text: &str, tz: PollTimezone) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let (local, offset_secs) = if let Some(rest) = text.strip_suffix(['Z', 'z']) {
        (rest, 0)
    } else if bytes.len() > 6
        // A `+` sent unencoded in a query string arrives as a space.
        && matches!(bytes[bytes.len() - 6], b'+' | b'-' | b' ')
        && bytes[bytes.len() - 3] == b':'
    {
        let (rest, zone) = text.split_at(text.len() - 6);
        let hours: i64 = zone[1..3].parse().ok()?;
        let minutes: i64 = zone[4..6].parse().ok()?;
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        (rest, sign * (hours * 3_600 + minutes * 60))
    } else {
        (text, 0)
    };
    let naive = NaiveDateTime::parse_from_str(local, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(local, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()?;
    let offset_secs = match tz {
        PollTimezone::Utc => offset_secs,
        PollTimezone::Cambodia => 7 * 3_600,
    };
    Some(naive.and_utc() - TimeDelta::seconds(offset_secs))
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ----- auth ------------------------------------------------------------------------------

/// `POST /api/v1/auth/token` (Basic): refresh token -> access token, shaped by the variant.
async fn refresh(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Answer {
    check_basic(&sim, &headers)?;
    let refresh_token = body_field(&body, "refresh_token")?;
    let (result, variant, ttl) = sim.with(|w| {
        (
            w.refresh(&refresh_token),
            w.cfg.token_variant,
            w.cfg.token_ttl,
        )
    });
    let issued = result.map_err(|e| match e {
        RefreshError::Unknown => refuse(StatusCode::UNAUTHORIZED, "Invalid refresh token"),
        RefreshError::Revoked => refuse(StatusCode::FORBIDDEN, "Entity has been revoked"),
    })?;
    let expire_at = fmt_ts(issued.expires_at);
    ok(match variant {
        TokenVariant::Documented => json!({
            "token": issued.token,
            "token_type": "Bearer",
            "expire_in": ttl.as_secs(),
        }),
        TokenVariant::DataWrapped => json!({
            "data": {"access_token": issued.token, "expire_at": expire_at},
        }),
        TokenVariant::ThirdParty => json!({
            "access_token": issued.token,
            "expireIn": duration_string(ttl),
            "expire_at": expire_at,
            "expired_at": expire_at,
        }),
        TokenVariant::StringExpiry => json!({
            "access_token": issued.token,
            "expires_in": duration_string(ttl),
        }),
    })
}

/// `POST /api/v1/auth/authorize/connect` (Basic): the connect page's `authToken` -> tokens.
async fn authorize_connect(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    check_basic(&sim, &headers)?;
    let auth_token = body_field(&body, "auth_token")?;
    let answer = sim.with(|w| {
        let (issued, refresh_token, i) = w.exchange_auth_token(&auth_token)?;
        Some(json!({
            "access_token": issued.token,
            "refresh_token": refresh_token,
            "business_info": w.business_info_json(i),
        }))
    });
    ok(answer.ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "Invalid auth token"))?)
}

/// `POST /api/v1/auth/revoke` (Basic): disconnects a member (journals `ENTITY.REVOKED`).
async fn revoke(State(sim): State<Simulator>, headers: HeaderMap, body: Bytes) -> Answer {
    check_basic(&sim, &headers)?;
    let endpoint_id = body_field(&body, "endpoint_id")?;
    if !sim.revoke(&endpoint_id) {
        return Err(refuse(StatusCode::NOT_FOUND, "Entity not found"));
    }
    ok(json!({"message": "Entity revoked", "endpoint_id": endpoint_id}))
}

/// `GET /connect?client_id=..&redirect_url=..&state=..`: the business consents at once; 302
/// to `redirect_url?authToken=..&state=..`.
async fn connect_page(
    State(sim): State<Simulator>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    if !sim.with(|w| q.get("client_id") == Some(&w.cfg.client_id)) {
        return Err(invalid_client());
    }
    let redirect_url = q
        .get("redirect_url")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| unprocessable("redirect_url is required"))?;
    let auth_token = sim.with(|w| w.connect_next()).ok_or_else(|| {
        refuse(
            StatusCode::UNPROCESSABLE_ENTITY,
            "No business left to connect",
        )
    })?;
    let mut location = redirect_url.clone();
    location.push(if location.contains('?') { '&' } else { '?' });
    location.push_str("authToken=");
    location.push_str(&encode_query_value(&auth_token));
    if let Some(state) = q.get("state") {
        location.push_str("&state=");
        location.push_str(&encode_query_value(state));
    }
    let location =
        HeaderValue::from_str(&location).map_err(|_| unprocessable("redirect_url is invalid"))?;
    Ok((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

// ----- documents -------------------------------------------------------------------------

/// `GET /api/v1/document/poll?last_synced_at=..`: items updated at or after the instant.
async fn poll(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let member = check_bearer(&sim, &headers)?;
    let tz = sim.with(|w| w.cfg.poll_timezone);
    let since = match q.get("last_synced_at").filter(|s| !s.trim().is_empty()) {
        None => None,
        Some(text) => Some(
            parse_last_synced(text, tz).ok_or_else(|| unprocessable("Invalid last_synced_at"))?,
        ),
    };
    let (items, variant, drift) = sim.with(|w| {
        w.unread.read_each(member);
        let items = super::hostile::poll(w, member, w.poll(member, since));
        (items, w.cfg.poll_variant, w.drift)
    });
    let items: Vec<Value> = items
        .into_iter()
        .map(|i| super::drift::poll_item(drift, i))
        .collect();
    ok(super::drift::poll_body(
        drift,
        match variant {
            PollVariant::BareArray => Value::Array(items),
            PollVariant::Wrapped => json!({"documents": items}),
        },
    ))
}

/// `GET /api/v1/document/{id}`: the detail, if this member can see the document.
async fn detail(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let member = check_bearer(&sim, &headers)?;
    let found = sim.with(|w| {
        w.visible_document(member, &id)
            .map(|d| super::drift::document(w.drift, super::hostile::detail(w, w.detail_json(d))))
    });
    ok(found.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "Document not found"))?)
}

/// `GET /api/v1/document?type=send|sent|received&page=1&size=20&document_type=`.
async fn list(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let member = check_bearer(&sim, &headers)?;
    let side = match q.get("type").map(|t| t.to_ascii_lowercase()).as_deref() {
        Some("send" | "sent") => Side::Send,
        Some("received") => Side::Receive,
        _ => return Err(unprocessable("type must be send or received")),
    };
    let number = |name: &str, default: usize| match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .ok_or_else(|| unprocessable(&format!("{name} must be a positive integer"))),
    };
    let page = number("page", 1)?;
    let size = number("size", 20)?.min(MAX_PAGE_SIZE);
    let doc_type = match q.get("document_type").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(DocType::parse(v).ok_or_else(|| {
            unprocessable("document_type must be INVOICE, CREDIT_NOTE or DEBIT_NOTE")
        })?),
    };
    ok(sim.with(|w| {
        let skip = (page - 1).saturating_mul(size);
        let (total, docs) = w.list_page(member, side, doc_type, skip, size);
        let data: Vec<Value> = docs
            .into_iter()
            .map(|i| w.detail_json(&w.documents[i]))
            .collect();
        let data: Vec<Value> = super::hostile::list(w, member, side, page == 1, data)
            .into_iter()
            .map(|d| super::drift::document(w.drift, d))
            .collect();
        json!({
            "data": data,
            "pagination": {
                "page": page,
                "size": size,
                "total_counts": total,
                "total_pages": total.div_ceil(size),
            },
        })
    }))
}

/// `GET /api/v1/business/{endpoint_id}`: a connected member's details; 404 otherwise.
async fn business(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(endpoint_id): Path<String>,
) -> Answer {
    check_bearer(&sim, &headers)?;
    let found = sim.with(|w| {
        w.find_business(&endpoint_id)
            .filter(|&i| w.is_connected(i))
            .map(|i| w.business_json(i))
    });
    ok(found.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "Business not found"))?)
}

/// Any other path: counted under its raw path, answered with a JSON 404.
async fn not_found(State(sim): State<Simulator>, req: Request) -> Response {
    let key = format!("{} {}", req.method(), req.uri().path());
    sim.with(|w| *w.requests.entry(key).or_default() += 1);
    refuse(StatusCode::NOT_FOUND, "Not found").into_response()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::super::{Fault, FaultKind, SimConfig, SimServer};
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";

    /// Defaults without generator revocations: these tests are not about them, and a slow
    /// machine must not turn a member over mid-test.
    fn steady() -> SimConfig {
        SimConfig {
            revoke_probability: 0.0,
            ..SimConfig::default()
        }
    }

    struct Fixture {
        sim: Simulator,
        server: SimServer,
        http: reqwest::Client,
    }

    impl Fixture {
        async fn new(cfg: SimConfig) -> Fixture {
            let sim = Simulator::new(cfg);
            let server = sim
                .serve(LOCAL.parse::<SocketAddr>().unwrap())
                .await
                .unwrap();
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            Fixture { sim, server, http }
        }

        fn url(&self, path: &str) -> String {
            format!("{}{path}", self.server.base_url())
        }

        fn basic(&self) -> String {
            format!("Basic {}", STANDARD.encode("sim-client:sim-secret"))
        }

        /// Refreshes and returns an access token for member `i` (Documented variant).
        async fn token(&self, i: usize) -> String {
            let rt = self.sim.credentials().members[i].refresh_token.clone();
            let (status, body) = self
                .post(
                    "/api/v1/auth/token",
                    json!({"refresh_token": rt}),
                    &self.basic(),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["token"].as_str().unwrap().to_string()
        }

        async fn post(&self, path: &str, body: Value, auth: &str) -> (u16, Value) {
            let resp = self
                .http
                .post(self.url(path))
                .header("authorization", auth)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }

        async fn get(&self, path: &str, token: &str) -> (u16, Value) {
            let resp = self
                .http
                .get(self.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json().await.unwrap_or(Value::Null))
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn each_token_variant_has_its_documented_shape() {
        let f = Fixture::new(SimConfig::default()).await;
        let rt = f.sim.credentials().members[0].refresh_token.clone();
        let body = json!({"refresh_token": rt});

        let (_, v) = f.post("/api/v1/auth/token", body.clone(), &f.basic()).await;
        assert_eq!(keys(&v), ["token", "token_type", "expire_in"]);
        assert_eq!(v["expire_in"], 900);
        let jwt = v["token"].as_str().unwrap();
        let claims = jwt.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], f.sim.credentials().members[0].endpoint_id);
        let exp = claims["exp"].as_i64().unwrap() - Utc::now().timestamp();
        assert!((890..=900).contains(&exp), "{exp}");

        f.sim.set_token_variant(TokenVariant::DataWrapped);
        let (_, v) = f.post("/api/v1/auth/token", body.clone(), &f.basic()).await;
        assert_eq!(keys(&v), ["data"]);
        assert_eq!(keys(&v["data"]), ["access_token", "expire_at"]);
        assert_eq!(
            v["data"]["access_token"]
                .as_str()
                .unwrap()
                .split('.')
                .count(),
            3
        );
        assert!(DateTime::parse_from_rfc3339(v["data"]["expire_at"].as_str().unwrap()).is_ok());

        f.sim.set_token_variant(TokenVariant::ThirdParty);
        let (_, v) = f.post("/api/v1/auth/token", body.clone(), &f.basic()).await;
        assert_eq!(
            keys(&v),
            ["access_token", "expireIn", "expire_at", "expired_at"]
        );
        assert_eq!(v["expireIn"], "15m");
        let opaque = v["access_token"].as_str().unwrap().to_string();
        assert!(!opaque.contains('.'));

        f.sim.set_token_variant(TokenVariant::StringExpiry);
        let (_, v) = f.post("/api/v1/auth/token", body, &f.basic()).await;
        assert_eq!(keys(&v), ["access_token", "expires_in"]);
        assert_eq!(v["expires_in"], "15m");

        // Every variant's token works as a Bearer token.
        let (status, _) = f.get("/api/v1/document/poll", &opaque).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn basic_refusal_and_refresh_refusal_have_different_bodies() {
        let f = Fixture::new(SimConfig::default()).await;
        let rt = f.sim.credentials().members[0].refresh_token.clone();
        let wrong = format!("Basic {}", STANDARD.encode("sim-client:nope"));
        let (status, v) = f
            .post("/api/v1/auth/token", json!({"refresh_token": rt}), &wrong)
            .await;
        assert_eq!(status, 401);
        assert_eq!(
            v,
            json!({"error": "invalid_client", "error_description": "Invalid client credentials"})
        );
        let (status, v) = f
            .post(
                "/api/v1/auth/token",
                json!({"refresh_token": "rt_unknown"}),
                &f.basic(),
            )
            .await;
        assert_eq!(status, 401);
        assert_eq!(v, json!({"message": "Invalid refresh token"}));

        let endpoint = f.sim.credentials().members[0].endpoint_id.clone();
        let (status, _) = f
            .post(
                "/api/v1/auth/revoke",
                json!({"endpoint_id": endpoint}),
                &f.basic(),
            )
            .await;
        assert_eq!(status, 200);
        let (status, v) = f
            .post(
                "/api/v1/auth/token",
                json!({"refresh_token": rt}),
                &f.basic(),
            )
            .await;
        assert_eq!(status, 403);
        assert_eq!(v, json!({"message": "Entity has been revoked"}));
        let last = f.sim.journal().pop().unwrap();
        assert_eq!(
            last.payload,
            format!(r#"{{"type":"ENTITY.REVOKED","endpoint_id":"{endpoint}"}}"#)
        );
    }

    #[tokio::test]
    async fn bearer_calls_refuse_missing_expired_and_revoked_tokens() {
        let f = Fixture::new(SimConfig::default()).await;
        let (status, v) = f.get("/api/v1/document/poll", "made-up").await;
        assert_eq!((status, v), (401, json!({"message": "Unauthorized"})));
        let token = f.token(0).await;
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 200);
        f.sim.expire_tokens();
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 401);
        let token = f.token(0).await;
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 200);
        f.sim
            .revoke(&f.sim.credentials().members[0].endpoint_id.clone());
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 401);
    }

    #[tokio::test]
    async fn tokens_stop_working_at_the_end_of_their_ttl() {
        let f = Fixture::new(SimConfig {
            token_ttl: Duration::from_secs(60),
            token_variant: TokenVariant::ThirdParty,
            ..SimConfig::default()
        })
        .await;
        let rt = f.sim.credentials().members[0].refresh_token.clone();
        let (_, v) = f
            .post(
                "/api/v1/auth/token",
                json!({"refresh_token": rt}),
                &f.basic(),
            )
            .await;
        assert_eq!(v["expireIn"], "1m");
        let token = v["access_token"].as_str().unwrap().to_string();
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 200);
        // The minute passes for the token (not for the test).
        f.sim.age_tokens(Duration::from_secs(60));
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 401);
    }

    #[tokio::test]
    async fn poll_is_inclusive_sorted_and_shows_only_what_the_member_sees() {
        let f = Fixture::new(steady()).await;
        for _ in 0..5 {
            f.sim.step();
        }
        let token = f.token(0).await;
        let (status, items) = f.get("/api/v1/document/poll", &token).await;
        assert_eq!(status, 200);
        let items = items.as_array().unwrap().clone();
        assert!(items.len() >= 3, "{items:?}");
        // Sorted ascending; each item visible through detail; sides match the detail.
        let me = f.sim.credentials().members[0].endpoint_id.clone();
        let mut previous = String::new();
        for item in &items {
            assert_eq!(keys(item), ["document_id", "updated_at", "type"]);
            let at = item["updated_at"].as_str().unwrap().to_string();
            assert!(at >= previous);
            previous = at;
            let (status, d) = f
                .get(
                    &format!("/api/v1/document/{}", item["document_id"].as_str().unwrap()),
                    &token,
                )
                .await;
            assert_eq!(status, 200);
            match item["type"].as_str().unwrap() {
                "SEND" => assert_eq!(d["supplier_id"], me.as_str()),
                "RECEIVE" => {
                    assert_eq!(d["customer_id"], me.as_str());
                    assert_ne!(d["status"], "VALID");
                }
                other => panic!("{other}"),
            }
        }
        // Inclusive: asking from an item's exact updated_at (zone-less, as documented) returns it.
        let pivot = &items[items.len() / 2];
        let at = pivot["updated_at"].as_str().unwrap();
        let zone_less = at.trim_end_matches('Z');
        let (_, later) = f
            .get(
                &format!("/api/v1/document/poll?last_synced_at={zone_less}"),
                &token,
            )
            .await;
        let later = later.as_array().unwrap();
        assert_eq!(later[0]["updated_at"], pivot["updated_at"]);
        assert!(later
            .iter()
            .any(|i| i["document_id"] == pivot["document_id"]));
        assert!(later.len() < items.len() || items[0]["updated_at"] == pivot["updated_at"]);
        // One millisecond later excludes it.
        let t = DateTime::parse_from_rfc3339(at).unwrap() + TimeDelta::milliseconds(1);
        let (_, after) = f
            .get(
                &format!(
                    "/api/v1/document/poll?last_synced_at={}",
                    encode_query_value(&fmt_ts(t.into()))
                ),
                &token,
            )
            .await;
        assert!(after
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["updated_at"].as_str().unwrap() > at));

        // A customer cannot see a VALID document; its supplier can; others never.
        let valid_id = f.sim.with(|w| {
            let at = w.now();
            let d = w.create_document(0, 1, DocType::Invoice, None, at);
            w.documents[d].id.clone()
        });
        let (supplier, customer, other) = (f.token(0).await, f.token(1).await, f.token(2).await);
        let (status, v) = f
            .get(&format!("/api/v1/document/{valid_id}"), &customer)
            .await;
        assert_eq!((status, v), (404, json!({"message": "Document not found"})));
        assert_eq!(
            f.get(&format!("/api/v1/document/{valid_id}"), &other)
                .await
                .0,
            404
        );
        let (status, d) = f
            .get(&format!("/api/v1/document/{valid_id}"), &supplier)
            .await;
        assert_eq!((status, &d["status"]), (200, &json!("VALID")));
        let polled = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|i| {
                    format!(
                        "{} {}",
                        i["document_id"].as_str().unwrap(),
                        i["type"].as_str().unwrap()
                    )
                })
                .collect()
        };
        let (_, items) = f.get("/api/v1/document/poll", &customer).await;
        assert!(!polled(items).iter().any(|i| i.starts_with(&valid_id)));
        let (_, items) = f.get("/api/v1/document/poll", &supplier).await;
        assert!(polled(items).contains(&format!("{valid_id} SEND")));
        f.sim.with(|w| {
            let d = w.documents.len() - 1;
            let at = w.now();
            w.set_status(d, crate::world::Status::Delivered, at, true)
        });
        let (_, items) = f.get("/api/v1/document/poll", &customer).await;
        assert!(polled(items).contains(&format!("{valid_id} RECEIVE")));
    }

    #[tokio::test]
    async fn poll_variant_and_timezone_change_the_answer() {
        let f = Fixture::new(SimConfig {
            poll_timezone: PollTimezone::Cambodia,
            ..steady()
        })
        .await;
        f.sim.step();
        let token = f.token(0).await;
        let (_, all) = f.get("/api/v1/document/poll", &token).await;
        let newest = all.as_array().unwrap().last().unwrap()["updated_at"]
            .as_str()
            .unwrap()
            .to_string();
        // Read as UTC+7, a UTC cursor 6 h after the newest change still includes it.
        let t = DateTime::parse_from_rfc3339(&newest).unwrap() + TimeDelta::hours(6);
        let cursor = t.format("%Y-%m-%dT%H:%M:%S").to_string();
        let (_, widened) = f
            .get(
                &format!("/api/v1/document/poll?last_synced_at={cursor}"),
                &token,
            )
            .await;
        assert!(!widened.as_array().unwrap().is_empty());
        f.sim.set_poll_variant(PollVariant::Wrapped);
        let (_, wrapped) = f.get("/api/v1/document/poll", &token).await;
        assert_eq!(wrapped["documents"], all);
        let (status, _) = f
            .get("/api/v1/document/poll?last_synced_at=yesterday", &token)
            .await;
        assert_eq!(status, 422);
    }

    #[test]
    fn last_synced_at_accepts_zone_less_z_millis_and_offsets() {
        let utc = |s| parse_last_synced(s, PollTimezone::Utc).map(fmt_ts);
        assert_eq!(
            utc("2024-06-01T01:00:00").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(
            utc("2024-06-01T01:00:00Z").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(
            utc("2024-06-01T01:00:00.859Z").as_deref(),
            Some("2024-06-01T01:00:00.859Z")
        );
        assert_eq!(
            utc("2024-06-01T08:00:00+07:00").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(
            utc("2024-06-01T08:00:00 07:00").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(
            utc("2024-06-01 01:00:00").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(utc("not a date"), None);
        let kh = |s| parse_last_synced(s, PollTimezone::Cambodia).map(fmt_ts);
        assert_eq!(
            kh("2024-06-01T08:00:00").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
        assert_eq!(
            kh("2024-06-01T08:00:00Z").as_deref(),
            Some("2024-06-01T01:00:00.000Z")
        );
    }

    #[tokio::test]
    async fn list_pages_through_one_side_in_creation_order() {
        let f = Fixture::new(steady()).await;
        for _ in 0..30 {
            f.sim.step();
        }
        let token = f.token(0).await;
        let expected: Vec<String> = f.sim.with(|w| {
            w.list(0, Side::Send, None)
                .into_iter()
                .map(|i| w.documents[i].id.clone())
                .collect()
        });
        assert!(expected.len() > 4, "{}", expected.len());
        let mut got = Vec::new();
        let mut page = 1;
        loop {
            let (status, v) = f
                .get(
                    &format!("/api/v1/document?type=sent&page={page}&size=2"),
                    &token,
                )
                .await;
            assert_eq!(status, 200);
            assert_eq!(v["pagination"]["size"], 2);
            assert_eq!(v["pagination"]["page"], page);
            assert_eq!(v["pagination"]["total_counts"], expected.len());
            assert_eq!(v["pagination"]["total_pages"], expected.len().div_ceil(2));
            let data = v["data"].as_array().unwrap();
            if data.is_empty() {
                break;
            }
            assert!(data.len() <= 2);
            got.extend(
                data.iter()
                    .map(|d| d["document_id"].as_str().unwrap().to_string()),
            );
            page += 1;
        }
        assert_eq!(got, expected);
        let (_, same) = f.get("/api/v1/document?type=send&size=100", &token).await;
        assert_eq!(same["data"].as_array().unwrap().len(), expected.len());
        let (_, received) = f
            .get("/api/v1/document?type=received&size=100", &token)
            .await;
        let me = f.sim.credentials().members[0].endpoint_id.clone();
        for d in received["data"].as_array().unwrap() {
            assert_eq!(d["customer_id"], me.as_str());
            assert_ne!(d["status"], "VALID");
        }
        let (_, invoices) = f
            .get(
                "/api/v1/document?type=send&size=100&document_type=INVOICE",
                &token,
            )
            .await;
        assert!(invoices["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["document_type"] == "INVOICE"));
        assert_eq!(f.get("/api/v1/document?type=both", &token).await.0, 422);
    }

    #[tokio::test]
    async fn detail_has_every_documented_field_in_order() {
        let f = Fixture::new(SimConfig::default()).await;
        let token = f.token(0).await;
        let (_, items) = f.get("/api/v1/document/poll", &token).await;
        let id = items[0]["document_id"].as_str().unwrap().to_string();
        let (_, d) = f.get(&format!("/api/v1/document/{id}"), &token).await;
        assert_eq!(
            keys(&d),
            [
                "document_id",
                "document_number",
                "supplier_id",
                "supplier_company_name_kh",
                "supplier_company_name_en",
                "supplier_vattin",
                "customer_id",
                "customer_company_name_en",
                "customer_company_name_kh",
                "customer_vattin",
                "status",
                "issue_date",
                "due_date",
                "pdf_file",
                "created_at",
                "updated_at",
                "currency",
                "tax_inclusive_amount",
                "document_type",
                "reference_document_id",
                "reference_document_number",
            ]
        );
        let created = d["created_at"].as_str().unwrap();
        assert_eq!(created.len(), "2024-03-07T07:16:07.859Z".len());
        assert!(created.ends_with('Z'));
        let kh = d["supplier_company_name_kh"].as_str().unwrap();
        assert!(
            kh.chars().any(|c| ('\u{1780}'..='\u{17FF}').contains(&c)),
            "{kh}"
        );
        assert_eq!(
            f.get("/api/v1/document/not-a-document", &token).await.0,
            404
        );
    }

    #[tokio::test]
    async fn business_detail_is_for_connected_members_only() {
        let f = Fixture::new(SimConfig::default()).await;
        let token = f.token(0).await;
        let other = f.sim.credentials().members[1].endpoint_id.clone();
        let (status, v) = f.get(&format!("/api/v1/business/{other}"), &token).await;
        assert_eq!(status, 200);
        assert_eq!(
            keys(&v),
            [
                "endpoint_id",
                "company_name_en",
                "company_name_kh",
                "entity_type",
                "entity_id",
                "tin",
                "country"
            ]
        );
        let outsider = f
            .sim
            .with(|w| w.businesses[w.cfg.members].endpoint_id.clone());
        assert_eq!(
            f.get(&format!("/api/v1/business/{outsider}"), &token)
                .await
                .0,
            404
        );
    }

    #[tokio::test]
    async fn connect_flow_redirects_and_exchanges_once() {
        let f = Fixture::new(SimConfig::default()).await;
        let resp = f
            .http
            .get(f.url("/connect?client_id=sim-client&redirect_url=http%3A%2F%2Flocalhost%2Fcb&state=a%20b"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 302);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with("http://localhost/cb?authToken="),
            "{location}"
        );
        assert!(location.ends_with("&state=a%20b"), "{location}");
        let auth = location
            .split("authToken=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string();
        let (status, v) = f
            .post(
                "/api/v1/auth/authorize/connect",
                json!({"auth_token": auth}),
                &f.basic(),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(keys(&v), ["access_token", "refresh_token", "business_info"]);
        assert_eq!(keys(&v["business_info"]).len(), 11);
        let new_member = v["business_info"]["endpoint_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(f
            .sim
            .credentials()
            .members
            .iter()
            .any(|m| m.endpoint_id == new_member));
        let (status, _) = f
            .post(
                "/api/v1/auth/authorize/connect",
                json!({"auth_token": auth}),
                &f.basic(),
            )
            .await;
        assert_eq!(status, 401);
    }

    #[tokio::test]
    async fn a_fault_applies_exactly_count_times_and_requests_are_counted() {
        let f = Fixture::new(SimConfig::default()).await;
        let token = f.token(0).await;
        f.sim.inject(Fault::new(
            "document/poll",
            2,
            FaultKind::RateLimited {
                retry_after_secs: 7,
            },
        ));
        for _ in 0..2 {
            let resp = f
                .http
                .get(f.url("/api/v1/document/poll"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 429);
            assert_eq!(resp.headers()["retry-after"], "7");
            assert_eq!(
                resp.json::<Value>().await.unwrap(),
                json!({"message": "Too many requests"})
            );
        }
        assert_eq!(f.get("/api/v1/document/poll", &token).await.0, 200);
        let counts = f.sim.request_counts();
        assert_eq!(counts["GET /api/v1/document/poll"], 3);
        assert_eq!(counts["POST /api/v1/auth/token"], 1);
    }

    #[tokio::test]
    async fn every_fault_kind_answers_as_specified() {
        let f = Fixture::new(SimConfig::default()).await;
        let token = f.token(0).await;
        let fetch = |path: &'static str| {
            let req = f.http.get(f.url(path)).bearer_auth(&token);
            async move {
                let resp = req.send().await.unwrap();
                let status = resp.status().as_u16();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                (status, ct, resp.text().await.unwrap())
            }
        };
        let (_, _, real) = fetch("/api/v1/document/poll").await;

        f.sim
            .inject(Fault::new("", 1, FaultKind::ServerError { status: 503 }));
        let (status, _, body) = fetch("/api/v1/document/poll").await;
        assert_eq!(status, 503);
        assert!(serde_json::from_str::<Value>(&body).is_ok());

        f.sim
            .inject(Fault::new("poll", 1, FaultKind::MalformedJson));
        let (status, _, body) = fetch("/api/v1/document/poll").await;
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err());

        f.sim.inject(Fault::new("poll", 1, FaultKind::Truncated));
        let (status, _, body) = fetch("/api/v1/document/poll").await;
        assert_eq!(status, 200);
        assert_eq!(body, real[..real.len() / 2]);

        f.sim.inject(Fault::new("poll", 1, FaultKind::HtmlPage));
        let (status, ct, body) = fetch("/api/v1/document/poll").await;
        assert_eq!((status, ct.as_str()), (502, "text/html"));
        assert!(body.contains("502 Bad Gateway"));

        f.sim.inject(Fault::new("poll", 1, FaultKind::Unauthorized));
        let (status, _, body) = fetch("/api/v1/document/poll").await;
        assert_eq!(
            (status, body.as_str()),
            (401, r#"{"message":"Unauthorized"}"#)
        );

        f.sim
            .inject(Fault::new("poll", 1, FaultKind::Stall { millis: 300 }));
        let started = std::time::Instant::now();
        let (status, _, body) = fetch("/api/v1/document/poll").await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!((status, body), (200, real));
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404_and_are_counted() {
        let f = Fixture::new(SimConfig::default()).await;
        let (status, v) = f.get("/api/v1/nothing", "x").await;
        assert_eq!((status, v), (404, json!({"message": "Not found"})));
        assert_eq!(f.sim.request_counts()["GET /api/v1/nothing"], 1);
    }

    #[test]
    fn duration_strings_follow_the_ttl() {
        assert_eq!(duration_string(Duration::from_secs(900)), "15m");
        assert_eq!(duration_string(Duration::from_secs(2)), "2s");
        assert_eq!(duration_string(Duration::from_secs(86_400)), "1d");
        assert_eq!(duration_string(Duration::from_secs(7_200)), "2h");
    }
}
