//! The subcommands that run the simulator (feature `sim`): `demo`, `bench` (and its measured
//! child, `bench-worker`), and `simulate` (the simulator alone).

use super::{init_logging, Failure};
use crate::cli::args::BenchArgs;
use crate::config::Config;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The simulator and the daemon together, for `duration`.
pub(super) async fn demo(duration: Duration, seed: u64) -> Result<ExitCode, Failure> {
    init_logging("warn");
    crate::demo::run(duration, seed, &mut std::io::stdout())
        .await
        .map_err(Failure::Run)?;
    Ok(ExitCode::SUCCESS)
}

/// The benchmark grid (or, with `--hostile`, peak memory per hostile answer).
pub(super) async fn bench(args: BenchArgs) -> Result<ExitCode, Failure> {
    let BenchArgs {
        members,
        documents,
        changed,
        latency_ms,
        concurrency,
        naive_sample,
        micro_documents,
        seed,
        out,
        before,
        hostile,
        what,
    } = args;
    init_logging("warn");
    if let Some(super::args::BenchWhat::Latency(l)) = what {
        let opts = crate::bench::latency::Opts {
            members: l.members,
            seed: l.seed,
            hours: l.hours,
            warmup_hours: l.warmup_hours,
            period: l.period,
            min_interval: l.min_interval,
            max_interval: l.max_interval,
            only: l.only,
            zipf: l.zipf,
        };
        if opts.members == 0
            || opts.hours <= 0
            || opts.period <= 0
            || opts.min_interval < 1.0
            || opts.max_interval < opts.min_interval
        {
            return Err(Failure::Run("bench latency: --members, --hours and --period must be positive, --min-interval at least 1 and --max-interval at least --min-interval; --zipf between 0 and 10".into()));
        }
        let report = crate::bench::latency::run(&opts);
        print!("{report}");
        if let Some(path) = out {
            std::fs::write(&path, &report)
                .map_err(|e| Failure::Run(format!("cannot write {}: {e}", path.display())))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
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
            before,
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

/// The daemon `bench` measures, driven over stdin.
pub(super) async fn bench_worker(config: &Path) -> Result<ExitCode, Failure> {
    let config = Config::load(config)?;
    crate::logging::init(config.daemon.log_format, &config.daemon.log_level);
    crate::bench::worker::serve(config)
        .await
        .map_err(Failure::Run)?;
    Ok(ExitCode::SUCCESS)
}

/// `bench`'s diff + commit and outbox measurements, printed as JSON.
pub(super) async fn bench_micro(
    documents: usize,
    seed: u64,
    dir: &Path,
) -> Result<ExitCode, Failure> {
    init_logging("warn");
    let result = crate::bench::micro::run(documents, dir, seed).await;
    let _ = std::fs::remove_dir_all(dir);
    let figures = result.map_err(Failure::Run)?;
    println!(
        "{}",
        serde_json::to_string(&figures).expect("figures serialize")
    );
    Ok(ExitCode::SUCCESS)
}

/// The simulator alone on `listen`, stepping every `step` (or only when told).
pub(super) async fn simulate(
    listen: SocketAddr,
    seed: u64,
    step: Option<Duration>,
) -> Result<ExitCode, Failure> {
    init_logging("info");
    let cfg = pollhook_sim::SimConfig {
        seed,
        ..pollhook_sim::SimConfig::default()
    };
    pollhook_sim::run_standalone(listen, cfg, step)
        .await
        .map_err(|e| Failure::Run(format!("simulator on {listen}: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
