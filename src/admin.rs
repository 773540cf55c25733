//! The admin HTTP endpoint of the running daemon (`[daemon] admin_listen`, keep it on
//! localhost): `GET /healthz`, `GET /metrics` (Prometheus text), `GET /status` (the `status`
//! report as JSON) and `POST /connect` (hand a CamInvoice authToken to the daemon; loopback
//! peers only). sled allows one process, so while the daemon runs, `pollhook status` and
//! `pollhook connect` come through here.
//!
//! The bound address is written to `<state_dir>/admin.addr` (port 0 picks a free port), which
//! is how the CLI finds the daemon; the file is removed at shutdown. This module reads the
//! engine and the store; it never changes state except through `connect::exchange`.

use crate::config::{Config, Sink};
use crate::connect::{self, Connected};
use crate::engine::Engine;
use crate::providers::UnitStatus;
use crate::store::StoreError;
use crate::time::{format_duration, format_ms, now_ms};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The file in the state dir that holds the admin endpoint's bound address.
pub const ADDR_FILE: &str = "admin.addr";
/// How long the CLI waits for the daemon's answer (a connect exchange included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `status` report: what `pollhook status` prints, and what `GET /status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub accounts: Vec<AccountReport>,
    /// The greatest committed outbox seq.
    pub last_seq: u64,
    pub sinks: Vec<SinkReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountReport {
    pub name: String,
    pub provider: String,
    pub units: Vec<UnitStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkReport {
    pub name: String,
    /// Delivered up to this seq.
    pub acked: u64,
    /// Events this sink gave up on (`pollhook events replay --dead` re-delivers them).
    #[serde(default)]
    pub dead: usize,
}

impl StatusReport {
    /// Reads every account's and sink's progress from the engine's store.
    pub fn collect(engine: &Engine, sinks: &[Sink]) -> Result<StatusReport, StoreError> {
        let store = engine.store();
        let mut accounts = Vec::new();
        for (idx, name) in engine.accounts().into_iter().enumerate() {
            let p = engine.provider(idx);
            accounts.push(AccountReport {
                name,
                provider: p.kind().to_string(),
                units: p.status(store)?,
            });
        }
        let mut out = Vec::new();
        for s in sinks {
            out.push(SinkReport {
                name: s.name.clone(),
                acked: store.acked(&s.name)?,
                dead: store.dead_letters(Some(&s.name))?.len(),
            });
        }
        Ok(StatusReport {
            accounts,
            last_seq: store.last_seq(),
            sinks: out,
        })
    }

    /// The human form, as `pollhook status` prints it.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        for a in &self.accounts {
            let _ = writeln!(o, "account {} ({})", a.name, a.provider);
            for u in &a.units {
                let _ = writeln!(o, "  member {}: {}", u.unit, u.state);
                let _ = writeln!(
                    o,
                    "    last successful poll  {}",
                    u.last_success.map(ago).unwrap_or_else(|| "never".into())
                );
                let _ = writeln!(
                    o,
                    "    cursor                {}",
                    u.cursor.map(format_ms).unwrap_or_else(|| "none yet".into())
                );
                let _ = writeln!(o, "    documents tracked     {}", u.documents);
                if let Some(e) = &u.last_error {
                    let _ = writeln!(o, "    last error            {e}");
                }
            }
        }
        let _ = writeln!(o, "outbox: last seq {}", self.last_seq);
        for s in &self.sinks {
            let _ = writeln!(
                o,
                "sink {}: delivered up to seq {}, {} pending, {} dead letter(s)",
                s.name,
                s.acked,
                self.last_seq.saturating_sub(s.acked),
                s.dead
            );
        }
        o
    }
}

fn ago(t: i64) -> String {
    let secs = ((now_ms() - t) / 1000).max(0) as u64;
    format!(
        "{} ({} ago)",
        format_ms(t),
        format_duration(Duration::from_secs(secs))
    )
}

// ------------------------------------------------------------------------- the server

#[derive(Clone)]
struct AdminState {
    engine: Arc<Engine>,
    config: Arc<Config>,
}

/// The running endpoint.
pub struct Admin {
    pub addr: SocketAddr,
    addr_file: PathBuf,
    task: JoinHandle<()>,
}

impl Admin {
    /// Binds `admin_listen`, writes the bound address to `<state_dir>/admin.addr`, and serves
    /// until `stop` turns true.
    pub async fn start(
        listen: SocketAddr,
        config: Arc<Config>,
        engine: Arc<Engine>,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<Admin> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let addr_file = engine.store().dir().join(ADDR_FILE);
        write_atomically(&addr_file, format!("{addr}\n").as_bytes())?;
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .route("/connect", post(connect_member))
            .with_state(AdminState { engine, config });
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = served {
                tracing::error!("the admin endpoint stopped: {e}");
            }
        });
        tracing::info!(%addr, "admin endpoint listening (/healthz, /metrics, /status)");
        Ok(Admin {
            addr,
            addr_file,
            task,
        })
    }

    /// Waits for the server to stop (after `stop`), then removes `admin.addr`.
    pub async fn finish(self) {
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.addr_file);
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("addr.tmp");
    crate::files::write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    let health = s.engine.metrics().health();
    let code = if health.stale.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let sinks: Vec<String> = s.config.sinks.iter().map(|k| k.name.clone()).collect();
    let text = s.engine.metrics().render(s.engine.store(), &sinks);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(State(s): State<AdminState>) -> Response {
    match StatusReport::collect(&s.engine, &s.config.sinks) {
        Ok(r) => Json(r).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The body of `POST /connect`.
#[derive(Serialize, Deserialize)]
pub struct ConnectRequest {
    pub account: String,
    pub auth_token: String,
}

async fn connect_member(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<ConnectRequest>,
) -> Response {
    if !peer.ip().is_loopback() {
        return json_error(
            StatusCode::FORBIDDEN,
            "connect is accepted from this host only",
        );
    }
    let (account, settings) = match connect::caminvoice_account(&s.config, &req.account) {
        Ok(a) => a,
        Err(e) => return json_error(StatusCode::NOT_FOUND, e.to_string()),
    };
    let token = match connect::auth_token_from(&req.auth_token) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match connect::exchange(account, settings, s.engine.store(), &token).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => json_error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

// ------------------------------------------------------------------------- the CLI's side

/// Where the running daemon's admin endpoint is: `<state_dir>/admin.addr`, else a configured
/// `admin_listen` with a fixed port.
pub fn daemon_addr(config: &Config) -> Option<SocketAddr> {
    let file = config.daemon.state_dir.join(ADDR_FILE);
    if let Ok(text) = std::fs::read_to_string(file) {
        if let Ok(addr) = text.trim().parse::<SocketAddr>() {
            return Some(addr);
        }
    }
    config.daemon.admin_listen.filter(|a| a.port() != 0)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("the HTTP client builds")
}

fn daemon_unreachable(config: &Config, what: &str) -> String {
    match daemon_addr(config) {
        Some(addr) => format!(
            "the state dir {} is held by the running daemon, and its admin endpoint at {addr} {what}",
            config.daemon.state_dir.display()
        ),
        None => format!(
            "the state dir {} is held by the running daemon (sled allows one process) and it has no admin endpoint; set [daemon] admin_listen = \"127.0.0.1:9187\" and restart it, or stop it",
            config.daemon.state_dir.display()
        ),
    }
}

/// `GET /status` from the running daemon.
pub async fn fetch_status(config: &Config) -> Result<StatusReport, String> {
    let addr = daemon_addr(config).ok_or_else(|| daemon_unreachable(config, ""))?;
    let resp = client()
        .get(format!("http://{addr}/status"))
        .send()
        .await
        .map_err(|e| daemon_unreachable(config, &format!("does not answer: {e}")))?;
    if !resp.status().is_success() {
        return Err(daemon_unreachable(
            config,
            &format!("answered HTTP {}", resp.status()),
        ));
    }
    resp.json()
        .await
        .map_err(|e| daemon_unreachable(config, &format!("sent an unreadable report: {e}")))
}

/// `POST /connect` to the running daemon: it exchanges the authToken on its own store.
pub async fn post_connect(
    config: &Config,
    account: &str,
    auth_token: &crate::config::Secret,
) -> Result<Connected, String> {
    let addr = daemon_addr(config).ok_or_else(|| daemon_unreachable(config, ""))?;
    let body = ConnectRequest {
        account: account.to_string(),
        auth_token: auth_token.expose().to_string(),
    };
    let resp = client()
        .post(format!("http://{addr}/connect"))
        .json(&body)
        .send()
        .await
        .map_err(|e| daemon_unreachable(config, &format!("does not answer: {e}")))?;
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| daemon_unreachable(config, &format!("sent an unreadable answer: {e}")))?;
    if !status.is_success() {
        let why = v["error"].as_str().unwrap_or("no reason given");
        return Err(format!("the daemon could not connect the member: {why}"));
    }
    serde_json::from_value(v).map_err(|e| format!("the daemon's answer is unreadable: {e}"))
}
