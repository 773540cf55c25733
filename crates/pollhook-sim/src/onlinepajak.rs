//! The OnlinePajak API over HTTP (the ASSUMED contract of `providers/onlinepajak.md`): routes
//! under `/v2.0`, the gateway's token checks and rate limit, the success and error envelopes.
//!
//! This module owns the wire: which route answers what, with which status and body. It reads
//! the world only through [`OpWorld`](super::op_world::OpWorld) methods and changes nothing but
//! the rate-limit windows and the error-id counter; it never journals. Every route is wrapped in
//! the [`faults`](super::faults) layer, which counts it under its route key first.
//!
//! Order of checks, as a gateway in front of the service would do them: no `Authorization`
//! header -> 401; unknown token -> 403 (neither counts against any budget); over the token's
//! budget -> 429 (not counted either); then the request itself, which counts whatever it
//! answers (200, 400 or 404).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::faults::{guard, Guard};
use super::Simulator;

/// The path prefix: a daemon's `base_url` is `http://HOST:PORT/v2.0`.
pub const PREFIX: &str = "/v2.0";

/// Largest `size` Bulk Fetch honours (larger values are clamped).
pub(super) const MAX_PAGE_SIZE: usize = 100;

/// `size` when the request gives none.
const DEFAULT_PAGE_SIZE: usize = 100;

/// The OnlinePajak routes, each counted and fault-injectable. No fallback: unknown paths fall
/// to the CamInvoice router's JSON 404.
pub fn routes(sim: &Simulator) -> Router {
    let guarded = |template: &'static str, route: MethodRouter<Simulator>| {
        let g = Guard {
            sim: sim.clone(),
            template,
        };
        route.layer(from_fn_with_state(g, guard))
    };
    Router::new()
        .route(
            "/v2.0/invoices/sale",
            guarded("/v2.0/invoices/sale", get(bulk_fetch)),
        )
        .route(
            "/v2.0/invoices/sale/{id}",
            guarded("/v2.0/invoices/sale/{id}", get(retrieve)),
        )
        .with_state(sim.clone())
}

/// A refusal: the status and JSON body a handler answers with instead.
struct Refusal(StatusCode, Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type Answer = Result<Response, Refusal>;

/// `{"success": {"code": "00", ...}, "data": data}`.
fn success(data: Value) -> Answer {
    Ok(Json(json!({
        "success": {"code": "00", "message": "Success"},
        "data": data,
    }))
    .into_response())
}

/// `{"errors": [{"code": "11", "message": ...}, ...]}` with 400.
fn validation(messages: Vec<String>) -> Refusal {
    let errors: Vec<Value> = messages
        .into_iter()
        .map(|m| json!({"code": "11", "message": m}))
        .collect();
    Refusal(StatusCode::BAD_REQUEST, json!({ "errors": errors }))
}

/// The token of `Authorization: Bearer <token>` or of a bare `Authorization: <token>`.
fn token_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = String::from_utf8_lossy(value.as_bytes()).trim().to_string();
    if text.is_empty() {
        return None;
    }
    match text.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(rest.trim().to_string())
        }
        _ => Some(text),
    }
}

/// The gateway: the company behind the token, after its rate limit. See the module docs.
fn authenticate(sim: &Simulator, headers: &HeaderMap) -> Result<usize, Refusal> {
    let Some(token) = token_of(headers) else {
        return Err(Refusal(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Unauthorized"}),
        ));
    };
    sim.with(|w| {
        let Some(c) = w.op.company_by_token(&token) else {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                json!({"message": "Invalid signature"}),
            ));
        };
        let now = w.now();
        if !w.op.admit(&token, now) {
            return Err(Refusal(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message": "API rate limit exceeded"}),
            ));
        }
        Ok(c)
    })
}

/// Reads `updatedFrom` (RFC 3339; a `+` sent unencoded arrives as a space and is taken back).
pub fn parse_updated_from(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&text.replace(' ', "+")))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `GET /v2.0/invoices/sale?page=1&size=100&updatedFrom=<RFC3339>&sort=updatedAt,asc`.
async fn bulk_fetch(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let company = authenticate(&sim, &headers)?;
    let mut errors = Vec::new();
    let mut number = |name: &str, default: usize| match q.get(name) {
        None => default,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                errors.push(format!("{name} must be a positive integer, got {v:?}"));
                default
            }
        },
    };
    let page = number("page", 1);
    let size = number("size", DEFAULT_PAGE_SIZE).min(MAX_PAGE_SIZE);
    let from = match q.get("updatedFrom") {
        None => None,
        Some(v) => {
            let parsed = parse_updated_from(v);
            if parsed.is_none() {
                errors.push(format!(
                    "updatedFrom must be an RFC 3339 date-time such as 2026-11-23T08:57:35.383Z, got {v:?}"
                ));
            }
            parsed
        }
    };
    if let Some(sort) = q.get("sort") {
        if !matches!(sort.trim(), "updatedAt,asc" | "updatedAt") {
            errors.push(format!("sort must be updatedAt,asc, got {sort:?}"));
        }
    }
    if !errors.is_empty() {
        return Err(validation(errors));
    }
    success(sim.with(|w| {
        let found = super::hostile::op_bulk(w, company, w.op.bulk(company, from));
        let total = found.len();
        let content: Vec<Value> = found
            .into_iter()
            .skip((page - 1).saturating_mul(size))
            .take(size)
            .map(|inv| {
                let v = super::hostile::op_invoice(w, inv, w.op.invoice_json(inv));
                super::drift::op_invoice(w.drift, v)
            })
            .collect();
        if content.len() < size {
            // A short page ends the walk: it has read every change of the company.
            w.op.unread
                .read_paged(company, super::floor::PAGE_FLOOR_SIZE);
        }
        let data = json!({
            "content": content,
            "page": page,
            "size": size,
            "totalPages": total.div_ceil(size),
            "totalElements": total,
        });
        super::drift::op_bulk(w.drift, data)
    }))
}

/// `GET /v2.0/invoices/sale/{id}`: the invoice, if it is the token's company's.
async fn retrieve(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let company = authenticate(&sim, &headers)?;
    let found = sim.with(|w| match w.op.visible(company, &id) {
        Some(inv) => {
            let v = super::hostile::op_invoice(w, inv, w.op.invoice_json(inv));
            Ok(super::drift::op_retrieved(
                w.drift,
                super::drift::op_invoice(w.drift, v),
            ))
        }
        None => Err(w.op.next_error_id()),
    });
    match found {
        Ok(invoice) => success(invoice),
        Err(error_id) => Err(Refusal(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "10", "message": "Invoice not found", "errorId": error_id}}),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::super::{Fault, FaultKind, SimConfig, SimServer};
    use super::*;

    /// The sample of `providers/onlinepajak.md`, verbatim.
    const SAMPLE: &str = r#"{
  "npwp": "12.312.312.0-001.123",
  "user_email": "",
  "event_name": "PPN_INVOICE_APPROVED",
  "event_date": "2019-08-28T11:55:37.151Z",
  "event_data": {
    "reference_number": "490e6ab5-3aa2-4e76-9569-c84aecc56c73",
    "document_number": "001-19.00000005",
    "client_reference_id": "FC8C2DA9A924EB81DBC695E8A587F",
    "commercial_invoice_number": "INV/2019/I/0001-A",
    "tax_period": "2019/01",
    "revision": 0,
    "type": "normal",
    "approved": true,
    "djp_response_message": "Approved Successfully",
    "pdf_download_link": ""
  }
}"#;

    const INVOICE_KEYS: [&str; 14] = [
        "id",
        "documentNumber",
        "clientReferenceId",
        "commercialInvoiceNumber",
        "taxPeriod",
        "revision",
        "documentType",
        "approvalStatus",
        "djpResponseMessage",
        "pdfDownloadLink",
        "createdBy",
        "npwp",
        "approvedAt",
        "updatedAt",
    ];

    struct Fixture {
        sim: Simulator,
        server: SimServer,
        http: reqwest::Client,
    }

    impl Fixture {
        async fn new(cfg: SimConfig) -> Fixture {
            let sim = Simulator::new(cfg);
            let server = sim
                .serve("127.0.0.1:0".parse::<SocketAddr>().unwrap())
                .await
                .unwrap();
            Fixture {
                sim,
                server,
                http: reqwest::Client::new(),
            }
        }

        fn token(&self, c: usize) -> String {
            self.sim.credentials().onlinepajak[c].token.clone()
        }

        fn npwp(&self, c: usize) -> String {
            self.sim.credentials().onlinepajak[c].npwp.clone()
        }

        /// GET `{base}/v2.0{path}` with `Authorization: <auth>` (none if `None`).
        async fn get(&self, path: &str, auth: Option<&str>) -> (u16, Value, HeaderMap) {
            let mut req = self
                .http
                .get(format!("{}{PREFIX}{path}", self.server.base_url()));
            if let Some(auth) = auth {
                req = req.header("authorization", auth);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            (status, resp.json().await.unwrap_or(Value::Null), headers)
        }

        async fn bearer(&self, path: &str, c: usize) -> (u16, Value) {
            let (s, v, _) = self
                .get(path, Some(&format!("Bearer {}", self.token(c))))
                .await;
            (s, v)
        }

        /// Every invoice of company `c`, through Bulk Fetch pages of `size`.
        async fn all(&self, c: usize, query: &str, size: usize) -> Vec<Value> {
            let mut out = Vec::new();
            let mut page = 1;
            loop {
                let (status, v) = self
                    .bearer(
                        &format!(
                            "/invoices/sale?page={page}&size={size}&sort=updatedAt,asc{query}"
                        ),
                        c,
                    )
                    .await;
                assert_eq!(status, 200, "{v}");
                let content = v["data"]["content"].as_array().unwrap().clone();
                if content.is_empty() {
                    return out;
                }
                out.extend(content);
                page += 1;
            }
        }
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    fn encode(s: &str) -> String {
        s.replace(':', "%3A").replace('+', "%2B")
    }

    #[tokio::test]
    async fn bulk_fetch_has_the_envelope_and_every_invoice_field() {
        let f = Fixture::new(SimConfig::default()).await;
        for _ in 0..5 {
            f.sim.step();
        }
        let (status, v) = f
            .bearer("/invoices/sale?page=1&size=100&sort=updatedAt,asc", 0)
            .await;
        assert_eq!(status, 200);
        assert_eq!(keys(&v), ["success", "data"]);
        assert_eq!(v["success"]["code"], "00");
        assert!(v["success"]["message"].is_string());
        assert_eq!(
            keys(&v["data"]),
            ["content", "page", "size", "totalPages", "totalElements"]
        );
        let content = v["data"]["content"].as_array().unwrap();
        assert!(content.len() > 6, "{}", content.len());
        let npwp = f.npwp(0);
        let mut statuses = std::collections::BTreeSet::new();
        for inv in content {
            assert_eq!(keys(inv), INVOICE_KEYS);
            assert_eq!(inv["npwp"], npwp.as_str());
            assert!(inv["revision"].is_u64());
            assert!(["1", "2", "4", "5"].contains(&inv["documentType"].as_str().unwrap()));
            let updated = inv["updatedAt"].as_str().unwrap();
            assert_eq!(updated.len(), "2026-11-23T08:57:35.383Z".len(), "{updated}");
            assert!(updated.ends_with('Z') && DateTime::parse_from_rfc3339(updated).is_ok());
            let status = inv["approvalStatus"].as_str().unwrap();
            statuses.insert(status.to_string());
            match status {
                "APPROVED" => {
                    let number = inv["documentNumber"].as_str().unwrap();
                    assert_eq!(number.len(), "010.000-26.00000005".len(), "{number}");
                    assert!(inv["pdfDownloadLink"]
                        .as_str()
                        .unwrap()
                        .starts_with("https://"));
                    assert_eq!(inv["djpResponseMessage"], "Approved Successfully");
                    assert!(inv["approvedAt"].as_str().unwrap() <= updated);
                }
                "REJECTED" => {
                    assert_eq!(inv["documentNumber"], "");
                    assert_ne!(inv["djpResponseMessage"], "");
                    assert!(inv["approvedAt"].is_string());
                }
                "DRAFT" | "APPROVAL_IN_PROGRESS" => {
                    assert_eq!(inv["documentNumber"], "");
                    assert_eq!(inv["pdfDownloadLink"], "");
                    assert_eq!(inv["djpResponseMessage"], "");
                    assert!(inv["approvedAt"].is_null());
                }
                other => panic!("{other}"),
            }
            let one = inv["id"].as_str().unwrap();
            let (status, single) = f.bearer(&format!("/invoices/sale/{one}"), 0).await;
            assert_eq!(status, 200);
            assert_eq!(keys(&single), ["success", "data"]);
            assert_eq!(&single["data"], inv);
        }
        assert!(statuses.len() >= 3, "{statuses:?}");
    }

    #[tokio::test]
    async fn bulk_fetch_is_inclusive_sorted_and_paged() {
        let f = Fixture::new(SimConfig::default()).await;
        for _ in 0..10 {
            f.sim.step();
            f.sim.advance_clock(Duration::from_millis(300));
        }
        let expected: Vec<String> = f.sim.with(|w| {
            w.op.bulk(0, None)
                .into_iter()
                .map(|i| i.id.clone())
                .collect()
        });
        assert!(expected.len() > 10, "{}", expected.len());
        let (_, first) = f.bearer("/invoices/sale?page=1&size=3", 0).await;
        assert_eq!(first["data"]["size"], 3);
        assert_eq!(first["data"]["totalElements"], expected.len());
        assert_eq!(first["data"]["totalPages"], expected.len().div_ceil(3));
        let all = f.all(0, "", 3).await;
        let ids: Vec<&str> = all.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, expected);
        for pair in all.windows(2) {
            let key = |v: &Value| {
                (
                    v["updatedAt"].as_str().unwrap().to_string(),
                    v["id"].as_str().unwrap().to_string(),
                )
            };
            assert!(key(&pair[0]) < key(&pair[1]), "{pair:?}");
        }
        // Ties exist within a step: the order is (updatedAt, id).
        let mut stamps: Vec<&str> = all
            .iter()
            .map(|i| i["updatedAt"].as_str().unwrap())
            .collect();
        stamps.dedup();
        assert!(stamps.len() < all.len(), "some invoices share an updatedAt");

        // Inclusive: from an invoice's exact updatedAt it is there, and nothing older is.
        let pivot = &all[all.len() / 2];
        let at = pivot["updatedAt"].as_str().unwrap();
        let later = f.all(0, &format!("&updatedFrom={}", encode(at)), 100).await;
        assert!(later.iter().any(|i| i["id"] == pivot["id"]));
        assert!(later.iter().all(|i| i["updatedAt"].as_str().unwrap() >= at));
        let older = all
            .iter()
            .filter(|i| i["updatedAt"].as_str().unwrap() < at)
            .count();
        assert_eq!(later.len(), all.len() - older);
        // The same instant with an offset, '+' unencoded (arrives as a space), still works.
        let t = DateTime::parse_from_rfc3339(at).unwrap();
        let wib = t
            .with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).unwrap())
            .format("%Y-%m-%dT%H:%M:%S%.3f+07:00")
            .to_string();
        let (status, v) = f
            .bearer(&format!("/invoices/sale?size=100&updatedFrom={wib}"), 0)
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["totalElements"], later.len());
        // One millisecond later excludes it.
        let after = fmt_ms(t.with_timezone(&Utc) + chrono::TimeDelta::milliseconds(1));
        let rest = f
            .all(0, &format!("&updatedFrom={}", encode(&after)), 100)
            .await;
        assert!(rest.iter().all(|i| i["updatedAt"].as_str().unwrap() > at));

        // Past the last page: empty content, same totals. Size is capped at 100.
        let (_, beyond) = f.bearer("/invoices/sale?page=99&size=3", 0).await;
        assert_eq!(beyond["data"]["content"], json!([]));
        assert_eq!(beyond["data"]["totalElements"], expected.len());
        let (_, capped) = f.bearer("/invoices/sale?size=500", 0).await;
        assert_eq!(capped["data"]["size"], 100);
    }

    fn fmt_ms(t: DateTime<Utc>) -> String {
        super::super::fmt_ts(t)
    }

    #[tokio::test]
    async fn bad_parameters_get_400_with_code_11_per_problem() {
        let f = Fixture::new(SimConfig::default()).await;
        for query in [
            "page=0",
            "page=x",
            "size=0",
            "size=-5",
            "updatedFrom=yesterday",
            "updatedFrom=2026-01-01T00:00:00",
            "sort=createdAt,desc",
        ] {
            let (status, v) = f.bearer(&format!("/invoices/sale?{query}"), 0).await;
            assert_eq!(status, 400, "{query}: {v}");
            assert_eq!(keys(&v), ["errors"]);
            assert_eq!(v["errors"][0]["code"], "11");
            assert!(v["errors"][0]["message"].is_string());
        }
        let (_, v) = f.bearer("/invoices/sale?page=0&sort=x", 0).await;
        assert_eq!(v["errors"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bearer_and_raw_tokens_work_missing_is_401_unknown_is_403() {
        let f = Fixture::new(SimConfig::default()).await;
        let token = f.token(0);
        for auth in [
            format!("Bearer {token}"),
            format!("bearer {token}"),
            token.clone(),
        ] {
            let (status, _, _) = f.get("/invoices/sale", Some(&auth)).await;
            assert_eq!(status, 200, "{auth}");
        }
        let (status, v, _) = f.get("/invoices/sale", None).await;
        assert_eq!((status, v), (401, json!({"message": "Unauthorized"})));
        let (status, v, _) = f.get("/invoices/sale/anything", None).await;
        assert_eq!((status, v), (401, json!({"message": "Unauthorized"})));
        for auth in ["Bearer nope", "nope", &format!("Basic {token}")] {
            let (status, v, _) = f.get("/invoices/sale", Some(auth)).await;
            assert_eq!(
                (status, v),
                (403, json!({"message": "Invalid signature"})),
                "{auth}"
            );
        }
        let counts = f.sim.request_counts();
        assert_eq!(counts["GET /v2.0/invoices/sale"], 7);
        assert_eq!(counts["GET /v2.0/invoices/sale/{id}"], 1);
    }

    #[tokio::test]
    async fn a_token_sees_only_its_company() {
        let f = Fixture::new(SimConfig::default()).await;
        for _ in 0..3 {
            f.sim.step();
        }
        let mine = f.all(0, "", 100).await;
        let theirs = f.all(1, "", 100).await;
        assert!(!mine.is_empty() && !theirs.is_empty());
        assert!(mine.iter().all(|i| i["npwp"] == f.npwp(0).as_str()));
        assert!(theirs.iter().all(|i| i["npwp"] == f.npwp(1).as_str()));
        let other = theirs[0]["id"].as_str().unwrap();
        let (status, v) = f.bearer(&format!("/invoices/sale/{other}"), 0).await;
        assert_eq!(status, 404);
        assert_eq!(keys(&v), ["error"]);
        assert_eq!(keys(&v["error"]), ["code", "message", "errorId"]);
        assert_eq!(v["error"]["code"], "10");
        assert_eq!(v["error"]["message"], "Invoice not found");
        let error_id = v["error"]["errorId"].as_str().unwrap().to_string();
        let groups: Vec<usize> = error_id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{error_id}");
        let (status, v) = f.bearer("/invoices/sale/no-such-invoice", 0).await;
        assert_eq!(status, 404);
        assert_ne!(v["error"]["errorId"], error_id.as_str(), "a fresh errorId");
        assert_eq!(f.bearer(&format!("/invoices/sale/{other}"), 1).await.0, 200);
    }

    #[tokio::test]
    async fn the_hundred_and_first_call_in_a_minute_is_429_until_the_window_slides() {
        let f = Fixture::new(SimConfig::default()).await;
        // Errors answered by the service count too: half the budget goes on 404s.
        for k in 0..100 {
            let path = if k % 2 == 0 {
                "/invoices/sale?size=1".to_string()
            } else {
                "/invoices/sale/unknown".to_string()
            };
            let (status, _) = f.bearer(&path, 0).await;
            assert!(status == 200 || status == 404, "call {k}: {status}");
        }
        let (status, v, headers) = f
            .get("/invoices/sale", Some(&format!("Bearer {}", f.token(0))))
            .await;
        assert_eq!(
            (status, v),
            (429, json!({"message": "API rate limit exceeded"}))
        );
        assert!(headers.get("retry-after").is_none());
        assert_eq!(f.bearer("/invoices/sale/unknown", 0).await.0, 429);
        assert_eq!(f.sim.rate_limited(), 2);
        // Another company's token has its own budget; a bad token is not limited.
        assert_eq!(f.bearer("/invoices/sale", 1).await.0, 200);
        assert_eq!(f.get("/invoices/sale", Some("nope")).await.0, 403);
        // 30 s later the window still holds all 100; 61 s after them they have all left it.
        f.sim.advance_clock(Duration::from_secs(30));
        assert_eq!(f.bearer("/invoices/sale", 0).await.0, 429);
        f.sim.advance_clock(Duration::from_secs(31));
        assert_eq!(f.bearer("/invoices/sale", 0).await.0, 200);
        assert_eq!(f.sim.rate_limited(), 3);
    }

    #[tokio::test]
    async fn faults_apply_to_the_onlinepajak_routes_by_route_key() {
        let f = Fixture::new(SimConfig::default()).await;
        f.sim.inject(Fault::new(
            "GET /v2.0/invoices/sale/{id}",
            1,
            FaultKind::ServerError { status: 503 },
        ));
        assert_eq!(f.bearer("/invoices/sale", 0).await.0, 200);
        assert_eq!(f.bearer("/invoices/sale/x", 0).await.0, 503);
        assert_eq!(f.bearer("/invoices/sale/x", 0).await.0, 404);
        f.sim
            .inject(Fault::new("invoices/sale", 1, FaultKind::Unauthorized));
        let (status, v) = f.bearer("/invoices/sale", 0).await;
        assert_eq!((status, v), (401, json!({"message": "Unauthorized"})));
        let counts = f.sim.request_counts();
        assert_eq!(counts["GET /v2.0/invoices/sale"], 2);
        assert_eq!(counts["GET /v2.0/invoices/sale/{id}"], 2);
    }

    #[tokio::test]
    async fn the_journal_payload_is_the_documented_one_built_from_the_invoice() {
        let f = Fixture::new(SimConfig::default()).await;
        let mut steps = 0;
        while f
            .sim
            .journal()
            .iter()
            .all(|e| e.event_type != "PPN_INVOICE_APPROVED")
        {
            f.sim.step();
            steps += 1;
            assert!(steps < 20, "no PPN_INVOICE_APPROVED");
        }
        let entry = f
            .sim
            .journal()
            .into_iter()
            .find(|e| e.event_type == "PPN_INVOICE_APPROVED")
            .unwrap();
        let sample: Value = serde_json::from_str(SAMPLE).unwrap();
        let got: Value = serde_json::from_str(&entry.payload).unwrap();
        // Compact JSON, keys in the sample's order, values of the sample's JSON types.
        assert_eq!(entry.payload, got.to_string());
        assert_eq!(keys(&got), keys(&sample));
        assert_eq!(keys(&got["event_data"]), keys(&sample["event_data"]));
        let kind = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(n) if n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        for (k, v) in sample.as_object().unwrap() {
            assert_eq!(kind(&got[k]), kind(v), "{k}");
        }
        for (k, v) in sample["event_data"].as_object().unwrap() {
            assert_eq!(kind(&got["event_data"][k]), kind(v), "event_data.{k}");
        }
        assert_eq!(got["event_name"], "PPN_INVOICE_APPROVED");
        assert_eq!(entry.endpoint_id, got["npwp"].as_str().unwrap());

        // Every value is what the INVOICE shows right then (nothing has moved since).
        let id = got["event_data"]["reference_number"].as_str().unwrap();
        let c = f
            .sim
            .credentials()
            .onlinepajak
            .iter()
            .position(|c| c.npwp == entry.endpoint_id)
            .unwrap();
        let (status, inv) = f.bearer(&format!("/invoices/sale/{id}"), c).await;
        assert_eq!(status, 200);
        let inv = &inv["data"];
        let d = &got["event_data"];
        assert_eq!(got["npwp"], inv["npwp"]);
        assert_eq!(got["user_email"], inv["createdBy"]);
        assert_eq!(got["event_date"], inv["approvedAt"]);
        assert_eq!(d["document_number"], inv["documentNumber"]);
        assert_eq!(d["client_reference_id"], inv["clientReferenceId"]);
        assert_eq!(
            d["commercial_invoice_number"],
            inv["commercialInvoiceNumber"]
        );
        assert_eq!(d["tax_period"], inv["taxPeriod"]);
        assert_eq!(d["revision"], inv["revision"]);
        assert_eq!(d["approved"], inv["approvalStatus"] == "APPROVED");
        assert_eq!(d["djp_response_message"], inv["djpResponseMessage"]);
        assert_eq!(d["pdf_download_link"], inv["pdfDownloadLink"]);
        let t = entry.at;
        assert_eq!(got["event_date"], fmt_ms(t).as_str());
    }

    #[tokio::test]
    async fn a_replacement_journals_a_second_entry_with_revision_one() {
        let f = Fixture::new(SimConfig::default()).await;
        let (i, id, npwp) = f.sim.with(|w| {
            let now = w.now();
            let i =
                w.op.create(0, crate::op_world::OpDocType::Normal, now, true);
            w.op.submit(i, now, true);
            (
                i,
                w.op.invoices[i].id.clone(),
                w.op.companies[0].npwp.clone(),
            )
        });
        f.sim.with(|w| {
            let now = w.now();
            w.op_answer(i, true, now);
            w.op.revise(i, crate::op_world::OpDocType::Replacement, now, true);
        });
        let (_, inv) = f.bearer(&format!("/invoices/sale/{id}"), 0).await;
        assert_eq!(inv["data"]["revision"], 1);
        assert_eq!(inv["data"]["documentType"], "5");
        assert_eq!(inv["data"]["approvalStatus"], "APPROVAL_IN_PROGRESS");
        f.sim.with(|w| {
            let now = w.now();
            w.op_answer(i, true, now)
        });
        let entries: Vec<Value> = f
            .sim
            .journal()
            .iter()
            .filter(|e| e.payload.contains(&id))
            .map(|e| {
                assert_eq!(e.endpoint_id, npwp);
                serde_json::from_str(&e.payload).unwrap()
            })
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["event_data"]["revision"], 0);
        assert_eq!(entries[0]["event_data"]["type"], "normal");
        assert_eq!(entries[1]["event_data"]["revision"], 1);
        assert_eq!(entries[1]["event_data"]["type"], "replacement");
        assert_eq!(entries[1]["event_data"]["approved"], true);
        assert!(entries[1]["event_date"].as_str() > entries[0]["event_date"].as_str());
        let (_, inv) = f.bearer(&format!("/invoices/sale/{id}"), 0).await;
        assert_eq!(
            inv["data"]["documentNumber"],
            entries[1]["event_data"]["document_number"]
        );
    }

    #[tokio::test]
    async fn generated_replacements_journal_revision_one_after_revision_zero() {
        let sim = Simulator::new(SimConfig::default());
        for _ in 0..150 {
            sim.step();
            sim.advance_clock(Duration::from_millis(100));
        }
        let mut by_invoice: HashMap<String, Vec<(u64, String)>> = HashMap::new();
        for e in sim
            .journal()
            .iter()
            .filter(|e| e.event_type == "PPN_INVOICE_APPROVED")
        {
            let v: Value = serde_json::from_str(&e.payload).unwrap();
            let d = &v["event_data"];
            by_invoice
                .entry(d["reference_number"].as_str().unwrap().to_string())
                .or_default()
                .push((
                    d["revision"].as_u64().unwrap(),
                    d["type"].as_str().unwrap().to_string(),
                ));
        }
        let replaced: Vec<_> = by_invoice
            .values()
            .filter(|v| v.len() >= 2 && v[0] == (0, "normal".to_string()))
            .collect();
        assert!(
            replaced
                .iter()
                .any(|v| v[1] == (1, "replacement".to_string())),
            "{replaced:?}"
        );
        for v in by_invoice.values() {
            let revisions: Vec<u64> = v.iter().map(|(r, _)| *r).collect();
            assert!(revisions.windows(2).all(|p| p[0] < p[1]), "{v:?}");
        }
    }

    #[tokio::test]
    async fn a_burst_of_a_thousand_is_journaled_and_fetched_in_ten_pages() {
        let f = Fixture::new(SimConfig::default()).await;
        let npwp = f.npwp(1);
        let before = f.sim.journal().len();
        assert_eq!(f.sim.op_burst(&npwp, 1000), 1000);
        assert_eq!(f.sim.op_burst("00.000.000.0-000.000", 5), 0, "unknown NPWP");
        let journal = f.sim.journal();
        assert_eq!(journal.len() - before, 1000);
        let burst = &journal[before..];
        assert!(burst.iter().all(|e| e.endpoint_id == npwp));
        assert!(
            burst.windows(2).all(|p| p[0].at < p[1].at),
            "distinct, increasing"
        );
        let rejected = burst
            .iter()
            .filter(|e| e.payload.contains("\"approved\":false"))
            .count();
        assert!(
            (40..=160).contains(&rejected),
            "{rejected} of 1000 rejected"
        );
        let from = burst[0].at;
        let all = f
            .all(1, &format!("&updatedFrom={}", encode(&fmt_ms(from))), 100)
            .await;
        assert_eq!(all.len(), 1000);
        let (_, v) = f
            .bearer(
                &format!(
                    "/invoices/sale?size=100&updatedFrom={}",
                    encode(&fmt_ms(from))
                ),
                1,
            )
            .await;
        assert_eq!(v["data"]["totalPages"], 10);
        // Later traffic is never stamped before the burst.
        f.sim.step();
        let newest_burst = burst.last().unwrap().at;
        assert!(f
            .sim
            .journal()
            .iter()
            .skip(before + 1000)
            .filter(|e| e.event_type == "PPN_INVOICE_APPROVED")
            .all(|e| e.at >= newest_burst));
    }
}
