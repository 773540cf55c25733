//! `pollhook demo`: the simulator (CamInvoice and OnlinePajak) and the daemon in one process,
//! on a temporary state dir and a one-second schedule; prints each event as the JSONL sink
//! writes it, then a summary with the fidelity against the simulator's ground truth and the
//! API cost the simulator counted, under the endpoint names of pollhook's metrics.
//!
//! The daemon runs exactly as in production (`scheduler::run` with a generated config); the
//! demo only reads the JSONL file it writes, and drives the traffic: one step a second, each
//! only once the daemon has emitted everything the previous steps journaled. A busy machine
//! thus slows the traffic down instead of letting changes overwrite each other between polls
//! (which polling cannot see: README, "What polling cannot see").

use crate::config::Config;
use crate::providers::onlinepajak;
use crate::time::{format_ms, now_ms};
use pollhook_sim::fidelity::{self, Emitted};
use pollhook_sim::{pollhook_config, Cost, SimConfig, Simulator};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Time between traffic steps, and the daemon's schedule.
const STEP: Duration = Duration::from_secs(1);
/// How long a step waits for the daemon to catch up before it goes ahead anyway (the fidelity
/// summary then shows what was lost).
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct Summary {
    pub events_by_type: BTreeMap<String, usize>,
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// The API cost by the simulator's counters, and its floor from what it changed.
    pub cost: Cost,
    /// Traffic steps taken.
    pub steps: u64,
    pub fidelity: fidelity::Report,
    pub totals: crate::engine::Totals,
}

/// Runs the demo for `duration` of traffic (one step a second) with `seed`, printing to `out`
/// as it goes (the daemon's own log goes where `logging` sends it).
pub async fn run(
    duration: Duration,
    seed: u64,
    out: &mut (dyn Write + Send),
) -> Result<Summary, String> {
    let sim = Simulator::new(SimConfig {
        seed,
        ..SimConfig::default()
    });
    let server = sim
        .serve("127.0.0.1:0".parse().expect("valid address"))
        .await
        .map_err(|e| format!("cannot start the simulator on 127.0.0.1: {e}"))?;
    let dir = temp_dir()?;
    let events_path = dir.join("events.jsonl");
    let start = now_ms();
    let text = pollhook_config(
        &sim.credentials(),
        &server.base_url(),
        &dir.join("state"),
        &events_path,
        &format_ms(start),
        "* * * * * *",
    );
    let config = Config::parse(&text, Path::new("<demo>"))
        .map_err(|e| format!("the demo's own config is invalid (a bug): {e}"))?;

    let creds = sim.credentials();
    let _ = writeln!(
        out,
        "pollhook demo (seed {seed}): simulated CamInvoice ({} members) and OnlinePajak ({} companies) at {}; the daemon polls every second.",
        creds.members.len(),
        creds.onlinepajak.len(),
        server.base_url()
    );
    let _ = writeln!(
        out,
        "Scripted: the simulated traffic disconnects one CamInvoice member during the run. The daemon then logs an ERROR (CamInvoice refused the member's refresh token) and, at the second refusal, a WARN as it emits ENTITY.REVOKED: both are expected."
    );
    let _ = writeln!(
        out,
        "Events below are read from {} as the JSONL sink writes them.\n",
        events_path.display()
    );

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(crate::scheduler::run(config, async {
        let _ = stop_rx.await;
    }));

    let mut tail = Tail {
        path: events_path.clone(),
        offset: 0,
        seen: Vec::new(),
        began: Instant::now(),
    };
    let steps = duration.as_secs().max(1);
    let mut taken = 0;
    let mut next = Instant::now() + STEP;
    // Step when a second has passed and the daemon has caught up; after the last step, wait
    // for the catch-up only.
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tail.print_new(out)?;
        if daemon.is_finished() {
            break;
        }
        let caught_up = tail.seen.len() >= sim.journal_len();
        let now = Instant::now();
        if now < next || (!caught_up && now < next + CATCH_UP_LIMIT) {
            continue;
        }
        if taken == steps {
            break;
        }
        if !caught_up {
            let _ = writeln!(
                out,
                "(the daemon is behind the traffic by more than {CATCH_UP_LIMIT:?}; stepping anyway)"
            );
        }
        sim.step();
        taken += 1;
        next = now + STEP;
    }
    let _ = stop_tx.send(());
    let totals = daemon
        .await
        .map_err(|e| format!("the daemon task failed: {e}"))?
        .map_err(|e| format!("the daemon stopped with an error: {e}"))?;
    tail.print_new(out)?;

    let truth = fidelity::expected(&sim.journal(), &sim.credentials(), start);
    let report = fidelity::compare(&truth, &tail.seen);
    let mut events_by_type = BTreeMap::new();
    for e in &tail.seen {
        *events_by_type.entry(e.event_type.clone()).or_insert(0) += 1;
    }
    let summary = Summary {
        events_by_type,
        requests_by_endpoint: sim
            .request_counts()
            .into_iter()
            .map(|(route, n)| (metric_label(&route).to_string(), n))
            .collect(),
        cost: sim.cost(),
        steps: taken,
        fidelity: report,
        totals,
    };
    let _ = print_summary(out, &summary, seed);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(summary)
}

/// A simulator route under the name pollhook gives the endpoint in its metrics and logs
/// (`pollhook_requests_total{endpoint}`): CamInvoice's are the same; OnlinePajak's are named
/// for what they do, since their paths are assumptions `[accounts.api]` may change.
fn metric_label(route: &str) -> &str {
    match route {
        "GET /v2.0/invoices/sale" => onlinepajak::client::BULK_FETCH,
        "GET /v2.0/invoices/sale/{id}" => onlinepajak::client::RETRIEVE,
        other => other,
    }
}

fn temp_dir() -> Result<PathBuf, String> {
    let dir =
        std::env::temp_dir().join(format!("pollhook-demo-{}-{}", std::process::id(), now_ms()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Follows the JSONL file, printing complete lines.
struct Tail {
    path: PathBuf,
    offset: usize,
    seen: Vec<Emitted>,
    began: Instant,
}

impl Tail {
    fn print_new(&mut self, out: &mut (dyn Write + Send)) -> Result<(), String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("reading {}: {e}", self.path.display())),
        };
        let Some(end) = text[self.offset..].rfind('\n').map(|i| self.offset + i + 1) else {
            return Ok(());
        };
        let new = fidelity::read_jsonl(&text[self.offset..end])?;
        self.offset = end;
        for e in new {
            let t = self.began.elapsed().as_secs_f64();
            let _ = writeln!(out, "[{t:6.1}s] {:<24} {}", e.event_type, e.payload);
            self.seen.push(e);
        }
        Ok(())
    }
}

fn print_summary(out: &mut (dyn Write + Send), s: &Summary, seed: u64) -> std::io::Result<()> {
    let t = &s.totals;
    writeln!(
        out,
        "\n── summary ── {} traffic steps, seed {seed}, {} cycles ({} skipped ticks)",
        s.steps, t.cycles, t.skipped_ticks
    )?;
    writeln!(out, "events by type:")?;
    for (k, v) in &s.events_by_type {
        writeln!(out, "  {k:<26} {v}")?;
    }
    writeln!(
        out,
        "API requests by endpoint (counted by the simulator; named as in pollhook's metrics):"
    )?;
    for (k, v) in &s.requests_by_endpoint {
        writeln!(out, "  {k:<34} {v}")?;
    }
    let c = &s.cost;
    writeln!(
        out,
        "API cost by the simulator: {} requests ({} polls, {} details, {} Bulk Fetch, {} Retrieve); floor {} ({} polls + {} details and {} Bulk Fetch pages the changes needed); ratio {:.2}",
        c.requests(),
        c.polls,
        c.details,
        c.bulk_fetches,
        c.retrieves,
        c.floor(),
        c.polls,
        c.details_needed,
        c.bulk_fetches_needed,
        if c.floor() == 0 { 1.0 } else { c.requests() as f64 / c.floor() as f64 }
    )?;
    let f = &s.fidelity;
    writeln!(
        out,
        "fidelity: {}/{} ground-truth webhooks emitted with identical payloads ({:.1}%); {} envelope mismatches, {} unexpected, {} duplicate ids, {} documents out of order",
        f.matched,
        f.expected,
        f.percent(),
        f.mismatches.len(),
        f.unexpected.len(),
        f.duplicate_ids,
        f.out_of_order
    )?;
    for m in f.missing.iter().take(5) {
        writeln!(out, "  missing: {m}")?;
    }
    for u in f.unexpected.iter().take(5) {
        writeln!(out, "  unexpected: {u}")?;
    }
    for m in f.mismatches.iter().take(5) {
        writeln!(
            out,
            "  envelope {}: expected {}, emitted {} for {}",
            m.field, m.expected, m.emitted, m.payload
        )?;
    }
    Ok(())
}
