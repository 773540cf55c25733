//! The rig shared by the integration tests: a simulator on 127.0.0.1:0 and a daemon library
//! instance (engine, store, sinks) configured against it, with ground-truth comparison.
#![allow(dead_code)]

pub mod hostile;
pub mod logs;
pub mod nats;
pub mod process;
pub mod tool;

use pollhook::config::Config;
use pollhook::engine::{Engine, Tick};
use pollhook::providers::CycleReport;
use pollhook::sinks;
use pollhook::store::Store;
use pollhook::time::now_ms;
use pollhook_sim::fidelity::{self, Emitted, Expected};
use pollhook_sim::{pollhook_config, SimConfig, SimServer, Simulator};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Rig {
    pub sim: Simulator,
    pub server: SimServer,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub engine: Option<Engine>,
    pub start: i64,
}

/// CamInvoice only, with revocations. Steps come back to back here, so revocations need no
/// wall-clock quiet period: every step is polled before the next one.
pub fn quiet_sim(seed: u64) -> SimConfig {
    SimConfig {
        op_companies: 0,
        seed,
        revoke_quiet: Duration::ZERO,
        revoke_probability: 0.08,
        ..SimConfig::default()
    }
}

/// CamInvoice only, no revocations: for tests that assert every cycle succeeds (a refused
/// refresh is a failure).
pub fn steady_sim(seed: u64) -> SimConfig {
    SimConfig {
        revoke_probability: 0.0,
        ..quiet_sim(seed)
    }
}

impl Rig {
    pub async fn new(cfg: SimConfig) -> Rig {
        Rig::with_text_edit(cfg, |t| t).await
    }

    pub async fn with_text_edit(cfg: SimConfig, edit: impl FnOnce(String) -> String) -> Rig {
        let sim = Simulator::new(cfg);
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let start = now_ms();
        let text = pollhook_config(
            &sim.credentials(),
            &server.base_url(),
            &dir.path().join("state"),
            &dir.path().join("events.jsonl"),
            &pollhook::time::format_ms(start),
            "* * * * * *",
        );
        let config = Config::parse(&edit(text), std::path::Path::new("test.toml")).unwrap();
        let mut rig = Rig {
            sim,
            server,
            dir,
            config,
            engine: None,
            start,
        };
        rig.open();
        rig
    }

    pub fn open(&mut self) {
        let store = Arc::new(Store::open(&self.config.daemon.state_dir).unwrap());
        self.engine = Some(Engine::new(store, &self.config).unwrap());
    }

    /// Drops the engine and store, as a restart would.
    pub fn restart(&mut self) {
        self.engine = None;
        self.open();
    }

    pub fn engine(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    /// One cycle of the account, then drain every sink.
    pub async fn cycle(&self) -> CycleReport {
        self.cycle_all().await.remove(0)
    }

    /// One cycle of every account (config order: CamInvoice first), then drain every sink.
    pub async fn cycle_all(&self) -> Vec<CycleReport> {
        let reports = self
            .engine()
            .cycle_all()
            .await
            .into_iter()
            .map(|(_, t)| match t {
                Tick::Ran(r) => r,
                Tick::Skipped => panic!("a tick was skipped"),
            })
            .collect();
        for s in &self.config.sinks {
            let mut sink = sinks::build(s).unwrap();
            sinks::drain(self.engine().store(), &mut sink)
                .await
                .unwrap();
        }
        reports
    }

    pub fn jsonl(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    pub fn emitted(&self) -> Vec<Emitted> {
        let text = std::fs::read_to_string(self.jsonl()).unwrap_or_default();
        fidelity::read_jsonl(&text).unwrap()
    }

    /// The ground truth since the rig started, with the envelope each event must have.
    pub fn truth(&self) -> Vec<Expected> {
        fidelity::expected(&self.sim.journal(), &self.sim.credentials(), self.start)
    }

    pub fn assert_perfect(&self) -> fidelity::Report {
        let r = fidelity::compare(&self.truth(), &self.emitted());
        assert!(r.expected > 0, "the simulator produced no traffic");
        assert!(r.perfect(), "fidelity not perfect: {r:#?}");
        r
    }
}

/// Steps the simulator and cycles `rounds` times, then cycles twice more so that revocations
/// (two refused refreshes) complete. Returns the reports of the cycles after each step.
pub async fn run_rounds(rig: &Rig, rounds: usize) -> Vec<CycleReport> {
    let mut reports = Vec::new();
    for _ in 0..rounds {
        rig.sim.step();
        reports.push(rig.cycle().await);
    }
    for _ in 0..2 {
        reports.push(rig.cycle().await);
    }
    reports
}

/// Both providers: CamInvoice without revocations, and two OnlinePajak companies.
pub fn both_providers(seed: u64) -> SimConfig {
    SimConfig {
        op_companies: 2,
        ..steady_sim(seed)
    }
}
