//! Log output: `[daemon] log_format` picks text (human), JSON (one object per line) or the
//! journal's native protocol. Every format carries the structured fields the code records —
//! `account`, `cycle`, `member`, counts such as `events`, `requests`, `elapsed_ms` — including
//! those of the enclosing spans (a member's log lines sit in its `cycle` and `member` spans).
//!
//! Two defences against what a provider sends, for the formats that write lines to stderr:
//! - every line goes through [`crate::redact`] before it is written: a secret a provider
//!   echoes (or any registered secret, in any field) is masked whatever code logged it;
//! - text logs escape control characters in every field value and message ([`escape`]): a
//!   document id holding `\n` or ESC cannot forge a log line or drive the terminal. JSON
//!   escapes them by itself; the journal keeps each entry's fields apart.
//!
//! The journal path cannot be rewritten after formatting; there, redaction relies on the error
//! text being [`Redacted`](crate::redact::Redacted) where it is built. `RUST_LOG` overrides the
//! level.

use crate::config::LogFormat;
use std::io::{IsTerminal, Write};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The prefix of pollhook's own journal fields: `POLLHOOK_ACCOUNT=acme-kh`, `POLLHOOK_CYCLE=17`.
pub const JOURNAL_FIELD_PREFIX: &str = "POLLHOOK";

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,pollhook={level}")))
}

/// Installs the global subscriber (a second call does nothing: tests and the demo may call it
/// more than once in one process).
pub fn init(format: LogFormat, level: &str) {
    match format {
        LogFormat::Text => text(level),
        LogFormat::Json => {
            let _ = json(filter(level), std::io::stderr).try_init();
        }
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(Some(JOURNAL_FIELD_PREFIX.into()))
                    .with_syslog_identifier("pollhook".into());
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(layer)
                    .try_init();
            }
            Err(e) => {
                text(level);
                tracing::warn!(
                    "log_format = \"journald\" but the journal socket cannot be opened ({e}); logging text to stderr"
                );
            }
        },
    }
}

/// Text on stderr, in colour only when stderr is a terminal.
fn text(level: &str) {
    let _ = text_to(
        filter(level),
        std::io::stderr,
        std::io::stderr().is_terminal(),
    )
    .try_init();
}

/// The text format (the one definition: `init` and the tests use it): escaped field values
/// ([`escaping_fields`]), every line masked ([`RedactingWriter`]) on its way to `out()`.
fn text_to<W: Write + 'static>(
    filter: EnvFilter,
    out: impl Fn() -> W + Send + Sync + 'static,
    ansi: bool,
) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .fmt_fields(escaping_fields())
        .with_writer(move || RedactingWriter(out()))
        .with_ansi(ansi)
        .with_env_filter(filter)
        .finish()
}

/// The JSON format (the one definition): event fields at the top level; the spans list (root
/// first) carries the span fields, e.g. `[{"name":"cycle","account":"acme-kh","cycle":17},
/// {"name":"member",...}]`; every line masked on its way to `out()`.
fn json<W: Write + 'static>(
    filter: EnvFilter,
    out: impl Fn() -> W + Send + Sync + 'static,
) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(true)
        .with_writer(move || RedactingWriter(out()))
        .with_env_filter(filter)
        .finish()
}

/// The text format's field formatter: the default layout (`message`, then `name=value`
/// separated by spaces) with every value's control characters escaped.
pub fn escaping_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(
        |w: &mut Writer<'_>, field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
            let raw = format!("{value:?}");
            let value = escape(&raw);
            match field.name() {
                "message" => w.write_str(&value),
                name => write!(w, "{}={value}", name.trim_start_matches("r#")),
            }
        },
    )
    .delimited(" ")
}

/// `s` with control characters, line and paragraph separators and bidirectional overrides
/// written as escapes (`\n`, `\r`, `\t`, `\u{1b}`): what is left prints as one line and moves
/// no cursor.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Writes each formatted log line (one `write` per line, as tracing-subscriber's formatters
/// do) with every registered secret masked.
pub struct RedactingWriter<W: Write>(pub W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&crate::redact::bytes(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// For unit tests: what a subscriber from [`LogBuf::subscriber`] wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl LogBuf {
    /// The text format as `init` builds it (no colour), at `filter`, writing here. Install it
    /// with `tracing::subscriber::set_default` (a current-thread runtime keeps every task of
    /// the test on the thread it covers).
    pub(crate) fn subscriber(&self, filter: &str) -> impl tracing::Subscriber + Send + Sync {
        let out = self.clone();
        text_to(EnvFilter::new(filter), move || out.clone(), false)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[cfg(test)]
impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text format as `init` builds it, writing into a buffer.
    fn text_logs(f: impl FnOnce()) -> String {
        let buf = LogBuf::default();
        tracing::subscriber::with_default(buf.subscriber("trace"), f);
        buf.text()
    }

    #[test]
    fn a_provider_string_with_newlines_and_escapes_stays_on_one_escaped_line() {
        let id = "doc-1\n2026-01-01T00:00:00Z ERROR forged line\u{1b}[2J\r";
        let logs = text_logs(|| {
            let span = tracing::info_span!("member", member = %"KH\nUID");
            let _e = span.enter();
            tracing::warn!(document = %id, "skipped {id}");
            tracing::info!(document = id, "as a str field");
        });
        assert_eq!(logs.lines().count(), 2, "{logs}");
        assert!(!logs.contains('\u{1b}') && !logs.contains('\r'), "{logs:?}");
        assert!(
            logs.contains(r"skipped doc-1\n2026-01-01T00:00:00Z ERROR forged line\u{1b}[2J\r"),
            "{logs}"
        );
        assert!(logs.contains(r"member{member=KH\nUID}"), "{logs}");
    }

    #[test]
    fn a_registered_secret_is_masked_in_every_field_and_in_json() {
        let _s = crate::config::Secret::new("echoed-refresh-token-4242");
        let logs = text_logs(|| {
            tracing::error!(
                body = "{\"message\":\"bad echoed-refresh-token-4242\"}",
                "401: echoed-refresh-token-4242"
            );
        });
        assert!(!logs.contains("echoed-refresh-token-4242"), "{logs}");
        assert_eq!(logs.matches("<redacted>").count(), 2, "{logs}");

        let buf = LogBuf::default();
        let out = buf.clone();
        let subscriber = json(EnvFilter::new("trace"), move || out.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(error = %"x echoed-refresh-token-4242\n", "failed");
        });
        let json = buf.text();
        assert!(!json.contains("echoed-refresh-token-4242"), "{json}");
        assert_eq!(json.lines().count(), 1, "{json}");
    }
}
