//! Property tests of the parsers. Fuzzing: bad input never panics, for every API response
//! parser (CamInvoice and OnlinePajak) and the config parser — arbitrary bytes, arbitrary JSON,
//! and valid answers with unknown fields and unknown enum values, which must be ignored and
//! carried through. Properties: a parsed poll item (and detail, and OnlinePajak invoice) has the
//! id and the instant it was given, in every timestamp form the providers use; a config that
//! parses re-serializes to the same values.

use pollhook::config::{Config, ProviderSettings, SecretSource, SinkKind, Start};
use pollhook::providers::caminvoice::model::{self as ci, DocState, Side};
use pollhook::providers::caminvoice::token::parse_refresh;
use pollhook::providers::onlinepajak::api::ApiMap;
use pollhook::providers::onlinepajak::model::{self as op, Invoice, InvoiceState};
use pollhook::time::Millis;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Arbitrary JSON, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        // the keys and values the parsers look for, so that shapes get close to real ones
        prop::sample::select(vec![
            "document_id",
            "updated_at",
            "status",
            "2024-03-07T07:16:07.859Z",
            "APPROVED",
            "SEND",
            "data",
            "content"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "document_id",
                    "updated_at",
                    "type",
                    "status",
                    "documents",
                    "data",
                    "pagination",
                    "total_pages",
                    "token",
                    "access_token",
                    "expire_in",
                    "expireIn",
                    "content",
                    "totalPages",
                    "id",
                    "approvalStatus",
                    "revision",
                    "updatedAt",
                    "error",
                    "errors",
                    "message",
                    "x"
                ])
                .prop_map(String::from),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn every_parser(body: &[u8]) {
    let map = ApiMap::default();
    let _ = ci::poll_items(body);
    let _ = ci::detail(body);
    let _ = ci::list_page(body);
    let _ = ci::error_body(body);
    let _ = parse_refresh(body, 1_700_000_000_000);
    let _ = op::page(body, &map);
    let _ = op::retrieved(body, &map);
    let _ = op::error_text(body);
    let _ = Invoice::parse(body, &map);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        every_parser(&body);
    }

    #[test]
    fn no_parser_panics_on_arbitrary_json(v in any_json()) {
        every_parser(v.to_string().as_bytes());
    }

    #[test]
    fn no_parser_panics_on_truncated_answers(v in any_json(), cut in 0usize..400) {
        let text = v.to_string();
        every_parser(&text.as_bytes()[..cut.min(text.len())]);
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_statuses_carried(
        status in "[A-Z_]{1,24}|.{0,16}",
        extra_key in "[a-z_]{1,12}",
        extra in any_json(),
        wrapped in any::<bool>(),
    ) {
        let mut item = json!({"document_id": "d1", "updated_at": "2024-03-07T07:16:07.859Z", "type": "SEND"});
        item[&extra_key] = extra.clone();
        let item = if extra_key == "document_id" || extra_key == "updated_at" || extra_key == "type" { json!({"document_id": "d1", "updated_at": "2024-03-07T07:16:07.859Z", "type": "SEND"}) } else { item };
        let body = if wrapped { json!({"documents": [item], "note": extra.clone()}) } else { json!([item]) };
        let answer = ci::poll_items(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(answer.items.len(), 1);
        prop_assert_eq!(answer.unusable.count, 0);
        prop_assert_eq!(answer.items[0].side, Some(Side::Send));

        let mut detail = json!({"document_id": "d1", "status": status.clone(), "supplier_id": "K"});
        if !matches!(extra_key.as_str(), "document_id" | "status" | "supplier_id") {
            detail[&extra_key] = extra;
        }
        let d = ci::detail(detail.to_string().as_bytes()).unwrap();
        let want = if status.is_empty() { None } else { Some(status.clone()) };
        prop_assert_eq!(d.status.clone(), want);
        let state = DocState { side: Side::Receive, status: status.clone(), updated_at: 5 };
        prop_assert_eq!(DocState::decode(&state.encode()), Some(state));
        let inv = InvoiceState { status: status.clone(), revision: -3, document_type: status, updated_at: 9 };
        prop_assert_eq!(InvoiceState::decode(&inv.encode()), Some(inv));
    }

    #[test]
    fn the_config_parser_never_panics(text in ".{0,300}") {
        let _ = Config::parse(&text, "fuzz.toml".as_ref());
    }

    #[test]
    fn a_damaged_example_config_fails_cleanly_with_a_location(cut in 0usize..4000, junk in "[=\\[\\]\"{}a-z ]{1,3}") {
        let example = include_str!("../config.toml.example");
        let at = example.char_indices().map(|(i, _)| i).nth(cut % example.chars().count()).unwrap_or(0);
        let damaged = format!("{}{}{}", &example[..at], junk, &example[at..]);
        if let Err(e) = Config::parse(&damaged, "damaged.toml".as_ref()) {
            let text = e.to_string();
            prop_assert!(text.starts_with("damaged.toml"));
            prop_assert!(text.contains("help: "), "{}", text);
        }
    }
}

// ------------------------------------------------------------- ids and instants carried

/// 2000-01-01 .. 2100-01-01, in milliseconds.
fn instant() -> impl Strategy<Value = Millis> {
    946_684_800_000i64..4_102_444_800_000
}

/// An instant written in one of the forms the providers use, and the instant it means.
fn written_instant() -> impl Strategy<Value = (Value, Millis)> {
    (instant(), 0usize..6, -12i32..=14).prop_map(|(ms, form, hours)| {
        let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        let offset = chrono::FixedOffset::east_opt(hours * 3600).unwrap();
        let secs = ms.div_euclid(1000) * 1000;
        match form {
            // CamInvoice's documented form
            0 => (
                Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
                ms,
            ),
            // the same instant with a zone offset
            1 => (
                Value::from(
                    t.with_timezone(&offset)
                        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
                        .to_string(),
                ),
                ms,
            ),
            // zone-less: UTC
            2 => (
                Value::from(t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()),
                ms,
            ),
            3 => (
                Value::from(t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
                ms,
            ),
            // epoch milliseconds and epoch seconds as numbers
            4 => (Value::from(ms), ms),
            _ => (Value::from(ms.div_euclid(1000)), secs),
        }
    })
}

fn document_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "[A-Za-z0-9_.-]{1,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_parsed_poll_item_has_the_id_and_the_instant_it_was_given(
        items in prop::collection::vec((document_id(), written_instant(), any::<bool>()), 0..20),
        wrapped in any::<bool>(),
    ) {
        let json_items: Vec<Value> = items
            .iter()
            .map(|(id, (at, _), send)| json!({
                "document_id": id,
                "updated_at": at,
                "type": if *send { "SEND" } else { "RECEIVE" },
            }))
            .collect();
        let body = if wrapped { json!({"documents": json_items}) } else { Value::from(json_items) };
        let answer = ci::poll_items(body.to_string().as_bytes()).unwrap();
        prop_assert!(answer.unusable.count == 0, "{:?}", answer.unusable);
        let got: Vec<(String, Millis, Option<Side>)> = answer
            .items
            .into_iter()
            .map(|p| (p.document_id, p.updated_at, p.side))
            .collect();
        let want: Vec<(String, Millis, Option<Side>)> = items
            .into_iter()
            .map(|(id, (_, ms), send)| (id, ms, Some(if send { Side::Send } else { Side::Receive })))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_parsed_detail_has_the_id_status_parties_and_instants_it_was_given(
        id in document_id(),
        status in "[A-Z_]{1,24}",
        (created, created_ms) in written_instant(),
        (updated, updated_ms) in written_instant(),
        supplier in "KHUID[0-9]{8}",
        customer in "KHUID[0-9]{8}",
    ) {
        let body = json!({
            "document_id": id, "status": status, "supplier_id": supplier,
            "customer_id": customer, "created_at": created, "updated_at": updated,
        });
        let d = ci::detail(body.to_string().as_bytes()).unwrap();
        prop_assert_eq!(d.document_id, id);
        prop_assert_eq!(d.status, Some(status));
        prop_assert_eq!(d.supplier_id, Some(supplier));
        prop_assert_eq!(d.customer_id, Some(customer));
        prop_assert_eq!(d.created_at, Some(created_ms));
        prop_assert_eq!(d.updated_at, Some(updated_ms));
    }

    #[test]
    fn a_parsed_invoice_has_the_id_revision_status_and_instant_it_was_given(
        id in document_id(),
        (updated, updated_ms) in written_instant(),
        revision in 0i64..1000,
        revision_as_text in any::<bool>(),
        status in prop::sample::select(vec!["APPROVED", "REJECTED", "DRAFT", "APPROVAL_IN_PROGRESS"]),
        approved_at in "2[0-9]{3}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.[0-9]{3}Z",
    ) {
        let map = ApiMap::default();
        let v = json!({
            "id": id,
            "updatedAt": updated,
            "revision": if revision_as_text { Value::from(revision.to_string()) } else { Value::from(revision) },
            "approvalStatus": status,
            "approvedAt": approved_at,
        });
        let inv = Invoice::parse(v.to_string().as_bytes(), &map).unwrap();
        prop_assert_eq!(inv.id, id);
        prop_assert_eq!(inv.updated_at, Some(updated_ms));
        prop_assert_eq!(inv.revision, revision);
        prop_assert_eq!(inv.approval_status.as_deref(), Some(status));
        // Verbatim: it becomes the webhook's event_date.
        prop_assert_eq!(inv.approved_at, Some(approved_at));
    }
}

// ------------------------------------------------------------- config round trip

/// The values a config sets, as a test-side model: generated, written as TOML, parsed by
/// `Config::parse`, read back out of the parsed `Config`, and written again.
#[derive(Debug, Clone, PartialEq)]
struct Model {
    state_dir: String,
    schedule: String,
    resync: Option<String>,
    start: Option<Millis>,
    log_level: String,
    retention: (u64, &'static str),
    accounts: Vec<AccountModel>,
    sinks: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct AccountModel {
    name: String,
    base_url: String,
    timeout: (u64, &'static str),
    max_retries: u32,
    retry_base: (u64, &'static str),
    concurrency: usize,
    overlap: (u64, &'static str),
    page_size: u32,
    provider: ProviderModel,
}

#[derive(Debug, Clone, PartialEq)]
enum ProviderModel {
    CamInvoice {
        client_id: String,
        client_secret: SecretSource,
        members: Vec<(String, SecretSource)>,
        revoke_after_refusals: u32,
    },
    OnlinePajak {
        npwp: String,
        token: SecretSource,
        raw_auth: bool,
        rate_limit: u32,
        rate_burst: u32,
    },
}

const UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

fn duration() -> impl Strategy<Value = (u64, &'static str)> {
    (
        1u64..5000,
        prop::sample::select(UNITS.iter().map(|u| u.0).collect::<Vec<_>>()),
    )
}

fn millis_of(d: (u64, &'static str)) -> u128 {
    u128::from(d.0) * u128::from(UNITS.iter().find(|u| u.0 == d.1).unwrap().1)
}

/// The duration as the model writes it: `Duration` back to (value, unit) is not unique, so
/// the model compares durations by their length.
fn same_length(d: std::time::Duration, m: (u64, &'static str)) -> bool {
    d.as_millis() == millis_of(m)
}

fn secret() -> impl Strategy<Value = SecretSource> {
    prop_oneof![
        "[A-Za-z0-9._~+/=-]{1,48}".prop_map(SecretSource::Inline),
        "[A-Z][A-Z0-9_]{0,20}".prop_map(SecretSource::Env),
        "/[a-z0-9_.-]{1,12}(/[a-z0-9_.-]{1,12}){0,2}".prop_map(|p| SecretSource::File(p.into())),
        "[a-z][a-z0-9_.-]{0,20}".prop_map(SecretSource::Credential),
    ]
}

fn text() -> impl Strategy<Value = String> {
    // Quotes, backslashes, non-ASCII: what TOML escaping must carry through.
    "[A-Za-z0-9 _.\\\"'#=é中-]{1,24}"
}

fn provider() -> impl Strategy<Value = ProviderModel> {
    prop_oneof![
        (
            text(),
            secret(),
            prop::collection::btree_map("KHUID[0-9]{8}", secret(), 0..4),
            1u32..=100,
        )
            .prop_map(
                |(client_id, client_secret, members, revoke_after_refusals)| {
                    ProviderModel::CamInvoice {
                        client_id,
                        client_secret,
                        members: members.into_iter().collect(),
                        revoke_after_refusals,
                    }
                }
            ),
        (
            "[0-9]{2}\\.[0-9]{3}\\.[0-9]{3}\\.[0-9]-[0-9]{3}\\.[0-9]{3}|[0-9]{16}",
            secret(),
            any::<bool>(),
            1u32..=95,
            1u32..=5,
        )
            .prop_map(|(npwp, token, raw_auth, rate_limit, rate_burst)| {
                ProviderModel::OnlinePajak {
                    npwp,
                    token,
                    raw_auth,
                    rate_limit,
                    rate_burst,
                }
            }),
    ]
}

prop_compose! {
    fn account()(
        base_url in "https?://[a-z]{1,10}(\\.[a-z]{2,5}){1,2}(:[1-9][0-9]{1,3})?(/[a-z0-9.]{1,8}){0,2}",
        timeout in duration(),
        max_retries in 0u32..=20,
        retry_base in duration(),
        concurrency in 1usize..=256,
        overlap in duration(),
        page_size in 1u32..=1000,
        provider in provider(),
    ) -> AccountModel {
        AccountModel {
            name: String::new(),
            base_url,
            timeout,
            max_retries,
            retry_base,
            concurrency,
            overlap,
            page_size,
            provider,
        }
    }
}

const SCHEDULES: [&str; 5] = [
    "0 */5 * * * *",
    "*/10 * * * * *",
    "0 0 * * * *",
    "30 15 3 * * 1-5",
    "* * * * * *",
];

fn model() -> impl Strategy<Value = Model> {
    (
        "/[a-zA-Z0-9 _.é-]{1,16}(/[a-zA-Z0-9 _.-]{1,16}){0,2}",
        prop::sample::select(SCHEDULES.to_vec()),
        prop::option::of(prop::sample::select(SCHEDULES.to_vec())),
        prop::option::of(instant()),
        prop::sample::select(vec!["error", "warn", "info", "debug", "trace"]),
        duration(),
        prop::collection::vec(("[a-z][a-z0-9_]{0,10}", account()), 1..4),
        prop::collection::vec("/[a-z0-9_.-]{1,12}(/[a-z0-9_.-]{1,12}){0,2}", 1..3),
    )
        .prop_map(
            |(state_dir, schedule, resync, start, log_level, retention, accounts, sinks)| Model {
                state_dir,
                schedule: schedule.to_string(),
                resync: resync.map(str::to_string),
                start,
                log_level: log_level.to_string(),
                retention,
                // Names must be unique: the index makes them so.
                accounts: accounts
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, a))| AccountModel {
                        name: format!("{name}-{i}"),
                        ..a
                    })
                    .collect(),
                sinks: sinks
                    .into_iter()
                    .enumerate()
                    .map(|(i, path)| (format!("sink-{i}"), path))
                    .collect(),
            },
        )
}

/// A TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn dur(d: (u64, &str)) -> String {
    q(&format!("{}{}", d.0, d.1))
}

fn secret_toml(s: &SecretSource) -> String {
    match s {
        SecretSource::Inline(v) => q(v),
        SecretSource::Env(n) => format!("{{ env = {} }}", q(n)),
        SecretSource::File(p) => format!("{{ file = {} }}", q(&p.display().to_string())),
        SecretSource::Credential(n) => format!("{{ credential = {} }}", q(n)),
    }
}

fn render(m: &Model) -> String {
    let mut t = String::from("[daemon]\n");
    t += &format!("state_dir = {}\n", q(&m.state_dir));
    t += &format!("schedule = {}\n", q(&m.schedule));
    t += &format!(
        "resync_schedule = {}\n",
        q(m.resync.as_deref().unwrap_or("off"))
    );
    let start = m.start.map_or("now".to_string(), pollhook::time::format_ms);
    t += &format!("start = {}\n", q(&start));
    t += &format!("log_level = {}\n", q(&m.log_level));
    t += &format!("retention = {}\n", dur(m.retention));
    for a in &m.accounts {
        t += "\n[[accounts]]\n";
        t += &format!("name = {}\n", q(&a.name));
        let kind = match a.provider {
            ProviderModel::CamInvoice { .. } => "caminvoice",
            ProviderModel::OnlinePajak { .. } => "onlinepajak",
        };
        t += &format!("provider = {}\n", q(kind));
        t += &format!("base_url = {}\n", q(&a.base_url));
        t += &format!(
            "timeout = {}\nmax_retries = {}\n",
            dur(a.timeout),
            a.max_retries
        );
        t += &format!(
            "retry_base = {}\nconcurrency = {}\n",
            dur(a.retry_base),
            a.concurrency
        );
        t += &format!(
            "overlap = {}\npage_size = {}\n",
            dur(a.overlap),
            a.page_size
        );
        match &a.provider {
            ProviderModel::CamInvoice {
                client_id,
                client_secret,
                members,
                revoke_after_refusals,
            } => {
                t += &format!("client_id = {}\n", q(client_id));
                t += &format!("client_secret = {}\n", secret_toml(client_secret));
                t += &format!("revoke_after_refusals = {revoke_after_refusals}\n");
                for (endpoint, token) in members {
                    t += "\n[[accounts.members]]\n";
                    t += &format!("endpoint_id = {}\n", q(endpoint));
                    t += &format!("refresh_token = {}\n", secret_toml(token));
                }
            }
            ProviderModel::OnlinePajak {
                npwp,
                token,
                raw_auth,
                rate_limit,
                rate_burst,
            } => {
                t += &format!("npwp = {}\ntoken = {}\n", q(npwp), secret_toml(token));
                t += &format!(
                    "auth_scheme = {}\n",
                    q(if *raw_auth { "raw" } else { "bearer" })
                );
                t += &format!("rate_limit = {rate_limit}\nrate_burst = {rate_burst}\n");
            }
        }
    }
    for (name, path) in &m.sinks {
        t += &format!(
            "\n[[sinks]]\nkind = \"jsonl\"\nname = {}\npath = {}\n",
            q(name),
            q(path)
        );
    }
    t
}

/// Reads the model's values back out of a parsed config. Durations come back as lengths; the
/// model's own (value, unit) is kept where the length agrees, so that equal configs compare
/// equal.
fn read_back(c: &Config, like: &Model) -> Model {
    let d = &c.daemon;
    let keep = |got: std::time::Duration, want: (u64, &'static str)| {
        if same_length(got, want) {
            want
        } else {
            (got.as_millis() as u64, "ms")
        }
    };
    Model {
        state_dir: d.state_dir.display().to_string(),
        schedule: d.schedule.0.clone(),
        resync: d.resync_schedule.as_ref().map(|s| s.0.clone()),
        start: match d.start {
            Start::Now => None,
            Start::At(ms) => Some(ms),
        },
        log_level: d.log_level.clone(),
        retention: keep(d.retention, like.retention),
        accounts: c
            .accounts
            .iter()
            .zip(&like.accounts)
            .map(|(a, l)| AccountModel {
                name: a.name.clone(),
                base_url: match &a.provider {
                    ProviderSettings::CamInvoice(s) => s.base_url.clone(),
                    ProviderSettings::OnlinePajak(s) => s.base_url.clone(),
                },
                timeout: keep(a.http.timeout, l.timeout),
                max_retries: a.http.max_retries,
                retry_base: keep(a.http.retry_base, l.retry_base),
                concurrency: a.http.concurrency,
                overlap: keep(
                    match &a.provider {
                        ProviderSettings::CamInvoice(s) => s.overlap,
                        ProviderSettings::OnlinePajak(s) => s.overlap,
                    },
                    l.overlap,
                ),
                page_size: match &a.provider {
                    ProviderSettings::CamInvoice(s) => s.page_size,
                    ProviderSettings::OnlinePajak(s) => s.page_size,
                },
                provider: match &a.provider {
                    ProviderSettings::CamInvoice(s) => ProviderModel::CamInvoice {
                        client_id: s.client_id.clone(),
                        client_secret: s.client_secret.source.clone(),
                        members: s
                            .members
                            .iter()
                            .map(|m| (m.endpoint_id.clone(), m.refresh_token.source.clone()))
                            .collect(),
                        revoke_after_refusals: s.revoke_after_refusals,
                    },
                    ProviderSettings::OnlinePajak(s) => ProviderModel::OnlinePajak {
                        npwp: s.npwp.clone(),
                        token: s.token.source.clone(),
                        raw_auth: s.raw_auth,
                        rate_limit: s.rate_limit,
                        rate_burst: s.rate_burst,
                    },
                },
            })
            .collect(),
        sinks: c
            .sinks
            .iter()
            .map(|s| match &s.kind {
                SinkKind::Jsonl(j) => (s.name.clone(), j.path.display().to_string()),
                other => panic!("not a jsonl sink: {other:?}"),
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_config_that_parses_re_serializes_to_the_same_values(m in model()) {
        let text = render(&m);
        let parsed = Config::parse(&text, "gen.toml".as_ref())
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        prop_assert_eq!(parsed.accounts.len(), m.accounts.len());
        let back = read_back(&parsed, &m);
        prop_assert_eq!(&back, &m, "{}", text);
        // And once more: written from what was parsed, parsed again, the same values.
        let again = Config::parse(&render(&back), "again.toml".as_ref()).unwrap();
        prop_assert_eq!(read_back(&again, &back), m);
    }
}
