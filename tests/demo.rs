//! The README's first command, as a test: the demo's default run shows all four CamInvoice
//! event types and OnlinePajak's PPN_INVOICE_APPROVED, and matches the simulator's ground truth
//! exactly, at the floor of API requests.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_demo_shows_every_event_type_at_full_fidelity() {
    let s = pollhook::demo::run(Duration::from_secs(20), 1)
        .await
        .unwrap();
    for t in [
        "DOCUMENT.DELIVERED",
        "DOCUMENT.RECEIVED",
        "DOCUMENT.STATUS_UPDATED",
        "ENTITY.REVOKED",
    ] {
        assert!(
            s.events_by_type.get(t).copied().unwrap_or(0) > 0,
            "no {t}: {:?}",
            s.events_by_type
        );
    }
    assert!(s.fidelity.perfect(), "{:#?}", s.fidelity);
    assert_eq!(
        s.totals.core_requests, s.totals.floor,
        "requests above the floor"
    );
    assert_eq!(
        s.totals.failed_cycles, 1,
        "only the first refused refresh of the revoked member fails a cycle"
    );
}
