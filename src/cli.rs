//! The command line: the subcommands, and the one place that prints errors and picks exit
//! codes (0 ok, 1 a run-time failure, 2 a configuration error).

use crate::admin::{self, StatusReport};
use crate::config::{Config, ConfigError, DeliveryOrder, ProviderSettings, SinkKind, Start};
use crate::engine::Tick;
use crate::redact;
use crate::scheduler::{self, DaemonError};
use crate::sinks;
use crate::time::{format_duration, format_ms, parse_duration};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod store_cmd;

const DEFAULT_CONFIG: &str = "/etc/pollhook/config.toml";

/// pollhook: the webhook events of CamInvoice, synthesized by polling, for ERPs that no
/// webhook can reach.
#[derive(Parser, Debug)]
#[command(name = "pollhook", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon in the foreground (logs on stderr).
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// One cycle for every account, deliver to every sink, exit (non-zero if an account failed).
    Once {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate the config and print a summary, secrets redacted.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Per account and member: last successful poll, cursor, documents tracked; events pending per sink.
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
    /// Connect a business (member) to a CamInvoice account: print the connect URL, then
    /// exchange the authToken the business's browser was redirected with.
    Connect {
        /// The provider: `caminvoice` (the only one with a connect flow).
        provider: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The [[accounts]] name.
        #[arg(long)]
        account: String,
        /// Print the URL the business opens to approve the connection.
        #[arg(long, conflicts_with = "auth_token")]
        print_url: bool,
        /// Where CamInvoice redirects the browser with `authToken` (the URL registered for
        /// your integration; nothing needs to listen there: copy the token from the address).
        #[arg(long, default_value = "http://localhost/", requires = "print_url")]
        redirect_url: String,
        /// Echoed back on the redirect (default: random).
        #[arg(long, requires = "print_url")]
        state: Option<String>,
        /// The authToken (or the whole redirected address); `-` reads it from stdin, which
        /// keeps it out of the process list.
        #[arg(long, required_unless_present = "print_url")]
        auth_token: Option<String>,
    },
    #[cfg(feature = "sim")]
    /// Run the simulator and the daemon against it, print events as they are emitted, then a summary.
    Demo {
        /// How long the traffic runs.
        #[arg(long, default_value = "20s", value_parser = duration_arg)]
        duration: Duration,
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    #[cfg(feature = "sim")]
    /// Benchmark the daemon against the simulator at scale (members x documents x changes x
    /// latency), beside a naive poller; prints Markdown tables (BENCHMARKS.md). Takes long:
    /// narrow it with the options.
    Bench {
        /// Members per scenario (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
        members: Vec<usize>,
        /// Tracked documents per scenario (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        documents: Vec<usize>,
        /// Percent of the documents changed before a cycle (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0,1,10")]
        changed: Vec<f64>,
        /// Simulated API latency in milliseconds (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "0,50")]
        latency_ms: Vec<u64>,
        /// Requests in flight per account (the account's `concurrency`).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Detail calls the naive poller makes before extrapolating its time.
        #[arg(long, default_value_t = 20_000)]
        naive_sample: u64,
        /// Documents of the diff + commit measurement without HTTP (0 skips it).
        #[arg(long, default_value_t = 1_000_000)]
        micro_documents: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Instead: the daemon's peak memory under each hostile answer (RELIABILITY.md,
        /// "Memory per answer").
        #[arg(long)]
        hostile: bool,
    },
    #[cfg(feature = "sim")]
    /// The measured daemon of `bench` (driven over stdin; not for direct use).
    #[command(hide = true)]
    BenchWorker {
        #[arg(long)]
        config: PathBuf,
    },
    #[cfg(feature = "sim")]
    /// Run the CamInvoice simulator alone.
    Simulate {
        #[arg(long, default_value = "127.0.0.1:8700")]
        listen: SocketAddr,
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

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Check every tree and cross-reference of the store, and that the JSONL sinks' files
    /// belong to it (through the daemon while it runs). Exit 0: sound; 1: problems found;
    /// 2: usage or configuration error.
    Verify {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write a consistent, checksummed copy of the store to FILE, mode 0600 (it holds refresh
    /// tokens). While the daemon runs, it comes through its admin endpoint.
    Backup {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Replace the store with a backup (the daemon must be stopped). Refuses a backup older
    /// than what the sinks already hold unless --force; the replaced store is kept aside.
    Restore {
        file: PathBuf,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Restore even though sinks hold events after the backup (they are carried over).
        #[arg(long)]
        force: bool,
    },
    /// Start over on purpose: keep the store aside and create an empty one whose events
    /// continue the JSONL sinks' files (the daemon must be stopped).
    Reset {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
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

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 20s, 2m)"))
}

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

fn init_logging(level: &str) {
    crate::logging::init(crate::config::LogFormat::Text, level);
}

async fn dispatch(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
            log_warnings(&config);
            scheduler::run(config, scheduler::signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config } => {
            let config = Config::load(&config)?;
            crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
            log_warnings(&config);
            once(config).await
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            check_config(&config)
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            status(&config).await.map(|_| ExitCode::SUCCESS)
        }
        Command::Connect {
            provider,
            config,
            account,
            print_url,
            redirect_url,
            state,
            auth_token,
        } => {
            let config = Config::load(&config)?;
            if provider != "caminvoice" {
                return Err(Failure::Run(format!(
                    "no connect flow for provider {provider:?}: only caminvoice has one"
                )));
            }
            init_logging("warn");
            connect(
                &config,
                &account,
                print_url,
                &redirect_url,
                state,
                auth_token,
            )
            .await
        }
        Command::Events { command } => events(command).await,
        Command::Store { command } => {
            init_logging("warn");
            store_cmd::run(command).await
        }
        #[cfg(feature = "sim")]
        Command::Demo { duration, seed } => {
            init_logging("warn");
            crate::demo::run(duration, seed)
                .await
                .map_err(Failure::Run)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Bench {
            members,
            documents,
            changed,
            latency_ms,
            concurrency,
            naive_sample,
            micro_documents,
            seed,
            out,
            hostile,
        } => {
            init_logging("warn");
            let report = if hostile {
                crate::bench::hostile::run(&std::env::temp_dir(), seed).await
            } else {
                crate::bench::run(&crate::bench::Options {
                    members,
                    documents,
                    changed_percent: changed,
                    latency: latency_ms.into_iter().map(Duration::from_millis).collect(),
                    concurrency,
                    naive_sample,
                    micro_documents,
                    seed,
                    work_dir: std::env::temp_dir(),
                })
                .await
            }
            .map_err(Failure::Run)?;
            println!("{report}");
            if let Some(path) = out {
                std::fs::write(&path, &report)
                    .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::BenchWorker { config } => {
            let config = Config::load(&config)?;
            crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
            crate::bench::worker::serve(config)
                .await
                .map_err(Failure::Run)?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Command::Simulate {
            listen,
            seed,
            step,
            manual,
        } => {
            init_logging("info");
            let cfg = pollhook_sim::SimConfig {
                seed,
                ..pollhook_sim::SimConfig::default()
            };
            pollhook_sim::run_standalone(listen, cfg, (!manual).then_some(step))
                .await
                .map_err(|e| Failure::Run(format!("simulator on {listen}: {e}")))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn once(config: Config) -> Result<ExitCode, Failure> {
    let engine = scheduler::open(&config)?;
    let mut failed = false;
    for (account, tick) in engine.cycle_all().await {
        match tick {
            Tick::Ran(r) => {
                let requests: u64 = r.requests.values().sum();
                eprintln!("{account}: {} member(s) polled, {} document(s) changed, {} event(s), {requests} request(s)", r.units, r.changed, r.events);
                for f in &r.failures {
                    eprintln!("{account}: FAILED {f}");
                }
                failed |= !r.ok();
            }
            Tick::Skipped => unreachable!("nothing else runs cycles in `once`"),
        }
    }
    for s in &config.sinks {
        let mut sink = match sinks::build(s) {
            Ok(sink) => sink,
            Err(e) => {
                eprintln!("sink {}: FAILED {e}", s.name);
                failed = true;
                continue;
            }
        };
        match sinks::drain(engine.store(), &mut sink).await {
            Ok(n) => eprintln!("sink {}: {n} event(s) delivered", s.name),
            Err(e) => {
                eprintln!("sink {}: FAILED {e}", s.name);
                failed = true;
            }
        }
    }
    scheduler::prune(engine.store(), &config).await;
    engine
        .store()
        .flush()
        .await
        .map_err(|e| Failure::Run(e.to_string()))?;
    if failed {
        eprintln!("error: some accounts or sinks failed (see above); what was fetched before a failure is committed and kept");
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

fn check_config(config: &Config) -> Result<ExitCode, Failure> {
    let d = &config.daemon;
    println!("config {}: valid", config.file.display());
    println!("[daemon]");
    println!("  state_dir        {}", d.state_dir.display());
    let next = d
        .schedule
        .next_after(chrono::Utc::now())
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| "never".into());
    println!("  schedule         {}   (UTC; next {next})", d.schedule.0);
    match &d.resync_schedule {
        Some(s) => println!("  resync_schedule  {}", s.0),
        None => println!("  resync_schedule  off"),
    }
    match d.start {
        Start::Now => println!(
            "  start            now (a silent baseline is taken at each member's first cycle)"
        ),
        Start::At(t) => println!(
            "  start            {} (changes from then on are back-filled)",
            format_ms(t)
        ),
    }
    println!("  retention        {}", format_duration(d.retention));
    if d.shard.is_sharded() {
        println!(
            "  shard            {} (polls only the members a stable hash of account and member assigns to it)",
            d.shard
        );
    }
    println!("  log_format       {}", d.log_format.as_str());
    match d.admin_listen {
        Some(a) => println!(
            "  admin_listen     {a} (/healthz stale after {} scheduled runs without success)",
            d.healthz_periods
        ),
        None => println!("  admin_listen     off"),
    }
    for a in &config.accounts {
        println!("[[accounts]] {} ({})", a.name, a.provider.kind());
        match &a.provider {
            ProviderSettings::CamInvoice(c) => {
                println!("  base_url         {}", c.base_url);
                println!("  client_id        {}", c.client_id);
                println!("  client_secret    {}", c.client_secret.source.describe());
                println!("  overlap          {}", format_duration(c.overlap));
                if c.members.is_empty() {
                    println!("  members          none in the config (`pollhook connect` adds them to the state store)");
                }
                for m in &c.members {
                    println!(
                        "  member           {}  refresh_token {}{}",
                        m.endpoint_id,
                        m.refresh_token.source.describe(),
                        shard_note(d.shard, &a.name, &m.endpoint_id)
                    );
                }
                if d.shard.is_sharded() {
                    let owned = c
                        .members
                        .iter()
                        .filter(|m| d.shard.owns(&a.name, &m.endpoint_id))
                        .count();
                    println!(
                        "  this shard       owns {owned} of the {} configured member(s) ({}); members connected with `pollhook connect` are split the same way",
                        c.members.len(),
                        d.shard
                    );
                }
            }
            ProviderSettings::OnlinePajak(o) => {
                println!("  base_url         {}", o.base_url);
                println!(
                    "  npwp             {}{}",
                    o.npwp,
                    shard_note(d.shard, &a.name, &o.npwp)
                );
                println!(
                    "  token            {} ({})",
                    o.token.source.describe(),
                    if o.raw_auth { "raw" } else { "bearer" }
                );
                println!(
                    "  pacing           {} requests a minute, bursts of {}",
                    o.rate_limit, o.rate_burst
                );
                println!("  overlap          {}", format_duration(o.overlap));
                if !o.api.is_empty() {
                    println!("  api              overrides the assumed paths/fields (see [accounts.api])");
                }
            }
        }
        println!(
            "  http             timeout {}, {} retries from {}, Retry-After capped at {}, {} in flight",
            format_duration(a.http.timeout),
            a.http.max_retries,
            format_duration(a.http.retry_base),
            format_duration(a.http.retry_after_cap),
            a.http.concurrency
        );
    }
    for s in &config.sinks {
        print_sink(s);
    }
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    for w in config.file_warnings() {
        eprintln!("warning: {w}");
    }
    if let Err(errors) = config.resolve_secrets() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(ExitCode::from(2));
    }
    // Webhook secrets resolve; are they whsec_<base64>? NATS creds parse, TLS files read?
    let mut bad = 0;
    for s in config
        .sinks
        .iter()
        .filter(|s| matches!(s.kind, SinkKind::Webhook(_) | SinkKind::Nats(_)))
    {
        if let Err(e) = sinks::build(s) {
            eprintln!("error: {e}");
            bad += 1;
        }
    }
    if bad > 0 {
        return Ok(ExitCode::from(2));
    }
    println!("secrets: all {} resolve", config.secrets().len());
    Ok(ExitCode::SUCCESS)
}

/// `  [shard K/N]` or `  [shard J/N: not polled here]` after a member, when sharded.
fn shard_note(shard: crate::shard::Shard, account: &str, member: &str) -> String {
    if !shard.is_sharded() {
        String::new()
    } else if shard.owns(account, member) {
        format!("  [shard {shard}: polled here]")
    } else {
        let n = shard.count();
        format!(
            "  [shard {}/{n}: not polled here]",
            crate::shard::owner(account, member, n)
        )
    }
}

fn print_sink(s: &crate::config::Sink) {
    println!("[[sinks]] {} ({})", s.name, s.kind.name());
    let list = |v: &[String]| {
        if v.is_empty() {
            "all".to_string()
        } else {
            v.join(", ")
        }
    };
    println!("  events           {}", list(&s.filter.events));
    println!("  accounts         {}", list(&s.filter.accounts));
    let delivery = match &s.kind {
        SinkKind::Jsonl(j) => {
            println!("  path             {}", j.path.display());
            println!("  mode             {:04o}", j.mode);
            if let Some(b) = j.rotate_bytes {
                println!(
                    "  rotate           at {b} bytes, keeping {} old files",
                    j.rotate_keep
                );
            }
            return;
        }
        SinkKind::Hook(h) => {
            println!("  command          {:?} (argv, no shell)", h.command);
            println!(
                "  stdin            {}",
                if h.stdin == crate::config::HookStdin::Payload {
                    "payload"
                } else {
                    "envelope"
                }
            );
            println!(
                "  env              PATH, HOME, LANG, TZ{}",
                h.env.iter().map(|e| format!(", {e}")).collect::<String>()
            );
            if let Some(w) = &h.workdir {
                println!("  workdir          {}", w.display());
            }
            println!("  timeout          {}", format_duration(h.timeout));
            &h.delivery
        }
        SinkKind::Webhook(w) => {
            println!("  url              {}", w.url);
            for sec in &w.secrets {
                println!("  secret           {}", sec.source.describe());
            }
            println!(
                "  timeout          {}, Retry-After capped at {}",
                format_duration(w.timeout),
                format_duration(w.retry_after_cap)
            );
            &w.delivery
        }
        SinkKind::Nats(n) => {
            println!("  servers          {}", n.servers.join(", "));
            println!(
                "  stream           {}{}",
                n.stream,
                if n.create_stream {
                    " (created if missing)"
                } else {
                    " (must exist)"
                }
            );
            println!(
                "  subject          {}  (e.g. {}; the stream must capture {})",
                n.subject,
                n.subject
                    .render("caminvoice", "acme-kh", "DOCUMENT.DELIVERED"),
                n.subject.pattern()
            );
            println!(
                "  body             {}",
                if n.body == crate::config::Body::Payload {
                    "payload"
                } else {
                    "envelope"
                }
            );
            println!("  auth             {}", n.auth.describe());
            if let Some(ca) = &n.tls_ca_file {
                println!("  tls_ca_file      {}", ca.display());
            }
            if let Some((cert, key)) = &n.tls_client {
                println!(
                    "  tls client cert  {} (key {})",
                    cert.display(),
                    key.display()
                );
            }
            println!(
                "  timeout          {} (PubAck and API requests)",
                format_duration(n.timeout)
            );
            &n.delivery
        }
    };
    let schedule: Vec<String> = delivery
        .retry_schedule
        .iter()
        .map(|d| format_duration(*d))
        .collect();
    println!(
        "  retries          [{}] then the last again, {} attempts, then a dead letter",
        schedule.join(", "),
        delivery.max_attempts
    );
    match delivery.ordering {
        DeliveryOrder::InOrder => println!("  ordering         in-order"),
        DeliveryOrder::PerDocument => println!(
            "  ordering         per-document, {} at once",
            delivery.concurrency
        ),
    }
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

async fn events(command: EventsCommand) -> Result<ExitCode, Failure> {
    match command {
        EventsCommand::List {
            config,
            sink,
            dead,
            limit,
        } => {
            let config = Config::load(&config)?;
            if let Some(name) = &sink {
                find_sink(&config, name)?;
            }
            let store = open_stopped(&config, "list events")?;
            if dead {
                list_dead(&store, sink.as_deref(), limit)?;
            } else {
                list_events(&store, &config, sink.as_deref(), limit)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        EventsCommand::Replay {
            config,
            sink,
            since,
            id,
            dead,
        } => {
            let config = Config::load(&config)?;
            init_logging("warn");
            let selection = match (since, id, dead) {
                (Some(t), None, false) => sinks::replay::Selection::Since(t),
                (None, Some(id), false) => sinks::replay::Selection::Id(id),
                (None, None, true) => sinks::replay::Selection::Dead,
                _ => {
                    return Err(Failure::Run(
                        "say which events: --since RFC3339, --id EVT or --dead".into(),
                    ))
                }
            };
            let runner = sinks::build(find_sink(&config, &sink)?).map_err(run_err)?;
            let store = open_stopped(&config, "replay events")?;
            let report = sinks::replay::replay(&store, &runner, selection)
                .await
                .map_err(run_err)?;
            for e in &report.events {
                match &e.error {
                    None => println!("seq {} {} delivered", e.seq, e.id),
                    Some(err) => println!("seq {} {} FAILED: {err}", e.seq, e.id),
                }
            }
            if report.filtered > 0 {
                println!(
                    "{} event(s) in range skipped by the sink's events/accounts filter",
                    report.filtered
                );
            }
            if let Some(oldest) = report.oldest.filter(|o| *o > 1) {
                println!("(the outbox starts at seq {oldest}: older events were pruned after `retention`)");
            }
            let failed = report.failed();
            println!(
                "replayed {} event(s) to sink {sink}: {} delivered, {failed} failed",
                report.events.len(),
                report.events.len() - failed
            );
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        EventsCommand::Tail {
            config,
            sink,
            lines,
        } => {
            let config = Config::load(&config)?;
            let jsonl = config.sinks.iter().filter_map(|s| match &s.kind {
                SinkKind::Jsonl(j) if sink.as_ref().map_or(true, |n| *n == s.name) => Some(j),
                _ => None,
            });
            let Some(j) = jsonl.into_iter().next() else {
                return Err(Failure::Run(match sink {
                    Some(n) => format!("{n:?} is not a jsonl sink of this config; `events tail` follows a JSONL sink's file"),
                    None => "`events tail` follows a JSONL sink's file and this config has none; add [[sinks]] kind = \"jsonl\" (the store itself cannot be read while the daemon runs)".into(),
                }));
            };
            let mut out = std::io::stdout();
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            sinks::tail::follow(&j.path, lines, &mut out, stop)
                .await
                .map_err(|e| Failure::Run(format!("following {}: {e}", j.path.display())))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list_dead(store: &crate::store::Store, sink: Option<&str>, limit: usize) -> Result<(), Failure> {
    let dead = store.dead_letters(sink).map_err(run_err)?;
    if dead.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    let skip = dead.len().saturating_sub(limit);
    for d in &dead[skip..] {
        let env = d.event.envelope().map_err(run_err)?;
        println!(
            "{}  seq {}  {}  {}  {}  attempts {}  at {}\n    error: {}",
            d.sink,
            d.event.seq,
            env.id,
            env.event_type,
            env.account,
            d.attempts,
            format_ms(d.at),
            d.error
        );
    }
    println!(
        "{} dead letter(s); `pollhook events replay --sink NAME --dead` re-delivers them",
        dead.len()
    );
    Ok(())
}

fn list_events(
    store: &crate::store::Store,
    config: &Config,
    sink: Option<&str>,
    limit: usize,
) -> Result<(), Failure> {
    let last = store.last_seq();
    let from = last.saturating_sub(limit as u64);
    let events = store.read_outbox(from, limit).map_err(run_err)?;
    let sinks: Vec<&crate::config::Sink> = config
        .sinks
        .iter()
        .filter(|s| sink.map_or(true, |n| n == s.name))
        .collect();
    let mut acks = Vec::new();
    for s in &sinks {
        let dead: std::collections::HashSet<u64> = store
            .dead_letters(Some(&s.name))
            .map_err(run_err)?
            .iter()
            .map(|d| d.event.seq)
            .collect();
        acks.push((s, store.acked(&s.name).map_err(run_err)?, dead));
    }
    for e in &events {
        let env = e.envelope().map_err(run_err)?;
        let mut states = Vec::new();
        for (s, acked, dead) in &acks {
            let state = if dead.contains(&e.seq) {
                "dead".to_string()
            } else if !s.filter.matches(&env.event_type, &env.account) {
                "filtered".to_string()
            } else if e.seq <= *acked {
                "delivered".to_string()
            } else {
                match store.attempts(&s.name, e.seq).map_err(run_err)? {
                    Some(a) => format!("retrying ({} failed)", a.count),
                    None => "pending".to_string(),
                }
            };
            states.push(format!("{}={state}", s.name));
        }
        println!(
            "{:>6}  {}  {}  {:<24}  {}  {}",
            e.seq,
            env.detected_at,
            env.id,
            env.event_type,
            env.account,
            states.join(" ")
        );
    }
    match store.first_seq().map_err(run_err)? {
        None => println!("the outbox is empty"),
        Some(first) => {
            println!("outbox: seq {first}..{last} (older events are pruned after `retention`)")
        }
    }
    Ok(())
}

/// Reads the store itself, or — when the running daemon holds it — asks the daemon.
async fn status(config: &Config) -> Result<(), Failure> {
    let report = match scheduler::open(config) {
        Ok(engine) => StatusReport::collect(&engine, &config.sinks)
            .map_err(|e| Failure::Run(e.to_string()))?,
        Err(DaemonError::Store(crate::store::StoreError::Locked(_))) => {
            let report = admin::fetch_status(config).await.map_err(Failure::Run)?;
            eprintln!("(from the running daemon)");
            report
        }
        Err(other) => return Err(other.into()),
    };
    print!("{}", redact::text(&report.render()));
    Ok(())
}

/// `connect caminvoice`: the URL to open, or the exchange of the authToken (in this process,
/// or by the running daemon when it holds the store).
async fn connect(
    config: &Config,
    account: &str,
    print_url: bool,
    redirect_url: &str,
    state: Option<String>,
    auth_token: Option<String>,
) -> Result<ExitCode, Failure> {
    let run = |e: crate::connect::ConnectError| Failure::Run(e.to_string());
    let (acc, settings) = crate::connect::caminvoice_account(config, account).map_err(run)?;
    if print_url {
        let state = state.unwrap_or_else(crate::connect::new_state);
        println!(
            "{}",
            crate::connect::connect_url(settings, redirect_url, &state)
        );
        eprintln!(
            "Open this URL where the business signs in to CamInvoice and approves the connection."
        );
        eprintln!("The browser is then sent to {redirect_url}?authToken=...&state={state} (valid about 24 h). Copy that address and run:");
        eprintln!(
            "  pollhook connect caminvoice --config {} --account {account} --auth-token -   (paste it on stdin)",
            config.file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let raw = match auth_token.as_deref() {
        Some("-") => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Failure::Run(format!("cannot read the authToken from stdin: {e}")))?;
            line
        }
        Some(t) => t.to_string(),
        None => unreachable!("clap requires --auth-token without --print-url"),
    };
    let token = crate::connect::auth_token_from(&raw).map_err(run)?;
    let connected = match crate::store::Store::open(&config.daemon.state_dir) {
        Ok(store) => {
            let c = crate::connect::exchange(acc, settings, &store, &token)
                .await
                .map_err(run)?;
            store
                .flush()
                .await
                .map_err(|e| Failure::Run(e.to_string()))?;
            c
        }
        Err(crate::store::StoreError::Locked(_)) => {
            eprintln!("the daemon holds the state store: handing the authToken to it");
            admin::post_connect(config, account, &token)
                .await
                .map_err(Failure::Run)?
        }
        Err(e) => return Err(Failure::Run(e.to_string())),
    };
    println!("{}", connected.endpoint_id);
    eprintln!(
        "connected {}{} to account {}; its refresh token is in the state store{}. The next cycle polls it.",
        connected.endpoint_id,
        connected
            .company_name_en
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        connected.account,
        if connected.in_config {
            " and takes precedence over the config's until you change that refresh_token"
        } else {
            ""
        }
    );
    let shard = config.daemon.shard;
    if !shard.owns(&connected.account, &connected.endpoint_id) {
        eprintln!(
            "warning: this daemon is shard {shard}, and {} belongs to shard {}/{}: this one will not poll it, and that one cannot read this store. Have the business connect again through that shard (`pollhook connect caminvoice --print-url` with its config; an authToken works once), or put a refresh_token for it in the config every shard shares (SCALING.md)",
            connected.endpoint_id,
            crate::shard::owner(&connected.account, &connected.endpoint_id, shard.count()),
            shard.count()
        );
    }
    Ok(ExitCode::SUCCESS)
}
