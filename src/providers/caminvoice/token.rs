//! Access tokens from `POST /api/v1/auth/token`, whatever shape the answer takes.
//!
//! The rule (caminvoice.md): take `access_token` or `token`, at the top level or under `data`;
//! the expiry from the JWT `exp` claim when the token is a JWT, else from any expiry field
//! (`expire_in`, `expires_in`, `expireIn` as seconds or "15m"/"1d"; `expire_at`, `expired_at`,
//! `expires_at` as instants), else 900 s. A new refresh token, if one comes back, is kept.
//! Pure: the caller passes the clock.

use crate::config::Secret;
use crate::time::{parse_duration, Millis};
use base64::Engine;
use serde_json::Value;

/// Assumed lifetime when the answer says nothing usable (the documented 900 s).
pub const DEFAULT_LIFETIME_MS: i64 = 900_000;

/// Expiry instants a refresh answer may give, in the order they are looked for.
pub const EXPIRES_AT: [&str; 4] = ["expire_at", "expired_at", "expires_at", "expireAt"];
/// Lifetimes (seconds, or "15m") a refresh answer may give, in the order they are looked for.
pub const EXPIRES_IN: [&str; 4] = ["expire_in", "expires_in", "expireIn", "expiresIn"];

/// An access token and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: Secret,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

impl AccessToken {
    /// Whether to refresh before using it: within a tenth of its life (at most 60 s) of expiry.
    pub fn needs_refresh(&self, now: Millis) -> bool {
        let life = self.expires_at.saturating_sub(self.issued_at).max(0);
        let margin = (life / 10).min(60_000);
        now >= self.expires_at.saturating_sub(margin)
    }
}

/// A refresh answer, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub access: AccessToken,
    /// A rotated refresh token, when the provider sends one.
    pub refresh_token: Option<Secret>,
}

/// Parses a successful refresh answer. The error never contains the body (it holds tokens).
pub fn parse_refresh(body: &[u8], now: Millis) -> Result<Refreshed, String> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the token answer is not valid JSON ({e})"))?;
    let scopes: Vec<&Value> = [Some(&root), root.get("data")]
        .into_iter()
        .flatten()
        .collect();
    let pick = |keys: &[&str]| -> Option<&Value> {
        scopes
            .iter()
            .find_map(|s| keys.iter().find_map(|k| s.get(*k).filter(|v| !v.is_null())))
    };
    let token = pick(&["access_token", "token", "accessToken"])
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token answer has no access_token or token field")?;
    let expires_at = jwt_exp(token)
        .or_else(|| pick(&EXPIRES_AT).and_then(super::model::timestamp))
        .or_else(|| {
            pick(&EXPIRES_IN)
                .and_then(lifetime)
                .map(|ms| now.saturating_add(ms))
        })
        .unwrap_or(now + DEFAULT_LIFETIME_MS);
    let refresh_token = pick(&["refresh_token", "refreshToken"])
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    Ok(Refreshed {
        access: AccessToken {
            token: Secret::new(token),
            issued_at: now,
            expires_at,
        },
        refresh_token,
    })
}

/// A lifetime given as seconds (number or numeric string) or a duration string ("15m", "1d").
fn lifetime(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_f64().map(|s| (s * 1000.0) as i64),
        Value::String(s) => parse_duration(s).map(|d| d.as_millis() as i64),
        _ => None,
    }
}

/// The `exp` claim (seconds) of a JWT, in milliseconds; `None` if `token` is not a JWT.
pub fn jwt_exp(token: &str) -> Option<Millis> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    Some((exp * 1000.0) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_700_000_000_000;

    fn jwt(exp: i64) -> String {
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.{}",
            b(r#"{"alg":"HS256"}"#),
            b(&format!(r#"{{"sub":"KHUID1","exp":{exp}}}"#)),
            b("sig")
        )
    }

    #[test]
    fn every_documented_variant_gives_a_token_and_an_expiry() {
        let exp = NOW / 1000 + 600;
        let j = jwt(exp);
        // (body, expected token, expected expiry)
        let cases: Vec<(String, &str, Millis)> = vec![
            // 1. documented: expiry from the JWT, not from expire_in
            (
                format!(r#"{{"token":"{j}","token_type":"Bearer","expire_in":900}}"#),
                j.as_str(),
                exp * 1000,
            ),
            // 2. official sample, wrapped in data
            (
                format!(
                    r#"{{"data":{{"access_token":"{j}","expire_at":"2030-01-01T00:00:00Z"}}}}"#
                ),
                j.as_str(),
                exp * 1000,
            ),
            // 2b. opaque token under data: expire_at
            (
                r#"{"data":{"access_token":"opaque","expire_at":"2023-11-14T22:28:20Z"}}"#.into(),
                "opaque",
                1_700_000_900_000,
            ),
            // 3. third-party fixture: expireIn "15m"
            (
                r#"{"access_token":"opaque","expireIn":"15m"}"#.into(),
                "opaque",
                NOW + 900_000,
            ),
            // 4. expires_in as "1d"
            (
                r#"{"access_token":"opaque","expires_in":"1d"}"#.into(),
                "opaque",
                NOW + 86_400_000,
            ),
            // numeric string seconds
            (
                r#"{"token":"opaque","expire_in":"300"}"#.into(),
                "opaque",
                NOW + 300_000,
            ),
            // nothing usable: 900 s
            (
                r#"{"token":"opaque","expire_in":"soon"}"#.into(),
                "opaque",
                NOW + DEFAULT_LIFETIME_MS,
            ),
        ];
        for (body, token, expires) in cases {
            let r = parse_refresh(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(r.access.token.expose(), token, "{body}");
            assert_eq!(r.access.expires_at, expires, "{body}");
            assert_eq!(r.refresh_token, None);
        }
    }

    #[test]
    fn a_rotated_refresh_token_is_kept() {
        let r = parse_refresh(br#"{"access_token":"a","refresh_token":"r2"}"#, NOW).unwrap();
        assert_eq!(r.refresh_token.unwrap().expose(), "r2");
    }

    #[test]
    fn bad_answers_are_errors_without_the_body() {
        let e = parse_refresh(br#"{"message":"secret-ish"}"#, NOW).unwrap_err();
        assert!(
            e.contains("no access_token") && !e.contains("secret-ish"),
            "{e}"
        );
        assert!(parse_refresh(b"{\"token\":", NOW).is_err());
        assert!(parse_refresh(br#"{"token":""}"#, NOW).is_err());
    }

    #[test]
    fn refresh_ahead_of_expiry() {
        let t = AccessToken {
            token: Secret::new("x"),
            issued_at: NOW,
            expires_at: NOW + 900_000,
        };
        assert!(!t.needs_refresh(NOW + 839_999));
        assert!(t.needs_refresh(NOW + 840_000));
        let short = AccessToken {
            token: Secret::new("x"),
            issued_at: NOW,
            expires_at: NOW + 2_000,
        };
        assert!(!short.needs_refresh(NOW + 1_700));
        assert!(short.needs_refresh(NOW + 1_800));
        assert_eq!(jwt_exp("not-a-jwt"), None);
        let absurd = AccessToken {
            token: Secret::new("x"),
            issued_at: NOW,
            expires_at: i64::MIN,
        };
        assert!(
            absurd.needs_refresh(NOW),
            "an expiry in the far past means refresh, not a panic"
        );
        assert_eq!(jwt_exp("a.b.c.d"), None);
    }
}
