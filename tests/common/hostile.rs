//! Checks shared by the hostile-provider tests: cursors within the skew allowance, envelopes
//! whose `occurred_at` is RFC 3339, ground truth compared without the phantom documents, and a
//! capture of the warnings the library logs.

use super::Rig;
use pollhook::time::{now_ms, parse_timestamp, MAX_FUTURE_SKEW};
use pollhook_sim::fidelity::{self, Emitted};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Every unit's cursor, over every account: (account, unit, cursor).
pub fn cursors(rig: &Rig) -> Vec<(String, String, Option<i64>)> {
    let e = rig.engine();
    let mut out = Vec::new();
    for (i, account) in e.accounts().into_iter().enumerate() {
        for u in e
            .provider(i)
            .status(e.store(), pollhook::shard::Shard::ALL)
            .unwrap()
        {
            out.push((account.clone(), u.unit, u.cursor));
        }
    }
    out
}

/// No cursor is later than now plus the documented skew allowance.
pub fn assert_cursors_bounded(rig: &Rig) {
    let limit = now_ms() + MAX_FUTURE_SKEW.as_millis() as i64;
    for (account, unit, cursor) in cursors(rig) {
        if let Some(c) = cursor {
            assert!(
                c <= limit,
                "account {account}, {unit}: cursor {c} ({}) is beyond now + {MAX_FUTURE_SKEW:?}",
                pollhook::time::format_ms(c)
            );
        }
    }
}

/// Every JSONL envelope's `occurred_at` and `detected_at` are RFC 3339 with a 4-digit year.
pub fn assert_instants_rfc3339(rig: &Rig) {
    let text = std::fs::read_to_string(rig.jsonl()).unwrap_or_default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["occurred_at", "detected_at"] {
            let s = v[key].as_str().unwrap_or_default();
            assert!(
                chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.len() == 24,
                "{key} is not RFC 3339: {s:?} in {line}"
            );
        }
    }
}

/// The document a payload names: a CamInvoice `document_id`, an OnlinePajak
/// `reference_number` ("" for ENTITY.REVOKED).
pub fn document_of(payload: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
    v["document_id"]
        .as_str()
        .or(v["event_data"]["reference_number"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Fidelity over everything but the events of `excluded` documents (which do not exist in the
/// simulated world: no webhook names them, whatever pollhook made of them). The events of
/// `quarantined` documents (shown with an absurd `updated_at`) are dated when pollhook saw the
/// change: their `occurred_at` may differ from the truth's instant, never precede it.
pub fn compare_without(rig: &Rig, excluded: &[String], quarantined: &[String]) -> fidelity::Report {
    let keep = |p: &str| !excluded.contains(&document_of(p));
    let truth: Vec<fidelity::Expected> = rig
        .truth()
        .into_iter()
        .filter(|t| keep(&t.payload))
        .collect();
    let emitted: Vec<Emitted> = rig
        .emitted()
        .into_iter()
        .filter(|e| keep(&e.payload))
        .collect();
    let mut r = fidelity::compare(&truth, &emitted);
    r.mismatches.retain(|m| {
        let late = m.field == "occurred_at"
            && quarantined.contains(&document_of(&m.payload))
            && matches!(
                (parse_timestamp(&m.emitted), parse_timestamp(&m.expected)),
                (Some(e), Some(t)) if e >= t
            );
        !late
    });
    r
}

/// [`compare_without`] nothing excluded, perfect, and with traffic.
pub fn assert_perfect_but_dated(rig: &Rig, quarantined: &[String]) {
    let r = compare_without(rig, &[], quarantined);
    assert!(r.expected > 0, "the simulator produced no traffic");
    assert!(r.perfect(), "fidelity not perfect: {r:#?}");
}

/// No event id was emitted twice.
pub fn assert_nothing_twice(rig: &Rig) {
    let mut ids = std::collections::HashSet::new();
    for e in rig.emitted() {
        assert!(ids.insert(e.id.clone()), "event id {} emitted twice", e.id);
    }
}

/// The library's log lines (WARN and above) since the capture was installed, for every test of
/// this binary: filter by something unique to the test (a member's endpoint id).
pub fn logs() -> String {
    let buf = capture();
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

fn capture() -> &'static Mutex<Vec<u8>> {
    static BUF: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Writer(buf))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

/// Installs the log capture (call before the code under test runs).
pub fn capture_logs() {
    capture();
}

struct Writer(&'static Mutex<Vec<u8>>);

impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
