//! The command line: the subcommands, and the one place that prints errors and picks exit
//! codes (0 ok, 1 a run-time failure, 2 a configuration error).

use crate::admin::{self, StatusReport};
use crate::config::{Config, ConfigError, ProviderSettings, SinkKind, Start};
use crate::engine::Tick;
use crate::scheduler::{self, DaemonError};
use crate::sinks;
use crate::time::{format_duration, format_ms, parse_duration};
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
        Err(Failure::Run(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

enum Failure {
    Config(ConfigError),
    Run(String),
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Config(e)
    }
}
impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Failure::Run(e.to_string())
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
            crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
            scheduler::run(config, scheduler::signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config } => {
            let config = Config::load(&config)?;
            crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
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
    print!("{}", report.render());
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
    Ok(ExitCode::SUCCESS)
}
