//! A store that is lost, damaged, replaced, reset, verified, backed up and restored — through
//! the built binary, as an operator would, against an in-process simulator on 127.0.0.1:0.
//!
//! The promise under test: no sink ever acknowledges what it did not write. A store that is
//! not the one the state dir (or the JSONL file) was written with is refused with a message
//! that says what to do; `store reset` starts over on purpose and continues the same file;
//! `store backup` / `store restore` bring back a store that loses nothing.

mod common;

use common::steady_sim;
use pollhook::fidelity;
use pollhook::sim::{pollhook_config, SimServer, Simulator};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

struct Setup {
    sim: Simulator,
    _server: SimServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    async fn new(seed: u64, extra: &str) -> Setup {
        let sim = Simulator::new(steady_sim(seed));
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join("state"),
            &dir.path().join("events.jsonl"),
            "now",
            "*/5 * * * * *",
        );
        let config = dir.path().join("pollhook.toml");
        std::fs::write(&config, format!("{text}{extra}")).unwrap();
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

fn assert_refused(o: &Output, what: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "{what}: not refused:\n{t}");
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
    let truth: Vec<String> = s.sim.journal()[journal_before..]
        .iter()
        .map(|j| j.payload.clone())
        .collect();
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

/// Truncates sled's log file: with no snapshot yet, sled 0.34 then opens an EMPTY store.
fn damage(state: &Path) {
    let db = state.join("store").join("db");
    let f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.set_len(0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_sled_opens_empty_is_refused_and_verify_says_why() {
    let s = Setup::new(302, "").await;
    s.once();
    s.traffic(3);
    let before = s.log();
    assert!(!before.is_empty());
    damage(&s.state());
    s.sim.step();
    let o = s.run(&["once"]);
    assert_refused(&o, "once on a damaged store");
    assert!(text(&o).contains("damaged"), "{}", text(&o));
    assert_eq!(s.log(), before, "the file was written to");
    let o = s.run(&["store", "verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("identity"), "{}", text(&o));
}
