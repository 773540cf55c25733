//! Measures events per second through the hook sink with a trivial hook (`/bin/true`): one
//! process spawned per event, stdin written, exit status read, ack. In-order (one at a time)
//! and per-document with concurrency 4, each draining the same outbox with its own cursor.
//!
//!     cargo run --release --example hook_throughput [EVENTS] [DOCUMENTS]
//!
//! Defaults: 2000 events over 64 documents.

use pollhook::config::Config;
use pollhook::event::{event_id, NewEvent};
use pollhook::sinks;
use pollhook::store::{Batch, Store};
use std::path::Path;
use std::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let total = args.first().copied().unwrap_or(2000);
    let docs = args.get(1).copied().unwrap_or(64).max(1);
    let dir = std::env::temp_dir().join(format!("pollhook-hook-bench-{}", std::process::id()));
    let config = Config::parse(
        &format!(
            r#"
[daemon]
state_dir = "{}"
[[accounts]]
name = "bench"
provider = "caminvoice"
base_url = "http://127.0.0.1:9"
client_id = "c"
client_secret = "s"
[[accounts.members]]
endpoint_id = "KHUID00001234"
refresh_token = "r"

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
            dir.display()
        ),
        Path::new("<bench>"),
    )
    .expect("the bench config is valid");
    let store = Store::open(&config.daemon.state_dir).expect("store opens");
    let events: Vec<NewEvent> = (0..total)
        .map(|i| {
            let doc = format!("{:08x}-0000-4000-8000-{:012x}", i % docs, i % docs);
            NewEvent {
                id: event_id(&["hook-bench", &i.to_string()]),
                provider: "caminvoice",
                account: "bench".into(),
                event_type: "DOCUMENT.STATUS_UPDATED".into(),
                occurred_at: 1_700_000_000_000 + i as i64,
                detected_at: 1_700_000_000_000 + i as i64,
                subject: format!("KHUID00001234/{doc}"),
                payload: format!(
                    r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{doc}","endpoint_id":"KHUID00001234","status":"ACCEPTED"}}"#
                ),
            }
        })
        .collect();
    for chunk in events.chunks(256) {
        store
            .commit(Batch {
                events: chunk.to_vec(),
                ..Batch::default()
            })
            .await
            .expect("commit");
    }
    println!("events: {total} over {docs} documents, hook /bin/true");
    for s in &config.sinks {
        let mut runner = sinks::build(s).expect("sink builds");
        let began = Instant::now();
        let n = sinks::drain(&store, &mut runner).await.expect("drain");
        let secs = began.elapsed().as_secs_f64();
        assert_eq!(n, total);
        println!(
            "{:<13} {:.0} events/s ({secs:.2} s)",
            s.name,
            total as f64 / secs
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
