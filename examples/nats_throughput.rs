//! Measures events per second through the NATS sink into a local JetStream stream (a
//! nats-server this example starts on 127.0.0.1 with file storage in a temp dir): publish with
//! `Nats-Msg-Id`, await the PubAck, ack. Per-document with 256 publishes in flight (the
//! default), per-document with 16, and in-order (one PubAck at a time), each with its own
//! cursor over the same outbox and its own stream (file storage, fsync'd by the server on its
//! own schedule).
//!
//!     cargo run --release --example nats_throughput [EVENTS] [DOCUMENTS]
//!
//! Defaults: 20000 events over 1000 documents. Needs nats-server (see tests/common/nats.rs).

#[path = "../tests/common/nats.rs"]
mod nats;

use pollhook::bench::sample;
use pollhook::store::Store;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (total, docs) = sample::args(20_000, 1000);
    let Some(server) = nats::NatsServer::start("nats_throughput", &[]) else {
        std::process::exit(2);
    };
    let url = server.url();
    let runs = [
        (
            "per-doc-256",
            "ordering = \"per-document\"\nconcurrency = 256",
        ),
        (
            "per-doc-16",
            "ordering = \"per-document\"\nconcurrency = 16",
        ),
        ("in-order", "ordering = \"in-order\""),
    ];
    let mut sinks = String::new();
    for (name, delivery) in runs {
        let stream = name.replace('-', "_").to_uppercase();
        nats::create_stream(
            &url,
            &stream,
            &[&format!("{name}.>")],
            Duration::from_secs(120),
        )
        .await;
        sinks.push_str(&format!(
            "\n[[sinks]]\nname = \"{name}\"\nkind = \"nats\"\nservers = [\"{url}\"]\nstream = \"{stream}\"\nsubject = \"{name}.{{account}}.{{type}}\"\n{delivery}\n"
        ));
    }
    let dir = std::env::temp_dir().join(format!("pollhook-nats-bench-{}", std::process::id()));
    let config = sample::config(&dir, &sinks);
    let store = Store::open(&config.daemon.state_dir).expect("store opens");
    let events = (0..total)
        .map(|i| sample::status_updated("nats-bench", i, i % docs))
        .collect();
    sample::commit_all(&store, events, 256).await;
    println!(
        "events: {total} over {docs} documents, published to JetStream at {url} (file storage)"
    );
    sample::drain_each_sink(&config, &store, total).await;
    for (name, _) in runs {
        let stream = name.replace('-', "_").to_uppercase();
        assert_eq!(nats::count(&url, &stream).await, total, "{stream}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
