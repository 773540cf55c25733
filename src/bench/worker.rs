//! The measured side of `pollhook bench`: a child process that is the daemon (the engine and
//! sinks `run` builds from a config) with its cycles driven over stdin, so that the driver
//! can change the simulated world between two cycles and each cycle's CPU time and peak
//! memory belong to the daemon alone (the simulator lives in the driver's process).
//!
//! Protocol: one command per stdin line, one JSON object per stdout line in answer.
//! - `cycle` / `resync`: one engine tick of the first account -> [`CycleFigures`];
//! - `drain`: deliver everything committed to the first sink -> [`DrainFigures`];
//! - `size`: the store's bytes on disk and document records -> [`SizeFigures`];
//! - `quit` (or end of input): flush and exit.

use super::measure;
use crate::config::Config;
use crate::engine::Tick;
use crate::providers::caminvoice::client::LIST;
use crate::{scheduler, sinks};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;
use tokio::io::AsyncBufReadExt;

/// What one cycle cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CycleFigures {
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Peak resident memory during the cycle (`None` if the kernel could not say).
    pub peak_rss: Option<u64>,
    /// Resident memory once the cycle is over (`None`: not measured, e.g. an older build).
    #[serde(default)]
    pub rss_after: Option<u64>,
    pub units: usize,
    pub changed: u64,
    pub resynced: u64,
    pub events: u64,
    pub floor: u64,
    pub core_requests: u64,
    pub requests: BTreeMap<String, u64>,
    pub failures: Vec<String>,
}

impl CycleFigures {
    /// The requests the minimum counts: polls, details and list pages (tokens aside).
    pub fn api_requests(&self) -> u64 {
        let list = self.requests.get(LIST).copied().unwrap_or(0);
        self.core_requests + list
    }
}

/// What delivering to the JSONL sink cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainFigures {
    pub events: u64,
    pub secs: f64,
}

/// The store's size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SizeFigures {
    pub bytes: u64,
    pub documents: u64,
}

/// Serves commands until `quit` or the end of stdin.
pub async fn serve(config: Config) -> Result<(), String> {
    let engine = scheduler::open(&config).map_err(|e| e.to_string())?;
    let mut sink = match config.sinks.first() {
        Some(s) => Some(sinks::build(s).map_err(|e| e.to_string())?),
        None => None,
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut out = std::io::stdout();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match line.trim() {
            cmd @ ("cycle" | "resync") => {
                measure::reset_peak_rss();
                let (cpu, began) = (measure::cpu_time(), Instant::now());
                let tick = engine.tick(0, cmd == "resync").await;
                let wall_s = began.elapsed().as_secs_f64();
                let cpu_s = (measure::cpu_time() - cpu).as_secs_f64();
                let Tick::Ran(r) = tick else {
                    return Err("the bench worker's tick was skipped (a bug)".into());
                };
                serde_json::to_string(&CycleFigures {
                    wall_s,
                    cpu_s,
                    peak_rss: measure::peak_rss(),
                    rss_after: measure::rss(),
                    units: r.units,
                    changed: r.changed,
                    resynced: r.resynced,
                    events: r.events,
                    floor: r.floor,
                    core_requests: r.core_requests,
                    requests: r
                        .requests
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect(),
                    failures: r.failures.iter().map(|f| f.to_string()).collect(),
                })
            }
            "drain" => {
                let began = Instant::now();
                let events = match sink.as_mut() {
                    Some(s) => sinks::drain(engine.store(), s)
                        .await
                        .map_err(|e| e.to_string())?,
                    None => 0,
                };
                serde_json::to_string(&DrainFigures {
                    events,
                    secs: began.elapsed().as_secs_f64(),
                })
            }
            "size" => {
                let store = engine.store();
                store.flush().await.map_err(|e| e.to_string())?;
                serde_json::to_string(&SizeFigures {
                    bytes: store.size_on_disk().map_err(|e| e.to_string())?,
                    documents: store.count_all_state().map_err(|e| e.to_string())? as u64,
                })
            }
            "quit" => break,
            other => return Err(format!("bench worker: unknown command {other:?}")),
        }
        .expect("figures serialize");
        writeln!(out, "{answer}")
            .and_then(|_| out.flush())
            .map_err(|e| e.to_string())?;
    }
    engine.store().flush().await.map_err(|e| e.to_string())
}
