//! `pollhook probe` for an OnlinePajak account: one Bulk Fetch page (the invoices updated in
//! the last [`WINDOW`]) and one Retrieve, through the account's own client — the same
//! [`ApiMap`](super::api::ApiMap), token scheme and pacer the daemon uses — and read by the same
//! parser ([`page`], [`retrieved`]); each answer's census then shows what a renamed field or
//! value is called instead, as the `[accounts.api]` line to try.

use super::client::ApiError;
use super::model::{page, retrieved};
use super::OnlinePajak;
use crate::providers::census::{Census, KeyStats};
use crate::providers::probe::{
    examine, items_at, reached, unreachable, Answer, Grade, ProbeReport, ACCOUNT_TABLE, API_TABLE,
};
use crate::providers::RequestCount;
use crate::time::{format_duration, now_ms};
use std::time::Duration;

/// How far back the probe's Bulk Fetch reaches for invoices to look at.
pub const WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Approval values in Indonesian, as a localized API might spell them: (value, the assumed one
/// it stands for).
const TRANSLATED: [(&str, Completion); 2] = [
    ("DISETUJUI", Completion::Approved),
    ("DITOLAK", Completion::Rejected),
];

/// Which completed approval a value stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Completion {
    Approved,
    Rejected,
}

/// Webhook `type` names in other spellings: (value in upper case, the webhook's type).
const TYPE_NAMES: [(&str, &str); 6] = [
    ("NORMAL", "normal"),
    ("REPLACEMENT", "replacement"),
    ("CANCELLATION", "cancellation"),
    ("PENGGANTI", "replacement"),
    ("PEMBATALAN", "cancellation"),
    ("BATAL", "cancellation"),
];

impl OnlinePajak {
    /// The read-only probe of this account (see the module docs). Never touches the store.
    pub async fn run_probe(&self) -> ProbeReport {
        let mut report = ProbeReport::new(&self.account, "onlinepajak", &self.settings.base_url);
        let count = RequestCount::default();
        self.probe_into(&mut report, &count).await;
        report.finish(count.total());
        report
    }

    async fn probe_into(&self, report: &mut ProbeReport, count: &RequestCount) {
        let map = &self.api.map;
        let scheme = if self.settings.raw_auth {
            "raw"
        } else {
            "bearer"
        };
        let from = now_ms().saturating_sub(WINDOW.as_millis() as i64);
        let window = format_duration(WINDOW);
        let answer = self
            .api
            .bulk_fetch_answer(from, map.first_page, self.settings.page_size, count)
            .await;
        let r = match answer {
            Ok(r) => r,
            Err(e) => return self.refused(report, e, scheme),
        };
        report.check("reachability", Grade::Ok, reached(&self.settings.base_url));
        report.check(
            "authentication",
            Grade::Ok,
            format!("OnlinePajak accepted the token (auth_scheme \"{scheme}\")"),
        );
        let census = Census::of(&r.body).unwrap_or_default();
        let outline = census.outline();
        let content = format!("data.{}", map.content);
        let bulk = match page(&r.body, map) {
            Ok(p) => p,
            Err(why) => {
                report.check(
                    "bulk fetch",
                    Grade::Failed,
                    format!("HTTP {}, {outline}: {why}", r.status),
                );
                let found: Vec<(String, u64)> = census
                    .arrays_of_objects("data")
                    .into_iter()
                    .filter(|(p, _)| *p != content)
                    .collect();
                match found.first() {
                    Some((path, n)) if path.matches('.').count() == 1 => {
                        let key = path.trim_start_matches("data.");
                        report.problem(format!("bulk fetch: no invoice array at `{content}`; `{path}` is an array of {n} objects"));
                        report.suggest(API_TABLE, format!("content = {key:?}"), format!("the invoices of a Bulk Fetch page are at `{path}`"));
                    }
                    Some((path, n)) => report.problem(format!("bulk fetch: no invoice array at `{content}`; the answer has an array of {n} objects at `{path}`, deeper than pollhook reads (`data.<content>`): please report this answer (`pollhook probe --json`)")),
                    None => report.problem(format!("bulk fetch: {why}")),
                }
                report.check("retrieve", Grade::Skipped, "no invoice id to ask for");
                return;
            }
        };
        let listed = bulk.page.listed;
        let usable = bulk.page.items.len();
        report.check(
            "bulk fetch",
            if bulk.page.unusable.count > 0 { Grade::Warning } else { Grade::Ok },
            format!("HTTP {}, {outline}: {listed} invoice(s) updated in the last {window}, {usable} usable", r.status),
        );
        if let Some(line) = bulk.page.unusable.summary("unusable invoice(s)") {
            report.warning(format!("bulk fetch: {line}"));
        }
        let fields = map.fields();
        let reserved: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let items = items_at(&census, &[format!("{content}[]")]).map(|(s, _)| s);
        examine(
            report,
            &Answer {
                label: "bulk fetch",
                spot: items,
                presence: &bulk.presence,
                fields: &fields,
                provider: "OnlinePajak",
                rows: true,
            },
            &reserved,
        );
        if let Some(spot) = items {
            self.suggest_values(
                report,
                spot.key(&map.approval_status),
                spot.key(&map.document_type),
            );
        }
        let Some(first) = bulk.page.items.first() else {
            report.warning(format!("bulk fetch: no invoice was updated in the last {window}, so no invoice field could be checked; run `pollhook probe` again once the company has invoices"));
            report.check("retrieve", Grade::Skipped, "no invoice to ask for");
            return;
        };
        // Retrieve is needed only for an item that lacks the status or `updatedAt`.
        let needed = bulk.page.items.iter().any(|i| !i.is_complete());
        let failed = |report: &mut ProbeReport, text: String| {
            if needed {
                report.check("retrieve", Grade::Failed, text);
            } else {
                report.check("retrieve", Grade::Warning, format!("{text} (needed only for a Bulk Fetch item without the status or updatedAt; none lacked them)"));
            }
        };
        let r = match self.api.retrieve_answer(&first.id, count).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return failed(report, format!("HTTP 404 for invoice {} that Bulk Fetch listed: check api.retrieve_path ({})", crate::redact::sample(&first.id, crate::redact::Show::Short), map.retrieve_path));
            }
            Err(e) => return failed(report, e.to_string()),
        };
        let census = Census::of(&r.body).unwrap_or_default();
        let outline = census.outline();
        match retrieved(&r.body, map) {
            Ok(one) => {
                report.check(
                    "retrieve",
                    Grade::Ok,
                    format!("HTTP {}, {outline}", r.status),
                );
                examine(
                    report,
                    &Answer {
                        label: "retrieve",
                        spot: items_at(&census, &["data".to_string()]).map(|(s, _)| s),
                        presence: &one.presence,
                        fields: &fields,
                        provider: "OnlinePajak",
                        rows: false,
                    },
                    &reserved,
                );
            }
            Err(why) => failed(
                report,
                format!(
                    "HTTP {}, {outline}: {why}; pollhook reads the invoice at `data`",
                    r.status
                ),
            ),
        }
    }

    /// The checks for a Bulk Fetch that got no answer to read: unreachable, refused, an error.
    fn refused(&self, report: &mut ProbeReport, e: ApiError, scheme: &str) {
        let other = if scheme == "raw" { "bearer" } else { "raw" };
        match e {
            ApiError::Http(h) => {
                let (check, text) = unreachable(&h);
                if check != "reachability" {
                    report.check("reachability", Grade::Ok, reached(&self.settings.base_url));
                    report.check("bulk fetch", Grade::Failed, text);
                } else {
                    report.check(check, Grade::Failed, text);
                }
            }
            ApiError::Rejected(message) => {
                report.check("reachability", Grade::Ok, reached(&self.settings.base_url));
                let meaning = if message.contains("Invalid signature") {
                    "OnlinePajak's gateway read a token and refused it (its documentation: a bad token): the token is not this company's access token, belongs to the other environment (sandbox or production), or is expected without/with the `Bearer ` prefix"
                } else if message.contains("Unauthorized") {
                    "OnlinePajak's gateway found no token it could read (its documentation: no token): check that `token` resolves to the Private Application's access token, and the scheme"
                } else {
                    "OnlinePajak refused the request"
                };
                report.check(
                    "authentication",
                    Grade::Failed,
                    format!("HTTP 401/403 `{message}` with auth_scheme \"{scheme}\": {meaning}"),
                );
                report.suggest(
                    ACCOUNT_TABLE,
                    format!("auth_scheme = \"{other}\""),
                    format!(
                        "if the token is right, the gateway may want it {}",
                        if other == "raw" {
                            "bare, without `Bearer `"
                        } else {
                            "as `Bearer <token>`"
                        }
                    ),
                );
            }
            ApiError::Status {
                status, message, ..
            } => {
                report.check("reachability", Grade::Ok, reached(&self.settings.base_url));
                let hint = match status {
                    400 => "the query was refused: check api.page_param, size_param, updated_from_param, sort_param and sort_value",
                    404 => "check base_url (it ends in /v2.0) and api.list_path",
                    _ => "see the message",
                };
                report.check(
                    "bulk fetch",
                    Grade::Failed,
                    format!("HTTP {status}: {message}; {hint}"),
                );
            }
            ApiError::Malformed { why, .. } => {
                report.check("bulk fetch", Grade::Failed, why.to_string());
            }
        }
    }

    /// The value lines to try: an approval status that is the assumed one in another case or
    /// language (`approved_value`, `rejected_value`), document types spelled as names (`types`).
    fn suggest_values(
        &self,
        report: &mut ProbeReport,
        status: Option<&KeyStats>,
        types: Option<&KeyStats>,
    ) {
        let map = &self.api.map;
        if let Some(s) = status {
            let seen = |v: &str| s.values.iter().any(|(x, _)| x == v);
            // Every value seen is an assumed one in lower case: the API lower-cases them all.
            let assumed = [
                "DRAFT",
                "APPROVAL_IN_PROGRESS",
                &map.approved_value,
                &map.rejected_value,
            ];
            let lowered = !s.values.is_empty()
                && s.values
                    .iter()
                    .all(|(v, _)| assumed.iter().any(|k| k.to_lowercase() == *v && k != v));
            for (outcome, assumed, key) in [
                (Completion::Approved, &map.approved_value, "approved_value"),
                (Completion::Rejected, &map.rejected_value, "rejected_value"),
            ] {
                if seen(assumed) {
                    continue;
                }
                let alike = s.values.iter().find(|(v, _)| {
                    v.eq_ignore_ascii_case(assumed)
                        || TRANSLATED
                            .iter()
                            .any(|(t, o)| *o == outcome && v.eq_ignore_ascii_case(t))
                });
                if let Some((v, n)) = alike {
                    report.suggest(
                        API_TABLE,
                        format!("{key} = {v:?}"),
                        format!(
                            "no invoice has `{}` = {assumed:?}; {n} have {v:?}",
                            map.approval_status
                        ),
                    );
                } else if lowered {
                    let v = assumed.to_lowercase();
                    report.suggest(
                        API_TABLE,
                        format!("{key} = {v:?}"),
                        format!(
                            "none seen yet, but every `{}` seen is an assumed value in lower case",
                            map.approval_status
                        ),
                    );
                }
            }
        }
        if let Some(t) = types {
            let named: Vec<(String, &str)> = t
                .values
                .iter()
                .filter(|(v, _)| !map.types.contains_key(v))
                .filter_map(|(v, _)| {
                    let up = v.to_uppercase();
                    TYPE_NAMES
                        .iter()
                        .find(|(n, _)| *n == up)
                        .map(|(_, to)| (v.clone(), *to))
                })
                .collect();
            if !named.is_empty() {
                let mut all: Vec<(String, String)> = map
                    .types
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                all.extend(named.iter().map(|(k, v)| (k.clone(), v.to_string())));
                let table = all
                    .iter()
                    .map(|(k, v)| format!("{k:?} = {v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                report.suggest(
                    API_TABLE,
                    format!("types = {{ {table} }}"),
                    format!(
                        "`{}` holds names ({}) where the numbers 1/5/4 were assumed",
                        map.document_type,
                        named
                            .iter()
                            .map(|(k, _)| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            }
        }
    }
}
