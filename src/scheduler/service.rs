//! The daemon's service side, started once the store is open and before the scheduler: the
//! admin endpoint (if configured), the systemd watchdog task (under `WatchdogSec=`) fed by the
//! progress rule of `metrics`, and `READY=1`; at shutdown `STOPPING=1`, then the admin
//! endpoint closes. It only starts and stops these: what they say is `admin`'s, `notify`'s
//! and `metrics`' business.

use crate::admin::{Admin, StartError};
use crate::config::Config;
use crate::engine::Engine;
use crate::notify::{watchdog, watchdog_period, Notifier};
use std::sync::Arc;
use tokio::sync::watch;

/// The daemon's service side, started once the store is open, before the scheduler: the
/// admin endpoint (if configured), the watchdog task (under `WatchdogSec=`), and `READY=1`.
pub struct Service {
    notifier: Arc<Notifier>,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    admin: Option<Admin>,
    stopping: bool,
}

impl Service {
    /// Binds the admin endpoint, starts feeding the watchdog, and tells systemd it is ready.
    /// Only the admin endpoint can fail to start (the watchdog and sd_notify cannot).
    pub async fn start(
        config: &Config,
        engine: &Arc<Engine>,
        stop: watch::Receiver<bool>,
    ) -> Result<Service, StartError> {
        let notifier = Arc::new(Notifier::from_env());
        let admin = match config.daemon.admin_listen {
            None => None,
            Some(listen) => Some(
                Admin::start(
                    listen,
                    Arc::new(config.clone()),
                    Arc::clone(engine),
                    stop.clone(),
                )
                .await?,
            ),
        };
        let watchdog = watchdog_period().map(|period| {
            tracing::info!(period = ?period, "feeding the systemd watchdog while cycles make progress");
            let metrics = Arc::clone(engine.metrics());
            tokio::spawn(watchdog(
                Arc::clone(&notifier),
                move || metrics.stalls(),
                period,
                stop,
            ))
        });
        notifier.send(&format!(
            "READY=1\nSTATUS=polling {} account(s)",
            engine.accounts().len()
        ));
        Ok(Service {
            notifier,
            watchdog,
            admin,
            stopping: false,
        })
    }

    /// Shutdown began: `STOPPING=1`, and the watchdog is no longer fed (systemd stops
    /// watching a stopping service).
    pub fn stopping(&mut self) {
        if !self.stopping {
            self.stopping = true;
            self.notifier.send("STOPPING=1");
        }
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
    }

    /// Waits for the admin endpoint to close (after the stop flag) and removes `admin.addr`.
    pub async fn finish(mut self) {
        self.stopping();
        if let Some(a) = self.admin.take() {
            a.finish().await;
        }
    }
}
