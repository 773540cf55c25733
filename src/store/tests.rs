//! The store's tests: commits, acks, pruning, schema and identity refusals, reset.

use super::*;
use crate::event::{event_id, NewEvent};

/// A batch with one document record and one progress record of unit `a`/`m`.
pub(crate) fn with_records(events: Vec<NewEvent>) -> Batch {
    let mut b = Batch::of_events(events);
    b.put_state(Unit::new("a", "m"), "d1", b"rec".to_vec());
    b.put_cursor(Unit::new("a", "m"), b"cur".to_vec());
    b
}

pub(crate) fn ev(n: u32) -> NewEvent {
    NewEvent {
        id: event_id(&["t", &n.to_string()]),
        provider: "caminvoice",
        account: "a".into(),
        event_type: "DOCUMENT.DELIVERED".into(),
        occurred_at: 0,
        detected_at: 0,
        subject: format!("m/d{n}"),
        payload: format!(r#"{{"n":{n}}}"#),
    }
}

#[tokio::test]
async fn commit_assigns_consecutive_seqs_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let mut rx = s.subscribe();
        let c = s.commit(with_records(vec![ev(1), ev(2)])).await.unwrap();
        assert_eq!(
            c,
            Committed {
                events: 2,
                duplicates: 0
            }
        );
        assert_eq!(*rx.borrow_and_update(), 2);
        assert_eq!(s.last_seq(), 2);
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.last_seq(), 2);
    let got = s.read_outbox(0, 10).unwrap();
    assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(got[1].envelope().unwrap().payload.get(), r#"{"n":2}"#);
    assert_eq!(
        s.get_state(Unit::new("a", "m"), "d1")
            .unwrap()
            .unwrap()
            .as_slice(),
        b"rec"
    );
    assert_eq!(
        s.get_cursor(Unit::new("a", "m"))
            .unwrap()
            .unwrap()
            .as_slice(),
        b"cur"
    );
    assert_eq!(s.count_state(Unit::new("a", "m")).unwrap(), 1);
    let c = s
        .commit(Batch {
            events: vec![ev(3)],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(c.events, 1);
    assert_eq!(s.read_outbox(2, 10).unwrap()[0].seq, 3);
}

#[tokio::test]
async fn an_event_id_enters_the_outbox_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    s.commit(Batch {
        events: vec![ev(1)],
        ..Batch::default()
    })
    .await
    .unwrap();
    let c = s
        .commit(Batch {
            events: vec![ev(1), ev(2), ev(2)],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(
        c,
        Committed {
            events: 1,
            duplicates: 2
        }
    );
    assert_eq!(s.read_outbox(0, 10).unwrap().len(), 2);
}

#[tokio::test]
async fn acks_are_per_sink_and_never_go_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.acked("a").unwrap(), 0);
    s.ack("a", 5).unwrap();
    s.ack("a", 3).unwrap();
    s.ack("b", 1).unwrap();
    assert_eq!(s.acked("a").unwrap(), 5);
    assert_eq!(s.acked("b").unwrap(), 1);
}

#[test]
fn a_second_opener_gets_a_clear_locked_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    match Store::open(dir.path()) {
        Err(e @ StoreError::Locked(_)) => {
            assert!(e.to_string().contains("in use by another pollhook"))
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a locked store"),
    }
}

#[tokio::test]
async fn a_new_store_takes_small_log_segments_and_one_made_with_sleds_default_still_opens() {
    // sled's `conf`: text lines, then a binary checksum.
    let conf = |dir: &Path| std::fs::read(dir.join(SLED_DIR).join("conf")).unwrap();
    // New: the store's segment size (garbage of a baseline walk drains sooner).
    let fresh = tempfile::tempdir().unwrap();
    drop(Store::open(fresh.path()).unwrap());
    assert!(conf(fresh.path()).starts_with(b"segment_size: 131072\n"));
    // Made with sled's default 512 KiB (every schema-3 store before this): opens, keeps its
    // size (sled refuses a change), and reads back what it held.
    let old = tempfile::tempdir().unwrap();
    {
        let s = with_events(old.path(), 3).await;
        drop(s);
        let path = old.path().join(SLED_DIR);
        let moved = old.path().join("made-by-default");
        std::fs::rename(&path, &moved).unwrap();
        let db = sled::Config::new().path(&path).open().unwrap();
        let src = super::open::config(&moved).open().unwrap();
        db.import(src.export());
        db.flush().unwrap();
    }
    assert!(conf(old.path()).starts_with(b"segment_size: 524288\n"));
    let s = Store::open(old.path()).unwrap();
    assert_eq!(s.read_outbox(0, 10).unwrap().len(), 3);
    assert!(conf(old.path()).starts_with(b"segment_size: 524288\n"));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.data
            .insert(keys::meta(SCHEMA), &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        s.db.flush().unwrap();
    }
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::Newer { .. })
    ));
}

#[tokio::test]
async fn prune_removes_only_old_events_every_sink_finished_and_keeps_ids_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let events: Vec<NewEvent> = (1..=5)
        .map(|n| NewEvent {
            detected_at: if n <= 4 { 1_000 } else { 10_000 },
            ..ev(n)
        })
        .collect();
    s.commit(Batch {
        events,
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(s.subject(2).unwrap().as_deref(), Some("a\0m/d2"));
    s.ack("fast", 5).unwrap();
    s.ack("slow", 3).unwrap();
    s.record_attempts(
        "fast",
        2,
        Attempts {
            count: 1,
            last_at: 0,
        },
    )
    .unwrap(); // stale
    s.record_attempts(
        "slow",
        4,
        Attempts {
            count: 2,
            last_at: 0,
        },
    )
    .unwrap();
    s.put_dead(&DeadLetter {
        sink: "fast".into(),
        attempts: 3,
        error: "e".into(),
        at: 0,
        event: s.event(1).unwrap().unwrap(),
    })
    .unwrap();
    let sinks = ["fast".to_string(), "slow".to_string()];
    let p = s.prune(5_000, &sinks).await.unwrap();
    // 1..=3 are acked by both and old; 4 is old but "slow" has not finished it; 5 is young.
    assert_eq!(
        p,
        Pruned {
            events: 3,
            attempts: 1
        }
    );
    assert_eq!(s.first_seq().unwrap(), Some(4));
    assert_eq!(s.event(2).unwrap(), None);
    assert_eq!(s.subject(2).unwrap(), None);
    assert_eq!(
        s.seq_of(&ev(2).id).unwrap(),
        Some(2),
        "ids outlive their events"
    );
    assert_eq!(s.attempts("slow", 4).unwrap().unwrap().count, 2);
    assert_eq!(s.attempts("fast", 2).unwrap(), None);
    let dead = s.dead_letters(Some("fast")).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].event.envelope().unwrap().id,
        ev(1).id,
        "the dead letter keeps its event"
    );
    // The id guard still holds after pruning: the same change is not emitted again.
    let c = s
        .commit(Batch {
            events: vec![ev(2)],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(c.duplicates, 1);
    assert!(
        s.dead_letters(Some("fas")).unwrap().is_empty(),
        "a sink's prefix is exact"
    );
    s.remove_dead("fast", 1).unwrap();
    assert!(s.dead_letters(None).unwrap().is_empty());
}

async fn with_events(dir: &Path, n: u32) -> Store {
    let s = Store::open(dir).unwrap();
    s.commit(Batch {
        events: (1..=n).map(ev).collect(),
        ..Batch::default()
    })
    .await
    .unwrap();
    s
}

fn refusal(dir: &Path) -> String {
    match Store::open(dir) {
        Err(e @ StoreError::Refused { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened"),
    }
}

#[tokio::test]
async fn a_store_that_sled_opens_empty_or_without_its_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(with_events(dir.path(), 3).await);
    // sled's directory lost (or opened empty): the identity file remembers.
    std::fs::remove_dir_all(dir.path().join(SLED_DIR)).unwrap();
    let e = refusal(dir.path());
    assert!(
        e.contains("EMPTY")
            && e.contains("pollhook store restore")
            && e.contains("pollhook store reset"),
        "{e}"
    );
    // Refusing wrote nothing: it stays refused.
    refusal(dir.path());
    let (s, problem) = Store::inspect(dir.path()).unwrap();
    assert!(problem.unwrap().contains("damaged"));
    assert_eq!(s.last_seq(), 0);
}

#[tokio::test]
async fn a_store_that_lost_events_a_sink_already_has_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_events(dir.path(), 3).await;
    s.ack("hook", 3).unwrap();
    s.flush().await.unwrap();
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    // What a store that lost its last events looks like: the ack survived them.
    s.acks.insert(b"hook", &5u64.to_be_bytes()).unwrap();
    s.db.flush().unwrap();
    drop(s);
    let e = refusal(dir.path());
    assert!(
        e.contains("sink hook is acknowledged up to seq 5, but the store's last event is seq 3"),
        "{e}"
    );
}

#[tokio::test]
async fn a_store_directory_replaced_by_another_stores_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    drop(with_events(a.path(), 3).await);
    drop(with_events(b.path(), 1).await);
    std::fs::remove_dir_all(a.path().join(SLED_DIR)).unwrap();
    std::fs::rename(b.path().join(SLED_DIR), a.path().join(SLED_DIR)).unwrap();
    let e = refusal(a.path());
    assert!(e.contains("was replaced by another store"), "{e}");
}

#[tokio::test]
async fn a_store_from_before_identities_adopts_one_and_a_lost_id_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    {
        // What an older pollhook left: no identity anywhere.
        let s = with_events(dir.path(), 2).await;
        s.data.remove(keys::meta(STORE_ID)).unwrap();
        s.db.flush().unwrap();
    }
    std::fs::remove_file(dir.path().join(identity::ID_FILE)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    let id = s.id().to_string();
    assert!(identity::valid_id(&id));
    assert_eq!(s.last_seq(), 2, "the old events are still there");
    assert_eq!(
        identity::read_id_file(dir.path()),
        identity::IdFile::Id(id.clone())
    );
    drop(s);
    std::fs::remove_file(dir.path().join(identity::ID_FILE)).unwrap();
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.id(), id, "sled's identity is kept");
    assert_eq!(identity::read_id_file(dir.path()), identity::IdFile::Id(id));
}

#[tokio::test]
async fn reset_keeps_the_old_store_aside_and_continues_after_the_adopted_tails() {
    let dir = tempfile::tempdir().unwrap();
    let old = with_events(dir.path(), 3).await;
    let old_id = old.id().to_string();
    drop(old);
    let (s, aside) = Store::reset(dir.path(), 8, &[("evt_file_tail".into(), 7)]).unwrap();
    let aside = aside.expect("the old store is kept");
    assert!(aside.join(SLED_DIR).is_dir() && aside.join(identity::ID_FILE).is_file());
    assert_ne!(s.id(), old_id);
    assert_eq!(s.last_seq(), 7);
    let origin = s.origin();
    assert!(origin.wrote("evt_file_tail", 7).unwrap());
    assert!(!origin.wrote("evt_file_tail", 6).unwrap());
    assert!(
        !origin.wrote(&ev(3).id, 3).unwrap(),
        "the old store's events are not this one's"
    );
    drop(origin); // it holds sled open
    s.commit(Batch {
        events: vec![ev(1)],
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(s.read_outbox(0, 10).unwrap()[0].seq, 8);
    drop(s);
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.last_seq(), 8);
    assert!(s.origin().wrote(&ev(1).id, 8).unwrap());
}
