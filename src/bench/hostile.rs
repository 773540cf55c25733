//! `pollhook bench --hostile`: the daemon's peak memory under each hostile answer.
//!
//! The simulator (in this process) answers with junk — millions of `0`s, arrays nested
//! millions deep, real answers padded with megabytes, bodies over their caps — and the daemon
//! (the [`worker`](super::worker) child process, so its memory is its own) runs one cycle
//! against it. Each scenario gets a fresh worker: one honest cycle (the reference), then the
//! hostile one; the peak resident set of each cycle is read from the kernel. Every member is
//! attacked at once (the account's `concurrency` is the member count), which is the worst case
//! the bound in RELIABILITY.md ("Memory per answer") covers.

use super::worker::CycleFigures;
use super::{mb, Worker};
use crate::providers::caminvoice::client::LIST;
use crate::time::now_ms;
use pollhook_sim::{Fault, FaultKind, SimConfig, Simulator};
use std::fmt::Write as _;
use std::path::Path;

const MB: usize = 1 << 20;

/// The documented bound on the daemon's resident memory with one CamInvoice account, in MB:
/// this base (the daemon at rest, with room to spare) plus, per request the account may have in
/// flight (`concurrency`), the largest body cap (the poll's 16 MB) twice — the body, and at
/// worst as much again for what is kept of it (100,000 items; the skipper's stack) — plus one
/// detail.
pub const BOUND_BASE_MB: usize = 16;
pub const BOUND_PER_REQUEST_MB: usize = 33;

/// One hostile answer and how to provoke it.
struct Scenario {
    name: &'static str,
    fault: Fault,
    /// `cycle`, or `resync` (the list walk first).
    command: &'static str,
}

/// What one scenario cost.
struct Row {
    name: &'static str,
    honest: CycleFigures,
    hostile: CycleFigures,
}

fn scenarios(members: u32) -> Vec<Scenario> {
    let every = u32::MAX;
    let s = |name, path: &str, count, kind, command| Scenario {
        name,
        fault: Fault::new(path, count, kind),
        command,
    };
    vec![
        s(
            "poll: `[0,0,…]`, 20 MB streamed (over the 16 MB cap)",
            "document/poll",
            members,
            FaultKind::ZeroArray { bytes: 20 * MB },
            "cycle",
        ),
        s(
            "poll: `[0,0,…]`, 15 MB (7.8 million non-objects)",
            "document/poll",
            members,
            FaultKind::ZeroArray { bytes: 15 * MB },
            "cycle",
        ),
        s(
            "poll: `[[[…]]]`, 15 MB (7.8 million levels)",
            "document/poll",
            members,
            FaultKind::NestedArrays { bytes: 15 * MB },
            "cycle",
        ),
        s(
            "poll: the real answer + 15 MB of nested arrays",
            "document/poll",
            members,
            FaultKind::Padded { bytes: 15 * MB },
            "cycle",
        ),
        s(
            "poll: 100,000 well-formed items of documents that do not exist (9 MB)",
            "document/poll",
            members,
            FaultKind::Phantoms { count: 100_000 },
            "cycle",
        ),
        s(
            "poll: 170,000 such items (15 MB: over the 100,000-item cap)",
            "document/poll",
            members,
            FaultKind::Phantoms { count: 170_000 },
            "cycle",
        ),
        s(
            "detail: `[[[…]]]`, 15 MB (over the 1 MB cap), every detail",
            "{id}",
            every,
            FaultKind::NestedArrays { bytes: 15 * MB },
            "cycle",
        ),
        s(
            "detail: the real answer + 0.9 MB of nested arrays, every detail",
            "{id}",
            every,
            FaultKind::Padded { bytes: 900_000 },
            "cycle",
        ),
        s(
            "list page: the real page + 7.9 MB of nested arrays",
            "GET /api/v1/document",
            members,
            FaultKind::Padded { bytes: 7_900_000 },
            "resync",
        ),
        s(
            "list page: `[0,0,…]`, 20 MB streamed (over the 8 MB cap)",
            "GET /api/v1/document",
            members,
            FaultKind::ZeroArray { bytes: 20 * MB },
            "resync",
        ),
    ]
}

/// Runs every scenario in a temporary directory under `work_dir`; returns the report.
pub async fn run(work_dir: &Path, seed: u64) -> Result<String, String> {
    let root = work_dir.join(format!(
        "pollhook-bench-hostile-{}-{}",
        std::process::id(),
        now_ms()
    ));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let result = run_in(&root, seed).await;
    let _ = std::fs::remove_dir_all(&root);
    result
}

async fn run_in(root: &Path, seed: u64) -> Result<String, String> {
    let members = 4;
    let sim = Simulator::new(SimConfig {
        seed,
        members,
        initial_documents: 400,
        op_companies: 0,
        revoke_probability: 0.0,
        ..SimConfig::default()
    });
    let server = sim
        .serve("127.0.0.1:0".parse().expect("valid address"))
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let config = super::write_config(&sim, &server.base_url(), root, members)?;

    eprintln!("hostile answers: baseline");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut w = Worker::spawn(&exe, &config).await?;
    let baseline: CycleFigures = w.ask("cycle").await?;
    if !baseline.failures.is_empty() {
        return Err(format!("baseline failed: {}", baseline.failures.join("; ")));
    }
    w.quit().await?;

    let mut rows = Vec::new();
    for s in scenarios(members as u32) {
        eprintln!("hostile answers: {}", s.name);
        let mut w = Worker::spawn(&exe, &config).await?;
        for _ in 0..3 {
            sim.step();
        }
        let honest: CycleFigures = w.ask("cycle").await?;
        for _ in 0..3 {
            sim.step();
        }
        sim.inject(s.fault.clone());
        let hostile: CycleFigures = w.ask(s.command).await?;
        // Whatever is left of the fault must not spill into the next scenario.
        sim.clear_faults();
        w.quit().await?;
        rows.push(Row {
            name: s.name,
            honest,
            hostile,
        });
    }
    drop(server);
    Ok(report(members, &baseline, &rows))
}

fn outcome(c: &CycleFigures) -> String {
    let walked = c.requests.get(LIST).copied().unwrap_or(0);
    match c.failures.first() {
        None if walked > 0 => format!("ok; {walked} list page(s) walked"),
        None => "ok".to_string(),
        Some(f) => {
            let f: String = f.chars().take(110).collect();
            format!("{} unit(s) failed: {f}…", c.failures.len())
        }
    }
}

fn report(members: usize, baseline: &CycleFigures, rows: &[Row]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{members} members, concurrency {members} (every member attacked at once); peak RSS of the daemon per cycle\n"
    );
    let _ = writeln!(
        o,
        "baseline list walk (honest): peak RSS {} MB; the bound (RELIABILITY.md, \"Memory per answer\"): {} MB + concurrency x {} MB = {} MB\n",
        mb(baseline.peak_rss),
        BOUND_BASE_MB,
        BOUND_PER_REQUEST_MB,
        BOUND_BASE_MB + members * BOUND_PER_REQUEST_MB,
    );
    let _ = writeln!(
        o,
        "| hostile answer | honest cycle peak RSS MB | hostile cycle peak RSS MB | outcome |"
    );
    let _ = writeln!(o, "|---|---:|---:|---|");
    for r in rows {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            r.name,
            mb(r.honest.peak_rss),
            mb(r.hostile.peak_rss),
            outcome(&r.hostile).replace('|', "\\|"),
        );
    }
    o
}
