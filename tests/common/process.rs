//! `pollhook simulate` as a separate process, and other child processes of the tests.

use pollhook_sim::fidelity::{self, Expected};
use pollhook_sim::{Cost, JournalEntry, SimCredentials};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

/// `pollhook simulate --manual` on 127.0.0.1:0; killed on drop.
pub struct SimProcess {
    child: Child,
    /// Held open: a closed pipe would make the simulator's next print fail.
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pub base_url: String,
    pub config: String,
}

impl SimProcess {
    pub fn start(seed: u64) -> SimProcess {
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

    pub fn post(&self, path: &str) {
        http("POST", &format!("{}{path}", self.base_url));
    }

    /// The ground-truth journal.
    pub fn journal(&self) -> Vec<JournalEntry> {
        serde_json::from_str(&self.get("/_sim/journal")).unwrap()
    }

    /// The ground truth with the envelope each event must have (for the printed config).
    pub fn truth(&self) -> Vec<Expected> {
        let creds: SimCredentials = serde_json::from_str(&self.get("/_sim/credentials")).unwrap();
        fidelity::expected(&self.journal(), &creds, 0)
    }

    /// The API cost by the simulator's counters, and its floor.
    pub fn cost(&self) -> Cost {
        serde_json::from_str(&self.get("/_sim/cost")).unwrap()
    }

    /// Waits until a daemon has polled every member and walked every company once: its first
    /// cycle (the baseline of `start = "now"`) is done, so later traffic is news to it.
    pub fn wait_for_first_cycle(&self) {
        let creds: SimCredentials = serde_json::from_str(&self.get("/_sim/credentials")).unwrap();
        let (members, companies) = (creds.members.len() as u64, creds.onlinepajak.len() as u64);
        wait_until("the daemon's first cycle", || {
            let c = self.cost();
            c.polls >= members && c.walks >= companies
        });
    }

    /// Waits until the JSONL log at `events` has as many lines as the journal has entries:
    /// the daemon has caught up with every step so far.
    pub fn wait_for_catch_up(&self, events: &std::path::Path) {
        wait_until("the daemon to catch up with the journal", || {
            lines(events) >= self.journal().len()
        });
    }
}

/// Complete lines in the file at `path` (0 when it does not exist).
pub fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .matches('\n')
        .count()
}

/// How long a test waits for a condition before it fails: long, because the machine may be
/// busy; a condition that holds ends the wait at once.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Polls `done` every 50 ms until it holds; fails the test after [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request on a throwaway runtime (the tests themselves are synchronous).
pub fn http(method: &str, url: &str) -> String {
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
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl SimProcess {
    /// `GET` a simulator path, e.g. `/_sim/requests`.
    pub fn get(&self, path: &str) -> String {
        http("GET", &format!("{}{path}", self.base_url))
    }

    /// The printed config with the state dir and the JSONL log moved under `dir`, and the
    /// given schedule. Returns (config path, JSONL path).
    pub fn write_config(
        &self,
        dir: &std::path::Path,
        schedule: &str,
        extra: &str,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let events = dir.join("events.jsonl");
        let cfg = self
            .config
            .replace(
                "./pollhook-sim-state",
                &dir.join("state").display().to_string(),
            )
            .replace("./pollhook-sim-events.jsonl", &events.display().to_string())
            .replace("*/5 * * * * *", schedule);
        let path = dir.join("pollhook.toml");
        std::fs::write(&path, format!("{cfg}{extra}")).unwrap();
        (path, events)
    }
}

/// `pollhook run --config CONFIG`, its stderr appended to `log`; killed on drop.
pub fn start_daemon(config: &std::path::Path, log: &std::path::Path) -> Killed {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Killed(
        Command::new(BIN)
            .args(["run", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    )
}

impl SimProcess {
    /// Waits (30 s at most) until a daemon has polled both providers a few times: its first
    /// cycle took the baseline (start = "now"), so traffic from now on is what it must emit.
    pub fn wait_for_first_polls(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let counts: serde_json::Value =
                serde_json::from_str(&self.get("/_sim/requests")).unwrap();
            let n = |k: &str| counts.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            if n("GET /api/v1/document/poll") >= 4 && n("GET /v2.0/invoices/sale") >= 2 {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the daemon never polled: {counts}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Killed {
    /// SIGTERM, then waits (30 s at most) for the exit.
    pub fn terminate(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
