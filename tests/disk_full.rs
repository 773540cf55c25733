//! A full disk, an unwritable log, a state dir held by another process: a clear error, nothing
//! acknowledged that was not written, and recovery once the condition clears.

mod common;

use common::{run_rounds, steady_sim, Rig};
use pollhook::sinks;
use pollhook_sim::pollhook_config;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pollhook");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_jsonl_sink_acks_nothing_and_recovers() {
    let rig = Rig::new(steady_sim(71)).await;
    rig.cycle().await;
    run_rounds(&rig, 0).await;
    // From now on the log "is on a full disk": /dev/full answers every write with ENOSPC.
    let log = rig.jsonl();
    let _ = std::fs::remove_file(&log);
    std::os::unix::fs::symlink("/dev/full", &log).unwrap();
    let store = rig.engine().store();
    let mut sink = sinks::build(&rig.config.sinks[0]).unwrap();
    for _ in 0..5 {
        rig.sim.step();
        let ticks = rig.engine().cycle_all().await;
        assert_eq!(ticks.len(), 1);
        let e = sinks::drain(store, &mut sink)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("No space left on device")
                && e.contains("nothing after the last complete line is acknowledged"),
            "{e}"
        );
        assert_eq!(
            store.acked(&rig.config.sinks[0].name).unwrap(),
            0,
            "acked what was not written"
        );
    }
    assert!(
        store.last_seq() > 0,
        "events were committed to the outbox meanwhile"
    );
    // Space again.
    std::fs::remove_file(&log).unwrap();
    let delivered = sinks::drain(store, &mut sink).await.unwrap();
    assert_eq!(delivered, store.last_seq());
    run_rounds(&rig, 2).await;
    rig.assert_perfect();
}

/// Runs `pollhook ARGS` in bash with SIGXFSZ ignored and files limited to `blocks` KiB, so a
/// write past the limit fails with EFBIG like a full disk (without killing the process).
fn with_file_limit(blocks: u64, args: &[&str]) -> std::process::Output {
    let cmd = format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\"");
    Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .arg(BIN)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_store_is_a_clear_error_and_the_next_run_recovers() {
    let sim = pollhook_sim::Simulator::new(steady_sim(72));
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let cfg = pollhook_config(
        &sim.credentials(),
        &server.base_url(),
        &dir.path().join("state"),
        &events,
        "now",
        "* * * * * *",
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, cfg).unwrap();
    let c = config.to_str().unwrap();
    let run = |args: &[&str]| Command::new(BIN).args(args).output().unwrap();

    assert!(run(&["once", "--config", c]).status.success());
    sim.step();
    // 64 KiB per file: far less than the store needs to grow.
    let o = with_file_limit(64, &["once", "--config", c]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "a full disk went unnoticed:\n{text}");
    assert!(
        text.contains("disk full or read-only?") || text.contains("File too large"),
        "{text}"
    );
    // The condition clears: everything comes through, once.
    let o = run(&["once", "--config", c]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth = pollhook_sim::fidelity::expected(&sim.journal(), &sim.credentials(), 0);
    let emitted =
        pollhook_sim::fidelity::read_jsonl(&std::fs::read_to_string(&events).unwrap()).unwrap();
    let r = pollhook_sim::fidelity::compare(&truth, &emitted);
    assert!(r.expected > 0 && r.perfect(), "{r:#?}");
}

#[test]
fn a_state_dir_held_by_a_running_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example"))
            .unwrap()
            .replace(
                "/var/lib/pollhook/events.jsonl",
                &dir.path().join("e.jsonl").display().to_string(),
            )
            .replace(
                "/var/lib/pollhook",
                &dir.path().join("state").display().to_string(),
            )
            // Nothing reachable: the daemon only needs to hold the store.
            .replace("https://sb-merchant.e-invoice.gov.kh", "http://127.0.0.1:9")
            .replace(
                "https://openapi.onlinepajak.com/v2.0",
                "http://127.0.0.1:9/v2.0",
            );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, cfg).unwrap();
    let c = config.to_str().unwrap();
    // The daemon says READY=1 on its notify socket once it holds the store (and only then).
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(common::process::PATIENCE))
        .unwrap();
    let mut daemon = common::process::Killed(
        Command::new(BIN)
            .args(["run", "--config", c])
            .env("NOTIFY_SOCKET", &notify_path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 4096];
    loop {
        let n = notify
            .recv(&mut buf)
            .expect("READY=1 from the daemon (it holds the store then)");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    let o = Command::new(BIN)
        .args(["once", "--config", c])
        .output()
        .unwrap();
    assert!(
        daemon.0.try_wait().unwrap().is_none(),
        "the daemon is still running (and holding the store)"
    );
    drop(daemon);
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("in use by another pollhook process")
            && text.contains("systemctl stop pollhook"),
        "{text}"
    );
}
