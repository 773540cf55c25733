//! `pollhook probe`: first contact with each account's provider. Builds every account's client
//! as the daemon does (its HTTP settings, pacer, secrets), runs the provider's read-only probe
//! (`Provider::probe`), prints the reports (or one JSON document) and exits by the worst
//! verdict: 0 ready, 3 ready with warnings, 1 not usable; 2 for a configuration error. It never
//! opens the state store, so it works while the daemon runs.

use super::{init_logging, Failure};
use crate::config::Config;
use crate::metrics::AccountMetrics;
use crate::providers::probe::{ProbeReport, Verdict};
use crate::shutdown::Stop;
use futures_util::future::join_all;
use std::process::ExitCode;
use std::sync::Arc;

/// Runs `probe` for every account, or only `only`.
pub(super) async fn run(
    config: &Config,
    only: Option<&str>,
    json: bool,
) -> Result<ExitCode, Failure> {
    init_logging("warn");
    let accounts: Vec<_> = config
        .accounts
        .iter()
        .filter(|a| only.map_or(true, |n| a.name == n))
        .collect();
    if accounts.is_empty() {
        let names: Vec<&str> = config.accounts.iter().map(|a| a.name.as_str()).collect();
        return Err(Failure::Usage(match only {
            Some(n) => format!(
                "no account named {n:?} in {}; configured: {}",
                config.file.display(),
                names.join(", ")
            ),
            None => format!("no [[accounts]] in {}", config.file.display()),
        }));
    }
    let mut providers = Vec::new();
    for a in &accounts {
        let metrics = Arc::new(AccountMetrics::new(
            &a.name,
            a.provider.kind(),
            a.http.timeout,
            a.http.retry_after_cap,
        ));
        let p = crate::providers::build(a, metrics, &Stop::never())?;
        providers.push(p);
    }
    if !json {
        eprintln!(
            "probing {} account(s) with read-only requests (the state store is not opened)…",
            providers.len()
        );
    }
    let reports: Vec<ProbeReport> = join_all(providers.into_iter().map(|p| p.probe())).await;
    let worst = reports
        .iter()
        .map(|r| r.verdict)
        .max()
        .unwrap_or(Verdict::Ready);
    if json {
        let doc = serde_json::json!({
            "verdict": worst,
            "exit_code": worst.exit_code(),
            "accounts": reports,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::Run(e.to_string()))?;
        println!("{}", crate::redact::text(&text));
    } else {
        for r in &reports {
            println!("{}", r.render());
        }
        if reports.len() > 1 {
            let count = |v: Verdict| reports.iter().filter(|r| r.verdict == v).count();
            println!(
                "{} account(s): {} ready, {} ready with warnings, {} not usable",
                reports.len(),
                count(Verdict::Ready),
                count(Verdict::ReadyWithWarnings),
                count(Verdict::NotUsable)
            );
        }
    }
    Ok(ExitCode::from(worst.exit_code()))
}
