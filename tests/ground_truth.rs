//! The daemon library against the simulator, in process: after every traffic step a cycle
//! runs and the sink drains; at the end every ground-truth webhook must be in the JSONL log
//! once, with an identical payload and the right envelope, in order per document — and the API
//! cost at the minimum, graded by the simulator's own counters and what it knows it changed.

mod common;

use common::{quiet_sim, run_rounds, steady_sim, Rig};
use pollhook_sim::fidelity;
use pollhook_sim::{
    pollhook_config, Cost, Fault, FaultKind, PollTimezone, PollVariant, SimConfig, Simulator,
    TokenVariant,
};

/// One traffic step and one cycle; the cycle's cost as the simulator counted it. Asserts that
/// it was at the floor: one poll per connected member, and one detail call per document the
/// simulator changed for a member since that member's previous poll — no more, no less.
async fn graded_round(rig: &Rig, round: usize) -> Cost {
    let before = rig.sim.cost();
    rig.sim.step();
    let r = rig.cycle().await;
    assert!(r.ok(), "round {round}: {:?}", r.failures);
    let c = rig.sim.cost().since(&before);
    let members = rig.sim.credentials().members.len() as u64;
    assert_eq!(
        c.polls, members,
        "round {round}: one poll per member: {c:?}"
    );
    assert_eq!(
        c.details, c.details_needed,
        "round {round}: detail calls against what changed: {c:?}"
    );
    assert_eq!(c.requests(), c.floor(), "round {round}: {c:?}");
    c
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
    let mut needed = 0;
    for round in 0..25 {
        needed += graded_round(&rig, round).await.details_needed;
    }
    assert!(needed > 20, "too little traffic to measure: {needed}");
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_simulator_costs_one_poll_per_member_and_emits_nothing() {
    let rig = Rig::new(steady_sim(3)).await;
    rig.cycle().await;
    run_rounds(&rig, 5).await;
    let before = std::fs::read(rig.jsonl()).unwrap_or_default();
    let members = rig.sim.credentials().members.len() as u64;
    for _ in 0..3 {
        let cost = rig.sim.cost();
        let tokens = rig
            .sim
            .request_counts()
            .get("POST /api/v1/auth/token")
            .copied();
        let r = rig.cycle().await;
        assert_eq!(r.events, 0);
        let c = rig.sim.cost().since(&cost);
        assert_eq!(
            c,
            Cost {
                polls: members,
                ..Cost::default()
            }
        );
        assert_eq!(
            rig.sim
                .request_counts()
                .get("POST /api/v1/auth/token")
                .copied(),
            tokens,
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
    // The wider window re-lists documents already read: the overlap must stay free.
    for round in 0..15 {
        graded_round(&rig, round).await;
    }
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
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
        failures.iter().any(|f| f.text.contains("not valid JSON")),
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
                .all(|f| f.text.contains("refused the client credentials")),
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
    // The envelope is right, except that a DELIVERED (or RECEIVED) recovered from a later
    // observation can only be dated by it: later than the delivery, never earlier.
    for m in &r.mismatches {
        assert!(
            m.field == "occurred_at"
                && m.emitted > m.expected
                && (m.payload.contains("DOCUMENT.DELIVERED")
                    || m.payload.contains("DOCUMENT.RECEIVED")),
            "{m:?}"
        );
    }
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

// The simulator's printed config (`pollhook_sim::pollhook_config`) is read by the daemon's
// config parser: these checks live here because the simulator crate does not depend on
// `pollhook`.

#[test]
fn the_printed_config_lists_every_member_and_company_and_validates() {
    let sim = Simulator::new(SimConfig::default());
    let creds = sim.credentials();
    let text = pollhook_config(
        &creds,
        "http://127.0.0.1:9",
        "/tmp/s".as_ref(),
        "/tmp/e.jsonl".as_ref(),
        "now",
        "*/5 * * * * *",
    );
    assert!(text.contains("provider = \"caminvoice\""));
    assert!(text.contains("base_url = \"http://127.0.0.1:9\""));
    assert_eq!(text.matches("[[accounts.members]]").count(), 4);
    for m in &creds.members {
        assert!(text.contains(&format!("refresh_token = \"{}\"", m.refresh_token)));
    }
    // One OnlinePajak account per company, after the CamInvoice account, before the sink.
    assert_eq!(creds.onlinepajak.len(), 2);
    let mut expected = String::new();
    for (i, c) in creds.onlinepajak.iter().enumerate() {
        expected.push_str(&format!(
            "\n[[accounts]]\nname = \"op-{i}\"\nprovider = \"onlinepajak\"\n\
             base_url = \"http://127.0.0.1:9/v2.0\"\nnpwp = \"{}\"\ntoken = \"{}\"\n",
            c.npwp, c.token
        ));
    }
    let sink = text.find("\n[[sinks]]").unwrap();
    assert!(text[..sink].ends_with(&expected), "{text}");
    assert!(text.find("provider = \"caminvoice\"").unwrap() < text.find(&expected).unwrap());
    pollhook::config::Config::parse(&text, "sim.toml".as_ref()).unwrap();
}

#[test]
fn without_companies_there_is_no_onlinepajak_traffic_nor_account() {
    let sim = Simulator::new(SimConfig {
        op_companies: 0,
        ..SimConfig::default()
    });
    for _ in 0..10 {
        sim.step();
    }
    assert_eq!(sim.op_invoice_count(), 0);
    assert!(sim.credentials().onlinepajak.is_empty());
    let text = pollhook_config(
        &sim.credentials(),
        "http://127.0.0.1:9",
        "/tmp/s".as_ref(),
        "/tmp/e.jsonl".as_ref(),
        "now",
        "*/5 * * * * *",
    );
    assert!(!text.contains("onlinepajak"));
    pollhook::config::Config::parse(&text, "sim.toml".as_ref()).unwrap();
}

/// Issue 12: a document both of whose parties are members of one account changes after the
/// customer saw it (RECEIVED emitted). Only the supplier hears of it (STATUS_UPDATED), so one
/// detail call is the whole cost: the customer's RECEIVE item needs none. Counted by the
/// simulator's per-endpoint request counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_sided_change_inside_one_account_costs_one_detail_call() {
    let rig = Rig::new(steady_sim(7)).await;
    rig.cycle().await;
    run_rounds(&rig, 8).await;
    let details = |rig: &Rig| {
        rig.sim
            .request_counts()
            .get("GET /api/v1/document/{id}")
            .copied()
            .unwrap_or(0)
    };
    for _ in 0..3 {
        let (before, journal) = (details(&rig), rig.sim.journal_len());
        let id = rig
            .sim
            .two_sided_change()
            .expect("the simulated world has a delivered document between two members");
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(
            rig.sim.journal_len() - journal,
            1,
            "one webhook (the supplier's)"
        );
        assert_eq!(r.events, 1, "document {id}: {r:?}");
        assert_eq!(
            details(&rig) - before,
            1,
            "document {id}: one detail call for a change both parties poll"
        );
    }
    rig.assert_perfect();
}
