//! End to end: the built `pollhook` binary against `pollhook simulate` in another process,
//! through the documented subcommands only.

use pollhook::fidelity;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

/// `pollhook simulate --manual` on 127.0.0.1:0; killed on drop.
struct SimProcess {
    child: Child,
    /// Held open: a closed pipe would make the simulator's next print fail.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    base_url: String,
    config: String,
}

impl SimProcess {
    fn start(seed: u64) -> SimProcess {
        let mut child = Command::new(BIN)
            .args([
                "simulate",
                "--listen",
                "127.0.0.1:0",
                "--manual",
                "--seed",
                &seed.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut config = String::new();
        let mut base_url = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(url) = line
                .strip_prefix("base_url = ")
                .filter(|_| base_url.is_empty())
            {
                base_url = url.trim_matches('"').to_string();
            }
            config.push_str(&line);
            config.push('\n');
            if line.starts_with("path = ") {
                break;
            }
        }
        assert!(
            base_url.starts_with("http://127.0.0.1:"),
            "no base_url in:\n{config}"
        );
        SimProcess {
            child,
            _stdout: lines,
            base_url,
            config,
        }
    }

    fn post(&self, path: &str) {
        http("POST", &format!("{}{path}", self.base_url));
    }

    fn journal(&self) -> Vec<String> {
        let body = http("GET", &format!("{}/_sim/journal", self.base_url));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["payload"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request on a throwaway runtime (the tests themselves are synchronous).
fn http(method: &str, url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let req = if method == "POST" {
            client.post(url)
        } else {
            client.get(url)
        };
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {url}: {status} {body}");
        body
    })
}

/// A child process killed when the test ends, even by a panic.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let events = dir.join("events.jsonl");
    let cfg = sim
        .config
        .replace(
            "./pollhook-sim-state",
            &dir.join("state").display().to_string(),
        )
        .replace("./pollhook-sim-events.jsonl", &events.display().to_string())
        .replace("*/5 * * * * *", schedule);
    let path = dir.join("pollhook.toml");
    std::fs::write(&path, cfg).unwrap();
    (path, events)
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

    let report = fidelity::compare(&sim.journal(), &fidelity::read_jsonl(&log).unwrap());
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
    // Steps further apart than the one-second schedule: each change is polled before the next.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        sim.post("/_sim/step");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .count()
        < sim.journal().len()
    {
        assert!(Instant::now() < deadline, "events did not arrive in time");
        std::thread::sleep(Duration::from_millis(200));
    }
    Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(&events).unwrap();
    let report = fidelity::compare(&sim.journal(), &fidelity::read_jsonl(&log).unwrap());
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
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(1500)); // one poll between steps
        sim.post("/_sim/step");
        wait_for("the first events", &|| {
            count(&events) == sim.journal().len()
        });
        if count(&events) > 0 {
            break;
        }
    }
    assert!(count(&events) > 0, "no traffic before the rotation");
    let rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&events, &rotated).unwrap();
    Command::new("kill")
        .args(["-HUP", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        sim.post("/_sim/step");
    }
    wait_for("events in the reopened file", &|| {
        count(&rotated) + count(&events) == sim.journal().len() && count(&events) > 0
    });
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the daemon"
    );
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&rotated).unwrap(),
        std::fs::read_to_string(&events).unwrap()
    );
    let report = fidelity::compare(&sim.journal(), &fidelity::read_jsonl(&both).unwrap());
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
