//! Measures events per second through the hook sink with a trivial hook (`/bin/true`): one
//! process spawned per event, stdin written, exit status read, ack. In-order (one at a time)
//! and per-document with concurrency 4, each draining the same outbox with its own cursor.
//!
//!     cargo run --release --example hook_throughput [EVENTS] [DOCUMENTS]
//!
//! Defaults: 2000 events over 64 documents.

use pollhook::bench::sample;
use pollhook::store::Store;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (total, docs) = sample::args(2000, 64);
    let dir = std::env::temp_dir().join(format!("pollhook-hook-bench-{}", std::process::id()));
    let config = sample::config(
        &dir,
        r#"
[[sinks]]
name = "in-order"
kind = "hook"
command = ["/bin/true"]

[[sinks]]
name = "per-document"
kind = "hook"
command = ["/bin/true"]
ordering = "per-document"
concurrency = 4
"#,
    );
    let store = Store::open(&config.daemon.state_dir).expect("store opens");
    let events = (0..total)
        .map(|i| sample::status_updated("hook-bench", i, i % docs))
        .collect();
    sample::commit_all(&store, events, 256).await;
    println!("events: {total} over {docs} documents, hook /bin/true");
    sample::drain_each_sink(&config, &store, total).await;
    let _ = std::fs::remove_dir_all(&dir);
}
