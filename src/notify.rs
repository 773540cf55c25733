//! systemd's notify protocol, without a crate: `READY=1`, `STATUS=...`, `STOPPING=1` and
//! `WATCHDOG=1`, each one datagram to `$NOTIFY_SOCKET` (a path, or an abstract socket when it
//! starts with `@`). Outside systemd (no `$NOTIFY_SOCKET`) every call does nothing.
//!
//! # The watchdog rule
//! With `WatchdogSec=` set, systemd passes `$WATCHDOG_USEC` and restarts the service when no
//! `WATCHDOG=1` arrives within it. pollhook sends one every half period *only while no account
//! is stalled* ([`crate::metrics::stall`]):
//! - an account in a cycle is stalled when no HTTP attempt of it completed (and the cycle did
//!   not begin) for longer than `timeout + max(retry_after_cap, 30s) + 60s` — the longest
//!   silence a healthy cycle has (one request timing out after the longest wait between
//!   attempts). A cycle longer than `WatchdogSec` that keeps completing requests is never
//!   killed, however long it runs;
//! - an idle account is stalled when the scheduler missed its tick by more than a minute.
//!
//! So systemd restarts pollhook `WatchdogSec` after the first stall is detected, or when the
//! whole runtime hangs (the pinging task stops running). This module never decides health
//! itself: [`watchdog`] is given the rule's verdict as a function (the daemon passes
//! `Metrics::stalls`). It depends on nothing else in pollhook; starting and stopping the
//! service side (admin endpoint, watchdog task, READY) is the daemon's (`scheduler::service`).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The daemon's end of the notify socket (or nothing outside systemd).
pub struct Notifier {
    target: Option<Target>,
}

enum Target {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`. Does not unset it: the hook sink clears the environment of the
    /// programs it starts.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let v = v.into_encoded_bytes();
            match v.first() {
                None => None,
                #[cfg(target_os = "linux")]
                Some(b'@') => Some(Target::Abstract(v[1..].to_vec())),
                Some(_) => Some(Target::Path(std::path::PathBuf::from(
                    std::ffi::OsString::from_vec(v),
                ))),
            }
        });
        Notifier { target }
    }

    /// Whether a notify socket was given.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one message, e.g. `"READY=1\nSTATUS=polling"`. Nothing happens outside systemd.
    pub fn notify(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => socket.send_to(message.as_bytes(), p)?,
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)?
            }
        };
        Ok(())
    }

    /// Like [`Notifier::notify`], logging a failure instead of returning it.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.notify(message) {
            tracing::warn!("cannot notify systemd ({message:?}): {e}");
        }
    }
}

use std::os::unix::ffi::OsStringExt;

/// The watchdog period systemd expects pings within (`$WATCHDOG_USEC`), if it is meant for this
/// process (`$WATCHDOG_PID`, when set, is our pid).
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Feeds the watchdog every half `period` while `stalls` finds nothing stalled, until `stop`.
/// `stalls` is the progress rule's verdict: one line per stalled account, empty when healthy.
pub async fn watchdog(
    notifier: Arc<Notifier>,
    stalls: impl Fn() -> Vec<String>,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(period / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stalled = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let stalls = stalls();
        if stalls.is_empty() {
            if stalled {
                tracing::info!("progress again: the watchdog is fed");
                notifier.send("STATUS=polling");
            }
            stalled = false;
            notifier.send("WATCHDOG=1");
        } else if !stalled {
            stalled = true;
            let why = stalls.join("; ");
            tracing::error!("stalled: {why}; the systemd watchdog is no longer fed, so systemd restarts pollhook unless it recovers within WatchdogSec");
            notifier.send(&format!("STATUS=stalled: {why}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Target::Path(path)),
        };
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        // Outside systemd nothing is sent and nothing fails.
        assert!(Notifier { target: None }.notify("READY=1").is_ok());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pollhook-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier {
            target: Some(Target::Abstract(name.into_bytes())),
        };
        n.notify("WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }
}
