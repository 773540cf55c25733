//! The command line's shape: every subcommand, option and help text (clap derive). A public
//! contract: scripts and tests rely on it. Parsing only; `cli` dispatches.

use crate::config::{Config, ConfigError};
use clap::{Args, Parser, Subcommand};
#[cfg(feature = "sim")]
use std::net::SocketAddr;
use std::path::PathBuf;
#[cfg(feature = "sim")]
use std::time::Duration;

const DEFAULT_CONFIG: &str = "/etc/pollhook/config.toml";

/// What `pollhook --help` says of exit codes (the numbers are `cli::exit`'s).
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  a run-time failure: trying again may succeed (systemd restarts the daemon)
  2  a configuration or usage error, or a secret the config names that cannot be read
  3  `probe` only: every account ready, with warnings to read
  4  the operator must act: the state store was refused (damaged, replaced, behind its
     sinks) or written by a newer pollhook, or a JSONL file belongs to another store
     (README, \"When the store is refused\"); systemd does not restart it
  128+N  a second SIGTERM (N=15) or SIGINT (N=2) made it exit at once";

/// pollhook: the webhook events of CamInvoice and OnlinePajak, synthesized by polling, for
/// ERPs that no webhook can reach.
#[derive(Parser, Debug)]
#[command(name = "pollhook", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// `--config`, declared once and flattened into every subcommand that reads the config.
#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// The configuration file.
    #[arg(long = "config", value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub path: PathBuf,
}

impl ConfigArg {
    /// Reads and validates the config file.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.path)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (logs on stderr).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One cycle for every account, deliver to every sink, exit (non-zero if an account failed).
    Once {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate the config and print a summary, secrets redacted.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Per account and member: last successful poll, cursor, documents tracked; events pending per sink.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Inspect and re-deliver events: list, replay, tail.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The state store: verify it, back it up, restore a backup, or start over on purpose.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// First contact: read-only calls to each account's provider, checked against what
    /// pollhook reads (reachability, TLS, authentication, each endpoint's answer, every field
    /// and value); a verdict per account, and the config lines to try. Never opens the store
    /// (works while the daemon runs). Exit 0 ready, 3 ready with warnings, 1 not usable, 2 a
    /// configuration error.
    Probe {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this [[accounts]] name.
        #[arg(long)]
        account: Option<String>,
        /// One JSON document on stdout instead of the report.
        #[arg(long)]
        json: bool,
    },
    /// Connect a business (member) to a CamInvoice account: print the connect URL, then
    /// exchange the authToken the business's browser was redirected with.
    Connect(ConnectArgs),
    /// Run the simulator (CamInvoice and OnlinePajak) and the daemon against it, print events
    /// as they are emitted, then a summary.
    #[cfg(feature = "sim")]
    Demo {
        /// How long the traffic runs.
        #[arg(long, default_value = "20s", value_parser = duration_arg)]
        duration: Duration,
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Benchmark the daemon against the simulator at scale (members x documents x changes x
    /// latency), beside a naive poller; prints Markdown tables (BENCHMARKS.md). Takes long:
    /// narrow it with the options.
    #[cfg(feature = "sim")]
    Bench(BenchArgs),
    /// The measured daemon of `bench` (driven over stdin; not for direct use). Its config is
    /// the one `bench` writes, so it has no default.
    #[cfg(feature = "sim")]
    #[command(hide = true)]
    BenchWorker {
        /// The config `bench` wrote.
        #[arg(long)]
        config: PathBuf,
    },
    /// The diff + commit and outbox measurements of `bench`, in a process of their own; prints
    /// their figures as JSON (not for direct use).
    #[cfg(feature = "sim")]
    #[command(hide = true)]
    BenchMicro {
        /// Documents stored before a tenth of them change.
        #[arg(long)]
        documents: usize,
        /// Seed of the document ids.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// A directory for the stores (removed afterwards).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Run the provider simulator alone (CamInvoice, and OnlinePajak under /v2.0), and print a
    /// pollhook config for it.
    #[cfg(feature = "sim")]
    Simulate {
        /// The address the simulated APIs listen on.
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: SocketAddr,
        /// Seed of the simulated world and traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Time between traffic steps.
        #[arg(long, default_value = "1s", value_parser = duration_arg)]
        step: Duration,
        /// No timed traffic: steps only through POST /_sim/step.
        #[arg(long)]
        manual: bool,
    },
}

/// `pollhook connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// The provider: `caminvoice` (the only one with a connect flow).
    pub provider: String,
    #[command(flatten)]
    pub config: ConfigArg,
    /// The [[accounts]] name.
    #[arg(long)]
    pub account: String,
    /// Print the URL the business opens to approve the connection.
    #[arg(long, conflicts_with = "auth_token")]
    pub print_url: bool,
    /// Where CamInvoice redirects the browser with `authToken` (the URL registered for
    /// your integration; nothing needs to listen there: copy the token from the address).
    #[arg(long, default_value = "http://localhost/", requires = "print_url")]
    pub redirect_url: String,
    /// Echoed back on the redirect (default: random).
    #[arg(long, requires = "print_url")]
    pub state: Option<String>,
    /// The authToken (or the whole redirected address); `-` reads it from stdin, which
    /// keeps it out of the process list.
    #[arg(long, required_unless_present = "print_url")]
    pub auth_token: Option<String>,
}

/// `pollhook bench`.
#[cfg(feature = "sim")]
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Members per scenario (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pub members: Vec<usize>,
    /// Tracked documents per scenario (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub documents: Vec<usize>,
    /// Percent of the documents changed before a cycle (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
    pub changed: Vec<f64>,
    /// Simulated API latency in milliseconds (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0,50")]
    pub latency_ms: Vec<u64>,
    /// Requests in flight per account (the account's `concurrency`).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Detail calls the naive poller makes before extrapolating its time.
    #[arg(long, default_value_t = 20_000)]
    pub naive_sample: u64,
    /// Documents of the diff + commit measurement without HTTP (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub micro_documents: usize,
    /// Seed of the simulated worlds and churn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Another pollhook binary (an earlier build) measured in the same run, scenario by
    /// scenario beside this one: its figures are printed next to this build's.
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// Instead: the daemon's peak memory under each hostile answer (RELIABILITY.md,
    /// "Memory per answer").
    #[arg(long)]
    pub hostile: bool,
    #[command(subcommand)]
    pub what: Option<BenchWhat>,
}

/// `pollhook bench <what>`: another benchmark than the default scale one.
#[cfg(feature = "sim")]
#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// Detection latency of the cron schedule against adaptive mode over the same seeded
    /// traffic (skewed, uniform, bursty), at equal requests and at a quarter of them: p50,
    /// p99, max and requests spent (BENCHMARKS.md, "Detection latency").
    Latency(LatencyArgs),
}

/// `pollhook bench latency`.
#[cfg(feature = "sim")]
#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// Members polled.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Seed of the traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hours measured.
    #[arg(long, default_value_t = 24)]
    pub hours: i64,
    /// Hours adaptive mode runs before the measured window (its estimates warm up).
    #[arg(long, default_value_t = 24)]
    pub warmup_hours: i64,
    /// The cron schedule's period, seconds (pollhook's default schedule: 300).
    #[arg(long, default_value_t = 300)]
    pub period: i64,
    /// Adaptive `min_interval`, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub min_interval: f64,
    /// Adaptive `max_interval`, seconds.
    #[arg(long, default_value_t = 3600.0)]
    pub max_interval: f64,
    /// Only the traffic shapes whose name starts with this (skewed, uniform, bursty).
    #[arg(long)]
    pub only: Option<String>,
    /// The skewed shape's Zipf exponent (larger: fewer busy members, a quieter tail).
    #[arg(long, default_value_t = 2.0)]
    pub zipf: f64,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Check every tree and cross-reference of the store, and that the JSONL sinks' files
    /// belong to it (through the daemon while it runs). Exit 0: sound; 1: problems found;
    /// 2: usage or configuration error.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a consistent, checksummed copy of the store to FILE, mode 0600 (it holds refresh
    /// tokens). While the daemon runs, it comes through its admin endpoint.
    Backup {
        /// Where to write the backup.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the store with a backup (the daemon must be stopped). Refuses a backup older
    /// than what the sinks already hold unless --force; the replaced store is kept aside.
    Restore {
        /// The backup to restore (written by `pollhook store backup`).
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        /// Restore even though sinks hold events after the backup (they are carried over).
        #[arg(long)]
        force: bool,
    },
    /// Start over on purpose: keep the store aside and create an empty one whose events
    /// continue the JSONL sinks' files (the daemon must be stopped).
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        /// Do it (without it, only says what it would do).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// The newest outbox events with their state per sink, or the dead letters (needs the
    /// daemon stopped: sled allows one process).
    List {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this sink's state.
        #[arg(long)]
        sink: Option<String>,
        /// Dead letters instead of outbox events.
        #[arg(long)]
        dead: bool,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Re-deliver events through a hook, webhook or NATS sink with their original ids (needs the
    /// daemon stopped). Acks are not moved: this is on top of normal delivery.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// The hook, webhook or NATS sink to deliver through (its `name` in the config).
        #[arg(long)]
        sink: String,
        /// Events detected at or after this RFC 3339 instant (that the sink's filter passes).
        #[arg(long, value_parser = instant_arg, group = "which")]
        since: Option<i64>,
        /// One event by id.
        #[arg(long, group = "which")]
        id: Option<String>,
        /// The sink's dead letters; those delivered are removed.
        #[arg(long, group = "which")]
        dead: bool,
    },
    /// Print events as they are committed, by following a JSONL sink's file (works while the
    /// daemon runs).
    Tail {
        #[command(flatten)]
        config: ConfigArg,
        /// The JSONL sink to follow (default: the first one).
        #[arg(long)]
        sink: Option<String>,
        /// Lines of history to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
    },
}

fn instant_arg(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{s:?} is not an RFC 3339 instant (e.g. 2026-03-07T00:00:00Z): {e}"))
}

#[cfg(feature = "sim")]
fn duration_arg(s: &str) -> Result<Duration, String> {
    crate::time::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 20s, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every option and argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version") && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "pollhook", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_help_explains_every_exit_code() {
        use crate::cli::exit;
        let help = Cli::command().render_help().to_string();
        for code in [
            0,
            exit::FAILED,
            exit::CONFIG,
            exit::WARNINGS,
            exit::ACTION_NEEDED,
        ] {
            assert!(help.contains(&format!("\n  {code}  ")), "{code}:\n{help}");
        }
        // `probe` exits by its verdict with the same numbers.
        use crate::providers::probe::Verdict;
        assert_eq!(Verdict::NotUsable.exit_code(), exit::FAILED);
        assert_eq!(Verdict::ReadyWithWarnings.exit_code(), exit::WARNINGS);
    }

    #[test]
    fn every_config_reading_subcommand_takes_config_with_its_default() {
        for args in [
            &["pollhook", "run"][..],
            &["pollhook", "events", "tail"],
            &["pollhook", "store", "backup", "f"],
            &[
                "pollhook",
                "connect",
                "caminvoice",
                "--account",
                "a",
                "--print-url",
            ],
        ] {
            let Cli { command } = Cli::try_parse_from(args).unwrap();
            let config = match command {
                Command::Run { config }
                | Command::Events {
                    command: EventsCommand::Tail { config, .. },
                }
                | Command::Store {
                    command: StoreCommand::Backup { config, .. },
                } => config,
                Command::Connect(c) => c.config,
                other => panic!("{other:?}"),
            };
            assert_eq!(config.path, PathBuf::from(DEFAULT_CONFIG), "{args:?}");
        }
        let Cli { command } =
            Cli::try_parse_from(["pollhook", "once", "--config", "/x.toml"]).unwrap();
        assert!(
            matches!(command, Command::Once { config } if config.path == std::path::Path::new("/x.toml"))
        );
    }
}
