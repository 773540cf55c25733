//! `pollhook run` (the daemon in the foreground), `once` (one cycle of every account, then
//! every sink drained) and `status` (from the store, or from the running daemon that holds
//! it).

use super::{log_warnings, Failure};
use crate::admin::{self, StatusReport};
use crate::config::Config;
use crate::engine::Tick;
use crate::redact;
use crate::scheduler::{self, DaemonError};
use crate::sinks;
use std::process::ExitCode;

/// The daemon, until SIGTERM or SIGINT.
pub(super) async fn run(config: Config) -> Result<ExitCode, Failure> {
    crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
    log_warnings(&config);
    scheduler::run(config, scheduler::signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// One cycle of every account, then every sink drained and the outbox pruned.
pub(super) async fn once(config: Config) -> Result<ExitCode, Failure> {
    crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
    log_warnings(&config);
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
    engine.store().flush().await?;
    if failed {
        eprintln!("error: some accounts or sinks failed (see above); what was fetched before a failure is committed and kept");
        Ok(ExitCode::from(super::exit::FAILED))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Reads the store itself, or — when the running daemon holds it — asks the daemon.
pub(super) async fn status(config: &Config) -> Result<ExitCode, Failure> {
    let report = match scheduler::open(config) {
        Ok(engine) => StatusReport::collect(&engine, &config.sinks)?,
        Err(DaemonError::Store(crate::store::StoreError::Locked(_))) => {
            let report = admin::fetch_status(config).await.map_err(Failure::Run)?;
            eprintln!("(from the running daemon)");
            report
        }
        Err(other) => return Err(other.into()),
    };
    print!("{}", redact::text(&report.render()));
    Ok(ExitCode::SUCCESS)
}
