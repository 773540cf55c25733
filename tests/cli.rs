//! End to end: the built `pollhook` binary against `pollhook simulate` in another process,
//! through the documented subcommands only. The simulator is stepped by hand, each step only
//! once the daemon has caught up with the journal: no test assumes how fast a cycle runs.

mod common;

use common::process::{lines, wait_until, Killed, SimProcess, BIN};
use pollhook_sim::fidelity;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn pollhook(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes the simulator's printed config with the state and log under `dir`.
fn write_config(sim: &SimProcess, dir: &Path, schedule: &str) -> (PathBuf, PathBuf) {
    sim.write_config(dir, schedule, "")
}

/// `once` succeeds, or fails only because a member's refresh was refused (the first of the
/// two refusals that make a revocation).
fn once_ok(config: &Path) {
    let o = pollhook(&["once", "--config", config.to_str().unwrap()]);
    if !o.status.success() {
        let t = text(&o);
        assert!(t.contains("refused the refresh token"), "once failed:\n{t}");
    }
}

#[test]
fn once_repeatedly_matches_the_ground_truth_and_an_unchanged_simulator_appends_nothing() {
    let sim = SimProcess::start(5);
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_config(&sim, dir.path(), "*/5 * * * * *");
    once_ok(&config); // the baseline
    for _ in 0..10 {
        sim.post("/_sim/step");
        once_ok(&config);
    }
    once_ok(&config);
    once_ok(&config);
    let log = std::fs::read_to_string(&events).unwrap();
    let o = pollhook(&["once", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(&events).unwrap(),
        log,
        "the second unchanged `once` appended something"
    );

    let report = fidelity::compare(&sim.truth(), &fidelity::read_jsonl(&log).unwrap());
    assert!(report.expected > 10, "too little traffic: {report:?}");
    assert!(report.perfect(), "{report:#?}");

    let status = pollhook(&["status", "--config", config.to_str().unwrap()]);
    let st = text(&status);
    assert!(status.status.success(), "{st}");
    assert!(
        st.contains("documents tracked") && st.contains("0 pending, 0 dead letter(s)"),
        "{st}"
    );
}

#[test]
fn run_delivers_events_and_stops_cleanly_on_sigterm() {
    let sim = SimProcess::start(8);
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_config(&sim, dir.path(), "* * * * * *");
    let mut daemon = Killed(
        Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let daemon = &mut daemon.0;
    sim.wait_for_first_cycle();
    // Each step only once the previous ones came through: every change is polled before the
    // next one can overwrite it, however slow the machine.
    for _ in 0..4 {
        sim.post("/_sim/step");
        sim.wait_for_catch_up(&events);
    }
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let mut status = None;
    wait_until("the daemon to stop after SIGTERM", || {
        status = daemon.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&events).unwrap();
    let report = fidelity::compare(&sim.truth(), &fidelity::read_jsonl(&log).unwrap());
    assert!(report.expected > 0, "no traffic: {report:?}");
    assert!(report.perfect(), "{report:#?}");
}

#[test]
fn sighup_makes_the_jsonl_sink_reopen_its_file_after_logrotate() {
    let sim = SimProcess::start(8);
    let dir = tempfile::tempdir().unwrap();
    let (config, events) = write_config(&sim, dir.path(), "* * * * * *");
    let mut daemon = Killed(
        Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    sim.wait_for_first_cycle();
    for _ in 0..6 {
        sim.post("/_sim/step");
        sim.wait_for_catch_up(&events);
        if lines(&events) > 0 {
            break;
        }
    }
    assert!(lines(&events) > 0, "no traffic before the rotation");
    let rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&events, &rotated).unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    // Until the reopened file gets events (a step may journal nothing).
    for _ in 0..10 {
        sim.post("/_sim/step");
        wait_until("the daemon to catch up across both files", || {
            lines(&rotated) + lines(&events) >= sim.journal().len()
        });
        if lines(&events) > 0 {
            break;
        }
    }
    assert!(lines(&events) > 0, "nothing written to the reopened file");
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&rotated).unwrap(),
        std::fs::read_to_string(&events).unwrap()
    );
    let report = fidelity::compare(&sim.truth(), &fidelity::read_jsonl(&both).unwrap());
    assert!(report.perfect(), "{report:#?}");
}

#[test]
fn check_config_accepts_the_example_and_never_prints_secrets() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let o = pollhook(&["check-config", "--config", example.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("valid") && t.contains("acme-kh") && t.contains("pt-contoh"),
        "{t}"
    );
    assert!(
        !t.contains("your-client-secret") && !t.contains("refresh-token-of"),
        "{t}"
    );
    // The next tick as every other instant pollhook prints: RFC 3339 to the millisecond.
    let next = t
        .lines()
        .find_map(|l| l.split("(UTC; next ").nth(1))
        .and_then(|n| n.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no next tick in:\n{t}"));
    assert!(
        next.len() == "2026-01-01T00:05:00.000Z".len()
            && next.ends_with(":00.000Z")
            && chrono::DateTime::parse_from_rfc3339(next).is_ok(),
        "{next}"
    );

    // Every secret set to a marker, in every form: none reaches the output.
    let dir = tempfile::tempdir().unwrap();
    let marker = "MARKER-5e1f-secret";
    let secret_file = dir.path().join("rt");
    std::fs::write(&secret_file, format!("{marker}-file\n")).unwrap();
    let cfg = std::fs::read_to_string(&example)
        .unwrap()
        .replace("\"your-client-secret\"", &format!("\"{marker}\""))
        .replace(
            "\"refresh-token-of-KHUID00001234\"",
            "{ env = \"PH_TEST_RT\" }",
        )
        .replace(
            "\"refresh-token-of-KHUID00005678\"",
            &format!("{{ file = {:?} }}", secret_file.display().to_string()),
        )
        .replace("\"your-onlinepajak-token\"", &format!("\"{marker}-op\""));
    let path = dir.path().join("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let o = Command::new(BIN)
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("PH_TEST_RT", format!("{marker}-env"))
        .env(
            "POLLHOOK_ERP_WEBHOOK_SECRET",
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        )
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        !t.contains(marker),
        "a secret reached check-config output:\n{t}"
    );
    assert!(
        t.contains("<redacted: inline>")
            && t.contains("<redacted: from env PH_TEST_RT>")
            && t.contains("<redacted: from file"),
        "{t}"
    );

    // A secret that cannot be read: exit 2, naming where it is configured and what is missing.
    let o = Command::new(BIN)
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env_remove("PH_TEST_RT")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("(refresh_token): environment variable PH_TEST_RT is not set"),
        "{t}"
    );
}

#[test]
fn bad_configs_exit_2_naming_line_column_and_fix() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, want) in [
        (
            "client_id = \"your-client-id\"",
            "clent_id = \"your-client-id\"",
            "unknown field `clent_id`",
        ),
        (
            "schedule = \"0 */5 * * * *\"",
            "schedule = \"every five minutes\"",
            "not a valid cron expression",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, example.replace(from, to)).unwrap();
        let line = example.lines().position(|l| l.starts_with(from)).unwrap() + 1;
        let o = pollhook(&["check-config", "--config", path.to_str().unwrap()]);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!("bad.toml:{line}:")),
            "no line {line} in:\n{t}"
        );
        assert!(t.contains(want) && t.contains("help: "), "{t}");
    }
}

/// A daemon config that reaches no provider before it fails: `daemon_extra` goes into
/// `[daemon]`, `client_secret` is the TOML value.
fn offline_config(dir: &Path, daemon_extra: &str, client_secret: &str) -> PathBuf {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
state_dir = "{state}"
schedule = "0 0 * * * *"
{daemon_extra}

[[accounts]]
name = "acme"
provider = "caminvoice"
base_url = "http://127.0.0.1:9"
client_id = "id"
client_secret = {client_secret}

[[accounts.members]]
endpoint_id = "KHUID00000001"
refresh_token = "token"

[[sinks]]
kind = "jsonl"
path = "{events}"
"#,
            state = dir.join("state").display(),
            events = dir.join("events.jsonl").display(),
        ),
    )
    .unwrap();
    config
}

/// Regression (issue 15): an admin endpoint that cannot bind is a run-time failure — exit 1,
/// which systemd restarts, naming the address — not a configuration error with the hint
/// about secrets (exit 2, which systemd does not restart). A secret that cannot be read is
/// that configuration error.
#[test]
fn run_picks_its_exit_code_and_hint_from_what_failed() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = offline_config(
        dir.path(),
        &format!("admin_listen = \"{addr}\""),
        "\"secret\"",
    );
    let o = pollhook(&["run", "--config", config.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("admin_listen {addr}: cannot listen there")),
        "{t}"
    );
    assert!(!t.contains("check-config"), "{t}");
    // The log (a warning about the inline secrets) has no colour codes: stderr is no terminal.
    assert!(t.contains(" WARN ") && !t.contains('\u{1b}'), "{t:?}");
    drop(taken);

    let config = offline_config(dir.path(), "", "{ env = \"POLLHOOK_TEST_SURELY_UNSET\" }");
    let o = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("POLLHOOK_TEST_SURELY_UNSET")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(
        t.contains("account acme: ")
            && t.contains("(client_secret): environment variable POLLHOOK_TEST_SURELY_UNSET")
            && t.contains("help: `pollhook check-config` lists every secret"),
        "{t}"
    );
}

/// `pollhook bench latency` runs both modes over the same traffic and prints the table and
/// the targets; `check-config` shows an adaptive account's mode and budget.
#[test]
fn bench_latency_prints_both_modes_and_check_config_shows_the_mode() {
    let o = pollhook(&[
        "bench",
        "latency",
        "--members",
        "40",
        "--hours",
        "1",
        "--warmup-hours",
        "1",
        "--only",
        "skewed",
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for row in [
        "| cron, every 300 s |",
        "| adaptive, equal requests |",
        "| adaptive, 1/4 of the requests |",
    ] {
        assert!(t.contains(row), "{row} missing:\n{t}");
    }
    assert!(
        t.lines().any(|l| l.starts_with("| skewed (Zipf 2) (")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| (l.starts_with("MET") || l.starts_with("NOT MET"))
                && l.contains("skewed, equal requests")),
        "{t}"
    );
    let bad = pollhook(&["bench", "latency", "--members", "0"]);
    assert!(!bad.status.success());

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("adaptive.toml");
    let text_cfg = std::fs::read_to_string(&example).unwrap().replacen(
        "#mode = \"adaptive\"\n#budget = \"600/min\"",
        "mode = \"adaptive\"\nbudget = \"600/min\"",
        1,
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let o = pollhook(&["check-config", "--config", cfg.to_str().unwrap()]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("mode             adaptive: budget 600/min, each member every 10s to 1h"),
        "{t}"
    );
}

/// Issue 12: an access token still valid outlives the process (kept in the member's record
/// with its expiry): `once` twice in a row costs one token call per member in all. A stored
/// token the provider rejects (401) is refreshed as usual, once. The tokens (JWTs, `eyJ…`)
/// never show in `once`'s output, `status` or `check-config`.
#[test]
fn a_valid_access_token_survives_a_restart_and_a_rejected_one_is_refreshed() {
    let sim = SimProcess::start(21);
    let dir = tempfile::tempdir().unwrap();
    let (config, _events) = write_config(&sim, dir.path(), "*/5 * * * * *");
    let creds: pollhook_sim::SimCredentials =
        serde_json::from_str(&sim.get("/_sim/credentials")).unwrap();
    let members = creds.members.len() as u64;
    assert!(members >= 2, "{members} members");
    let tokens = || {
        let counts: std::collections::BTreeMap<String, u64> =
            serde_json::from_str(&sim.get("/_sim/requests")).unwrap();
        counts.get("POST /api/v1/auth/token").copied().unwrap_or(0)
    };
    let once = || {
        let o = pollhook(&["once", "--config", config.to_str().unwrap()]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            !t.contains("eyJhbGci"),
            "an access token in the output:\n{t}"
        );
    };
    once();
    assert_eq!(
        tokens(),
        members,
        "the first `once` refreshes each member once"
    );
    once();
    assert_eq!(
        tokens(),
        members,
        "the second `once` used the stored, still valid tokens"
    );
    sim.post("/_sim/expire-tokens");
    once();
    assert_eq!(
        tokens(),
        2 * members,
        "each rejected stored token is refreshed once"
    );
    once();
    assert_eq!(tokens(), 2 * members, "and the new ones are kept in turn");
    for args in [["status", "--config"], ["check-config", "--config"]] {
        let o = pollhook(&[args[0], args[1], config.to_str().unwrap()]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            !t.contains("eyJhbGci"),
            "an access token in {}:\n{t}",
            args[0]
        );
    }
}
