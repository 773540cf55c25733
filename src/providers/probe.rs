//! `pollhook probe`'s report for one account, and the judgement shared by every provider: how
//! each field pollhook reads fared in an answer ([`examine`]), which unread key looks like a
//! renamed field, the verdict, and the text the operator reads ([`ProbeReport::render`]).
//!
//! A provider's own `probe.rs` makes the read-only calls with its usual client (the account's
//! HTTP settings and pacer), reads every answer with its usual parser (which also counts the
//! fields' [`Presence`]), takes the answer's [`Census`], and fills a [`ProbeReport`]: checks in
//! the order of first contact (reachability and TLS, authentication, each endpoint), then
//! field reports, problems, warnings and the lines to try. Nothing here does I/O.

use super::census::{Census, KeyStats, Spot};
use super::contract::{Class, Field, Need, Presence, Seen};
use crate::http::HttpError;
use crate::redact::{self, Show};
use crate::time::parse_timestamp;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The verdict on one account (and, the worst of them, on a probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed; every field pollhook reads is there, with known values.
    Ready,
    /// pollhook will work; something degrades (an optional field missing, unknown values, a
    /// member refused, nothing to look at yet).
    ReadyWithWarnings,
    /// pollhook cannot work with this account as configured (unreachable, refused, an answer
    /// it cannot read, a field it needs missing).
    NotUsable,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::ReadyWithWarnings => "ready with warnings",
            Verdict::NotUsable => "not usable",
        }
    }

    /// `pollhook probe`'s exit code: 0 ready, 3 ready with warnings, 1 not usable (2 stays
    /// the configuration error it is for every command).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ready => 0,
            Verdict::ReadyWithWarnings => 3,
            Verdict::NotUsable => 1,
        }
    }
}

/// How one step of first contact went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    Ok,
    Warning,
    Failed,
    /// Not tried: an earlier step failed, or there was nothing to try it on.
    Skipped,
}

/// One step: `reachability`, `authentication`, `poll`, `bulk fetch`, ...
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub outcome: Grade,
    pub text: String,
}

/// One field pollhook reads, in one answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FieldReport {
    /// The answer: `poll`, `detail`, `bulk fetch`, `retrieve`, ...
    pub answer: String,
    /// The name read (OnlinePajak: after `[accounts.api]`).
    pub field: String,
    /// Its `[accounts.api]` key, where it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    pub need: Need,
    /// Items that carried it (not null), of those where it is expected.
    pub carried: u64,
    pub of: u64,
    /// Its JSON type(s): `string`, `string 10, null 2`; `-` when absent.
    pub types: String,
    /// One value, masked (`redact::sample`): ids shortened, free text by its form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<String>,
    /// Values outside the known set (choices), with how many items had each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Makes the account not usable.
    Problem,
    Warning,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

/// A config line to try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suggestion {
    /// Where it goes: `[accounts.api]`, or `[[accounts]]` (the account's own keys).
    pub table: String,
    /// The line, as it is written in the config: `approval_status = "status"`.
    pub line: String,
    pub why: String,
}

/// `[accounts.api]`: where OnlinePajak's assumed names are overridden.
pub const API_TABLE: &str = "[accounts.api]";
/// The account's own table.
pub const ACCOUNT_TABLE: &str = "[[accounts]]";

/// Everything one account's probe found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub account: String,
    pub provider: String,
    pub base_url: String,
    pub checks: Vec<Check>,
    pub fields: Vec<FieldReport>,
    pub findings: Vec<Finding>,
    pub suggestions: Vec<Suggestion>,
    /// Requests sent (retries included), all of them reads.
    pub requests: u64,
    pub verdict: Verdict,
    /// (field, kind of finding) already reported: the same drift in a second answer (Retrieve
    /// after Bulk Fetch) is not reported twice.
    #[serde(skip)]
    noted: std::collections::BTreeSet<(String, &'static str, Need)>,
}

impl ProbeReport {
    pub fn new(account: &str, provider: &str, base_url: &str) -> ProbeReport {
        ProbeReport {
            account: account.to_string(),
            provider: provider.to_string(),
            base_url: base_url.to_string(),
            checks: Vec::new(),
            fields: Vec::new(),
            findings: Vec::new(),
            suggestions: Vec::new(),
            requests: 0,
            verdict: Verdict::Ready,
            noted: Default::default(),
        }
    }

    /// Whether `kind` of finding about `field` (of this need) is new to this report (and
    /// notes it): the same drift in a second answer of the same items is not said twice.
    fn first_time(&mut self, field: &Field, kind: &'static str) -> bool {
        self.noted.insert((field.name.clone(), kind, field.need))
    }

    pub fn check(&mut self, name: &str, outcome: Grade, text: impl Into<String>) {
        self.checks.push(Check {
            name: name.to_string(),
            outcome,
            text: redact::text(&text.into()).into_owned(),
        });
    }

    pub fn problem(&mut self, text: impl Into<String>) {
        self.finding(Severity::Problem, text.into());
    }

    pub fn warning(&mut self, text: impl Into<String>) {
        self.finding(Severity::Warning, text.into());
    }

    fn finding(&mut self, severity: Severity, text: String) {
        self.findings.push(Finding {
            severity,
            text: redact::text(&text).into_owned(),
        });
    }

    /// A line to try (once, however many answers suggest it).
    pub fn suggest(&mut self, table: &str, line: String, why: String) {
        if self.suggestions.iter().any(|s| s.line == line) {
            return;
        }
        self.suggestions.push(Suggestion {
            table: table.to_string(),
            line,
            why: redact::text(&why).into_owned(),
        });
    }

    /// Closes the report: the requests sent, and the verdict from the checks and findings.
    pub fn finish(&mut self, requests: u64) {
        self.requests = requests;
        let failed = self.checks.iter().any(|c| c.outcome == Grade::Failed)
            || self
                .findings
                .iter()
                .any(|f| f.severity == Severity::Problem);
        let warned = self.checks.iter().any(|c| c.outcome == Grade::Warning)
            || self
                .findings
                .iter()
                .any(|f| f.severity == Severity::Warning);
        self.verdict = if failed {
            Verdict::NotUsable
        } else if warned {
            Verdict::ReadyWithWarnings
        } else {
            Verdict::Ready
        };
    }

    /// The human form, as `pollhook probe` prints it.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "account {} ({}, {}): {}",
            self.account,
            self.provider,
            self.base_url,
            self.verdict.text().to_uppercase()
        );
        let w = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let mark = match c.outcome {
                Grade::Ok => "ok",
                Grade::Warning => "warning",
                Grade::Failed => "FAILED",
                Grade::Skipped => "skipped",
            };
            let _ = writeln!(o, "  {:w$}  {mark:7}  {}", c.name, c.text);
        }
        if !self.fields.is_empty() {
            let _ = writeln!(
                o,
                "  fields pollhook reads (items carrying it, where expected; JSON type; an example, masked):"
            );
            let wa = self
                .fields
                .iter()
                .map(|f| f.answer.len())
                .max()
                .unwrap_or(0);
            let wf = self.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
            let wt = self.fields.iter().map(|f| f.types.len()).max().unwrap_or(0);
            for f in &self.fields {
                let count = format!("{}/{}", f.carried, f.of);
                let _ = writeln!(
                    o,
                    "    {:wa$}  {:wf$}  {count:>9}  {:wt$}  {}",
                    f.answer,
                    f.field,
                    f.types,
                    f.example.as_deref().unwrap_or("")
                );
                if !f.outside.is_empty() {
                    let _ = writeln!(
                        o,
                        "    {:wa$}  {:wf$}  outside the known set: {}",
                        "",
                        "",
                        counted(&f.outside)
                    );
                }
            }
        }
        for (severity, title) in [
            (Severity::Problem, "problems"),
            (Severity::Warning, "warnings"),
        ] {
            let list: Vec<&Finding> = self
                .findings
                .iter()
                .filter(|f| f.severity == severity)
                .collect();
            if !list.is_empty() {
                let _ = writeln!(o, "  {title}:");
                for f in list {
                    let _ = writeln!(o, "    - {}", f.text);
                }
            }
        }
        if !self.suggestions.is_empty() {
            let _ = writeln!(
                o,
                "  try these lines in account {}'s config, then `pollhook probe` again:",
                self.account
            );
            let mut tables: Vec<&str> = self.suggestions.iter().map(|s| s.table.as_str()).collect();
            tables.dedup();
            for table in tables {
                let _ = writeln!(o, "    {table}");
                for s in self.suggestions.iter().filter(|s| s.table == table) {
                    let _ = writeln!(o, "    {}    # {}", s.line, s.why);
                }
            }
        }
        let _ = writeln!(
            o,
            "  verdict: {} (exit {}); {} read-only request(s)",
            self.verdict.text(),
            self.verdict.exit_code(),
            self.requests
        );
        redact::text(&o).into_owned()
    }
}

/// `"delivered" ×3, "paid" ×1`.
fn counted(values: &[(String, u64)]) -> String {
    values
        .iter()
        .map(|(v, n)| format!("{:?} ×{n}", redact::clip(v, 40)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The reachability check's text for a request that got an answer: `host:port answered over
/// HTTPS (TLS verified)`.
pub fn reached(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port_or_known_default().unwrap_or(0);
            if u.scheme() == "https" {
                format!("{host}:{port} answered over HTTPS (certificate verified)")
            } else {
                format!("{host}:{port} answered over plain HTTP (no TLS)")
            }
        }
        Err(_) => "the server answered".to_string(),
    }
}

/// A request that got no usable answer: which check failed (`reachability`, or the endpoint
/// when the server answered with an error status every time) and why.
pub fn unreachable(e: &HttpError) -> (&'static str, String) {
    let text = e.to_string();
    let lower = text.to_lowercase();
    let tls = ["certificate", "tls", "handshake", "unknownissuer", "alert"]
        .iter()
        .any(|w| lower.contains(w));
    match e {
        HttpError::GaveUp { last, .. } if last.starts_with("HTTP ") => (
            "endpoint",
            format!("the server answers, but with {last} every time: {text}"),
        ),
        HttpError::GaveUp { .. } if tls => (
            "reachability",
            format!("TLS failed: {text} (is the certificate valid for this host, and issued by a public authority?)"),
        ),
        _ => ("reachability", text),
    }
}

/// One answer to judge: its label, where its items sit in the census, what the parser counted,
/// and the fields pollhook reads from it.
pub struct Answer<'a> {
    pub label: &'a str,
    pub spot: Option<&'a Spot>,
    pub presence: &'a Presence,
    pub fields: &'a [Field],
    /// "CamInvoice", "OnlinePajak": names whoever documents a field without an override.
    pub provider: &'a str,
    /// Report a row for every field (`false`: only for the fields with something to say,
    /// when another answer already showed the same fields).
    pub rows: bool,
}

/// Judges each field of an answer: its report row, a problem or a warning when it is missing
/// (with the unread key that looks like it, and the `[accounts.api]` line when there is one),
/// when some items lack it, when its values are outside the known set. `reserved`: every name
/// pollhook reads from such items (never a candidate for another field).
pub fn examine(report: &mut ProbeReport, a: &Answer, reserved: &[&str]) {
    for (field, seen) in a.fields.iter().zip(&a.presence.fields) {
        let stats = a.spot.and_then(|s| s.key(&field.name));
        if a.rows || seen.carried < seen.expected || seen.unknown > 0 {
            report
                .fields
                .push(field_report(a.label, field, seen, stats));
        }
        let items = a.presence.what;
        if seen.missing() {
            if !report.first_time(field, "missing") {
                continue;
            }
            let mut text = format!(
                "{}: `{}` is missing from {n} of {n} {items} ({})",
                a.label,
                field.name,
                field.role,
                n = seen.expected
            );
            match a.spot.and_then(|s| candidate(field, seen, s, reserved)) {
                Some((key, evidence)) => {
                    let _ = write!(text, "; `{key}` ({evidence}) looks like it");
                    match field.setting {
                        Some(setting) => report.suggest(
                            API_TABLE,
                            format!("{setting} = {:?}", key),
                            format!("`{}` is in no item; `{key}` is {evidence}", field.name),
                        ),
                        None => {
                            let _ = write!(text, " — {} documents `{}`, so pollhook has no override for it: please report this answer (`pollhook probe --json`)", a.provider, field.name);
                        }
                    }
                }
                None => {
                    if let Some(setting) = field.setting {
                        let _ = write!(
                            text,
                            "; no other key looks like it: find its name in an answer and set `{setting}` in {API_TABLE}"
                        );
                    }
                }
            }
            match field.need {
                Need::Required => report.problem(text),
                Need::Useful => report.warning(text),
            }
        } else if seen.carried < seen.expected && report.first_time(field, "partial") {
            report.warning(format!(
                "{}: `{}` is missing from {} of {} {items} ({})",
                a.label,
                field.name,
                seen.expected - seen.carried,
                seen.expected,
                field.role
            ));
        }
        if seen.unknown > 0 && report.first_time(field, "values") {
            let outside: Vec<(String, u64)> = stats.map(|s| outside(field, s)).unwrap_or_default();
            let folded: Vec<String> = outside
                .iter()
                .filter_map(|(v, _)| fold(&field.class, v).map(|k| format!("`{v}` for `{k}`")))
                .collect();
            let mut text = format!(
                "{}: `{}` has values outside the known set in {} of {} {items}: {}",
                a.label,
                field.name,
                seen.unknown,
                seen.carried,
                counted(&outside)
            );
            if !folded.is_empty() {
                let _ = write!(text, " — in another case ({})", folded.join(", "));
            }
            if seen.all_unknown() && field.need == Need::Required {
                let _ = write!(text, "; pollhook cannot tell what they mean");
                report.problem(text);
            } else {
                let _ = write!(text, "; they are carried through as given");
                report.warning(text);
            }
        }
    }
}

/// A choice's value that is a known one in another case: the known one.
pub fn fold<'c>(class: &'c Class, value: &str) -> Option<&'c str> {
    match class {
        Class::Choice { known, .. } => known
            .iter()
            .find(|k| k.as_str() != value && k.eq_ignore_ascii_case(value))
            .map(String::as_str),
        _ => None,
    }
}

fn outside(field: &Field, s: &KeyStats) -> Vec<(String, u64)> {
    s.values
        .iter()
        .filter(|(v, _)| !field.class.knows(v))
        .cloned()
        .collect()
}

fn field_report(label: &str, field: &Field, seen: &Seen, stats: Option<&KeyStats>) -> FieldReport {
    let show = match field.class {
        Class::Id => Show::Short,
        Class::Text => Show::Form,
        Class::Timestamp | Class::Number | Class::Choice { .. } => Show::Full,
    };
    FieldReport {
        answer: label.to_string(),
        field: field.name.clone(),
        setting: field.setting.map(str::to_string),
        need: field.need,
        carried: seen.carried,
        of: seen.expected,
        types: stats.map_or_else(|| "-".to_string(), KeyStats::kinds_text),
        example: stats
            .and_then(|s| s.values.iter().find(|(v, _)| !v.is_empty()))
            .map(|(v, _)| redact::sample(v, show)),
        outside: stats.map(|s| outside(field, s)).unwrap_or_default(),
    }
}

/// The unread key of `spot` that looks like the missing `field`, with the evidence: carried
/// where the field was expected, of a fitting kind, and named like it (`updatedAt` for
/// `updated_at`) or holding its known values (`status` with DRAFT, APPROVED, ...).
pub fn candidate(
    field: &Field,
    seen: &Seen,
    spot: &Spot,
    reserved: &[&str],
) -> Option<(String, String)> {
    let mut best: Vec<(u32, u64, &str, &KeyStats)> = Vec::new();
    for (key, s) in &spot.keys {
        if key == &field.name || reserved.contains(&key.as_str()) {
            continue;
        }
        if s.non_null() * 10 < seen.expected * 9 || !fits(&field.class, s) {
            continue;
        }
        let mut score = 0;
        if normalized(key) == normalized(&field.name) {
            score += 4;
        } else if shares_word(key, &field.name) {
            score += 1;
        }
        match &field.class {
            Class::Choice { .. }
                if !s.values.is_empty() && s.values.iter().all(|(v, _)| field.class.knows(v)) =>
            {
                score += 3
            }
            Class::Timestamp => score += 1,
            _ => {}
        }
        if score > 0 {
            best.push((score, s.non_null(), key, s));
        }
    }
    best.sort_by_key(|b| std::cmp::Reverse((b.0, b.1)));
    let top = best.first()?;
    let unique = best.get(1).map_or(true, |second| second.0 < top.0);
    if top.0 < 2 && !unique {
        return None;
    }
    let (_, n, key, s) = *top;
    let mut evidence = format!("in {n} of {} items, {}", spot.objects, s.kinds_text());
    match &field.class {
        Class::Choice { .. } => {
            let vs: Vec<&str> = s.values.iter().map(|(v, _)| v.as_str()).take(6).collect();
            let _ = write!(evidence, ", values {}", vs.join(", "));
        }
        Class::Timestamp => evidence.push_str(", timestamps"),
        _ => {}
    }
    Some((key.to_string(), evidence))
}

/// Whether the values of `s` could be the field's.
fn fits(class: &Class, s: &KeyStats) -> bool {
    let only = |allowed: &[&str]| s.kinds.keys().all(|k| allowed.contains(k) || *k == "null");
    match class {
        Class::Id => only(&["string", "number"]),
        Class::Text => only(&["string"]),
        Class::Number => {
            only(&["number", "string"])
                && s.values
                    .iter()
                    .all(|(v, _)| v.trim().parse::<f64>().is_ok())
        }
        Class::Choice { .. } => only(&["string", "number"]),
        Class::Timestamp => {
            only(&["string", "number"])
                && !s.values.is_empty()
                && s.values.iter().all(|(v, _)| {
                    parse_timestamp(v).is_some() || v.parse::<i64>().is_ok_and(|n| n > 100_000_000)
                })
        }
    }
}

/// Lower case, letters and digits only: `updatedAt`, `updated_at`, `UPDATED-AT` are one.
fn normalized(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The words of a camelCase or snake_case name, lower case.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in name.chars() {
        if (!c.is_ascii_alphanumeric() || c.is_ascii_uppercase()) && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if c.is_ascii_alphanumeric() {
            cur.push(c.to_ascii_lowercase());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether two names share a word that says something (`status`; not `at`).
fn shares_word(a: &str, b: &str) -> bool {
    let wb = words(b);
    words(a).iter().any(|w| w.len() > 2 && wb.contains(w))
}

/// Which census path holds the items of an answer: the first of `paths` that has objects.
pub fn items_at<'c>(census: &'c Census, paths: &[String]) -> Option<(&'c Spot, String)> {
    paths.iter().find_map(|p| {
        census
            .at(p)
            .filter(|s| s.objects > 0)
            .map(|s| (s, p.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::contract::Need::{Required, Useful};

    fn statuses() -> Class {
        Class::Choice {
            known: ["DRAFT", "APPROVAL_IN_PROGRESS", "APPROVED", "REJECTED"]
                .map(String::from)
                .to_vec(),
            fold_case: false,
        }
    }

    #[test]
    fn a_renamed_field_is_found_by_its_values_or_its_name() {
        let body = br#"[{"id":"a","status":"APPROVED","lastUpdate":"2024-01-01T00:00:00Z","note":"x"},
                        {"id":"b","status":"DRAFT","lastUpdate":"2024-01-02T00:00:00Z","note":"y"}]"#;
        let census = Census::of(body).unwrap();
        let spot = census.at("[]").unwrap();
        let seen = Seen {
            name: "approvalStatus".into(),
            expected: 2,
            ..Seen::default()
        };
        let f = Field::new("approvalStatus", statuses(), Required, "decides")
            .setting("approval_status");
        let (key, evidence) = candidate(&f, &seen, spot, &["id"]).unwrap();
        assert_eq!(key, "status");
        assert!(
            evidence.contains("in 2 of 2 items") && evidence.contains("APPROVED, DRAFT"),
            "{evidence}"
        );
        let t = Field::new("updatedAt", Class::Timestamp, Required, "version");
        let seen_t = Seen {
            name: "updatedAt".into(),
            expected: 2,
            ..Seen::default()
        };
        assert_eq!(
            candidate(&t, &seen_t, spot, &["id"]).unwrap().0,
            "lastUpdate"
        );
        // Nothing fits a number.
        let n = Field::new("revision", Class::Number, Useful, "rev");
        assert_eq!(candidate(&n, &seen_t, spot, &["id"]), None);
        // The same name in another case wins over a shared word.
        let census = Census::of(
            br#"[{"updatedAt":"2024-01-01T00:00:00Z","updated":"2024-01-01T00:00:00Z"}]"#,
        )
        .unwrap();
        let u = Field::new("updated_at", Class::Timestamp, Required, "version");
        let seen_u = Seen {
            name: "updated_at".into(),
            expected: 1,
            ..Seen::default()
        };
        assert_eq!(
            candidate(&u, &seen_u, census.at("[]").unwrap(), &[])
                .unwrap()
                .0,
            "updatedAt"
        );
    }

    #[test]
    fn examine_reports_fields_problems_and_the_line_to_try() {
        let body = br#"[{"id":"490e6ab5-aaaa","status":"APPROVED"},{"id":"490e6ab5-bbbb","status":"REJECTED"}]"#;
        let census = Census::of(body).unwrap();
        let fields = vec![
            Field::new("id", Class::Id, Required, "the id").setting("id"),
            Field::new("approvalStatus", statuses(), Required, "decides")
                .setting("approval_status"),
        ];
        let mut presence = Presence::new("invoices", &fields);
        presence.fields[0].expected = 2;
        presence.fields[0].carried = 2;
        presence.fields[1].expected = 2;
        let mut r = ProbeReport::new("op", "onlinepajak", "https://x");
        let a = Answer {
            label: "bulk fetch",
            spot: census.at("[]"),
            presence: &presence,
            fields: &fields,
            provider: "OnlinePajak",
            rows: true,
        };
        examine(&mut r, &a, &["id", "approvalStatus"]);
        r.finish(1);
        assert_eq!(r.verdict, Verdict::NotUsable);
        assert_eq!(r.suggestions[0].line, "approval_status = \"status\"");
        assert_eq!(r.fields[0].example.as_deref(), Some("490e6ab5…"));
        assert!(r.findings[0]
            .text
            .contains("`approvalStatus` is missing from 2 of 2 invoices"));
        let text = r.render();
        assert!(
            text.contains("[accounts.api]\n    approval_status = \"status\""),
            "{text}"
        );
        assert!(text.contains("verdict: not usable (exit 1)"), "{text}");
    }

    #[test]
    fn values_in_another_case_are_named() {
        let body = br#"[{"status":"delivered"},{"status":"paid"}]"#;
        let census = Census::of(body).unwrap();
        let class = Class::Choice {
            known: ["DELIVERED", "PAID"].map(String::from).to_vec(),
            fold_case: false,
        };
        let fields = vec![Field::new("status", class, Required, "decides the event")];
        let presence = Presence {
            what: "document details",
            fields: vec![Seen {
                name: "status".into(),
                expected: 2,
                carried: 2,
                unknown: 2,
            }],
        };
        let mut r = ProbeReport::new("kh", "caminvoice", "https://x");
        let a = Answer {
            label: "detail",
            spot: census.at("[]"),
            presence: &presence,
            fields: &fields,
            provider: "CamInvoice",
            rows: true,
        };
        examine(&mut r, &a, &[]);
        r.finish(1);
        assert_eq!(r.verdict, Verdict::NotUsable);
        assert!(
            r.findings[0].text.contains("`delivered` for `DELIVERED`"),
            "{:?}",
            r.findings
        );
        assert_eq!(r.fields[0].outside.len(), 2);
    }

    #[test]
    fn words_split_both_conventions() {
        assert_eq!(words("approvalStatus"), ["approval", "status"]);
        assert_eq!(words("updated_at"), ["updated", "at"]);
        assert!(shares_word("invoiceStatus", "approvalStatus"));
        assert!(!shares_word("createdAt", "updatedAt"));
        assert_eq!(Verdict::ReadyWithWarnings.exit_code(), 3);
        assert!(Verdict::NotUsable > Verdict::ReadyWithWarnings);
    }
}
