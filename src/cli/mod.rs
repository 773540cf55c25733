//! The command line: parses the subcommand ([`args`]), runs it, and is the one place that
//! prints errors and picks exit codes ([`exit`]: 0 ok, 1 a run-time failure, 2 a
//! configuration error, 3 `probe`'s warnings, 4 operator action needed), from the variant of
//! the typed error a command met (`Failure`).
//!
//! # Layout
//! - [`args`]: the clap types (a public contract); `--config` is one flattened [`ConfigArg`];
//! - `daemon_cmd`: `run`, `once` and `status`;
//! - `check_config`: `check-config`, the config printer;
//! - `events_cmd`: `events list|replay|tail`;
//! - `connect_cmd`: `connect caminvoice`, in this process or through the running daemon;
//! - `probe_cmd`: `probe`, first contact with each account's provider (read-only);
//! - `store_cmd`: `store verify|backup|restore|reset`;
//! - `sim_cmd` (feature `sim`): `demo`, `bench`, `bench-worker`, `simulate`.

pub mod args;
mod check_config;
mod connect_cmd;
mod daemon_cmd;
mod events_cmd;
mod probe_cmd;
#[cfg(feature = "sim")]
mod sim_cmd;
mod store_cmd;

pub use args::{Cli, Command, ConfigArg, ConnectArgs, EventsCommand, StoreCommand};

use crate::config::{Config, ConfigError};
use crate::providers::caminvoice::connect::ConnectError;
use crate::redact;
use crate::scheduler::DaemonError;
use crate::sinks::jsonl::PositionError;
use crate::store::StoreError;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Whatever pollhook creates (the store, its snapshots, JSONL files, admin.addr) is private.
    crate::files::restrict_umask();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let outcome = runtime.block_on(dispatch(cli.command));
    // A task still blocked (a DNS lookup of an abandoned request) must not hold up the exit:
    // everything that matters was committed and flushed before `dispatch` returned.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", redact::text(&failure.to_string()));
            if let Some(hint) = failure.hint() {
                eprintln!("help: {hint}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Exit codes, one per kind of failure: README ("Commands") and `pollhook --help` list them,
/// and the systemd unit restarts the daemon only after [`FAILED`](exit::FAILED).
pub mod exit {
    /// A run-time failure: trying again may succeed (a provider, a disk, a port).
    pub const FAILED: u8 = 1;
    /// A configuration or usage error, or a secret the config names that cannot be read:
    /// fix the config.
    pub const CONFIG: u8 = 2;
    /// `probe` only: every account usable, with warnings to read
    /// (`providers::probe::Verdict::ReadyWithWarnings`).
    pub const WARNINGS: u8 = 3;
    /// The operator must act before pollhook can run: the state store was refused (damaged,
    /// replaced, behind its sinks), was written by a newer pollhook, or a JSONL file belongs
    /// to another store. Restarting cannot fix it.
    pub const ACTION_NEEDED: u8 = 4;
}

/// How a command failed: the exit code and the hint follow from the variant. Typed errors
/// become one of these in the `From` impls below, which are the one place that classifies
/// them; each error's text already carries its causes, so it is printed once, as it is.
#[derive(Debug)]
enum Failure {
    /// The config file is invalid (exit 2; the error names file:line:column and the fix).
    Config(ConfigError),
    /// A secret or a file the config names cannot be read or used (exit 2).
    Secret(String),
    /// A command line that names something the config does not have (exit 2).
    Usage(String),
    /// Operator action needed (exit 4): the text says what to do.
    ActionNeeded(String),
    /// Anything else at run time (exit 1).
    Run(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) | Failure::Secret(_) | Failure::Usage(_) => exit::CONFIG,
            Failure::ActionNeeded(_) => exit::ACTION_NEEDED,
            Failure::Run(_) => exit::FAILED,
        }
    }

    /// A line on what to do next, when the error text does not say it already.
    fn hint(&self) -> Option<&'static str> {
        match self {
            Failure::Secret(_) => {
                Some("`pollhook check-config` lists every secret and sink file that cannot be read")
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Secret(e) | Failure::Usage(e) | Failure::ActionNeeded(e) | Failure::Run(e) => {
                f.write_str(e)
            }
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused { .. }
            | StoreError::Newer { .. }
            | StoreError::Legacy { .. }
            | StoreError::NoRoom { .. } => Failure::ActionNeeded(e.to_string()),
            other => Failure::Run(other.to_string()),
        }
    }
}

impl From<crate::providers::BuildError> for Failure {
    fn from(e: crate::providers::BuildError) -> Self {
        match e {
            crate::providers::BuildError::Secret { .. } => Failure::Secret(e.to_string()),
        }
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Secret(e) => Failure::Secret(e.to_string()),
            ConnectError::Store(e) => e.into(),
            other => Failure::Run(other.to_string()),
        }
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        match e {
            DaemonError::Store(e) => e.into(),
            DaemonError::Positions(e @ PositionError::Foreign(_)) => {
                Failure::ActionNeeded(e.to_string())
            }
            // A secret that cannot be read is a configuration problem: exit 2, as check-config.
            DaemonError::Provider(e) => e.into(),
            DaemonError::Sink(e) if e.is_config() => Failure::Secret(e.to_string()),
            e @ (DaemonError::Positions(_)
            | DaemonError::Sink(_)
            | DaemonError::Admin(_)
            | DaemonError::Scheduler { .. }) => Failure::Run(e.to_string()),
        }
    }
}

/// Runs one subcommand.
async fn dispatch(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Run { config } => daemon_cmd::run(config.load()?).await,
        Command::Once { config } => daemon_cmd::once(config.load()?).await,
        Command::CheckConfig { config } => check_config::run(&config.load()?),
        Command::Status { config } => daemon_cmd::status(&config.load()?).await,
        Command::Connect(args) => connect_cmd::run(args).await,
        Command::Probe {
            config,
            account,
            json,
        } => probe_cmd::run(&config.load()?, account.as_deref(), json).await,
        Command::Events { command } => events_cmd::run(command).await,
        Command::Store { command } => {
            init_logging("warn");
            store_cmd::run(command).await
        }
        #[cfg(feature = "sim")]
        Command::Demo { duration, seed } => sim_cmd::demo(duration, seed).await,
        #[cfg(feature = "sim")]
        Command::Bench(args) => sim_cmd::bench(args).await,
        #[cfg(feature = "sim")]
        Command::BenchWorker { config } => sim_cmd::bench_worker(&config).await,
        #[cfg(feature = "sim")]
        Command::BenchMicro {
            documents,
            seed,
            dir,
        } => sim_cmd::bench_micro(documents, seed, &dir).await,
        #[cfg(feature = "sim")]
        Command::Simulate {
            listen,
            seed,
            step,
            manual,
        } => sim_cmd::simulate(listen, seed, (!manual).then_some(step)).await,
    }
}

/// Text logs on stderr at `level`, for the commands that are not the daemon.
fn init_logging(level: &str) {
    crate::logging::init(crate::config::LogFormat::Text, level);
}

/// The config's warnings, as `check-config` prints them, in the log of `run` and `once`.
fn log_warnings(config: &Config) {
    for w in &config.warnings {
        tracing::warn!("{}", w.one_line());
    }
    for w in config.file_warnings() {
        tracing::warn!("{w}");
    }
}

/// Opens the store for a command that needs the daemon stopped.
fn open_stopped(config: &Config, what: &str) -> Result<crate::store::Store, Failure> {
    crate::store::Store::open(&config.daemon.state_dir).map_err(|e| stopped_err(e, what))
}

/// A store error of a command that needs the daemon stopped: the locked case says so.
fn stopped_err(e: StoreError, what: &str) -> Failure {
    match e {
        StoreError::Locked(dir) => Failure::Run(format!(
            "the state dir {} is held by the running daemon (sled allows one process); stop it first (systemctl stop pollhook) to {what}",
            dir.display()
        )),
        other => other.into(),
    }
}

fn run_err(e: impl std::fmt::Display) -> Failure {
    Failure::Run(e.to_string())
}

fn find_sink<'c>(config: &'c Config, name: &str) -> Result<&'c crate::config::Sink, Failure> {
    config.sinks.iter().find(|s| s.name == name).ok_or_else(|| {
        Failure::Run(format!(
            "no sink named {name:?} in {}; configured: {}",
            config.file.display(),
            config
                .sinks
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}
