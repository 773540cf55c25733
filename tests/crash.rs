//! kill -9 proof: `pollhook run` against `pollhook simulate` with traffic, SIGKILLed at seeded
//! random moments and restarted each time. At the end the JSONL log must hold every
//! ground-truth webhook with an identical payload, no event id twice, each document in order;
//! and a hook sink must have received every event at least once, each time its full payload
//! (a hook's input is whole before it starts, so no kill can cut it), any repeat under the same
//! id (repeats are counted: at-least-once allows them).
//!
//! The simulator is stepped only once the log has caught up with the journal, so each change is
//! observable by polling; kills land at random moments inside that wait — during polls,
//! commits, sink writes, start-up. Bounded run (30 kills) in the suite; a long run:
//!
//!     POLLHOOK_CRASH_KILLS=300 cargo test --release --test crash -- --nocapture

use pollhook_sim::fidelity;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::process::{http, SimProcess, BIN};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Complete lines only: a line being written when we look is not read.
fn log_lines(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.rfind('\n') {
        Some(i) => text[..=i].to_string(),
        None => String::new(),
    }
}

fn start_daemon(config: &Path, stderr_log: &Path) -> Proc {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stderr_log)
        .unwrap();
    Proc(
        Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    )
}

#[test]
fn thirty_kills_lose_nothing_and_double_nothing_in_jsonl() {
    let kills: usize = std::env::var("POLLHOOK_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("POLLHOOK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2026);
    let mut rng = fastrand::Rng::with_seed(seed);

    let sim = SimProcess::start(seed);
    let base = sim.base_url.clone();
    let dir = tempfile::tempdir().unwrap();
    // A hook that appends "<event id> <payload>" to a file.
    let hook_log = dir.path().join("hook.log");
    let hook = dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\npayload=$(cat)\nprintf '%s %s\\n' \"$POLLHOOK_EVENT_ID\" \"$payload\" >> {}\n", hook_log.display())).unwrap();
    let hook_sink = format!(
        "\n[[sinks]]\nkind = \"hook\"\nname = \"hook\"\ncommand = [\"/bin/sh\", {:?}]\ntimeout = \"10s\"\nretry_schedule = [\"200ms\"]\nmax_attempts = 1000\n",
        hook.display().to_string()
    );
    let (config_path, events) = sim.write_config(dir.path(), "* * * * * *", &hook_sink);
    let stderr_log = dir.path().join("daemon.log");

    let truth = || sim.truth();
    let hook_events = || -> Vec<(String, String)> {
        log_lines(&hook_log)
            .lines()
            .map(|l| {
                let (id, payload) = l.split_once(' ').expect("id and payload");
                (id.to_string(), payload.to_string())
            })
            .collect()
    };
    let caught_up = |truth: &[fidelity::Expected]| {
        let emitted = fidelity::read_jsonl(&log_lines(&events)).unwrap();
        let hooked: std::collections::HashSet<String> =
            hook_events().into_iter().map(|(_, p)| p).collect();
        fidelity::compare(truth, &emitted).matched == truth.len()
            && truth.iter().all(|t| hooked.contains(&t.payload))
    };

    let mut daemon = start_daemon(&config_path, &stderr_log);
    // The first cycle takes the baseline (start = "now"): traffic before it is history.
    sim.wait_for_first_cycle();
    let began = Instant::now();
    let mut done = 0;
    let mut steps = 0;
    while done < kills {
        http("POST", &format!("{base}/_sim/step"));
        steps += 1;
        let want = truth();
        // Kill at a random moment of this round, restart at once, then wait for the catch-up.
        std::thread::sleep(Duration::from_millis(rng.u64(0..1800)));
        daemon.0.kill().unwrap();
        daemon.0.wait().unwrap();
        done += 1;
        daemon = start_daemon(&config_path, &stderr_log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !caught_up(&want) {
            assert!(
                Instant::now() < deadline,
                "no catch-up 30 s after kill {done}; log:\n{}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // A clean stop at the end.
    Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let text = std::fs::read_to_string(&events).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial last line after a clean stop"
    );
    let emitted = fidelity::read_jsonl(&text).unwrap();
    let truth = truth();
    let r = fidelity::compare(&truth, &emitted);
    let line_count = text.lines().count();
    eprintln!(
        "crash test: seed {seed}, {kills} SIGKILLs over {steps} traffic steps in {:.0?}; {} ground-truth events, {} lines, {} lost, {} duplicate ids, {} unexpected, {} out of order",
        began.elapsed(),
        r.expected,
        line_count,
        r.missing.len(),
        r.duplicate_ids,
        r.unexpected.len(),
        r.out_of_order
    );
    assert!(
        r.expected > kills,
        "too little traffic to mean anything: {}",
        r.expected
    );
    assert!(r.perfect(), "{r:#?}");
    assert_eq!(
        line_count, r.expected,
        "every line is one ground-truth event"
    );

    // The hook: every event at least once, each time with its full payload (its input is
    // whole before it starts: a kill of the daemon cannot cut it); a repeat carries the same
    // id.
    let hooked = hook_events();
    let payload_of: std::collections::HashMap<&str, &str> = emitted
        .iter()
        .map(|e| (e.id.as_str(), e.payload.as_str()))
        .collect();
    let mut first: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut repeats = 0;
    for (id, payload) in &hooked {
        let full = payload_of
            .get(id.as_str())
            .unwrap_or_else(|| panic!("the hook got event {id}, which is not in the log"));
        assert_eq!(
            payload, full,
            "event {id}: the hook's input is not the event's payload"
        );
        if first.insert(id, payload).is_some() {
            repeats += 1;
        }
    }
    let jsonl_ids: std::collections::HashSet<&str> =
        emitted.iter().map(|e| e.id.as_str()).collect();
    let hook_ids: std::collections::HashSet<&str> = first.keys().copied().collect();
    assert_eq!(
        hook_ids, jsonl_ids,
        "the hook saw exactly the events of the log, by id"
    );
    eprintln!(
        "hook sink: {} deliveries of {} events, {repeats} repeats (same id, same payload)",
        hooked.len(),
        hook_ids.len()
    );
}
