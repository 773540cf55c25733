//! `pollhook bench`: the daemon against the simulator at scale, scenario by scenario, with the
//! naive poller beside it; prints the tables BENCHMARKS.md publishes.
//!
//! For every members M x tracked documents N it builds a bulk simulated world
//! ([`Simulator::bulk`]) and runs the daemon as a child process ([`worker`]) so its CPU
//! time and peak memory are its own:
//! 1. the first cycle: the baseline list walk of all N documents (silent history);
//! 2. a restart: time from exec to the first API request with N documents in the store, and a
//!    first no-change cycle (which also fetches the members' access tokens, then cached);
//! 3. per latency L and change rate C: C x N documents change in the simulator, one cycle,
//!    then the JSONL sink delivers the events; the events must equal the simulator's
//!    ground-truth journal for that change, or the bench fails;
//! 4. the store's bytes on disk; the daemon's (`pollhook run`) idle CPU between two polls,
//!    once its start-up work is done;
//! 5. the naive poller (list all, fetch every detail) for one cycle at each L.
//!
//! Separately, [`micro`] times diff + commit without HTTP, and [`hostile`] (`bench --hostile`)
//! measures the daemon's peak memory under each hostile answer.

pub mod hostile;
pub mod latency;
pub mod measure;
pub mod micro;
pub mod naive;
pub mod sample;
pub mod worker;

use crate::providers::caminvoice::client::TOKEN;
use crate::time::{format_ms, now_ms};
use pollhook_sim::{pollhook_config, Simulator};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use worker::{CycleFigures, DrainFigures, SizeFigures};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub members: Vec<usize>,
    pub documents: Vec<usize>,
    /// Percent of the tracked documents changed before a cycle.
    pub changed_percent: Vec<f64>,
    pub latency: Vec<Duration>,
    /// The account's `concurrency` (requests in flight).
    pub concurrency: usize,
    /// Detail calls the naive poller times before extrapolating.
    pub naive_sample: u64,
    /// Documents of the diff + commit measurement (0: skip it).
    pub micro_documents: usize,
    pub seed: u64,
    /// Where the work happens (a temporary directory under it, removed at the end).
    pub work_dir: PathBuf,
}

/// The list page size pollhook uses (its default, the simulator's maximum).
const PAGE: u64 = 100;

/// One measured cycle row.
struct CycleRow {
    members: usize,
    documents: usize,
    latency: Duration,
    changed: usize,
    cycle: CycleFigures,
    minimum: u64,
    requests: u64,
    drain: Option<DrainFigures>,
}

/// One row per store (members x documents).
struct StoreRow {
    members: usize,
    documents: usize,
    baseline: CycleFigures,
    baseline_requests: u64,
    baseline_minimum: u64,
    baseline_size: SizeFigures,
    final_size: SizeFigures,
    startup: Option<Duration>,
    idle_cpu: Option<f64>,
    naive: Vec<(Duration, naive::NaiveFigures)>,
}

/// Runs every scenario; returns the report (Markdown).
pub async fn run(opts: &Options) -> Result<String, String> {
    let root = opts.work_dir.join(format!(
        "pollhook-bench-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let result = run_in(opts, &root).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run_in(opts: &Options, root: &Path) -> Result<String, String> {
    let mut cycles = Vec::new();
    let mut stores = Vec::new();
    let micro = if opts.micro_documents > 0 {
        let n = opts.micro_documents;
        eprintln!("diff + commit: {n} documents, then {} changed", n / 10);
        let dir = root.join("micro");
        let m = micro::diff_and_commit(n, n / 10, &dir).await?;
        let _ = std::fs::remove_dir_all(&dir);
        Some(m)
    } else {
        None
    };
    for &m in &opts.members {
        for &n in &opts.documents {
            let dir = root.join(format!("m{m}-n{n}"));
            let (store, rows) = store_scenarios(opts, m, n, &dir).await?;
            let _ = std::fs::remove_dir_all(&dir);
            stores.push(store);
            cycles.extend(rows);
        }
    }
    Ok(report(opts, micro.as_ref(), &stores, &cycles))
}

/// Everything measured on one store of `n` documents over `m` members.
async fn store_scenarios(
    opts: &Options,
    m: usize,
    n: usize,
    dir: &Path,
) -> Result<(StoreRow, Vec<CycleRow>), String> {
    eprintln!("M={m} N={n}: building the simulated world");
    let sim = Simulator::bulk(m, n, opts.seed);
    let server = sim
        .serve("127.0.0.1:0".parse().expect("valid address"))
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let creds = sim.credentials();
    let config = write_config(&sim, &server.base_url(), dir, opts.concurrency)?;

    // 1. The baseline: a list walk of every document.
    eprintln!("M={m} N={n}: baseline cycle");
    let mut w = Worker::spawn(&config).await?;
    let baseline: CycleFigures = w.ask("cycle").await?;
    check(&baseline, "baseline")?;
    // One poll per member, and every list page: the sent side's, and the (empty) received
    // side's one page.
    let baseline_minimum = m as u64
        + (0..m as u64)
            .map(|i| {
                let docs = n as u64 / m as u64 + u64::from(i < n as u64 % m as u64);
                docs.div_ceil(PAGE).max(1) + 1
            })
            .sum::<u64>();
    let baseline_requests = baseline.api_requests();
    let baseline_size: SizeFigures = w.ask("size").await?;
    w.quit().await?;

    // 2. A restart with N documents in the store: exec to the first request.
    sim.take_first_request();
    let spawned = Instant::now();
    let mut w = Worker::spawn(&config).await?;
    let first: CycleFigures = w.ask("cycle").await?;
    check(&first, "first cycle after restart")?;
    let startup = sim.take_first_request().map(|t| t.duration_since(spawned));

    // 3. The scenarios.
    let mut rows = Vec::new();
    for &latency in &opts.latency {
        sim.set_latency(latency);
        for &pct in &opts.changed_percent {
            let want = ((n as f64) * pct / 100.0).round() as usize;
            let journal_before = sim.journal_len();
            let changed = sim.churn(want);
            let truth = sim.journal_len() - journal_before;
            eprintln!("M={m} N={n} L={}ms C={changed}: cycle", latency.as_millis());
            let cycle: CycleFigures = w.ask("cycle").await?;
            check(&cycle, "cycle")?;
            if cycle.events != truth as u64 {
                return Err(format!(
                    "M={m} N={n} L={latency:?} C={changed}: the daemon committed {} events, the simulator's journal has {truth}",
                    cycle.events
                ));
            }
            let drain: DrainFigures = w.ask("drain").await?;
            if drain.events != cycle.events {
                return Err(format!(
                    "the JSONL sink delivered {} events of {}",
                    drain.events, cycle.events
                ));
            }
            rows.push(CycleRow {
                members: m,
                documents: n,
                latency,
                changed,
                minimum: m as u64 + changed as u64,
                requests: cycle.api_requests(),
                drain: (cycle.events > 0).then_some(drain),
                cycle,
            });
        }
    }
    sim.set_latency(Duration::ZERO);
    let final_size: SizeFigures = w.ask("size").await?;
    w.quit().await?;

    // 4. Idle CPU of the real daemon between polls.
    eprintln!("M={m} N={n}: idle CPU of `pollhook run`");
    let idle_cpu = idle_cpu(&config, &sim).await?;

    // 5. The naive poller.
    let mut naive = Vec::new();
    for &latency in &opts.latency {
        eprintln!("M={m} N={n} L={}ms: naive poller", latency.as_millis());
        sim.set_latency(latency);
        let f = naive::cycle(
            &server.base_url(),
            &creds,
            opts.concurrency,
            opts.naive_sample,
        )
        .await?;
        naive.push((latency, f));
    }
    drop(server);
    Ok((
        StoreRow {
            members: m,
            documents: n,
            baseline,
            baseline_requests,
            baseline_minimum,
            baseline_size,
            final_size,
            startup,
            idle_cpu,
            naive,
        },
        rows,
    ))
}

fn check(c: &CycleFigures, what: &str) -> Result<(), String> {
    if c.failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", c.failures.join("; ")))
    }
}

/// Starts `pollhook run`, waits for its catch-up cycle to end (no request for a second) and
/// five seconds more for start-up work to settle, then returns its CPU use over ten idle
/// seconds, as a fraction of one core.
async fn idle_cpu(config: &Path, sim: &Simulator) -> Result<Option<f64>, String> {
    let mut child = daemon("run", config)?
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start pollhook run: {e}"))?;
    let pid = child.id().ok_or("pollhook run exited at once")?;
    let total = || sim.request_counts().values().sum::<u64>();
    let mut last = total();
    let mut quiet = 0;
    while quiet < 10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window = Duration::from_secs(10);
    let before = measure::cpu_time_of(pid);
    tokio::time::sleep(window).await;
    let after = measure::cpu_time_of(pid);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(match (before, after) {
        (Some(b), Some(a)) => Some((a - b).as_secs_f64() / window.as_secs_f64()),
        _ => None,
    })
}

/// Writes `dir/pollhook.toml`, the measured daemon's config against the simulator at
/// `base_url`: its requests in flight, the list page size, a 60 s timeout, and a schedule that
/// never fires (only the catch-up cycle at start runs, for the idle measurement).
pub(crate) fn write_config(
    sim: &Simulator,
    base_url: &str,
    dir: &Path,
    concurrency: usize,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("pollhook.toml");
    let text = pollhook_config(
        &sim.credentials(),
        base_url,
        &dir.join("state"),
        &dir.join("events.jsonl"),
        &format_ms(now_ms()),
        "0 0 0 1 1 *",
    )
    .replace(
        "retry_base = \"100ms\"\n",
        &format!("retry_base = \"100ms\"\nconcurrency = {concurrency}\npage_size = {PAGE}\n"),
    )
    .replace("timeout = \"5s\"", "timeout = \"60s\"");
    std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    Ok(config)
}

/// `pollhook <subcommand> --config <config>` from this very binary, killed if dropped.
fn daemon(subcommand: &str, config: &Path) -> Result<Command, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.args([subcommand, "--config"])
        .arg(config)
        .kill_on_drop(true);
    Ok(cmd)
}

/// The daemon as a child process, driven over stdin (see [`worker`]).
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Worker {
    pub(crate) async fn spawn(config: &Path) -> Result<Worker, String> {
        let mut child = daemon("bench-worker", config)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the bench worker: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Worker {
            child,
            stdin,
            stdout,
        })
    }

    pub(crate) async fn ask<T: serde::de::DeserializeOwned>(
        &mut self,
        cmd: &str,
    ) -> Result<T, String> {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| format!("bench worker gone: {e}"))?;
        let line = self
            .stdout
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the bench worker exited (see its error above)")?;
        serde_json::from_str(&line).map_err(|e| format!("bench worker said {line:?}: {e}"))
    }

    pub(crate) async fn quit(mut self) -> Result<(), String> {
        let _ = self.stdin.write_all(b"quit\n").await;
        let status = self.child.wait().await.map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the bench worker failed: {status}"))
        }
    }
}

pub(crate) fn mb(bytes: Option<u64>) -> String {
    bytes.map_or("?".into(), |b| {
        format!("{:.1}", b as f64 / (1024.0 * 1024.0))
    })
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The Markdown tables.
fn report(
    opts: &Options,
    micro: Option<&micro::MicroFigures>,
    stores: &[StoreRow],
    cycles: &[CycleRow],
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "concurrency {} (requests in flight per account), list page size {PAGE}, seed {}\n",
        opts.concurrency, opts.seed
    );
    if let Some(m) = micro {
        let _ = writeln!(o, "### Diff + commit (no HTTP)\n");
        let _ = writeln!(
            o,
            "| documents | first sight, docs/s | changed | changed docs/s (1 event each) | store bytes/doc |"
        );
        let _ = writeln!(o, "|---:|---:|---:|---:|---:|");
        let _ = writeln!(
            o,
            "| {} | {:.0} | {} | {:.0} | {:.0} |\n",
            thousands(m.documents),
            m.baseline_per_s,
            thousands(m.changed),
            m.changed_per_s,
            m.store_bytes as f64 / m.documents.max(1) as f64
        );
    }
    let _ = writeln!(o, "### Cycles\n");
    let _ = writeln!(o, "| M | N | L ms | changed | requests | minimum | ratio | token calls | cycle s | CPU s | peak RSS MB | events | JSONL events/s | naive requests | naive s |");
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in cycles {
        let naive = stores
            .iter()
            .find(|s| s.members == r.members && s.documents == r.documents)
            .and_then(|s| s.naive.iter().find(|(l, _)| *l == r.latency))
            .map(|(_, f)| f);
        let tokens = r.cycle.requests.get(TOKEN).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
            r.members,
            thousands(r.documents as u64),
            r.latency.as_millis(),
            thousands(r.changed as u64),
            thousands(r.requests),
            thousands(r.minimum),
            r.requests as f64 / r.minimum.max(1) as f64,
            tokens,
            r.cycle.wall_s,
            r.cycle.cpu_s,
            mb(r.cycle.peak_rss),
            thousands(r.cycle.events),
            r.drain.as_ref().map_or("-".into(), |d| format!(
                "{:.0}",
                d.events as f64 / d.secs.max(1e-9)
            )),
            naive.map_or("-".into(), |f| thousands(f.requests)),
            naive.map_or("-".into(), |f| {
                let approx = if f.measured_all { "" } else { "~" };
                format!("{approx}{:.1}", f.secs)
            }),
        );
    }
    let _ = writeln!(o, "\n### Per store\n");
    let _ = writeln!(o, "| M | N | baseline requests | minimum | ratio | baseline s | baseline peak RSS MB | bytes/doc after baseline | bytes/doc after cycles | start-up to first request s | idle CPU % of a core |");
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in stores {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.2} | {:.1} | {} | {:.0} | {:.0} | {} | {} |",
            s.members,
            thousands(s.documents as u64),
            thousands(s.baseline_requests),
            thousands(s.baseline_minimum),
            s.baseline_requests as f64 / s.baseline_minimum.max(1) as f64,
            s.baseline.wall_s,
            mb(s.baseline.peak_rss),
            s.baseline_size.bytes as f64 / s.baseline_size.documents.max(1) as f64,
            s.final_size.bytes as f64 / s.final_size.documents.max(1) as f64,
            s.startup
                .map_or("?".into(), |d| format!("{:.3}", d.as_secs_f64())),
            s.idle_cpu
                .map_or("?".into(), |c| format!("{:.2}", c * 100.0)),
        );
    }
    o
}
