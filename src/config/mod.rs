//! Configuration: the TOML schema, its validation, and secret references.
//!
//! Built in two stages, as ripgrep builds its flags: [`Config::parse`] reads and validates the
//! TOML with no I/O beyond reading the file (unknown keys are errors; every error names file,
//! line, column and the fix); secrets stay [`SecretRef`]s until a client resolves them
//! ([`Config::resolve_secrets`] checks them all, for `check-config`).
//!
//! Provider-specific keys live flat in `[[accounts]]` (so serde keeps exact spans for every
//! error); each provider's builder names the keys it takes (an allow-list, as each sink kind
//! has), and any other provider's key is a located error: a new provider edits no other
//! provider's list.

mod api;
mod error;
pub mod secret;
mod sinks;
pub mod subject;

pub use api::ApiOverrides;
pub use error::ConfigError;
pub use secret::{Secret, SecretError, SecretSource};
pub use sinks::{
    nats_delivery_defaults, whsec_key, Body, Delivery, DeliveryOrder, Filter, HookSettings,
    HookStdin, JsonlSettings, NatsAuth, NatsSettings, Sink, SinkKind, WebhookSettings,
};

use crate::time::{format_duration, parse_duration, Millis};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub daemon: Daemon,
    pub accounts: Vec<Account>,
    pub sinks: Vec<Sink>,
    /// What is valid but probably not meant (`http://` to another host, a member in two
    /// accounts), located like errors. `check-config`, `run` and `once` print them, with
    /// [`Config::file_warnings`].
    pub warnings: Vec<ConfigError>,
}

/// `[daemon]`.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub schedule: Schedule,
    pub resync_schedule: Option<Schedule>,
    pub start: Start,
    pub log_level: String,
    /// How long events acked by every sink stay in the outbox (for `events replay`).
    pub retention: Duration,
    /// How logs are written (`log_format`).
    pub log_format: LogFormat,
    /// The admin HTTP endpoint (`/healthz`, `/metrics`, `/status`), off when `None`.
    pub admin_listen: Option<std::net::SocketAddr>,
    /// `/healthz` fails once this many scheduled runs passed without a successful cycle.
    pub healthz_periods: u32,
    /// Which members this daemon polls (`shard = "K/N"`; all when unset).
    pub shard: crate::shard::Shard,
}

/// `log_format`: `text` (default), `json` (one object per line) or `journald` (native fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
    Journald,
}

impl LogFormat {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        }
    }
}

/// A validated cron expression with seconds, evaluated in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule(pub String);

impl Schedule {
    fn parser() -> croner::parser::CronParser {
        croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .dom_and_dow(true)
            .build()
    }

    /// Validates `expr` the way the scheduler will read it, and that it ever fires (a date
    /// no calendar has, such as the 31st of February, is refused).
    pub fn new(expr: &str) -> Result<Schedule, String> {
        let cron = Self::parser().parse(expr).map_err(|e| e.to_string())?;
        cron.find_next_occurrence(&crate::time::utc(crate::time::now_ms()), false)
            .map_err(|_| "it never fires: no future date matches it".to_string())?;
        Ok(Schedule(expr.to_string()))
    }

    /// The next run strictly after `after`, in UTC: a whole second, as the scheduler fires.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        use chrono::SubsecRound;
        Self::parser()
            .parse(&self.0)
            .ok()?
            .find_next_occurrence(&after.trunc_subsecs(0), false)
            .ok()
    }
}

/// `start`: where event history begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Record a silent baseline at first start; emit only changes after it.
    Now,
    /// Back-fill changes from this instant on.
    At(Millis),
}

/// One `[[accounts]]` entry.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub http: HttpSettings,
    pub provider: ProviderSettings,
}

/// How an account's HTTP client behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries after the first attempt on 5xx, 429, timeouts and connection errors.
    pub max_retries: u32,
    /// First backoff step; doubles per retry, capped at 30 s; each wait with equal jitter
    /// (between half the step and the step: `backoff`).
    pub retry_base: Duration,
    /// The longest `Retry-After` honoured; longer values are capped (and logged).
    pub retry_after_cap: Duration,
    /// Members (or pages) fetched at once.
    pub concurrency: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(30),
            max_retries: 4,
            retry_base: Duration::from_millis(500),
            retry_after_cap: Duration::from_secs(120),
            concurrency: 4,
        }
    }
}

impl HttpSettings {
    /// The defaults for a provider: OnlinePajak's limit is per minute and its 429 carries no
    /// Retry-After, so its retries start at 5 s (5, 10, 20, 30 s).
    pub fn for_provider(provider: &str) -> HttpSettings {
        match provider {
            "onlinepajak" => HttpSettings {
                retry_base: Duration::from_secs(5),
                ..HttpSettings::default()
            },
            _ => HttpSettings::default(),
        }
    }
}

/// The provider-specific part of an account.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    CamInvoice(CamInvoiceSettings),
    /// Boxed: the API mapping table makes it several times larger than the other variant.
    OnlinePajak(Box<OnlinePajakSettings>),
}

impl ProviderSettings {
    /// The provider's name as written in the config and in envelopes.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSettings::CamInvoice(_) => "caminvoice",
            ProviderSettings::OnlinePajak(_) => "onlinepajak",
        }
    }
}

/// OnlinePajak account keys: one company (NPWP) and its token.
#[derive(Debug, Clone)]
pub struct OnlinePajakSettings {
    pub base_url: String,
    /// The company, exactly as given (15-digit dotted, 16-digit, or 22-digit NITKU forms).
    pub npwp: String,
    pub token: SecretRef,
    /// `auth_scheme = "raw"`: the bare token instead of `Bearer <token>`.
    pub raw_auth: bool,
    /// Requests a minute this account may send (the provider allows 100).
    pub rate_limit: u32,
    /// Requests that may go at once before pacing starts.
    pub rate_burst: u32,
    pub page_size: u32,
    pub overlap: Duration,
    /// `[accounts.api]`: overrides of the assumed paths and field names (the provider applies
    /// them to its table of assumptions).
    pub api: ApiOverrides,
}

/// A secret as configured, with where it was configured (for error messages).
#[derive(Debug, Clone)]
pub struct SecretRef {
    pub source: SecretSource,
    /// `file:line:col (key)`.
    pub origin: String,
}

impl SecretRef {
    /// Reads the secret; the error names the config location and the source, not the value.
    pub fn resolve(&self) -> Result<Secret, ResolveError> {
        self.source.resolve().map_err(|source| ResolveError {
            origin: self.origin.clone(),
            source,
        })
    }
}

/// A configured secret that cannot be read: where the config names it, and why.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {source}")]
pub struct ResolveError {
    /// `file:line:col (key)`.
    pub origin: String,
    pub source: SecretError,
}

/// CamInvoice account keys.
#[derive(Debug, Clone)]
pub struct CamInvoiceSettings {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub members: Vec<Member>,
    /// How far before the cursor each poll reaches back.
    pub overlap: Duration,
    /// Page size of the list endpoint (resyncs).
    pub page_size: u32,
    /// The list endpoint's value for the sent side: `send` (reference) or `sent` (sample).
    pub list_send_type: String,
    /// Consecutive refused refreshes that make a member revoked.
    pub revoke_after_refusals: u32,
}

/// `[[accounts.members]]`: one connected business.
#[derive(Debug, Clone)]
pub struct Member {
    pub endpoint_id: String,
    pub refresh_token: SecretRef,
}

// ---------------------------------------------------------------- stage 1: the TOML shape

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    daemon: Option<RawDaemon>,
    #[serde(default)]
    accounts: Vec<Spanned<RawAccount>>,
    #[serde(default)]
    sinks: Vec<Spanned<sinks::RawSink>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<Spanned<String>>,
    schedule: Option<Spanned<String>>,
    resync_schedule: Option<Spanned<String>>,
    start: Option<Spanned<String>>,
    log_level: Option<Spanned<String>>,
    retention: Option<Spanned<String>>,
    log_format: Option<Spanned<String>>,
    admin_listen: Option<Spanned<String>>,
    healthz_periods: Option<Spanned<i64>>,
    shard: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Spanned<String>,
    provider: Spanned<String>,
    base_url: Spanned<String>,
    // HTTP behaviour (every provider)
    timeout: Option<Spanned<String>>,
    max_retries: Option<Spanned<i64>>,
    retry_base: Option<Spanned<String>>,
    retry_after_cap: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    // caminvoice
    client_id: Option<Spanned<String>>,
    client_secret: Option<Spanned<SecretSource>>,
    members: Option<Spanned<Vec<RawMember>>>,
    list_send_type: Option<Spanned<String>>,
    revoke_after_refusals: Option<Spanned<i64>>,
    // onlinepajak
    npwp: Option<Spanned<String>>,
    token: Option<Spanned<SecretSource>>,
    auth_scheme: Option<Spanned<String>>,
    rate_limit: Option<Spanned<i64>>,
    rate_burst: Option<Spanned<i64>>,
    api: Option<Spanned<ApiOverrides>>,
    // both
    overlap: Option<Spanned<String>>,
    page_size: Option<Spanned<i64>>,
}

impl RawAccount {
    /// The provider-specific keys this entry sets, with their spans (every key but name,
    /// provider, base_url and the HTTP keys, which every provider takes).
    fn provider_keys(&self) -> [(&'static str, Option<Range<usize>>); 13] {
        [
            ("client_id", span(&self.client_id)),
            ("client_secret", span(&self.client_secret)),
            ("members", span(&self.members)),
            ("list_send_type", span(&self.list_send_type)),
            ("revoke_after_refusals", span(&self.revoke_after_refusals)),
            ("npwp", span(&self.npwp)),
            ("token", span(&self.token)),
            ("auth_scheme", span(&self.auth_scheme)),
            ("rate_limit", span(&self.rate_limit)),
            ("rate_burst", span(&self.rate_burst)),
            ("api", span(&self.api)),
            ("overlap", span(&self.overlap)),
            ("page_size", span(&self.page_size)),
        ]
    }
}

/// The span of a key, when it is set.
fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

/// The provider-specific keys of a CamInvoice account.
const CAMINVOICE_KEYS: &[&str] = &[
    "client_id",
    "client_secret",
    "members",
    "list_send_type",
    "revoke_after_refusals",
    "overlap",
    "page_size",
];

/// The provider-specific keys of an OnlinePajak account.
const ONLINEPAJAK_KEYS: &[&str] = &[
    "npwp",
    "token",
    "auth_scheme",
    "rate_limit",
    "rate_burst",
    "api",
    "overlap",
    "page_size",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    endpoint_id: Spanned<String>,
    refresh_token: Spanned<SecretSource>,
}

// ---------------------------------------------------------------- stage 2: validation

/// Carries the file and source text so every check can point into it, and collects warnings.
struct Checker<'a> {
    file: &'a Path,
    src: &'a str,
    warnings: std::cell::RefCell<Vec<ConfigError>>,
}

impl Checker<'_> {
    fn warn(&self, span: Range<usize>, msg: impl Into<String>, help: impl Into<String>) {
        let w = self.err(span, msg, help);
        self.warnings.borrow_mut().push(w);
    }

    /// A duration that must not be zero (a timeout of 0 fails every request).
    fn positive(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(v, key, default)?;
        match v {
            Some(s) if d.is_zero() => Err(self.err(
                s.span(),
                format!("`{key}` cannot be zero"),
                format!(
                    "e.g. \"{}\" (a zero {key} would fail every attempt at once)",
                    format_duration(default)
                ),
            )),
            _ => Ok(d),
        }
    }

    /// An http(s) URL with a host and no `user:password@` (it would be printed and logged;
    /// credentials have their own keys). `http://` to a host that is not this machine is
    /// valid, with a warning.
    fn http_url(
        &self,
        s: &Spanned<String>,
        key: &str,
        example: &str,
    ) -> Result<reqwest::Url, ConfigError> {
        let u = match reqwest::Url::parse(s.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return Err(self.err(
                    s.span(),
                    format!("`{key}` is not an http(s) URL: {:?}", s.get_ref()),
                    format!("e.g. {example}"),
                ))
            }
        };
        if !u.username().is_empty() || u.password().is_some() {
            // The line holds a password: point at it, never quote it.
            return Err(self
                .err(
                    s.span(),
                    format!("`{key}` holds credentials (user:password@): they would be printed and logged with the URL"),
                    format!("remove them from the URL, e.g. {example}; CamInvoice takes client_id and client_secret, OnlinePajak `token`, and a webhook receiver checks the signature made with `secrets`"),
                )
                .without_snippet());
        }
        let host = u.host_str().unwrap_or_default();
        let local = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if u.scheme() == "http" && !local {
            self.warn(
                s.span(),
                format!("`{key}` is plain http:// to {}, another machine: tokens, documents and events cross the network unencrypted", u.host_str().unwrap_or("?")),
                "use https://, or keep plain http on 127.0.0.1 / localhost",
            );
        }
        Ok(u)
    }
    fn err(
        &self,
        span: Range<usize>,
        msg: impl Into<String>,
        help: impl Into<String>,
    ) -> ConfigError {
        ConfigError::at(self.file, self.src, Some(span), msg, Some(help.into()))
    }

    fn origin(&self, span: &Range<usize>, key: &str) -> String {
        let e = ConfigError::at(self.file, self.src, Some(span.clone()), "", None);
        let (l, c) = e.location().unwrap_or((0, 0));
        format!("{}:{l}:{c} ({key})", self.file.display())
    }

    fn secret(&self, s: &Spanned<SecretSource>, key: &str) -> SecretRef {
        SecretRef {
            source: s.get_ref().clone(),
            origin: self.origin(&s.span(), key),
        }
    }

    fn duration(
        &self,
        v: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s.get_ref()).ok_or_else(|| {
                self.err(
                    s.span(),
                    format!("`{key}` is not a duration: {:?}", s.get_ref()),
                    format!(
                        "write a number and a unit, e.g. \"{}\" (units: ms, s, m, h, d)",
                        format_duration(default)
                    ),
                )
            }),
        }
    }

    fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        range: Range<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.err(
                s.span(),
                format!("`{key}` = {} is out of range", s.get_ref()),
                format!(
                    "use a whole number from {} to {}",
                    range.start,
                    range.end - 1
                ),
            )),
        }
    }

    fn schedule(&self, s: &Spanned<String>, key: &str) -> Result<Schedule, ConfigError> {
        Schedule::new(s.get_ref()).map_err(|why| {
            self.err(
                s.span(),
                format!("`{key}` is not a valid cron expression: {why}"),
                "cron with seconds, six fields, in UTC: \"sec min hour day-of-month month day-of-week\", e.g. \"0 */5 * * * *\" (every 5 minutes)",
            )
        })
    }

    fn url(&self, s: &Spanned<String>) -> Result<String, ConfigError> {
        self.http_url(
            s,
            "base_url",
            "\"https://sb-merchant.e-invoice.gov.kh\" (without /api/v1)",
        )?;
        Ok(s.get_ref().trim_end_matches('/').to_string())
    }

    /// Refuses a provider-specific key that is not in `allowed` (another provider's key).
    fn only(&self, a: &RawAccount, provider: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        self.allow_only(a.provider_keys(), allowed, |key| {
            (
                format!("`{key}` does not apply to provider \"{provider}\""),
                format!(
                    "remove it, or check `provider`; a {provider} account takes name, provider, base_url, the HTTP keys (timeout, max_retries, retry_base, retry_after_cap, concurrency) and {}; config.toml.example lists each provider's keys",
                    allowed.join(", ")
                ),
            )
        })
    }

    /// The one "this key does not belong here" check (providers' and sink kinds' allow-lists):
    /// the first key of `keys` that is set and not in `allowed` is an error at its span,
    /// worded by `refuse(key)` as (message, help).
    fn allow_only<const N: usize>(
        &self,
        keys: [(&'static str, Option<Range<usize>>); N],
        allowed: &[&str],
        refuse: impl FnOnce(&str) -> (String, String),
    ) -> Result<(), ConfigError> {
        let stray = keys
            .into_iter()
            .find_map(|(k, span)| span.filter(|_| !allowed.contains(&k)).map(|sp| (k, sp)));
        match stray {
            None => Ok(()),
            Some((key, span)) => {
                let (message, help) = refuse(key);
                Err(self.err(span, message, help))
            }
        }
    }

    fn require<'v, T>(
        &self,
        v: &'v Option<Spanned<T>>,
        key: &str,
        table: Range<usize>,
        help: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        v.as_ref().ok_or_else(|| {
            self.err(
                table,
                format!("missing `{key}` in this [[accounts]] entry"),
                help.to_string(),
            )
        })
    }
}

/// A name that keys state and appears in logs and payloads: non-empty, no '/' (the store's
/// key separator in paths), no control character (it would forge log lines).
fn is_key_part(s: &str) -> bool {
    !s.is_empty() && !s.contains('/') && !s.chars().any(char::is_control)
}

/// Help for serde's own messages.
fn help_for(message: &str) -> String {
    if message.starts_with("unknown field") {
        "remove the key or fix its spelling; config.toml.example documents every key".into()
    } else if message.starts_with("missing field") {
        "add the key; config.toml.example documents every key".into()
    } else if message.starts_with("invalid type") {
        "check the value's type (strings need quotes, numbers do not)".into()
    } else {
        "fix the TOML syntax at this place".into()
    }
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::whole_file(
                path,
                format!("cannot read the config file: {e}"),
                Some(
                    "pass --config PATH; config.toml.example is a documented starting point".into(),
                ),
            )
        })?;
        Config::parse(&text, path)
    }

    /// Validates config `text`; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let ck = Checker {
            file,
            src: text,
            warnings: Default::default(),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            let help = help_for(&msg);
            ConfigError::at(file, text, e.span(), msg, Some(help))
        })?;

        let d = raw.daemon.unwrap_or_default();
        let state_dir = match &d.state_dir {
            Some(s) => PathBuf::from(s.get_ref()),
            None => std::env::var_os("STATE_DIRECTORY")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/lib/pollhook")),
        };
        let schedule = match &d.schedule {
            Some(s) => ck.schedule(s, "schedule")?,
            None => Schedule("0 */5 * * * *".into()),
        };
        let resync_schedule = match &d.resync_schedule {
            Some(s) if s.get_ref() == "off" => None,
            Some(s) => Some(ck.schedule(s, "resync_schedule")?),
            None => Some(Schedule("0 30 3 * * *".into())),
        };
        let start = match &d.start {
            None => Start::Now,
            Some(s) if s.get_ref() == "now" => Start::Now,
            Some(s) => match chrono::DateTime::parse_from_rfc3339(s.get_ref()) {
                Ok(t) => Start::At(t.timestamp_millis()),
                Err(e) => {
                    return Err(ck.err(
                        s.span(),
                        format!("`start` is neither \"now\" nor an RFC 3339 instant: {e}"),
                        "write \"now\" (silent baseline at first start) or e.g. \"2026-03-01T00:00:00Z\" (back-fill from then)",
                    ))
                }
            },
        };
        let log_level = match &d.log_level {
            None => "info".to_string(),
            Some(s) => {
                let v = s.get_ref().as_str();
                if !matches!(v, "error" | "warn" | "info" | "debug" | "trace") {
                    return Err(ck.err(
                        s.span(),
                        format!("unknown `log_level` {v:?}"),
                        "use one of error, warn, info, debug, trace",
                    ));
                }
                v.to_string()
            }
        };

        let (log_format, admin_listen, healthz_periods) = service_keys(&ck, &d)?;
        let shard = match &d.shard {
            None => crate::shard::Shard::ALL,
            Some(s) => crate::shard::Shard::parse(s.get_ref()).map_err(|why| {
                ck.err(
                    s.span(),
                    format!("`shard` {why}"),
                    "write \"K/N\": this daemon is shard K of N, e.g. shard = \"1/3\" (every shard runs the same accounts with its own state_dir; SCALING.md)",
                )
            })?,
        };

        let mut accounts = Vec::new();
        let mut names = BTreeSet::new();
        for acc in &raw.accounts {
            let a = acc.get_ref();
            if !names.insert(a.name.get_ref().clone()) {
                return Err(ck.err(
                    a.name.span(),
                    format!("account name {:?} is used twice", a.name.get_ref()),
                    "give every [[accounts]] entry its own name; it keys the account's state",
                ));
            }
            if !is_key_part(a.name.get_ref()) {
                return Err(ck.err(
                    a.name.span(),
                    "account `name` must be non-empty and contain no '/' and no control character",
                    "use a short slug such as \"acme-kh\"",
                ));
            }
            let defaults = HttpSettings::for_provider(a.provider.get_ref());
            let http = HttpSettings {
                timeout: ck.positive(&a.timeout, "timeout", defaults.timeout)?,
                max_retries: ck.int(
                    &a.max_retries,
                    "max_retries",
                    0..21,
                    defaults.max_retries as i64,
                )? as u32,
                retry_base: ck.duration(&a.retry_base, "retry_base", defaults.retry_base)?,
                retry_after_cap: ck.duration(
                    &a.retry_after_cap,
                    "retry_after_cap",
                    defaults.retry_after_cap,
                )?,
                concurrency: ck.int(
                    &a.concurrency,
                    "concurrency",
                    1..257,
                    defaults.concurrency as i64,
                )? as usize,
            };
            let provider = match a.provider.get_ref().as_str() {
                "caminvoice" => ProviderSettings::CamInvoice(caminvoice(&ck, a, acc.span())?),
                "onlinepajak" => {
                    ProviderSettings::OnlinePajak(Box::new(onlinepajak(&ck, a, acc.span())?))
                }
                other => {
                    return Err(ck.err(
                        a.provider.span(),
                        format!("unknown provider {other:?}"),
                        "use \"caminvoice\" or \"onlinepajak\"",
                    ))
                }
            };
            accounts.push(Account {
                name: a.name.get_ref().clone(),
                http,
                provider,
            });
        }
        same_unit_twice(&ck, &raw.accounts);

        let sinks = sinks::all(&ck, &raw.sinks, &names)?;
        let retention = ck.duration(&d.retention, "retention", Duration::from_secs(7 * 86_400))?;

        if accounts.is_empty() {
            return Err(ConfigError::whole_file(
                file,
                "no [[accounts]] configured",
                Some("add an [[accounts]] entry; see config.toml.example".into()),
            ));
        }
        if sinks.is_empty() {
            return Err(ConfigError::whole_file(
                file,
                "no [[sinks]] configured: events would only pile up in the store",
                Some(
                    "add e.g. [[sinks]] kind = \"jsonl\" path = \"/var/lib/pollhook/events.jsonl\""
                        .into(),
                ),
            ));
        }

        Ok(Config {
            file: file.to_path_buf(),
            daemon: Daemon {
                state_dir,
                schedule,
                resync_schedule,
                start,
                log_level,
                retention,
                log_format,
                admin_listen,
                healthz_periods,
                shard,
            },
            accounts,
            sinks,
            warnings: ck.warnings.into_inner(),
        })
    }

    /// Warnings about the files the config points at (I/O: it reads their permissions): the
    /// config file when it holds inline secrets, and `{ file = ... }` secrets, when every
    /// user of the machine may read them.
    pub fn file_warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        let readable = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o004 != 0)
                .unwrap_or(false)
        };
        let mut out = Vec::new();
        let secrets = self.secrets();
        if secrets.iter().any(|(_, s)| s.source.is_inline()) && readable(&self.file) {
            out.push(format!(
                "{} holds inline secrets and is readable by every user; chmod 600 it, or use {{ file = ... }} / {{ credential = ... }}",
                self.file.display()
            ));
        }
        let mut seen = BTreeSet::new();
        for (what, s) in secrets {
            if let SecretSource::File(p) = &s.source {
                if seen.insert(p.clone()) && readable(p) {
                    out.push(format!(
                        "{}: the {what} file {} is readable by every user; chmod 600 it (owned by the pollhook user)",
                        s.origin,
                        p.display()
                    ));
                }
            }
        }
        out
    }

    /// Every secret reference in the config, with what it is for.
    pub fn secrets(&self) -> Vec<(&str, &SecretRef)> {
        let mut out = Vec::new();
        for a in &self.accounts {
            match &a.provider {
                ProviderSettings::CamInvoice(c) => {
                    out.push(("client_secret", &c.client_secret));
                    for m in &c.members {
                        out.push(("refresh_token", &m.refresh_token));
                    }
                }
                ProviderSettings::OnlinePajak(o) => out.push(("token", &o.token)),
            }
        }
        for s in &self.sinks {
            match &s.kind {
                SinkKind::Webhook(w) => out.extend(w.secrets.iter().map(|r| ("webhook secret", r))),
                SinkKind::Nats(n) => out.extend(n.auth.secret().map(|r| ("nats credential", r))),
                _ => {}
            }
        }
        out
    }

    /// Resolves every secret once, to report all that are missing (for `check-config`).
    pub fn resolve_secrets(&self) -> Result<(), Vec<ResolveError>> {
        let errors: Vec<ResolveError> = self
            .secrets()
            .into_iter()
            .filter_map(|(_, s)| s.resolve().err())
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Warns about a CamInvoice member (endpoint_id) or an OnlinePajak company (npwp) configured
/// in two accounts: each account would emit the same webhooks, under different event ids.
fn same_unit_twice(ck: &Checker, accounts: &[Spanned<RawAccount>]) {
    let mut first: std::collections::BTreeMap<(String, String), String> = Default::default();
    for acc in accounts {
        let a = acc.get_ref();
        let provider = a.provider.get_ref().clone();
        let units: Vec<&Spanned<String>> = match provider.as_str() {
            "caminvoice" => a
                .members
                .iter()
                .flat_map(|m| m.get_ref())
                .map(|m| &m.endpoint_id)
                .collect(),
            "onlinepajak" => a.npwp.iter().collect(),
            _ => vec![],
        };
        for u in units {
            let key = (provider.clone(), u.get_ref().clone());
            match first.get(&key) {
                Some(other) if *other != *a.name.get_ref() => ck.warn(
                    u.span(),
                    format!(
                        "{:?} is also configured in account {other:?}: both accounts would emit the same webhooks, under different event ids",
                        u.get_ref()
                    ),
                    "keep it in one account; if two integrations really share it, give each sink an `accounts` filter so no consumer gets both",
                ),
                _ => {
                    first.insert(key, a.name.get_ref().clone());
                }
            }
        }
    }
}

/// `log_format`, `admin_listen` and `healthz_periods` of `[daemon]`.
fn service_keys(
    ck: &Checker,
    d: &RawDaemon,
) -> Result<(LogFormat, Option<std::net::SocketAddr>, u32), ConfigError> {
    let log_format = match &d.log_format {
        None => LogFormat::Text,
        Some(s) => match s.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            "journald" => LogFormat::Journald,
            other => {
                return Err(ck.err(
                    s.span(),
                    format!("unknown `log_format` {other:?}"),
                    "use \"text\" (default), \"json\" (one object per line) or \"journald\" (native journal fields)",
                ))
            }
        },
    };
    let admin_listen = match &d.admin_listen {
        None => None,
        Some(s) => Some(s.get_ref().parse().map_err(|_| {
            ck.err(
                s.span(),
                format!("`admin_listen` is not an IP:port address: {:?}", s.get_ref()),
                "e.g. \"127.0.0.1:9187\" (keep it on localhost; port 0 picks a free port, written to <state_dir>/admin.addr)",
            )
        })?),
    };
    let healthz_periods = ck.int(&d.healthz_periods, "healthz_periods", 1..1001, 3)? as u32;
    Ok((log_format, admin_listen, healthz_periods))
}

fn caminvoice(
    ck: &Checker,
    a: &RawAccount,
    table: Range<usize>,
) -> Result<CamInvoiceSettings, ConfigError> {
    ck.only(a, "caminvoice", CAMINVOICE_KEYS)?;
    let help = "CamInvoice accounts need base_url, client_id and client_secret; members are [[accounts.members]] entries or connected with `pollhook connect`";
    let client_id = ck.require(&a.client_id, "client_id", table.clone(), help)?;
    let client_secret = ck.require(&a.client_secret, "client_secret", table.clone(), help)?;
    let mut members = Vec::new();
    let mut seen = BTreeSet::new();
    // No members is valid: `pollhook connect` adds them to the state store.
    for m in a
        .members
        .as_ref()
        .map(|m| m.get_ref().as_slice())
        .unwrap_or(&[])
    {
        if !seen.insert(m.endpoint_id.get_ref().clone()) {
            return Err(ck.err(
                m.endpoint_id.span(),
                format!("member {:?} is listed twice", m.endpoint_id.get_ref()),
                "list each connected business once",
            ));
        }
        if !is_key_part(m.endpoint_id.get_ref()) {
            return Err(ck.err(
                m.endpoint_id.span(),
                "`endpoint_id` must be non-empty and contain no '/' and no control character",
                "use the endpoint id CamInvoice gave at connect, e.g. \"KHUID00001234\"",
            ));
        }
        members.push(Member {
            endpoint_id: m.endpoint_id.get_ref().clone(),
            refresh_token: ck.secret(&m.refresh_token, "refresh_token"),
        });
    }
    let list_send_type = match &a.list_send_type {
        None => "send".to_string(),
        Some(s) if matches!(s.get_ref().as_str(), "send" | "sent") => s.get_ref().clone(),
        Some(s) => {
            return Err(ck.err(
                s.span(),
                format!("`list_send_type` {:?} is not send or sent", s.get_ref()),
                "the reference says \"send\", the sample collection \"sent\"",
            ))
        }
    };
    Ok(CamInvoiceSettings {
        base_url: ck.url(&a.base_url)?,
        client_id: client_id.get_ref().clone(),
        client_secret: ck.secret(client_secret, "client_secret"),
        members,
        overlap: ck.duration(&a.overlap, "overlap", Duration::from_secs(120))?,
        page_size: ck.int(&a.page_size, "page_size", 1..1001, 100)? as u32,
        list_send_type,
        revoke_after_refusals: ck.int(
            &a.revoke_after_refusals,
            "revoke_after_refusals",
            1..101,
            2,
        )? as u32,
    })
}

fn onlinepajak(
    ck: &Checker,
    a: &RawAccount,
    table: Range<usize>,
) -> Result<OnlinePajakSettings, ConfigError> {
    ck.only(a, "onlinepajak", ONLINEPAJAK_KEYS)?;
    let help = "OnlinePajak accounts need base_url (e.g. https://openapi.onlinepajak.com/v2.0), npwp and token";
    let npwp = ck.require(&a.npwp, "npwp", table.clone(), help)?;
    if npwp.get_ref().trim().is_empty() || !is_key_part(npwp.get_ref()) {
        return Err(ck.err(npwp.span(), "`npwp` must be non-empty and contain no '/' and no control character", "write the company's NPWP exactly as OnlinePajak shows it; it goes into payloads as given"));
    }
    let token = ck.require(&a.token, "token", table, help)?;
    let raw_auth = match &a.auth_scheme {
        None => false,
        Some(s) if s.get_ref() == "bearer" => false,
        Some(s) if s.get_ref() == "raw" => true,
        Some(s) => {
            return Err(ck.err(
                s.span(),
                format!("unknown `auth_scheme` {:?}", s.get_ref()),
                "use \"bearer\" (Authorization: Bearer <token>) or \"raw\" (the bare token)",
            ))
        }
    };
    let rate_limit = ck.int(&a.rate_limit, "rate_limit", 1..101, 90)? as u32;
    let rate_burst = ck.int(&a.rate_burst, "rate_burst", 1..101, 5)? as u32;
    if rate_limit + rate_burst > 100 {
        let span = a
            .rate_burst
            .as_ref()
            .or(a.rate_limit.as_ref())
            .map(|s| s.span())
            .unwrap_or_default();
        return Err(ck.err(span, format!("rate_limit {rate_limit} + rate_burst {rate_burst} can exceed OnlinePajak's 100 calls a minute"), "keep rate_limit + rate_burst at 100 or less (default 90 + 5)"));
    }
    Ok(OnlinePajakSettings {
        base_url: ck.url(&a.base_url)?,
        npwp: npwp.get_ref().clone(),
        token: ck.secret(token, "token"),
        raw_auth,
        rate_limit,
        rate_burst,
        page_size: ck.int(&a.page_size, "page_size", 1..1001, 100)? as u32,
        overlap: ck.duration(&a.overlap, "overlap", Duration::from_secs(120))?,
        api: a
            .api
            .as_ref()
            .map(|m| m.get_ref().clone())
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests;
