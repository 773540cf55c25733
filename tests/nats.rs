//! The NATS JetStream sink against a real nats-server (started by each test on 127.0.0.1 with
//! a port the kernel picks, JetStream file storage in a temp dir; see tests/common/nats.rs).
//!
//! - the stream holds exactly the ground-truth events, each once, each document in order,
//!   with the event id as `Nats-Msg-Id`; the payload body is byte-identical;
//! - a stream that does not capture the subject (or is missing) is a clear error at start,
//!   from the library, `pollhook once` and the daemon's log; `create_stream` creates it;
//! - a restart longer than the stream's duplicate window publishes nothing twice;
//! - the server stopped for 30 s and restarted: nothing lost, nothing doubled, delivery
//!   resumes by itself (`POLLHOOK_NATS_OUTAGE_SECS` changes the 30);
//! - kill -9 of `pollhook run` while it publishes, 20 times (`POLLHOOK_NATS_KILLS`): 0 lost,
//!   0 duplicate messages, with a duplicate window of 100 ms so the stream's de-duplication
//!   cannot hide a repeat: only the sink's own reading of the stream prevents them;
//! - token, user/password and nkey authentication; a wrong token is a clear error;
//! - replay publishes again under the same id (a duplicate PubAck counts as delivered).

mod common;

use common::nats::{count, create_stream, read_stream, NatsServer, Stored};
use common::process::{start_daemon, SimProcess, BIN};
use common::{both_providers, run_rounds, Rig};
use pollhook::sinks;
use pollhook_sim::fidelity::{self, Emitted};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

fn nats_sink(name: &str, url: &str, extra: &str) -> String {
    format!("\n[[sinks]]\nkind = \"nats\"\nname = \"{name}\"\nservers = [\"{url}\"]\n{extra}\n")
}

/// Envelope bodies as emitted events.
fn emitted(msgs: &[Stored]) -> Vec<Emitted> {
    let text: String = msgs.iter().map(|m| format!("{}\n", m.body)).collect();
    fidelity::read_jsonl(&text).expect("every message body is an envelope")
}

fn header<'a>(m: &'a Stored, name: &str) -> &'a str {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header on {m:?}"))
}

/// Cycles every account, then drains every sink, returning each sink's result.
async fn cycle_and_drain(rig: &Rig) -> Vec<Result<u64, String>> {
    rig.engine().cycle_all().await;
    let mut out = Vec::new();
    for s in &rig.config.sinks {
        let mut runner = sinks::build(s).unwrap();
        out.push(
            sinks::drain(rig.engine().store(), &mut runner)
                .await
                .map_err(|e| e.to_string()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_exactly_the_ground_truth_events() {
    let Some(server) = NatsServer::start("the_stream_holds_exactly_the_ground_truth_events", &[])
    else {
        return;
    };
    let url = server.url();
    create_stream(&url, "POLLHOOK", &["pollhook.>"], 2 * MINUTE).await;
    create_stream(&url, "RAW", &["raw.>"], 2 * MINUTE).await;
    let sinks = nats_sink("nats", &url, "stream = \"POLLHOOK\"\nbody = \"envelope\"")
        + &nats_sink(
            "raw",
            &url,
            "stream = \"RAW\"\nsubject = \"raw.{type}.{account}\"\nordering = \"in-order\"",
        );
    let rig = Rig::with_text_edit(both_providers(7), |t| t + &sinks).await;
    run_rounds(&rig, 12).await;
    let truth = rig.truth();

    let msgs = read_stream(&url, "POLLHOOK").await;
    let events = emitted(&msgs);
    let r = fidelity::compare(&truth, &events);
    assert!(r.expected > 20, "too little traffic: {}", r.expected);
    assert!(r.perfect(), "{r:#?}");
    assert_eq!(msgs.len(), r.expected, "one message per ground-truth event");
    for (m, e) in msgs.iter().zip(&events) {
        assert_eq!(m.msg_id, e.id, "Nats-Msg-Id is the event id");
        assert_eq!(header(m, "Pollhook-Type"), e.event_type);
        let env: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        let provider = env["provider"].as_str().unwrap();
        let account = env["account"].as_str().unwrap();
        assert_eq!(header(m, "Pollhook-Provider"), provider);
        assert_eq!(header(m, "Pollhook-Account"), account);
        assert_eq!(
            m.subject,
            format!(
                "pollhook.{provider}.{account}.{}",
                e.event_type.replace('.', "_")
            )
        );
    }
    // The same events in the JSONL log, so the two sinks agree.
    let jsonl: HashSet<String> = rig.emitted().into_iter().map(|e| e.id).collect();
    assert_eq!(jsonl, msgs.iter().map(|m| m.msg_id.clone()).collect());

    // body = "payload": the webhook body, byte for byte, in commit order (in-order sink).
    let raw = read_stream(&url, "RAW").await;
    let bodies: Vec<String> = raw.iter().map(|m| m.body.clone()).collect();
    let by_seq: Vec<String> = events.iter().map(|e| e.payload.clone()).collect();
    let mut a = bodies.clone();
    let mut b = by_seq.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the RAW stream holds the same payloads");
    assert!(raw.iter().all(|m| m.subject.starts_with("raw.")));
    let store = rig.engine().store();
    assert_eq!(store.acked("nats").unwrap(), store.last_seq());
    assert_eq!(store.acked("raw").unwrap(), store.last_seq());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_does_not_capture_the_subject_is_a_clear_error_at_start() {
    let Some(server) = NatsServer::start(
        "a_stream_that_does_not_capture_the_subject_is_a_clear_error_at_start",
        &[],
    ) else {
        return;
    };
    let url = server.url();
    create_stream(
        &url,
        "OTHER",
        &["other.>", "pollhook.caminvoice.*.*"],
        MINUTE,
    )
    .await;
    let sinks = nats_sink("wrong", &url, "stream = \"OTHER\"")
        + &nats_sink("missing", &url, "stream = \"MISSING\"")
        + &nats_sink(
            "created",
            &url,
            "stream = \"CREATED\"\ncreate_stream = true\nsubject = \"made.{provider}.{account}.{type}\"",
        );
    let rig = Rig::with_text_edit(both_providers(3), |t| t + &sinks).await;
    rig.sim.step();
    let results = cycle_and_drain(&rig).await;
    let wrong = results[1].as_ref().unwrap_err();
    for words in [
        "stream OTHER does not capture the sink's subjects pollhook.*.*.*",
        "other.>, pollhook.caminvoice.*.*",
        "nats stream edit OTHER",
    ] {
        assert!(wrong.contains(words), "{words:?} not in: {wrong}");
    }
    let missing = results[2].as_ref().unwrap_err();
    assert!(
        missing.contains("stream MISSING does not exist") && missing.contains("create_stream"),
        "{missing}"
    );
    // Nothing was acknowledged for the misconfigured sinks.
    let store = rig.engine().store();
    assert!(store.last_seq() > 0);
    assert_eq!(store.acked("wrong").unwrap(), 0);
    assert_eq!(store.acked("missing").unwrap(), 0);
    // create_stream made the stream with the template's subjects, and filled it.
    assert_eq!(*results[3].as_ref().unwrap(), store.last_seq());
    let js = common::nats::jetstream(&url).await;
    let mut created = js.get_stream("CREATED").await.unwrap();
    let info = created.info().await.unwrap();
    assert_eq!(info.config.subjects, vec!["made.*.*.*".to_string()]);
    assert_eq!(info.state.messages, store.last_seq());
}

#[test]
fn the_daemon_and_once_report_a_stream_that_does_not_capture_the_subject() {
    let Some(server) = NatsServer::start(
        "the_daemon_and_once_report_a_stream_that_does_not_capture_the_subject",
        &[],
    ) else {
        return;
    };
    let url = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_stream(&url, "OTHER", &["other.>"], MINUTE));
    let sim = SimProcess::start(5);
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = sim.write_config(
        dir.path(),
        "0 0 0 1 1 *",
        &nats_sink("nats", &url, "stream = \"OTHER\""),
    );
    let once = Command::new(BIN)
        .args(["once", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&once.stderr);
    assert_eq!(once.status.code(), Some(1), "{err}");
    assert!(
        err.contains("sink nats: FAILED")
            && err.contains("stream OTHER does not capture the sink's subjects pollhook.*.*.*"),
        "{err}"
    );
    // The daemon says it in its log right at start (and keeps polling and retrying).
    let log = dir.path().join("daemon.log");
    let daemon = start_daemon(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("does not capture the sink's subjects") {
            assert!(text.contains("the sink is not ready"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no error in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_longer_than_the_duplicate_window_publishes_nothing_twice() {
    let Some(server) = NatsServer::start(
        "a_restart_longer_than_the_duplicate_window_publishes_nothing_twice",
        &[],
    ) else {
        return;
    };
    let url = server.url();
    let window = Duration::from_secs(2);
    create_stream(&url, "POLLHOOK", &["pollhook.>"], window).await;
    let sink = nats_sink("nats", &url, "stream = \"POLLHOOK\"\nbody = \"envelope\"");
    let rig = Rig::with_text_edit(both_providers(11), |t| t + &sink).await;
    run_rounds(&rig, 6).await;
    let published = count(&url, "POLLHOOK").await;
    assert!(published > 5, "too little traffic: {published}");
    assert_eq!(published, rig.engine().store().last_seq());

    // The daemon published everything but lost its ack (a kill before the ack was flushed):
    // a sink with a fresh cursor over the same store and stream is exactly that state. It
    // comes back after the stream forgot the ids.
    tokio::time::sleep(window + Duration::from_millis(500)).await;
    let lost_ack = rig
        .config
        .sinks
        .iter()
        .find(|s| s.name == "nats")
        .unwrap()
        .clone();
    let restarted = pollhook::config::Sink {
        name: "nats-after-restart".into(),
        ..lost_ack
    };
    let mut runner = sinks::build(&restarted).unwrap();
    let store = rig.engine().store();
    assert_eq!(
        sinks::drain(store, &mut runner).await.unwrap(),
        store.last_seq(),
        "every event counts as delivered"
    );
    assert_eq!(store.acked("nats-after-restart").unwrap(), store.last_seq());
    assert_eq!(
        count(&url, "POLLHOOK").await,
        published,
        "nothing was published twice"
    );

    // New events after the restart are published (once) as usual.
    run_rounds(&rig, 2).await;
    let msgs = read_stream(&url, "POLLHOOK").await;
    let r = fidelity::compare(&rig.truth(), &emitted(&msgs));
    assert!(r.perfect(), "{r:#?}");
    assert_eq!(msgs.len(), r.expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_down_for_30_seconds_loses_nothing_and_delivery_resumes_by_itself() {
    let Some(mut server) = NatsServer::start(
        "the_server_down_for_30_seconds_loses_nothing_and_delivery_resumes_by_itself",
        &[],
    ) else {
        return;
    };
    let outage = Duration::from_secs(
        std::env::var("POLLHOOK_NATS_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    let url = server.url();
    // A 100 ms window: publishes the server took while their PubAcks were lost would be
    // stored twice if the sink published them again without asking the stream.
    create_stream(
        &url,
        "POLLHOOK",
        &["pollhook.>"],
        Duration::from_millis(100),
    )
    .await;
    let sink = nats_sink(
        "nats",
        &url,
        "stream = \"POLLHOOK\"\nbody = \"envelope\"\ntimeout = \"2s\"\nretry_schedule = [\"300ms\", \"1s\"]",
    );
    let rig = Rig::with_text_edit(both_providers(21), |t| t + &sink).await;
    let store = std::sync::Arc::clone(rig.engine().store());
    let runner = sinks::build(rig.config.sinks.iter().find(|s| s.name == "nats").unwrap()).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sinks::run(std::sync::Arc::clone(&store), runner, stopped));
    let caught_up = |limit: Duration| {
        let store = std::sync::Arc::clone(&store);
        async move {
            let deadline = Instant::now() + limit;
            while store.acked("nats").unwrap() < store.last_seq() {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            true
        }
    };
    for _ in 0..4 {
        rig.sim.step();
        rig.engine().cycle_all().await;
    }
    assert!(caught_up(Duration::from_secs(30)).await);
    let before = store.last_seq();

    server.stop();
    let down = Instant::now();
    for _ in 0..4 {
        rig.sim.step();
        rig.engine().cycle_all().await;
    }
    assert!(
        store.last_seq() > before,
        "no events while the server was down"
    );
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    assert_eq!(
        store.acked("nats").unwrap(),
        before,
        "nothing is acked while the server is down"
    );
    server.start_again();
    let back = Instant::now();
    assert!(
        caught_up(Duration::from_secs(90)).await,
        "delivery did not resume: acked {} of {}",
        store.acked("nats").unwrap(),
        store.last_seq()
    );
    eprintln!(
        "server down {:.0?}; delivery caught up {:.1?} after it came back",
        back - down,
        back.elapsed()
    );
    stop.send(true).unwrap();
    task.await.unwrap();

    // Two more cycles polled every step (and revocations settle); all published once.
    rig.engine().cycle_all().await;
    let runner_cfg = rig.config.sinks.iter().find(|s| s.name == "nats").unwrap();
    sinks::drain(&store, &mut sinks::build(runner_cfg).unwrap())
        .await
        .unwrap();
    let msgs = read_stream(&url, "POLLHOOK").await;
    let r = fidelity::compare(&rig.truth(), &emitted(&msgs));
    assert!(r.perfect(), "{r:#?}");
    assert_eq!(msgs.len(), r.expected, "no message twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_user_password_and_nkey_authenticate_and_a_wrong_token_is_a_clear_error() {
    let test = "token_user_password_and_nkey_authenticate_and_a_wrong_token_is_a_clear_error";
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("nats-secret");
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let conf = dir.path().join("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let cases: Vec<(Vec<&str>, String, &str)> = vec![
        (
            vec!["--auth", "s3cret-token"],
            "s3cret-token".into(),
            "token",
        ),
        (
            vec!["--user", "erp", "--pass", "pa55word"],
            "pa55word".into(),
            "user = \"erp\"\npassword",
        ),
        (vec!["-c", &conf], seed.clone(), "nkey_seed"),
    ];
    for (args, secret, key) in cases {
        let Some(server) = NatsServer::start(test, &args) else {
            return;
        };
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let sink = nats_sink(
            "nats",
            &server.url(),
            &format!(
                "stream = \"AUTH\"\ncreate_stream = true\n{key} = {{ file = \"{}\" }}",
                secret_file.display()
            ),
        );
        let rig = Rig::with_text_edit(both_providers(2), |t| t + &sink).await;
        rig.sim.step();
        let results = cycle_and_drain(&rig).await;
        assert_eq!(
            results[1].as_ref().unwrap(),
            &rig.engine().store().last_seq(),
            "{args:?}"
        );
        if key == "token" {
            std::fs::write(&secret_file, "wrong\n").unwrap();
            let e = sinks::drain(
                rig.engine().store(),
                &mut sinks::build(&rig.config.sinks[1]).unwrap(),
            )
            .await;
            // Everything is delivered already: a wrong token still fails the connect.
            let e = e.unwrap_err().to_string();
            assert!(
                e.contains("cannot connect to NATS at") && e.contains("credentials"),
                "{e}"
            );
            assert!(!e.contains("wrong"), "the secret is in the error: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_publishes_again_under_the_same_id_and_a_duplicate_puback_is_delivered() {
    let Some(server) = NatsServer::start(
        "replay_publishes_again_under_the_same_id_and_a_duplicate_puback_is_delivered",
        &[],
    ) else {
        return;
    };
    let url = server.url();
    create_stream(&url, "POLLHOOK", &["pollhook.>"], 2 * MINUTE).await;
    let sink = nats_sink("nats", &url, "stream = \"POLLHOOK\"");
    let rig = Rig::with_text_edit(both_providers(4), |t| t + &sink).await;
    run_rounds(&rig, 3).await;
    let store = rig.engine().store();
    let before = count(&url, "POLLHOOK").await;
    assert_eq!(before, store.last_seq());
    let runner = sinks::build(&rig.config.sinks[1]).unwrap();
    let report = sinks::replay::replay(store, &runner, sinks::replay::Selection::Since(0))
        .await
        .unwrap();
    assert_eq!(report.events.len() as u64, before);
    assert_eq!(report.failed(), 0, "{:?}", report.events);
    assert_eq!(
        count(&url, "POLLHOOK").await,
        before,
        "within the duplicate window the stream keeps one copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_max_payload_is_a_dead_letter_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("small.conf");
    // OnlinePajak payloads are over 500 bytes, CamInvoice's under 200.
    std::fs::write(&conf, "max_payload: 400\n").unwrap();
    let Some(server) = NatsServer::start(
        "a_message_over_max_payload_is_a_dead_letter_at_once",
        &["-c", conf.to_str().unwrap()],
    ) else {
        return;
    };
    let url = server.url();
    create_stream(&url, "POLLHOOK", &["pollhook.>"], 2 * MINUTE).await;
    let sink = nats_sink("nats", &url, "stream = \"POLLHOOK\"");
    let rig = Rig::with_text_edit(both_providers(8), |t| t + &sink).await;
    run_rounds(&rig, 4).await;
    let store = rig.engine().store();
    assert_eq!(store.acked("nats").unwrap(), store.last_seq());
    let dead = store.dead_letters(Some("nats")).unwrap();
    let msgs = read_stream(&url, "POLLHOOK").await;
    assert!(
        !dead.is_empty() && !msgs.is_empty(),
        "{} dead, {} published",
        dead.len(),
        msgs.len()
    );
    assert_eq!(dead.len() + msgs.len(), store.last_seq() as usize);
    for d in &dead {
        assert_eq!(d.attempts, 1, "no retries");
        assert!(
            d.error
                .contains("larger than the NATS server's max_payload"),
            "{}",
            d.error
        );
        assert!(d.event.envelope().unwrap().payload.get().len() > 300);
    }
}

// ------------------------------------------------------------------------------ kill -9

#[test]
fn kill_9_while_publishing_loses_nothing_and_doubles_nothing_in_the_stream() {
    let Some(server) = NatsServer::start(
        "kill_9_while_publishing_loses_nothing_and_doubles_nothing_in_the_stream",
        &[],
    ) else {
        return;
    };
    let kills: usize = std::env::var("POLLHOOK_NATS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("POLLHOOK_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2027);
    let mut rng = fastrand::Rng::with_seed(seed);
    let url = server.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(create_stream(
        &url,
        "POLLHOOK",
        &["pollhook.>"],
        Duration::from_millis(100),
    ));
    // Every message as the server receives it: the moment publishing starts.
    let mut published = rt.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        client.subscribe("pollhook.>").await.unwrap()
    });

    let sim = SimProcess::start(seed);
    let dir = tempfile::tempdir().unwrap();
    let (config, jsonl) = sim.write_config(
        dir.path(),
        "* * * * * *",
        &nats_sink("nats", &url, "stream = \"POLLHOOK\"\nbody = \"envelope\""),
    );
    // Info level: the log says when a restart found already-published events.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("log_level = \"warn\"", "log_level = \"info\""),
    )
    .unwrap();
    let log = dir.path().join("daemon.log");
    let stream_ids = |rt: &tokio::runtime::Runtime| -> Vec<Stored> {
        rt.block_on(read_stream(&url, "POLLHOOK"))
    };
    let caught_up = |rt: &tokio::runtime::Runtime, truth: &[fidelity::Expected]| {
        let msgs = stream_ids(rt);
        fidelity::compare(truth, &emitted(&msgs)).matched == truth.len()
    };

    let mut daemon = start_daemon(&config, &log);
    sim.wait_for_first_polls();
    let began = Instant::now();
    let (mut mid_publish, mut steps) = (0, 0);
    for kill in 1..=kills {
        // Forget what the subscription saw before this round.
        rt.block_on(async {
            while let Ok(Some(_)) = tokio::time::timeout(
                Duration::from_millis(5),
                futures_util::StreamExt::next(&mut published),
            )
            .await
            {}
        });
        // One step a round, so that every change is observable by polling (two changes of a
        // document between two polls would show only the last).
        sim.post("/_sim/step");
        steps += 1;
        let want = sim.truth();
        let have = rt.block_on(count(&url, "POLLHOOK")) as usize;
        if want.len() > have {
            // Kill as the first new message reaches the server (publishing under way), or as
            // the last one does (its PubAck on the way, the ack not yet flushed).
            let wait_for = if rng.bool() { 1 } else { want.len() - have };
            for _ in 0..wait_for {
                let next = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(15),
                        futures_util::StreamExt::next(&mut published),
                    )
                    .await
                });
                assert!(
                    matches!(next, Ok(Some(_))),
                    "nothing published in 15 s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(rng.u64(0..3)));
        } else {
            std::thread::sleep(Duration::from_millis(rng.u64(0..1500)));
        }
        daemon.0.kill().unwrap();
        daemon.0.wait().unwrap();
        if (rt.block_on(count(&url, "POLLHOOK")) as usize) < want.len() {
            mid_publish += 1;
        }
        daemon = start_daemon(&config, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !caught_up(&rt, &want) {
            assert!(
                Instant::now() < deadline,
                "no catch-up 30 s after kill {kill}: {:#?}\nthe JSONL log: {:#?}; log:\n{}",
                fidelity::compare(&want, &emitted(&stream_ids(&rt))),
                fidelity::compare(
                    &want,
                    &fidelity::read_jsonl(&std::fs::read_to_string(&jsonl).unwrap_or_default())
                        .unwrap_or_default()
                ),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    daemon.terminate();

    let msgs = stream_ids(&rt);
    let truth = sim.truth();
    let r = fidelity::compare(&truth, &emitted(&msgs));
    let ids: HashSet<&str> = msgs.iter().map(|m| m.msg_id.as_str()).collect();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let recognized = log_text
        .matches("are in the stream already (published before a restart)")
        .count();
    eprintln!(
        "nats crash test: seed {seed}, {kills} SIGKILLs ({mid_publish} before all of the round's events were in the stream) over {steps} traffic steps in {:.0?}; {} ground-truth events, {} messages, {} lost, {} duplicate messages, {} unexpected, {} out of order; {recognized} restarts found already-published events in the stream",
        began.elapsed(),
        r.expected,
        msgs.len(),
        r.missing.len(),
        msgs.len() - ids.len(),
        r.unexpected.len(),
        r.out_of_order,
    );
    assert!(r.expected > kills, "too little traffic: {}", r.expected);
    assert!(r.perfect(), "{r:#?}");
    assert_eq!(msgs.len(), ids.len(), "a message id twice in the stream");
    assert_eq!(
        msgs.len(),
        r.expected,
        "every message is one ground-truth event"
    );
    assert!(
        recognized > 0,
        "no restart found events published but not acknowledged: the test did not test it; log:\n{log_text}"
    );
}

#[test]
fn check_config_shows_a_nats_sink_without_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("p.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[daemon]
state_dir = "{}"
shard = "2/3"
[[accounts]]
name = "acme"
provider = "caminvoice"
base_url = "https://sb-merchant.e-invoice.gov.kh"
client_id = "cid"
client_secret = {{ env = "POLLHOOK_TEST_UNSET_SECRET_X" }}
[[accounts.members]]
endpoint_id = "KHUID00001234"
refresh_token = "rt"
[[accounts.members]]
endpoint_id = "KHUID00001235"
refresh_token = "rt"
[[sinks]]
kind = "nats"
servers = ["nats://127.0.0.1:4222", "tls://nats.example:4222"]
stream = "POLLHOOK"
token = "tok-VERY-SECRET"
"#,
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config", cfg.to_str().unwrap()])
        .env("POLLHOOK_TEST_UNSET_SECRET_X", "x")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for words in [
        "[[sinks]] nats (nats)",
        "servers          nats://127.0.0.1:4222, tls://nats.example:4222",
        "subject          pollhook.{provider}.{account}.{type}  (e.g. pollhook.caminvoice.acme-kh.DOCUMENT_DELIVERED; the stream must capture pollhook.*.*.*)",
        "auth             token <redacted: inline>",
        "ordering         per-document, 256 at once",
        "shard            2/3",
        "KHUID00001234  refresh_token <redacted: inline>  [shard 3/3: not polled here]",
        "KHUID00001235  refresh_token <redacted: inline>  [shard 2/3: polled here]",
        "this shard       owns 1 of the 2 configured member(s) (2/3)",
    ] {
        assert!(stdout.contains(words), "{words:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("VERY-SECRET") && !stderr.contains("VERY-SECRET"));
}
