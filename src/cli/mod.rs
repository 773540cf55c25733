//! The command line: parses the subcommand ([`args`]), runs it, and is the one place that
//! prints errors and picks exit codes (0 ok, 1 a run-time failure, 2 a configuration error).
//!
//! # Layout
//! - [`args`]: the clap types (a public contract); `--config` is one flattened [`ConfigArg`];
//! - `daemon_cmd`: `run`, `once` and `status`;
//! - `check_config`: `check-config`, the config printer;
//! - `events_cmd`: `events list|replay|tail`;
//! - `connect_cmd`: `connect caminvoice`, in this process or through the running daemon;
//! - `store_cmd`: `store verify|backup|restore|reset`;
//! - `sim_cmd` (feature `sim`): `demo`, `bench`, `bench-worker`, `simulate`.

pub mod args;
mod check_config;
mod connect_cmd;
mod daemon_cmd;
mod events_cmd;
#[cfg(feature = "sim")]
mod sim_cmd;
mod store_cmd;

pub use args::{Cli, Command, ConfigArg, ConnectArgs, EventsCommand, StoreCommand};

use crate::config::{Config, ConfigError};
use crate::redact;
use crate::scheduler::DaemonError;
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
        Err(Failure::Config(e)) => {
            eprintln!("error: {}", redact::text(&e.to_string()));
            ExitCode::from(2)
        }
        Err(Failure::Setup(e)) => {
            eprintln!(
                "error: {}\nhelp: `pollhook check-config` lists every secret that cannot be read",
                redact::text(&e)
            );
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {}", redact::text(&e));
            ExitCode::from(1)
        }
    }
}

/// How a command failed: the exit code and the hint follow from it.
enum Failure {
    Config(ConfigError),
    Setup(String),
    Run(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}
impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        match e {
            // A secret that cannot be read is a configuration problem: exit 2, as check-config.
            DaemonError::Setup(why) => Failure::Setup(why),
            other => Failure::Run(other.to_string()),
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
    crate::store::Store::open(&config.daemon.state_dir).map_err(|e| match e {
        crate::store::StoreError::Locked(dir) => Failure::Run(format!(
            "the state dir {} is held by the running daemon (sled allows one process); stop it to {what}, or read its log",
            dir.display()
        )),
        other => Failure::Run(other.to_string()),
    })
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
