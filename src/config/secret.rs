//! Secrets: where they come from, and the one type that holds their value.
//!
//! A secret in the config is inline (`"..."`), `{ env = "NAME" }`, `{ file = "/path" }` or
//! `{ credential = "name" }` (systemd `LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`).
//! [`SecretSource`] is what the config says — safe to print, it names the source, never the
//! value. [`Secret`] is the resolved value; its `Debug` prints `<redacted>` and it has no
//! `Display`, so a secret cannot reach a log line or `check-config` output by accident. Every
//! `Secret` registers its value with [`crate::redact`] when it is created, so the value is
//! masked out of any text — a provider's answer that echoes it included — while it is held.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a secret's value comes from, as written in the config.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    Env(String),
    File(PathBuf),
    Credential(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A resolved secret value. Cloning is cheap; printing is impossible; while any clone is alive
/// the value is masked by [`crate::redact`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Secret {
    /// Wraps a value (configured, or obtained at run time such as an access token) and
    /// registers it for redaction.
    pub fn new(value: impl Into<String>) -> Secret {
        let value: Arc<str> = Arc::from(value.into());
        crate::redact::register(&value);
        Secret(value)
    }
    /// The value, for the one place that must send it (an HTTP header or body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Why a secret could not be read. Names the source, never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (or is empty); export it to the daemon, e.g. with systemd's Environment= or EnvironmentFile=")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}; check the path and that the pollhook user may read it")]
    FileUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
    #[error("systemd credential {0:?} requested but $CREDENTIALS_DIRECTORY is not set; add LoadCredential={0}:/path to the unit, or use {{ file = \"/path\" }} when not running under systemd")]
    NoCredentialsDirectory(String),
}

impl SecretSource {
    /// A printable description of the source: never the value.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Inline(_) => "<redacted: inline>".to_string(),
            SecretSource::Env(name) => format!("<redacted: from env {name}>"),
            SecretSource::File(p) => format!("<redacted: from file {}>", p.display()),
            SecretSource::Credential(n) => format!("<redacted: systemd credential {n}>"),
        }
    }

    /// Reads the value. Trailing newlines of files are dropped (editors add them).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Inline(v) => Ok(Secret::new(v.clone())),
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
                _ => Err(SecretError::EnvMissing(name.clone())),
            },
            SecretSource::File(path) => read_file(path.clone()),
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                read_file(PathBuf::from(dir).join(name))
            }
        }
    }

    /// Whether the value is written in the config file itself.
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretSource::Inline(_))
    }
}

fn read_file(path: PathBuf) -> Result<Secret, SecretError> {
    let text = std::fs::read_to_string(&path).map_err(|source| SecretError::FileUnreadable {
        path: path.clone(),
        source,
    })?;
    let value = text.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(SecretError::FileEmpty(path));
    }
    Ok(Secret::new(value))
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SourceVisitor)
    }
}

struct SourceVisitor;

const FORMS: &[&str] = &["env", "file", "credential"];

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = SecretSource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a secret: a string, { env = \"NAME\" }, { file = \"/path\" } or { credential = \"name\" }",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretSource, E> {
        if v.is_empty() {
            return Err(E::custom("a secret cannot be empty"));
        }
        Ok(SecretSource::Inline(v.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
        let mut found: Option<SecretSource> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value: String = map.next_value()?;
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes exactly one of env, file or credential",
                ));
            }
            if value.is_empty() {
                return Err(de::Error::custom(format!("`{key}` cannot be empty")));
            }
            found = Some(match key.as_str() {
                "env" => SecretSource::Env(value),
                "file" => SecretSource::File(PathBuf::from(value)),
                "credential" => SecretSource::Credential(value),
                other => return Err(de::Error::unknown_field(other, FORMS)),
            });
        }
        found
            .ok_or_else(|| de::Error::custom("a secret table needs one of env, file or credential"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        s: SecretSource,
    }

    fn parse(text: &str) -> Result<SecretSource, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.s)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn every_form_parses() {
        assert_eq!(
            parse(r#"s = "abc""#),
            Ok(SecretSource::Inline("abc".into()))
        );
        assert_eq!(
            parse(r#"s = { env = "X" }"#),
            Ok(SecretSource::Env("X".into()))
        );
        assert_eq!(
            parse(r#"s = { file = "/p" }"#),
            Ok(SecretSource::File("/p".into()))
        );
        assert_eq!(
            parse(r#"s = { credential = "c" }"#),
            Ok(SecretSource::Credential("c".into()))
        );
    }

    #[test]
    fn wrong_forms_say_what_is_allowed() {
        let e = parse(r#"s = { envv = "X" }"#).unwrap_err();
        assert!(e.contains("envv") && e.contains("credential"), "{e}");
        let e = parse(r#"s = { env = "X", file = "/p" }"#).unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        assert!(parse(r#"s = 5"#).unwrap_err().contains("a secret"));
        assert!(parse(r#"s = """#).is_err());
    }

    #[test]
    fn values_never_print() {
        let s = SecretSource::Inline("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
        let v = s.resolve().unwrap();
        assert!(!format!("{v:?}").contains("hunter2"));
        assert_eq!(v.expose(), "hunter2");
    }

    #[test]
    fn files_and_env_resolve_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "tok\n").unwrap();
        assert_eq!(
            SecretSource::File(p.clone()).resolve().unwrap().expose(),
            "tok"
        );
        let e = SecretSource::File(dir.path().join("missing"))
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("cannot read secret file"));
        let e = SecretSource::Env("POLLHOOK_TEST_SURELY_UNSET".into())
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("POLLHOOK_TEST_SURELY_UNSET"));
    }
}
