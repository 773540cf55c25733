//! Hook and webhook sinks end to end: configs parsed from TOML, events committed to a real
//! store, delivery by the daemon's own sink tasks, replay through the library and the binary.
//! No network beyond 127.0.0.1; every hook is a small sh script run by argv.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use pollhook::config::Config;
use pollhook::event::{event_id, NewEvent};
use pollhook::sinks::{self, replay};
use pollhook::store::{Batch, Store};
use pollhook::time::now_ms;
use sha2::Sha256;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

/// A config with one (never polled) account and the given sinks, state under `dir`.
fn config(dir: &Path, sinks: &str) -> Config {
    let text = format!(
        r#"
[daemon]
state_dir = "{}"

[[accounts]]
name = "acme"
provider = "caminvoice"
base_url = "http://127.0.0.1:9"
client_id = "c"
client_secret = "s"
[[accounts.members]]
endpoint_id = "KHUID1"
refresh_token = "r"
{sinks}"#,
        dir.join("state").display()
    );
    std::fs::write(dir.join("pollhook.toml"), &text).unwrap();
    Config::parse(&text, &dir.join("pollhook.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn event(n: u32, doc: &str) -> NewEvent {
    NewEvent {
        id: event_id(&["sinks-test", &n.to_string()]),
        provider: "caminvoice",
        account: "acme".into(),
        event_type: "DOCUMENT.STATUS_UPDATED".into(),
        occurred_at: now_ms(),
        detected_at: now_ms(),
        subject: format!("KHUID1/{doc}"),
        payload: format!(
            r#"{{"type":"DOCUMENT.STATUS_UPDATED","document_id":"{doc}","endpoint_id":"KHUID1","n":{n}}}"#
        ),
    }
}

async fn commit(store: &Store, events: Vec<NewEvent>) {
    store.commit(Batch::of_events(events)).await.unwrap();
}

/// Writes an sh script into `dir` and returns its argv as TOML.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    format!(r#"["/bin/sh", "{}"]"#, path.display())
}

/// How long a condition may take on a busy machine before the test fails.
const PATIENCE: Duration = Duration::from_secs(120);

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts every sink of `config` as the daemon does; returns the stop switch and the tasks.
fn start_sinks(
    store: &Arc<Store>,
    config: &Config,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = watch::channel(false);
    let tasks = config
        .sinks
        .iter()
        .map(|s| {
            let runner = sinks::build(s).unwrap();
            tokio::spawn(sinks::run(Arc::clone(store), runner, rx.clone()))
        })
        .collect();
    (tx, tasks)
}

async fn stop(tx: watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    tx.send(true).unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("sink task stops")
            .unwrap();
    }
}

// ------------------------------------------------------------------------------- hooks

#[tokio::test]
async fn a_failing_sink_does_not_delay_a_healthy_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("healthy.out");
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[[sinks]]
name = "broken"
kind = "hook"
command = {}
retry_schedule = ["1h"]

[[sinks]]
name = "healthy"
kind = "hook"
command = {}

[[sinks]]
kind = "jsonl"
path = "{}"
"#,
            script(dir.path(), "broken.sh", "sleep 0.3\nexit 1\n"),
            script(
                dir.path(),
                "healthy.sh",
                &format!("echo $POLLHOOK_SEQ >> {}\n", out.display())
            ),
            dir.path().join("events.jsonl").display()
        ),
    );
    let store = Arc::new(Store::open(&cfg.daemon.state_dir).unwrap());
    let (tx, tasks) = start_sinks(&store, &cfg);
    let began = Instant::now();
    for chunk in 0..5 {
        commit(
            &store,
            (chunk * 10 + 1..=chunk * 10 + 10)
                .map(|n| event(n, "d"))
                .collect(),
        )
        .await;
    }
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_for("the healthy hook", PATIENCE, || count(&out) == 50).await;
    wait_for("the jsonl sink", PATIENCE, || {
        count(&dir.path().join("events.jsonl")) == 50
    })
    .await;
    let took = began.elapsed();
    let seqs: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "in order, each once");
    wait_for("the broken hook's first failure", PATIENCE, || {
        store.attempts("broken", 1).unwrap().is_some()
    })
    .await;
    assert_eq!(store.acked("broken").unwrap(), 0);
    assert_eq!(store.attempts("broken", 1).unwrap().unwrap().count, 1);
    // 50 hook runs take a while on a small (and busy) machine, but nothing waits for the
    // broken sink's one-hour retry.
    assert!(took < Duration::from_secs(1800), "took {took:?}");
    stop(tx, tasks).await;
}

#[tokio::test]
async fn a_hung_hook_is_killed_with_its_children_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[[sinks]]
kind = "hook"
command = {}
timeout = "500ms"
retry_schedule = ["10ms"]
"#,
            script(
                dir.path(),
                "hang.sh",
                &format!(
                    // Hangs until an attempt got as far as starting its child (a slow
                    // machine may kill an attempt before that); the next one delivers.
                    "cd {}\nif [ ! -s child.pid ]; then sleep 1000 & echo $! > child.pid.new && mv child.pid.new child.pid; sleep 1000; fi\necho $POLLHOOK_EVENT_ID $POLLHOOK_ATTEMPT >> done\n",
                    dir.path().display()
                )
            )
        ),
    );
    let store = Arc::new(Store::open(&cfg.daemon.state_dir).unwrap());
    let (tx, tasks) = start_sinks(&store, &cfg);
    commit(&store, vec![event(1, "d")]).await;
    wait_for("the retry", PATIENCE, || store.acked("hook").unwrap() == 1).await;
    let done = std::fs::read_to_string(dir.path().join("done")).unwrap();
    let (id, attempt) = done.trim().split_once(' ').unwrap();
    assert_eq!(id, event(1, "d").id, "{done}");
    assert!(
        attempt.parse::<u32>().unwrap() >= 2,
        "delivered by a retry after the hung attempt: {done}"
    );
    let pid = std::fs::read_to_string(dir.path().join("child.pid"))
        .unwrap()
        .trim()
        .to_string();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        "the hung hook's child {pid} is still alive: {stat}"
    );
    stop(tx, tasks).await;
}

#[tokio::test]
async fn dead_letters_after_max_attempts_are_replayed_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    // Succeeds only for events whose flag file exists.
    let hook = script(
        dir.path(),
        "flaky.sh",
        &format!(
            "cd {}\necho \"$POLLHOOK_EVENT_ID $POLLHOOK_ATTEMPT $(cat)\" >> {}\n[ -f ok.$POLLHOOK_EVENT_ID ]\n",
            dir.path().display(),
            log.display()
        ),
    );
    let cfg = config(
        dir.path(),
        &format!(
            "[[sinks]]\nname = \"erp\"\nkind = \"hook\"\ncommand = {hook}\nretry_schedule = [\"10ms\"]\nmax_attempts = 3\n"
        ),
    );
    let (a, b) = (event(1, "a"), event(2, "b"));
    {
        let store = Arc::new(Store::open(&cfg.daemon.state_dir).unwrap());
        let (tx, tasks) = start_sinks(&store, &cfg);
        commit(&store, vec![a.clone(), b.clone()]).await;
        wait_for("two dead letters", PATIENCE, || {
            store.dead_letters(Some("erp")).unwrap().len() == 2
        })
        .await;
        stop(tx, tasks).await;
        assert_eq!(store.acked("erp").unwrap(), 2, "dead letters are finished");
        let dead = store.dead_letters(None).unwrap();
        assert_eq!(dead[0].attempts, 3);
        assert!(
            dead[0].error.contains("exited with status 1"),
            "{}",
            dead[0].error
        );

        // Through the library: A's consumer is back, B's is not.
        std::fs::write(dir.path().join(format!("ok.{}", a.id)), "").unwrap();
        let runner = sinks::build(&cfg.sinks[0]).unwrap();
        let report = replay::replay(&store, &runner, replay::Selection::Dead)
            .await
            .unwrap();
        assert_eq!(report.events.len(), 2);
        assert_eq!(
            (report.events[0].id.as_str(), &report.events[0].error),
            (a.id.as_str(), &None)
        );
        assert!(report.events[1].error.is_some());
        let dead = store.dead_letters(Some("erp")).unwrap();
        assert_eq!(dead.len(), 1, "A is delivered and no longer dead");
        assert_eq!((dead[0].event.seq, dead[0].attempts), (2, 4));
        store.flush().await.unwrap();
    }
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains(&format!("{} 4 {}", a.id, a.payload)),
        "A's replay is its 4th attempt, same id, same payload:\n{lines}"
    );

    // Through the binary, with the store closed (as when the daemon is stopped).
    let config_path = dir.path().join("pollhook.toml");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(BIN).args(args).output().unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let c = config_path.to_str().unwrap();
    let (code, out) = run(&["events", "list", "--config", c, "--dead"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&b.id) && out.contains("attempts 4") && out.contains("1 dead letter"),
        "{out}"
    );
    let (code, out) = run(&["events", "replay", "--config", c, "--sink", "erp", "--dead"]);
    assert_eq!(code, Some(1), "B still fails: {out}");
    assert!(
        out.contains("FAILED") && out.contains("0 delivered, 1 failed"),
        "{out}"
    );
    std::fs::write(dir.path().join(format!("ok.{}", b.id)), "").unwrap();
    let (code, out) = run(&["events", "replay", "--config", c, "--sink", "erp", "--dead"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("seq 2 {} delivered", b.id)), "{out}");
    let (_, out) = run(&["events", "list", "--config", c, "--dead"]);
    assert!(out.contains("no dead letters"), "{out}");
    let (code, out) = run(&["events", "list", "--config", c]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&a.id) && out.contains("erp=delivered"),
        "{out}"
    );
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.contains(&format!("{} 6 {}", b.id, b.payload)),
        "B delivered by the binary's replay with its id:\n{lines}"
    );
    // A replay by id re-delivers an acked event without touching the ack.
    let (code, out) = run(&[
        "events", "replay", "--config", c, "--sink", "erp", "--id", &a.id,
    ]);
    assert_eq!(code, Some(0), "{out}");
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (code, out) = run(&[
        "events", "replay", "--config", c, "--sink", "erp", "--since", &hour_ago,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("replayed 2 event(s) to sink erp: 2 delivered"),
        "{out}"
    );
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (code, out) = run(&[
        "events", "replay", "--config", c, "--sink", "erp", "--since", &later,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("replayed 0 event(s)"), "{out}");
    let (code, out) = run(&[
        "events",
        "replay",
        "--config",
        c,
        "--sink",
        "erp",
        "--since",
        "yesterday",
    ]);
    assert_eq!(code, Some(2), "clap's usage error: {out}");
    assert!(out.contains("not an RFC 3339 instant"), "{out}");
    let (code, out) = run(&[
        "events", "replay", "--config", c, "--sink", "erp", "--id", "evt_nope",
    ]);
    assert_eq!(code, Some(1));
    assert!(out.contains("no event evt_nope"), "{out}");
}

// ------------------------------------------------------------------------------ webhook

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// An axum receiver on 127.0.0.1:0 that answers per document id (from the body) with the
/// next scripted answer, then 200. It stops when dropped.
struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Script = Arc<Mutex<std::collections::HashMap<String, Vec<Response>>>>;

async fn receiver(script: Vec<(&str, Vec<Response>)>) -> Receiver {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script: Script = Arc::new(Mutex::new(
        script
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    ));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
            move |headers: HeaderMap, body: Bytes| async move {
                let doc = serde_json::from_slice::<serde_json::Value>(&body).unwrap()
                    ["document_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                seen.lock().unwrap().push(Seen {
                    at: Instant::now(),
                    headers,
                    body: body.to_vec(),
                });
                let mut script = script.lock().unwrap();
                match script.get_mut(&doc) {
                    Some(v) if !v.is_empty() => v.remove(0),
                    _ => StatusCode::NO_CONTENT.into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Receiver {
        url,
        seen,
        _stop: tx,
    }
}

/// Verifies a Standard Webhooks signature header against one key, independently of the sink.
fn verifies(key_b64: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|s| s == want)
}

#[tokio::test]
async fn the_webhook_sink_signs_every_request_and_follows_the_status_rules() {
    const K1: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const K2: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let rx = receiver(vec![
        (
            "slow",
            vec![(
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "busy",
            )
                .into_response()],
        ),
        ("gone", vec![StatusCode::GONE.into_response()]),
        (
            "moved",
            vec![
                (StatusCode::MOVED_PERMANENTLY, [("location", "/elsewhere")]).into_response(),
                (StatusCode::MOVED_PERMANENTLY, [("location", "/elsewhere")]).into_response(),
            ],
        ),
        (
            "bad",
            vec![(StatusCode::BAD_REQUEST, "missing field").into_response()],
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    // The second secret comes from a file (with the newline editors add).
    let k2_file = dir.path().join("k2");
    std::fs::write(&k2_file, format!("{K2}\n")).unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            r#"
[[sinks]]
name = "erp"
kind = "webhook"
url = "{}"
secrets = ["{K1}", {{ file = "{}" }}]
retry_schedule = ["10ms"]
max_attempts = 2
retry_after_cap = "5s"
"#,
            rx.url,
            k2_file.display()
        ),
    );
    let store = Arc::new(Store::open(&cfg.daemon.state_dir).unwrap());
    let events = vec![
        event(1, "slow"),
        event(2, "gone"),
        event(3, "moved"),
        event(4, "bad"),
        event(5, "fine"),
    ];
    commit(&store, events.clone()).await;
    let (tx, tasks) = start_sinks(&store, &cfg);
    wait_for("every event finished", PATIENCE, || {
        store.acked("erp").unwrap() == 5
    })
    .await;
    stop(tx, tasks).await;

    let seen = rx.seen.lock().unwrap().clone();
    let by_doc = |doc: &str| -> Vec<Seen> {
        seen.iter()
            .filter(|s| String::from_utf8_lossy(&s.body).contains(&format!("\"{doc}\"")))
            .cloned()
            .collect()
    };
    for s in &seen {
        assert!(verifies(K1, &s.headers, &s.body), "first secret: {s:?}");
        assert!(verifies(K2, &s.headers, &s.body), "second secret: {s:?}");
        assert_eq!(
            s.headers["webhook-signature"]
                .to_str()
                .unwrap()
                .split(' ')
                .count(),
            2
        );
        assert_eq!(s.headers["content-type"], "application/json");
        let ts: i64 = s.headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        // Signed when sent: no later than now, and not before the test began.
        assert!((chrono::Utc::now().timestamp() - ts).abs() < PATIENCE.as_secs() as i64 * 2);
        let ev = events
            .iter()
            .find(|e| e.id == s.headers["webhook-id"].to_str().unwrap())
            .expect("webhook-id is the event id");
        assert_eq!(
            s.body,
            ev.payload.as_bytes(),
            "the body is the payload, byte for byte"
        );
    }
    // 429 with Retry-After: 1 — retried after a second, not after the 10ms schedule.
    let slow = by_doc("slow");
    assert_eq!(slow.len(), 2);
    assert!(
        slow[1].at - slow[0].at >= Duration::from_millis(900),
        "{:?}",
        slow[1].at - slow[0].at
    );
    assert_eq!(slow[0].headers["webhook-id"], slow[1].headers["webhook-id"]);
    // 410: once, then a dead letter. 3xx: a failure (not followed) until max_attempts. 400: a
    // failure, retried, then delivered.
    assert_eq!(by_doc("gone").len(), 1);
    assert_eq!(by_doc("moved").len(), 2);
    assert_eq!(by_doc("bad").len(), 2);
    assert_eq!(by_doc("fine").len(), 1);
    assert_eq!(
        seen.iter()
            .filter(|s| String::from_utf8_lossy(&s.body).contains("elsewhere"))
            .count(),
        0
    );
    let dead = store.dead_letters(Some("erp")).unwrap();
    let dead: Vec<(u64, u32, &str)> = dead
        .iter()
        .map(|d| (d.event.seq, d.attempts, d.error.as_str()))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!((dead[0].0, dead[0].1), (2, 1));
    assert!(dead[0].2.contains("410 Gone"), "{}", dead[0].2);
    assert_eq!((dead[1].0, dead[1].1), (3, 2));
    assert!(
        dead[1].2.contains("redirects are not followed"),
        "{}",
        dead[1].2
    );
    assert!(!dead[1].2.contains(K1) && !dead[1].2.contains(K2));
}

// --------------------------------------------------------------------------------- tail

#[test]
fn events_tail_prints_lines_as_the_jsonl_sink_writes_them() {
    use std::io::{BufRead, BufReader, Write};
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "{\"seq\":1}\n{\"seq\":2}\n").unwrap();
    config(
        dir.path(),
        &format!(
            "[[sinks]]\nkind = \"jsonl\"\npath = \"{}\"\n",
            events.display()
        ),
    );
    let mut child = std::process::Command::new(BIN)
        .args(["events", "tail", "-n", "1", "--config"])
        .arg(dir.path().join("pollhook.toml"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "{\"seq\":2}");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&events)
        .unwrap();
    f.write_all(b"{\"seq\":3}\n").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "{\"seq\":3}");
    child.kill().unwrap();
    child.wait().unwrap();
}
