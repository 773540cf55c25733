//! The diff + commit half of a cycle, alone: documents whose details are in hand go through
//! the CamInvoice diff and the store's chunked commits (sled transaction + flush), with no
//! HTTP. This is the CPU and disk cost per changed document that remains when the provider
//! answers instantly (L = 0).

use super::sample;
use crate::config::{Config, ProviderSettings, Start};
use crate::metrics::Metrics;
use crate::providers::caminvoice::model::Detail;
use crate::providers::caminvoice::CamInvoice;
use crate::providers::{CycleContext, RequestCount};
use crate::store::Store;
use crate::time::now_ms;
use pollhook_sim::{pollhook_config, SimCredentials, SimMember};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Documents handed to the diff at once (a poll answer's worth).
const BATCH: usize = 100_000;

/// Throughput of diff + commit.
#[derive(Debug, Clone, Default)]
pub struct MicroFigures {
    pub documents: u64,
    pub changed: u64,
    /// First sight of every document (silent history records), documents/s.
    pub baseline_per_s: f64,
    /// Changed documents (each one event), documents/s.
    pub changed_per_s: f64,
    pub events: u64,
    pub store_bytes: u64,
}

/// Stores `documents` records, then changes the first `changed` of them; times both.
pub async fn diff_and_commit(
    documents: usize,
    changed: usize,
    dir: &Path,
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
    let detail = |i: usize, status: &str, at: i64| Detail {
        document_id: sample::document_id(i as u64),
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

    let began = Instant::now();
    for from in (0..changed).step_by(BATCH) {
        let batch = (from..(from + BATCH).min(changed))
            .map(|i| detail(i, "ACKNOWLEDGED", now + 1_000))
            .collect();
        events += provider.apply_known(0, &ctx, batch).await?;
    }
    let changed_secs = began.elapsed().as_secs_f64();
    store.flush().await.map_err(|e| e.to_string())?;
    Ok(MicroFigures {
        documents: documents as u64,
        changed: changed as u64,
        baseline_per_s: documents as f64 / baseline_secs.max(1e-9),
        changed_per_s: changed as f64 / changed_secs.max(1e-9),
        events,
        store_bytes: store.size_on_disk().map_err(|e| e.to_string())?,
    })
}
