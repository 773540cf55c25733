//! pollhook turns e-invoicing providers that only push webhooks into a local event stream for
//! ERPs behind NAT: it polls the provider's APIs on a cron schedule, diffs what it sees against
//! an embedded sled store, and emits the very webhook payloads the provider would have sent —
//! to a JSON Lines log, a hook program, a signed local webhook or a NATS JetStream stream — at
//! least once, with deterministic event ids.
//!
//! # Layout
//! Bottom up, by layer (ARCHITECTURE.md, "Layers"; `tests/layers.rs` keeps imports going down):
//! - foundations: [`time`] (durations, timestamps, the skew allowance that quarantines
//!   timestamps from the future), [`redact`] (every secret held, masked out of logs, prints and
//!   stored error text), [`files`] (umask 077, state dir 0700, files 0600), [`shutdown`] (the
//!   stop flag HTTP attempts and hooks listen to), [`shard`] (which members this daemon of a
//!   fleet polls, `shard = "K/N"`), [`notify`] (sd_notify READY/STOPPING, the watchdog),
//!   [`memory`] (glibc's arena limit and trim), [`backoff`] (the one backoff policy), [`locks`]
//!   (the one poisoned-lock policy);
//! - values: [`event`] (the envelope, deterministic ids), [`pacing`] (the GCRA limiter that
//!   keeps an account under its provider's rate limit), [`adaptive`] (adaptive polling under
//!   a request budget: rate estimates, the allocation, the planner loop; pure);
//! - [`config`]: the TOML schema, validation with file:line:column errors, secret references;
//! - adapters: [`store`] (the only module that touches sled: state, cursors, outbox, acks in
//!   one transaction per commit; attempts, dead letters, pruning; identity, `verify`, backups),
//!   [`http`] (timeouts, retries with backoff and jitter, Retry-After, a body cap per
//!   request), [`logging`] (text, JSON or journald);
//! - [`metrics`]: counters, and the health and progress rules;
//! - domain: [`providers`] (the `Provider` trait; [`providers::caminvoice`] and
//!   [`providers::onlinepajak`]: client, model, pure diff; CamInvoice's member state machine
//!   and connect flow; [`providers::wire`]: answers read through shapes, never as a whole
//!   tree) and [`sinks`] (the dispatchers — batch, and the per-event queue with retries, dead
//!   letters and ordering — the JSONL, hook, webhook and NATS JetStream sinks, replay, and
//!   `events tail`);
//! - [`engine`]: one cycle of one account, never two at once; totals;
//! - [`admin`]: the `/healthz`, `/metrics`, `/status`, `/connect` endpoint;
//! - [`scheduler`]: the daemon on tokio-cron-scheduler, its service side, the shutdown
//!   timeline;
//! - with the `sim` feature: `demo` (the simulator, `crates/pollhook-sim`, with the daemon)
//!   and `bench` (`pollhook bench`);
//! - [`cli`]: the subcommands; sorts the typed errors into exit codes and hints, and prints
//!   them once. `main.rs` only calls it.
//!
//! ARCHITECTURE.md is the map: data flow, invariants, and why things are where they are.

pub mod adaptive;
pub mod admin;
pub mod backoff;
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
pub mod locks;
pub mod logging;
pub mod memory;
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
