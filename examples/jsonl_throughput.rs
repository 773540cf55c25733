//! Measures events per second through commit (sled transaction + flush) and through the JSONL
//! sink (write + fsync + ack), in one run on this machine.
//!
//!     cargo run --release --example jsonl_throughput [EVENTS] [PER_COMMIT]
//!
//! Defaults: 100000 events, committed 256 at a time (the CamInvoice chunk size).

use pollhook::bench::sample;
use pollhook::sinks::{self, jsonl::JsonlSink};
use pollhook::store::Store;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (total, per_commit) = sample::args(100_000, 256);
    let dir = std::env::temp_dir().join(format!("pollhook-bench-{}", std::process::id()));
    let store = Store::open(&dir).expect("store opens");

    let events = (0..total)
        .map(|i| sample::status_updated("jsonl-bench", i, i))
        .collect();
    let commit_secs = sample::commit_all(&store, events, per_commit as usize).await;

    let path = dir.join("events.jsonl");
    let mut sink =
        sinks::Runner::batch(Default::default(), Box::new(JsonlSink::new("bench", &path)));
    let began = Instant::now();
    let delivered = sinks::drain(&store, &mut sink).await.expect("drain");
    let sink_secs = began.elapsed().as_secs_f64();
    assert_eq!(delivered, total);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    println!("events:              {total} ({per_commit} per commit)");
    println!(
        "commit (tx + flush): {:.0} events/s ({commit_secs:.2} s)",
        total as f64 / commit_secs
    );
    println!(
        "JSONL sink (fsync'd): {:.0} events/s ({sink_secs:.2} s, {:.0} bytes/line)",
        total as f64 / sink_secs,
        bytes as f64 / total as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
