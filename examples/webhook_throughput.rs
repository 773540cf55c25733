//! Measures events per second through the webhook sink to a local receiver (axum on
//! 127.0.0.1, answering 204): sign, POST, read the status, ack. In-order (one request at a
//! time) and per-document with concurrency 4, each with its own cursor over the same outbox.
//!
//!     cargo run --release --example webhook_throughput [EVENTS] [DOCUMENTS]
//!
//! Defaults: 10000 events over 64 documents.

use pollhook::bench::sample;
use pollhook::store::Store;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (total, docs) = sample::args(10_000, 64);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/in", listener.local_addr().expect("address"));
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(|_: axum::body::Bytes| async { axum::http::StatusCode::NO_CONTENT }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = std::env::temp_dir().join(format!("pollhook-webhook-bench-{}", std::process::id()));
    let config = sample::config(
        &dir,
        &format!(
            r#"
[[sinks]]
name = "in-order"
kind = "webhook"
url = "{url}"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]

[[sinks]]
name = "per-document"
kind = "webhook"
url = "{url}"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"]
ordering = "per-document"
concurrency = 4
"#
        ),
    );
    let store = Store::open(&config.daemon.state_dir).expect("store opens");
    let events = (0..total)
        .map(|i| sample::status_updated("webhook-bench", i, i % docs))
        .collect();
    sample::commit_all(&store, events, 256).await;
    println!("events: {total} over {docs} documents, POST to {url} (204)");
    sample::drain_each_sink(&config, &store, total).await;
    let _ = std::fs::remove_dir_all(&dir);
}
