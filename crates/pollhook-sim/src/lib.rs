//! The provider API simulator (CamInvoice and OnlinePajak): pollhook's test oracle and demo
//! counterpart, in a crate of its own.
//!
//! This crate owns stateful, seeded fakes of the CamInvoice API (see
//! `providers/caminvoice.md`) and of the OnlinePajak API's assumed contract (see
//! `providers/onlinepajak.md`, served under `/v2.0`), and the *ground-truth journal*: every
//! webhook either provider would have POSTed for the traffic the simulator generated, one entry
//! per recipient, payload bytes exactly as documented. pollhook's tests compare the daemon's
//! output with that journal, so the journal is built here from the simulator's own state
//! changes and never from the daemon's diff code. This crate does not depend on `pollhook`
//! (the compiler keeps the oracle from sharing the daemon's code), and the daemon builds
//! without it (`cargo check --no-default-features`: only `demo`, `bench` and `simulate` use it).
//!
//! # Layout
//! - `world`: the CamInvoice state (businesses, documents, tokens), the journal, counters and
//!   queued faults; pure methods, no HTTP.
//! - `traffic`: the CamInvoice traffic generator (`step`) and the pre-run history.
//! - `caminvoice`: the axum routes of the CamInvoice API and its response variants.
//! - `op_world`: the OnlinePajak state (companies, invoices, rate-limit windows) and its
//!   `PPN_INVOICE_APPROVED` journal entries.
//! - `op_traffic`: the OnlinePajak traffic generator and history, on its own RNG.
//! - `onlinepajak`: the axum routes of the OnlinePajak API (`/v2.0/invoices/sale...`).
//! - `faults`: request counting and fault injection, one layer around every API route, and the
//!   counts of the faults that fired.
//! - `floor`: the API cost floor from what the simulator changed (documents and invoices not
//!   yet read by a poll), for grading a poller's requests by the simulator's counters alone.
//! - `drift`: contract drift — renamed fields, values in another case or language, another
//!   envelope — switchable, never touching the journal.
//! - `hostile`: a hostile provider — duplicated, reordered and phantom items, poisoned
//!   timestamps, junk bodies — switchable, never touching the journal.
//! - `scale`: bulk worlds (thousands of members, millions of documents) and churn on demand,
//!   for `pollhook bench`.
//! - `admin`: the unauthenticated `/_sim/...` control routes for out-of-process tests.
//! - [`fidelity`]: compares what a daemon emitted (its JSONL envelopes) with the journal.
//!
//! # Time
//! Document and invoice timestamps, journal instants and the OnlinePajak rate-limit window
//! come from the wall clock plus an offset that only [`Simulator::advance_clock`] moves
//! ("accelerated time": tests can play 20 one-second steps without sleeping). CamInvoice
//! access-token expiry always uses the real wall clock, because the daemon judges a JWT's `exp`
//! against its own clock.
//!
//! # Determinism
//! One seeded RNG drives the CamInvoice traffic and a second one, derived from the same seed,
//! the OnlinePajak traffic, so either side's stream is the same with or without the other;
//! tokens and ids handed out over HTTP come from counters and hashes, so requests never perturb
//! the traffic. The same seed and the same step timing give the same journal payloads, up to
//! the dates OnlinePajak payloads carry. The only time-dependent decision is the revocation
//! quiet period.

mod admin;
mod caminvoice;
mod drift;
mod faults;
pub mod fidelity;
mod floor;
mod hostile;
mod onlinepajak;
mod op_traffic;
mod op_world;
mod scale;
pub mod shapes;
mod traffic;
mod world;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use drift::Drift;
pub use faults::{Fault, FaultCounts, FaultKind};
pub use floor::Cost;
pub use hostile::Hostility;
pub use world::uuid_of;

use world::World;

/// How the simulated world is built and how the API answers. Every field has a default.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of the traffic RNG and of every id and refresh token. Default 1.
    pub seed: u64,
    /// Businesses connected to our integrator at start ("members"). Default 4.
    pub members: usize,
    /// Other businesses on the network, not connected. Default 3.
    pub outsiders: usize,
    /// Documents created before the run (1-48 h in the past), never journaled. Default 12.
    pub initial_documents: usize,
    /// The integrator's client id (HTTP Basic user). Default `sim-client`.
    pub client_id: String,
    /// The integrator's client secret (HTTP Basic password). Default `sim-secret`.
    pub client_secret: String,
    /// Lifetime of an access token. Default 900 s.
    pub token_ttl: Duration,
    /// Shape of the `POST /api/v1/auth/token` answer. Default [`TokenVariant::Documented`].
    pub token_variant: TokenVariant,
    /// Shape of the `GET /api/v1/document/poll` answer. Default [`PollVariant::BareArray`].
    pub poll_variant: PollVariant,
    /// How the zone-less `last_synced_at` is read. Default [`PollTimezone::Utc`].
    pub poll_timezone: PollTimezone,
    /// Chance, per step and per connected member, that the member starts disconnecting.
    /// Default 0.05.
    pub revoke_probability: f64,
    /// A member is revoked by the generator only once its last journal entry is at least this
    /// old, so a poller has seen everything before the revocation. Default 3 s.
    pub revoke_quiet: Duration,
    /// Most revocations the generator makes in a run. Default 1.
    pub max_revocations: usize,
    /// OnlinePajak companies, each with its own access token. Default 2 (one with an old
    /// 15-digit NPWP, one with a 16-digit NPWP).
    pub op_companies: usize,
    /// OnlinePajak invoices per company created before the run (1-48 h in the past), never
    /// journaled. Default 6.
    pub op_initial_invoices: usize,
    /// Added to every API answer (a network round trip to the real provider). Default 0.
    pub latency: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            members: 4,
            outsiders: 3,
            initial_documents: 12,
            client_id: "sim-client".to_string(),
            client_secret: "sim-secret".to_string(),
            token_ttl: Duration::from_secs(900),
            token_variant: TokenVariant::Documented,
            poll_variant: PollVariant::BareArray,
            poll_timezone: PollTimezone::Utc,
            revoke_probability: 0.05,
            revoke_quiet: Duration::from_secs(3),
            max_revocations: 1,
            op_companies: 2,
            op_initial_invoices: 6,
            latency: Duration::ZERO,
        }
    }
}

/// The four refresh-response shapes listed in `caminvoice.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenVariant {
    /// `{"token": <JWT>, "token_type": "Bearer", "expire_in": <seconds>}`.
    #[default]
    Documented,
    /// `{"data": {"access_token": <JWT>, "expire_at": "<RFC 3339>"}}` (official sample).
    DataWrapped,
    /// `{"access_token": <opaque>, "expireIn": "15m", "expire_at": .., "expired_at": ..}`.
    ThirdParty,
    /// `{"access_token": <opaque>, "expires_in": "15m"}` (a duration string).
    StringExpiry,
}

/// The two poll-response wrappers listed in `caminvoice.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollVariant {
    /// A bare JSON array of items (documented).
    #[default]
    BareArray,
    /// `{"documents": [...]}` (two clients).
    Wrapped,
}

/// How the server reads `last_synced_at` (undocumented upstream).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollTimezone {
    /// Zone-less values are UTC; an explicit `Z` or `±hh:mm` is honoured.
    #[default]
    Utc,
    /// The date-time is read as Cambodia local time (UTC+7) and any zone suffix is ignored,
    /// as a server that parses only the local fields would. A UTC cursor then widens the window.
    Cambodia,
}

/// What a daemon needs to talk to the simulator: the CamInvoice integrator's client
/// credentials, one refresh token per currently connected member, and each OnlinePajak
/// company's access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCredentials {
    /// HTTP Basic user for the `/auth` calls.
    pub client_id: String,
    /// HTTP Basic password for the `/auth` calls.
    pub client_secret: String,
    /// Connected members, in the order they were created or connected.
    pub members: Vec<SimMember>,
    /// OnlinePajak companies, in configuration order.
    #[serde(default)]
    pub onlinepajak: Vec<SimCompany>,
}

/// One OnlinePajak company and its access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimCompany {
    /// The company's NPWP, in the form it was registered with (never reformatted).
    pub npwp: String,
    /// The token `Authorization: Bearer <token>` (or the bare token) carries.
    pub token: String,
    /// The company's name.
    pub name: String,
}

/// One connected business and its refresh token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMember {
    /// The member's CamInvoice id, e.g. `KHUID00001234`.
    pub endpoint_id: String,
    /// The token `POST /api/v1/auth/token` accepts for this member.
    pub refresh_token: String,
    /// The member's English company name.
    pub company_name_en: String,
}

/// One webhook a provider would have POSTed: the ground truth pollhook is measured against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// 1-based position in the journal.
    pub seq: u64,
    /// Simulated instant of the change that caused the webhook.
    #[serde(with = "ts_millis")]
    pub at: DateTime<Utc>,
    /// The recipient: the CamInvoice member, or the OnlinePajak company's NPWP.
    pub endpoint_id: String,
    /// `DOCUMENT.DELIVERED`, `DOCUMENT.RECEIVED`, `DOCUMENT.STATUS_UPDATED`, `ENTITY.REVOKED`
    /// or `PPN_INVOICE_APPROVED`.
    pub event_type: String,
    /// The webhook body as compact JSON, keys in the documented order.
    pub payload: String,
}

/// The simulator: a cheap, cloneable handle on one shared world.
#[derive(Clone)]
pub struct Simulator {
    world: Arc<Mutex<World>>,
}

impl Simulator {
    /// Builds the world: businesses, members' refresh tokens, OnlinePajak companies and both
    /// providers' pre-run history.
    pub fn new(cfg: SimConfig) -> Self {
        let mut world = World::new(cfg);
        traffic::seed_history(&mut world);
        op_traffic::seed_history(&mut world);
        Simulator {
            world: Arc::new(Mutex::new(world)),
        }
    }

    /// Runs `f` with the world locked. Never hold the lock across an `.await`.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        let mut guard: MutexGuard<'_, World> = self
            .world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Every route: the CamInvoice and OnlinePajak APIs (counted, fault-injectable) and the
    /// `/_sim` admin routes, which also answer under `/v2.0/_sim` so that every `base_url` of
    /// [`pollhook_config`] reaches them.
    pub fn router(&self) -> axum::Router {
        caminvoice::routes(self)
            .merge(onlinepajak::routes(self))
            .merge(admin::routes(self))
            .nest(onlinepajak::PREFIX, admin::routes(self))
    }

    /// Binds `addr` (tests use `127.0.0.1:0`) and serves [`Simulator::router`] on a spawned task.
    pub async fn serve(&self, addr: SocketAddr) -> io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(SimServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The client credentials, every connected member's refresh token and every OnlinePajak
    /// company's access token.
    pub fn credentials(&self) -> SimCredentials {
        self.with(|w| w.credentials())
    }

    /// One deterministic traffic step of both providers (CamInvoice first); returns how many
    /// webhooks it journaled.
    pub fn step(&self) -> usize {
        self.with(|w| {
            let caminvoice = traffic::step(w);
            let now = w.now();
            caminvoice + op_traffic::step(w, now)
        })
    }

    /// Calls [`Simulator::step`] every `period`, first after one period, until aborted.
    pub fn spawn_traffic(&self, period: Duration) -> JoinHandle<()> {
        let sim = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + period;
            let mut ticks = tokio::time::interval_at(start, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let journaled = sim.step();
                tracing::debug!(journaled, "simulator step");
            }
        })
    }

    /// A copy of the ground-truth journal, in order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.with(|w| w.journal.clone())
    }

    /// How many webhooks the journal holds (without copying it).
    pub fn journal_len(&self) -> usize {
        self.with(|w| w.journal.len())
    }

    /// Requests received per route, keyed `"METHOD /route/{template}"`, faulted ones included.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.with(|w| w.requests.clone())
    }

    /// A poller's API cost by the simulator's counters, and its floor from what the simulator
    /// changed (see [`Cost`]). Take one before and one after, and compare with [`Cost::since`].
    pub fn cost(&self) -> Cost {
        self.with(|w| {
            let n = |key: &str| w.requests.get(key).copied().unwrap_or(0);
            Cost {
                polls: n("GET /api/v1/document/poll"),
                details: n("GET /api/v1/document/{id}"),
                details_needed: w.unread.needed,
                bulk_fetches: n("GET /v2.0/invoices/sale"),
                walks: w.op.unread.reads,
                bulk_fetches_needed: w.op.unread.needed,
                retrieves: n("GET /v2.0/invoices/sale/{id}"),
            }
        })
    }

    /// Which injected faults fired so far, and how stalled requests ended.
    pub fn fault_counts(&self) -> FaultCounts {
        self.with(|w| w.fault_counts.clone())
    }

    /// Switches the refresh-response shape from now on.
    pub fn set_token_variant(&self, v: TokenVariant) {
        self.with(|w| w.cfg.token_variant = v);
    }

    /// Sets the latency added to every API answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.with(|w| w.cfg.latency = latency);
    }

    /// When the first API request since the previous call arrived (and forgets it).
    pub fn take_first_request(&self) -> Option<std::time::Instant> {
        self.with(|w| w.first_request.take())
    }

    /// Switches the poll-response wrapper from now on.
    pub fn set_poll_variant(&self, v: PollVariant) {
        self.with(|w| w.cfg.poll_variant = v);
    }

    /// Disconnects a connected member now and journals `ENTITY.REVOKED`; `false` if
    /// `endpoint_id` is not a connected member. Unlike the generator, this may revoke the last
    /// member and ignores the quiet period.
    pub fn revoke(&self, endpoint_id: &str) -> bool {
        self.with(|w| w.revoke_endpoint(endpoint_id))
    }

    /// One new invoice from member `endpoint_id` to a business that is not a member, delivered
    /// at once (so only this member sees a change; DOCUMENT.DELIVERED is journaled); `false` if
    /// it is not an active member.
    pub fn create_for(&self, endpoint_id: &str) -> bool {
        self.with(|w| traffic::create_for(w, endpoint_id))
    }

    /// Moves one document whose supplier and customer are both connected members, already
    /// delivered and not final, to its next status now (journaled: STATUS_UPDATED for the
    /// supplier, nothing for the customer). Returns its id, or `None` if there is none.
    pub fn two_sided_change(&self) -> Option<String> {
        self.with(|w| {
            let d = (0..w.documents.len()).find(|&d| {
                let doc = &w.documents[d];
                doc.supplier != doc.customer
                    && w.is_connected(doc.supplier)
                    && w.is_connected(doc.customer)
                    && doc.status.is_delivered()
                    && !doc.status.is_final()
            })?;
            let to = traffic::successors(w.documents[d].status).first()?.0;
            let now = w.now();
            w.set_status(d, to, now, true);
            Some(w.documents[d].id.clone())
        })
    }

    /// Invalidates every access token issued so far (a mid-cycle expiry).
    pub fn expire_tokens(&self) {
        self.with(|w| w.expire_tokens());
    }

    /// Ages every access token issued so far by `by`: each expires `by` sooner than it would
    /// (a token lifetime played without waiting for it).
    pub fn age_tokens(&self, by: Duration) {
        let by = chrono::TimeDelta::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
        self.with(|w| w.age_tokens(by));
    }

    /// Queues a fault for the next matching requests.
    pub fn inject(&self, fault: Fault) {
        self.with(|w| w.inject(fault));
    }

    /// How many documents exist on the CamInvoice network (any status, any party).
    pub fn document_count(&self) -> usize {
        self.with(|w| w.documents.len())
    }

    /// How many OnlinePajak invoices exist (any status, any company).
    pub fn op_invoice_count(&self) -> usize {
        self.with(|w| w.op.invoices.len())
    }

    /// How many OnlinePajak calls the rate limiter answered with 429 (injected
    /// [`FaultKind::RateLimited`] faults not included).
    pub fn rate_limited(&self) -> u64 {
        self.with(|w| w.op.rate_limited)
    }

    /// Creates `n` OnlinePajak invoices for the company with `npwp`, each approved (about 90%)
    /// or rejected right away and journaled, with distinct, increasing `updatedAt` (later
    /// traffic is never stamped before them). Returns how many journal entries it added: `n`,
    /// or 0 for an unknown NPWP.
    pub fn op_burst(&self, npwp: &str, n: usize) -> usize {
        self.with(|w| w.op_burst(npwp, n))
    }

    /// Moves the simulated clock forward by `by` (document timestamps, journal instants and the
    /// revocation quiet period; not token expiry).
    pub fn advance_clock(&self, by: Duration) {
        self.with(|w| w.advance_clock(by));
    }
}

/// A running simulator server. Dropping it, or [`SimServer::shutdown`], stops it.
pub struct SimServer {
    /// The bound address (the real port when bound to port 0).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl SimServer {
    /// `http://IP:PORT`, the `base_url` a daemon is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server task.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves a simulator on `listen` until Ctrl-C, printing a ready-to-use pollhook config
/// snippet on stdout; steps the traffic every `step_period` if given (else only through
/// `POST /_sim/step`).
pub async fn run_standalone(
    listen: SocketAddr,
    cfg: SimConfig,
    step_period: Option<Duration>,
) -> io::Result<()> {
    let sim = Simulator::new(cfg);
    let server = sim.serve(listen).await?;
    let base = server.base_url();
    println!(
        "# pollhook config for the simulator: CamInvoice at {base}, OnlinePajak at {base}/v2.0"
    );
    println!("# simulator controls: POST {base}/_sim/step, GET {base}/_sim/journal, GET {base}/_sim/requests");
    println!(
        "{}",
        pollhook_config(
            &sim.credentials(),
            &base,
            std::path::Path::new("./pollhook-sim-state"),
            std::path::Path::new("./pollhook-sim-events.jsonl"),
            "now",
            "*/5 * * * * *",
        )
    );
    let traffic = step_period.map(|period| sim.spawn_traffic(period));
    tokio::signal::ctrl_c().await?;
    if let Some(traffic) = traffic {
        traffic.abort();
    }
    server.shutdown().await
}

/// A complete pollhook config for a daemon against this simulator: one CamInvoice account
/// with every connected member, short timeouts and fast retries; one OnlinePajak account per
/// company (`op-0`, `op-1`, ...; `base_url` ends in `/v2.0`); a JSONL sink. `simulate` prints
/// it; the demo and the tests parse it.
pub fn pollhook_config(
    creds: &SimCredentials,
    base_url: &str,
    state_dir: &std::path::Path,
    events: &std::path::Path,
    start: &str,
    schedule: &str,
) -> String {
    let mut out = format!(
        "[daemon]\nstate_dir = {}\nschedule = {}\nresync_schedule = \"off\"\nstart = {}\nlog_level = \"warn\"\n\n",
        toml_str(&state_dir.display().to_string()),
        toml_str(schedule),
        toml_str(start),
    );
    out.push_str(&format!(
        "[[accounts]]\nname = {}\nprovider = \"caminvoice\"\n",
        toml_str(CAMINVOICE_ACCOUNT)
    ));
    out.push_str(&format!("base_url = {}\n", toml_str(base_url)));
    out.push_str(&format!("client_id = {}\n", toml_str(&creds.client_id)));
    out.push_str(&format!(
        "client_secret = {}\n",
        toml_str(&creds.client_secret)
    ));
    out.push_str("timeout = \"5s\"\nretry_base = \"100ms\"\n");
    for m in &creds.members {
        out.push_str("\n[[accounts.members]]\n");
        out.push_str(&format!("endpoint_id = {}\n", toml_str(&m.endpoint_id)));
        out.push_str(&format!("refresh_token = {}\n", toml_str(&m.refresh_token)));
    }
    for (i, c) in creds.onlinepajak.iter().enumerate() {
        out.push_str(&format!(
            "\n[[accounts]]\nname = {}\nprovider = \"onlinepajak\"\n",
            toml_str(&onlinepajak_account(i))
        ));
        out.push_str(&format!(
            "base_url = {}\n",
            toml_str(&format!("{base_url}{}", onlinepajak::PREFIX))
        ));
        out.push_str(&format!("npwp = {}\n", toml_str(&c.npwp)));
        out.push_str(&format!("token = {}\n", toml_str(&c.token)));
    }
    out.push_str(&format!(
        "\n[[sinks]]\nkind = \"jsonl\"\npath = {}\n",
        toml_str(&events.display().to_string())
    ));
    out
}

/// The name [`pollhook_config`] gives the CamInvoice account.
pub const CAMINVOICE_ACCOUNT: &str = "sim-kh";

/// The name [`pollhook_config`] gives the account of OnlinePajak company `i` (config order).
pub fn onlinepajak_account(i: usize) -> String {
    format!("op-{i}")
}

/// The provider and the account (as [`pollhook_config`] names them) of the webhook `entry`:
/// what the envelope of the event a daemon so configured emits for it must say.
pub fn pollhook_recipient(creds: &SimCredentials, entry: &JournalEntry) -> (&'static str, String) {
    match creds
        .onlinepajak
        .iter()
        .position(|c| c.npwp == entry.endpoint_id)
    {
        Some(i) => ("onlinepajak", onlinepajak_account(i)),
        None => ("caminvoice", CAMINVOICE_ACCOUNT.to_string()),
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `2024-03-07T07:16:07.859Z`: the CamInvoice timestamp format (UTC, milliseconds).
pub(crate) fn fmt_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Serde for [`JournalEntry::at`] (chrono's own serde feature is not enabled).
mod ts_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_ts(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CamInvoice journal of a seed, as it was before OnlinePajak joined the simulator:
    /// (entries, sha256 of "endpoint payload" lines) after 40 back-to-back steps.
    fn caminvoice_digest(cfg: SimConfig) -> (usize, String) {
        use sha2::{Digest, Sha256};
        let sim = Simulator::new(cfg);
        for _ in 0..40 {
            sim.step();
        }
        let lines: Vec<String> = sim
            .journal()
            .into_iter()
            .filter(|e| e.event_type != "PPN_INVOICE_APPROVED")
            .map(|e| format!("{} {}", e.endpoint_id, e.payload))
            .collect();
        let digest = Sha256::digest(lines.join("\n"));
        (lines.len(), world::hex(&digest))
    }

    #[test]
    fn onlinepajak_leaves_the_caminvoice_stream_of_a_seed_as_it_was() {
        let steady = SimConfig {
            revoke_probability: 0.0,
            ..SimConfig::default()
        };
        // Recorded on the simulator before the OnlinePajak side existed.
        let golden = (
            132,
            "94391854be8aaece01c2c8f3ed99eb91b9a947954d1409e33dc2059b40a99632".to_string(),
        );
        assert_eq!(caminvoice_digest(steady.clone()), golden);
        let without = SimConfig {
            op_companies: 0,
            ..steady
        };
        assert_eq!(caminvoice_digest(without), golden);
        let revoking = SimConfig {
            seed: 7,
            revoke_probability: 1.0,
            revoke_quiet: Duration::ZERO,
            op_companies: 5,
            ..SimConfig::default()
        };
        assert_eq!(
            caminvoice_digest(revoking),
            (
                100,
                "c979c39a1179d63bd9f9821fb88fefb519b28770327c52c78ee10fbb45d66230".to_string()
            )
        );
    }

    #[test]
    fn journal_entry_round_trips_through_json() {
        let entry = JournalEntry {
            seq: 3,
            at: DateTime::parse_from_rfc3339("2024-03-07T07:16:07.859Z")
                .unwrap()
                .with_timezone(&Utc),
            endpoint_id: "KHUID00001234".into(),
            event_type: "ENTITY.REVOKED".into(),
            payload: r#"{"type":"ENTITY.REVOKED","endpoint_id":"KHUID00001234"}"#.into(),
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert!(text.contains("\"at\":\"2024-03-07T07:16:07.859Z\""));
        assert_eq!(serde_json::from_str::<JournalEntry>(&text).unwrap(), entry);
    }

    #[tokio::test]
    async fn spawned_traffic_steps_on_its_own() {
        let sim = Simulator::new(SimConfig::default());
        let before = sim.document_count();
        let traffic = sim.spawn_traffic(Duration::from_millis(20));
        // Until it has stepped a few times, however busy the machine is.
        let mut waited = 0;
        while sim.journal_len() < 3 {
            assert!(waited < 6000, "no steps in two minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
        }
        traffic.abort();
        assert!(sim.document_count() > before);
    }

    #[tokio::test]
    async fn server_stops_on_shutdown() {
        let sim = Simulator::new(SimConfig::default());
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.addr;
        server.shutdown().await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
