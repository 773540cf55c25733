//! `pollhook probe` through the binary, against the simulator (served by this test process on
//! 127.0.0.1:0): "ready" for every answer variant the provider documents (the four token answer
//! shapes, the bare and the wrapped poll, both OnlinePajak auth schemes); for each contract
//! drift the exact field and the line to try; unreachable hosts, refused credentials and
//! refused members explained; the exit codes; and the state store never opened.

mod common;

use common::process::BIN;
use pollhook_sim::{
    pollhook_config, Drift, PollVariant, SimConfig, SimServer, Simulator, TokenVariant,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A simulator with traffic, served on 127.0.0.1:0, no revocations.
async fn simulator(cfg: SimConfig) -> (Simulator, SimServer) {
    let sim = Simulator::new(SimConfig {
        revoke_probability: 0.0,
        ..cfg
    });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    for _ in 0..8 {
        sim.step();
    }
    (sim, server)
}

/// Writes the simulator's config (edited) under `dir`; the state dir is `dir/state`, which
/// nothing creates.
fn config(
    sim: &Simulator,
    server: &SimServer,
    dir: &Path,
    edit: impl FnOnce(String) -> String,
) -> PathBuf {
    let text = pollhook_config(
        &sim.credentials(),
        &server.base_url(),
        &dir.join("state"),
        &dir.join("events.jsonl"),
        "now",
        "*/5 * * * * *",
    );
    let path = dir.join("pollhook.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

struct Probed {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Probed {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    /// The report of `account` in the JSON document.
    fn account(&self, account: &str) -> Value {
        self.json()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["account"] == account)
            .cloned()
            .unwrap_or_else(|| panic!("no report of {account}: {}", self.stdout))
    }
}

/// `pollhook probe --config CONFIG ARGS...` (the server keeps answering: the child runs on a
/// blocking thread).
async fn probe(config: &Path, args: &[&str]) -> Probed {
    let mut all = vec![
        "probe".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new(BIN).args(all).output())
            .await
            .unwrap()
            .unwrap();
    Probed {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn texts(report: &Value, key: &str, field: &str) -> Vec<String> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x[field].as_str().unwrap_or_default().to_string())
        .collect()
}

fn check<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report:#}"))
}

fn assert_ready(report: &Value) {
    assert_eq!(report["verdict"], "ready", "{report:#}");
    assert!(
        report["findings"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    assert!(
        report["suggestions"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_answer_variant_is_ready() {
    let (sim, server) = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sim, &server, dir.path(), |t| t);
    for (token, poll) in [
        (TokenVariant::Documented, PollVariant::BareArray),
        (TokenVariant::DataWrapped, PollVariant::BareArray),
        (TokenVariant::ThirdParty, PollVariant::Wrapped),
        (TokenVariant::StringExpiry, PollVariant::Wrapped),
    ] {
        sim.set_token_variant(token);
        sim.set_poll_variant(poll);
        let p = probe(&cfg, &["--json"]).await;
        assert_eq!(p.code, 0, "{token:?} {poll:?}: {}{}", p.stdout, p.stderr);
        let doc = p.json();
        assert_eq!(
            (doc["verdict"].as_str(), doc["exit_code"].as_u64()),
            (Some("ready"), Some(0))
        );
        let kh = p.account("sim-kh");
        assert_ready(&kh);
        let shape = check(&kh, "poll")["text"].as_str().unwrap().to_string();
        let want = match poll {
            PollVariant::BareArray => "a bare array of ",
            PollVariant::Wrapped => "{documents: [",
        };
        assert!(shape.contains(want), "{poll:?}: {shape}");
        let auth = check(&kh, "authentication")["text"]
            .as_str()
            .unwrap()
            .to_string();
        let keys = match token {
            TokenVariant::Documented => "{token, token_type, expire_in}",
            TokenVariant::DataWrapped => "{data: {access_token, expire_at}}",
            TokenVariant::ThirdParty => "{access_token, expireIn, expire_at, expired_at}",
            TokenVariant::StringExpiry => "{access_token, expires_in}",
        };
        assert!(auth.contains(keys), "{token:?}: {auth}");
        // The fields pollhook reads were all there, in every answer.
        let fields = kh["fields"].as_array().unwrap();
        for answer in ["poll", "list", "detail"] {
            assert!(
                fields.iter().any(|f| f["answer"] == answer),
                "{answer}: {kh:#}"
            );
        }
        for f in fields {
            assert_eq!(f["carried"], f["of"], "{f}");
        }
        for op in ["op-0", "op-1"] {
            assert_ready(&p.account(op));
        }
    }
    // The human report says the same.
    let p = probe(&cfg, &["--account", "op-0"]).await;
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    assert!(
        p.stdout.contains("account op-0 (onlinepajak, ") && p.stdout.contains("): READY\n"),
        "{}",
        p.stdout
    );
    assert!(
        p.stdout
            .contains("verdict: ready (exit 0); 2 read-only request(s)"),
        "{}",
        p.stdout
    );
    assert!(!p.stdout.contains("sim-kh"), "--account: only that account");
    // Read-only: the state dir was never even created.
    assert!(!dir.path().join("state").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_auth_scheme_is_ready_and_a_wrong_one_is_explained() {
    let (sim, server) = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sim, &server, dir.path(), |t| {
        t.replace(
            "provider = \"onlinepajak\"",
            "provider = \"onlinepajak\"\nauth_scheme = \"raw\"",
        )
    });
    let p = probe(&cfg, &["--json", "--account", "op-1"]).await;
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_ready(&p.account("op-1"));

    let token = sim.credentials().onlinepajak[0].token.clone();
    let cfg = config(&sim, &server, dir.path(), |t| {
        t.replacen(&token, "not-this-companys-token", 1)
    });
    let p = probe(&cfg, &["--json"]).await;
    assert_eq!(p.code, 1, "{}", p.stdout);
    let op = p.account("op-0");
    assert_eq!(op["verdict"], "not_usable");
    assert_eq!(check(&op, "reachability")["outcome"], "ok");
    let auth = check(&op, "authentication");
    assert_eq!(auth["outcome"], "failed");
    assert!(
        auth["text"].as_str().unwrap().contains("Invalid signature"),
        "{auth}"
    );
    assert_eq!(texts(&op, "suggestions", "line"), ["auth_scheme = \"raw\""]);
    assert_eq!(op["suggestions"][0]["table"], "[[accounts]]");
    assert!(
        !p.stdout.contains("not-this-companys-token"),
        "the token is never printed"
    );
    assert_eq!(
        p.account("op-1")["verdict"],
        "ready",
        "the other account is unaffected"
    );
}

/// A drift, the account it shows in, the exit code, the lines to try, and what the findings or
/// checks must say.
type Case = (
    Drift,
    &'static str,
    i32,
    &'static [&'static str],
    &'static [&'static str],
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_drift_names_the_field_and_the_line_to_try() {
    let (sim, server) = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sim, &server, dir.path(), |t| t);
    // (drift, account, exit code, the lines to try, what a finding or check must say)
    let cases: [Case; 8] = [
        (
            Drift::OpStatusRenamed,
            "op-0",
            1,
            &["approval_status = \"status\""],
            &["`approvalStatus` is missing from", "`status` (in "],
        ),
        (
            Drift::OpStatusLowerCase,
            "op-0",
            1,
            &[
                "approved_value = \"approved\"",
                "rejected_value = \"rejected\"",
            ],
            &["`approved` for `APPROVED`"],
        ),
        (
            Drift::OpStatusIndonesian,
            "op-0",
            1,
            &["approved_value = \"DISETUJUI\""],
            &["\"DISETUJUI\" ×"],
        ),
        (
            Drift::OpContentRenamed,
            "op-0",
            1,
            &["content = \"items\""],
            &["`data.items` is an array of"],
        ),
        (
            Drift::OpRetrieveWrapped,
            "op-0",
            3,
            &[],
            &[
                "data: {invoice: {id, ",
                "pollhook reads the invoice at `data`",
            ],
        ),
        (
            Drift::CiUpdatedAtRenamed,
            "sim-kh",
            1,
            &[],
            &[
                "`updated_at` is missing from",
                "`updatedAt` (in ",
                "no override",
            ],
        ),
        (
            Drift::CiStatusLowerCase,
            "sim-kh",
            1,
            &[],
            &[
                "detail: `status` has values outside the known set",
                "`delivered` for `DELIVERED`",
            ],
        ),
        (
            Drift::CiPollEnveloped,
            "sim-kh",
            1,
            &[],
            &[
                "{data: {documents: [",
                "the items look to be at `data.documents`",
            ],
        ),
    ];
    for (drift, account, code, lines, says) in cases {
        sim.set_drift(drift);
        let p = probe(&cfg, &["--json", "--account", account]).await;
        assert_eq!(p.code, code, "{drift:?}: {}{}", p.stdout, p.stderr);
        let r = p.account(account);
        let mut suggested = texts(&r, "suggestions", "line");
        if drift == Drift::OpStatusIndonesian {
            // `rejected_value` too when the sample held a rejection.
            suggested.retain(|l| l != "rejected_value = \"DITOLAK\"");
        }
        assert_eq!(suggested, lines, "{drift:?}: {r:#}");
        for s in &r["suggestions"].as_array().unwrap()[..] {
            assert_eq!(s["table"], "[accounts.api]", "{drift:?}");
        }
        let said = format!(
            "{}\n{}",
            texts(&r, "findings", "text").join("\n"),
            texts(&r, "checks", "text").join("\n")
        );
        for s in says {
            assert!(said.contains(s), "{drift:?}: {s:?} not in:\n{said}");
        }
        // The human form carries the same lines under their table.
        let human = probe(&cfg, &["--account", account]).await;
        assert_eq!(human.code, code);
        for l in lines {
            assert!(
                human.stdout.contains(&format!("    {l}    # ")),
                "{drift:?}:\n{}",
                human.stdout
            );
        }
    }
    sim.set_drift(Drift::None);
    assert_eq!(
        probe(&cfg, &["--json"]).await.code,
        0,
        "back to the contract: ready"
    );
    assert!(!dir.path().join("state").exists(), "read-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_unreachable_hosts_are_explained() {
    let (sim, server) = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    // A revoked member: warned with what to do, the others carry on.
    let first = sim.credentials().members[0].endpoint_id.clone();
    let cfg = config(&sim, &server, dir.path(), |t| t);
    assert!(sim.revoke(&first));
    let p = probe(&cfg, &["--json", "--account", "sim-kh"]).await;
    let kh = p.account("sim-kh");
    assert_eq!(
        (p.code, kh["verdict"].as_str()),
        (3, Some("ready_with_warnings")),
        "{kh:#}"
    );
    assert_eq!(check(&kh, "authentication")["outcome"], "warning");
    let warned = texts(&kh, "findings", "text").join("\n");
    assert!(
        warned.contains(&format!(
            "member {first}: CamInvoice refused its refresh token (HTTP 403"
        )) && warned.contains("pollhook connect caminvoice --account sim-kh --print-url"),
        "{warned}"
    );
    assert_eq!(
        check(&kh, "poll")["outcome"],
        "ok",
        "the next member polled"
    );

    // Wrong client credentials: what the documented answer means.
    let cfg = config(&sim, &server, dir.path(), |t| {
        t.replace(
            "client_secret = \"sim-secret\"",
            "client_secret = \"not-the-secret\"",
        )
    });
    let p = probe(&cfg, &["--json", "--account", "sim-kh"]).await;
    assert_eq!(p.code, 1);
    let auth = check(&p.account("sim-kh"), "authentication").clone();
    assert!(
        auth["text"].as_str().unwrap().contains(
            "refused the client credentials (invalid_client: Invalid client credentials)"
        ),
        "{auth}"
    );

    // Nobody listening: the host, the port and the cause, after the account's retries.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(&sim, &server, dir.path(), |t| {
        t.replace(&server.base_url(), &format!("http://127.0.0.1:{port}"))
            .replace(
                "retry_base = \"100ms\"",
                "retry_base = \"10ms\"\nmax_retries = 1",
            )
            .replace(
                "provider = \"onlinepajak\"",
                "provider = \"onlinepajak\"\nretry_base = \"10ms\"\nmax_retries = 1",
            )
    });
    let p = probe(&cfg, &["--json"]).await;
    assert_eq!(p.code, 1, "{}", p.stdout);
    for account in ["sim-kh", "op-0"] {
        let r = p.account(account);
        let reach = check(&r, "reachability");
        assert_eq!(reach["outcome"], "failed", "{r:#}");
        assert!(
            reach["text"]
                .as_str()
                .unwrap()
                .contains(&format!("connection refused to 127.0.0.1:{port}")),
            "{reach}"
        );
        assert!(
            r["checks"].as_array().unwrap().len() == 1,
            "nothing after: {r:#}"
        );
    }

    // An account that does not exist is a usage error.
    let p = probe(&cfg, &["--account", "nope"]).await;
    assert_eq!(p.code, 2);
    assert!(
        p.stderr.contains("no account named \"nope\"") && p.stderr.contains("sim-kh, op-0, op-1"),
        "{}",
        p.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_works_while_the_daemon_holds_the_store() {
    let (sim, server) = simulator(SimConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sim, &server, dir.path(), |t| t);
    // This process holds the store (and its lock), as a running daemon would.
    let store = pollhook::store::Store::open(&dir.path().join("state")).unwrap();
    let p = probe(&cfg, &["--json"]).await;
    assert_eq!(p.code, 0, "{}{}", p.stdout, p.stderr);
    drop(store);
}
