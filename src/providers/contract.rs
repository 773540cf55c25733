//! The fields pollhook reads from a provider's answers, and how much of them an answer had.
//!
//! A provider describes each field it reads as a [`Field`] (its name — for OnlinePajak the
//! name after `[accounts.api]` —, the override key, what values it understands, whether an item
//! is usable without it). Its parser counts, per answer, how many items carried each field
//! where it is expected ([`Presence`]): the same reading that decides what the daemon does with
//! the items, so `pollhook probe` and the daemon's warnings judge an answer the way the diff will
//! see it.
//!
//! [`DriftWatch`] is the daemon's side: a field missing from every item of an answer, or one
//! whose values are all outside the known set, is contract drift, not a bad item. It is logged
//! once per account and field an hour, counted in `/metrics`
//! (`pollhook_contract_drift_total`), and kept in the unit's record ([`DriftMarks`]) with the
//! instant it began, so `status` shows it ([`status_lines`]) until an answer carries the field
//! again.

use crate::metrics::AccountMetrics;
use crate::providers::wire::Node;
use crate::time::{format_ms, now_ms, Millis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the same drifted field of one account is logged at most.
pub const WARN_EVERY: Duration = Duration::from_secs(3600);

/// What kind of value a field holds (for the census: which unread key could be it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// An identifier: a string (or number); shown shortened.
    Id,
    /// A timestamp: RFC 3339, zone-less UTC, or epoch seconds/milliseconds.
    Timestamp,
    /// Free text (names, messages, links, emails); shown by its form only.
    Text,
    /// A number, or a string of one.
    Number,
    /// One of a known set of values (other values are carried through as given).
    Choice {
        known: Vec<String>,
        /// Whether the parser compares without case (`SEND` = `send`).
        fold_case: bool,
    },
}

impl Class {
    /// Whether `value` is one of a choice's known values (any value for other classes).
    pub fn knows(&self, value: &str) -> bool {
        match self {
            Class::Choice { known, fold_case } => known
                .iter()
                .any(|k| k == value || (*fold_case && k.eq_ignore_ascii_case(value))),
            _ => true,
        }
    }
}

/// Whether an item is usable without the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// Without it the item cannot be processed (skipped, or fetched again).
    Required,
    /// Without it the item is processed, but a rule or a payload value degrades.
    Useful,
}

/// One field pollhook reads from the items of one answer.
#[derive(Debug, Clone)]
pub struct Field {
    /// The key read (OnlinePajak: after `[accounts.api]`).
    pub name: String,
    /// The `[accounts.api]` key that renames it; `None` where the name is documented (fixed).
    pub setting: Option<&'static str>,
    pub class: Class,
    pub need: Need,
    /// What pollhook does with it, for the report: "decides the event".
    pub role: &'static str,
}

impl Field {
    pub fn new(name: &str, class: Class, need: Need, role: &'static str) -> Field {
        Field {
            name: name.to_string(),
            setting: None,
            class,
            need,
            role,
        }
    }

    /// The `[accounts.api]` key that renames it.
    pub fn setting(mut self, key: &'static str) -> Field {
        self.setting = Some(key);
        self
    }
}

/// How many items of one answer carried each field where it was expected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// The items, plural: "invoices", "poll items".
    pub what: &'static str,
    pub fields: Vec<Seen>,
}

/// One field in one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    /// Items where the field was expected (some fields only are under conditions, e.g. an
    /// approval date on answered invoices).
    pub expected: u64,
    /// Of those, the items that carried it with a value other than null.
    pub carried: u64,
    /// Of those, the items whose value is outside the known set (choices only).
    pub unknown: u64,
}

impl Seen {
    /// Expected, and in no item.
    pub fn missing(&self) -> bool {
        self.expected > 0 && self.carried == 0
    }

    /// Carried, and every value outside the known set.
    pub fn all_unknown(&self) -> bool {
        self.carried > 0 && self.unknown == self.carried
    }
}

impl Presence {
    /// Counts for `fields` (in this order; [`Presence::note`] takes the index).
    pub fn new(what: &'static str, fields: &[Field]) -> Presence {
        Presence {
            what,
            fields: fields
                .iter()
                .map(|f| Seen {
                    name: f.name.clone(),
                    ..Seen::default()
                })
                .collect(),
        }
    }

    /// Field `i` of one item, as read: counted as carried unless absent or null; a choice's
    /// value outside the set is counted as unknown.
    pub fn note(&mut self, i: usize, node: &Node, expected: bool, class: &Class) {
        let Some(s) = self.fields.get_mut(i) else {
            return;
        };
        if !expected {
            return;
        }
        s.expected += 1;
        if matches!(node, Node::Absent | Node::Null) {
            return;
        }
        s.carried += 1;
        if let Class::Choice { .. } = class {
            let text = node.text_or_empty();
            if !class.knows(&text) {
                s.unknown += 1;
            }
        }
    }

    /// Adds another answer's counts (the same fields).
    pub fn merge(&mut self, o: &Presence) {
        for (s, t) in self.fields.iter_mut().zip(&o.fields) {
            s.expected += t.expected;
            s.carried += t.carried;
            s.unknown += t.unknown;
        }
    }

    pub fn get(&self, name: &str) -> Option<&Seen> {
        self.fields.iter().find(|s| s.name == name)
    }

    /// Whether a field this answer expected is missing from all its items, or carried only
    /// with unknown values.
    pub fn drifted(&self) -> bool {
        self.fields.iter().any(|s| s.missing() || s.all_unknown())
    }
}

/// A field of a unit's answers that drifted, kept in its record until an answer carries it
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftMark {
    /// When it was first seen drifted.
    pub since: Millis,
    /// The items it was missing from: "invoices", "poll items".
    pub what: String,
    /// `true`: carried, but every value outside the known set; `false`: missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub values: bool,
}

/// Drifted fields by name, as a unit's record keeps them.
pub type DriftMarks = BTreeMap<String, DriftMark>;

/// One line per drifted field, for `status`: "OnlinePajak `approvalStatus` missing from 100%
/// of invoices since …: run `pollhook probe`".
pub fn status_lines(provider: &str, marks: &DriftMarks) -> Vec<String> {
    marks
        .iter()
        .map(|(name, m)| {
            let what = if m.values {
                format!("values outside the known set in 100% of {}", m.what)
            } else {
                format!("missing from 100% of {}", m.what)
            };
            format!(
                "{provider} `{name}` {what} since {}: run `pollhook probe`",
                format_ms(m.since)
            )
        })
        .collect()
}

/// The daemon's side of drift for one account: one warning per field an hour, a counter per
/// answer, the marks in the unit's record.
pub struct DriftWatch {
    /// "OnlinePajak", "CamInvoice".
    provider: &'static str,
    account: String,
    metrics: Arc<AccountMetrics>,
    warned: Mutex<HashMap<String, Instant>>,
}

impl DriftWatch {
    pub fn new(provider: &'static str, account: &str, metrics: Arc<AccountMetrics>) -> DriftWatch {
        DriftWatch {
            provider,
            account: account.to_string(),
            metrics,
            warned: Mutex::new(HashMap::new()),
        }
    }

    /// Takes in one answer's presence: marks (and counts) the fields it found drifted, clears
    /// the marks of fields it carried, and logs a drifted field unless this account logged it
    /// within [`WARN_EVERY`]. `advice(name)` says what to check (the override key). Returns
    /// whether some field drifted in this answer.
    pub fn observe(
        &self,
        presence: &Presence,
        marks: &mut DriftMarks,
        advice: impl Fn(&str) -> String,
    ) -> bool {
        self.observe_at(presence, marks, advice, now_ms(), Instant::now())
    }

    fn observe_at(
        &self,
        presence: &Presence,
        marks: &mut DriftMarks,
        advice: impl Fn(&str) -> String,
        now: Millis,
        mono: Instant,
    ) -> bool {
        // A mark of a name no longer read (`[accounts.api]` renamed it since) is stale.
        marks.retain(|name, _| presence.fields.iter().any(|s| s.name == *name));
        let mut any = false;
        for s in &presence.fields {
            let values = if s.missing() {
                false
            } else if s.all_unknown() {
                true
            } else {
                if s.carried > 0 {
                    marks.remove(&s.name);
                }
                continue;
            };
            any = true;
            self.metrics.drift(&s.name);
            let mark = marks.entry(s.name.clone()).or_insert_with(|| DriftMark {
                since: now,
                what: presence.what.to_string(),
                values,
            });
            mark.values = values;
            let mut warned = crate::locks::lock(&self.warned);
            if warned
                .get(&s.name)
                .is_some_and(|t| mono.saturating_duration_since(*t) < WARN_EVERY)
            {
                continue;
            }
            warned.insert(s.name.clone(), mono);
            let what = if values {
                format!(
                    "has values outside the known set in all {} {} of an answer",
                    s.carried, presence.what
                )
            } else {
                format!(
                    "is missing from all {} {} of an answer",
                    s.expected, presence.what
                )
            };
            tracing::warn!(account = %self.account,
                "{} `{}` {what} (since {}): {}; run `pollhook probe --account {}` (logged once an hour while it lasts; counted in pollhook_contract_drift_total)",
                self.provider, s.name, format_ms(mark.since), advice(&s.name), self.account);
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(expected: u64, carried: u64, unknown: u64) -> Presence {
        Presence {
            what: "invoices",
            fields: vec![Seen {
                name: "approvalStatus".into(),
                expected,
                carried,
                unknown,
            }],
        }
    }

    #[test]
    fn a_missing_field_warns_once_an_hour_is_counted_per_answer_and_cleared_when_back() {
        let metrics = Arc::new(AccountMetrics::new(
            "op",
            "onlinepajak",
            Duration::from_secs(1),
            Duration::from_secs(1),
        ));
        let watch = DriftWatch::new("OnlinePajak", "op", Arc::clone(&metrics));
        let mut marks = DriftMarks::new();
        let t0 = Instant::now();
        let advice = |_: &str| "check api.approval_status".to_string();
        assert!(watch.observe_at(&presence(12, 0, 0), &mut marks, advice, 1_000, t0));
        assert!(watch.observe_at(
            &presence(3, 0, 0),
            &mut marks,
            advice,
            2_000,
            t0 + Duration::from_secs(60)
        ));
        assert_eq!(marks["approvalStatus"].since, 1_000, "since the first");
        assert_eq!(watch.warned.lock().unwrap()["approvalStatus"], t0);
        watch.observe_at(
            &presence(3, 0, 0),
            &mut marks,
            advice,
            3_000,
            t0 + WARN_EVERY,
        );
        assert_eq!(
            watch.warned.lock().unwrap()["approvalStatus"],
            t0 + WARN_EVERY,
            "an hour later: again"
        );
        assert_eq!(metrics.snapshot().drift["approvalStatus"], 3);
        let lines = status_lines("OnlinePajak", &marks);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("OnlinePajak `approvalStatus` missing from 100% of invoices since 1970-01-01T00:00:01"), "{}", lines[0]);
        assert!(lines[0].ends_with("run `pollhook probe`"));
        // No item expected it: no news either way.
        assert!(!watch.observe_at(&presence(0, 0, 0), &mut marks, advice, 4_000, t0));
        assert!(marks.contains_key("approvalStatus"));
        // Carried again (even by some items): cleared.
        assert!(!watch.observe_at(&presence(5, 2, 0), &mut marks, advice, 5_000, t0));
        assert!(marks.is_empty());
        // Values all outside the set: drift of another kind.
        assert!(watch.observe_at(&presence(5, 5, 5), &mut marks, advice, 6_000, t0));
        assert!(marks["approvalStatus"].values);
        assert!(status_lines("OnlinePajak", &marks)[0]
            .contains("values outside the known set in 100% of invoices"));
        assert!(!watch.observe_at(&presence(5, 5, 4), &mut marks, advice, 7_000, t0));
        assert!(marks.is_empty(), "one known value: not drift");
        // A mark of a field the map no longer reads goes with the next answer.
        watch.observe_at(&presence(5, 0, 0), &mut marks, advice, 8_000, t0);
        let mut renamed = presence(5, 5, 0);
        renamed.fields[0].name = "status".into();
        watch.observe_at(&renamed, &mut marks, advice, 9_000, t0);
        assert!(marks.is_empty());
    }

    #[test]
    fn presence_counts_what_the_parser_read() {
        let class = Class::Choice {
            known: vec!["SEND".into(), "RECEIVE".into()],
            fold_case: true,
        };
        let fields = [Field::new("type", class.clone(), Need::Useful, "side")];
        let mut p = Presence::new("poll items", &fields);
        p.note(0, &Node::Str("send".into()), true, &class);
        p.note(0, &Node::Str("OTHER".into()), true, &class);
        p.note(0, &Node::Null, true, &class);
        p.note(0, &Node::Absent, true, &class);
        p.note(0, &Node::Absent, false, &class);
        assert_eq!(
            p.fields[0],
            Seen {
                name: "type".into(),
                expected: 4,
                carried: 2,
                unknown: 1
            }
        );
        let mut q = p.clone();
        q.merge(&p);
        assert_eq!(q.fields[0].expected, 8);
        assert!(!p.drifted());
        assert!(!Class::Choice {
            known: vec!["A".into()],
            fold_case: false
        }
        .knows("a"));
    }
}
