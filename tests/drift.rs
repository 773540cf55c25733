//! Contract drift in the daemon: a field pollhook reads missing from every item of an answer is
//! one warning per account and field an hour (not one per item or per cycle), a counter in
//! `/metrics` and a line in `status`; an OnlinePajak invoice that Retrieve cannot complete costs
//! one Retrieve per change, not one per cycle, so the Retrieves of a cycle do not grow with the
//! number of incomplete invoices (graded by the simulator's counters); and once
//! `[accounts.api]` is corrected, every invoice held back is emitted, exactly as the webhooks
//! would have sent it.

mod common;

use common::logs::Logs;
use common::{both_providers, steady_sim, Rig};
use pollhook::admin::StatusReport;
use pollhook::config::Config;
use pollhook::metrics::Outbox;
use pollhook_sim::{pollhook_config, Drift};

/// The lines of `text` logged at WARN that contain `needle`.
fn warnings<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
    text.lines()
        .filter(|l| l.contains(" WARN ") && l.contains(needle))
        .collect()
}

/// The rig's config as generated, with `edit` applied (the same state dir, start and log).
fn config_with(rig: &Rig, edit: impl FnOnce(String) -> String) -> Config {
    let text = pollhook_config(
        &rig.sim.credentials(),
        &rig.server.base_url(),
        &rig.dir.path().join("state"),
        &rig.dir.path().join("events.jsonl"),
        &pollhook::time::format_ms(rig.start),
        "* * * * * *",
    );
    Config::parse(&edit(text), std::path::Path::new("test.toml")).unwrap()
}

#[test]
fn a_renamed_approval_status_is_one_warning_a_status_line_and_no_retrieve_per_invoice() {
    let logs = Logs::new();
    logs.run(async {
        let mut rig = Rig::new(both_providers(61)).await;
        rig.sim.set_drift(Drift::OpStatusRenamed);
        rig.cycle_all().await; // the baseline
        let npwp = rig.sim.credentials().onlinepajak[0].npwp.clone();

        let mut retrieves = Vec::new();
        for burst in [2, 0, 0, 30, 60] {
            assert_eq!(rig.sim.op_burst(&npwp, burst), burst);
            let before = rig.sim.cost();
            for r in rig.cycle_all().await {
                assert!(r.ok(), "{:?}", r.failures);
            }
            retrieves.push(rig.sim.cost().since(&before).retrieves);
        }
        // Invoices without an approval status, 2, then 32, then 92 of them: at most one
        // Retrieve a cycle (the one that shows Retrieve cannot help), and one per invoice in
        // all: the third cycle finds both of the first two remembered as unreadable.
        eprintln!("Retrieves per cycle, 2, 2, 2, 32 and 92 invoices lacking approvalStatus (by the simulator): {retrieves:?}");
        assert_eq!(retrieves, [1, 1, 0, 1, 1], "Retrieves per cycle");
        assert!(rig.emitted().is_empty(), "nothing can be emitted yet");

        let text = logs.text();
        let drift = warnings(&text, "`approvalStatus`");
        assert_eq!(drift.len(), 1, "one warning for five cycles:\n{}", drift.join("\n"));
        assert!(
            drift[0].contains("is missing from all 2 invoices")
                && drift[0].contains("approval_status")
                && drift[0].contains("pollhook probe --account op-0"),
            "{}",
            drift[0]
        );
        let op0 = warnings(&text, "op-0");
        assert_eq!(op0.len(), 1, "no other warning for the account:\n{}", op0.join("\n"));

        let status = StatusReport::collect(rig.engine(), &rig.config.sinks)
            .unwrap()
            .render();
        assert!(
            status.contains("warning               OnlinePajak `approvalStatus` missing from 100% of invoices since ")
                && status.contains(": run `pollhook probe`"),
            "{status}"
        );
        let metrics = rig.engine().metrics().render(&Outbox::default());
        let counted = metrics
            .lines()
            .find(|l| {
                l.starts_with(
                    "pollhook_contract_drift_total{account=\"op-0\",field=\"approvalStatus\"}",
                )
            })
            .unwrap_or_else(|| panic!("no drift counter:\n{metrics}"));
        let n: f64 = counted.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 2.0, "{counted}");

        // The operator corrects the name (what `pollhook probe` suggests): the invoices held
        // back — one of them remembered as unreadable under the old name — are all emitted.
        rig.config = config_with(&rig, |t| {
            t.lines()
                .map(|l| {
                    if l.starts_with("token = ") {
                        format!("{l}\n[accounts.api]\napproval_status = \"status\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        });
        rig.restart();
        let before = rig.sim.cost();
        for r in rig.cycle_all().await {
            assert!(r.ok(), "{:?}", r.failures);
        }
        assert_eq!(rig.sim.cost().since(&before).retrieves, 0);
        let report = rig.assert_perfect();
        assert_eq!(report.expected, 92);
        let status = StatusReport::collect(rig.engine(), &rig.config.sinks)
            .unwrap()
            .render();
        assert!(!status.contains("`approvalStatus` missing"), "cleared: {status}");
    });
}

#[test]
fn a_renamed_poll_field_is_one_warning_per_account_not_one_per_member_and_cycle() {
    let logs = Logs::new();
    logs.run(async {
        let rig = Rig::new(steady_sim(62)).await;
        rig.cycle_all().await;
        rig.sim.set_drift(Drift::CiUpdatedAtRenamed);
        for _ in 0..3 {
            rig.sim.step();
            rig.cycle_all().await;
        }
        let text = logs.text();
        let drift = warnings(&text, "`updated_at`");
        assert_eq!(drift.len(), 1, "{}", drift.join("\n"));
        assert!(
            drift[0].contains("CamInvoice `updated_at` is missing from all"),
            "{}",
            drift[0]
        );
        assert!(
            warnings(&text, "unusable poll item").is_empty(),
            "the per-answer summary is not repeated at WARN"
        );
        let status = StatusReport::collect(rig.engine(), &rig.config.sinks)
            .unwrap()
            .render();
        assert!(
            status.contains("CamInvoice `updated_at` missing from 100% of poll items since"),
            "{status}"
        );
    });
}
