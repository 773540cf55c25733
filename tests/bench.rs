//! `pollhook bench` on a small grid: it runs end to end (daemon as a child process, the
//! simulator's journal checked against the events, the naive poller, diff + commit) and its
//! tables say what the daemon did. The figures of BENCHMARKS.md come from the same command on
//! the full grid; nothing here is timed.

mod common;

use common::process;

use std::process::Command;

/// The cells of the Markdown rows of the table under `heading`.
fn rows(report: &str, heading: &str) -> Vec<Vec<String>> {
    report
        .split(heading)
        .nth(1)
        .unwrap_or_else(|| panic!("no {heading} in:\n{report}"))
        .lines()
        .skip_while(|l| !l.starts_with("|---"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace(',', ""))
                .collect()
        })
        .collect()
}

#[test]
fn a_small_grid_runs_at_the_minimum_of_requests_and_reports_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bench.md");
    let run = Command::new(process::BIN)
        .args([
            "bench",
            "--members",
            "2",
            "--documents",
            "500",
            "--changed",
            "0,10",
            "--latency-ms",
            "0",
            "--micro-documents",
            "2000",
            "--naive-sample",
            "100",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).unwrap();
    assert_eq!(report.trim(), String::from_utf8_lossy(&run.stdout).trim());

    // M N L changed requests minimum ratio tokens cycle-s CPU-s RSS RSS-after events JSONL/s naive-req naive-s
    let cycles = rows(&report, "### Cycles");
    assert_eq!(cycles.len(), 2, "{report}");
    let quiet = &cycles[0];
    assert_eq!(&quiet[..8], ["2", "500", "0", "0", "2", "2", "1.00", "0"]);
    assert_eq!(quiet[12], "0");
    let busy = &cycles[1];
    // Two polls and one detail per changed document; 50 events, as the journal says (the
    // bench itself fails when they differ).
    assert_eq!(&busy[..8], ["2", "500", "0", "50", "52", "52", "1.00", "0"]);
    assert_eq!(busy[12], "50");
    assert!(busy[13].parse::<f64>().unwrap() > 0.0, "JSONL events/s");
    assert!(busy[10].parse::<f64>().unwrap() > 1.0, "peak RSS MB");
    assert!(
        busy[11].parse::<f64>().unwrap() > 1.0,
        "RSS after the cycle, MB"
    );
    // The naive poller: per member a token, 3 sent pages and 1 received page; 500 details.
    assert_eq!(busy[14], "510");

    // M N baseline-requests minimum ratio baseline-s RSS bytes/doc bytes/doc startup
    // restart-token-calls idle
    let stores = rows(&report, "### Per store");
    assert_eq!(stores.len(), 1);
    // Per member: a poll, 3 sent pages, 1 empty received page.
    assert_eq!(&stores[0][..5], ["2", "500", "10", "10", "1.00"]);
    let startup: f64 = stores[0][9].parse().expect("a start-up time");
    assert!(startup > 0.0 && startup < 60.0, "{startup}");
    let bytes: f64 = stores[0][7].parse().unwrap();
    assert!(bytes > 10.0, "{bytes} bytes per document");
    assert_eq!(
        stores[0][10], "0",
        "the restarted daemon used the stored access tokens"
    );

    let micro = rows(&report, "### Diff + commit");
    assert_eq!(&micro[0][..2], ["this build", "2000"]);
    assert_eq!(micro[0][3], "200");

    // A line per target, each with its verdict.
    let targets = rows(&report, "### Targets");
    assert!(targets.len() >= 6, "{report}");
    for t in &targets {
        let verdict = t.last().unwrap();
        assert!(verdict == "met" || verdict.contains("missed"), "{t:?}");
    }
}
