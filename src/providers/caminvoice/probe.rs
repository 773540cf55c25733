//! `pollhook probe` for a CamInvoice account: a token refresh for the first [`MEMBERS`]
//! members of the config, then, with the first one CamInvoice accepts, one poll (the changes
//! of the last [`WINDOW`]), one list page (the sent side) and a few Get Document Details —
//! through the account's own client (its HTTP settings, in-flight limit and 401 retry) and
//! read by the daemon's parsers. Nothing is stored: a refresh token CamInvoice rotates is
//! reported, not kept, and members connected with `pollhook connect` (their refresh tokens are
//! in the state store, which the probe never opens) are not probed.

use super::client::{ApiError, DETAIL, LIST, POLL};
use super::model::{self, detail_fields, poll_fields};
use super::token::{jwt_exp, parse_refresh, EXPIRES_AT, EXPIRES_IN};
use super::CamInvoice;
use crate::config::Secret;
use crate::providers::census::Census;
use crate::providers::contract::Presence;
use crate::providers::probe::{
    examine, items_at, reached, unreachable, Answer, Grade, ProbeReport, ACCOUNT_TABLE,
};
use crate::providers::wire::{addressable, segment};
use crate::providers::RequestCount;
use crate::time::{format_duration, format_naive_seconds, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// Members whose refresh token is tried, at most.
pub const MEMBERS: usize = 3;
/// Documents whose detail is fetched, at most.
pub const DETAILS: usize = 3;
/// How far back the probe's poll reaches.
pub const WINDOW: Duration = Duration::from_secs(7 * 86_400);

impl CamInvoice {
    /// The read-only probe of this account (see the module docs). Never touches the store.
    pub async fn run_probe(self: &Arc<Self>) -> ProbeReport {
        let mut report = ProbeReport::new(&self.account, "caminvoice", &self.settings.base_url);
        let count = Arc::new(RequestCount::default());
        if let Some(idx) = self.probe_auth(&mut report, &count).await {
            self.probe_documents(idx, &mut report, &count).await;
        }
        report.finish(count.total());
        report
    }

    /// Reachability and authentication: refreshes the first members' tokens. Returns the
    /// member to read documents with.
    async fn probe_auth(&self, report: &mut ProbeReport, count: &RequestCount) -> Option<usize> {
        let members = self.member_count().min(MEMBERS);
        let reachable = |report: &mut ProbeReport| {
            report.check("reachability", Grade::Ok, reached(&self.settings.base_url))
        };
        if members == 0 {
            // No member to refresh: a made-up refresh token still tells whether CamInvoice
            // accepts the client credentials (it answers `{message}`, not `{error}`).
            let e = self
                .api
                .refresh_answer(&Secret::new("pollhook-probe-not-a-refresh-token"), count)
                .await
                .err();
            match e {
                Some(ApiError::RefreshRefused { .. }) => {
                    reachable(report);
                    report.check("authentication", Grade::Warning, "client credentials accepted (checked with a made-up refresh token); no member in the config to refresh");
                }
                Some(e) => self.auth_failed(report, e),
                None => {
                    reachable(report);
                    report.check("authentication", Grade::Warning, "CamInvoice accepted a made-up refresh token (!); no member in the config to refresh");
                }
            }
            report.warning("no [[accounts.members]] in the config: members connected with `pollhook connect` keep their refresh token in the state store, which `probe` does not open (so that it works while the daemon runs); the document endpoints were not checked. Add one member with its refresh_token to probe them");
            return None;
        }
        let mut first = None;
        let mut lines = Vec::new();
        let mut refused = 0;
        for idx in 0..members {
            let m = self.member(idx);
            let answer = self.api.refresh_answer(&m.refresh_token, count).await;
            if idx == 0 && matches!(answer, Ok(_) | Err(ApiError::RefreshRefused { .. })) {
                reachable(report);
            }
            match answer {
                Ok(r) => {
                    let shape = Census::of(&r.body).map(|c| c.outline()).unwrap_or_default();
                    match parse_refresh(&r.body, now_ms()) {
                        Ok(fresh) => {
                            let lasts = format_duration(Duration::from_secs(
                                (fresh.access.expires_at.saturating_sub(now_ms()).max(0) / 1000)
                                    as u64,
                            ));
                            let from = expiry_source(fresh.access.token.expose(), &r.body);
                            if first.is_none() {
                                lines.push(format!(
                                    "{}: {shape}, valid for {lasts} ({from})",
                                    m.endpoint_id
                                ));
                            }
                            if fresh
                                .refresh_token
                                .as_ref()
                                .is_some_and(|t| *t != m.refresh_token)
                            {
                                report.warning(format!("{}: CamInvoice returned a new refresh token; the daemon stores such tokens, `probe` does not: if the old one stops working, the daemon's next refresh of this member is refused (then `pollhook connect` it again)", m.endpoint_id));
                            }
                            crate::locks::lock(&self.tokens).insert(idx, fresh.access);
                            first.get_or_insert(idx);
                        }
                        Err(why) => {
                            refused += 1;
                            lines.push(format!(
                                "{}: the token answer {shape} is not usable: {why}",
                                m.endpoint_id
                            ));
                        }
                    }
                }
                Err(ApiError::RefreshRefused { status, message }) => {
                    refused += 1;
                    lines.push(format!(
                        "{}: refresh token refused (HTTP {status}: {message})",
                        m.endpoint_id
                    ));
                    report.warning(format!("member {}: CamInvoice refused its refresh token (HTTP {status}: {message}). Per its documentation a refused refresh (401 or 403 with {{message}}) means the token is not valid: the business disconnected (the daemon would count it towards ENTITY.REVOKED), or the token was mistyped or already replaced. Connect it again: `pollhook connect caminvoice --account {} --print-url`", m.endpoint_id, self.account));
                }
                Err(e) => {
                    self.auth_failed(report, e);
                    return None;
                }
            }
        }
        let total = self.member_count();
        let scope = if total > members {
            format!(" ({members} of the config's {total} members tried)")
        } else {
            String::new()
        };
        let (outcome, head) = match (first, refused) {
            (Some(_), 0) => (Grade::Ok, "client credentials and refresh tokens accepted"),
            (Some(_), _) => (
                Grade::Warning,
                "client credentials accepted; some refresh tokens refused",
            ),
            (None, _) => (
                Grade::Failed,
                "client credentials accepted, but no refresh token",
            ),
        };
        report.check(
            "authentication",
            outcome,
            format!("{head}{scope}: {}", lines.join("; ")),
        );
        first
    }

    /// The checks of a refresh that failed for the whole account.
    fn auth_failed(&self, report: &mut ProbeReport, e: ApiError) {
        let reached_ok = |report: &mut ProbeReport| {
            report.check("reachability", Grade::Ok, reached(&self.settings.base_url))
        };
        match e {
            ApiError::Http(h) => {
                let (check, text) = unreachable(&h);
                if check == "reachability" {
                    report.check(check, Grade::Failed, text);
                } else {
                    reached_ok(report);
                    report.check("authentication", Grade::Failed, text);
                }
            }
            ApiError::ClientRejected(m) => {
                reached_ok(report);
                report.check("authentication", Grade::Failed, format!("CamInvoice refused the client credentials ({m}). Per its documentation this answer (401 {{error, error_description}}) judges the integrator's own client_id and client_secret, not a member: check both in this account"));
            }
            ApiError::Status {
                status, message, ..
            } => {
                reached_ok(report);
                let hint = if status == 404 {
                    "; check base_url: the host only, without /api/v1"
                } else {
                    ""
                };
                report.check(
                    "authentication",
                    Grade::Failed,
                    format!("POST /api/v1/auth/token answered HTTP {status}: {message}{hint}"),
                );
            }
            other => {
                reached_ok(report);
                report.check("authentication", Grade::Failed, other.to_string());
            }
        }
    }

    /// Poll, one list page and a few details with member `idx`, judged field by field.
    async fn probe_documents(
        self: &Arc<Self>,
        idx: usize,
        report: &mut ProbeReport,
        count: &Arc<RequestCount>,
    ) {
        let window = format_duration(WINDOW);
        let since = now_ms().saturating_sub(WINDOW.as_millis() as i64);
        let path = format!(
            "/api/v1/document/poll?last_synced_at={}",
            format_naive_seconds(since)
        );
        let mut ids: Vec<String> = Vec::new();
        let reserved_poll = ["document_id", "updated_at", "type"];
        match self.get_collection(idx, POLL, &path, count).await {
            Err(e) => report.check("poll", Grade::Failed, e.to_string()),
            Ok(r) => {
                let census = Census::of(&r.body).unwrap_or_default();
                let outline = census.outline();
                match model::poll_items(&r.body) {
                    Ok(answer) => {
                        let outcome = if answer.unusable.count > 0 {
                            Grade::Warning
                        } else {
                            Grade::Ok
                        };
                        report.check("poll", outcome, format!("HTTP {}, {outline}: {} item(s) changed in the last {window}, {} usable", r.status, answer.listed, answer.items.len()));
                        if let Some(line) = answer.unusable.summary("unusable poll item(s)") {
                            report.warning(format!("poll: {line}"));
                        }
                        let paths = ["[]", "documents[]", "data[]"].map(String::from);
                        examine(
                            report,
                            &Answer {
                                label: "poll",
                                spot: items_at(&census, &paths).map(|(s, _)| s),
                                presence: &answer.presence,
                                fields: &poll_fields(),
                                provider: "CamInvoice",
                                rows: true,
                            },
                            &reserved_poll,
                        );
                        ids.extend(answer.items.iter().map(|i| i.document_id.clone()));
                    }
                    Err(why) => {
                        report.check(
                            "poll",
                            Grade::Failed,
                            format!("HTTP {}, {outline}: {why}", r.status),
                        );
                        let found = census.arrays_of_objects("");
                        let text = match found.first() {
                            Some((p, n)) => format!("poll: the items look to be at `{p}` ({n} objects), where pollhook reads a bare array, `documents` or `data`; CamInvoice documents the bare array, so pollhook has no override for this: please report this answer (`pollhook probe --json`)"),
                            None => format!("poll: {why}"),
                        };
                        report.problem(text);
                    }
                }
            }
        }
        // One list page of the sent side; a refused `type` value is tried the other way once.
        let configured = self.settings.list_send_type.as_str();
        let list = |t: &str| {
            format!(
                "/api/v1/document?type={t}&page=1&size={}",
                self.settings.page_size
            )
        };
        let mut answer = self
            .get_collection(idx, LIST, &list(configured), count)
            .await;
        if let Err(ApiError::Status {
            status: 400..=499,
            message,
            ..
        }) = &answer
        {
            let other = if configured == "sent" { "send" } else { "sent" };
            let retry = self.get_collection(idx, LIST, &list(other), count).await;
            if retry.is_ok() {
                report.problem(format!("list: `type={configured}` was refused ({message}) and `type={other}` was not: the daemon's list walks (the baseline and resyncs) would fail"));
                report.suggest(
                    ACCOUNT_TABLE,
                    format!("list_send_type = {other:?}"),
                    format!("the list endpoint takes `type={other}` for the sent side"),
                );
                answer = retry;
            }
        }
        match answer {
            Err(e) => report.check("list", Grade::Failed, e.to_string()),
            Ok(r) => {
                let census = Census::of(&r.body).unwrap_or_default();
                let outline = census.outline();
                match model::list_page(&r.body) {
                    Ok(p) => {
                        let pages = p
                            .total_pages
                            .map(|t| format!(" of {t}"))
                            .unwrap_or_default();
                        let outcome = if p.page.unusable.count > 0 {
                            Grade::Warning
                        } else {
                            Grade::Ok
                        };
                        report.check(
                            "list",
                            outcome,
                            format!(
                                "HTTP {}, {outline}: {} entries on page 1{pages} (sent side)",
                                r.status, p.page.listed
                            ),
                        );
                        if let Some(line) = p.page.unusable.summary("unusable list entries") {
                            report.warning(format!("list: {line}"));
                        }
                        let fields = detail_fields(true);
                        let reserved: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
                        examine(
                            report,
                            &Answer {
                                label: "list",
                                spot: items_at(&census, &["data[]".to_string()]).map(|(s, _)| s),
                                presence: &p.presence,
                                fields: &fields,
                                provider: "CamInvoice",
                                rows: true,
                            },
                            &reserved,
                        );
                        ids.extend(p.page.items.iter().map(|d| d.document_id.clone()));
                    }
                    Err(why) => {
                        report.check(
                            "list",
                            Grade::Failed,
                            format!("HTTP {}, {outline}: {why}", r.status),
                        );
                    }
                }
            }
        }
        self.probe_details(idx, ids, report, count).await;
    }

    /// Get Document Detail for the first few documents seen.
    async fn probe_details(
        &self,
        idx: usize,
        mut ids: Vec<String>,
        report: &mut ProbeReport,
        count: &RequestCount,
    ) {
        ids.retain(|id| addressable(id));
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        ids.truncate(DETAILS);
        if ids.is_empty() {
            report.check(
                "detail",
                Grade::Skipped,
                "no document to ask for: nothing in the poll or the list",
            );
            report.warning(format!("detail: no document changed in the last {} and the list was empty, so the detail's fields could not be checked; run `pollhook probe` again once the member has documents", format_duration(WINDOW)));
            return;
        }
        let fields = detail_fields(false);
        let mut census = Census::default();
        let mut presence = Presence::new("document details", &fields);
        let (mut read, mut gone, mut bad) = (0, 0, Vec::new());
        for id in &ids {
            let path = format!("/api/v1/document/{}", segment(id));
            match self.get(idx, DETAIL, &path, count).await {
                Ok(r) if r.status == 404 => gone += 1,
                Ok(r) => {
                    if let Ok(c) = Census::of(&r.body) {
                        census.merge(&c);
                    }
                    match model::detail_read(&r.body) {
                        Ok((_, p)) => {
                            presence.merge(&p);
                            read += 1;
                        }
                        Err(why) => bad.push(why.to_string()),
                    }
                }
                Err(e) => bad.push(e.to_string()),
            }
        }
        let outline = census.outline();
        let outcome = match (read, bad.is_empty(), gone) {
            (0, _, _) => Grade::Failed,
            (_, true, 0) => Grade::Ok,
            _ => Grade::Warning,
        };
        let mut text = format!("{read} of {} read: {outline}", ids.len());
        if gone > 0 {
            text.push_str(&format!(
                "; {gone} answered 404 (a document the poll or list named)"
            ));
        }
        if let Some(first) = bad.first() {
            text.push_str(&format!("; {} unreadable (first: {first})", bad.len()));
        }
        report.check("detail", outcome, text);
        let reserved: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        let paths = ["".to_string(), "data".to_string()];
        let spot = paths
            .iter()
            .find_map(|p| census.at(p).filter(|s| s.key("document_id").is_some()))
            .or_else(|| items_at(&census, &paths).map(|(s, _)| s));
        examine(
            report,
            &Answer {
                label: "detail",
                spot,
                presence: &presence,
                fields: &fields,
                provider: "CamInvoice",
                rows: true,
            },
            &reserved,
        );
    }
}

/// Where a refresh answer's expiry came from, as the token parser takes it.
fn expiry_source(token: &str, body: &[u8]) -> String {
    if jwt_exp(token).is_some() {
        return "the JWT's `exp`".to_string();
    }
    let census = Census::of(body).unwrap_or_default();
    let has = |k: &str| {
        ["", "data"].iter().any(|p| {
            census
                .at(p)
                .and_then(|s| s.key(k))
                .is_some_and(|s| s.non_null() > 0)
        })
    };
    match EXPIRES_AT.iter().chain(EXPIRES_IN.iter()).find(|k| has(k)) {
        Some(k) => format!("`{k}`"),
        None => "no expiry given: 900 s assumed".to_string(),
    }
}
