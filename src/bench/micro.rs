//! The diff + commit half of a cycle, alone: documents whose details are in hand go through
//! the CamInvoice diff and the store's chunked commits, with no HTTP. This is the CPU and disk
//! cost per changed document that remains when the provider answers instantly (L = 0).
//!
//! The documents are those of the grid's bulk world: random version-4 UUIDs (seeded, spelled
//! as the simulator spells them), changed in the order they were created, as the simulator's
//! churn changes them — so, like the grid's bursts, in random order of the store's keys.
//! Also [`outbox_cost`]: what the outbox takes on disk per event beyond its envelope line.
//!
//! `pollhook bench-micro` (hidden) runs both in a process of their own and prints
//! [`MicroFigures`] as JSON: `bench --before <binary>` measures another build that way.

use super::{measure, sample};
use crate::config::{Config, ProviderSettings, Start};
use crate::metrics::Metrics;
use crate::providers::caminvoice::model::Detail;
use crate::providers::caminvoice::CamInvoice;
use crate::providers::{CycleContext, RequestCount};
use crate::store::{Batch, Store};
use crate::time::now_ms;
use pollhook_sim::{pollhook_config, SimCredentials, SimMember};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Documents handed to the diff at once (a poll answer's worth).
const BATCH: usize = 100_000;

/// Throughput of diff + commit, and the outbox's cost on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MicroFigures {
    pub documents: u64,
    pub changed: u64,
    /// First sight of every document (silent history records), documents/s.
    pub baseline_per_s: f64,
    /// Changed documents (each one event), documents/s.
    pub changed_per_s: f64,
    pub events: u64,
    /// The store's bytes on disk after the baseline, per document.
    pub bytes_per_document: f64,
    pub store_bytes: u64,
    /// Peak resident memory of the process during the changes (bytes).
    #[serde(default)]
    pub changed_peak_rss: Option<u64>,
    /// Events of the outbox measurement.
    #[serde(default)]
    pub outbox_events: u64,
    /// Their mean envelope line, bytes.
    #[serde(default)]
    pub outbox_line: f64,
    /// Bytes on disk per event beyond its line (may be negative: compressed).
    #[serde(default)]
    pub outbox_beyond_line: f64,
}

/// A version-4 UUID as the simulator spells it.
fn uuid(rng: &mut fastrand::Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    pollhook_sim::uuid_of(b)
}

/// Stores `documents` records, then changes the first `changed` of them (in creation order);
/// times both.
pub async fn diff_and_commit(
    documents: usize,
    changed: usize,
    dir: &Path,
    seed: u64,
) -> Result<MicroFigures, String> {
    let member = sample::MEMBER;
    let creds = SimCredentials {
        client_id: "bench".into(),
        client_secret: "bench".into(),
        members: vec![SimMember {
            endpoint_id: member.into(),
            refresh_token: "unused".into(),
            company_name_en: "Bench".into(),
        }],
        onlinepajak: vec![],
    };
    let text = pollhook_config(
        &creds,
        "http://127.0.0.1:9",
        &dir.join("state"),
        &dir.join("events.jsonl"),
        "now",
        "0 0 * * * *",
    );
    let config = Config::parse(&text, Path::new("<bench>")).map_err(|e| e.to_string())?;
    let account = &config.accounts[0];
    let ProviderSettings::CamInvoice(settings) = &account.provider else {
        return Err("the bench config is not CamInvoice (a bug)".into());
    };
    let metrics = Metrics::new(&config);
    let provider = Arc::new(
        CamInvoice::new(
            &account.name,
            settings,
            &account.http,
            crate::http::Http::new(&account.http),
            Arc::clone(metrics.account(0)),
        )
        .map_err(|e| e.to_string())?,
    );
    let store = Arc::new(Store::open(&config.daemon.state_dir).map_err(|e| e.to_string())?);
    let ctx = CycleContext {
        store: Arc::clone(&store),
        resync: false,
        start: Start::Now,
        requests: Arc::new(RequestCount::default()),
        shard: crate::shard::Shard::ALL,
        units: None,
        observed: Arc::default(),
    };
    let now = now_ms();
    let mut rng = fastrand::Rng::with_seed(seed);
    let ids: Vec<String> = (0..documents).map(|_| uuid(&mut rng)).collect();
    let detail = |i: usize, status: &str, at: i64| Detail {
        document_id: ids[i].clone(),
        status: Some(status.to_string()),
        supplier_id: Some(member.to_string()),
        customer_id: Some("KHUID09999999".to_string()),
        created_at: Some(now - 86_400_000),
        updated_at: Some(at),
    };

    // The first call records the member's start (now): this history is silent.
    let began = Instant::now();
    let mut events = 0;
    for from in (0..documents).step_by(BATCH) {
        let batch = (from..(from + BATCH).min(documents))
            .map(|i| detail(i, "DELIVERED", now - 3_600_000 + i as i64 % 1000))
            .collect();
        events += provider.apply_known(0, &ctx, batch).await?;
    }
    let baseline_secs = began.elapsed().as_secs_f64();
    store.flush().await.map_err(|e| e.to_string())?;
    let baseline_bytes = store.size_on_disk().map_err(|e| e.to_string())?;

    measure::reset_peak_rss();
    let began = Instant::now();
    for from in (0..changed).step_by(BATCH) {
        let batch = (from..(from + BATCH).min(changed))
            .map(|i| detail(i, "ACKNOWLEDGED", now + 1_000))
            .collect();
        events += provider.apply_known(0, &ctx, batch).await?;
    }
    let changed_secs = began.elapsed().as_secs_f64();
    let changed_peak_rss = measure::peak_rss();
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(MicroFigures {
        documents: documents as u64,
        changed: changed as u64,
        baseline_per_s: documents as f64 / baseline_secs.max(1e-9),
        changed_per_s: changed as f64 / changed_secs.max(1e-9),
        events,
        bytes_per_document: baseline_bytes as f64 / documents.max(1) as f64,
        store_bytes: store.size_on_disk().map_err(|e| e.to_string())?,
        changed_peak_rss,
        ..MicroFigures::default()
    })
}

/// Commits `events` STATUS_UPDATED events (256 per commit, as a burst's chunks) into an empty
/// store; returns (events, mean line bytes, bytes on disk per event beyond its line).
pub async fn outbox_cost(events: u64, dir: &Path) -> Result<(u64, f64, f64), String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    store.flush().await.map_err(|e| e.to_string())?;
    let empty = store.size_on_disk().map_err(|e| e.to_string())?;
    let mut line_bytes = 0u64;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut next = 0;
    while next < events {
        let n = 256.min(events - next);
        let batch: Vec<_> = (next..next + n)
            .map(|i| {
                let mut e = sample::status_updated("outbox", i, 0);
                let doc = uuid(&mut rng);
                e.subject = format!("{}/{doc}", sample::MEMBER);
                e.payload = format!(
                    r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{doc}","endpoint_id":"{}","status":"ACKNOWLEDGED"}}"#,
                    sample::MEMBER
                );
                e.occurred_at = now_ms();
                e.detected_at = e.occurred_at;
                line_bytes += e.to_line(i + 1).len() as u64;
                e
            })
            .collect();
        store
            .commit(Batch::of_events(batch))
            .await
            .map_err(|e| e.to_string())?;
        next += n;
    }
    store.flush().await.map_err(|e| e.to_string())?;
    let bytes = store.size_on_disk().map_err(|e| e.to_string())? - empty;
    let line = line_bytes as f64 / events.max(1) as f64;
    Ok((events, line, bytes as f64 / events.max(1) as f64 - line))
}

/// Both measurements under `dir`, as `bench-micro` prints them.
pub async fn run(documents: usize, dir: &Path, seed: u64) -> Result<MicroFigures, String> {
    let mut m = diff_and_commit(documents, documents / 10, &dir.join("micro"), seed).await?;
    let (n, line, beyond) = outbox_cost(110_000, &dir.join("outbox")).await?;
    m.outbox_events = n;
    m.outbox_line = line;
    m.outbox_beyond_line = beyond;
    Ok(m)
}
