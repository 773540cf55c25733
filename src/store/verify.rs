//! `pollhook store verify`: reads every tree and checks each record and the cross-references
//! between them, under the commit lock (so, through the daemon, a consistent view).
//!
//! What is checked: the identity (sled's and `store-id`); meta (schema version, next seq,
//! hash key, adopted tails); the interned names; every outbox group decodes, each event's
//! envelope has its seq and its id maps back to it in the id index; every id entry is below
//! the next seq, no two share a seq, and those not yet pruned have their outbox event; acks
//! never pass the last committed seq; attempt and dead-letter keys and values decode; every
//! document record sits in the bucket its id hashes to and belongs to a named unit; provider
//! records decode (through the caller's [`RecordCheck`]: only providers know their bytes).
//! Reads only.

use super::bucket::{self, Hashing};
use super::codec::{decode_doc_id, format_event_id, get_uvarint, Reader};
use super::names::Names;
use super::{
    decode_seq, group, idset, keys, split_sink_key, DeadRead, Store, StoreError, ADOPTED, HASH_KEY,
    NEXT_SEQ, SCHEMA, SCHEMA_VERSION, STORE_ID,
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
    data: Tree,
    acks: Tree,
    attempts: Tree,
    dead: Tree,
    connections: Tree,
    hashing: Hashing,
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
            data: self.data.clone(),
            acks: self.acks.clone(),
            attempts: self.attempts.clone(),
            dead: self.dead.clone(),
            connections: self.connections.clone(),
            hashing: self.hashing,
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

/// One bit per seq in 1..next (`None` when next is absurdly large).
struct SeqBits(Option<Vec<u64>>);

impl SeqBits {
    fn new(next: u64) -> SeqBits {
        SeqBits((next < 1 << 34).then(|| vec![0u64; (next / 64 + 1) as usize]))
    }

    /// Sets the bit of `seq`; whether it was set before.
    fn set(&mut self, seq: u64) -> bool {
        let Some(bits) = self.0.as_mut() else {
            return false;
        };
        let (w, b) = ((seq / 64) as usize, seq % 64);
        let Some(word) = bits.get_mut(w) else {
            return false;
        };
        let was = *word & (1 << b) != 0;
        *word |= 1 << b;
        was
    }

    fn get(&self, seq: u64) -> bool {
        match &self.0 {
            None => true,
            Some(bits) => bits
                .get((seq / 64) as usize)
                .is_some_and(|w| w & (1 << (seq % 64)) != 0),
        }
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
    let mut meta_n = 0u64;
    let mut hash_key = false;
    for kv in t.data.scan_prefix([keys::META]) {
        let (k, v) = kv?;
        meta_n += 1;
        match &k[1..] {
            SCHEMA => match <[u8; 4]>::try_from(v.as_ref()).map(u32::from_be_bytes) {
                Ok(n) if n == SCHEMA_VERSION => {}
                Ok(n) => r.problem(format!(
                    "meta: schema {n}, but this layout is schema {SCHEMA_VERSION}"
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
            HASH_KEY => {
                hash_key = true;
                if v.len() != 16 {
                    r.problem("meta: hash_key is not 16 bytes".into());
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
    let names = match Names::load(&t.data) {
        Ok(n) => n,
        Err(e) => {
            r.problem(format!("names: {e}"));
            Names::default()
        }
    };

    // outbox groups
    let (mut outbox_n, mut groups_n) = (0u64, 0u64);
    let mut first = None;
    let mut last = 0u64;
    let mut events: Vec<(u64, String)> = Vec::new();
    for kv in t.data.scan_prefix([keys::OUTBOX]) {
        let (k, v) = kv?;
        groups_n += 1;
        let Ok(start) = keys::outbox_seq(&k) else {
            r.problem(format!("outbox: a key of {} bytes is not a seq", k.len()));
            continue;
        };
        let Ok(g) = group::decode(&v) else {
            r.problem(format!("outbox group {start}: it does not decode"));
            continue;
        };
        if start <= last && outbox_n > 0 {
            r.problem(format!(
                "outbox group {start}: it overlaps the group before it (which ends at seq {last})"
            ));
        }
        for i in 0..g.len() {
            let seq = start + i as u64;
            outbox_n += 1;
            first.get_or_insert(seq);
            last = seq;
            let (_, line) = g.get(i).expect("in range");
            match serde_json::from_slice::<crate::event::Envelope>(line) {
                Ok(env) => {
                    if env.seq != seq {
                        r.problem(format!(
                            "outbox seq {seq}: its envelope says seq {}",
                            env.seq
                        ));
                    }
                    events.push((seq, env.id));
                }
                Err(e) => r.problem(format!("outbox seq {seq}: not an envelope: {e}")),
            }
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
    let mut in_outbox = SeqBits::new(next);
    for (seq, id) in &events {
        in_outbox.set(*seq);
        match super::outbox::seq_of(&t.data, id) {
            Ok(None) => r.problem(format!("outbox seq {seq}: event {id} is not in ids")),
            Ok(Some(s)) if s != *seq => r.problem(format!(
                "outbox seq {seq}: ids maps event {id} to another seq ({s})"
            )),
            Ok(Some(_)) => {}
            Err(e) => r.problem(format!("outbox seq {seq}: event {id}: {e}")),
        }
    }
    drop(events);

    // ids: each seq taken once, inside 1..next, and in the outbox unless pruned.
    let mut taken = SeqBits::new(next);
    let mut ids_n = 0u64;
    let mut check_id = |id: String, seq: u64, r: &mut Report| {
        ids_n += 1;
        if seq == 0 || seq >= next {
            r.problem(format!(
                "ids: event {id} is at seq {seq}, outside 1..{next}"
            ));
            return;
        }
        if taken.set(seq) {
            r.problem(format!(
                "ids: seq {seq} is given to two events (one is {id})"
            ));
        }
        if first.is_some_and(|f| seq >= f) && !in_outbox.get(seq) {
            r.problem(format!(
                "ids: event {id} at seq {seq} is missing from the outbox (not pruned: the outbox starts at {})",
                first.unwrap_or(0)
            ));
        }
    };
    for kv in t.data.scan_prefix([keys::IDS]) {
        let (k, v) = kv?;
        let Ok(head) = <[u8; idset::HEAD]>::try_from(&k[1..]) else {
            r.problem(format!("ids: a bucket key of {} bytes", k.len()));
            continue;
        };
        for e in idset::entries(&v) {
            match e {
                Ok((rest, seq)) => {
                    let mut full = [0u8; 16];
                    full[..idset::HEAD].copy_from_slice(&head);
                    full[idset::HEAD..].copy_from_slice(&rest);
                    check_id(format_event_id(&full), seq, &mut r);
                }
                Err(_) => r.problem(format!("ids: bucket {head:02x?} does not decode")),
            }
        }
    }
    for kv in t.data.scan_prefix([keys::TEXT_IDS]) {
        let (k, v) = kv?;
        let id = String::from_utf8_lossy(&k[1..]).into_owned();
        match get_uvarint(&v) {
            Some((seq, n)) if n == v.len() => check_id(id, seq, &mut r),
            _ => r.problem(format!("ids: event {id} has no readable seq")),
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

    // attempts, dead letters
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

    // provider records
    let mut unknown = std::collections::BTreeMap::<String, u64>::new();
    let mut judge =
        |account: &str, which: RecordTree, what: &str, v: &[u8], r: &mut Report| match check(
            account, which, v,
        ) {
            Ok(true) => {}
            Ok(false) => *unknown.entry(account.to_string()).or_default() += 1,
            Err(why) => r.problem(format!("{what}: {why}")),
        };
    let mut cursors_n = 0u64;
    for kv in t.data.scan_prefix([keys::CURSORS]) {
        let (k, v) = kv?;
        cursors_n += 1;
        let mut rd = Reader(&k[1..]);
        let no = match (rd.uvarint(), rd.uvarint(), rd.is_empty()) {
            (Some(account), Some(unit), true) => keys::UnitNo { account, unit },
            _ => {
                r.problem(format!("cursors: the key {k:?} is not two numbers"));
                continue;
            }
        };
        match (names.account_name(no.account), names.unit_name(no)) {
            (Some(a), Some(u)) => {
                let a = a.to_string();
                judge(
                    &a,
                    RecordTree::Cursors,
                    &format!("cursors: {a}/{u}"),
                    &v,
                    &mut r,
                );
            }
            _ => r.problem(format!(
                "cursors: a progress record of unit {}/{}, which has no name",
                no.account, no.unit
            )),
        }
    }
    let mut state_n = 0u64;
    for kv in t.data.scan_prefix([keys::STATE]) {
        let (k, v) = kv?;
        let mut rd = Reader(&k[1..]);
        let (account, b) = match (rd.uvarint(), rd.take(4), rd.is_empty()) {
            (Some(a), Some(b), true) => (a, u32::from_be_bytes(b.try_into().expect("4 bytes"))),
            _ => {
                r.problem(format!("state: the key {k:?} is not a bucket key"));
                continue;
            }
        };
        let Some(account_name) = names.account_name(account).map(str::to_string) else {
            r.problem(format!(
                "state: bucket {b} of account {account}, which has no name"
            ));
            continue;
        };
        for rec in bucket::records(&v) {
            let Ok(rec) = rec else {
                r.problem(format!(
                    "state: bucket {b} of {account_name} does not decode"
                ));
                break;
            };
            state_n += 1;
            let unit = names.unit_name(keys::UnitNo {
                account,
                unit: rec.unit,
            });
            let doc = decode_doc_id(rec.doc);
            let (Some(unit), Some(doc)) = (unit, doc) else {
                r.problem(format!(
                    "state: bucket {b} of {account_name}: a record of an unnamed unit or an unreadable document id"
                ));
                continue;
            };
            if t.hashing.bucket(&doc) != b {
                r.problem(format!(
                    "state: {account_name}/{unit}/{doc} is in bucket {b}, but its id hashes to {}",
                    t.hashing.bucket(&doc)
                ));
            }
            judge(
                &account_name,
                RecordTree::State,
                &format!("state: {account_name}/{unit}/{doc}"),
                rec.value,
                &mut r,
            );
        }
    }
    if state_n > 0 && !hash_key {
        r.problem("meta: hash_key is missing, but documents are stored".into());
    }
    let mut connections_n = 0u64;
    for kv in t.connections.iter() {
        let (k, v) = kv?;
        connections_n += 1;
        match k.iter().position(|b| *b == 0) {
            Some(p) => {
                let account = String::from_utf8_lossy(&k[..p]).into_owned();
                judge(
                    &account,
                    RecordTree::Connections,
                    &format!(
                        "connections: {:?}",
                        String::from_utf8_lossy(&k).replace('\0', "/")
                    ),
                    &v,
                    &mut r,
                );
            }
            None => r.problem(format!(
                "connections: the key {:?} names no account",
                String::from_utf8_lossy(&k)
            )),
        }
    }
    for (account, n) in unknown {
        r.notes.push(format!(
            "{n} record(s) of account {account:?}, which the config does not list (not checked)"
        ));
    }
    r.trees = [
        ("documents", state_n),
        ("progress", cursors_n),
        ("outbox", outbox_n),
        ("outbox groups", groups_n),
        ("ids", ids_n),
        ("acks", acks_n),
        ("attempts", attempts_n),
        ("dead", dead_n),
        ("meta", meta_n),
        ("units", names.units().count() as u64),
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
        s.commit(crate::store::tests::with_records((1..=4).map(ev).collect()))
            .await
            .unwrap();
        s.ack("j", 4).unwrap();
        let r = s.verify(None, any_record()).await.unwrap();
        assert!(r.ok(), "{}", r.render());
        assert_eq!(r.outbox, Some((1, 4)));
        assert!(r.render().contains("OK:"));
        assert!(
            r.trees.contains(&("documents".to_string(), 1)),
            "{:?}",
            r.trees
        );

        /// Rewrites the outbox as groups holding `lines` (seq, line).
        fn rewrite_outbox(s: &Store, lines: &[(u64, Vec<u8>)]) {
            for kv in s.data.scan_prefix([keys::OUTBOX]) {
                s.data.remove(kv.unwrap().0).unwrap();
            }
            for (seq, line) in lines {
                let v = group::encode(&[group::Item {
                    subject: b"a\0m/d",
                    line,
                }]);
                s.data.insert(keys::outbox(*seq), v).unwrap();
            }
        }
        let lines = |skip: u64, lie: Option<u64>| -> Vec<(u64, Vec<u8>)> {
            (1..=4u32)
                .filter(|n| u64::from(*n) != skip)
                .map(|n| {
                    let seq = u64::from(n);
                    let at = if lie == Some(seq) { seq + 4 } else { seq };
                    (seq, ev(n).to_line(at))
                })
                .collect()
        };
        // Each injection breaks one cross-reference or record.
        type Inject = Box<dyn Fn(&Store)>;
        let inject: Vec<(&str, Inject)> = vec![
            (
                "is not in ids",
                Box::new(|s| {
                    let b = super::super::codec::event_id_bytes(&ev(2).id).unwrap();
                    let (head, _) = idset::split(&b);
                    s.data.remove(keys::id_bucket(head)).unwrap();
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
                Box::new(move |s| rewrite_outbox(s, &lines(0, Some(3)))),
            ),
            (
                "missing from the outbox",
                Box::new(move |s| rewrite_outbox(s, &lines(3, None))),
            ),
            (
                "unreadable",
                Box::new(|s| {
                    let no = s.unit_no(crate::store::Unit::new("a", "m")).unwrap();
                    let key = keys::bucket(no.account, s.hashing.bucket("d2"));
                    let old = s.data.get(&key).unwrap();
                    let v = bucket::merge(
                        old.as_deref(),
                        &mut [bucket::Update {
                            unit: no.unit,
                            doc: super::super::codec::doc_id_bytes("d2"),
                            value: b"bad".to_vec(),
                        }],
                    )
                    .unwrap();
                    s.data.insert(key, v).unwrap();
                }),
            ),
            (
                "not after the last outbox seq",
                Box::new(|s| {
                    s.data
                        .insert(keys::meta(NEXT_SEQ), &2u64.to_be_bytes())
                        .unwrap();
                }),
            ),
            (
                "hashes to",
                Box::new(|s| {
                    // A record moved into another bucket than its id's.
                    let (k, v) = s.data.scan_prefix([keys::STATE]).next().unwrap().unwrap();
                    s.data.remove(&k).unwrap();
                    let mut other = k.to_vec();
                    let last = other.len() - 1;
                    other[last] ^= 1;
                    s.data.insert(other, v).unwrap();
                }),
            ),
        ];
        for (want, f) in inject {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(dir.path()).unwrap();
            s.commit(crate::store::tests::with_records((1..=4).map(ev).collect()))
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
