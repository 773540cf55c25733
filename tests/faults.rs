//! The fault matrix: each provider fault the simulator can inject, and for each — no crash, no
//! lost or doubled event, and a log line that says what happened. All logs of this test binary
//! (every level, every crate) are captured, and the last test checks that no secret is in them.

mod common;

use common::{both_providers, run_rounds, steady_sim, Rig};
use pollhook::sim::{Fault, FaultKind};
use std::io::Write;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures every log line of every level from here on.
fn capture_logs() {
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(|| Capture)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

fn fault(path: &str, count: u32, kind: FaultKind) -> Fault {
    Fault {
        path_contains: path.into(),
        count,
        kind,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5xx_beyond_the_retries_fails_the_cycle_and_the_next_one_recovers() {
    capture_logs();
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
            .all(|f| f.contains("5 attempt(s): HTTP 503")),
        "{:?}",
        r.failures
    );
    run_rounds(&rig, 3).await;
    rig.assert_perfect();
    assert!(logs().contains("request failed; retrying"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_retry_after_is_capped_and_logged() {
    capture_logs();
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
    let began = Instant::now();
    let r = rig.cycle().await;
    assert!(r.ok(), "{:?}", r.failures);
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "waited {:?} for a day-long Retry-After",
        began.elapsed()
    );
    run_rounds(&rig, 2).await;
    rig.assert_perfect();
    assert!(logs().contains("Retry-After longer than retry_after_cap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_longer_than_the_timeout_is_cut_and_retried() {
    capture_logs();
    let rig = Rig::with_text_edit(steady_sim(63), |t| {
        t.replacen("timeout = \"5s\"", "timeout = \"1s\"", 1)
    })
    .await;
    rig.cycle().await;
    rig.sim.step();
    rig.sim.inject(fault(
        "/document/{id}",
        1,
        FaultKind::Stall { millis: 3000 },
    ));
    let r = rig.cycle().await;
    assert!(r.ok(), "{:?}", r.failures);
    run_rounds(&rig, 2).await;
    rig.assert_perfect();
    assert!(logs().contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_cycle_is_refreshed_once_and_the_cycle_goes_on() {
    capture_logs();
    let rig = Rig::new(steady_sim(64)).await;
    rig.cycle().await;
    let mut refreshes = 0;
    for _ in 0..5 {
        rig.sim.step();
        rig.sim
            .inject(fault("/document/{id}", 1, FaultKind::Unauthorized));
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        refreshes += r
            .requests
            .get("POST /api/v1/auth/token")
            .copied()
            .unwrap_or(0);
    }
    assert!(
        (1..=5).contains(&refreshes),
        "one refresh per injected 401 (none when no detail was fetched): {refreshes}"
    );
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
    assert!(logs().contains("401: refreshing the token and retrying once"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_gives_entity_revoked_exactly_once_and_polling_of_it_stops() {
    capture_logs();
    let rig = Rig::new(steady_sim(65)).await;
    rig.cycle().await;
    let victim = rig.sim.credentials().members[1].endpoint_id.clone();
    assert!(rig.sim.revoke(&victim));
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
    let revoked: Vec<_> = rig
        .emitted()
        .into_iter()
        .filter(|e| e.event_type == "ENTITY.REVOKED")
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:?}");
    assert!(revoked[0].payload.contains(&victim));
    rig.assert_perfect();
    assert!(logs().contains("the member is revoked; ENTITY.REVOKED emitted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onlinepajak_server_errors_and_a_bad_page_lose_nothing() {
    capture_logs();
    let rig = Rig::new(both_providers(66)).await;
    rig.cycle_all().await;
    for kind in [
        FaultKind::ServerError { status: 502 },
        FaultKind::MalformedJson,
        FaultKind::Truncated,
        FaultKind::HtmlPage,
    ] {
        rig.sim.step();
        rig.sim.inject(fault("/v2.0/invoices/sale", 1, kind));
        rig.cycle_all().await;
    }
    run_rounds(&rig, 2).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_at_any_level() {
    capture_logs();
    let rig = Rig::new(both_providers(67)).await;
    rig.cycle_all().await;
    run_rounds(&rig, 5).await;
    rig.sim.expire_tokens();
    run_rounds(&rig, 2).await;
    let c = rig.sim.credentials();
    let mut secrets = vec![c.client_secret.clone()];
    secrets.extend(c.members.iter().map(|m| m.refresh_token.clone()));
    secrets.extend(c.onlinepajak.iter().map(|o| o.token.clone()));
    let text = logs();
    assert!(
        text.lines().count() > 50,
        "the capture saw too little to mean anything"
    );
    for s in secrets {
        assert!(!text.contains(&s), "a secret is in the logs");
    }
    // Access tokens are secrets too: the simulator's are JWTs ("eyJ...") or "at_..." strings.
    assert!(!text.contains("eyJ"), "an access token is in the logs");
}
