//! The `[[sinks]]` part of the schema: the sink types every other module reads, their TOML
//! shape, and their validation (file:line:column errors through the parent's `Checker`).
//!
//! Like `[[accounts]]`, sink keys sit flat in one table so serde keeps exact spans; each kind
//! rejects the keys of the other kinds. Pure: no I/O, no secret is resolved here (an inline
//! webhook secret's format is checked because its value is in the file anyway).

use super::{span, subject, Checker, ConfigError, SecretRef, SecretSource};
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// One `[[sinks]]` entry.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Keys the sink's ack cursor, attempt counts and dead letters.
    pub name: String,
    pub kind: SinkKind,
    pub filter: Filter,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    Jsonl(JsonlSettings),
    Hook(HookSettings),
    Webhook(WebhookSettings),
    Nats(Box<NatsSettings>),
}

impl SinkKind {
    /// The kind as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Jsonl(_) => "jsonl",
            SinkKind::Hook(_) => "hook",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Nats(_) => "nats",
        }
    }
}

/// Which events a sink gets; an empty list means every value. Filtered-out events are acked
/// without delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Globs on the event type; `*` matches any run of characters (`DOCUMENT.*`).
    pub events: Vec<String>,
    /// Account names.
    pub accounts: Vec<String>,
}

impl Filter {
    /// Whether the filter lets every event through (nothing to parse).
    pub fn is_all(&self) -> bool {
        self.events.is_empty() && self.accounts.is_empty()
    }

    /// Whether an event of `event_type` from `account` is delivered.
    pub fn matches(&self, event_type: &str, account: &str) -> bool {
        (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account))
            && (self.events.is_empty() || self.events.iter().any(|g| glob(g, event_type)))
    }
}

/// `*` matches any run of characters (including none and dots); everything else is literal.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*` at all
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// `kind = "jsonl"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlSettings {
    pub path: PathBuf,
    /// Rotate (rename to `path.1`, ...) once the file has reached this size.
    pub rotate_bytes: Option<u64>,
    /// Rotated files kept (`path.1` .. `path.N`).
    pub rotate_keep: u32,
    /// The file's permission bits (`mode = "0640"`; default 0600), set whatever the umask.
    pub mode: u32,
}

/// `kind = "hook"`: a program run once per event, by argv, never through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    pub command: Vec<String>,
    pub stdin: HookStdin,
    /// Names of the daemon's environment variables passed through, beyond PATH, HOME, LANG, TZ.
    pub env: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub timeout: Duration,
    pub delivery: Delivery,
}

/// What a hook reads on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookStdin {
    /// The webhook body, exactly.
    Payload,
    /// The whole envelope line (what the JSONL sink writes).
    Envelope,
}

/// `kind = "webhook"`: a Standard Webhooks POST to a local receiver.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    /// `whsec_...` secrets; one signature per secret.
    pub secrets: Vec<SecretRef>,
    pub timeout: Duration,
    /// The longest Retry-After honoured on a 429 or 5xx.
    pub retry_after_cap: Duration,
    pub delivery: Delivery,
}

/// `kind = "nats"`: a publish per event to a NATS JetStream stream.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// `nats://host:port` or `tls://host:port` URLs (a bare `host:port` means nats://).
    pub servers: Vec<String>,
    /// The stream the events must land in (checked at start).
    pub stream: String,
    pub subject: subject::Template,
    pub body: Body,
    pub auth: NatsAuth,
    /// A PEM file of CA certificates to trust (besides the system's).
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM files), for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Create the stream when it does not exist (see README for what is created).
    pub create_stream: bool,
    /// The wait for a PubAck, and for each JetStream API request.
    pub timeout: Duration,
    pub delivery: Delivery,
}

/// How a NATS sink authenticates.
#[derive(Debug, Clone)]
pub enum NatsAuth {
    None,
    Token(SecretRef),
    UserPassword {
        user: String,
        password: SecretRef,
    },
    /// An nkey seed (`SU...`).
    NkeySeed(SecretRef),
    /// A `.creds` file's content (the user JWT and its nkey seed).
    Creds(SecretRef),
}

impl NatsAuth {
    /// What `check-config` prints: the method and the source, never a value.
    pub fn describe(&self) -> String {
        match self {
            NatsAuth::None => "none".into(),
            NatsAuth::Token(s) => format!("token {}", s.source.describe()),
            NatsAuth::UserPassword { user, password } => {
                format!("user {user:?}, password {}", password.source.describe())
            }
            NatsAuth::NkeySeed(s) => format!("nkey seed {}", s.source.describe()),
            NatsAuth::Creds(s) => format!("credentials {}", s.source.describe()),
        }
    }

    /// The secret it needs, if any.
    pub fn secret(&self) -> Option<&SecretRef> {
        match self {
            NatsAuth::None => None,
            NatsAuth::Token(s) | NatsAuth::NkeySeed(s) | NatsAuth::Creds(s) => Some(s),
            NatsAuth::UserPassword { password, .. } => Some(password),
        }
    }
}

/// What a message body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The webhook body, exactly.
    Payload,
    /// The whole envelope line (what the JSONL sink writes).
    Envelope,
}

/// Retries, dead letters and ordering of hook, webhook and NATS sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Wait before retry n (1-based) is entry n-1; past the end, the last entry repeats
    /// (`backoff::on_schedule`).
    pub retry_schedule: Vec<Duration>,
    /// Attempts before an event becomes a dead letter.
    pub max_attempts: u32,
    pub ordering: DeliveryOrder,
    /// Deliveries in flight at once (per-document ordering only).
    pub concurrency: usize,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            retry_schedule: DEFAULT_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            max_attempts: 24,
            ordering: DeliveryOrder::InOrder,
            concurrency: 1,
        }
    }
}

/// 5s, 30s, 2m, 10m, 30m, 1h — then hourly.
const DEFAULT_SCHEDULE: &[u64] = &[5, 30, 120, 600, 1800, 3600];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOrder {
    /// Commit order; a failing event holds back every later one (head-of-line retry).
    InOrder,
    /// Each subject's (document's) events in commit order; different documents in parallel.
    PerDocument,
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_`.
pub fn whsec_key(value: &str) -> Result<Vec<u8>, String> {
    let b64 = value.strip_prefix("whsec_").ok_or(
        "a webhook secret starts with `whsec_` followed by base64 (Standard Webhooks format)",
    )?;
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err("the part after `whsec_` is not valid base64; generate one with e.g. `echo whsec_$(head -c 24 /dev/urandom | base64)`".into()),
    }
}

type List<T> = Option<Spanned<Vec<Spanned<T>>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    kind: Spanned<String>,
    name: Option<Spanned<String>>,
    events: List<String>,
    accounts: List<String>,
    // jsonl
    path: Option<Spanned<String>>,
    rotate_bytes: Option<Spanned<i64>>,
    rotate_keep: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    // hook
    command: List<String>,
    stdin: Option<Spanned<String>>,
    env: List<String>,
    workdir: Option<Spanned<String>>,
    // webhook
    url: Option<Spanned<String>>,
    secrets: List<SecretSource>,
    retry_after_cap: Option<Spanned<String>>,
    // nats
    servers: List<String>,
    stream: Option<Spanned<String>>,
    subject: Option<Spanned<String>>,
    body: Option<Spanned<String>>,
    token: Option<Spanned<SecretSource>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<SecretSource>>,
    nkey_seed: Option<Spanned<SecretSource>>,
    creds: Option<Spanned<SecretSource>>,
    tls_ca_file: Option<Spanned<String>>,
    tls_cert_file: Option<Spanned<String>>,
    tls_key_file: Option<Spanned<String>>,
    create_stream: Option<Spanned<bool>>,
    // hook, webhook and nats
    timeout: Option<Spanned<String>>,
    retry_schedule: List<String>,
    max_attempts: Option<Spanned<i64>>,
    ordering: Option<Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
}

impl RawSink {
    /// Every kind-specific key with its span when set, for the allow-list check.
    fn set_keys(&self) -> [(&'static str, Option<Range<usize>>); 29] {
        [
            ("path", span(&self.path)),
            ("rotate_bytes", span(&self.rotate_bytes)),
            ("rotate_keep", span(&self.rotate_keep)),
            ("mode", span(&self.mode)),
            ("command", span(&self.command)),
            ("stdin", span(&self.stdin)),
            ("env", span(&self.env)),
            ("workdir", span(&self.workdir)),
            ("url", span(&self.url)),
            ("secrets", span(&self.secrets)),
            ("retry_after_cap", span(&self.retry_after_cap)),
            ("servers", span(&self.servers)),
            ("stream", span(&self.stream)),
            ("subject", span(&self.subject)),
            ("body", span(&self.body)),
            ("token", span(&self.token)),
            ("user", span(&self.user)),
            ("password", span(&self.password)),
            ("nkey_seed", span(&self.nkey_seed)),
            ("creds", span(&self.creds)),
            ("tls_ca_file", span(&self.tls_ca_file)),
            ("tls_cert_file", span(&self.tls_cert_file)),
            ("tls_key_file", span(&self.tls_key_file)),
            ("create_stream", span(&self.create_stream)),
            ("timeout", span(&self.timeout)),
            ("retry_schedule", span(&self.retry_schedule)),
            ("max_attempts", span(&self.max_attempts)),
            ("ordering", span(&self.ordering)),
            ("concurrency", span(&self.concurrency)),
        ]
    }
}

const JSONL_KEYS: &[&str] = &["path", "rotate_bytes", "rotate_keep", "mode"];
const HOOK_KEYS: &[&str] = &[
    "command",
    "stdin",
    "env",
    "workdir",
    "timeout",
    "retry_schedule",
    "max_attempts",
    "ordering",
    "concurrency",
];
const WEBHOOK_KEYS: &[&str] = &[
    "url",
    "secrets",
    "retry_after_cap",
    "timeout",
    "retry_schedule",
    "max_attempts",
    "ordering",
    "concurrency",
];

const NATS_KEYS: &[&str] = &[
    "servers",
    "stream",
    "subject",
    "body",
    "token",
    "user",
    "password",
    "nkey_seed",
    "creds",
    "tls_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "create_stream",
    "timeout",
    "retry_schedule",
    "max_attempts",
    "ordering",
    "concurrency",
];

/// Validates every `[[sinks]]` entry and that their names are distinct.
pub(super) fn all(
    ck: &Checker,
    raw: &[Spanned<RawSink>],
    accounts: &BTreeSet<String>,
) -> Result<Vec<Sink>, ConfigError> {
    let mut sinks = Vec::new();
    let mut names = BTreeSet::new();
    for s in raw {
        let sink = sink(ck, s, accounts)?;
        if !names.insert(sink.name.clone()) {
            let r = s.get_ref();
            let span = r
                .name
                .as_ref()
                .map(|n| n.span())
                .unwrap_or_else(|| r.kind.span());
            return Err(ck.err(
                span,
                format!("sink name {:?} is used twice", sink.name),
                "set a distinct `name` on each [[sinks]] entry; it keys the sink's delivery cursor",
            ));
        }
        sinks.push(sink);
    }
    Ok(sinks)
}

/// Validates one `[[sinks]]` entry; `accounts` are the configured account names.
fn sink(
    ck: &Checker,
    s: &Spanned<RawSink>,
    accounts: &BTreeSet<String>,
) -> Result<Sink, ConfigError> {
    let r = s.get_ref();
    let kind_name = r.kind.get_ref().as_str();
    let allowed = match kind_name {
        "jsonl" => JSONL_KEYS,
        "hook" => HOOK_KEYS,
        "webhook" => WEBHOOK_KEYS,
        "nats" => NATS_KEYS,
        other => {
            return Err(ck.err(
                r.kind.span(),
                format!("unknown sink kind {other:?}"),
                "use \"jsonl\", \"hook\", \"webhook\" or \"nats\"",
            ))
        }
    };
    ck.allow_only(r.set_keys(), allowed, |key| {
        (
            format!("`{key}` does not apply to a {kind_name} sink"),
            format!(
                "a {kind_name} sink takes name, events, accounts, {}; see config.toml.example",
                allowed.join(", ")
            ),
        )
    })?;
    let name = match &r.name {
        Some(n) if n.get_ref().is_empty() || n.get_ref().contains('\0') => {
            return Err(ck.err(
                n.span(),
                "sink `name` must be non-empty",
                "use a short slug such as \"erp-hook\"",
            ))
        }
        Some(n) => n.get_ref().clone(),
        None => kind_name.to_string(),
    };
    let filter = Filter {
        events: strings(ck, &r.events, "events", "e.g. events = [\"DOCUMENT.*\"]")?,
        accounts: strings(ck, &r.accounts, "accounts", "e.g. accounts = [\"acme-kh\"]")?,
    };
    if let Some(list) = &r.accounts {
        for a in list.get_ref() {
            if !accounts.contains(a.get_ref()) {
                return Err(ck.err(
                    a.span(),
                    format!(
                        "`accounts` names {:?}, which is not a configured account",
                        a.get_ref()
                    ),
                    format!(
                        "use names of [[accounts]] entries: {}",
                        accounts.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    let need = |v: &Option<Spanned<String>>, key: &str, example: &str| {
        v.clone().ok_or_else(|| {
            ck.err(
                s.span(),
                format!("a {kind_name} sink needs `{key}`"),
                format!("e.g. {key} = {example}"),
            )
        })
    };
    let kind = match kind_name {
        "jsonl" => {
            let path = need(&r.path, "path", "\"/var/lib/pollhook/events.jsonl\"")?;
            let rotate_bytes = match &r.rotate_bytes {
                None => None,
                Some(_) => Some(ck.int(&r.rotate_bytes, "rotate_bytes", 4096..i64::MAX, 0)? as u64),
            };
            if let (None, Some(k)) = (&r.rotate_bytes, &r.rotate_keep) {
                return Err(ck.err(
                    k.span(),
                    "`rotate_keep` without `rotate_bytes` has no effect",
                    "set rotate_bytes (e.g. 104857600 for 100 MiB), or remove rotate_keep",
                ));
            }
            SinkKind::Jsonl(JsonlSettings {
                path: PathBuf::from(path.get_ref()),
                rotate_bytes,
                rotate_keep: ck.int(&r.rotate_keep, "rotate_keep", 1..1001, 5)? as u32,
                mode: file_mode(ck, &r.mode)?,
            })
        }
        "hook" => {
            let Some(command) = &r.command else {
                return Err(ck.err(
                    s.span(),
                    "a hook sink needs `command`",
                    "an argv array, run without a shell, e.g. command = [\"/usr/local/bin/erp-import\", \"--from-pollhook\"]",
                ));
            };
            if command.get_ref().is_empty() || command.get_ref()[0].get_ref().is_empty() {
                return Err(ck.err(
                    command.span(),
                    "`command` needs at least the program",
                    "e.g. command = [\"/usr/local/bin/erp-import\"]; arguments follow as more strings",
                ));
            }
            let stdin = match r.stdin.as_ref().map(|v| (v, v.get_ref().as_str())) {
                None | Some((_, "payload")) => HookStdin::Payload,
                Some((_, "envelope")) => HookStdin::Envelope,
                Some((v, other)) => return Err(ck.err(
                    v.span(),
                    format!("unknown `stdin` {other:?}"),
                    "use \"payload\" (the webhook body, default) or \"envelope\" (the JSONL line)",
                )),
            };
            let env = strings(ck, &r.env, "env", "e.g. env = [\"ERP_DSN\"]")?;
            for (v, name) in r.env.iter().flat_map(|l| l.get_ref()).zip(&env) {
                let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !ok {
                    return Err(ck.err(
                        v.span(),
                        format!("{name:?} is not an environment variable name"),
                        "list variable NAMES (letters, digits, _), e.g. env = [\"ERP_DSN\"]; values come from the daemon's environment",
                    ));
                }
            }
            SinkKind::Hook(HookSettings {
                command: command
                    .get_ref()
                    .iter()
                    .map(|c| c.get_ref().clone())
                    .collect(),
                stdin,
                env,
                workdir: r.workdir.as_ref().map(|w| PathBuf::from(w.get_ref())),
                timeout: ck.positive(&r.timeout, "timeout", Duration::from_secs(30))?,
                delivery: delivery(ck, r, Delivery::default(), 256)?,
            })
        }
        "nats" => SinkKind::Nats(Box::new(nats(ck, s)?)),
        _ => {
            let url = need(
                &r.url,
                "url",
                "\"http://127.0.0.1:8080/webhooks/caminvoice\"",
            )?;
            ck.http_url(&url, "url", "\"http://127.0.0.1:8080/webhooks/caminvoice\"")?;
            let help = "one or more Standard Webhooks secrets, e.g. secrets = [{ env = \"ERP_WEBHOOK_SECRET\" }] holding whsec_<base64>";
            let secrets = match &r.secrets {
                Some(l) if !l.get_ref().is_empty() => l,
                Some(l) => return Err(ck.err(l.span(), "`secrets` is empty", help)),
                None => return Err(ck.err(s.span(), "a webhook sink needs `secrets`", help)),
            };
            for sec in secrets.get_ref() {
                if let SecretSource::Inline(v) = sec.get_ref() {
                    whsec_key(v).map_err(|why| {
                        // The line holds the (malformed) secret: point at it, never quote it.
                        ck.err(sec.span(), "this webhook secret is malformed", why)
                            .without_snippet()
                    })?;
                }
            }
            SinkKind::Webhook(WebhookSettings {
                url: url.get_ref().clone(),
                secrets: secrets
                    .get_ref()
                    .iter()
                    .map(|v| ck.secret(v, "secrets"))
                    .collect(),
                timeout: ck.positive(&r.timeout, "timeout", Duration::from_secs(10))?,
                retry_after_cap: ck.duration(
                    &r.retry_after_cap,
                    "retry_after_cap",
                    Duration::from_secs(600),
                )?,
                delivery: delivery(ck, r, Delivery::default(), 256)?,
            })
        }
    };
    Ok(Sink { name, kind, filter })
}

/// The defaults of a NATS sink's delivery: per document, 256 publishes in flight, retries
/// from 1 s up to every minute for about a week (a NATS outage is not a bad event).
pub fn nats_delivery_defaults() -> Delivery {
    Delivery {
        retry_schedule: [1, 2, 5, 10, 30, 60]
            .iter()
            .map(|s| Duration::from_secs(*s))
            .collect(),
        max_attempts: 10_080,
        ordering: DeliveryOrder::PerDocument,
        concurrency: 256,
    }
}

/// Validates a `kind = "nats"` entry.
fn nats(ck: &Checker, s: &Spanned<RawSink>) -> Result<NatsSettings, ConfigError> {
    let r = s.get_ref();
    let servers_help = "a list of server URLs, e.g. servers = [\"nats://127.0.0.1:4222\"] (tls://host:port for TLS)";
    let servers = match &r.servers {
        Some(l) if !l.get_ref().is_empty() => l,
        Some(l) => return Err(ck.err(l.span(), "`servers` is empty", servers_help)),
        None => return Err(ck.err(s.span(), "a nats sink needs `servers`", servers_help)),
    };
    let mut urls = Vec::new();
    for v in servers.get_ref() {
        let text = v.get_ref().trim();
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("nats://{text}")
        };
        match reqwest::Url::parse(&full) {
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                // The line holds a credential: point at it, never quote it.
                return Err(ck
                    .err(
                        v.span(),
                        "this server URL carries credentials",
                        "remove them from the URL and use user = \"...\" with password = { file = \"...\" } (or token, nkey_seed, creds): those are secret sources, never printed",
                    )
                    .without_snippet());
            }
            Ok(u) if matches!(u.scheme(), "nats" | "tls") && u.host().is_some() => urls.push(full),
            _ => {
                return Err(ck.err(
                    v.span(),
                    format!("`servers` holds {text:?}, which is not a nats:// or tls:// URL"),
                    servers_help,
                ))
            }
        }
    }
    let stream = match &r.stream {
        Some(v) if valid_stream_name(v.get_ref()) => v.get_ref().clone(),
        Some(v) => {
            return Err(ck.err(
                v.span(),
                format!("{:?} is not a valid stream name", v.get_ref()),
                "a JetStream stream name has no spaces, dots, `*`, `>`, path separators or control characters, e.g. stream = \"POLLHOOK\"",
            ))
        }
        None => {
            return Err(ck.err(
                s.span(),
                "a nats sink needs `stream`",
                "the JetStream stream the events must land in, e.g. stream = \"POLLHOOK\" (checked at start; create_stream = true creates it)",
            ))
        }
    };
    let subject = match &r.subject {
        None => subject::Template::parse(
            subject::DEFAULT_TEMPLATE,
        )
        .expect("the default template is valid"),
        Some(v) => subject::Template::parse(v.get_ref()).map_err(|why| {
            ck.err(
                v.span(),
                format!("`subject`: {why}"),
                "dot-separated tokens, each literal or one of {provider}, {account}, {type}, e.g. \"pollhook.{provider}.{account}.{type}\"",
            )
        })?,
    };
    let body = match r.body.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "payload")) => Body::Payload,
        Some((_, "envelope")) => Body::Envelope,
        Some((v, other)) => {
            return Err(ck.err(
                v.span(),
                format!("unknown `body` {other:?}"),
                "use \"payload\" (the webhook body, default) or \"envelope\" (the JSONL line)",
            ))
        }
    };
    let methods: Vec<(&str, std::ops::Range<usize>)> = [
        ("token", r.token.as_ref().map(|v| v.span())),
        ("user", r.user.as_ref().map(|v| v.span())),
        ("nkey_seed", r.nkey_seed.as_ref().map(|v| v.span())),
        ("creds", r.creds.as_ref().map(|v| v.span())),
    ]
    .into_iter()
    .filter_map(|(k, sp)| sp.map(|sp| (k, sp)))
    .collect();
    if let [_, (second, span), ..] = methods.as_slice() {
        // The line may hold an inline secret: point at it, never quote it.
        return Err(ck
            .err(
                span.clone(),
                format!("`{}` and `{second}` are both set", methods[0].0),
                "choose one way to authenticate: token, user with password, nkey_seed, or creds",
            )
            .without_snippet());
    }
    let auth = match (&r.token, &r.user, &r.password, &r.nkey_seed, &r.creds) {
        (Some(t), ..) => NatsAuth::Token(ck.secret(t, "token")),
        (_, Some(u), Some(p), ..) => NatsAuth::UserPassword {
            user: u.get_ref().clone(),
            password: ck.secret(p, "password"),
        },
        (_, Some(u), None, ..) => {
            return Err(ck.err(
                u.span(),
                "`user` without `password`",
                "add password = { file = \"/etc/pollhook/nats-password\" } (or env / credential / inline)",
            ))
        }
        (_, None, Some(p), ..) => {
            return Err(ck
                .err(
                    p.span(),
                    "`password` without `user`",
                    "add user = \"...\", or remove password",
                )
                .without_snippet())
        }
        (_, _, _, Some(k), _) => NatsAuth::NkeySeed(ck.secret(k, "nkey_seed")),
        (_, _, _, _, Some(c)) => NatsAuth::Creds(ck.secret(c, "creds")),
        _ => NatsAuth::None,
    };
    let path = |v: &Option<Spanned<String>>| v.as_ref().map(|p| PathBuf::from(p.get_ref()));
    let tls_client =
        match (&r.tls_cert_file, &r.tls_key_file) {
            (Some(c), Some(k)) => Some((PathBuf::from(c.get_ref()), PathBuf::from(k.get_ref()))),
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => return Err(ck.err(
                one.span(),
                "`tls_cert_file` and `tls_key_file` go together",
                "set both (PEM files of the client certificate and its private key), or neither",
            )),
        };
    let delivery = delivery(ck, r, nats_delivery_defaults(), 4096)?;
    Ok(NatsSettings {
        servers: urls,
        stream,
        subject,
        body,
        auth,
        tls_ca_file: path(&r.tls_ca_file),
        tls_client,
        create_stream: r.create_stream.as_ref().is_some_and(|v| *v.get_ref()),
        timeout: ck.positive(&r.timeout, "timeout", Duration::from_secs(10))?,
        delivery,
    })
}

/// JetStream's rule for stream names (they become subject tokens and file names).
fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
}

/// A list of non-empty strings; a present but empty list is an error (it would match nothing).
fn strings(
    ck: &Checker,
    v: &List<String>,
    key: &str,
    example: &str,
) -> Result<Vec<String>, ConfigError> {
    let Some(list) = v else { return Ok(Vec::new()) };
    if list.get_ref().is_empty() && key != "env" {
        return Err(ck.err(
            list.span(),
            format!("an empty `{key}` list matches nothing"),
            format!("remove the key to mean \"all\", or list values: {example}"),
        ));
    }
    list.get_ref()
        .iter()
        .map(|item| {
            if item.get_ref().is_empty() {
                Err(ck.err(
                    item.span(),
                    format!("an empty string in `{key}`"),
                    example.to_string(),
                ))
            } else {
                Ok(item.get_ref().clone())
            }
        })
        .collect()
}

/// `mode`: octal permission bits as a string ("0640"); the owner must keep read and write
/// (the sink reads its own tail), and nothing beyond rwx for owner, group and others.
fn file_mode(ck: &Checker, v: &Option<Spanned<String>>) -> Result<u32, ConfigError> {
    let Some(s) = v else {
        return Ok(crate::files::FILE_MODE);
    };
    match u32::from_str_radix(s.get_ref(), 8) {
        Ok(m) if m <= 0o777 && m & 0o600 == 0o600 => Ok(m),
        _ => Err(ck.err(
            s.span(),
            format!("`mode` {:?} is not a file mode pollhook can use", s.get_ref()),
            "octal permission bits as a string, at least owner read and write: \"0600\" (default: only the pollhook user) or \"0640\" (its group may read)",
        )),
    }
}

/// The delivery keys, with a kind's `defaults` and its highest `concurrency`.
fn delivery(
    ck: &Checker,
    r: &RawSink,
    defaults: Delivery,
    max_concurrency: i64,
) -> Result<Delivery, ConfigError> {
    let retry_schedule = match &r.retry_schedule {
        None => defaults.retry_schedule,
        Some(l) if l.get_ref().is_empty() => {
            return Err(ck.err(
                l.span(),
                "`retry_schedule` is empty",
                "list the waits before each retry, e.g. [\"5s\", \"30s\", \"2m\"]; the last one repeats",
            ))
        }
        Some(l) => l
            .get_ref()
            .iter()
            .map(|d| ck.duration(&Some(d.clone()), "retry_schedule", Duration::from_secs(5)))
            .collect::<Result<_, _>>()?,
    };
    let ordering =
        match r.ordering.as_ref().map(|o| (o, o.get_ref().as_str())) {
            None => defaults.ordering,
            Some((_, "in-order")) => DeliveryOrder::InOrder,
            Some((_, "per-document")) => DeliveryOrder::PerDocument,
            Some((o, other)) => return Err(ck.err(
                o.span(),
                format!("unknown `ordering` {other:?}"),
                "use \"in-order\" (default: commit order, head-of-line retry) or \"per-document\"",
            )),
        };
    let default_concurrency = match ordering {
        DeliveryOrder::InOrder => 1,
        DeliveryOrder::PerDocument => defaults.concurrency as i64,
    };
    let concurrency = ck.int(
        &r.concurrency,
        "concurrency",
        1..max_concurrency + 1,
        default_concurrency,
    )? as usize;
    if let (Some(c), DeliveryOrder::InOrder) = (&r.concurrency, ordering) {
        if concurrency > 1 {
            return Err(ck.err(
                c.span(),
                "`concurrency` above 1 needs ordering = \"per-document\"",
                "in-order delivery is one event at a time; add ordering = \"per-document\" to deliver different documents in parallel",
            ));
        }
    }
    Ok(Delivery {
        retry_schedule,
        max_attempts: ck.int(
            &r.max_attempts,
            "max_attempts",
            1..100_001,
            defaults.max_attempts as i64,
        )? as u32,
        ordering,
        concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[[accounts]]
name = "acme-kh"
provider = "caminvoice"
base_url = "https://sb-merchant.e-invoice.gov.kh"
client_id = "cid"
client_secret = "s"
[[accounts.members]]
endpoint_id = "KHUID00001234"
refresh_token = "rt-1"
"#;

    fn parse(sinks: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{BASE}{sinks}"), Path::new("p.toml"))
    }

    fn error(sinks: &str) -> (usize, String) {
        let e = parse(sinks).expect_err("should be rejected");
        let line = e.location().expect("located").0 - BASE.lines().count();
        (line, e.to_string())
    }

    #[test]
    fn globs_match_the_whole_type() {
        for (g, t, want) in [
            ("DOCUMENT.*", "DOCUMENT.DELIVERED", true),
            ("DOCUMENT.*", "ENTITY.REVOKED", false),
            ("*", "X", true),
            ("*.REVOKED", "ENTITY.REVOKED", true),
            ("DOC*UPDATED", "DOCUMENT.STATUS_UPDATED", true),
            ("DOC*UPDATED", "DOCUMENT.STATUS_UPDATED.X", false),
            ("ENTITY.REVOKED", "ENTITY.REVOKED", true),
            ("ENTITY.REVOKED", "ENTITY.REVOKEDX", false),
            ("A*A", "A", false),
        ] {
            assert_eq!(glob(g, t), want, "{g} vs {t}");
        }
        let f = Filter {
            events: vec!["DOCUMENT.*".into()],
            accounts: vec!["a".into()],
        };
        assert!(f.matches("DOCUMENT.RECEIVED", "a"));
        assert!(!f.matches("DOCUMENT.RECEIVED", "b"));
        assert!(!f.matches("ENTITY.REVOKED", "a"));
        assert!(Filter::default().matches("anything", "any"));
    }

    #[test]
    fn hook_and_webhook_sinks_get_their_defaults() {
        let c = parse(
            r#"
[[sinks]]
kind = "hook"
command = ["/bin/true"]
events = ["DOCUMENT.*"]
accounts = ["acme-kh"]

[[sinks]]
kind = "webhook"
url = "http://127.0.0.1:9/in"
secrets = ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", { env = "X" }]
ordering = "per-document"
concurrency = 4
retry_schedule = ["10ms"]
max_attempts = 3
"#,
        )
        .unwrap();
        let SinkKind::Hook(h) = &c.sinks[0].kind else {
            panic!()
        };
        assert_eq!(h.stdin, HookStdin::Payload);
        assert_eq!(h.timeout, Duration::from_secs(30));
        assert_eq!(h.delivery, Delivery::default());
        assert_eq!(
            h.delivery.retry_schedule,
            [5, 30, 120, 600, 1800, 3600].map(Duration::from_secs)
        );
        assert_eq!(c.sinks[0].filter.accounts, vec!["acme-kh"]);
        let SinkKind::Webhook(w) = &c.sinks[1].kind else {
            panic!()
        };
        assert_eq!(c.sinks[1].name, "webhook");
        assert_eq!(w.secrets.len(), 2);
        assert_eq!(w.timeout, Duration::from_secs(10));
        assert_eq!(w.retry_after_cap, Duration::from_secs(600));
        assert_eq!(w.delivery.ordering, DeliveryOrder::PerDocument);
        assert_eq!(w.delivery.concurrency, 4);
        assert_eq!(w.delivery.retry_schedule, [Duration::from_millis(10)]);
        assert_eq!(w.delivery.max_attempts, 3);
    }

    #[test]
    fn sink_errors_name_line_column_and_fix() {
        // (sinks text, line within it, words)
        let cases = [
            ("[[sinks]]\nkind = \"hook\"\n", 1, "needs `command`"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = []\n", 3, "at least the program"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nurl = \"http://a\"\n", 4, "`url` does not apply to a hook sink"),
            ("[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\ntimeout = \"1s\"\n", 4, "does not apply to a jsonl sink"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nstdin = \"body\"\n", 4, "unknown `stdin`"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nenv = [\"A=B\"]\n", 4, "not an environment variable name"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nconcurrency = 4\n", 4, "needs ordering = \"per-document\""),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nordering = \"random\"\n", 4, "unknown `ordering`"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nretry_schedule = [\"5s\", \"soon\"]\n", 4, "not a duration"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nmax_attempts = 0\n", 4, "out of range"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\ntimeout = \"0s\"\n", 4, "cannot be zero"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\nevents = []\n", 4, "matches nothing"),
            ("[[sinks]]\nkind = \"hook\"\ncommand = [\"x\"]\naccounts = [\"acme\"]\n", 4, "not a configured account"),
            ("[[sinks]]\nkind = \"webhook\"\nurl = \"http://a/\"\n", 1, "needs `secrets`"),
            ("[[sinks]]\nkind = \"webhook\"\nurl = \"ftp://a/\"\nsecrets = [\"whsec_AAAA\"]\n", 3, "not an http(s) URL"),
            ("[[sinks]]\nkind = \"webhook\"\nurl = \"http://a/\"\nsecrets = [\"hunter2\"]\n", 4, "malformed"),
            ("[[sinks]]\nkind = \"webhook\"\nurl = \"http://a/\"\nsecrets = [\"whsec_!!\"]\n", 4, "malformed"),
            ("[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\nrotate_keep = 3\n", 4, "without `rotate_bytes`"),
            ("[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\nrotate_bytes = 10\n", 4, "out of range"),
            ("[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\nrotate = 10\n", 4, "unknown field `rotate`"),
            ("[[sinks]]\nkind = \"syslog\"\n", 2, "unknown sink kind"),
        ];
        for (text, line, words) in cases {
            let (l, msg) = error(text);
            assert_eq!(l, line, "{text}\n{msg}");
            assert!(msg.contains(words), "{text}: wanted {words:?} in\n{msg}");
            assert!(msg.contains("help: "), "{msg}");
            assert!(!msg.contains("hunter2"), "a secret in an error: {msg}");
        }
    }

    #[test]
    fn nats_sinks_get_their_defaults_and_auth() {
        let c = parse(
            r#"
[[sinks]]
kind = "nats"
servers = ["127.0.0.1:4222", "tls://nats.example:4443"]
stream = "POLLHOOK"

[[sinks]]
kind = "nats"
name = "n2"
servers = ["nats://h:4222"]
stream = "S"
subject = "erp.{account}.{type}"
body = "envelope"
user = "erp"
password = { env = "NATS_PASSWORD" }
tls_ca_file = "/etc/ssl/ca.pem"
tls_cert_file = "/etc/ssl/c.pem"
tls_key_file = "/etc/ssl/k.pem"
create_stream = true
ordering = "in-order"
"#,
        )
        .unwrap();
        let SinkKind::Nats(n) = &c.sinks[0].kind else {
            panic!()
        };
        assert_eq!(c.sinks[0].name, "nats");
        assert_eq!(
            n.servers,
            vec!["nats://127.0.0.1:4222", "tls://nats.example:4443"]
        );
        assert_eq!(
            n.subject.to_string(),
            "pollhook.{provider}.{account}.{type}"
        );
        assert_eq!(n.body, Body::Payload);
        assert!(matches!(n.auth, NatsAuth::None));
        assert!(!n.create_stream);
        assert_eq!(n.timeout, Duration::from_secs(10));
        assert_eq!(n.delivery, nats_delivery_defaults());
        assert_eq!(n.delivery.ordering, DeliveryOrder::PerDocument);
        assert_eq!(n.delivery.concurrency, 256);
        let SinkKind::Nats(n) = &c.sinks[1].kind else {
            panic!()
        };
        assert_eq!(n.subject.pattern(), "erp.*.*");
        assert_eq!(n.body, Body::Envelope);
        assert!(matches!(&n.auth, NatsAuth::UserPassword { user, .. } if user == "erp"));
        assert!(n.auth.describe().contains("from env NATS_PASSWORD"));
        assert!(n.tls_client.is_some() && n.tls_ca_file.is_some() && n.create_stream);
        assert_eq!(
            (n.delivery.ordering, n.delivery.concurrency),
            (DeliveryOrder::InOrder, 1)
        );
        assert_eq!(
            c.secrets().len(),
            3,
            "client_secret, refresh_token, nats password"
        );
    }

    #[test]
    fn nats_sink_errors_name_line_column_and_fix() {
        let head = "[[sinks]]\nkind = \"nats\"\n";
        let ok = "servers = [\"nats://h:4222\"]\nstream = \"S\"\n";
        let cases = [
            (format!("{head}stream = \"S\"\n"), 1, "needs `servers`"),
            (
                format!("{head}servers = []\nstream = \"S\"\n"),
                3,
                "`servers` is empty",
            ),
            (
                format!("{head}servers = [\"http://h\"]\nstream = \"S\"\n"),
                3,
                "not a nats:// or tls:// URL",
            ),
            (
                format!("{head}servers = [\"nats://u:hunter2@h:4222\"]\nstream = \"S\"\n"),
                3,
                "carries credentials",
            ),
            (
                format!("{head}servers = [\"nats://h\"]\n"),
                1,
                "needs `stream`",
            ),
            (
                format!("{head}servers = [\"nats://h\"]\nstream = \"a.b\"\n"),
                4,
                "not a valid stream name",
            ),
            (format!("{head}{ok}subject = \"a.*\"\n"), 5, "wildcard"),
            (
                format!("{head}{ok}subject = \"a.{{member}}\"\n"),
                5,
                "not a placeholder",
            ),
            (format!("{head}{ok}body = \"raw\"\n"), 5, "unknown `body`"),
            (
                format!("{head}{ok}token = \"t\"\nnkey_seed = \"hunter2\"\n"),
                6,
                "`token` and `nkey_seed` are both set",
            ),
            (
                format!("{head}{ok}user = \"u\"\n"),
                5,
                "`user` without `password`",
            ),
            (
                format!("{head}{ok}password = \"hunter2\"\n"),
                5,
                "`password` without `user`",
            ),
            (
                format!("{head}{ok}tls_cert_file = \"/c\"\n"),
                5,
                "go together",
            ),
            (format!("{head}{ok}concurrency = 5000\n"), 5, "out of range"),
            (
                format!("{head}{ok}url = \"http://x\"\n"),
                5,
                "`url` does not apply to a nats sink",
            ),
            (format!("{head}{ok}timeout = \"0s\"\n"), 5, "cannot be zero"),
        ];
        for (text, line, words) in cases {
            let (l, msg) = error(&text);
            assert_eq!(l, line, "{text}\n{msg}");
            assert!(msg.contains(words), "{text}: wanted {words:?} in\n{msg}");
            assert!(msg.contains("help: "), "{msg}");
            assert!(!msg.contains("hunter2"), "a secret in an error: {msg}");
        }
    }

    #[test]
    fn whsec_keys_decode() {
        assert_eq!(whsec_key("whsec_AAEC").unwrap(), vec![0, 1, 2]);
        assert!(whsec_key("AAEC").is_err());
        assert!(whsec_key("whsec_").is_err());
    }

    #[test]
    fn retention_is_a_daemon_key() {
        let c = Config::parse(
            &format!(
                "[daemon]\nretention = \"2d\"\n{BASE}[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\n"
            ),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(c.daemon.retention, Duration::from_secs(2 * 86_400));
        assert_eq!(
            parse("[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\n")
                .unwrap()
                .daemon
                .retention,
            Duration::from_secs(7 * 86_400)
        );
    }
}
