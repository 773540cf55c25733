//! The command line: the subcommands, and the one place that prints errors and picks exit
//! codes (0 ok, 1 a run-time failure, 2 a configuration error).

use crate::config::{Config, ConfigError, ProviderSettings, SinkKind, Start};
use crate::engine::Tick;
use crate::scheduler::{self, DaemonError};
use crate::sinks;
use crate::time::{format_duration, format_ms, now_ms, parse_duration};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Run the simulator and the daemon against it, print events as they are emitted, then a summary.
    Demo {
        /// How long the traffic runs.
        #[arg(long, default_value = "20s", value_parser = duration_arg)]
        duration: Duration,
        /// Seed of the simulated traffic.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
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

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration (e.g. 20s, 2m)"))
}

/// Parses the command line, runs it, and turns the outcome into an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(Failure::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Setup(e)) => {
            eprintln!("error: {e}\nhelp: `pollhook check-config` lists every secret that cannot be read");
            ExitCode::from(2)
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e}");
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,pollhook={level}")));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

async fn dispatch(command: Command) -> Result<ExitCode, Failure> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            init_logging(&config.daemon.log_level);
            scheduler::run(config, scheduler::signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config } => {
            let config = Config::load(&config)?;
            init_logging(&config.daemon.log_level);
            once(config).await
        }
        Command::CheckConfig { config } => {
            let config = Config::load(&config)?;
            check_config(&config)
        }
        Command::Status { config } => {
            let config = Config::load(&config)?;
            status(&config).map(|_| ExitCode::SUCCESS)
        }
        Command::Demo { duration, seed } => {
            init_logging("warn");
            crate::demo::run(duration, seed)
                .await
                .map_err(Failure::Run)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            listen,
            seed,
            step,
            manual,
        } => {
            init_logging("info");
            let cfg = crate::sim::SimConfig {
                seed,
                ..crate::sim::SimConfig::default()
            };
            crate::sim::run_standalone(listen, cfg, (!manual).then_some(step))
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
        let mut sink = sinks::build(s);
        match sinks::drain(engine.store(), sink.as_mut()).await {
            Ok(n) => eprintln!("sink {}: {n} event(s) delivered", s.name),
            Err(e) => {
                eprintln!("sink {}: FAILED {e}", s.name);
                failed = true;
            }
        }
    }
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
    for a in &config.accounts {
        println!("[[accounts]] {} ({})", a.name, a.provider.kind());
        match &a.provider {
            ProviderSettings::CamInvoice(c) => {
                println!("  base_url         {}", c.base_url);
                println!("  client_id        {}", c.client_id);
                println!("  client_secret    {}", c.client_secret.source.describe());
                println!("  overlap          {}", format_duration(c.overlap));
                for m in &c.members {
                    println!(
                        "  member           {}  refresh_token {}",
                        m.endpoint_id,
                        m.refresh_token.source.describe()
                    );
                }
            }
            ProviderSettings::OnlinePajak(o) => {
                println!("  base_url         {}", o.base_url);
                println!("  npwp             {}", o.npwp);
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
                let defaults = crate::providers::onlinepajak::api::ApiMap::default();
                if o.api != defaults {
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
        match &s.kind {
            SinkKind::Jsonl { path } => {
                println!("[[sinks]] {} (jsonl) -> {}", s.name, path.display())
            }
        }
    }
    if config.secrets().iter().any(|(_, s)| s.source.is_inline()) {
        warn_if_readable(&config.file);
    }
    if let Err(errors) = config.resolve_secrets() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return Ok(ExitCode::from(2));
    }
    println!("secrets: all {} resolve", config.secrets().len());
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn warn_if_readable(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(file) {
        if m.permissions().mode() & 0o004 != 0 {
            eprintln!(
                "warning: {} holds inline secrets and is readable by every user; chmod 600 it, or use {{ file = ... }} / {{ credential = ... }}",
                file.display()
            );
        }
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

fn status(config: &Config) -> Result<(), Failure> {
    let engine = scheduler::open(config).map_err(|e| match e {
        DaemonError::Store(crate::store::StoreError::Locked(dir)) => Failure::Run(format!(
            "the state dir {} is held by the running daemon (sled allows one process); stop it to read its status, or read its log",
            dir.display()
        )),
        other => other.into(),
    })?;
    let store = engine.store();
    for (idx, account) in engine.accounts().iter().enumerate() {
        let p = engine.provider(idx);
        println!("account {account} ({})", p.kind());
        for u in p.status(store).map_err(|e| Failure::Run(e.to_string()))? {
            println!("  member {}: {}", u.unit, u.state);
            println!(
                "    last successful poll  {}",
                u.last_success.map(ago).unwrap_or_else(|| "never".into())
            );
            println!(
                "    cursor                {}",
                u.cursor.map(format_ms).unwrap_or_else(|| "none yet".into())
            );
            println!("    documents tracked     {}", u.documents);
            if let Some(e) = &u.last_error {
                println!("    last error            {e}");
            }
        }
    }
    let last = store.last_seq();
    println!("outbox: last seq {last}");
    for s in &config.sinks {
        let acked = store
            .acked(&s.name)
            .map_err(|e| Failure::Run(e.to_string()))?;
        println!(
            "sink {}: delivered up to seq {acked}, {} pending",
            s.name,
            last.saturating_sub(acked)
        );
    }
    Ok(())
}
