//! Member sharding: three daemons with `shard = "1/3"`, `"2/3"`, `"3/3"` and one unsharded
//! daemon poll the same simulator (CamInvoice members and OnlinePajak companies). Together the
//! shards emit exactly the unsharded daemon's events — same ids, same payloads — with no event
//! in two shards, and each shard polls and reports only the members it owns.

use pollhook::admin::StatusReport;
use pollhook::config::Config;
use pollhook::engine::Engine;
use pollhook::sinks;
use pollhook::store::Store;
use pollhook::time::{format_ms, now_ms};
use pollhook_sim::fidelity::{self, Emitted};
use pollhook_sim::{pollhook_config, SimConfig, Simulator};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

struct Daemon {
    engine: Engine,
    config: Config,
}

impl Daemon {
    fn new(text: String) -> Daemon {
        let config = Config::parse(&text, Path::new("shard.toml")).unwrap();
        let store = Arc::new(Store::open(&config.daemon.state_dir).unwrap());
        Daemon {
            engine: Engine::new(store, &config).unwrap(),
            config,
        }
    }

    async fn cycle(&self) -> usize {
        let mut units = 0;
        for (_, tick) in self.engine.cycle_all().await {
            match tick {
                pollhook::engine::Tick::Ran(r) => {
                    assert!(r.ok(), "{:?}", r.failures);
                    units += r.units;
                }
                pollhook::engine::Tick::Skipped => panic!("skipped"),
            }
        }
        for s in &self.config.sinks {
            sinks::drain(self.engine.store(), &mut sinks::build(s).unwrap())
                .await
                .unwrap();
        }
        units
    }

    fn emitted(&self) -> Vec<Emitted> {
        let pollhook::config::SinkKind::Jsonl(j) = &self.config.sinks[0].kind else {
            panic!("the first sink is the JSONL log")
        };
        fidelity::read_jsonl(&std::fs::read_to_string(&j.path).unwrap_or_default()).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_together_emit_exactly_what_one_unsharded_daemon_emits() {
    let sim = Simulator::new(SimConfig {
        seed: 99,
        members: 12,
        op_companies: 4,
        revoke_probability: 0.0,
        revoke_quiet: std::time::Duration::ZERO,
        ..SimConfig::default()
    });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = now_ms();
    let daemon = |label: &str, shard: Option<&str>| {
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join(format!("state-{label}")),
            &dir.path().join(format!("events-{label}.jsonl")),
            &format_ms(start),
            "* * * * * *",
        );
        let text = match shard {
            Some(s) => text.replacen("[daemon]\n", &format!("[daemon]\nshard = \"{s}\"\n"), 1),
            None => text,
        };
        Daemon::new(text)
    };
    let whole = daemon("all", None);
    let shards: Vec<Daemon> = (1..=3)
        .map(|k| daemon(&k.to_string(), Some(&format!("{k}/3"))))
        .collect();

    let mut units = (0, 0);
    for round in 0..15 {
        if round < 12 {
            sim.step();
        }
        units.0 += whole.cycle().await;
        for s in &shards {
            units.1 += s.cycle().await;
        }
    }
    assert_eq!(
        units.0, units.1,
        "the shards polled every unit once between them"
    );

    let truth = fidelity::expected(&sim.journal(), &sim.credentials(), start);
    let all = whole.emitted();
    let r = fidelity::compare(&truth, &all);
    assert!(r.perfect(), "the unsharded daemon: {r:#?}");
    assert!(r.expected > 40, "too little traffic: {}", r.expected);

    let mut union: Vec<Emitted> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (k, s) in shards.iter().enumerate() {
        let mine = s.emitted();
        assert!(!mine.is_empty(), "shard {} emitted nothing", k + 1);
        for e in mine {
            assert!(seen.insert(e.id.clone()), "{} emitted by two shards", e.id);
            union.push(e);
        }
    }
    let by_id = |v: &[Emitted]| -> BTreeMap<String, (String, String)> {
        v.iter()
            .map(|e| (e.id.clone(), (e.event_type.clone(), e.payload.clone())))
            .collect()
    };
    assert_eq!(
        by_id(&union),
        by_id(&all),
        "the shards' events are the unsharded daemon's"
    );

    // `status` of a shard lists only what it owns; together the shards list every unit once.
    let whole_status = StatusReport::collect(&whole.engine, &whole.config.sinks).unwrap();
    assert_eq!(whole_status.shard, None);
    let units_of = |r: &StatusReport| -> Vec<String> {
        r.accounts
            .iter()
            .flat_map(|a| {
                a.units
                    .iter()
                    .map(move |u| format!("{}/{}", a.name, u.unit))
            })
            .collect()
    };
    let mut listed = Vec::new();
    for (k, s) in shards.iter().enumerate() {
        let st = StatusReport::collect(&s.engine, &s.config.sinks).unwrap();
        assert_eq!(st.shard.as_deref(), Some(format!("{}/3", k + 1).as_str()));
        let text = st.render();
        assert!(
            text.starts_with(&format!("shard {}/3: this daemon polls only", k + 1)),
            "{text}"
        );
        listed.extend(units_of(&st));
    }
    listed.sort();
    let mut expected = units_of(&whole_status);
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn a_bad_shard_is_a_located_config_error() {
    for (value, words) in [
        ("0/3", "K must be between 1 and N"),
        ("4/3", "K must be between 1 and N"),
        ("1-3", "not of the form"),
    ] {
        let text = format!(
            "[daemon]\nshard = \"{value}\"\n[[accounts]]\nname = \"a\"\nprovider = \"caminvoice\"\nbase_url = \"http://127.0.0.1:9\"\nclient_id = \"c\"\nclient_secret = \"s\"\n[[sinks]]\nkind = \"jsonl\"\npath = \"/x\"\n"
        );
        let e = Config::parse(&text, Path::new("p.toml")).unwrap_err();
        assert_eq!(e.location().map(|l| l.0), Some(2), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(words) && msg.contains("SCALING.md"), "{msg}");
    }
}
