//! `pollhook store verify`: reads every tree and checks each record and the cross-references
//! between them, under the commit lock (so, through the daemon, a consistent view).
//!
//! What is checked: the identity (sled's and `store-id`); `meta` (schema version, next seq,
//! adopted tails); every outbox entry decodes, its envelope's seq is its key and its id maps
//! back to it in `ids`; every `ids` entry is below the next seq, no two share a seq, and those
//! not yet pruned have their outbox entry; acks never pass the last committed seq; attempt
//! and dead-letter keys and values decode; provider records decode (through the caller's
//! [`RecordCheck`]: only providers know their bytes). Reads only.

use super::{
    decode_seq, split_outbox_value, split_sink_key, DeadRead, Store, StoreError, ADOPTED, NEXT_SEQ,
    SCHEMA, SCHEMA_VERSION, STORE_ID,
};
use serde::{Deserialize, Serialize};
use sled::Tree;
use std::sync::Arc;

/// The provider-encoded trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTree {
    State,
    Cursors,
    Connections,
}

/// Checks one provider-encoded record: (account named by its key, tree, value) -> `Err(why)`.
/// `Ok(false)` when the account is not configured (the record is counted, not judged).
pub type RecordCheck = Arc<CheckFn>;
/// See [`RecordCheck`].
pub type CheckFn = dyn Fn(&str, RecordTree, &[u8]) -> Result<bool, String> + Send + Sync + 'static;

/// What `verify` found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub store_id: String,
    /// Records per tree, in layout order.
    pub trees: Vec<(String, u64)>,
    /// Oldest and newest outbox seq (`None`: empty outbox).
    pub outbox: Option<(u64, u64)>,
    pub next_seq: u64,
    /// Inconsistencies: the store is not sound.
    pub problems: Vec<String>,
    /// How many problems there were (only the first [`LISTED`] are listed).
    pub problem_count: u64,
    /// Worth knowing, not wrong (a store from before identities, accounts no longer configured).
    pub notes: Vec<String>,
}

/// Problems listed in full; the rest are counted.
const LISTED: usize = 50;

impl Report {
    fn problem(&mut self, what: String) {
        self.problem_count += 1;
        if self.problems.len() < LISTED {
            self.problems.push(what);
        }
    }

    /// Adds a problem found outside the store (a sink's file that does not belong to it).
    pub fn add_problem(&mut self, what: String) {
        self.problem(what);
    }

    pub fn ok(&self) -> bool {
        self.problem_count == 0
    }

    /// The human form `pollhook store verify` prints.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "store {}",
            if self.store_id.is_empty() {
                "(no identity)"
            } else {
                &self.store_id
            }
        );
        for (tree, n) in &self.trees {
            let _ = writeln!(o, "  {tree:<12} {n} record(s)");
        }
        match self.outbox {
            Some((a, b)) => {
                let _ = writeln!(o, "outbox: seq {a}..{b}; next seq {}", self.next_seq);
            }
            None => {
                let _ = writeln!(o, "outbox: empty; next seq {}", self.next_seq);
            }
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        for p in &self.problems {
            let _ = writeln!(o, "PROBLEM: {p}");
        }
        if self.problem_count > self.problems.len() as u64 {
            let _ = writeln!(
                o,
                "... and {} more problem(s)",
                self.problem_count - self.problems.len() as u64
            );
        }
        if self.ok() {
            let _ = writeln!(o, "OK: every tree and cross-reference is consistent");
        } else {
            let _ = writeln!(o, "{} problem(s) found", self.problem_count);
        }
        o
    }
}

/// Handles on every tree, for a blocking task.
struct Trees {
    meta: Tree,
    outbox: Tree,
    ids: Tree,
    acks: Tree,
    subjects: Tree,
    attempts: Tree,
    dead: Tree,
    state: Tree,
    cursors: Tree,
    connections: Tree,
}

impl Store {
    /// Checks every tree and cross-reference. `identity_problem` is what [`Store::inspect`]
    /// returned. Holds the commit lock, so no commit changes what is read meanwhile.
    pub async fn verify(
        &self,
        identity_problem: Option<String>,
        check: RecordCheck,
    ) -> Result<Report, StoreError> {
        let next = self.next_seq.lock().await;
        let trees = Trees {
            meta: self.meta.clone(),
            outbox: self.outbox.clone(),
            ids: self.ids.clone(),
            acks: self.acks.clone(),
            subjects: self.subjects.clone(),
            attempts: self.attempts.clone(),
            dead: self.dead.clone(),
            state: self.state.clone(),
            cursors: self.cursors.clone(),
            connections: self.connections.clone(),
        };
        let id = self.id.clone();
        let report = tokio::task::spawn_blocking(move || {
            verify_trees(&trees, id, identity_problem, check.as_ref())
        })
        .await
        .expect("the verify task panicked")?;
        drop(next);
        Ok(report)
    }
}

fn verify_trees(
    t: &Trees,
    store_id: String,
    identity_problem: Option<String>,
    check: &CheckFn,
) -> Result<Report, StoreError> {
    let mut r = Report {
        store_id,
        ..Report::default()
    };
    if let Some(p) = identity_problem {
        r.problem(format!("identity: {p}"));
    }

    // meta
    let mut next_seq = None;
    for kv in t.meta.iter() {
        let (k, v) = kv?;
        match k.as_ref() {
            SCHEMA => match <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes) {
                Ok(n) if n <= SCHEMA_VERSION => {}
                Ok(n) => r.problem(format!(
                    "meta: schema {n} is newer than this build's {SCHEMA_VERSION}"
                )),
                Err(_) => r.problem("meta: schema_version is not a u32".into()),
            },
            NEXT_SEQ => match decode_seq(&v) {
                Ok(n) => next_seq = Some(n),
                Err(_) => r.problem("meta: next_seq is not a u64".into()),
            },
            STORE_ID => {
                if !std::str::from_utf8(&v).is_ok_and(super::identity::valid_id) {
                    r.problem("meta: store_id is not an identity".into());
                }
            }
            k if k.starts_with(ADOPTED) => {
                if decode_seq(&v).is_err() {
                    r.problem(format!(
                        "meta: the adopted tail {} has no seq",
                        String::from_utf8_lossy(&k[ADOPTED.len()..])
                    ));
                }
            }
            other => r.notes.push(format!(
                "meta: unknown key {:?}",
                String::from_utf8_lossy(other)
            )),
        }
    }
    if r.store_id.is_empty() {
        r.notes.push(
            "the store has no identity yet (from before identities): `pollhook run` adopts one"
                .into(),
        );
    }

    // outbox <-> ids
    let mut outbox_n = 0u64;
    let mut first = None;
    let mut last = 0u64;
    for kv in t.outbox.iter() {
        let (k, v) = kv?;
        outbox_n += 1;
        let Ok(seq) = decode_seq(&k) else {
            r.problem(format!("outbox: a key of {} bytes is not a seq", k.len()));
            continue;
        };
        first.get_or_insert(seq);
        last = seq;
        let line = split_outbox_value(&v).1;
        let env = match serde_json::from_slice::<crate::event::Envelope>(line) {
            Ok(env) => env,
            Err(e) => {
                r.problem(format!("outbox seq {seq}: not an envelope: {e}"));
                continue;
            }
        };
        if env.seq != seq {
            r.problem(format!(
                "outbox seq {seq}: its envelope says seq {}",
                env.seq
            ));
        }
        match t.ids.get(env.id.as_bytes())? {
            None => r.problem(format!("outbox seq {seq}: event {} is not in ids", env.id)),
            Some(s) if decode_seq(&s).ok() != Some(seq) => r.problem(format!(
                "outbox seq {seq}: ids maps event {} to another seq ({})",
                env.id,
                decode_seq(&s).map_or("unreadable".into(), |s| s.to_string())
            )),
            Some(_) => {}
        }
    }
    r.outbox = first.map(|f| (f, last));
    let after_last = if outbox_n > 0 { last + 1 } else { 1 };
    let next = match next_seq {
        Some(n) if n < after_last => {
            r.problem(format!(
                "meta: next_seq {n} is not after the last outbox seq {last}"
            ));
            after_last
        }
        Some(n) => n,
        None => {
            if outbox_n > 0 || !t.acks.is_empty() {
                r.problem("meta: next_seq is missing".into());
            }
            after_last
        }
    };
    r.next_seq = next;
    // Seqs taken by ids entries: a bitmap (one bit per seq ever assigned) finds two ids on
    // one seq even after their events were pruned.
    let mut taken = (next < 1 << 34).then(|| vec![0u64; (next / 64 + 1) as usize]);
    let mut ids_n = 0u64;
    for kv in t.ids.iter() {
        let (k, v) = kv?;
        ids_n += 1;
        let id = String::from_utf8_lossy(&k);
        let Ok(seq) = decode_seq(&v) else {
            r.problem(format!("ids: event {id} has no readable seq"));
            continue;
        };
        if seq == 0 || seq >= next {
            r.problem(format!(
                "ids: event {id} is at seq {seq}, outside 1..{next}"
            ));
            continue;
        }
        if let Some(bits) = taken.as_mut() {
            let (w, b) = ((seq / 64) as usize, seq % 64);
            if bits[w] & (1 << b) != 0 {
                r.problem(format!(
                    "ids: seq {seq} is given to two events (one is {id})"
                ));
            }
            bits[w] |= 1 << b;
        }
        if first.is_some_and(|f| seq >= f) {
            match t.outbox.get(seq.to_be_bytes())? {
                None => r.problem(format!(
                    "ids: event {id} at seq {seq} is missing from the outbox (not pruned: the outbox starts at {})",
                    first.unwrap_or(0)
                )),
                Some(v) => {
                    let same = serde_json::from_slice::<crate::event::Envelope>(
                        split_outbox_value(&v).1,
                    )
                    .is_ok_and(|e| e.id == id);
                    if !same {
                        r.problem(format!(
                            "ids: event {id} at seq {seq}, but the outbox holds another event there"
                        ));
                    }
                }
            }
        }
    }

    // acks
    let mut acks_n = 0u64;
    for kv in t.acks.iter() {
        let (k, v) = kv?;
        acks_n += 1;
        let sink = String::from_utf8_lossy(&k);
        match decode_seq(&v) {
            Err(_) => r.problem(format!("acks: sink {sink} has no readable seq")),
            Ok(a) if a >= next => r.problem(format!(
                "acks: sink {sink} is acknowledged up to seq {a}, past the last committed seq {}: the store lost events that sink already has",
                next - 1
            )),
            Ok(_) => {}
        }
    }

    // attempts, dead letters, legacy subjects
    let mut attempts_n = 0u64;
    for kv in t.attempts.iter() {
        let (k, v) = kv?;
        attempts_n += 1;
        match split_sink_key(&k) {
            Err(_) => r.problem("attempts: a key is not `sink \\0 seq`".into()),
            Ok((sink, seq)) if v.len() != 12 => r.problem(format!(
                "attempts: sink {sink} seq {seq}: a value of {} bytes (12 expected)",
                v.len()
            )),
            Ok(_) => {}
        }
    }
    let mut dead_n = 0u64;
    for kv in t.dead.iter() {
        let (k, v) = kv?;
        dead_n += 1;
        let Ok((sink, seq)) = split_sink_key(&k) else {
            r.problem("dead: a key is not `sink \\0 seq`".into());
            continue;
        };
        let env = serde_json::from_slice::<DeadRead>(&v)
            .ok()
            .and_then(|d| serde_json::from_str::<crate::event::Envelope>(d.event.get()).ok());
        match env {
            None => r.problem(format!(
                "dead: sink {sink} seq {seq}: not a dead letter with an envelope"
            )),
            Some(e) if e.seq != seq => r.problem(format!(
                "dead: sink {sink} seq {seq}: its envelope says seq {}",
                e.seq
            )),
            Some(_) => {}
        }
    }
    let mut subjects_n = 0u64;
    for kv in t.subjects.iter() {
        let (k, _) = kv?;
        subjects_n += 1;
        if decode_seq(&k).is_err() {
            r.problem("subjects: a key is not a seq".into());
        }
    }

    // provider records
    let mut unknown = std::collections::BTreeMap::<String, u64>::new();
    let mut records = |tree: &Tree, which: RecordTree, name: &str, r: &mut Report| {
        let mut n = 0u64;
        for kv in tree.iter() {
            let (k, v) = kv?;
            n += 1;
            let account = match k.iter().position(|b| *b == 0) {
                Some(p) => String::from_utf8_lossy(&k[..p]).into_owned(),
                None => {
                    r.problem(format!(
                        "{name}: the key {:?} names no account",
                        String::from_utf8_lossy(&k)
                    ));
                    continue;
                }
            };
            match check(&account, which, &v) {
                Ok(true) => {}
                Ok(false) => *unknown.entry(account).or_default() += 1,
                Err(why) => r.problem(format!(
                    "{name}: {:?}: {why}",
                    String::from_utf8_lossy(&k).replace('\0', "/")
                )),
            }
        }
        Ok::<u64, StoreError>(n)
    };
    let state_n = records(&t.state, RecordTree::State, "state", &mut r)?;
    let cursors_n = records(&t.cursors, RecordTree::Cursors, "cursors", &mut r)?;
    let connections_n = records(
        &t.connections,
        RecordTree::Connections,
        "connections",
        &mut r,
    )?;
    for (account, n) in unknown {
        r.notes.push(format!(
            "{n} record(s) of account {account:?}, which the config does not list (not checked)"
        ));
    }
    r.trees = [
        ("state", state_n),
        ("cursors", cursors_n),
        ("outbox", outbox_n),
        ("ids", ids_n),
        ("acks", acks_n),
        ("subjects", subjects_n),
        ("attempts", attempts_n),
        ("dead", dead_n),
        ("meta", t.meta.len() as u64),
        ("connections", connections_n),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), c))
    .collect();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::ev;
    use crate::store::Batch;

    fn any_record() -> RecordCheck {
        Arc::new(|_, _, v: &[u8]| {
            if v == b"bad" {
                Err("unreadable".into())
            } else {
                Ok(true)
            }
        })
    }

    #[tokio::test]
    async fn a_sound_store_verifies_and_each_injected_inconsistency_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.commit(Batch {
            state: vec![(b"a\0m\0d1".to_vec(), b"rec".to_vec())],
            cursors: vec![(b"a\0m".to_vec(), b"{}".to_vec())],
            events: (1..=4).map(ev).collect(),
        })
        .await
        .unwrap();
        s.ack("j", 4).unwrap();
        let r = s.verify(None, any_record()).await.unwrap();
        assert!(r.ok(), "{}", r.render());
        assert_eq!(r.outbox, Some((1, 4)));
        assert!(r.render().contains("OK:"));

        // Each injection breaks one cross-reference or record.
        type Inject = Box<dyn Fn(&Store)>;
        let inject: Vec<(&str, Inject)> = vec![
            (
                "is not in ids",
                Box::new(|s| {
                    s.ids.remove(ev(2).id.as_bytes()).unwrap();
                }),
            ),
            (
                "past the last committed seq",
                Box::new(|s| {
                    s.acks.insert(b"j", &9u64.to_be_bytes()).unwrap();
                }),
            ),
            (
                "its envelope says seq",
                Box::new(|s| {
                    let line = ev(3).to_line(7);
                    s.outbox.insert(3u64.to_be_bytes(), line).unwrap();
                }),
            ),
            (
                "missing from the outbox",
                Box::new(|s| {
                    s.outbox.remove(3u64.to_be_bytes()).unwrap();
                }),
            ),
            (
                "unreadable",
                Box::new(|s| {
                    s.state.insert(b"a\0m\0d2", &b"bad"[..]).unwrap();
                }),
            ),
            (
                "not after the last outbox seq",
                Box::new(|s| {
                    s.meta.insert(NEXT_SEQ, &2u64.to_be_bytes()).unwrap();
                }),
            ),
        ];
        for (want, f) in inject {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(dir.path()).unwrap();
            s.commit(Batch {
                events: (1..=4).map(ev).collect(),
                ..Batch::default()
            })
            .await
            .unwrap();
            f(&s);
            let r = s.verify(None, any_record()).await.unwrap();
            assert!(!r.ok(), "{want}: not found:\n{}", r.render());
            assert!(
                r.problems.iter().any(|p| p.contains(want)),
                "{want}:\n{}",
                r.render()
            );
        }
    }
}
