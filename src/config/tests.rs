//! Config table tests: each case is a TOML text and what check must say about it.

use super::*;

const GOOD: &str = r#"
[daemon]
state_dir = "/tmp/ph"
schedule = "*/10 * * * * *"
start = "2026-03-01T00:00:00Z"

[[accounts]]
name = "acme-kh"
provider = "caminvoice"
base_url = "https://sb-merchant.e-invoice.gov.kh/"
client_id = "cid"
client_secret = { env = "ACME_SECRET" }
overlap = "5m"

[[accounts.members]]
endpoint_id = "KHUID00001234"
refresh_token = "rt-1"

[[sinks]]
kind = "jsonl"
path = "/tmp/ph/events.jsonl"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("pollhook.toml"))
}

/// Replaces `from` by `to` in the good config and returns the error text.
fn error_after(from: &str, to: &str) -> ConfigError {
    assert!(GOOD.contains(from), "fixture lacks {from:?}");
    parse(&GOOD.replacen(from, to, 1)).expect_err("config should be rejected")
}

#[test]
fn a_good_config_validates_with_defaults_filled_in() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.daemon.state_dir, PathBuf::from("/tmp/ph"));
    assert_eq!(c.daemon.start, Start::At(1_772_323_200_000));
    assert_eq!(
        c.daemon.resync_schedule,
        Some(Schedule("0 30 3 * * *".into()))
    );
    let ProviderSettings::CamInvoice(ci) = &c.accounts[0].provider else {
        panic!("not caminvoice")
    };
    assert_eq!(ci.base_url, "https://sb-merchant.e-invoice.gov.kh");
    assert_eq!(ci.overlap, Duration::from_secs(300));
    assert_eq!(ci.list_send_type, "send");
    assert_eq!(
        ci.members[0].refresh_token.origin,
        "pollhook.toml:17:17 (refresh_token)"
    );
    assert_eq!(c.accounts[0].http, HttpSettings::default());
    assert_eq!(c.sinks[0].name, "jsonl");
}

#[test]
fn errors_name_line_column_and_fix() {
    // (replace, with, line, column, words the message must contain)
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "client_id = \"cid\"",
            "clinet_id = \"cid\"",
            11,
            1,
            "unknown field `clinet_id`",
        ),
        (
            "schedule = \"*/10 * * * * *\"",
            "schedule = \"*/10 * * *\"",
            4,
            12,
            "not a valid cron expression",
        ),
        (
            "overlap = \"5m\"",
            "overlap = \"5 parsecs\"",
            13,
            11,
            "not a duration",
        ),
        (
            "provider = \"caminvoice\"",
            "provider = \"camnvoice\"",
            9,
            12,
            "unknown provider",
        ),
        (
            "start = \"2026-03-01T00:00:00Z\"",
            "start = \"yesterday\"",
            5,
            9,
            "neither \"now\"",
        ),
        (
            "base_url = \"https://sb-merchant.e-invoice.gov.kh/\"",
            "base_url = \"sb-merchant\"",
            10,
            12,
            "not an http(s) URL",
        ),
        (
            "kind = \"jsonl\"",
            "kind = \"syslog\"",
            20,
            8,
            "unknown sink kind",
        ),
        ("[daemon]", "[deamon]", 2, 2, "unknown field `deamon`"),
        ("overlap = \"5m\"", "overlap = 5", 13, 11, "invalid type"),
        (
            "refresh_token = \"rt-1\"",
            "refresh_token = { envv = \"X\" }",
            17,
            17,
            "unknown field `envv`",
        ),
    ];
    for (from, to, line, col, words) in cases {
        let e = error_after(from, to);
        let text = e.to_string();
        assert_eq!(e.location(), Some((*line, *col)), "{from} -> {to}:\n{text}");
        assert!(
            text.contains(words),
            "{from} -> {to}: wanted {words:?} in\n{text}"
        );
        assert!(text.contains("help: "), "no help line in\n{text}");
        assert!(text.starts_with("pollhook.toml:"), "{text}");
    }
}

#[test]
fn missing_required_keys_point_at_the_account() {
    let e = error_after("client_id = \"cid\"\n", "");
    assert!(e.to_string().contains("missing `client_id`"), "{e}");
    assert_eq!(
        e.location().map(|l| l.0),
        Some(7),
        "points at the [[accounts]] header"
    );
}

#[test]
fn duplicates_are_rejected() {
    let twice = GOOD.replace(
        "[[sinks]]",
        "[[accounts.members]]\nendpoint_id = \"KHUID00001234\"\nrefresh_token = \"x\"\n\n[[sinks]]",
    );
    let e = parse(&twice).unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    let two_sinks = format!("{GOOD}\n[[sinks]]\nkind = \"jsonl\"\npath = \"/tmp/other\"\n");
    let e = parse(&two_sinks).unwrap_err();
    assert!(e.to_string().contains("used twice"), "{e}");
}

#[test]
fn no_sinks_or_accounts_is_an_error() {
    let e = parse("[daemon]\nstate_dir = \"/x\"\n").unwrap_err();
    assert!(e.to_string().contains("no [[accounts]]"), "{e}");
}

#[test]
fn secrets_resolve_with_their_origin_in_errors() {
    let c = parse(GOOD).unwrap();
    let errors = c.resolve_secrets().unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .to_string()
            .starts_with("pollhook.toml:12:17 (client_secret): environment variable ACME_SECRET"),
        "{}",
        errors[0]
    );
}

#[test]
fn the_example_config_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.accounts.is_empty());
}

const OP: &str = r#"
[[accounts]]
name = "pt-contoh"
provider = "onlinepajak"
base_url = "https://openapi.demo-achilles.systems/v2.0"
npwp = "12.312.312.0-001.123"
token = { env = "OP_TOKEN" }
auth_scheme = "raw"

[accounts.api]
approval_status = "status"
"#;

#[test]
fn an_onlinepajak_account_beside_a_caminvoice_one() {
    let c = parse(&format!("{GOOD}{OP}")).unwrap();
    assert_eq!(c.accounts.len(), 2);
    let ProviderSettings::OnlinePajak(o) = &c.accounts[1].provider else {
        panic!("not onlinepajak")
    };
    assert_eq!(o.npwp, "12.312.312.0-001.123");
    assert!(o.raw_auth);
    assert_eq!((o.rate_limit, o.rate_burst, o.page_size), (90, 5, 100));
    assert_eq!(o.api.approval_status.as_deref(), Some("status"));
    assert_eq!(
        o.api.updated_at, None,
        "what the override leaves alone stays the provider's assumption (api.rs)"
    );
    assert_eq!(c.accounts[1].http.retry_base, Duration::from_secs(5));
    assert_eq!(c.secrets().len(), 3);
}

#[test]
fn onlinepajak_errors_are_located() {
    let base = format!("{GOOD}{OP}");
    // (replace, with, words)
    let cases = [
        (
            "auth_scheme = \"raw\"",
            "auth_scheme = \"basic\"",
            "unknown `auth_scheme`",
        ),
        (
            "auth_scheme = \"raw\"",
            "client_id = \"x\"",
            "does not apply to provider \"onlinepajak\"",
        ),
        (
            "approval_status = \"status\"",
            "aproval_status = \"status\"",
            "unknown field `aproval_status`",
        ),
        (
            "auth_scheme = \"raw\"",
            "rate_limit = 99",
            "can exceed OnlinePajak's 100 calls",
        ),
    ];
    for (from, to, words) in cases {
        let text = base.replacen(from, to, 1);
        let line = text.lines().position(|l| l.starts_with(to)).unwrap() + 1;
        let e = parse(&text).unwrap_err();
        assert_eq!(e.location().map(|l| l.0), Some(line), "{e}");
        assert!(e.to_string().contains(words), "{e}");
    }
    let e = parse(&GOOD.replace("overlap = \"5m\"", "npwp = \"1\"")).unwrap_err();
    assert!(
        e.to_string()
            .contains("does not apply to provider \"caminvoice\""),
        "{e}"
    );
}

#[test]
fn silent_operator_mistakes_are_located_errors_with_a_fix() {
    // (replace, with, line, column, words)
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "overlap = \"5m\"",
            "timeout = \"0s\"",
            13,
            11,
            "`timeout` cannot be zero",
        ),
        (
            "schedule = \"*/10 * * * * *\"",
            "schedule = \"0 0 0 31 2 *\"",
            4,
            12,
            "never fires",
        ),
        (
            "endpoint_id = \"KHUID00001234\"",
            "endpoint_id = \"KHUID\\n2026 ERROR forged\"",
            16,
            15,
            "no control character",
        ),
        (
            "schedule = \"*/10 * * * * *\"",
            "resync_schedule = \"0 0 0 30 2 *\"",
            4,
            19,
            "never fires",
        ),
    ];
    for (from, to, line, col, words) in cases {
        let e = error_after(from, to);
        let text = e.to_string();
        assert_eq!(e.location(), Some((*line, *col)), "{to}:\n{text}");
        assert!(text.contains(words) && text.contains("help: "), "{text}");
    }
}

#[test]
fn credentials_inside_a_url_are_refused_without_quoting_them() {
    for (from, to) in [
        (
            "base_url = \"https://sb-merchant.e-invoice.gov.kh/\"",
            "base_url = \"https://cid:hunter2-pass@sb-merchant.e-invoice.gov.kh/\"",
        ),
        (
            "path = \"/tmp/ph/events.jsonl\"",
            "url = \"http://erp:hunter2-pass@127.0.0.1:8080/in\"\nsecrets = [\"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD\"]",
        ),
    ] {
        let text = GOOD
            .replacen(from, to, 1)
            .replace("kind = \"jsonl\"", if from.starts_with("path") { "kind = \"webhook\"" } else { "kind = \"jsonl\"" });
        let e = parse(&text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("holds credentials"), "{msg}");
        assert!(!msg.contains("hunter2"), "the password is quoted:\n{msg}");
        let line = text.lines().position(|l| l.contains("hunter2")).unwrap() + 1;
        assert_eq!(e.location().map(|l| l.0), Some(line), "{msg}");
    }
}

#[test]
fn plain_http_to_another_host_and_a_member_in_two_accounts_are_warnings() {
    let c = parse(GOOD).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let local = GOOD.replace(
        "https://sb-merchant.e-invoice.gov.kh/",
        "http://127.0.0.1:8700",
    );
    assert!(parse(&local).unwrap().warnings.is_empty());
    let remote = GOOD.replace(
        "https://sb-merchant.e-invoice.gov.kh/",
        "http://sb-merchant.e-invoice.gov.kh",
    );
    let c = parse(&remote).unwrap();
    assert_eq!(c.warnings.len(), 1);
    let w = c.warnings[0].to_string();
    assert!(
        w.starts_with("pollhook.toml:10:12: `base_url` is plain http://"),
        "{w}"
    );
    assert!(w.contains("help: use https://"), "{w}");

    let second = GOOD.replace(
        "[[sinks]]",
        "[[accounts]]\nname = \"acme-2\"\nprovider = \"caminvoice\"\nbase_url = \"https://sb-merchant.e-invoice.gov.kh\"\nclient_id = \"cid2\"\nclient_secret = \"s2\"\n\n[[accounts.members]]\nendpoint_id = \"KHUID00001234\"\nrefresh_token = \"rt-2\"\n\n[[sinks]]",
    );
    let c = parse(&second).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = c.warnings[0].one_line();
    assert!(
        w.starts_with(
            "pollhook.toml:27:15: \"KHUID00001234\" is also configured in account \"acme-kh\""
        ),
        "{w}"
    );
    assert!(w.contains("(help: keep it in one account"), "{w}");
}

#[test]
fn the_next_run_is_a_whole_second_strictly_after() {
    let s = Schedule("*/5 * * * * *".into());
    let at = |ms: i64| crate::time::utc(ms);
    // 2026-03-07T07:16:20.544Z
    let after = at(1_772_867_780_544);
    assert_eq!(s.next_after(after), Some(at(1_772_867_785_000)));
    assert_eq!(
        s.next_after(at(1_772_867_785_000)),
        Some(at(1_772_867_790_000))
    );
}
