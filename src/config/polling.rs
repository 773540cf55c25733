//! `mode`, `budget`, `min_interval`, `max_interval` of an `[[accounts]]` entry: how its members
//! are scheduled. `mode = "cron"` (the default) polls every member on every tick of
//! `[daemon] schedule`; `mode = "adaptive"` gives each member its own next poll under a request
//! budget (`adaptive`, ARCHITECTURE.md "Adaptive polling").

use super::{Checker, ConfigError, ProviderSettings, RawAccount};
use crate::time::format_duration;
use std::time::Duration;
use toml::Spanned;

/// How an account's members are scheduled.
#[derive(Debug, Clone, PartialEq)]
pub enum Polling {
    /// Every member on every tick of `[daemon] schedule` (the default).
    Cron,
    /// Each member on its own interval, under a request budget.
    Adaptive(AdaptiveSettings),
}

/// `mode = "adaptive"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveSettings {
    /// Requests a minute, every kind (polls, detail calls, follow-ups, retries).
    pub budget_per_minute: f64,
    /// No member is polled more often.
    pub min_interval: Duration,
    /// Every member is polled at least this often (the freshness guarantee).
    pub max_interval: Duration,
}

impl AdaptiveSettings {
    /// Requests a second.
    pub fn budget_per_second(&self) -> f64 {
        self.budget_per_minute / 60.0
    }

    /// Polls a minute the freshness guarantee alone costs for `members` members.
    pub fn floor_per_minute(&self, members: usize) -> f64 {
        members as f64 * 60.0 / self.max_interval.as_secs_f64()
    }
}

/// The share of the budget the freshness guarantee may take: detail calls come on top and
/// are never deferred.
const FLOOR_SHARE: f64 = 0.5;
/// OnlinePajak: the budget stays under this share of `rate_limit`, so retries, resync walks
/// and Retrieve bursts fit under the pacer without it becoming the queue.
const PACER_SHARE: f64 = 0.8;

/// `"600/min"`, `"10/s"`, `"36000/h"` → requests a minute.
fn parse_budget(s: &str) -> Option<f64> {
    let (n, unit) = s.trim().split_once('/')?;
    let n: f64 = n.trim().parse().ok()?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 60.0,
        "m" | "min" | "minute" => 1.0,
        "h" | "hour" => 1.0 / 60.0,
        _ => return None,
    };
    (n.is_finite() && n > 0.0).then_some(n * per)
}

pub(super) fn polling(
    ck: &Checker,
    a: &RawAccount,
    provider: &ProviderSettings,
) -> Result<Polling, ConfigError> {
    let adaptive = match &a.mode {
        None => false,
        Some(m) => match m.get_ref().as_str() {
            "cron" => false,
            "adaptive" => true,
            other => {
                return Err(ck.err(
                    m.span(),
                    format!("unknown `mode` {other:?}"),
                    "use \"cron\" (default: every member on every tick of [daemon] schedule) or \"adaptive\" (each member on its own interval under `budget`)",
                ))
            }
        },
    };
    if !adaptive {
        let set = [
            ("budget", a.budget.as_ref().map(Spanned::span)),
            ("min_interval", a.min_interval.as_ref().map(Spanned::span)),
            ("max_interval", a.max_interval.as_ref().map(Spanned::span)),
        ];
        if let Some((key, Some(span))) = set.into_iter().find(|(_, s)| s.is_some()) {
            return Err(ck.err(
                span,
                format!("`{key}` applies only with mode = \"adaptive\""),
                "add mode = \"adaptive\" to this account, or remove the key (the cron mode polls on [daemon] schedule)",
            ));
        }
        return Ok(Polling::Cron);
    }
    let mode_span = a.mode.as_ref().map(Spanned::span).unwrap_or_default();
    let Some(budget) = &a.budget else {
        return Err(ck.err(
            mode_span,
            "mode = \"adaptive\" needs a `budget`",
            "add budget = \"N/min\": the requests a minute this account may send (every kind), e.g. what the cron schedule costs today: members × polls a minute, plus detail calls",
        ));
    };
    let budget_per_minute = parse_budget(budget.get_ref()).ok_or_else(|| {
        ck.err(
            budget.span(),
            format!("`budget` is not a rate: {:?}", budget.get_ref()),
            "write a positive number of requests per s, min or h, e.g. \"600/min\" or \"10/s\"",
        )
    })?;
    let min_interval = ck.positive(&a.min_interval, "min_interval", Duration::from_secs(10))?;
    let max_interval = ck.positive(&a.max_interval, "max_interval", Duration::from_secs(3600))?;
    let span_of =
        |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span).unwrap_or(mode_span.clone());
    if min_interval < Duration::from_secs(1) {
        return Err(ck.err(
            span_of(&a.min_interval),
            format!(
                "`min_interval` = {} is shorter than the scheduler's 1 s tick",
                format_duration(min_interval)
            ),
            "use 1s or more (default 10s)",
        ));
    }
    if max_interval < min_interval {
        return Err(ck.err(
            span_of(&a.max_interval),
            format!(
                "`max_interval` {} is shorter than `min_interval` {}",
                format_duration(max_interval),
                format_duration(min_interval)
            ),
            "max_interval is the longest any member waits (default 1h); make it at least min_interval",
        ));
    }
    let s = AdaptiveSettings {
        budget_per_minute,
        min_interval,
        max_interval,
    };
    let members = match provider {
        ProviderSettings::CamInvoice(c) => c.members.len(),
        ProviderSettings::OnlinePajak(_) => 1,
    };
    let floor = s.floor_per_minute(members);
    if floor > FLOOR_SHARE * budget_per_minute {
        let need_budget = (floor / FLOOR_SHARE).ceil();
        let need_max = Duration::from_secs_f64(
            (members as f64 * 60.0 / (FLOOR_SHARE * budget_per_minute)).ceil(),
        );
        return Err(ck.err(
            budget.span(),
            format!(
                "budget {budget_per_minute}/min cannot keep max_interval {} for {members} members: polling each once per max_interval alone takes {floor:.1}/min, more than half the budget (detail calls come on top and are never deferred)",
                format_duration(max_interval)
            ),
            format!(
                "raise budget to at least \"{need_budget}/min\", or max_interval to at least \"{}\"",
                format_duration(need_max)
            ),
        ));
    }
    if let ProviderSettings::OnlinePajak(op) = provider {
        let cap = PACER_SHARE * f64::from(op.rate_limit);
        if budget_per_minute > cap {
            return Err(ck.err(
                budget.span(),
                format!(
                    "budget {budget_per_minute}/min is over {:.0}% of this account's rate_limit {}/min",
                    PACER_SHARE * 100.0,
                    op.rate_limit
                ),
                format!("use budget = \"{}/min\" or less: the rest of the rate limit is for retries, resync walks and Retrieve bursts (the pacer stays the hard stop underneath)", cap.floor()),
            ));
        }
    }
    Ok(Polling::Adaptive(s))
}

#[cfg(test)]
mod tests {
    use super::parse_budget;

    #[test]
    fn budgets_parse_per_second_minute_and_hour() {
        for (text, want) in [
            ("600/min", Some(600.0)),
            ("10/s", Some(600.0)),
            (" 36000 / h ", Some(600.0)),
            ("0.5/s", Some(30.0)),
            ("0/min", None),
            ("-5/min", None),
            ("600", None),
            ("600/day", None),
            ("NaN/min", None),
            ("inf/min", None),
        ] {
            assert_eq!(parse_budget(text), want, "{text:?}");
        }
    }
}
