//! pollhook turns e-invoicing providers that only push webhooks into a local event stream for
//! ERPs behind NAT: it polls the provider's APIs on a cron schedule, diffs what it sees against
//! an embedded sled store, and emits the very webhook payloads the provider would have sent —
//! to a JSON Lines log, a hook program, or a signed local webhook — at least once, with
//! deterministic event ids.
//!
//! # Layout
//! - [`cli`]: the subcommands; prints errors and picks exit codes. `main.rs` only calls it.
//! - [`config`]: the TOML schema, validation with file:line:column errors, secret references.
//! - [`scheduler`]: the daemon loop on tokio-cron-scheduler; the shutdown timeline;
//!   [`shutdown`]: the stop flag HTTP attempts and hooks listen to.
//! - [`engine`]: one cycle of one account, never two at once; totals.
//! - [`providers`]: the `Provider` trait; [`providers::caminvoice`] and
//!   [`providers::onlinepajak`] (client, model, pure diff); [`providers::wire`]: answers read
//!   through shapes, never as a whole tree. [`shard`]: which members this daemon of a fleet
//!   polls (`shard = "K/N"`).
//! - [`http`]: timeouts, retries with backoff and jitter, Retry-After, a body cap per request;
//!   [`pacing`]: the GCRA limiter that keeps an account under its provider's rate limit.
//! - [`store`]: the only module that touches sled: state, cursors, outbox, acks, in one
//!   transaction per commit; attempt counts, dead letters, retention pruning; the store's
//!   identity, `verify`, backups and restores.
//! - [`event`]: the envelope and deterministic ids.
//! - [`sinks`]: the dispatchers (batch, and the per-event queue with retries, dead letters and
//!   ordering), the JSONL, hook, webhook and NATS JetStream sinks, replay, and `events tail`.
//! - [`sim`]: the provider simulator (with hostile variants) and its ground-truth journal;
//!   [`demo`] runs it with the daemon;
//!   [`fidelity`] compares what was emitted with that journal.
//! - [`time`]: durations and timestamps; the skew allowance that quarantines timestamps from
//!   the future. [`files`]: private file modes (umask 077, state dir 0700, files 0600).
//! - [`redact`]: the registry of every secret held, masked out of logs, prints and stored
//!   error text.
//! - The service side: [`notify`] (sd_notify READY/STOPPING, the watchdog), [`admin`] (the
//!   `/healthz`, `/metrics`, `/status`, `/connect` endpoint), [`metrics`] (counters, and the
//!   health and progress rules), [`connect`] (onboarding a CamInvoice member), [`logging`]
//!   (text, JSON or journald).
//!
//! ARCHITECTURE.md is the map: data flow, invariants, and why things are where they are.

pub mod admin;
#[cfg(feature = "sim")]
pub mod bench;
pub mod cli;
pub mod config;
#[cfg(feature = "sim")]
pub mod demo;
pub mod engine;
pub mod event;
pub mod files;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pacing;
pub mod providers;
pub mod redact;
pub mod scheduler;
pub mod shard;
pub mod shutdown;
pub mod sinks;
pub mod store;
pub mod time;
