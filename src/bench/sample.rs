//! What a benchmark's documents and events look like: one place for the throughput examples
//! (`examples/*_throughput.rs`) and the diff + commit measurement ([`super::micro`]).

use crate::config::Config;
use crate::event::{event_id, NewEvent};
use crate::sinks;
use crate::store::{Batch, Store};
use std::path::Path;
use std::time::Instant;

/// The one member of the sample account.
pub const MEMBER: &str = "KHUID00001234";

/// A UUID-shaped document id with `i` in its first and last fields.
pub fn document_id(i: u64) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32, i)
}

/// Event number `i`, a `DOCUMENT.STATUS_UPDATED` of document `doc`; `tag` keeps the ids of
/// different benchmarks apart.
pub fn status_updated(tag: &str, i: u64, doc: u64) -> NewEvent {
    let doc = document_id(doc);
    NewEvent {
        id: event_id(&[tag, &i.to_string()]),
        provider: "caminvoice",
        account: "bench".into(),
        event_type: "DOCUMENT.STATUS_UPDATED".into(),
        occurred_at: 1_700_000_000_000 + i as i64,
        detected_at: 1_700_000_000_000 + i as i64,
        subject: format!("{MEMBER}/{doc}"),
        payload: format!(
            r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{doc}","endpoint_id":"{MEMBER}","status":"ACCEPTED"}}"#
        ),
    }
}

/// The throughput examples' two numeric arguments (e.g. `[EVENTS] [DOCUMENTS]`), with their
/// defaults; the second is at least 1.
pub fn args(first: u64, second: u64) -> (u64, u64) {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    (
        args.first().copied().unwrap_or(first),
        args.get(1).copied().unwrap_or(second).max(1),
    )
}

/// Commits `events` in order, `per_commit` at a time; returns the seconds it took.
pub async fn commit_all(store: &Store, events: Vec<NewEvent>, per_commit: usize) -> f64 {
    let began = Instant::now();
    for chunk in events.chunks(per_commit.max(1)) {
        store
            .commit(Batch::of_events(chunk.to_vec()))
            .await
            .expect("commit");
    }
    began.elapsed().as_secs_f64()
}

/// One CamInvoice account with the one member (never polled: nothing listens at its
/// base_url), the state under `dir`, and `sinks` (`[[sinks]]` tables).
pub fn config(dir: &Path, sinks: &str) -> Config {
    let text = format!(
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
endpoint_id = "{MEMBER}"
refresh_token = "r"
{sinks}"#,
        dir.display()
    );
    Config::parse(&text, Path::new("<bench>")).expect("the bench config is valid")
}

/// Delivers the whole outbox (`total` events) through each sink of `config` in turn, each with
/// its own cursor; prints events/s per sink.
pub async fn drain_each_sink(config: &Config, store: &Store, total: u64) {
    for s in &config.sinks {
        let mut runner = sinks::build(s).expect("sink builds");
        let began = Instant::now();
        let n = sinks::drain(store, &mut runner).await.expect("drain");
        let secs = began.elapsed().as_secs_f64();
        assert_eq!(n, total);
        println!(
            "{:<13} {:.0} events/s ({secs:.2} s)",
            s.name,
            total as f64 / secs
        );
    }
}
