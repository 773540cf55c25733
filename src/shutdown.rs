//! The stop signal: one flag, set once, that long waits listen to — HTTP attempts and their
//! backoffs (nothing new is sent once it is set), and hook processes (terminated when it is
//! set). mini-redis's shutdown recipe: the owner keeps the [`Trigger`], every task a cheap
//! [`Stop`] clone.
//!
//! The daemon's shutdown timeline (which flag fires when) lives in `scheduler`; this module
//! only carries the flag.

use tokio::sync::watch;

/// Sets the flag (once; later calls do nothing).
pub struct Trigger(watch::Sender<bool>);

/// Observes the flag.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

/// A new, unset flag.
pub fn channel() -> (Trigger, Stop) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Stop(rx))
}

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }

    /// Another observer of this flag.
    pub fn stop(&self) -> Stop {
        Stop(self.0.subscribe())
    }
}

impl Stop {
    /// A flag that is never set (`once`, `check-config`, tests).
    pub fn never() -> Stop {
        channel().1
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when the flag is set; never, if its trigger is dropped unset.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|set| *set).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_stop_completes_when_fired_and_never_when_dropped() {
        let (trigger, stop) = channel();
        assert!(!stop.is_set());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        trigger.fire();
        waiter.await.unwrap();
        assert!(stop.is_set() && trigger.stop().is_set());
        let never = Stop::never();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), never.wait())
                .await
                .is_err()
        );
    }
}
