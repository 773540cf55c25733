//! The `/_sim/...` control routes: the simulator's public API over HTTP.
//!
//! This module owns nothing but the translation of admin requests into [`Simulator`] calls, for
//! end-to-end tests that run the simulator as a separate process. These routes have no
//! authentication, are never counted in `request_counts` and never faulted: they are the test
//! harness, not the provider. [`Simulator::router`] mounts them at the root and again under the
//! OnlinePajak prefix (`/v2.0/_sim/...`), so a harness holding either provider's `base_url`
//! reaches them.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{Fault, Simulator};

/// The admin routes.
pub fn routes(sim: &Simulator) -> Router {
    Router::new()
        .route("/_sim/journal", get(journal))
        .route("/_sim/requests", get(requests))
        .route("/_sim/cost", get(cost))
        .route("/_sim/faults", get(fault_counts))
        .route("/_sim/step", post(step))
        .route("/_sim/credentials", get(credentials))
        .route("/_sim/revoke/{endpoint_id}", post(revoke))
        .route("/_sim/expire-tokens", post(expire_tokens))
        .route("/_sim/fault", post(fault))
        .route("/_sim/advance-clock", post(advance_clock))
        .route("/_sim/op-burst", post(op_burst))
        .route("/_sim/drift", post(drift))
        .with_state(sim.clone())
}

/// `GET /_sim/journal`: the journal entries, `payload` as a JSON string.
async fn journal(State(sim): State<Simulator>) -> Response {
    Json(sim.journal()).into_response()
}

/// `GET /_sim/requests`: request counts by route key.
async fn requests(State(sim): State<Simulator>) -> Response {
    Json(sim.request_counts()).into_response()
}

/// `GET /_sim/cost`: the API cost by the simulator's counters and its floor (`Cost`).
async fn cost(State(sim): State<Simulator>) -> Response {
    Json(sim.cost()).into_response()
}

/// `GET /_sim/faults`: which injected faults fired (`FaultCounts`).
async fn fault_counts(State(sim): State<Simulator>) -> Response {
    Json(sim.fault_counts()).into_response()
}

/// `POST /_sim/step`: one traffic step -> `{"journaled": n}`.
async fn step(State(sim): State<Simulator>) -> Response {
    Json(json!({"journaled": sim.step()})).into_response()
}

/// `GET /_sim/credentials`: client credentials and members' refresh tokens.
async fn credentials(State(sim): State<Simulator>) -> Response {
    Json(sim.credentials()).into_response()
}

/// `POST /_sim/revoke/{endpoint_id}` -> `{"revoked": true}`, or 404 `{"revoked": false}`.
async fn revoke(State(sim): State<Simulator>, Path(endpoint_id): Path<String>) -> Response {
    if sim.revoke(&endpoint_id) {
        Json(json!({"revoked": true})).into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"revoked": false}))).into_response()
    }
}

/// `POST /_sim/expire-tokens`: every access token issued so far stops working.
async fn expire_tokens(State(sim): State<Simulator>) -> Response {
    sim.expire_tokens();
    Json(json!({"expired": true})).into_response()
}

/// `POST /_sim/fault` with a [`Fault`] as JSON -> `{"queued": true}`.
async fn fault(State(sim): State<Simulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(f) => {
            sim.inject(f);
            Json(json!({"queued": true})).into_response()
        }
        Err(e) => bad_request(&format!(
            "expected a Fault, e.g. {{\"path_contains\":\"poll\",\"count\":1,\
             \"kind\":{{\"type\":\"ServerError\",\"status\":503}}}}: {e}"
        )),
    }
}

/// `POST /_sim/advance-clock` with `{"millis": n}`: moves the simulated clock forward.
async fn advance_clock(State(sim): State<Simulator>, body: Bytes) -> Response {
    let millis = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("millis")?.as_u64());
    match millis {
        Some(ms) => {
            sim.advance_clock(Duration::from_millis(ms));
            Json(json!({"advanced_ms": ms})).into_response()
        }
        None => bad_request("expected {\"millis\": <non-negative integer>}"),
    }
}

/// `POST /_sim/op-burst` with `{"npwp": "..", "n": 1000}`: [`Simulator::op_burst`] ->
/// `{"journaled": n}`, or 404 `{"journaled": 0}` for an NPWP that is no company's.
async fn op_burst(State(sim): State<Simulator>, body: Bytes) -> Response {
    let v = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    let (Some(npwp), Some(n)) = (v.get("npwp").and_then(Value::as_str), v["n"].as_u64()) else {
        return bad_request("expected {\"npwp\": \"<a company's NPWP>\", \"n\": <count>}");
    };
    if !sim.credentials().onlinepajak.iter().any(|c| c.npwp == npwp) {
        return (StatusCode::NOT_FOUND, Json(json!({"journaled": 0}))).into_response();
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    Json(json!({"journaled": sim.op_burst(npwp, n)})).into_response()
}

/// `POST /_sim/drift` with `{"drift": "OpStatusRenamed"}` (a [`Drift`](super::Drift) variant).
async fn drift(State(sim): State<Simulator>, body: Bytes) -> Response {
    let v = serde_json::from_slice::<Value>(&body).unwrap_or_default();
    match serde_json::from_value::<super::Drift>(v["drift"].clone()) {
        Ok(d) => {
            sim.set_drift(d);
            Json(json!({"drift": d})).into_response()
        }
        Err(e) => bad_request(&format!(
            "expected {{\"drift\": \"<variant>\"}}, one of {:?}: {e}",
            super::Drift::ALL
        )),
    }
}

fn bad_request(text: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"message": text})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::super::{JournalEntry, SimConfig, SimCredentials};
    use super::*;

    #[tokio::test]
    async fn admin_routes_drive_the_simulator_over_http() {
        let sim = Simulator::new(SimConfig::default());
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = server.base_url();
        let http = reqwest::Client::new();

        let creds: SimCredentials = http
            .get(format!("{base}/_sim/credentials"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(creds, sim.credentials());

        let mut journaled = 0;
        for _ in 0..3 {
            let v: Value = http
                .post(format!("{base}/_sim/step"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            journaled += v["journaled"].as_u64().unwrap();
        }
        let journal: Vec<JournalEntry> = http
            .get(format!("{base}/_sim/journal"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(journal.len() as u64, journaled);
        assert_eq!(journal, sim.journal());

        let fault =
            r#"{"path_contains":"poll","count":1,"kind":{"type":"ServerError","status":502}}"#;
        let resp = http
            .post(format!("{base}/_sim/fault"))
            .body(fault)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let resp = http
            .get(format!("{base}/api/v1/document/poll"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 502);
        let resp = http
            .post(format!("{base}/_sim/fault"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422);

        let victim = &sim.credentials().members[0].endpoint_id;
        let resp = http
            .post(format!("{base}/_sim/revoke/{victim}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let resp = http
            .post(format!("{base}/_sim/revoke/{victim}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        assert_eq!(sim.journal().last().unwrap().event_type, "ENTITY.REVOKED");

        let counts: std::collections::BTreeMap<String, u64> = http
            .get(format!("{base}/_sim/requests"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(counts.get("GET /api/v1/document/poll"), Some(&1));
        assert!(counts.keys().all(|k| !k.contains("/_sim")), "{counts:?}");

        let resp = http
            .post(format!("{base}/_sim/expire-tokens"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        server.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_controls_also_answer_under_the_onlinepajak_base_url() {
        let sim = Simulator::new(SimConfig::default());
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let op_base = format!("{}/v2.0", server.base_url());
        let http = reqwest::Client::new();

        let creds: SimCredentials = http
            .get(format!("{op_base}/_sim/credentials"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(creds, sim.credentials());
        assert_eq!(creds.onlinepajak.len(), 2);
        let step = http
            .post(format!("{op_base}/_sim/step"))
            .send()
            .await
            .unwrap();
        assert_eq!(step.status().as_u16(), 200);

        let npwp = creds.onlinepajak[0].npwp.clone();
        let burst = |body: Value| {
            let req = http.post(format!("{op_base}/_sim/op-burst")).json(&body);
            async move {
                let resp = req.send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            }
        };
        let before = sim.journal().len();
        assert_eq!(
            burst(json!({"npwp": npwp, "n": 25})).await,
            (200, json!({"journaled": 25}))
        );
        assert_eq!(sim.journal().len(), before + 25);
        assert_eq!(
            burst(json!({"npwp": "nobody", "n": 25})).await,
            (404, json!({"journaled": 0}))
        );
        assert_eq!(burst(json!({"n": 25})).await.0, 422);
        assert!(sim.request_counts().keys().all(|k| !k.contains("_sim")));
        server.shutdown().await.unwrap();
    }
}
