//! The README's first command, as a test: the demo's default run shows all four CamInvoice
//! event types and OnlinePajak's PPN_INVOICE_APPROVED, and matches the simulator's ground truth
//! exactly — payloads and envelopes — at the floor of API requests, as the simulator counts
//! them; what it prints names both providers and announces its scripted revocation. The demo paces its traffic to the daemon (a step only once the previous ones came
//! through), so a busy machine makes it slower, not different.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_demo_shows_every_event_type_at_full_fidelity_and_the_floor_of_requests() {
    // What the demo prints is captured (`cargo test` stays quiet) and read like a newcomer.
    let mut printed = Vec::new();
    let s = pollhook::demo::run(Duration::from_secs(20), 1, &mut printed)
        .await
        .unwrap();
    let printed = String::from_utf8(printed).unwrap();
    assert_eq!(s.steps, 20);
    let banner = printed.lines().next().unwrap_or_default();
    assert!(
        banner.contains("CamInvoice") && banner.contains("OnlinePajak"),
        "{banner}"
    );
    assert!(
        printed.contains("Scripted: ") && printed.contains("ENTITY.REVOKED: both are expected"),
        "the revocation's log lines are not announced:\n{printed}"
    );
    let event_lines = printed.lines().filter(|l| l.starts_with("[")).count();
    let events: usize = s.events_by_type.values().sum();
    assert_eq!(event_lines, events, "{printed}");
    // The simulator's counts are shown under the daemon's names for the same endpoints.
    for endpoint in s.requests_by_endpoint.keys() {
        assert!(
            s.totals.requests.contains_key(endpoint.as_str()),
            "{endpoint} is not a name pollhook gives an endpoint: {:?}",
            s.totals.requests.keys()
        );
    }
    for t in [
        "DOCUMENT.DELIVERED",
        "DOCUMENT.RECEIVED",
        "DOCUMENT.STATUS_UPDATED",
        "ENTITY.REVOKED",
        "PPN_INVOICE_APPROVED",
    ] {
        assert!(
            s.events_by_type.get(t).copied().unwrap_or(0) > 0,
            "no {t}: {:?}",
            s.events_by_type
        );
    }
    assert!(s.fidelity.perfect(), "{:#?}", s.fidelity);

    // Cost, graded by the simulator alone: every detail call and Bulk Fetch page was needed by
    // a change the simulator made, and no Retrieve was (its list items are complete).
    let c = &s.cost;
    assert!(c.details > 0 && c.bulk_fetches > 0, "{c:?}");
    assert_eq!(
        c.details, c.details_needed,
        "detail calls above the floor: {c:?}"
    );
    assert_eq!(
        c.bulk_fetches, c.bulk_fetches_needed,
        "Bulk Fetch pages above the floor: {c:?}"
    );
    assert_eq!(c.retrieves, 0, "{c:?}");
    assert_eq!(c.requests(), c.floor(), "{c:?}");
    // The polls and walks are the schedule's: at most one per member (or company) per cycle
    // the daemon ran. (The daemon's count includes the revoked member's two refused refreshes,
    // which poll nothing.)
    let asks = c.polls + c.walks;
    assert!(
        asks <= s.totals.units_polled && asks + 2 >= s.totals.units_polled,
        "{asks} polls and walks for {} member/company cycles",
        s.totals.units_polled
    );
    assert_eq!(
        s.totals.failed_cycles, 1,
        "only the first refused refresh of the revoked member fails a cycle"
    );
}
