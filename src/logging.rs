//! Log output: `[daemon] log_format` picks text (human), JSON (one object per line) or the
//! journal's native protocol. Every format carries the structured fields the code records —
//! `account`, `cycle`, `member`, counts such as `events`, `requests`, `elapsed_ms` — including
//! those of the enclosing spans (a member's log lines sit in its `cycle` and `member` spans).
//!
//! `RUST_LOG` overrides the level. Nothing here formats a secret: the code never records one.

use crate::config::LogFormat;
use std::io::IsTerminal;
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
            // Event fields at the top level; the spans list (root first) carries the span
            // fields, e.g. [{"name":"cycle","account":"acme-kh","cycle":17},{"name":"member",...}].
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .with_writer(std::io::stderr)
                .with_env_filter(filter(level))
                .try_init();
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

fn text(level: &str) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter(level))
        .try_init();
}
