//! Issue 11, items 5–7, through the built binary: a provider that echoes credentials, an
//! operator's umask, a provider that hangs at shutdown, a second Ctrl-C, a hostile document
//! id, a member revoked before `start`, and config mistakes that used to pass silently.
//! RELIABILITY.md ("Hostile provider and operator") lists what each test proves.

mod common;

use base64::Engine as _;
use common::process::{Killed, SimProcess, BIN};
use common::{steady_sim, Rig};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pollhook(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// POSTs a JSON body to the simulator (e.g. a fault).
fn post_json(url: &str, body: serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
    });
}

fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `pollhook run` with its stderr collected line by line.
struct Daemon {
    child: Killed,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(cmd: &mut Command) -> Daemon {
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon {
            child: Killed(child),
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn child(&mut self) -> &mut Child {
        &mut self.child.0
    }

    fn signal(&mut self, sig: i32) {
        // SAFETY: kill(2) on the daemon this test started.
        assert_eq!(unsafe { libc::kill(self.child().id() as i32, sig) }, 0);
    }

    /// Waits for the exit (failing after `within`); returns the status and how long it took.
    fn exit_within(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                return (status, began.elapsed());
            }
            assert!(
                began.elapsed() < within,
                "the daemon did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `pollhook run` against `sim` with a hook sink `erp` running `script` (by /bin/sh) and
/// `extra` config appended, logging at info. Returns once every CamInvoice member of the
/// simulator has been polled once (its baseline is taken), with the config and JSONL paths.
fn run_with_hook(
    sim: &SimProcess,
    dir: &Path,
    script: &str,
    hook_timeout: &str,
    extra: &str,
) -> (Daemon, PathBuf, PathBuf) {
    let hook = dir.join("hook.sh");
    std::fs::write(&hook, script).unwrap();
    let extra = format!(
        "\n[[sinks]]\nname = \"erp\"\nkind = \"hook\"\ncommand = [\"/bin/sh\", {hook:?}]\ntimeout = {hook_timeout:?}\n{extra}"
    );
    let (config, events) = sim.write_config(dir, "* * * * * *", &extra);
    let cfg_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("log_level = \"warn\"", "log_level = \"info\"");
    std::fs::write(&config, cfg_text).unwrap();
    let daemon =
        Daemon::start(Command::new(BIN).args(["run", "--config", config.to_str().unwrap()]));
    let members =
        serde_json::from_str::<pollhook_sim::SimCredentials>(&sim.get("/_sim/credentials"))
            .unwrap()
            .members
            .len() as u64;
    wait_for("every member's baseline", Duration::from_secs(30), || {
        let counts: std::collections::BTreeMap<String, u64> =
            serde_json::from_str(&sim.get("/_sim/requests")).unwrap();
        counts
            .get("GET /api/v1/document/poll")
            .copied()
            .unwrap_or(0)
            >= members
    });
    (daemon, config, events)
}

#[test]
fn credentials_a_provider_echoes_reach_no_log_no_status_and_no_store_file() {
    let sim = SimProcess::start(71);
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sim.write_config(dir.path(), "*/5 * * * * *", "");
    let creds: pollhook_sim::SimCredentials =
        serde_json::from_str(&sim.get("/_sim/credentials")).unwrap();
    // The first refresh is refused with every credential quoted back; the first poll (a
    // Bearer GET, after a successful refresh) is answered 400 quoting the access token.
    for (path, status) in [("POST /api/v1/auth/token", 401), ("document/poll", 400)] {
        post_json(
            &format!("{}/_sim/fault", sim.base_url),
            serde_json::json!({"path_contains": path, "count": 1,
                "kind": {"type": "EchoCredentials", "status": status}}),
        );
    }
    let config = config.to_str().unwrap();
    let once = pollhook(&["once", "--config", config], &[("RUST_LOG", "trace")]);
    let status = pollhook(&["status", "--config", config], &[]);
    let out = format!("{}{}", text(&once), text(&status));
    // The faults fired, and their text arrived (masked) where it belongs.
    assert!(
        out.contains("Authorization: <redacted>")
            && out.contains(&format!(
                "client credentials {}:<redacted>",
                creds.client_id
            ))
            && out.contains("Bearer <redacted>"),
        "the echo faults did not fire:\n{out}"
    );
    assert!(
        text(&status).contains("last error") && text(&status).contains("<redacted>"),
        "{}",
        text(&status)
    );

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut secrets = vec![
        creds.client_secret.clone(),
        b64(&format!("{}:{}", creds.client_id, creds.client_secret)),
        b64(&creds.client_secret),
    ];
    for m in &creds.members {
        secrets.push(m.refresh_token.clone());
        secrets.push(b64(&m.refresh_token));
    }
    for c in &creds.onlinepajak {
        secrets.push(c.token.clone());
    }
    let store = files_under(&dir.path().join("state"));
    assert!(store.len() > 2, "no store files?");
    for s in &secrets {
        assert!(
            !out.contains(s.as_str()),
            "{s} leaked into the output:\n{out}"
        );
        for (path, bytes) in &store {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{s} is in the store file {}",
                path.display()
            );
        }
    }
    // The access token itself is unknown to the test: whatever followed "Bearer " and
    // "token (base64) " was masked.
    for marker in ["Bearer ", "token (base64) "] {
        for (i, _) in out.match_indices(marker) {
            assert!(
                out[i + marker.len()..].starts_with("<redacted>"),
                "unmasked after {marker:?}: {}",
                &out[i..(i + 80).min(out.len())]
            );
        }
    }
}

#[test]
fn under_umask_000_the_state_dir_is_0700_and_every_file_0600() {
    let sim = SimProcess::start(72);
    let dir = tempfile::tempdir().unwrap();
    // A hook that records the umask it runs with: the operator's, not pollhook's 077.
    let hook_umask = dir.path().join("hook.umask");
    let extra = format!(
        "\n[[sinks]]\nname = \"erp\"\nkind = \"hook\"\ncommand = [\"/bin/sh\", \"-c\", \"umask > {}\"]\n",
        hook_umask.display()
    );
    let (config, events) = sim.write_config(dir.path(), "* * * * * *", &extra);
    let cfg_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[daemon]\n", "[daemon]\nadmin_listen = \"127.0.0.1:0\"\n");
    std::fs::write(&config, cfg_text).unwrap();
    // An old install: an open state dir and JSONL file.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(&events, "").unwrap();
    std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut daemon = Daemon::start(Command::new("sh").args([
        "-c",
        "umask 000; exec \"$0\" run --config \"$1\"",
        BIN,
        config.to_str().unwrap(),
    ]));
    let addr = state.join("admin.addr");
    wait_for("admin.addr", Duration::from_secs(20), || addr.exists());
    sim.post("/_sim/step");
    wait_for("events", Duration::from_secs(20), || {
        std::fs::metadata(&events)
            .map(|m| m.len() > 0)
            .unwrap_or(false)
    });
    wait_for("the hook", Duration::from_secs(20), || {
        std::fs::read_to_string(&hook_umask).is_ok_and(|u| u.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&hook_umask).unwrap().trim(), "0000");
    assert_eq!(mode(&state), 0o700, "state dir");
    assert_eq!(mode(&addr), 0o600, "admin.addr");
    assert_eq!(mode(&events), 0o600, "JSONL file");
    let store = files_under(&state.join("store"));
    assert!(store.len() >= 2, "{store:?}");
    for (p, _) in &store {
        assert_eq!(mode(p), 0o600, "{}", p.display());
    }
    daemon.signal(libc::SIGTERM);
    let (status, took) = daemon.exit_within(Duration::from_secs(30));
    eprintln!("shutdown with nothing pending: {took:?}");
    assert!(status.success(), "{status}\n{}", daemon.log());
}

/// The shutdown budget with the provider hung and a hook sink busy (STOP_BUDGET = 30 s).
#[test]
fn sigterm_with_a_hung_provider_exits_within_the_budget_and_acks_only_what_was_delivered() {
    // A provider that accepts connections and never answers: every request takes `timeout`
    // (30 s by default), and 4 retries follow. Before the fix, SIGTERM waited for all of it.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let accepted = Arc::new(Mutex::new(Vec::new()));
    {
        let accepted = Arc::clone(&accepted);
        std::thread::spawn(move || {
            for s in hung.incoming().flatten() {
                accepted.lock().unwrap().push(s);
            }
        });
    }
    let sim = SimProcess::start(73);
    let dir = tempfile::tempdir().unwrap();
    let delivered = dir.path().join("delivered");
    // One second of work per event, then the event counts as done for the ERP.
    let (mut daemon, config, events) = run_with_hook(
        &sim,
        dir.path(),
        &format!("sleep 1\necho \"$POLLHOOK_EVENT_ID\" >> {}\n", delivered.display()),
        "60s",
        &format!(
            "\n[[accounts]]\nname = \"down\"\nprovider = \"caminvoice\"\nbase_url = {hung_url:?}\nclient_id = \"c\"\nclient_secret = \"secret-of-down\"\n\n\
             [[accounts.members]]\nendpoint_id = \"KHUID-DOWN\"\nrefresh_token = \"rt-of-down-account\"\n"
        ),
    );
    for _ in 0..4 {
        sim.post("/_sim/step");
    }
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for("hook deliveries under way", Duration::from_secs(30), || {
        !lines(&delivered).is_empty() && !accepted.lock().unwrap().is_empty()
    });
    let emitted = lines(&events).len();
    daemon.signal(libc::SIGTERM);
    let (status, took) = daemon.exit_within(Duration::from_secs(60));
    eprintln!(
        "shutdown with a hung provider and a busy hook sink ({emitted} events emitted, {} delivered to the hook): {took:?}",
        lines(&delivered).len()
    );
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(
        took <= pollhook::scheduler::STOP_BUDGET,
        "took {took:?}\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());

    // Nothing acked that the hook did not finish.
    let listed = pollhook(
        &[
            "events",
            "list",
            "--config",
            config.to_str().unwrap(),
            "--sink",
            "erp",
            "--limit",
            "100000",
        ],
        &[],
    );
    let done = lines(&delivered);
    let mut acked = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if line.contains("erp=delivered") {
            acked += 1;
            let id = line
                .split_whitespace()
                .find(|w| w.starts_with("evt_"))
                .unwrap();
            assert!(
                done.iter().any(|d| d == id),
                "{id} acked but never finished by the hook"
            );
        }
    }
    assert!(acked > 0, "nothing was delivered:\n{}", text(&listed));
}

#[test]
fn a_second_sigint_exits_at_once_and_takes_a_stubborn_hook_with_it() {
    let sim = SimProcess::start(74);
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("hook.pid");
    // Ignores SIGTERM and SIGINT, and takes forever.
    let (mut daemon, _, _) = run_with_hook(
        &sim,
        dir.path(),
        &format!(
            "trap '' TERM INT\necho $$ > {}\nsleep 1000\n",
            pidfile.display()
        ),
        "600s",
        "",
    );
    sim.post("/_sim/step");
    sim.post("/_sim/step");
    wait_for("the hook to run", Duration::from_secs(30), || {
        std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n'))
    });
    let hook_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.signal(libc::SIGINT);
    wait_for("the first SIGINT", Duration::from_secs(10), || {
        daemon.log().contains("SIGINT received: stopping")
    });
    daemon.signal(libc::SIGINT);
    let (status, took) = daemon.exit_within(Duration::from_secs(5));
    eprintln!("exit after the second SIGINT: {took:?}");
    assert_eq!(status.code(), Some(130), "{}", daemon.log());
    assert!(
        daemon.log().contains("SIGINT received again: exiting now"),
        "{}",
        daemon.log()
    );
    // SAFETY: signal 0 only checks whether the hook's process still exists.
    wait_for("the hook to be killed", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{hook_pid}/stat")).unwrap_or_default();
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
    });
}

/// A CamInvoice stand-in whose only document has a hostile id (a newline, a forged log line,
/// ESC sequences) and no status: pollhook logs "skipped" with the id.
async fn hostile_id_server() -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::{get, post};
    const ID: &str = "doc-1\n2026-01-01T00:00:00.000000Z ERROR pollhook: forged line\u{1b}[2J\u{1b}]0;owned\u{7}";
    let item = serde_json::json!({"document_id": ID, "updated_at": "2030-01-01T00:00:00",
        "type": "SEND", "document_type": "INVOICE"});
    let list = serde_json::json!({"data": [item.clone()],
        "pagination": {"page": 1, "size": 100, "total_counts": 1, "total_pages": 1}});
    let app = axum::Router::new()
        .route(
            "/api/v1/auth/token",
            post(|| async {
                axum::Json(serde_json::json!({"access_token": "at-hostile-1", "expires_in": 900}))
            }),
        )
        .route(
            "/api/v1/document",
            get(move || async move { axum::Json(list) }),
        )
        .route(
            "/api/v1/document/poll",
            get(move || async move { axum::Json(serde_json::json!([item])) }),
        )
        .route(
            "/api/v1/document/{id}",
            get(|| async {
                axum::Json(
                    serde_json::json!({"document_id": ID, "updated_at": "2030-01-01T00:00:00"}),
                )
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    (
        url,
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_id_with_a_newline_and_escapes_stays_one_escaped_log_line() {
    let (url, server) = hostile_id_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = {:?}\nresync_schedule = \"off\"\n\n[[accounts]]\nname = \"a\"\nprovider = \"caminvoice\"\nbase_url = {url:?}\nclient_id = \"c\"\nclient_secret = \"s-hostile\"\n\n[[accounts.members]]\nendpoint_id = \"KHUID1\"\nrefresh_token = \"rt-hostile\"\n\n[[sinks]]\nkind = \"jsonl\"\npath = {:?}\n",
            dir.path().join("state"),
            dir.path().join("e.jsonl")
        ),
    )
    .unwrap();
    let c = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        pollhook(
            &["once", "--config", c.to_str().unwrap()],
            &[("RUST_LOG", "pollhook=debug")],
        )
    })
    .await
    .unwrap();
    server.abort();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("doc-1"),
        "the hostile document was never logged:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}') && !log.contains('\u{7}'),
        "raw escapes in:\n{log:?}"
    );
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00.000000Z"),
            "a forged log line:\n{log}"
        );
    }
    assert!(
        log.contains(r"doc-1\n2026-01-01T00:00:00.000000Z ERROR pollhook: forged line\u{1b}[2J"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_revoked_before_start_emits_nothing_and_status_says_so() {
    let rig = Rig::with_text_edit(steady_sim(75), |t| {
        let start = t
            .lines()
            .find(|l| l.starts_with("start = "))
            .unwrap()
            .to_string();
        t.replace(&start, "start = \"now\"")
    })
    .await;
    let members = rig.sim.credentials().members;
    let (before, after) = (&members[0].endpoint_id, &members[1].endpoint_id);
    assert!(rig.sim.revoke(before));
    for _ in 0..3 {
        rig.cycle().await;
    }
    let revoked = |rig: &Rig| {
        rig.emitted()
            .into_iter()
            .filter(|e| e.event_type == "ENTITY.REVOKED")
            .map(|e| e.payload)
            .collect::<Vec<_>>()
    };
    assert_eq!(revoked(&rig), Vec::<String>::new());
    let status = rig
        .engine()
        .provider(0)
        .status(rig.engine().store(), pollhook::shard::Shard::ALL)
        .unwrap();
    let unit = status.iter().find(|u| u.unit == *before).unwrap();
    assert!(
        unit.state.starts_with("revoked before `start`"),
        "{}",
        unit.state
    );
    assert!(
        unit.last_error
            .as_deref()
            .is_some_and(|e| e.contains("refused the refresh token")),
        "{:?}",
        unit.last_error
    );
    // A member seen connected since `start` still gets its webhook, once.
    assert!(rig.sim.revoke(after));
    for _ in 0..3 {
        rig.cycle().await;
    }
    assert_eq!(
        revoked(&rig),
        vec![format!(
            r#"{{"type":"ENTITY.REVOKED","endpoint_id":"{after}"}}"#
        )]
    );
}

#[test]
fn config_warnings_are_printed_by_check_config_run_and_once_with_their_location() {
    let sim = SimProcess::start(76);
    let dir = tempfile::tempdir().unwrap();
    let creds: pollhook_sim::SimCredentials =
        serde_json::from_str(&sim.get("/_sim/credentials")).unwrap();
    // The first member again, in a second account.
    let extra = format!(
        "\n[[accounts]]\nname = \"again\"\nprovider = \"caminvoice\"\nbase_url = {:?}\nclient_id = {:?}\nclient_secret = {:?}\n\n[[accounts.members]]\nendpoint_id = {:?}\nrefresh_token = {:?}\n",
        sim.base_url,
        creds.client_id,
        creds.client_secret,
        creds.members[0].endpoint_id,
        creds.members[0].refresh_token
    );
    let (config, _) = sim.write_config(dir.path(), "*/5 * * * * *", &extra);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&creds.members[0].endpoint_id))
        .nth(1)
        .unwrap()
        .0
        + 1;
    let located = format!("{}:{line}:15: ", config.display());
    let c = config.to_str().unwrap();
    let check = pollhook(&["check-config", "--config", c], &[]);
    let once = pollhook(&["once", "--config", c], &[]);
    for (what, out) in [("check-config", text(&check)), ("once", text(&once))] {
        assert!(
            out.contains(&located) && out.contains("is also configured in account \"sim-kh\""),
            "{what} lacks the located warning {located}:\n{out}"
        );
        assert!(
            out.contains("holds inline secrets and is readable by every user; chmod 600 it"),
            "{what}:\n{out}"
        );
    }
    let mut daemon = Daemon::start(Command::new(BIN).args(["run", "--config", c]));
    wait_for("run's warning", Duration::from_secs(20), || {
        daemon.log().contains(&located)
    });
    daemon.signal(libc::SIGTERM);
    daemon.exit_within(Duration::from_secs(30));
}
