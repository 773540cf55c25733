//! OnlinePajak against the simulator, beside CamInvoice in one daemon: PPN_INVOICE_APPROVED
//! with identical payloads, the 100-a-minute limit never hit, clear errors for a bad token.

mod common;

use common::{both_providers, run_rounds, Rig};
use pollhook_sim::fidelity;
use pollhook_sim::{Fault, FaultKind};
use std::time::Instant;

fn ppn(rig: &Rig) -> Vec<serde_json::Value> {
    rig.emitted()
        .into_iter()
        .filter(|e| e.event_type == "PPN_INVOICE_APPROVED")
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ppn_invoice_approved_matches_the_ground_truth_beside_caminvoice() {
    let rig = Rig::new(both_providers(41)).await;
    assert!(rig
        .config
        .accounts
        .iter()
        .any(|a| a.provider.kind() == "onlinepajak"));
    rig.cycle_all().await;
    let reports = run_rounds(&rig, 40).await;
    for r in &reports {
        assert!(r.ok(), "{:?}", r.failures);
    }
    rig.assert_perfect();
    let events = ppn(&rig);
    assert!(
        events.iter().any(|e| e["event_data"]["approved"] == true),
        "no approval"
    );
    assert!(
        events.iter().any(|e| e["event_data"]["approved"] == false),
        "no rejection"
    );
    assert!(
        events
            .iter()
            .any(|e| e["event_data"]["revision"].as_i64() > Some(0)),
        "no revision approved again"
    );
    let npwps: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["npwp"].as_str().unwrap()).collect();
    assert_eq!(npwps.len(), 2, "both companies: {npwps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_changed_invoices_take_one_cycle_at_default_settings_without_a_429() {
    let rig = Rig::new(both_providers(43)).await;
    rig.cycle_all().await;
    let npwp = rig.sim.credentials().onlinepajak[0].npwp.clone();
    assert_eq!(rig.sim.op_burst(&npwp, 1000), 1000);
    let before = rig.sim.cost();
    let began = Instant::now();
    let reports = rig.cycle_all().await;
    let elapsed = began.elapsed();
    let op = &reports[1];
    assert!(op.ok(), "{:?}", op.failures);
    assert_eq!(
        rig.sim.rate_limited(),
        0,
        "the simulator's limiter answered 429"
    );
    // Graded by the simulator: the pages the 1000 changes needed, against the pages sent.
    let c = rig.sim.cost().since(&before);
    assert_eq!(c.walks, 2, "one walk per company: {c:?}");
    assert_eq!(
        c.bulk_fetches_needed,
        10 + 1,
        "1000 invoices in pages of 100, plus the other company's one page: {c:?}"
    );
    // Keyset paging re-reads the boundary invoice of each page: at most one page more.
    assert!(
        c.bulk_fetches <= c.bulk_fetches_needed + 1,
        "{} Bulk Fetch requests for a floor of {}",
        c.bulk_fetches,
        c.bulk_fetches_needed
    );
    assert_eq!(c.retrieves, 0, "list items are complete: {c:?}");
    eprintln!(
        "1000 changed invoices: {} Bulk Fetch requests (floor {}, by the simulator), cycle {elapsed:?}",
        c.bulk_fetches, c.bulk_fetches_needed
    );
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_fails_that_account_only_and_says_what_to_fix() {
    let rig = Rig::with_text_edit(both_providers(47), |t| {
        let company = &t[t
            .find("provider = \"onlinepajak\"")
            .expect("an onlinepajak account")..];
        let token_line = company
            .lines()
            .find(|l| l.starts_with("token = "))
            .unwrap()
            .to_string();
        t.replacen(&token_line, "token = \"not-the-token\"", 1)
    })
    .await;
    for _ in 0..3 {
        rig.sim.step();
        let reports = rig.cycle_all().await;
        assert!(
            reports[0].ok() && reports[2].ok(),
            "other accounts must not suffer"
        );
        let f = &reports[1].failures;
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].text.contains("rejected the token") && f[0].text.contains("auth_scheme"),
            "{f:?}"
        );
    }
    let bad_npwp = rig.sim.credentials().onlinepajak[0].npwp.clone();
    assert!(ppn(&rig).iter().all(|e| e["npwp"] != bad_npwp.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_auth_scheme_and_a_429_lose_nothing() {
    let rig = Rig::with_text_edit(both_providers(53), |t| {
        t.replace(
            "provider = \"onlinepajak\"",
            "provider = \"onlinepajak\"\nauth_scheme = \"raw\"\nretry_base = \"50ms\"",
        )
    })
    .await;
    rig.cycle_all().await;
    for _ in 0..6 {
        rig.sim.step();
        rig.sim.inject(Fault {
            path_contains: "/invoices/sale".into(),
            count: 1,
            kind: FaultKind::RateLimited {
                retry_after_secs: 0,
            },
        });
        for r in rig.cycle_all().await {
            assert!(r.ok(), "{:?}", r.failures);
        }
    }
    run_rounds(&rig, 0).await;
    let r = fidelity::compare(&rig.truth(), &rig.emitted());
    assert!(r.perfect(), "{r:#?}");
    assert!(!ppn(&rig).is_empty());
}
