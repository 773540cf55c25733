//! The fault matrix: each provider fault the simulator can inject, and for each — the fault
//! fired (the simulator's fault counters say so), no crash, no lost or doubled event, and a log
//! line that says what happened. Each test captures its own logs (every level, every crate) on
//! its own runtime (`common::logs`), so one test's log line can never satisfy another's
//! assertion; the last test checks that no secret is in its logs.

mod common;

use common::logs::Logs;
use common::{both_providers, run_rounds, steady_sim, Rig};
use pollhook_sim::{Fault, FaultKind};

fn fault(path: &str, count: u32, kind: FaultKind) -> Fault {
    Fault {
        path_contains: path.into(),
        count,
        kind,
    }
}

/// Requests the simulator received on routes whose key contains `route`.
fn received(rig: &Rig, route: &str) -> u64 {
    rig.sim
        .request_counts()
        .iter()
        .filter(|(k, _)| k.contains(route))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn each_test_sees_only_its_own_logs() {
    let marker = |i: usize| format!("marker-of-test-{i}");
    let runs: Vec<_> = (0..2)
        .map(|i| {
            std::thread::spawn(move || {
                let logs = Logs::new();
                logs.run(async {
                    // From a spawned task, as the daemon logs from its member tasks.
                    let m = marker(i);
                    tokio::spawn(async move { tracing::info!("{m}") })
                        .await
                        .unwrap();
                    tokio::task::spawn_blocking(move || tracing::debug!("blocking {i}"))
                        .await
                        .unwrap();
                });
                logs.text()
            })
        })
        .collect();
    let texts: Vec<String> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    for (i, text) in texts.iter().enumerate() {
        assert!(text.contains(&marker(i)), "{i}: {text}");
        assert!(text.contains(&format!("blocking {i}")), "{i}: {text}");
        assert!(
            !text.contains(&marker(1 - i)),
            "{i} saw the other test: {text}"
        );
    }
}

#[test]
fn a_burst_of_5xx_beyond_the_retries_fails_the_cycle_and_the_next_one_recovers() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::new(steady_sim(61)).await;
        rig.cycle().await;
        rig.sim.step();
        // 4 members x (1 + 4 retries) = 20 attempts, every one answered 503.
        rig.sim.inject(fault(
            "/document/poll",
            20,
            FaultKind::ServerError { status: 503 },
        ));
        let r = rig.cycle().await;
        assert_eq!(r.failures.len(), 4, "{:?}", r.failures);
        assert!(
            r.failures
                .iter()
                .all(|f| f.text.contains("5 attempt(s): HTTP 503")),
            "{:?}",
            r.failures
        );
        assert_eq!(
            rig.sim
                .fault_counts()
                .count("ServerError", "/document/poll"),
            20,
            "every attempt met the fault"
        );
        run_rounds(&rig, 3).await;
        rig.assert_perfect();
    });
    assert_eq!(logs.text().matches("request failed; retrying").count(), 16);
}

#[test]
fn an_absurd_retry_after_is_capped_and_logged() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::with_text_edit(steady_sim(62), |t| {
            t.replace(
                "retry_base = \"100ms\"",
                "retry_base = \"100ms\"\nretry_after_cap = \"1s\"",
            )
        })
        .await;
        rig.cycle().await;
        rig.sim.step();
        rig.sim.inject(fault(
            "/document/poll",
            1,
            FaultKind::RateLimited {
                retry_after_secs: 86_400,
            },
        ));
        let polls = received(&rig, "/document/poll");
        // Honouring the day-long Retry-After would hang here; the cap makes it about a second.
        let r = tokio::time::timeout(common::process::PATIENCE, rig.cycle())
            .await
            .expect("the cycle waited for the day-long Retry-After");
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(
            rig.sim
                .fault_counts()
                .count("RateLimited", "/document/poll"),
            1
        );
        let members = rig.sim.credentials().members.len() as u64;
        assert_eq!(
            received(&rig, "/document/poll") - polls,
            members + 1,
            "the 429 was retried once"
        );
        run_rounds(&rig, 2).await;
        rig.assert_perfect();
    });
    assert!(logs
        .text()
        .contains("Retry-After longer than retry_after_cap"));
}

#[test]
fn a_stall_longer_than_the_timeout_is_cut_and_retried() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::with_text_edit(steady_sim(63), |t| {
            t.replacen("timeout = \"5s\"", "timeout = \"1s\"", 1)
        })
        .await;
        rig.cycle().await;
        // A step that changes something, so that a detail call meets the stall.
        while rig.sim.step() == 0 {}
        // Far longer than the test: a client that waited would not be back in time.
        rig.sim.inject(fault(
            "/document/{id}",
            1,
            FaultKind::Stall { millis: 600_000 },
        ));
        let before = rig.sim.cost();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        let c = rig.sim.cost().since(&before);
        assert_eq!(c.details, c.details_needed + 1, "one retry: {c:?}");
        // The stalled request ended because the client hung up, not because it was answered.
        let f = rig.sim.fault_counts();
        assert_eq!(f.count("Stall", "/document/{id}"), 1);
        common::process::wait_until("the simulator to see the hang-up", || {
            rig.sim.fault_counts().stalls_abandoned == 1
        });
        assert_eq!(rig.sim.fault_counts().stalls_answered, 0);
        run_rounds(&rig, 2).await;
        rig.assert_perfect();
    });
    assert!(logs.text().contains("timed out"), "{}", logs.text());
}

#[test]
fn a_token_that_expires_mid_cycle_is_refreshed_once_and_the_cycle_goes_on() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::new(steady_sim(64)).await;
        rig.cycle().await;
        let mut fired = 0;
        for round in 0..5 {
            rig.sim.step();
            rig.sim
                .inject(fault("/document/{id}", 1, FaultKind::Unauthorized));
            let tokens = received(&rig, "POST /api/v1/auth/token");
            let was = rig
                .sim
                .fault_counts()
                .count("Unauthorized", "/document/{id}");
            let r = rig.cycle().await;
            assert!(r.ok(), "{:?}", r.failures);
            let now = rig
                .sim
                .fault_counts()
                .count("Unauthorized", "/document/{id}");
            assert_eq!(
                received(&rig, "POST /api/v1/auth/token") - tokens,
                now - was,
                "round {round}: one refresh per 401"
            );
            fired += now - was;
        }
        assert!(fired > 0, "no 401 ever met a detail call");
        run_rounds(&rig, 0).await;
        rig.assert_perfect();
    });
    assert!(logs
        .text()
        .contains("401: refreshing the token and retrying once"));
}

#[test]
fn a_refused_refresh_gives_entity_revoked_exactly_once_and_polling_of_it_stops() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::new(steady_sim(65)).await;
        rig.cycle().await;
        let victim = rig.sim.credentials().members[1].endpoint_id.clone();
        assert!(rig.sim.revoke(&victim));
        let tokens = received(&rig, "POST /api/v1/auth/token");
        let mut units = Vec::new();
        for _ in 0..6 {
            rig.sim.step();
            units.push(rig.cycle().await.units);
        }
        assert_eq!(
            units,
            vec![4, 4, 3, 3, 3, 3],
            "refused twice, then no longer polled"
        );
        assert_eq!(
            received(&rig, "POST /api/v1/auth/token") - tokens,
            2,
            "two refused refreshes, then no more tries"
        );
        let revoked: Vec<_> = rig
            .emitted()
            .into_iter()
            .filter(|e| e.event_type == "ENTITY.REVOKED")
            .collect();
        assert_eq!(revoked.len(), 1, "{revoked:?}");
        assert!(revoked[0].payload.contains(&victim));
        rig.assert_perfect();
    });
    assert!(logs
        .text()
        .contains("the member is revoked; ENTITY.REVOKED emitted"));
}

#[test]
fn onlinepajak_server_errors_and_a_bad_page_lose_nothing() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::new(both_providers(66)).await;
        rig.cycle_all().await;
        for (kind, name) in [
            (FaultKind::ServerError { status: 502 }, "ServerError"),
            (FaultKind::MalformedJson, "MalformedJson"),
            (FaultKind::Truncated, "Truncated"),
            (FaultKind::HtmlPage, "HtmlPage"),
        ] {
            rig.sim.step();
            rig.sim.inject(fault("/v2.0/invoices/sale", 1, kind));
            rig.cycle_all().await;
            assert_eq!(
                rig.sim.fault_counts().count(name, "/v2.0/invoices/sale"),
                1,
                "{name} fired"
            );
        }
        run_rounds(&rig, 2).await;
        rig.assert_perfect();
    });
    let text = logs.text();
    assert!(text.contains("not valid JSON"), "{text}");
}

#[test]
fn no_secret_reaches_the_logs_at_any_level() {
    let logs = Logs::new();
    let secrets = logs.run(async {
        let rig = Rig::new(both_providers(67)).await;
        let c = rig.sim.credentials();
        rig.cycle_all().await;
        run_rounds(&rig, 5).await;
        // The error paths too: a refused token, an expired one, a refused refresh.
        rig.sim
            .inject(fault("/document/{id}", 1, FaultKind::Unauthorized));
        rig.sim
            .inject(fault("/v2.0/invoices/sale", 1, FaultKind::Unauthorized));
        rig.sim.expire_tokens();
        assert!(rig.sim.revoke(&c.members[0].endpoint_id));
        run_rounds(&rig, 2).await;
        let f = rig.sim.fault_counts();
        assert_eq!(f.count("Unauthorized", ""), 2, "{f:?}");
        let mut secrets = vec![c.client_secret.clone()];
        secrets.extend(c.members.iter().map(|m| m.refresh_token.clone()));
        secrets.extend(c.onlinepajak.iter().map(|o| o.token.clone()));
        secrets
    });
    let text = logs.text();
    assert!(
        text.lines().count() > 50,
        "the capture saw too little to mean anything"
    );
    for s in secrets {
        assert!(!text.contains(&s), "a secret is in the logs");
    }
    // Access tokens are secrets too: the simulator's are JWTs ("eyJ...") or "at_..." strings.
    assert!(!text.contains("eyJ"), "an access token is in the logs");
    assert!(text.contains("refused the refresh token"), "{text}");
}
