//! A store that is lost, damaged, replaced, reset, verified, backed up and restored — through
//! the built binary, as an operator would, against an in-process simulator on 127.0.0.1:0.
//!
//! The promise under test: no sink ever acknowledges what it did not write. A store that is
//! not the one the state dir (or the JSONL file) was written with is refused with a message
//! that says what to do; `store reset` starts over on purpose and continues the same file;
//! `store backup` / `store restore` bring back a store that loses nothing.

mod common;

use common::process::Killed;
use common::steady_sim;
use pollhook_sim::fidelity;
use pollhook_sim::{pollhook_config, SimServer, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

struct Setup {
    sim: Simulator,
    _server: SimServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// `daemon_extra` goes into `[daemon]`.
    async fn new(seed: u64, daemon_extra: &str) -> Setup {
        let sim = Simulator::new(steady_sim(seed));
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join("state"),
            &dir.path().join("events.jsonl"),
            "now",
            "* * * * * *",
        );
        let config = dir.path().join("pollhook.toml");
        let text = text.replacen("[daemon]\n", &format!("[daemon]\n{daemon_extra}"), 1);
        std::fs::write(&config, text).unwrap();
        Setup {
            sim,
            _server: server,
            dir,
            config,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn events(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// `pollhook ARGS --config <this config>`.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// `once`, which must succeed.
    fn once(&self) {
        let o = self.run(&["once"]);
        assert!(o.status.success(), "once failed:\n{}", text(&o));
    }

    /// A baseline, then `rounds` simulator steps each followed by `once`.
    fn traffic(&self, rounds: usize) {
        for _ in 0..rounds {
            self.sim.step();
            self.once();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.events()).unwrap_or_default()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (seq, id) of every line of a JSONL log.
fn seqs_and_ids(log: &str) -> Vec<(u64, String)> {
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Refused: exit 4 (operator action needed: systemd does not restart it), saying what to do.
fn assert_refused(o: &Output, what: &str) {
    let t = text(o);
    assert_eq!(
        o.status.code(),
        Some(pollhook::cli::exit::ACTION_NEEDED.into()),
        "{what}: not refused:\n{t}"
    );
    assert!(
        t.contains("pollhook store restore") && t.contains("pollhook store reset"),
        "{what}: the refusal does not say what to do:\n{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_state_dir_with_the_jsonl_kept_is_refused_and_store_reset_continues_the_file() {
    let s = Setup::new(301, "").await;
    s.once(); // baseline
    s.traffic(4);
    let before = s.log();
    let old = seqs_and_ids(&before);
    assert!(old.len() >= 3, "too little traffic: {before}");

    // The state dir is lost; the JSONL file is kept. A new store would number events from 1
    // again, and the file already holds seq 1..N of another store.
    std::fs::remove_dir_all(s.state()).unwrap();
    let o = s.run(&["once"]);
    assert_refused(&o, "once on a new store beside an old file");
    assert!(
        text(&o).contains("never committed"),
        "the refusal does not say why:\n{}",
        text(&o)
    );
    s.sim.step();
    assert_refused(&s.run(&["once"]), "the second once");
    assert_eq!(s.log(), before, "the file was written to");
    // Nothing was acknowledged: no event is listed as delivered.
    let list = s.run(&["events", "list"]);
    assert!(
        !text(&list).contains("=delivered"),
        "events list says delivered:\n{}",
        text(&list)
    );

    // Starting over must be deliberate.
    let o = s.run(&["store", "reset"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--yes"), "{}", text(&o));
    assert_refused(&s.run(&["once"]), "once after a reset without --yes");
    let o = s.run(&["store", "reset", "--yes"]);
    assert!(o.status.success(), "{}", text(&o));
    let max_old = old.iter().map(|(seq, _)| *seq).max().unwrap();
    assert!(
        text(&o).contains(&format!("continues after seq {max_old}")),
        "{}",
        text(&o)
    );

    // The new store's baseline, then new traffic: every new webhook reaches the same file.
    s.once();
    let journal_before = s.sim.journal_len();
    s.traffic(4);
    let log = s.log();
    assert!(log.starts_with(&before), "the old lines were changed");
    let new_lines = &log[before.len()..];
    let truth = fidelity::expected(&s.sim.journal()[journal_before..], &s.sim.credentials(), 0);
    let r = fidelity::compare(&truth, &fidelity::read_jsonl(new_lines).unwrap());
    assert!(r.expected > 0 && r.perfect(), "{r:#?}");
    let all = seqs_and_ids(&log);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "seqs do not keep increasing across the reset: {all:?}"
    );
    let ids: std::collections::HashSet<_> = all.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), all.len(), "duplicate ids");
}

/// Truncates sled's log file. With no snapshot yet (a store that never closed cleanly: it
/// crashed, or was killed) sled 0.34 then opens an EMPTY store; with a snapshot, it fails to
/// read it.
fn damage(state: &Path, keep_snapshot: bool) {
    let dir = state.join("store");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("db"))
        .unwrap();
    f.set_len(0).unwrap();
    if !keep_snapshot {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
            {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_whether_sled_opens_it_empty_or_not_at_all() {
    for keep_snapshot in [false, true] {
        let s = Setup::new(302, "").await;
        s.once();
        s.traffic(3);
        let before = s.log();
        assert!(!before.is_empty());
        damage(&s.state(), keep_snapshot);
        s.sim.step();
        let o = s.run(&["once"]);
        assert_refused(&o, "once on a damaged store");
        assert!(text(&o).contains("damaged"), "{}", text(&o));
        assert_eq!(s.log(), before, "the file was written to");
        let o = s.run(&["store", "verify"]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("PROBLEM") && text(&o).contains("damaged"),
            "{}",
            text(&o)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_once_catch_an_injected_ack_past_the_last_event() {
    let s = Setup::new(304, "").await;
    s.once();
    s.traffic(2);
    let o = s.run(&["store", "verify"]);
    assert!(
        o.status.success() && text(&o).contains("OK:"),
        "{}",
        text(&o)
    );
    {
        // A store that lost its last events while the ack of a sink survived: new events
        // would take those seqs, and that sink would skip them.
        let store = pollhook::store::Store::open(&s.state()).unwrap();
        store.ack("jsonl", store.last_seq() + 10).unwrap();
        store.flush().await.unwrap();
    }
    let o = s.run(&["store", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("PROBLEM") && text(&o).contains("lost events that sink already has"),
        "{}",
        text(&o)
    );
    assert_refused(&s.run(&["once"]), "once on a store that lost events");
}

/// Waits for `done`, polling; panics with `what` after 30 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cycles that succeeded, from the daemon's `/metrics`.
fn ok_cycles(addr: &str) -> f64 {
    // `http` runs its own runtime: not on this (async) test's thread.
    let url = format!("http://{addr}/metrics");
    let text = std::thread::spawn(move || common::process::http("GET", &url))
        .join()
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("pollhook_cycles_total{") && l.contains("outcome=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Setup {
    fn spawn(&self) -> Killed {
        Killed(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&self.config)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// One simulator step, then waits until the running daemon has written every webhook of
    /// the journal so far to the file (so each change is polled before the next).
    fn step_and_wait(&self) {
        self.sim.step();
        let want = self.sim.journal_len();
        wait_for("the daemon to write every event", || {
            self.log().lines().count() >= want
        });
    }
}

fn stop(mut daemon: Killed) {
    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    wait_for("the daemon to stop", || {
        daemon.0.try_wait().unwrap().is_some()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_run_runs_restores_a_store_that_loses_and_doubles_nothing() {
    let s = Setup::new(303, "admin_listen = \"127.0.0.1:0\"\n").await;
    let daemon = s.spawn();
    let addr_file = s.state().join("admin.addr");
    wait_for("admin.addr", || addr_file.exists());
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .to_string();
    wait_for("the baseline", || ok_cycles(&addr) >= 1.0);
    for _ in 0..3 {
        s.step_and_wait();
    }
    assert!(s.sim.journal_len() > 0, "no traffic");

    // The backup, through the running daemon (which holds the store).
    let backup = s.dir.path().join("pollhook.backup");
    let o = s.run(&["store", "backup", backup.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("through the running daemon"),
        "{}",
        text(&o)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The daemon's store endpoints want the key from the state dir.
    let denied = reqwest::get(format!("http://{addr}/store/backup"))
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    // verify through the daemon, too.
    let o = s.run(&["store", "verify"]);
    assert!(
        o.status.success() && text(&o).contains("OK:"),
        "{}",
        text(&o)
    );
    let at_backup = s.log().lines().count();

    // Life goes on after the backup: events reach the file.
    for _ in 0..3 {
        s.step_and_wait();
    }
    assert!(
        s.log().lines().count() > at_backup,
        "nothing after the backup"
    );
    stop(daemon);

    // With the store there and newer, restore refuses.
    let o = s.run(&["store", "restore", backup.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the store there has events up to seq") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );

    // The store is lost. The file holds events after the backup: refused unless forced.
    std::fs::remove_dir_all(s.state()).unwrap();
    let o = s.run(&["store", "restore", backup.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("event(s) after the backup's last seq")
            && text(&o).contains("nothing was restored"),
        "{}",
        text(&o)
    );
    assert!(
        !s.state().join("store").exists(),
        "a refused restore changed the state dir"
    );
    // Changes while pollhook is down.
    s.sim.step();
    let o = s.run(&["store", "restore", backup.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let carried: usize = text(&o)
        .split("carried ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("nothing carried:\n{}", text(&o)));
    assert_eq!(carried, s.log().lines().count() - at_backup);
    let o = s.run(&["store", "verify"]);
    assert!(o.status.success(), "{}", text(&o));

    // Everything since the backup is polled again: each webhook in the file exactly once.
    s.once();
    s.sim.step();
    s.once();
    let r = fidelity::compare(
        &fidelity::expected(&s.sim.journal(), &s.sim.credentials(), 0),
        &fidelity::read_jsonl(&s.log()).unwrap(),
    );
    assert!(r.expected > 0 && r.perfect(), "{r:#?}");
    let seqs: Vec<u64> = seqs_and_ids(&s.log()).into_iter().map(|(s, _)| s).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    eprintln!(
        "restore: backup at {at_backup} lines, {carried} lines after it carried into the restored store; {} ground-truth events, {} lines, {} lost, {} duplicate ids, {} unexpected",
        r.expected,
        seqs.len(),
        r.missing.len(),
        r.duplicate_ids,
        r.unexpected.len()
    );
}

/// A schema-2 store as an older pollhook left it: `docs` documents of two members of the
/// account "legacy", `events` outbox entries (valid envelopes), an ack, progress records and
/// a connection.
fn legacy_store(docs: usize, events: u64) -> pollhook::store::migrate::LegacyStore {
    use pollhook::event::{event_id, NewEvent};
    let members = ["KHUID00000001", "KHUID00000002"];
    let doc_id = |i: usize| format!("{:08x}-1111-4222-8333-{:012x}", i * 7919, i);
    pollhook::store::migrate::LegacyStore {
        store_id: Some("0123456789abcdef0123456789abcdef".into()),
        documents: (0..docs)
            .map(|i| {
                let record = format!("S{i:08}DELIVERED").into_bytes();
                ("legacy".into(), members[i % 2].into(), doc_id(i), record)
            })
            .collect(),
        cursors: members
            .iter()
            .map(|m| ("legacy".into(), m.to_string(), format!(r#"{{"start":1,"cursor":{}}}"#, m.len()).into_bytes()))
            .collect(),
        events: (1..=events)
            .map(|seq| {
                let doc = doc_id(seq as usize);
                let e = NewEvent {
                    id: event_id(&["legacy", &seq.to_string()]),
                    provider: "caminvoice",
                    account: "legacy".into(),
                    event_type: "DOCUMENT.STATUS_UPDATED".into(),
                    occurred_at: 1_700_000_000_000 + seq as i64,
                    detected_at: 1_700_000_000_000 + seq as i64,
                    subject: format!("{}/{doc}", members[0]),
                    payload: format!(
                        r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{doc}","endpoint_id":"{}","status":"ACCEPTED"}}"#,
                        members[0]
                    ),
                };
                let line = e.to_line(seq);
                (seq, e.id, format!("legacy\0{}", e.subject), line)
            })
            .collect(),
        acks: vec![("legacy-sink".into(), events / 2)],
        connections: vec![(
            "legacy".into(),
            members[1].into(),
            br#"{"refresh_token":"r","source":"connect","stored_at":1}"#.to_vec(),
        )],
    }
}

/// The config's log level becomes `info` (the migration logs at info).
fn log_info(s: &Setup) {
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text.replacen("log_level = \"warn\"", "log_level = \"info\"", 1);
    assert!(text.contains("log_level = \"info\""), "{text}");
    std::fs::write(&s.config, text).unwrap();
}

/// Every document, progress record, connection and ack of `legacy` is in the (schema-3)
/// store of `state`, and every outbox entry reached the JSONL log at `events` once.
fn assert_holds(state: &Path, events: &Path, legacy: &pollhook::store::migrate::LegacyStore) {
    use pollhook::store::{Store, Unit};
    let store = Store::open(state).unwrap();
    for (a, u, d, record) in &legacy.documents {
        assert_eq!(
            store.get_state(Unit::new(a, u), d).unwrap().as_ref(),
            Some(record),
            "document {a}/{u}/{d}"
        );
    }
    let counted: usize = store.count_states("legacy").unwrap().values().sum();
    assert_eq!(counted, legacy.documents.len());
    for (a, u, v) in &legacy.cursors {
        assert_eq!(store.get_cursor(Unit::new(a, u)).unwrap().as_ref(), Some(v));
    }
    let conns = store.connections("legacy").unwrap();
    assert_eq!(conns.len(), legacy.connections.len());
    // `once` delivered them to the JSONL sink (and may have pruned them since): each line
    // once, identical, in order; those still in the outbox are there under their ids.
    let jsonl = std::fs::read_to_string(events).unwrap_or_default();
    let delivered: Vec<&str> = jsonl
        .lines()
        .filter(|l| l.contains(r#""account":"legacy""#))
        .collect();
    assert_eq!(
        delivered.len(),
        legacy.events.len(),
        "legacy events in the JSONL log"
    );
    for ((seq, id, _, line), got) in legacy.events.iter().zip(&delivered) {
        assert_eq!(got.as_bytes(), line.as_slice(), "event {seq}");
        if let Some(e) = store.event(*seq).unwrap() {
            assert_eq!(&e.line, line, "outbox entry {seq}");
            assert_eq!(
                store.seq_of(id).unwrap(),
                Some(*seq),
                "the id of event {seq}"
            );
        }
    }
    for (sink, seq) in &legacy.acks {
        assert_eq!(store.acked(sink).unwrap(), *seq, "ack of {sink}");
    }
}

/// Issue 12: kill -9 at random moments of the migration from schema 2 loses nothing. A
/// schema-2 store of 60,000 documents, 3,000 events, acks, progress and connections; `once`
/// (which migrates on open) is SIGKILLed at a random moment after the migration began, eight
/// times, then a run gets through. Every record is then in the schema-3 store, the old
/// store is kept aside, and the migration is logged once with its duration. Kills that land
/// while the partial store is written are counted: at least three, or the test proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_the_migration_from_schema_2_loses_nothing() {
    let s = Setup::new(331, "").await;
    log_info(&s);
    let legacy = legacy_store(60_000, 3_000);
    pollhook::store::migrate::write_legacy_store(&s.state(), &legacy).unwrap();
    let log = s.dir.path().join("once.log");
    let migrating = s.state().join("store.migrating");
    let mut rng = fastrand::Rng::with_seed(331);
    let (mut interrupted, mut runs) = (0, 0);
    loop {
        runs += 1;
        assert!(runs <= 12, "the migration never got through");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Killed(
            Command::new(BIN)
                .args(["once", "--config"])
                .arg(&s.config)
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap(),
        );
        // Wait for the migration to begin (or the run to end), then kill at a random moment.
        let began = Instant::now();
        let mut exited = None;
        while exited.is_none() && !migrating.exists() {
            exited = child.0.try_wait().unwrap();
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "no migration began"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // Eight kills: six early (inside the writing of the new store), two anywhere later
        // (the swap, the poll, the delivery); then a run goes through.
        if exited.is_none() && runs <= 8 {
            let within = if runs <= 6 { 600 } else { 4_000 };
            std::thread::sleep(Duration::from_millis(rng.u64(0..within)));
            let _ = child.0.kill();
        }
        let status = child.0.wait().unwrap();
        if migrating.exists() {
            interrupted += 1;
        }
        if status.success() {
            break;
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        interrupted >= 3,
        "only {interrupted} of {runs} runs were killed mid-migration:\n{logged}"
    );
    assert!(
        logged.contains("removing the partial store of an interrupted migration"),
        "{logged}"
    );
    let done = logged
        .lines()
        .filter(|l| l.contains("store migrated from schema 2 to 3 in"))
        .count();
    assert!(done <= 1, "migrated twice:\n{logged}");
    assert!(
        !pollhook::store::migrate::kept_aside(&s.state()).is_empty(),
        "the old store is kept aside"
    );
    assert_holds(&s.state(), &s.events(), &legacy);
    eprintln!("{runs} runs, {interrupted} killed mid-migration");
}

/// The migration without a kill: logged once, at info, with its duration; nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_from_schema_2_is_logged_with_its_duration_and_loses_nothing() {
    let s = Setup::new(332, "").await;
    log_info(&s);
    let legacy = legacy_store(5_000, 300);
    pollhook::store::migrate::write_legacy_store(&s.state(), &legacy).unwrap();
    let o = s.run(&["once"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("store migrated from schema 2 to 3 in"))
        .unwrap_or_else(|| panic!("no migration line:\n{t}"));
    assert!(
        line.contains("documents=5000") && line.contains(" s"),
        "{line}"
    );
    assert_holds(&s.state(), &s.events(), &legacy);
}
