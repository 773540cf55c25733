//! pollhook as a service: the systemd unit (verify, exposure), the notify protocol (READY=1,
//! WATCHDOG=1, STOPPING=1) seen through a fake `$NOTIFY_SOCKET`, the admin endpoint
//! (`/metrics` as strict Prometheus text, `/healthz`, `/status` answering `pollhook status`),
//! the CamInvoice connect flow against the simulator, and JSON logs.
//!
//! The daemon is the built binary, against an in-process simulator on 127.0.0.1:0; the admin
//! endpoint binds port 0 and is found through `<state_dir>/admin.addr`.

mod common;

use common::tool::{require_tool, require_tool_in, version_in, Tool, SYSTEMD_ANALYZE};
use pollhook::time::{format_ms, now_ms};
use pollhook_sim::{pollhook_config, SimConfig, SimServer, Simulator};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

/// A simulator without revocations or OnlinePajak: every cycle of the sim account succeeds.
fn steady() -> SimConfig {
    SimConfig {
        revoke_probability: 0.0,
        op_companies: 0,
        ..SimConfig::default()
    }
}

struct Setup {
    sim: Simulator,
    server: SimServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A config for the simulator with `daemon_extra` lines added to `[daemon]`.
    async fn new(schedule: &str, daemon_extra: &str) -> Setup {
        let sim = Simulator::new(steady());
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join("state"),
            &dir.path().join("events.jsonl"),
            "now",
            schedule,
        )
        .replace("[daemon]\n", &format!("[daemon]\n{daemon_extra}"));
        let config = dir.path().join("pollhook.toml");
        std::fs::write(&config, text).unwrap();
        Setup {
            sim,
            server,
            dir,
            config,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cfg(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// `pollhook run` with `env`; stderr goes to `<dir>/daemon.log`.
    fn spawn_daemon(&self, env: &[(&str, &str)]) -> Daemon {
        let log = self.dir.path().join("daemon.log");
        let child = Command::new(BIN)
            .args(["run", "--config", self.cfg()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status must be success within 20 s.
    async fn stop(mut self) {
        let pid = self.child.id().expect("still running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the daemon stops after SIGTERM")
            .unwrap();
        assert!(status.success(), "exit {status}\n{}", self.log());
    }
}

async fn pollhook(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

// ----------------------------------------------------------------------------- the unit

#[test]
fn the_unit_passes_systemd_analyze_verify_and_exposes_at_most_2() {
    // systemd 250 or later: `security --offline=true` rates a unit file that is not loaded.
    let Some(analyze) = require_tool(&SYSTEMD_ANALYZE) else {
        return;
    };
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/pollhook.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/pollhook run"), "{text}");
    // `verify` checks that ExecStart's binary exists: point it at the one just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pollhook.service");
    std::fs::write(&copy, text.replace("/usr/bin/pollhook", BIN)).unwrap();

    let o = std::process::Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let (out, err) = text_of(&o);
    assert!(o.status.success(), "verify failed:\n{out}{err}");
    assert!(
        !err.contains("pollhook.service"),
        "verify warns about the unit:\n{err}"
    );

    let o = std::process::Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let (out, err) = text_of(&o);
    let exposure: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for pollhook.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}{err}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{out}");
}

/// systemd restarts the daemon after a failure a retry may fix (exit 1), never after one only
/// the operator can fix: a configuration error (2) or a refused store (3), which would
/// otherwise restart every `RestartSec` forever.
#[test]
fn the_unit_does_not_restart_what_a_restart_cannot_fix() {
    use pollhook::cli::exit;
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/pollhook.service"),
    )
    .unwrap();
    let prevented: Vec<u8> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("RestartPreventExitStatus="))
        .flat_map(|v| v.split_whitespace().map(|n| n.parse::<u8>().unwrap()))
        .collect();
    assert!(unit.contains("\nRestart=on-failure\n"), "{unit}");
    for code in [exit::CONFIG, exit::ACTION_NEEDED] {
        assert!(
            prevented.contains(&code),
            "exit {code} is restarted: {prevented:?}"
        );
    }
    assert!(!prevented.contains(&exit::FAILED), "{prevented:?}");
}

fn text_of(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The shared tool rule (tests/common/tool.rs): a missing tool fails a CI run with its install
/// command and is a visible skip elsewhere; a too old one counts as missing.
#[test]
fn a_missing_or_old_tool_fails_under_ci_with_the_install_command_and_skips_elsewhere() {
    let missing = Tool {
        name: "pollhook-no-such-tool",
        also_in: &["/nonexistent"],
        version_args: &["--version"],
        min_version: None,
        install_hint: "apt-get install pollhook-no-such-tool",
    };
    // The panic message of a CI run that lacks `tool`.
    let ci_failure = |tool: &Tool| -> String {
        let failure = std::panic::catch_unwind(|| require_tool_in(tool, true))
            .expect_err("under CI a missing tool fails the test");
        failure
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(require_tool_in(&missing, false), None);
    let text = ci_failure(&missing);
    assert!(
        text.contains("pollhook-no-such-tool is not installed")
            && text.contains("install it: apt-get install pollhook-no-such-tool"),
        "{text}"
    );

    // A tool that is there but older than needed counts as missing, saying which version.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pollhook-fake-tool");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"pollhook-fake-tool v3.1.4 (test)\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir_name: &'static str = Box::leak(dir.path().display().to_string().into_boxed_str());
    let fake = |min: &'static str| Tool {
        name: "pollhook-fake-tool",
        also_in: std::slice::from_ref(Box::leak(Box::new(dir_name))),
        min_version: Some(min),
        install_hint: "pip install pollhook-fake-tool",
        ..missing
    };
    assert_eq!(require_tool_in(&fake("3.1"), true), Some(script.clone()));
    assert_eq!(require_tool_in(&fake("3.1.4"), true), Some(script));
    let text = ci_failure(&fake("3.2"));
    assert!(
        text.contains("is version 3.1.4, older than the 3.2 the tests need")
            && text.contains("install it: pip install pollhook-fake-tool"),
        "{text}"
    );
    assert_eq!(require_tool_in(&fake("10"), false), None);

    for (text, want) in [
        ("systemd 252 (252.38-1~deb12u1)\n+PAM +AUDIT", vec![252]),
        ("nats-server: v2.10.22", vec![2, 10, 22]),
        ("version 1.2.3, build abc", vec![1, 2, 3]),
        ("no digits here", vec![]),
    ] {
        assert_eq!(version_in(text).unwrap_or_default(), want, "{text}");
    }
    assert!(version_in("systemd 249 (249.11)").unwrap() < vec![250]);
}

// ------------------------------------------------------------------------ the daemon

/// Datagrams received on the fake notify socket, in order.
async fn recv_until(
    socket: &tokio::net::UnixDatagram,
    seen: &mut Vec<String>,
    want: &str,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want} within {within:?}; got {seen:?}"))
            .unwrap();
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_daemon_notifies_ready_feeds_the_watchdog_and_answers_status_metrics_and_healthz(
) {
    let s = Setup::new("* * * * * *", "admin_listen = \"127.0.0.1:0\"\n").await;
    let notify_path = s.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let daemon = s.spawn_daemon(&[
        ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    let mut seen = Vec::new();
    recv_until(&socket, &mut seen, "READY=1", common::process::PATIENCE).await;
    // The watchdog is fed every second (half of WATCHDOG_USEC) while cycles progress.
    recv_until(&socket, &mut seen, "WATCHDOG=1", common::process::PATIENCE).await;
    let ready = seen.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_ping = seen.iter().position(|m| m == "WATCHDOG=1").unwrap();
    assert!(ready < first_ping, "{seen:?}");

    // READY=1 is sent after the admin endpoint is bound: its address is in the state dir.
    let addr = std::fs::read_to_string(s.state_dir().join("admin.addr"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    // A few cycles, then /healthz is green and the counters show them.
    wait_for_cycles(&addr, 3).await;
    let (code, body) = get(&format!("http://{addr}/healthz")).await;
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["accounts"][0]["account"], "sim-kh");

    let (code, metrics) = get(&format!("http://{addr}/metrics")).await;
    assert_eq!(code, 200);
    let samples = parse_prometheus(&metrics).unwrap_or_else(|e| panic!("{e}\n{metrics}"));
    let polls: f64 = samples
        .iter()
        .filter(|s| {
            s.name == "pollhook_requests_total"
                && s.labels["endpoint"] == "GET /api/v1/document/poll"
                && s.labels["status"] == "200"
        })
        .map(|s| s.value)
        .sum();
    assert!(polls >= 4.0, "one poll per member per cycle: {metrics}");
    for family in [
        "pollhook_cycles_total",
        "pollhook_last_success_timestamp_seconds",
        "pollhook_sink_backlog",
        "pollhook_outbox_last_seq",
        "pollhook_detection_latency_seconds_count",
    ] {
        assert!(
            samples.iter().any(|s| s.name == family),
            "{family} missing:\n{metrics}"
        );
    }

    // Traffic becomes events, counted by type.
    s.sim.step();
    s.sim.step();
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + common::process::PATIENCE;
    loop {
        let (_, m) = get(&url).await;
        let samples = parse_prometheus(&m).unwrap_or_else(|e| panic!("{e}\n{m}"));
        if samples.iter().any(|s| s.name == "pollhook_events_total") {
            break;
        }
        assert!(Instant::now() < deadline, "no events counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // `status` cannot open the store the daemon holds: it asks the daemon.
    let o = pollhook(&["status", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}\n{}", daemon.log());
    assert!(err.contains("from the running daemon"), "{err}");
    assert!(
        out.contains("account sim-kh (caminvoice, mode cron)"),
        "{out}"
    );
    // The running daemon measured the detection latency of the events it committed.
    assert!(out.contains("  detection latency     p50 "), "{out}");
    for m in s.sim.credentials().members {
        assert!(
            out.contains(&format!("member {}: ok", m.endpoint_id)),
            "{out}"
        );
    }
    assert!(out.contains("sink jsonl: delivered up to seq"), "{out}");
    // `/status` itself: its instants are RFC 3339, as the CLI prints them.
    let (code, body) = get(&format!("http://{addr}/status")).await;
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let unit = &status["accounts"][0]["units"][0];
    let last = unit["last_success"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        chrono::DateTime::parse_from_rfc3339(last).is_ok(),
        "{last} in {body}"
    );

    daemon.stop().await;
    recv_until(&socket, &mut seen, "STOPPING=1", common::process::PATIENCE).await;
    assert!(
        !s.state_dir().join("admin.addr").exists(),
        "admin.addr is removed at shutdown"
    );
    // Without the daemon, `status` reads the store itself.
    let o = pollhook(&["status", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(
        o.status.success() && !err.contains("running daemon"),
        "{out}{err}"
    );
    assert!(out.contains("member "), "{out}");
}

async fn wait_for_cycles(addr: &str, n: u64) {
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + common::process::PATIENCE;
    loop {
        let (_, m) = get(&url).await;
        let ok: f64 = parse_prometheus(&m)
            .unwrap_or_else(|e| panic!("{e}\n{m}"))
            .iter()
            .filter(|s| s.name == "pollhook_cycles_total" && s.labels["outcome"] == "ok")
            .map(|s| s.value)
            .sum();
        if ok >= n as f64 {
            return;
        }
        assert!(Instant::now() < deadline, "fewer than {n} cycles:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ------------------------------------------------------------------------- connect

/// Follows the connect URL like the business's browser: the simulator consents at once and
/// redirects to `redirect_url?authToken=..&state=..`.
async fn browser(url: &str) -> String {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302, "{url}");
    resp.headers()["location"].to_str().unwrap().to_string()
}

async fn print_url(s: &Setup, state: &str) -> String {
    let o = pollhook(
        &[
            "connect",
            "caminvoice",
            "--config",
            s.cfg(),
            "--account",
            "sim-kh",
            "--print-url",
            "--redirect-url",
            "http://localhost/cb?erp=1",
            "--state",
            state,
        ],
        None,
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let url = out.trim().to_string();
    assert_eq!(
        url,
        format!(
            "{}/connect?client_id=sim-client&redirect_url=http%3A%2F%2Flocalhost%2Fcb%3Ferp%3D1&state={state}",
            s.server.base_url()
        )
    );
    url
}

/// `connect --auth-token -` with the redirected address on stdin; returns the endpoint id.
async fn exchange(s: &Setup, redirected: &str) -> String {
    let o = pollhook(
        &[
            "connect",
            "caminvoice",
            "--config",
            s.cfg(),
            "--account",
            "sim-kh",
            "--auth-token",
            "-",
        ],
        Some(redirected),
    )
    .await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let token = redirected
        .split("authToken=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!out.contains(token) && !err.contains(token), "{out}{err}");
    for m in s.sim.credentials().members {
        assert!(
            !out.contains(&m.refresh_token) && !err.contains(&m.refresh_token),
            "a refresh token was printed: {out}{err}"
        );
    }
    out.trim().to_string()
}

async fn status_of(s: &Setup) -> String {
    let o = pollhook(&["status", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    out
}

fn member_block<'a>(status: &'a str, endpoint: &str) -> &'a str {
    let at = status
        .find(&format!("member {endpoint}:"))
        .unwrap_or_else(|| panic!("no member {endpoint} in:\n{status}"));
    let rest = &status[at..];
    let end = rest[1..].find("member ").map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_prints_the_url_exchanges_the_auth_token_and_the_next_cycle_polls_the_member() {
    let s = Setup::new("*/5 * * * * *", "").await;
    let configured = s.sim.credentials().members;
    let once = || async {
        let o = pollhook(&["once", "--config", s.cfg()], None).await;
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
    };
    once().await; // the baseline of the configured members

    // A configured member disconnects; its config token is refused from now on.
    let first = &configured[0].endpoint_id;
    assert!(s.sim.revoke(first));
    // It reconnects through the connect flow (the simulator reconnects a revoked member
    // first): the stored token is newer than the config's and is used.
    let redirected = browser(&print_url(&s, "s1").await).await;
    assert!(redirected.starts_with("http://localhost/cb?erp=1&authToken="));
    assert!(redirected.ends_with("&state=s1"), "{redirected}");
    assert_eq!(&exchange(&s, &redirected).await, first);
    once().await;
    let st = status_of(&s).await;
    assert!(member_block(&st, first).contains(": ok"), "{st}");

    // A business the config does not list connects: it is polled from the next cycle on.
    let redirected = browser(&print_url(&s, "s2").await).await;
    let new = exchange(&s, &redirected).await;
    assert!(
        !configured.iter().any(|m| m.endpoint_id == new),
        "{new} was already configured"
    );
    assert!(s
        .sim
        .credentials()
        .members
        .iter()
        .any(|m| m.endpoint_id == new));
    let st = status_of(&s).await;
    assert!(
        member_block(&st, &new).contains("never polled"),
        "known before its first cycle:\n{st}"
    );
    once().await;
    let st = status_of(&s).await;
    let block = member_block(&st, &new);
    assert!(block.contains(": ok") && !block.contains("never"), "{st}");

    // An authToken is single-use: a second exchange fails and says what to do.
    let o = pollhook(
        &[
            "connect",
            "caminvoice",
            "--config",
            s.cfg(),
            "--account",
            "sim-kh",
            "--auth-token",
            &redirected,
        ],
        None,
    )
    .await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("open the connect URL again"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_daemon_running_connect_goes_through_it_and_its_next_cycle_polls_the_member() {
    let s = Setup::new("* * * * * *", "admin_listen = \"127.0.0.1:0\"\n").await;
    let daemon = s.spawn_daemon(&[]);
    let state = s.state_dir();
    let addr = wait_for("admin.addr", common::process::PATIENCE, || {
        std::fs::read_to_string(state.join("admin.addr")).ok()
    })
    .await;
    wait_for_cycles(addr.trim(), 1).await;

    let redirected = browser(&print_url(&s, "s3").await).await;
    let new = exchange(&s, &redirected).await;
    let deadline = Instant::now() + common::process::PATIENCE;
    loop {
        let st = status_of(&s).await;
        if st.contains(&format!("member {new}: ok")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not poll {new}:\n{st}\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    daemon.stop().await;
}

// ------------------------------------------------------------------------- /healthz

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_names_the_accounts_without_a_recent_successful_cycle() {
    // A second account whose host refuses connections: it never succeeds.
    let broken = "\n[[accounts]]\nname = \"down-kh\"\nprovider = \"caminvoice\"\nbase_url = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\nmax_retries = 0\ntimeout = \"1s\"\n\n[[accounts.members]]\nendpoint_id = \"KHUID0\"\nrefresh_token = \"r\"\n\n[[sinks]]";
    let s = Setup::new(
        "* * * * * *",
        "admin_listen = \"127.0.0.1:0\"\nhealthz_periods = 2\n",
    )
    .await;
    let edited = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("\n[[sinks]]", broken);
    std::fs::write(&s.config, edited).unwrap();
    let daemon = s.spawn_daemon(&[]);
    let state = s.state_dir();
    let addr = wait_for("admin.addr", common::process::PATIENCE, || {
        std::fs::read_to_string(state.join("admin.addr")).ok()
    })
    .await;
    let url = format!("http://{}/healthz", addr.trim());
    let deadline = Instant::now() + common::process::PATIENCE;
    let body = loop {
        let (code, body) = get(&url).await;
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200, "{body}");
        assert!(Instant::now() < deadline, "never stale: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "stale", "{body}");
    let stale: Vec<&str> = health["stale"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["account"].as_str().unwrap())
        .collect();
    assert_eq!(stale, ["down-kh"], "{body}");
    daemon.stop().await;
}

// ------------------------------------------------------------------------- JSON logs

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_account_cycle_and_counts_as_fields() {
    let start = format_ms(now_ms() - 3_600_000);
    let s = Setup::new("*/5 * * * * *", "log_format = \"json\"\n").await;
    // Back-fill an hour: the first cycle has events, so "cycle done" is logged at info.
    let edited = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("start = \"now\"", &format!("start = \"{start}\""))
        .replace("log_level = \"warn\"", "log_level = \"info\"");
    std::fs::write(&s.config, edited).unwrap();
    s.sim.step();
    s.sim.step();
    let o = pollhook(&["once", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let done = lines
        .iter()
        .find(|l| l["message"] == "cycle done")
        .unwrap_or_else(|| panic!("no cycle done line in:\n{err}"));
    assert_eq!(done["account"], "sim-kh", "{done}");
    assert_eq!(done["level"], "INFO");
    for field in [
        "cycle",
        "units",
        "changed",
        "events",
        "requests",
        "elapsed_ms",
    ] {
        assert!(done[field].is_u64(), "{field} missing: {done}");
    }
    assert!(done["events"].as_u64().unwrap() > 0, "{done}");
    // Besides the log, stderr carries only `once`'s own report.
    assert!(
        err.lines()
            .all(|l| l.starts_with('{') || l.starts_with("sim-kh: ") || l.starts_with("sink ")),
        "non-JSON log line:\n{err}"
    );

    // Nothing new: still, an account's first cycle of a run says at info that it ran
    // (regression, issue 15: a quiet first cycle, a baseline, logged nothing above debug).
    let o = pollhook(&["once", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let done = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["message"] == "cycle done")
        .unwrap_or_else(|| panic!("no cycle done line in:\n{err}"));
    assert_eq!(
        (&done["level"], &done["cycle"], &done["events"]),
        (&"INFO".into(), &1.into(), &0.into()),
        "{done}"
    );
}

// ------------------------------------------------------------- a strict Prometheus parser

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

/// The text exposition format 0.0.4, strictly: `# HELP name text` and `# TYPE name kind`
/// once per family, before its samples; samples `name{label="value",...} value` with valid
/// names, only `\\`, `\"` and `\n` escapes, numeric values; families not interleaved; a
/// counter's name ends in `_total`; the text ends with a newline.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    if !text.ends_with('\n') {
        return Err("the exposition does not end with a newline".into());
    }
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut finished = std::collections::BTreeSet::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            return Err(at("empty line"));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next(), parts.next(), parts.next());
            let name = name.ok_or_else(|| at("comment without a metric name"))?;
            if !valid_metric_name(name) {
                return Err(at("invalid metric name"));
            }
            if current.as_deref() != Some(name) {
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                if finished.contains(name) {
                    return Err(at("family appears twice"));
                }
                current = Some(name.to_string());
            }
            match kw {
                Some("HELP") => {
                    let help = tail.ok_or_else(|| at("HELP without text"))?;
                    check_escapes(help).map_err(|e| at(&e))?;
                    if !helped.insert(name.to_string()) {
                        return Err(at("second HELP"));
                    }
                }
                Some("TYPE") => {
                    let kind = tail.ok_or_else(|| at("TYPE without a kind"))?;
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("unknown type"));
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter's name must end in _total"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("second TYPE"));
                    }
                    if samples.iter().any(|s: &Sample| s.name == name) {
                        return Err(at("TYPE after samples"));
                    }
                }
                _ => return Err(at("a comment that is neither HELP nor TYPE")),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("malformed comment"));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("invalid metric name"));
        }
        // A histogram's samples are its name with _bucket, _sum or _count.
        let family = match current.as_deref() {
            Some(c)
                if types.get(c).is_some_and(|k| k == "histogram")
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(c)) =>
            {
                c
            }
            _ => name,
        };
        if current.as_deref() != Some(family) {
            return Err(at("sample outside its family's HELP/TYPE block"));
        }
        if !types.contains_key(family) || !helped.contains(family) {
            return Err(at("sample without HELP and TYPE"));
        }
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if rest.starts_with('{') {
            let (pairs, tail) = parse_labels(rest).map_err(|e| at(&e))?;
            for (k, v) in pairs {
                if labels.insert(k, v).is_some() {
                    return Err(at("label repeated"));
                }
            }
            rest = tail_of(line, &tail);
        }
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value"))?;
        let mut parts = value.split(' ');
        let v = parts.next().unwrap();
        let value: f64 = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| at("value is not a number"))?,
        };
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| at("timestamp is not an integer"))?;
        }
        if parts.next().is_some() {
            return Err(at("trailing text"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

/// Parses `{a="x",b="y"}` at the start of `s`; returns the labels and what follows the `}`.
fn parse_labels(s: &str) -> Result<(Vec<(String, String)>, String), String> {
    let mut out = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((out, after.to_string()));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        let mut chars = rest[eq + 1..].chars();
        if chars.next() != Some('"') {
            return Err("label value not quoted".into());
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or("unterminated label value")? {
                '\\' => value.push(match chars.next().ok_or("dangling escape")? {
                    '\\' => '\\',
                    '"' => '"',
                    'n' => '\n',
                    _ => return Err("invalid escape in a label value".into()),
                }),
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.to_string(), value));
        rest = chars.as_str();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn tail_of<'a>(line: &'a str, tail: &str) -> &'a str {
    &line[line.len() - tail.len()..]
}

/// HELP text allows only `\\` and `\n` escapes.
fn check_escapes(help: &str) -> Result<(), String> {
    let mut chars = help.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !matches!(chars.next(), Some('\\') | Some('n')) {
            return Err("invalid escape in HELP".into());
        }
    }
    Ok(())
}

#[test]
fn the_prometheus_parser_is_strict() {
    let good = "# HELP a_total A \\\\ thing.\n# TYPE a_total counter\na_total{x=\"q\\\"uote\",y=\"\\n\"} 3\na_total 1e3\n";
    let s = parse_prometheus(good).unwrap();
    assert_eq!(s[0].labels["x"], "q\"uote");
    assert_eq!(s[0].labels["y"], "\n");
    assert_eq!(s[1].value, 1000.0);
    for bad in [
        "a_total 1\n",                                                   // no HELP/TYPE
        "# HELP a A\n# TYPE a counter\na 1\n",                           // counter without _total
        "# HELP a A\n# TYPE a gauge\na{x=\"1} 1\n",                      // unterminated
        "# HELP a A\n# TYPE a gauge\na{x=\"\\t\"} 1\n",                  // bad escape
        "# HELP a A\n# TYPE a gauge\na{1x=\"v\"} 1\n",                   // bad label name
        "# HELP a A\n# TYPE a gauge\na{x=v} 1\n",                        // unquoted
        "# HELP a A\n# TYPE a gauge\na one\n",                           // not a number
        "# HELP a A\n# TYPE a gauge\na 1",                               // no final newline
        "# HELP a A\n# TYPE a gauge\n# HELP b B\n# TYPE b gauge\na 1\n", // outside its block
        "# HELP 1a A\n# TYPE 1a gauge\n1a 1\n",                          // bad metric name
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted: {bad:?}");
    }
}

// ------------------------------------------------------------------- config and tokens

#[test]
fn the_service_keys_are_validated_with_their_location() {
    use pollhook::config::{Config, LogFormat};
    let base = "[daemon]\nstate_dir = \"/x\"\n%EXTRA%\n[[accounts]]\nname = \"a\"\nprovider = \"caminvoice\"\nbase_url = \"https://ci.example\"\nclient_id = \"c\"\nclient_secret = \"s\"\n\n[[sinks]]\nkind = \"jsonl\"\npath = \"/x/e\"\n";
    let parse = |extra: &str| Config::parse(&base.replace("%EXTRA%", extra), "p.toml".as_ref());
    // A CamInvoice account without members is valid: `connect` adds them.
    let c = parse("").unwrap();
    assert_eq!(c.daemon.log_format, LogFormat::Text);
    assert_eq!(c.daemon.admin_listen, None);
    assert_eq!(c.daemon.healthz_periods, 3);
    let c = parse("log_format = \"json\"\nadmin_listen = \"127.0.0.1:9187\"\nhealthz_periods = 5")
        .unwrap();
    assert_eq!(c.daemon.log_format, LogFormat::Json);
    assert_eq!(
        c.daemon.admin_listen,
        Some("127.0.0.1:9187".parse().unwrap())
    );
    assert_eq!(c.daemon.healthz_periods, 5);
    for (extra, says) in [
        ("log_format = \"xml\"", "unknown `log_format`"),
        ("admin_listen = \"localhost\"", "not an IP:port"),
        ("healthz_periods = 0", "out of range"),
    ] {
        let e = parse(extra).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
        assert_eq!(e.location().map(|l| l.0), Some(3), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_logging_without_a_journal_falls_back_to_text() {
    let s = Setup::new("*/5 * * * * *", "log_format = \"journald\"\n").await;
    let edited = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("log_level = \"warn\"", "log_level = \"info\"");
    std::fs::write(&s.config, edited).unwrap();
    let o = pollhook(&["once", "--config", s.cfg()], None).await;
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("a journal runs here: the log went to it");
    } else {
        assert!(err.contains("journal socket cannot be opened"), "{err}");
    }
}

/// A CamInvoice stand-in that rotates the refresh token once: `valid` is the only token it
/// accepts; the first refresh with "rt1" answers with "rt2" and retires "rt1".
#[derive(Clone, Default)]
struct Rotating {
    valid: std::sync::Arc<std::sync::Mutex<String>>,
    used: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// The next poll answers 401 (the access token rejected), once.
    reject: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

async fn rotating_server(r: Rotating) -> std::net::SocketAddr {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/api/v1/auth/token",
            post(
                |axum::extract::State(r): axum::extract::State<Rotating>,
                 body: axum::body::Bytes| async move {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    let given = v["refresh_token"].as_str().unwrap().to_string();
                    r.used.lock().unwrap().push(given.clone());
                    let mut valid = r.valid.lock().unwrap();
                    if given != *valid {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(serde_json::json!({"message": "Invalid refresh token"})),
                        );
                    }
                    let mut answer = serde_json::json!({"access_token": "at", "expire_in": 900});
                    if given == "rt1" {
                        *valid = "rt2".into();
                        answer["refresh_token"] = "rt2".into();
                    }
                    (axum::http::StatusCode::OK, axum::Json(answer))
                },
            ),
        )
        .route(
            "/api/v1/document/poll",
            get(
                |axum::extract::State(r): axum::extract::State<Rotating>| async move {
                    if r.reject.swap(false, std::sync::atomic::Ordering::SeqCst) {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            axum::Json(serde_json::json!({"message": "Unauthorized"})),
                        );
                    }
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(serde_json::json!([])),
                    )
                },
            ),
        )
        .route(
            "/api/v1/document",
            get(|| async {
                axum::Json(serde_json::json!({"data": [], "pagination": {"total_pages": 1}}))
            }),
        )
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_is_stored_and_outranks_the_config_until_the_config_changes() {
    use pollhook::config::Config;
    use pollhook::engine::Tick;
    let r = Rotating::default();
    *r.valid.lock().unwrap() = "rt1".into();
    let addr = rotating_server(r.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |token: &str| {
        let text = format!(
            "[daemon]\nstate_dir = \"{}\"\n\n[[accounts]]\nname = \"a\"\nprovider = \"caminvoice\"\nbase_url = \"http://{addr}\"\nclient_id = \"c\"\nclient_secret = \"s\"\nretry_base = \"10ms\"\n\n[[accounts.members]]\nendpoint_id = \"KHUID1\"\nrefresh_token = \"{token}\"\n\n[[sinks]]\nkind = \"jsonl\"\npath = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("e.jsonl").display()
        );
        Config::parse(&text, "t.toml".as_ref()).unwrap()
    };
    let cycle = |c: Config| async move {
        let engine = pollhook::scheduler::open(&c).unwrap();
        let ticks = engine.cycle_all().await;
        let Tick::Ran(report) = &ticks[0].1 else {
            panic!("skipped")
        };
        assert!(report.ok(), "{:?}", report.failures);
    };
    cycle(config("rt1")).await; // rotates to rt2, and stores it
    assert_eq!(*r.used.lock().unwrap(), ["rt1"]);
    // A restart with the config unchanged: the stored access token is still valid (it goes
    // with rt2): no refresh at all.
    cycle(config("rt1")).await;
    assert_eq!(*r.used.lock().unwrap(), ["rt1"]);
    // It is rejected: the stored rt2 is used to refresh (rt1 would be refused).
    r.reject.store(true, std::sync::atomic::Ordering::SeqCst);
    cycle(config("rt1")).await;
    assert_eq!(r.used.lock().unwrap().last().unwrap(), "rt2");
    // The operator puts a new token in the config: the config is newer now.
    *r.valid.lock().unwrap() = "rt3".into();
    cycle(config("rt3")).await;
    assert_eq!(r.used.lock().unwrap().last().unwrap(), "rt3");
}
