//! The daemon library against the simulator, in process: after every traffic step a cycle
//! runs and the sink drains; at the end every ground-truth webhook must be in the JSONL log
//! once, with an identical payload, in order per document — and the API cost at the minimum.

use pollhook::config::Config;
use pollhook::engine::{Engine, Tick};
use pollhook::fidelity::{self, Emitted};
use pollhook::providers::CycleReport;
use pollhook::sim::{
    pollhook_config, Fault, FaultKind, PollTimezone, PollVariant, SimConfig, SimServer, Simulator,
    TokenVariant,
};
use pollhook::sinks;
use pollhook::store::Store;
use pollhook::time::now_ms;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

struct Rig {
    sim: Simulator,
    server: SimServer,
    dir: tempfile::TempDir,
    config: Config,
    engine: Option<Engine>,
    start: i64,
}

fn quiet_sim(seed: u64) -> SimConfig {
    // Steps come back to back here, so revocations need no wall-clock quiet period: every
    // step is polled before the next one.
    SimConfig {
        seed,
        revoke_quiet: Duration::ZERO,
        revoke_probability: 0.08,
        ..SimConfig::default()
    }
}

/// No revocations: for tests that assert every cycle succeeds (a refused refresh is a failure).
fn steady_sim(seed: u64) -> SimConfig {
    SimConfig {
        revoke_probability: 0.0,
        ..quiet_sim(seed)
    }
}

impl Rig {
    async fn new(cfg: SimConfig) -> Rig {
        Rig::with_text_edit(cfg, |t| t).await
    }

    async fn with_text_edit(cfg: SimConfig, edit: impl FnOnce(String) -> String) -> Rig {
        let sim = Simulator::new(cfg);
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let start = now_ms();
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join("state"),
            &dir.path().join("events.jsonl"),
            &pollhook::time::format_ms(start),
            "* * * * * *",
        );
        let config = Config::parse(&edit(text), std::path::Path::new("test.toml")).unwrap();
        let mut rig = Rig {
            sim,
            server,
            dir,
            config,
            engine: None,
            start,
        };
        rig.open();
        rig
    }

    fn open(&mut self) {
        let store = Arc::new(Store::open(&self.config.daemon.state_dir).unwrap());
        self.engine = Some(Engine::new(store, &self.config).unwrap());
    }

    /// Drops the engine and store, as a restart would.
    fn restart(&mut self) {
        self.engine = None;
        self.open();
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    /// One cycle of the account, then drain every sink.
    async fn cycle(&self) -> CycleReport {
        let mut ticks = self.engine().cycle_all().await;
        let Tick::Ran(report) = ticks.remove(0).1 else {
            panic!("a tick was skipped")
        };
        for s in &self.config.sinks {
            let mut sink = sinks::build(s).unwrap();
            sinks::drain(self.engine().store(), &mut sink)
                .await
                .unwrap();
        }
        report
    }

    fn jsonl(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    fn emitted(&self) -> Vec<Emitted> {
        let text = std::fs::read_to_string(self.jsonl()).unwrap_or_default();
        fidelity::read_jsonl(&text).unwrap()
    }

    fn truth(&self) -> Vec<String> {
        self.sim
            .journal()
            .into_iter()
            .filter(|j| j.at.timestamp_millis() >= self.start)
            .map(|j| j.payload)
            .collect()
    }

    fn assert_perfect(&self) -> fidelity::Report {
        let r = fidelity::compare(&self.truth(), &self.emitted());
        assert!(r.expected > 0, "the simulator produced no traffic");
        assert!(r.perfect(), "fidelity not perfect: {r:#?}");
        r
    }
}

/// Steps the simulator and cycles `rounds` times, then cycles twice more so that revocations
/// (two refused refreshes) complete. Returns the reports of the cycles after each step.
async fn run_rounds(rig: &Rig, rounds: usize) -> Vec<CycleReport> {
    let mut reports = Vec::new();
    for _ in 0..rounds {
        rig.sim.step();
        reports.push(rig.cycle().await);
    }
    for _ in 0..2 {
        reports.push(rig.cycle().await);
    }
    reports
}

fn poll_and_detail_requests(r: &CycleReport) -> u64 {
    r.requests
        .iter()
        .filter(|(k, _)| k.contains("/document/poll") || k.contains("{id}"))
        .map(|(_, v)| *v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ground_truth_webhook_is_emitted_once_with_an_identical_payload() {
    let rig = Rig::new(quiet_sim(7)).await;
    rig.cycle().await; // the baseline
    run_rounds(&rig, 40).await;
    let r = rig.assert_perfect();
    let types: std::collections::BTreeSet<String> =
        rig.emitted().into_iter().map(|e| e.event_type).collect();
    for t in [
        "DOCUMENT.DELIVERED",
        "DOCUMENT.RECEIVED",
        "DOCUMENT.STATUS_UPDATED",
        "ENTITY.REVOKED",
    ] {
        assert!(
            types.contains(t),
            "no {t} in 40 rounds (matched {})",
            r.matched
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cycle_costs_one_poll_per_member_plus_one_detail_per_changed_document() {
    let rig = Rig::new(steady_sim(11)).await;
    rig.cycle().await; // baseline: list walk, not counted
    let reports = run_rounds(&rig, 25).await;
    let mut changed = 0;
    for (i, r) in reports.iter().enumerate() {
        assert!(r.ok(), "cycle {i}: {:?}", r.failures);
        assert_eq!(
            poll_and_detail_requests(r),
            r.units as u64 + r.changed,
            "cycle {i}: {:?}",
            r.requests
        );
        changed += r.changed;
    }
    assert!(changed > 20, "too little traffic to measure: {changed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_simulator_costs_one_poll_per_member_and_emits_nothing() {
    let rig = Rig::new(steady_sim(3)).await;
    rig.cycle().await;
    run_rounds(&rig, 5).await;
    let before = std::fs::read(rig.jsonl()).unwrap_or_default();
    for _ in 0..3 {
        let r = rig.cycle().await;
        assert_eq!(r.events, 0);
        assert_eq!(r.changed, 0);
        assert_eq!(
            r.requests
                .get("GET /api/v1/document/poll")
                .copied()
                .unwrap_or(0),
            r.units as u64
        );
        assert_eq!(r.requests.get("GET /api/v1/document/{id}"), None);
        assert_eq!(
            r.requests.get("POST /api/v1/auth/token"),
            None,
            "tokens are cached between cycles"
        );
    }
    assert_eq!(std::fs::read(rig.jsonl()).unwrap_or_default(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_and_poll_variant_gives_the_same_events() {
    for (i, (token, poll)) in [
        (TokenVariant::Documented, PollVariant::BareArray),
        (TokenVariant::DataWrapped, PollVariant::Wrapped),
        (TokenVariant::ThirdParty, PollVariant::BareArray),
        (TokenVariant::StringExpiry, PollVariant::Wrapped),
    ]
    .into_iter()
    .enumerate()
    {
        let rig = Rig::new(SimConfig {
            token_variant: token,
            poll_variant: poll,
            ..quiet_sim(20 + i as u64)
        })
        .await;
        rig.cycle().await;
        run_rounds(&rig, 12).await;
        rig.assert_perfect();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_reading_the_cursor_as_cambodia_time_only_widens_the_window() {
    let rig = Rig::new(SimConfig {
        poll_timezone: PollTimezone::Cambodia,
        ..steady_sim(5)
    })
    .await;
    rig.cycle().await;
    let reports = run_rounds(&rig, 15).await;
    rig.assert_perfect();
    for r in &reports {
        assert_eq!(
            poll_and_detail_requests(r),
            r.units as u64 + r.changed,
            "overlap must stay free"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_mid_run_are_refreshed_and_nothing_is_lost() {
    let rig = Rig::new(steady_sim(9)).await;
    rig.cycle().await;
    for i in 0..12 {
        rig.sim.step();
        if i % 3 == 1 {
            rig.sim.expire_tokens();
        }
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
    }
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_cycles_loses_and_doubles_nothing() {
    let mut rig = Rig::new(quiet_sim(13)).await;
    rig.cycle().await;
    for i in 0..20 {
        rig.sim.step();
        rig.cycle().await;
        if i % 4 == 3 {
            rig.restart();
        }
    }
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_within_the_cycle() {
    let rig = Rig::new(steady_sim(17)).await;
    rig.cycle().await;
    for _ in 0..8 {
        rig.sim.step();
        rig.sim.inject(Fault {
            path_contains: "/document/".into(),
            count: 2,
            kind: FaultKind::ServerError { status: 503 },
        });
        let r = rig.cycle().await;
        assert!(r.ok(), "two 503s are within max_retries: {:?}", r.failures);
    }
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_answer_fails_the_member_and_the_next_cycle_recovers() {
    let rig = Rig::new(quiet_sim(19)).await;
    rig.cycle().await;
    let mut failures = Vec::new();
    for kind in [
        FaultKind::MalformedJson,
        FaultKind::Truncated,
        FaultKind::HtmlPage,
    ] {
        rig.sim.step();
        rig.sim.inject(Fault {
            path_contains: "/document/poll".into(),
            count: 1,
            kind,
        });
        failures.extend(rig.cycle().await.failures);
        rig.cycle().await;
    }
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(
        failures.iter().any(|f| f.contains("not valid JSON")),
        "{failures:?}"
    );
    run_rounds(&rig, 3).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_client_credentials_are_a_config_error_not_a_revocation() {
    let rig = Rig::with_text_edit(quiet_sim(23), |t| {
        let secret = "client_secret = \"sim-secret\"";
        assert!(t.contains(secret), "fixture changed: {t}");
        t.replace(secret, "client_secret = \"wrong\"")
    })
    .await;
    for _ in 0..4 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(!r.ok());
        assert!(
            r.failures
                .iter()
                .all(|f| f.contains("refused the client credentials")),
            "{:?}",
            r.failures
        );
    }
    assert!(
        rig.emitted().is_empty(),
        "no event, and certainly no ENTITY.REVOKED"
    );
    drop(rig.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_changes_outrun_the_schedule_only_overwritten_status_updates_are_lost() {
    // Three traffic steps per cycle: a document may change several times between polls.
    // Polling cannot see overwritten intermediate statuses; everything else must still come
    // through: each DELIVERED, RECEIVED and ENTITY.REVOKED, in order, nothing unexpected, no
    // duplicate.
    let rig = Rig::new(quiet_sim(31)).await;
    rig.cycle().await;
    for _ in 0..20 {
        for _ in 0..3 {
            rig.sim.step();
        }
        rig.cycle().await;
    }
    run_rounds(&rig, 0).await;
    let r = fidelity::compare(&rig.truth(), &rig.emitted());
    assert!(r.unexpected.is_empty(), "{:#?}", r.unexpected);
    assert_eq!((r.duplicate_ids, r.out_of_order), (0, 0), "{r:#?}");
    assert!(
        !r.missing.is_empty(),
        "three steps per poll should overwrite some statuses"
    );
    for m in &r.missing {
        assert!(
            m.contains("DOCUMENT.STATUS_UPDATED"),
            "lost a once-per-document event: {m}"
        );
    }
}
