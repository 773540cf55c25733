//! Time helpers shared by config, providers and the envelope: human durations ("30s", "15m",
//! "1d"), provider timestamps in and out, and milliseconds since the epoch as the one compact
//! representation the store keeps.
//!
//! Everything here is pure except [`now_ms`], which reads the wall clock; the daemon asks the
//! time through it (the store's own ids and file stamps aside). The `/status` report's
//! instants go out as RFC 3339 through [`rfc3339`].

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use std::time::Duration;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// How far ahead of this host's clock a provider timestamp may be and still be trusted.
///
/// A later one is *quarantined*: it never moves a cursor (a cursor therefore never passes
/// `now + MAX_FUTURE_SKEW`), and it stands for the moment pollhook saw it wherever an instant
/// is judged (first sight against `start`, an event's `occurred_at`). Five minutes covers
/// clocks that drift without NTP; a provider clock further ahead than that, or this host's
/// clock further behind, makes fresh changes look quarantined: they are still delivered, the
/// cursor only trails (RELIABILITY.md, "Hostile provider and operator").
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// The latest provider timestamp trusted at `now` (`now + MAX_FUTURE_SKEW`).
pub fn trust_limit(now: Millis) -> Millis {
    now.saturating_add(MAX_FUTURE_SKEW.as_millis() as Millis)
}

/// The instant a provider timestamp stands for in judgments (first sight against `start`, an
/// event's `occurred_at`): itself, or `now` — when pollhook saw it — if it is quarantined.
pub fn judged(at: Millis, now: Millis) -> Millis {
    if at > trust_limit(now) {
        now
    } else {
        at
    }
}

/// Whether a provider version stamped `seen` supersedes the stored one stamped `stored`: a
/// later stamp does; a quarantined stored stamp (beyond `limit`) is superseded by any other,
/// so that one absurd stamp never freezes an item.
pub fn supersedes(seen: Millis, stored: Millis, limit: Millis) -> bool {
    if stored > limit {
        seen != stored
    } else {
        seen > stored
    }
}

/// The earliest and latest instants RFC 3339 can write (four-digit years).
const FIRST_RFC3339: Millis = -62_167_219_200_000; // 0000-01-01T00:00:00.000Z
const LAST_RFC3339: Millis = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

/// The current wall-clock time in milliseconds.
pub fn now_ms() -> Millis {
    Utc::now().timestamp_millis()
}

/// `ms` as a UTC date-time (the epoch when out of chrono's range).
pub fn utc(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Serde for an optional instant as RFC 3339 (`format_ms`) in JSON that people and scripts
/// read (`GET /status`); reads it back, and the epoch milliseconds of an older daemon too.
pub mod rfc3339 {
    use super::{format_ms, parse_timestamp, Millis};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(ms) => s.serialize_str(&format_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Millis(Millis),
        }
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Millis(ms)) => Ok(Some(ms)),
            Some(Either::Text(t)) => parse_timestamp(&t)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 instant: {t:?}"))),
        }
    }
}

/// Parses a human duration: a number followed by `ms`, `s`, `m`, `h` or `d`
/// (`"500ms"`, `"30s"`, `"15m"`, `"1d"`); a bare number means seconds.
/// Several parts may follow each other (`"1h30m"`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit.trim() {
            "ms" => Duration::from_millis(value),
            "s" | "sec" | "secs" => Duration::from_secs(value),
            "m" | "min" | "mins" => Duration::from_secs(value.checked_mul(60)?),
            "h" | "hr" | "hrs" => Duration::from_secs(value.checked_mul(3600)?),
            "d" | "day" | "days" => Duration::from_secs(value.checked_mul(86_400)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
    }
    Some(total)
}

/// Formats a duration the way [`parse_duration`] reads it (`"2m"`, `"90s"`, `"250ms"`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match s {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a provider timestamp. Accepts RFC 3339 (`2024-03-07T07:16:07.859Z`,
/// `...+07:00`) and, as some providers send them, zone-less forms (`2024-06-01T01:00:00`,
/// `2024-06-01 01:00:00.123`), which are read as UTC.
pub fn parse_timestamp(text: &str) -> Option<Millis> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Some(Utc.from_utc_datetime(&t).timestamp_millis());
        }
    }
    None
}

/// Formats milliseconds as RFC 3339 UTC with milliseconds: `2026-03-07T07:16:07.859Z`.
/// Always RFC 3339: an instant outside years 0000-9999 is written as the nearest of the two.
pub fn format_ms(ms: Millis) -> String {
    let ms = ms.clamp(FIRST_RFC3339, LAST_RFC3339);
    Utc.timestamp_millis_opt(ms)
        .single()
        .map_or_else(String::new, |t| {
            t.to_rfc3339_opts(SecondsFormat::Millis, true)
        })
}

/// Formats milliseconds as the zone-less, second-precision UTC form CamInvoice's poll
/// endpoint documents for `last_synced_at` (`2024-06-01T01:00:00`). Truncation only widens
/// the window, which the diff makes free.
pub fn format_naive_seconds(ms: Millis) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        None => "1970-01-01T00:00:00".to_string(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn status_instants_go_out_as_rfc3339_and_come_back_either_way() {
        #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
        struct T {
            #[serde(default, with = "super::rfc3339")]
            at: Option<Millis>,
        }
        let t = T {
            at: Some(1_772_867_790_002),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"at":"2026-03-07T07:16:30.002Z"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let older: T = serde_json::from_str(r#"{"at":1772867790002}"#).unwrap();
        assert_eq!(older, t);
        assert_eq!(serde_json::from_str::<T>("{}").unwrap(), T { at: None });
        assert_eq!(
            serde_json::to_string(&T { at: None }).unwrap(),
            r#"{"at":null}"#
        );
    }

    use super::*;

    #[test]
    fn durations_in_every_unit() {
        let cases = [
            ("30", Some(30_000)),
            ("500ms", Some(500)),
            ("30s", Some(30_000)),
            ("15m", Some(900_000)),
            ("1h", Some(3_600_000)),
            ("1d", Some(86_400_000)),
            ("1h30m", Some(5_400_000)),
            ("", None),
            ("m", None),
            ("5 parsecs", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).map(|d| d.as_millis() as i64);
            assert_eq!(got, want, "parse_duration({text:?})");
        }
    }

    #[test]
    fn durations_round_trip_through_format() {
        for ms in [250u64, 1000, 90_000, 120_000, 3_600_000, 86_400_000 * 7] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }
    }

    #[test]
    fn timestamps_with_and_without_zone() {
        let z = parse_timestamp("2024-03-07T07:16:07.859Z").unwrap();
        assert_eq!(format_ms(z), "2024-03-07T07:16:07.859Z");
        assert_eq!(parse_timestamp("2024-03-07T07:16:07.859"), Some(z));
        assert_eq!(parse_timestamp("2024-03-07T14:16:07.859+07:00"), Some(z));
        assert_eq!(parse_timestamp("2024-03-07 07:16:07.859"), Some(z));
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(format_naive_seconds(z), "2024-03-07T07:16:07");
    }

    #[test]
    fn every_instant_formats_as_rfc3339() {
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_ms(LAST_RFC3339), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(FIRST_RFC3339), "0000-01-01T00:00:00.000Z");
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        for ms in [i64::MAX, i64::MIN, 253_402_300_800_000, -62_167_219_200_001] {
            assert!(DateTime::parse_from_rfc3339(&format_ms(ms)).is_ok(), "{ms}");
        }
        assert_eq!(trust_limit(i64::MAX), i64::MAX);
        assert_eq!(trust_limit(0), 300_000);
    }

    #[test]
    fn a_quarantined_stamp_is_judged_as_now_and_superseded_by_any_other() {
        let now = 1_000_000_000;
        let limit = trust_limit(now);
        assert_eq!(
            judged(now + 1_000, now),
            now + 1_000,
            "within the allowance"
        );
        assert_eq!(judged(limit, now), limit);
        assert_eq!(judged(limit + 1, now), now);
        assert_eq!(judged(i64::MAX, now), now);
        // (seen, stored) -> supersedes?
        for (seen, stored, want) in [
            (5, 4, true),
            (4, 4, false),
            (3, 4, false),
            (now, i64::MAX, true),
            (i64::MAX, i64::MAX, false),
            (i64::MAX - 1, i64::MAX, true),
            (i64::MAX, now, true),
        ] {
            assert_eq!(
                supersedes(seen, stored, limit),
                want,
                "{seen} over {stored}"
            );
        }
    }
}
