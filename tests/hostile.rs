//! A hostile provider, against the daemon library in process: timestamps from the future,
//! absurd epochs, duplicate and phantom ids, answers too large or too deep. Each test is the
//! reproduction of a bug (RELIABILITY.md, "Hostile provider and operator"): nothing may panic,
//! wedge a member, poison a cursor or lose an event of the honest part of an answer.

mod common;

use common::hostile::{
    assert_cursors_bounded, assert_instants_rfc3339, assert_nothing_twice,
    assert_perfect_but_dated, capture_logs, compare_without, document_of, logs,
};
use common::{both_providers, run_rounds, steady_sim, Rig};
use pollhook_sim::{Fault, FaultKind, Hostility, SimConfig};
use serde_json::json;

const YEAR_9999: &str = "9999-12-31T23:59:59.999Z";

/// The documents whose webhooks the journal gained since entry `from`.
fn changed_since(rig: &Rig, from: usize) -> Vec<String> {
    let mut ids: Vec<String> = rig.sim.journal()[from..]
        .iter()
        .map(|j| document_of(&j.payload))
        .filter(|d| !d.is_empty())
        .collect();
    ids.dedup();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_from_the_year_9999_does_not_hide_later_documents() {
    let rig = Rig::new(steady_sim(101)).await;
    rig.cycle().await;
    // Every document of the pre-run history now claims it was updated in 9999.
    for id in rig.sim.document_ids() {
        assert!(rig.sim.poison_updated_at(&id, json!(YEAR_9999)));
    }
    let mut counted = Vec::new();
    for _ in 0..8 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert_cursors_bounded(&rig);
        counted.push(quarantined(&rig));
    }
    rig.assert_perfect();
    assert_instants_rfc3339(&rig);
    // Counted in /metrics once per document, not once per cycle.
    assert!(counted[0] > 0, "{counted:?}");
    assert!(counted.iter().all(|c| *c == counted[0]), "{counted:?}");
}

/// `pollhook_provider_anomalies_total{kind="future_timestamp"}` of the CamInvoice account.
fn quarantined(rig: &Rig) -> u64 {
    let e = rig.engine();
    let text = e.metrics().render(&pollhook::metrics::Outbox::default());
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("pollhook_provider_anomalies_total{")
                && l.contains("account=\"sim-kh\"")
                && l.contains("kind=\"future_timestamp\"")
        })
        .unwrap_or_else(|| panic!("no anomaly counter in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_from_the_year_9999_does_not_hide_later_invoices() {
    let rig = Rig::new(both_providers(103)).await;
    rig.cycle_all().await;
    let npwp = rig.sim.credentials().onlinepajak[0].npwp.clone();
    rig.sim.op_burst(&npwp, 3);
    rig.cycle_all().await;
    for id in rig.sim.invoice_ids() {
        assert!(rig.sim.poison_updated_at(&id, json!(YEAR_9999)));
    }
    for _ in 0..6 {
        rig.sim.step();
        rig.sim.op_burst(&npwp, 2);
        for r in rig.cycle_all().await {
            assert!(r.ok(), "{:?}", r.failures);
        }
        assert_cursors_bounded(&rig);
    }
    rig.assert_perfect();
    assert_instants_rfc3339(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_of_i64_max_ms_never_reaches_occurred_at() {
    let rig = Rig::new(steady_sim(107)).await;
    rig.cycle().await;
    let mut poisoned = Vec::new();
    for _ in 0..6 {
        let before = rig.sim.journal().len();
        rig.sim.step();
        // The documents that just changed show an absurd epoch before pollhook sees them.
        for id in changed_since(&rig, before) {
            if rig.sim.poison_updated_at(&id, json!(i64::MAX)) {
                poisoned.push(id);
            }
        }
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert_cursors_bounded(&rig);
    }
    assert!(!poisoned.is_empty());
    // Their events are dated when pollhook saw them (never before the change).
    assert_perfect_but_dated(&rig, &poisoned);
    assert_instants_rfc3339(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_id_on_a_list_page_does_not_panic_and_the_baseline_completes() {
    let rig = Rig::new(steady_sim(109)).await;
    rig.sim.set_hostility(Hostility {
        duplicate_items: true,
        reverse_order: true,
        list_without_status: true,
        ..Hostility::default()
    });
    let r = rig.cycle().await;
    assert!(r.ok(), "the baseline: {:?}", r.failures);
    for _ in 0..6 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
    }
    // A resync walks the duplicated list again: nothing twice.
    let r = rig.engine().tick(0, true).await;
    assert!(
        matches!(r, pollhook::engine::Tick::Ran(ref r) if r.ok()),
        "{r:?}"
    );
    run_rounds(&rig, 0).await;
    rig.assert_perfect();
    assert_nothing_twice(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_reordered_poll_items_cost_one_detail_per_changed_document() {
    let rig = Rig::new(steady_sim(113)).await;
    rig.cycle().await;
    rig.sim.set_hostility(Hostility {
        duplicate_items: true,
        reverse_order: true,
        ..Hostility::default()
    });
    for _ in 0..8 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        let details = r
            .requests
            .get("GET /api/v1/document/{id}")
            .copied()
            .unwrap_or(0);
        assert_eq!(details, r.changed, "{:?}", r.requests);
    }
    rig.assert_perfect();
    assert_nothing_twice(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_that_are_dots_or_control_characters_are_never_requested_by_path() {
    let phantoms: Vec<String> = [".", "..", "a/../b", "\u{1b}[2J\u{1b}[H", "x\ny", "%2e%2e"]
        .map(String::from)
        .to_vec();
    let rig = Rig::new(steady_sim(127)).await;
    rig.cycle().await;
    rig.sim.set_hostility(Hostility {
        phantom_ids: phantoms.clone(),
        ..Hostility::default()
    });
    for _ in 0..6 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert_cursors_bounded(&rig);
    }
    let counts = rig.sim.request_counts();
    for path in counts.keys() {
        assert!(
            path.starts_with("GET /api/v1/document") || path.starts_with("POST /api/v1/auth"),
            "a request left the document API: {path:?} ({counts:?})"
        );
        assert_ne!(path, "GET /api/v1/document/", "{counts:?}");
    }
    let r = compare_without(&rig, &phantoms, &[]);
    assert!(r.perfect(), "{r:#?}");
    assert_nothing_twice(&rig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answer_over_its_cap_falls_back_to_the_list_walk() {
    let rig = Rig::new(SimConfig {
        members: 2,
        ..steady_sim(131)
    })
    .await;
    rig.cycle().await;
    // Every poll answers 70 MB of `[0,0,…]`, streamed without a Content-Length.
    rig.sim.inject(Fault::new(
        "document/poll",
        u32::MAX,
        FaultKind::ZeroArray { bytes: 70 << 20 },
    ));
    for _ in 0..4 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert!(r.resynced > 0 || r.events == 0, "{r:?}");
    }
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answer_of_a_million_zeros_is_one_warning_and_not_a_success() {
    capture_logs();
    let rig = Rig::new(SimConfig {
        members: 1,
        ..steady_sim(137)
    })
    .await;
    let member = rig.sim.credentials().members[0].endpoint_id.clone();
    rig.cycle().await;
    rig.sim.step();
    rig.sim.inject(Fault::new(
        "document/poll",
        1,
        FaultKind::ZeroArray { bytes: 2 << 20 },
    ));
    let r = rig.cycle().await;
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert!(
        r.failures[0]
            .text
            .contains("1048576 item(s), none of them a document object"),
        "{:?}",
        r.failures
    );
    let lines = logs()
        .lines()
        .filter(|l| l.contains(&member) && l.contains("item"))
        .count();
    assert!(lines <= 2, "{lines} log lines about the junk items");
    run_rounds(&rig, 2).await;
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_nested_far_beyond_the_recursion_limit_is_read() {
    let rig = Rig::new(steady_sim(139)).await;
    rig.cycle().await;
    // 200,000 levels of arrays beside the real fields of every detail.
    rig.sim.inject(Fault::new(
        "{id}",
        u32::MAX,
        FaultKind::Padded { bytes: 400_000 },
    ));
    for _ in 0..5 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
    }
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detail_over_its_cap_sends_the_member_to_the_list_walk() {
    let rig = Rig::new(steady_sim(149)).await;
    rig.cycle().await;
    for _ in 0..5 {
        rig.sim.step();
        rig.sim.inject(Fault::new(
            "{id}",
            1,
            FaultKind::NestedArrays { bytes: 15 << 20 },
        ));
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
    }
    rig.assert_perfect();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_stored_in_the_future_is_reset_and_nothing_is_missed() {
    use pollhook::providers::caminvoice::model::MemberRecord;
    use pollhook::store::{Batch, Unit};
    let rig = Rig::new(steady_sim(151)).await;
    rig.cycle().await;
    // As an older pollhook (or this clock before it went back) left it: cursors in 9999.
    let store = rig.engine().store();
    let mut batch = Batch::default();
    for m in rig.sim.credentials().members {
        let unit = Unit::new("sim-kh", &m.endpoint_id);
        let mut rec: MemberRecord =
            serde_json::from_slice(&store.get_cursor(unit).unwrap().unwrap()).unwrap();
        rec.cursor = Some(253_402_300_799_999);
        batch.put_cursor(unit, serde_json::to_vec(&rec).unwrap());
    }
    store.commit(batch).await.unwrap();
    for _ in 0..5 {
        rig.sim.step();
        let r = rig.cycle().await;
        assert!(r.ok(), "{:?}", r.failures);
        assert_cursors_bounded(&rig);
    }
    rig.assert_perfect();
}
