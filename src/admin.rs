//! The admin HTTP endpoint of the running daemon (`[daemon] admin_listen`, keep it on
//! localhost): `GET /healthz`, `GET /metrics` (Prometheus text), `GET /status` (the `status`
//! report as JSON) and `POST /connect` (hand a CamInvoice authToken to the daemon; loopback
//! peers only). sled allows one process, so while the daemon runs, `pollhook status` and
//! `pollhook connect` come through here.
//!
//! The bound address is written to `<state_dir>/admin.addr` (port 0 picks a free port), which
//! is how the CLI finds the daemon; the file is removed at shutdown. This module reads the
//! engine and the store; it never changes state except through CamInvoice's
//! `connect::exchange`.

use crate::config::{Config, Sink};
use crate::engine::Engine;
use crate::metrics::Outbox;
use crate::providers::caminvoice::connect::{self, Connected};
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The file in the state dir that holds the admin endpoint's bound address.
pub const ADDR_FILE: &str = "admin.addr";
/// The file in the state dir that holds the key `/store/*` requests must present.
pub const KEY_FILE: &str = "admin.key";
/// How long the CLI waits for a backup from the daemon (it streams the whole store).
const BACKUP_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long the CLI waits for the daemon's answer (a connect exchange included).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `status` report: what `pollhook status` prints, and what `GET /status` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// `K/N` when this daemon is one shard of a fleet (it lists only the members it owns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
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
                units: p.status(store, engine.shard())?,
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
        let shard = engine.shard();
        Ok(StatusReport {
            shard: shard.is_sharded().then(|| shard.to_string()),
            accounts,
            last_seq: store.last_seq(),
            sinks: out,
        })
    }

    /// The human form, as `pollhook status` prints it.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        if let Some(shard) = &self.shard {
            let _ = writeln!(
                o,
                "shard {shard}: this daemon polls only the members listed (a stable hash of account and member assigns each to one shard)"
            );
        }
        for a in &self.accounts {
            let _ = writeln!(o, "account {} ({})", a.name, a.provider);
            if a.units.is_empty() && self.shard.is_some() {
                let _ = writeln!(o, "  no member of this account belongs to this shard");
            }
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
                for w in &u.warnings {
                    let _ = writeln!(o, "    warning               {w}");
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
    /// What `/store/*` requests must present (the content of `admin.key`).
    key: Arc<String>,
}

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `admin_listen` cannot be bound (in use, not an address of this host, a privileged
    /// port).
    #[error("admin_listen {listen}: cannot listen there: {source}; free the port or pick another (port 0 picks a free one)")]
    Bind {
        listen: SocketAddr,
        source: std::io::Error,
    },
    /// `admin.addr` or `admin.key` cannot be written to the state dir.
    #[error("cannot write {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The running endpoint.
pub struct Admin {
    pub addr: SocketAddr,
    addr_file: PathBuf,
    key_file: PathBuf,
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
    ) -> Result<Admin, StartError> {
        let bind = |source| StartError::Bind { listen, source };
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        let addr_file = engine.store().dir().join(ADDR_FILE);
        let key_file = engine.store().dir().join(KEY_FILE);
        let key = crate::store::identity::new_id();
        for (path, text) in [
            (&key_file, format!("{key}\n")),
            (&addr_file, format!("{addr}\n")),
        ] {
            crate::files::write_atomically(path, text.as_bytes()).map_err(|source| {
                StartError::File {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .route("/connect", post(connect_member))
            .route("/store/backup", get(store_backup))
            .route("/store/verify", get(store_verify))
            .with_state(AdminState {
                engine,
                config,
                key: Arc::new(key),
            });
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
            key_file,
            task,
        })
    }

    /// Waits for the server to stop (after `stop`), then removes `admin.addr` and `admin.key`.
    pub async fn finish(self) {
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.addr_file);
        let _ = std::fs::remove_file(&self.key_file);
    }
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
    let store = s.engine.store();
    let outbox = Outbox {
        last_seq: store.last_seq(),
        acked: s
            .config
            .sinks
            .iter()
            .filter_map(|k| Some((k.name.clone(), store.acked(&k.name).ok()?)))
            .collect(),
    };
    let text = s.engine.metrics().render(&outbox);
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
    if let Err(e) = connect::check_account(&s.config, &req.account) {
        return json_error(StatusCode::NOT_FOUND, e.to_string());
    }
    let token = match connect::auth_token_from(&req.auth_token) {
        Ok(t) => t,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match connect::exchange(&s.config, &req.account, s.engine.store(), &token).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => json_error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Extracted by `/store/*` handlers: the request comes from this host, with the state dir's key
/// (rejected with 403 / 401 otherwise).
struct StoreAccess;

impl axum::extract::FromRequestParts<AdminState> for StoreAccess {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AdminState,
    ) -> Result<Self, Self::Rejection> {
        let local = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
        if !local {
            return Err(json_error(
                StatusCode::FORBIDDEN,
                "the store is accessible from this host only",
            ));
        }
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared in constant time.
        let expected = s.key.as_bytes();
        let same = given.len() == expected.len()
            && given
                .bytes()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(StoreAccess)
        } else {
            Err(json_error(
                StatusCode::UNAUTHORIZED,
                format!("present the key in <state_dir>/{KEY_FILE} (only who can read the state dir may copy the store)"),
            ))
        }
    }
}

/// Streams a backup of the store taken under the commit lock (through an unlinked temp file
/// in the state dir, so nothing is left behind whatever happens).
async fn store_backup(_: StoreAccess, State(s): State<AdminState>) -> Response {
    let store = s.engine.store();
    let tmp = crate::files::temp_beside(&store.dir().join("backup"));
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
    };
    let file = match file {
        Ok(f) => {
            let _ = std::fs::remove_file(&tmp);
            f
        }
        Err(e) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot create a temp file in the state dir: {e}"),
            )
        }
    };
    let (mut file, summary) = match store.backup(file).await {
        Ok(done) => done,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    use std::io::Seek;
    if let Err(e) = file.seek(std::io::SeekFrom::Start(0)) {
        return json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    tracing::info!(
        bytes = summary.bytes,
        entries = summary.entries,
        last_seq = summary.header.last_seq,
        "store backup taken through the admin endpoint"
    );
    let chunks =
        futures_util::stream::unfold(Some(tokio::fs::File::from_std(file)), |f| async move {
            use tokio::io::AsyncReadExt;
            let mut f = f?;
            let mut buf = vec![0u8; 256 * 1024];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(buf), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        });
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response()
}

/// The verify report, taken under the commit lock; sinks' files checked against the store.
async fn store_verify(_: StoreAccess, State(s): State<AdminState>) -> Response {
    let check = crate::providers::record_check(&s.config.accounts);
    match s.engine.store().verify(None, check).await {
        Ok(mut report) => {
            if let Err(why) = crate::sinks::check_positions(s.engine.store(), &s.config.sinks) {
                report.add_problem(why.to_string());
            }
            Json(report).into_response()
        }
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
    crate::http::client(CLIENT_TIMEOUT)
        .build()
        .expect("the HTTP client builds (rustls, no custom roots)")
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
    let request = client().post(format!("http://{addr}/connect")).json(&body);
    json_answer(config, request, "connect the member").await
}

/// Sends `request` to the daemon and reads its JSON answer, or the `error` it gave for
/// failing to `what`.
async fn json_answer<T: serde::de::DeserializeOwned>(
    config: &Config,
    request: reqwest::RequestBuilder,
    what: &str,
) -> Result<T, String> {
    let resp = request
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
        return Err(format!("the daemon could not {what}: {why}"));
    }
    serde_json::from_value(v).map_err(|e| format!("the daemon's answer is unreadable: {e}"))
}

/// The key `/store/*` wants, read from the state dir.
fn store_key(config: &Config) -> Result<String, String> {
    let path = config.daemon.state_dir.join(KEY_FILE);
    std::fs::read_to_string(&path)
        .map(|k| k.trim().to_string())
        .map_err(|e| {
            format!(
                "the daemon holds the state dir, and its key {} cannot be read ({e}): run this as the daemon's user or root",
                path.display()
            )
        })
}

/// `GET /store/backup` from the running daemon, streamed into `file` (fsync'd). The caller
/// checks what it got.
pub async fn fetch_backup(
    config: &Config,
    mut file: std::fs::File,
) -> Result<std::fs::File, String> {
    use std::io::Write;
    let addr = daemon_addr(config).ok_or_else(|| daemon_unreachable(config, ""))?;
    let key = store_key(config)?;
    let client = crate::http::client(BACKUP_TIMEOUT)
        .build()
        .expect("the HTTP client builds (rustls, no custom roots)");
    let mut resp = client
        .get(format!("http://{addr}/store/backup"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| daemon_unreachable(config, &format!("does not answer: {e}")))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let why = resp
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        return Err(format!(
            "the daemon could not take a backup: HTTP {status} {why}"
        ));
    }
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("the backup from the daemon broke off: {e}"))?
    {
        file.write_all(&chunk)
            .map_err(|e| format!("writing the backup: {e}"))?;
    }
    file.sync_all()
        .map_err(|e| format!("writing the backup: {e}"))?;
    Ok(file)
}

/// `GET /store/verify` from the running daemon.
pub async fn fetch_verify(config: &Config) -> Result<crate::store::verify::Report, String> {
    let addr = daemon_addr(config).ok_or_else(|| daemon_unreachable(config, ""))?;
    let key = store_key(config)?;
    let request = client()
        .get(format!("http://{addr}/store/verify"))
        .bearer_auth(key);
    json_answer(config, request, "verify the store").await
}
