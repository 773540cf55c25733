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
//! Separately, [`micro`] times diff + commit without HTTP and measures the outbox's cost on
//! disk (in a child process, `pollhook bench-micro`), and [`hostile`] (`bench --hostile`)
//! measures the daemon's peak memory under each hostile answer.
//!
//! With `--before <binary>`, an earlier build runs every scenario too, in the same run, each
//! against a world built afresh from the same seed, before this build's turn; the report puts
//! its figures beside this build's and ends with a line per target: met or missed, by how
//! much.

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
    /// An earlier build measured beside this one.
    pub before: Option<PathBuf>,
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
    /// The first cycle after the restart (no change).
    restart: CycleFigures,
    idle_cpu: Option<f64>,
    naive: Vec<(Duration, naive::NaiveFigures)>,
}

/// Everything one build measured.
struct Measured {
    micro: Option<micro::MicroFigures>,
    stores: Vec<StoreRow>,
    cycles: Vec<CycleRow>,
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
    let this = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut builds = vec![];
    if let Some(b) = &opts.before {
        builds.push(("before", b.clone()));
    }
    builds.push(("this build", this));
    let mut measured: Vec<Measured> = builds
        .iter()
        .map(|_| Measured {
            micro: None,
            stores: Vec::new(),
            cycles: Vec::new(),
        })
        .collect();
    if opts.micro_documents > 0 {
        for ((label, exe), out) in builds.iter().zip(&mut measured) {
            let n = opts.micro_documents;
            eprintln!(
                "{label}: diff + commit, {n} documents, then {} changed",
                n / 10
            );
            out.micro = Some(run_micro(exe, n, opts.seed, &root.join("micro")).await?);
        }
    }
    for &m in &opts.members {
        for &n in &opts.documents {
            for ((label, exe), out) in builds.iter().zip(&mut measured) {
                let dir = root.join(format!("m{m}-n{n}"));
                let (store, rows) = store_scenarios(opts, label, exe, m, n, &dir).await?;
                let _ = std::fs::remove_dir_all(&dir);
                out.stores.push(store);
                out.cycles.extend(rows);
            }
        }
    }
    let after = measured.pop().expect("this build");
    Ok(report(opts, &after, measured.pop().as_ref()))
}

/// `<exe> bench-micro`: the micro measurements in a process of their own.
async fn run_micro(
    exe: &Path,
    documents: usize,
    seed: u64,
    dir: &Path,
) -> Result<micro::MicroFigures, String> {
    let out = Command::new(exe)
        .args(["bench-micro", "--documents", &documents.to_string()])
        .args(["--seed", &seed.to_string(), "--dir"])
        .arg(dir)
        .stderr(Stdio::inherit())
        .output()
        .await
        .map_err(|e| format!("cannot run {} bench-micro: {e}", exe.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    if !out.status.success() {
        return Err(format!("{} bench-micro failed: {text}", exe.display()));
    }
    serde_json::from_str(line).map_err(|e| format!("bench-micro said {line:?}: {e}"))
}

/// Everything measured on one store of `n` documents over `m` members.
async fn store_scenarios(
    opts: &Options,
    label: &str,
    exe: &Path,
    m: usize,
    n: usize,
    dir: &Path,
) -> Result<(StoreRow, Vec<CycleRow>), String> {
    eprintln!("{label}: M={m} N={n}: building the simulated world");
    let sim = Simulator::bulk(m, n, opts.seed);
    let server = sim
        .serve("127.0.0.1:0".parse().expect("valid address"))
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let creds = sim.credentials();
    let config = write_config(&sim, &server.base_url(), dir, opts.concurrency)?;

    // 1. The baseline: a list walk of every document.
    eprintln!("M={m} N={n}: baseline cycle");
    let mut w = Worker::spawn(exe, &config).await?;
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
    let mut w = Worker::spawn(exe, &config).await?;
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
            eprintln!(
                "{label}: M={m} N={n} L={}ms C={changed}: cycle",
                latency.as_millis()
            );
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
    eprintln!("{label}: M={m} N={n}: idle CPU of `pollhook run`");
    let idle_cpu = idle_cpu(exe, &config, &sim).await?;

    // 5. The naive poller (once: it does not depend on the build).
    let mut naive = Vec::new();
    let latencies = if label == "before" {
        &[][..]
    } else {
        &opts.latency[..]
    };
    for &latency in latencies {
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
            restart: first,
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
async fn idle_cpu(exe: &Path, config: &Path, sim: &Simulator) -> Result<Option<f64>, String> {
    let mut child = daemon(exe, "run", config)
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

/// `<exe> <subcommand> --config <config>`, killed if dropped.
fn daemon(exe: &Path, subcommand: &str, config: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args([subcommand, "--config"])
        .arg(config)
        .kill_on_drop(true);
    cmd
}

/// The daemon as a child process, driven over stdin (see [`worker`]).
pub(crate) struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Worker {
    pub(crate) async fn spawn(exe: &Path, config: &Path) -> Result<Worker, String> {
        let mut child = daemon(exe, "bench-worker", config)
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

/// MB (MiB) of a byte count.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Bytes on disk per tracked document of a size figure.
fn per_doc(s: &SizeFigures) -> f64 {
    s.bytes as f64 / s.documents.max(1) as f64
}

/// The cycle rows of a store at `documents`, with the store's baseline and restart cycles:
/// every cycle of that store, as (what, figures).
fn cycles_at(m: &Measured, documents: usize) -> Vec<(String, &CycleFigures)> {
    let mut out = Vec::new();
    for s in m.stores.iter().filter(|s| s.documents == documents) {
        out.push((format!("M={} baseline walk", s.members), &s.baseline));
        out.push((
            format!("M={} first cycle after restart", s.members),
            &s.restart,
        ));
    }
    for r in m.cycles.iter().filter(|r| r.documents == documents) {
        out.push((
            format!(
                "M={} L={} ms C={}",
                r.members,
                r.latency.as_millis(),
                thousands(r.changed as u64)
            ),
            &r.cycle,
        ));
    }
    out
}

/// "met" or "missed by X %" for `value` against a bound: at most (`le`) or at least.
fn verdict(value: f64, bound: f64, le: bool) -> String {
    let ok = if le { value <= bound } else { value >= bound };
    if ok {
        "met".into()
    } else {
        let by = if le {
            (value - bound) / bound
        } else {
            (bound - value) / bound
        };
        format!("**missed by {:.0} %**", by * 100.0)
    }
}

/// The Markdown tables: this build's, then (with `--before`) the earlier build's figures
/// beside them, then a line per target.
fn report(opts: &Options, after: &Measured, before: Option<&Measured>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "concurrency {} (requests in flight per account), list page size {PAGE}, seed {}\n",
        opts.concurrency, opts.seed
    );
    let micro_row = |o: &mut String, label: &str, m: &micro::MicroFigures| {
        let _ = writeln!(
            o,
            "| {label} | {} | {:.0} | {} | {:.0} | {} | {:.0} | {:.0} | {:.0} |",
            thousands(m.documents),
            m.baseline_per_s,
            thousands(m.changed),
            m.changed_per_s,
            mb(m.changed_peak_rss),
            m.bytes_per_document,
            m.outbox_line,
            m.outbox_beyond_line,
        );
    };
    if let Some(m) = &after.micro {
        let _ = writeln!(o, "### Diff + commit (no HTTP), and the outbox on disk\n");
        let _ = writeln!(
            o,
            "| build | documents | first sight, docs/s | changed | changed docs/s (1 event each) | peak RSS MB (changes) | store bytes/doc | outbox: line B/event | outbox: on disk beyond the line B/event |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        if let Some(b) = before.and_then(|b| b.micro.as_ref()) {
            micro_row(&mut o, "before", b);
        }
        micro_row(&mut o, "this build", m);
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "### Cycles\n");
    let with_before = before.is_some();
    let _ = writeln!(o, "| M | N | L ms | changed | requests | minimum | ratio | token calls | cycle s | CPU s | peak RSS MB | RSS after MB | events | JSONL events/s | naive requests | naive s |{}", if with_before { " before: cycle s | before: peak RSS MB | before: RSS after MB |" } else { "" });
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
        if with_before { "---:|---:|---:|" } else { "" }
    );
    for r in &after.cycles {
        let naive = after
            .stores
            .iter()
            .find(|s| s.members == r.members && s.documents == r.documents)
            .and_then(|s| s.naive.iter().find(|(l, _)| *l == r.latency))
            .map(|(_, f)| f);
        let tokens = r.cycle.requests.get(TOKEN).copied().unwrap_or(0);
        let b = before.and_then(|b| {
            b.cycles.iter().find(|x| {
                x.members == r.members
                    && x.documents == r.documents
                    && x.latency == r.latency
                    && x.changed == r.changed
            })
        });
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |{}",
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
            mb(r.cycle.rss_after),
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
            match (with_before, b) {
                (false, _) => String::new(),
                (true, None) => " - | - | - |".into(),
                (true, Some(b)) => format!(
                    " {:.2} | {} | {} |",
                    b.cycle.wall_s,
                    mb(b.cycle.peak_rss),
                    mb(b.cycle.rss_after)
                ),
            }
        );
    }
    let _ = writeln!(o, "\n### Per store\n");
    let _ = writeln!(o, "| M | N | baseline requests | minimum | ratio | baseline s | baseline peak RSS MB | bytes/doc after baseline | bytes/doc after cycles | start-up to first request s | token calls, first cycle after restart | idle CPU % of a core |{}", if with_before { " before: baseline peak RSS MB | before: bytes/doc after baseline | before: bytes/doc after cycles | before: start-up s | before: token calls after restart |" } else { "" });
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|{}",
        if with_before {
            "---:|---:|---:|---:|---:|"
        } else {
            ""
        }
    );
    let startup = |s: &StoreRow| {
        s.startup
            .map_or("?".into(), |d| format!("{:.3}", d.as_secs_f64()))
    };
    let restart_tokens = |s: &StoreRow| s.restart.requests.get(TOKEN).copied().unwrap_or(0);
    for s in &after.stores {
        let b = before.and_then(|b| {
            b.stores
                .iter()
                .find(|x| x.members == s.members && x.documents == s.documents)
        });
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.2} | {:.1} | {} | {:.0} | {:.0} | {} | {} | {} |{}",
            s.members,
            thousands(s.documents as u64),
            thousands(s.baseline_requests),
            thousands(s.baseline_minimum),
            s.baseline_requests as f64 / s.baseline_minimum.max(1) as f64,
            s.baseline.wall_s,
            mb(s.baseline.peak_rss),
            per_doc(&s.baseline_size),
            per_doc(&s.final_size),
            startup(s),
            restart_tokens(s),
            s.idle_cpu
                .map_or("?".into(), |c| format!("{:.2}", c * 100.0)),
            match (with_before, b) {
                (false, _) => String::new(),
                (true, None) => " - | - | - | - | - |".into(),
                (true, Some(b)) => format!(
                    " {} | {:.0} | {:.0} | {} | {} |",
                    mb(b.baseline.peak_rss),
                    per_doc(&b.baseline_size),
                    per_doc(&b.final_size),
                    startup(b),
                    restart_tokens(b)
                ),
            }
        );
    }
    o.push_str(&targets(opts, after, before));
    o
}

/// One line per target of issue 12: this build's figure, the earlier build's, the verdict.
fn targets(opts: &Options, after: &Measured, before: Option<&Measured>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n### Targets\n");
    let _ = writeln!(o, "| target | this build | before | verdict |");
    let _ = writeln!(o, "|---|---|---|---|");
    let mut line = |what: &str, now: String, was: Option<String>, v: String| {
        let _ = writeln!(
            o,
            "| {what} | {now} | {} | {v} |",
            was.unwrap_or_else(|| "-".into())
        );
    };
    let big = opts.documents.iter().copied().max().unwrap_or(0);
    // Memory: the highest peak of any cycle at the largest N, and what stays after bursts.
    let worst = |m: &Measured| {
        cycles_at(m, big)
            .into_iter()
            .filter_map(|(what, c)| c.peak_rss.map(|p| (p, what)))
            .max()
    };
    if let Some((peak, what)) = worst(after) {
        line(
            &format!(
                "peak RSS ≤ 64 MB in every cycle at {} documents",
                thousands(big as u64)
            ),
            format!("{:.1} MB (highest: {what})", mib(peak)),
            before
                .and_then(worst)
                .map(|(p, w)| format!("{:.1} MB ({w})", mib(p))),
            verdict(mib(peak), 64.0, true),
        );
    }
    let kept = |m: &Measured| {
        m.cycles
            .iter()
            .filter(|r| r.documents == big)
            .filter_map(|r| r.cycle.rss_after)
            .max()
    };
    if let Some(k) = kept(after) {
        line(
            &format!(
                "resident after a cycle ≤ 64 MB at {} documents (after the bursts)",
                thousands(big as u64)
            ),
            format!("{:.1} MB", mib(k)),
            before.and_then(kept).map(|k| format!("{:.1} MB", mib(k))),
            verdict(mib(k), 64.0, true),
        );
    }
    let disk = |m: &Measured| -> Vec<(usize, f64)> {
        m.stores
            .iter()
            .filter(|s| s.documents == big)
            .map(|s| (s.members, per_doc(&s.baseline_size)))
            .collect()
    };
    let show = |v: &[(usize, f64)]| {
        v.iter()
            .map(|(m, b)| format!("{b:.0} (M = {m})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let d = disk(after);
    if let Some(max) = d.iter().map(|(_, b)| *b).reduce(f64::max) {
        line(
            &format!(
                "≤ 128 bytes on disk per tracked document after the baseline, {} documents",
                thousands(big as u64)
            ),
            show(&d),
            before.map(|b| show(&disk(b))),
            verdict(max, 128.0, true),
        );
    }
    if let Some(m) = &after.micro {
        line(
            "outbox ≤ 64 bytes on disk per event beyond its envelope line",
            format!(
                "{:.0} B (line {:.0} B)",
                m.outbox_beyond_line, m.outbox_line
            ),
            before
                .and_then(|b| b.micro.as_ref())
                .map(|b| format!("{:.0} B", b.outbox_beyond_line)),
            verdict(m.outbox_beyond_line, 64.0, true),
        );
        line(
            &format!(
                "diff + commit ≥ 50,000 changed documents/s at {} documents",
                thousands(m.documents)
            ),
            format!("{:.0}/s", m.changed_per_s),
            before
                .and_then(|b| b.micro.as_ref())
                .map(|b| format!("{:.0}/s", b.changed_per_s)),
            verdict(m.changed_per_s, 50_000.0, false),
        );
    }
    let ratios = |m: &Measured| {
        let worst = m
            .cycles
            .iter()
            .map(|r| r.requests as f64 / r.minimum.max(1) as f64)
            .chain(
                m.stores
                    .iter()
                    .map(|s| s.baseline_requests as f64 / s.baseline_minimum.max(1) as f64),
            )
            .fold(0.0, f64::max);
        (worst, m.cycles.len() + m.stores.len())
    };
    let (worst, n) = ratios(after);
    line(
        "requests per cycle = the minimum, every scenario",
        format!("worst ratio {worst:.2} over {n} cycles"),
        before.map(|b| format!("worst ratio {:.2}", ratios(b).0)),
        verdict(worst, 1.0, true),
    );
    let tokens = |m: &Measured| -> u64 {
        m.stores
            .iter()
            .map(|s| s.restart.requests.get(TOKEN).copied().unwrap_or(0))
            .sum()
    };
    line(
        "a restart with valid tokens makes no token call",
        format!(
            "{} token calls in the first cycles after restarts",
            tokens(after)
        ),
        before.map(|b| format!("{}", tokens(b))),
        if tokens(after) == 0 {
            "met".into()
        } else {
            "**missed**".into()
        },
    );
    o
}
