//! Reading provider answers: JSON with a diagnosis when it is not JSON (HTML from a proxy, a
//! truncated body), timestamps in the forms providers use, and URL path segments. Shared by
//! every provider; pure.

use crate::time::{parse_timestamp, Millis};
use serde_json::Value;

/// An answer that does not have the documented shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Parses a body as JSON, with an error that says where it broke.
pub fn json(body: &[u8]) -> Result<Value, Malformed> {
    serde_json::from_slice(body).map_err(|e| {
        let hint = if body.trim_ascii_start().starts_with(b"<") {
            " (looks like an HTML page: a proxy or gateway answered instead of the API)"
        } else if e.is_eof() {
            " (the body is truncated)"
        } else {
            ""
        };
        Malformed(format!("the answer is not valid JSON: {e}{hint}"))
    })
}

/// A timestamp from a string (RFC 3339 or zone-less UTC) or a number (epoch s or ms).
pub fn timestamp(v: &Value) -> Option<Millis> {
    match v {
        Value::String(s) => parse_timestamp(s),
        Value::Number(n) => {
            let n = n.as_i64()?;
            if n > 100_000_000_000 {
                Some(n)
            } else {
                n.checked_mul(1000)
            }
        }
        _ => None,
    }
}

/// Percent-encodes a URL path segment (ids are uuids; anything else is escaped).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_everything_but_unreserved() {
        assert_eq!(segment("df5dcf78-e78b"), "df5dcf78-e78b");
        assert_eq!(segment("a/b c?"), "a%2Fb%20c%3F");
    }

    #[test]
    fn timestamps_from_strings_and_numbers() {
        assert_eq!(
            timestamp(&Value::from("2024-03-07T07:16:07.859Z")),
            Some(1_709_795_767_859)
        );
        assert_eq!(
            timestamp(&Value::from(1_709_795_767)),
            Some(1_709_795_767_000)
        );
        assert_eq!(
            timestamp(&Value::from(1_709_795_767_859i64)),
            Some(1_709_795_767_859)
        );
        assert_eq!(timestamp(&Value::Null), None);
        assert_eq!(
            timestamp(&Value::from(i64::MIN)),
            None,
            "found by tests/parsers.rs: overflowed"
        );
    }
}
