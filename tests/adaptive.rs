//! Adaptive mode end to end against the simulator: the daemon's adaptive loop
//! (`scheduler::adaptive::Loop`, the planner driving real cycles over HTTP) on a simulated
//! clock of 1 s ticks. One member changes every few seconds, the others never: the busy member
//! must be polled far more often than the idle ones, every member within `max_interval`, the
//! requests the simulator received must stay within the budget, every ground-truth webhook
//! must be emitted once with its exact payload, and the schedule must survive a restart.

use pollhook::config::{Config, Polling};
use pollhook::engine::Engine;
use pollhook::scheduler::adaptive::Loop;
use pollhook::sinks;
use pollhook::store::Store;
use pollhook::time::{format_ms, now_ms};
use pollhook_sim::fidelity;
use pollhook_sim::{pollhook_config, SimConfig, Simulator};
use std::sync::Arc;

const BUDGET_PER_S: f64 = 0.5;
const MAX_INTERVAL_S: i64 = 60;

fn sim_config() -> SimConfig {
    SimConfig {
        seed: 5,
        members: 8,
        outsiders: 3,
        op_companies: 0,
        revoke_probability: 0.0,
        initial_documents: 4,
        ..SimConfig::default()
    }
}

/// Everything the simulator received, every route (tokens and list walks too).
fn received(sim: &Simulator) -> u64 {
    sim.request_counts().values().sum()
}

fn engine(config: &Config) -> Arc<Engine> {
    let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
    Arc::new(Engine::new(store, config).unwrap())
}

/// A last whole cycle of account `idx`, every sink drained, and the emitted events graded
/// against the ground truth since `start`.
async fn last_cycle_then_fidelity(
    e: &Engine,
    idx: usize,
    config: &Config,
    sim: &Simulator,
    start: i64,
    dir: &std::path::Path,
) -> (fidelity::Report, Vec<fidelity::Emitted>) {
    e.tick(idx, false).await;
    for s in &config.sinks {
        let mut sink = sinks::build(s).unwrap();
        sinks::drain(e.store(), &mut sink).await.unwrap();
    }
    let truth = fidelity::expected(&sim.journal(), &sim.credentials(), start);
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
    let emitted = fidelity::read_jsonl(&text).unwrap();
    (fidelity::compare(&truth, &emitted), emitted)
}

fn adaptive_settings(config: &Config) -> pollhook::config::AdaptiveSettings {
    match &config.accounts[0].polling {
        Polling::Adaptive(s) => s.clone(),
        Polling::Cron => panic!("the account is not adaptive"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_member_is_polled_more_often_within_the_budget_and_the_schedule_survives_a_restart()
{
    let sim = Simulator::new(sim_config());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms();
    let text = pollhook_config(
        &sim.credentials(),
        &server.base_url(),
        &dir.path().join("state"),
        &dir.path().join("events.jsonl"),
        &format_ms(start),
        "0 */5 * * * *",
    )
    .replacen(
        "timeout = \"5s\"",
        &format!("timeout = \"5s\"\nmode = \"adaptive\"\nbudget = \"{}/s\"\nmin_interval = \"2s\"\nmax_interval = \"{MAX_INTERVAL_S}s\"", BUDGET_PER_S),
        1,
    );
    let config = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let settings = adaptive_settings(&config);
    let members: Vec<String> = sim
        .credentials()
        .members
        .iter()
        .map(|m| m.endpoint_id.clone())
        .collect();
    let busy = members[3].clone();

    let e = engine(&config);
    // The simulated clock: 1 s ticks from now (the provider's instants are wall-clock).
    let t0 = now_ms();
    let mut l = Loop::new(Arc::clone(&e), 0, &settings, t0);
    assert_eq!(l.planner().len(), members.len());
    let secs = 3600;
    let (mut max_extra, mut last_poll) = (0.0f64, vec![t0; members.len()]);
    let mut longest_wait = 0;
    for s in 0..secs {
        let now = t0 + s * 1000;
        if s % 4 == 0 {
            assert!(sim.create_for(&busy));
        }
        let before = received(&sim);
        let polled = l.tick(now).await;
        let sent = received(&sim) - before;
        // What a tick sent beyond one request a polled member: it may take the bucket below
        // zero (detail calls, a token refresh, a first walk are never deferred).
        max_extra = max_extra.max(sent as f64 - polled as f64);
        for (i, id) in members.iter().enumerate() {
            let m = l.member(id).unwrap();
            let p = l.planner().polls(m);
            if p > 0 && l.planner().saved(m).state.observed_at == now {
                longest_wait = longest_wait.max(now - last_poll[i]);
                last_poll[i] = now;
            }
        }
        // The budget, at every instant: what the simulator received is within the budget
        // since the start, plus what one tick may take below zero.
        let total = received(&sim) as f64;
        let allowed = BUDGET_PER_S * (s + 1) as f64 + max_extra;
        assert!(
            total <= allowed + 1e-9,
            "{total} requests by {s} s, budget allows {allowed}"
        );
    }
    // Everything the simulator received was charged to the budget.
    assert_eq!(l.planner().spent().round() as u64, received(&sim));

    let polls: Vec<u64> = members
        .iter()
        .map(|id| l.planner().polls(l.member(id).unwrap()))
        .collect();
    let b = members.iter().position(|m| *m == busy).unwrap();
    let idle: Vec<u64> = (0..polls.len())
        .filter(|i| *i != b)
        .map(|i| polls[i])
        .collect();
    let (idle_min, idle_max) = (*idle.iter().min().unwrap(), *idle.iter().max().unwrap());
    assert!(
        polls[b] >= 2 * idle_max,
        "busy member polled {} times, idle ones up to {idle_max}: {polls:?}",
        polls[b]
    );
    // Every member within max_interval (+ the tick that polls it, + a reallocation's 30 s
    // during the first plan, when all members start at the fleet's prior).
    let limit = (MAX_INTERVAL_S + 31) * 1000;
    assert!(
        longest_wait <= limit,
        "a member waited {longest_wait} ms > {limit}"
    );
    assert!(
        idle_min >= (secs / MAX_INTERVAL_S) as u64 - 1,
        "an idle member was polled {idle_min} times in {secs} s: {polls:?}"
    );

    // A last poll of everyone, then every ground-truth webhook must be in the log once.
    let (r, emitted) = last_cycle_then_fidelity(&e, 0, &config, &sim, start, dir.path()).await;
    assert!(r.expected > 100, "too little traffic: {r:?}");
    assert!(r.perfect(), "fidelity not perfect in adaptive mode: {r:#?}");
    // Every event's detection latency was measured.
    let latency = e.metrics().account(0).latency().unwrap();
    assert_eq!(latency.events as usize, emitted.len());

    // The restart: a new engine and loop read the schedule back from the store.
    let before: Vec<_> = members
        .iter()
        .map(|id| l.planner().view(l.member(id).unwrap()))
        .collect();
    let saved_busy = l.planner().saved(l.member(&busy).unwrap());
    drop(l);
    drop(e);
    let e = engine(&config);
    let now = t0 + secs * 1000;
    let l = Loop::new(Arc::clone(&e), 0, &settings, now);
    let m = l.member(&busy).unwrap();
    assert_eq!(l.planner().saved(m).state, saved_busy.state);
    let after = l.planner().view(m);
    assert!(
        (after.own_per_hour.unwrap() - before[b].own_per_hour.unwrap()).abs() < 1e-6,
        "{after:?} vs {:?}",
        before[b]
    );
    // The busy member is still due soon, the idle ones not all at once (a fresh loop would
    // have every member due now).
    let idle_due: Vec<i64> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != b)
        .map(|(_, id)| l.planner().view(l.member(id).unwrap()).due)
        .collect();
    assert!(
        idle_due.iter().any(|d| *d > now),
        "every idle member due at once after the restart: {idle_due:?}"
    );
    server.shutdown().await.unwrap();
}

/// An OnlinePajak account in adaptive mode: one company, polled on its own interval under a
/// budget below the pacer, every approval emitted once, the budget kept, its status line and
/// schedule record keyed by the company's NPWP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onlinepajak_company_is_polled_adaptively_within_its_budget() {
    let sim = Simulator::new(SimConfig {
        seed: 9,
        op_companies: 1,
        op_initial_invoices: 2,
        revoke_probability: 0.0,
        ..SimConfig::default()
    });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms();
    let npwp = sim.credentials().onlinepajak[0].npwp.clone();
    let token_line = format!("token = \"{}\"", sim.credentials().onlinepajak[0].token);
    let text = pollhook_config(
        &sim.credentials(),
        &server.base_url(),
        &dir.path().join("state"),
        &dir.path().join("events.jsonl"),
        &format_ms(start),
        "0 */5 * * * *",
    );
    assert!(text.contains(&token_line), "{text}");
    let text = text.replacen(
        &token_line,
        &format!("{token_line}\nmode = \"adaptive\"\nbudget = \"3/min\"\nmin_interval = \"10s\"\nmax_interval = \"60s\""),
        1,
    );
    let config = Config::parse(&text, std::path::Path::new("test.toml")).unwrap();
    let Polling::Adaptive(settings) = config.accounts[1].polling.clone() else {
        panic!("the OnlinePajak account is not adaptive")
    };
    let e = engine(&config);
    let t0 = now_ms();
    let mut l = Loop::new(Arc::clone(&e), 1, &settings, t0);
    assert_eq!(l.member(&npwp), Some(0));
    let op_requests = |sim: &Simulator| -> u64 {
        sim.request_counts()
            .iter()
            .filter(|(route, _)| route.contains("/v2.0/"))
            .map(|(_, n)| n)
            .sum()
    };
    let secs = 600;
    let mut max_extra = 0.0f64;
    for s in 0..secs {
        if s % 45 == 0 {
            sim.op_burst(&npwp, 2);
        }
        let before = op_requests(&sim);
        let polled = l.tick(t0 + s * 1000).await;
        max_extra = max_extra.max((op_requests(&sim) - before) as f64 - polled as f64);
        let allowed = 3.0 / 60.0 * (s + 1) as f64 + max_extra;
        assert!(
            op_requests(&sim) as f64 <= allowed + 1e-9,
            "{} > {allowed} at {s} s",
            op_requests(&sim)
        );
    }
    let polls = l.planner().polls(0);
    assert!(
        polls >= (secs / 60) as u64 - 1,
        "polled {polls} times in {secs} s"
    );
    // The budget (0.05/s = 30 requests in 600 s) holds polls to a few dozen.
    assert!(polls <= 31, "polled {polls} times");
    let (r, _) = last_cycle_then_fidelity(&e, 1, &config, &sim, start, dir.path()).await;
    assert!(r.expected >= 20, "too little traffic: {r:?}");
    assert!(r.perfect(), "{r:#?}");
    let record = e
        .store()
        .get_schedule(pollhook::store::Unit::new("op-0", &npwp))
        .unwrap()
        .expect("the company's schedule record");
    assert!(record.count > 0.0, "{record:?}");
    let status = pollhook::admin::StatusReport::collect(&e, &config.sinks)
        .unwrap()
        .render();
    assert!(
        status.contains("account op-0 (onlinepajak, mode adaptive)"),
        "{status}"
    );
    assert!(status.contains("next poll"), "{status}");
    server.shutdown().await.unwrap();
}
