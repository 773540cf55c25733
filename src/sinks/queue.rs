//! The per-event dispatcher of hook, webhook and NATS sinks: a window of outbox events after the
//! sink's ack, each retried on the sink's schedule until delivered or dead, in order.
//!
//! The window holds only unfinished events (filtered-out events never enter it; delivered and
//! dead ones leave it), so the ack is simply "one before the first unfinished event" — a
//! contiguous prefix of finished work, whatever order deliveries complete in. Each event in
//! the window is in one [`State`]; [`Queue::startable`] decides which may start now:
//! - in-order: only the first event of the window, one at a time (head-of-line retry);
//! - per-document: an event whose subject has no earlier unfinished event, up to
//!   `concurrency` at once, so a failing document holds back only its own later events.
//!
//! Failed attempts are stored (count and time) before the retry is scheduled, so
//! `max_attempts` holds across restarts. This module never sleeps inside a delivery and never
//! blocks another sink: it owns one sink's task and nothing else.

use super::{DrainError, Endpoint, Job, Outcome};
use crate::backoff::{on_schedule, Backoff, Retry};
use crate::config::{Delivery, DeliveryOrder, Filter};
use crate::event::StoredEvent;
use crate::store::{Attempts, DeadLetter, Store};
use crate::time::now_ms;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

/// Events held ahead of the ack cursor. Bounds memory while the head waits on a retry: a
/// per-document sink keeps delivering other documents until this many are unfinished.
const WINDOW: usize = 1024;
/// Outbox events read per load.
const READ: usize = 256;
/// Acks are flushed at least this often while deliveries continue (and whenever the queue
/// goes idle): a crash re-delivers at most this much, never loses anything.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// An interrupted delivery is not started again in the same run (the run is ending).
const INTERRUPTED_HOLD: Duration = Duration::from_secs(24 * 3600);
/// Pause after a store error before the loop tries again.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// While the endpoint's `prepare` fails (its destination unreachable): 1 s, doubling, at most
/// 30 s.
const PREPARE_RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// Where one event of the window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Entered when loaded, or after a failed attempt with the retry time; left when started.
    Waiting { due: Instant },
    /// Entered when started; left when its attempt finishes (back to Waiting, or out of the
    /// window when delivered or dead).
    InFlight,
}

struct Slot {
    event: Arc<StoredEvent>,
    envelope: Arc<crate::event::Envelope>,
    /// A hash of the per-document ordering key (of the empty key for in-order sinks, and for
    /// events committed before subjects were stored: those all share one key, which keeps
    /// them in order). Hashed once at load: `startable` runs after every finished delivery
    /// and passes every event in flight. Two subjects with one hash only wait for each other.
    key: u64,
    /// Failed attempts so far.
    attempts: u32,
    last_error: String,
    state: State,
}

/// One sink's dispatcher.
pub(super) struct Queue {
    name: String,
    filter: Filter,
    endpoint: Arc<dyn Endpoint>,
    delivery: Delivery,
    /// Unfinished events after the ack, by seq.
    window: BTreeMap<u64, Slot>,
    /// The greatest seq read from the outbox (delivered, filtered, or in the window).
    loaded: u64,
    acked: u64,
    in_flight: JoinSet<(u64, Outcome)>,
    tasks: HashMap<Id, u64>,
    delivered: u64,
    ack_dirty: bool,
    last_flush: Instant,
}

impl Queue {
    pub(super) fn new(
        name: &str,
        filter: &Filter,
        endpoint: Arc<dyn Endpoint>,
        delivery: &Delivery,
    ) -> Queue {
        Queue {
            name: name.to_string(),
            filter: filter.clone(),
            endpoint,
            delivery: delivery.clone(),
            window: BTreeMap::new(),
            loaded: 0,
            acked: 0,
            in_flight: JoinSet::new(),
            tasks: HashMap::new(),
            delivered: 0,
            ack_dirty: false,
            last_flush: Instant::now(),
        }
    }

    /// Delivers what is committed until nothing can start without waiting for a retry.
    pub(super) async fn drain(mut self, store: &Store) -> Result<u64, DrainError> {
        self.acked = store.acked(&self.name)?;
        self.loaded = self.acked;
        self.endpoint
            .prepare(store, self.acked)
            .await
            .map_err(|message| DrainError::Sink {
                sink: self.name.clone(),
                source: super::SinkError {
                    delivered: 0,
                    message,
                },
            })?;
        self.until_idle(store).await?;
        self.flush(store).await?;
        match self.window.values().find(|s| s.attempts > 0) {
            None => Ok(self.delivered),
            Some(failed) => Err(DrainError::Retrying {
                sink: self.name.clone(),
                pending: self.window.len(),
                next_in: self
                    .next_due()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or_default(),
                error: if failed.last_error.is_empty() {
                    format!(
                        "{} earlier attempt(s) failed (see the log); the next is not due yet",
                        failed.attempts
                    )
                } else {
                    failed.last_error.clone()
                },
            }),
        }
    }

    /// The daemon's loop: deliver until idle, then wait for a commit, a retry or shutdown.
    pub(super) async fn run(mut self, store: Arc<Store>, mut shutdown: watch::Receiver<bool>) {
        let mut committed = store.subscribe();
        loop {
            match store.acked(&self.name) {
                Ok(a) => {
                    self.acked = a;
                    self.loaded = self.loaded.max(a);
                    break;
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read the ack cursor; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
            }
        }
        let mut retry = Retry::new(PREPARE_RETRY);
        while let Err(e) = self.endpoint.prepare(&store, self.acked).await {
            let wait = retry.failed();
            tracing::error!(sink = %self.name, error = %e, retry_in = ?wait, "the sink is not ready; nothing is delivered to it until it is (retrying)");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
        loop {
            let stopping = *shutdown.borrow();
            committed.borrow_and_update();
            let result = async {
                self.until_idle(&store).await?;
                self.flush(&store).await
            }
            .await;
            if let Err(e) = result {
                tracing::error!(sink = %self.name, error = %e, "sink dispatcher failed; retrying");
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(STORE_RETRY) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            if stopping {
                return;
            }
            let due = self.next_due();
            tokio::select! {
                _ = committed.changed(), if self.window.len() < WINDOW => {}
                _ = sleep_until(due) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        return; // the daemon is gone
                    }
                }
            }
        }
    }

    /// Loads, starts and finishes deliveries until none is in flight and none can start now.
    async fn until_idle(&mut self, store: &Store) -> Result<(), DrainError> {
        loop {
            self.load(store)?;
            self.advance_ack(store)?;
            if self.ack_dirty && self.last_flush.elapsed() >= FLUSH_EVERY {
                self.flush(store).await?;
            }
            self.start_what_can(Instant::now());
            if self.in_flight.is_empty() {
                // Nothing running and nothing startable: idle, unless a commit landed since
                // the load above.
                let before = self.loaded;
                if self.window.len() < WINDOW && store.last_seq() > before {
                    self.load(store)?;
                    if self.loaded > before {
                        continue;
                    }
                }
                return Ok(());
            }
            let (seq, outcome) = match self.in_flight.join_next_with_id().await {
                Some(Ok((id, done))) => {
                    self.tasks.remove(&id);
                    done
                }
                Some(Err(e)) => {
                    let seq = self
                        .tasks
                        .remove(&e.id())
                        .expect("every task is registered");
                    let error = format!("the delivery task failed: {e}");
                    (
                        seq,
                        Outcome::Failed {
                            error,
                            retry_after: None,
                        },
                    )
                }
                None => continue,
            };
            self.finish(store, seq, outcome).await?;
        }
    }

    /// Reads outbox events after `loaded` into the window, while it has room.
    fn load(&mut self, store: &Store) -> Result<(), DrainError> {
        while self.window.len() < WINDOW {
            let events = store.read_outbox(self.loaded, READ.min(WINDOW - self.window.len()))?;
            if events.is_empty() {
                return Ok(());
            }
            for event in events {
                let seq = event.seq;
                self.loaded = seq;
                let envelope = event.envelope().map_err(|e| DrainError::Unreadable {
                    sink: self.name.clone(),
                    seq,
                    message: e.to_string(),
                })?;
                if !self.filter.matches(&envelope.event_type, &envelope.account) {
                    continue;
                }
                let subject = match self.delivery.ordering {
                    DeliveryOrder::InOrder => String::new(),
                    DeliveryOrder::PerDocument => store.subject(seq)?.unwrap_or_default(),
                };
                let (attempts, due) = match store.attempts(&self.name, seq)? {
                    None => (0, Instant::now()),
                    Some(a) => {
                        let wait_ms =
                            on_schedule(&self.delivery.retry_schedule, a.count).as_millis() as i64;
                        let left = (a.last_at + wait_ms - now_ms()).max(0) as u64;
                        (a.count, Instant::now() + Duration::from_millis(left))
                    }
                };
                self.window.insert(
                    seq,
                    Slot {
                        event: Arc::new(event),
                        envelope: Arc::new(envelope),
                        key: subject_key(&subject),
                        attempts,
                        last_error: String::new(),
                        state: State::Waiting { due },
                    },
                );
            }
        }
        Ok(())
    }

    /// Acks the finished prefix: everything before the first unfinished event.
    fn advance_ack(&mut self, store: &Store) -> Result<(), DrainError> {
        let upto = match self.window.keys().next() {
            Some(first) => first - 1,
            None => self.loaded,
        };
        if upto > self.acked {
            store.ack(&self.name, upto)?;
            self.acked = upto;
            self.ack_dirty = true;
        }
        Ok(())
    }

    async fn flush(&mut self, store: &Store) -> Result<(), DrainError> {
        self.advance_ack(store)?;
        if self.ack_dirty {
            store.flush().await?;
            self.ack_dirty = false;
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// The seqs that may start at `now`, in order.
    fn startable(&self, now: Instant) -> Vec<u64> {
        let limit = match self.delivery.ordering {
            DeliveryOrder::InOrder => 1,
            DeliveryOrder::PerDocument => self.delivery.concurrency,
        };
        let mut room = limit.saturating_sub(self.in_flight.len());
        let mut out = Vec::new();
        let mut blocked: HashSet<u64> = HashSet::with_capacity(limit + 1);
        for (seq, slot) in &self.window {
            if room == 0 {
                break;
            }
            // An earlier unfinished event of the same subject (for in-order: any earlier
            // event) holds this one back.
            let first_of_subject = blocked.insert(slot.key);
            if !first_of_subject {
                continue;
            }
            if matches!(slot.state, State::Waiting { due } if due <= now) {
                out.push(*seq);
                room -= 1;
            }
        }
        out
    }

    fn start_what_can(&mut self, now: Instant) {
        for seq in self.startable(now) {
            let slot = self
                .window
                .get_mut(&seq)
                .expect("startable seqs are in the window");
            slot.state = State::InFlight;
            let job = Job {
                event: Arc::clone(&slot.event),
                envelope: Arc::clone(&slot.envelope),
                attempt: slot.attempts + 1,
            };
            let endpoint = Arc::clone(&self.endpoint);
            let handle = self
                .in_flight
                .spawn(async move { (seq, endpoint.deliver(job).await) });
            self.tasks.insert(handle.id(), seq);
        }
    }

    /// When the earliest waiting event becomes due (whether or not its subject lets it start).
    fn next_due(&self) -> Option<Instant> {
        self.window
            .values()
            .filter_map(|s| match s.state {
                State::Waiting { due } => Some(due),
                State::InFlight => None,
            })
            .min()
    }

    /// Applies one attempt's outcome: ack, retry later, or dead letter.
    async fn finish(
        &mut self,
        store: &Store,
        seq: u64,
        outcome: Outcome,
    ) -> Result<(), DrainError> {
        let slot = self
            .window
            .get_mut(&seq)
            .expect("finished seqs are in the window");
        let attempt = slot.attempts + 1;
        let id = slot.envelope.id.clone();
        let (error, retry_after, gone) = match outcome {
            Outcome::Delivered => {
                if slot.attempts > 0 {
                    tracing::info!(sink = %self.name, seq, event_id = %id, attempt, "delivered after retries");
                    store.clear_attempts(&self.name, seq)?;
                }
                self.window.remove(&seq);
                self.delivered += 1;
                return Ok(());
            }
            Outcome::Failed { error, retry_after } => (error, retry_after, false),
            Outcome::Gone { error } => (error, None, true),
            Outcome::Interrupted { error } => {
                tracing::info!(sink = %self.name, seq, event_id = %id, error = %error,
                    "delivery interrupted by the shutdown; it is not counted as an attempt and goes out after the next start");
                // Not retried in this run: the daemon is stopping.
                slot.state = State::Waiting {
                    due: Instant::now() + INTERRUPTED_HOLD,
                };
                return Ok(());
            }
        };
        slot.attempts = attempt;
        slot.last_error = error.clone();
        if gone || attempt >= self.delivery.max_attempts {
            let dead = DeadLetter {
                sink: self.name.clone(),
                attempts: attempt,
                error: error.clone(),
                at: now_ms(),
                event: (*slot.event).clone(),
            };
            store.put_dead(&dead)?;
            self.window.remove(&seq);
            self.advance_ack(store)?;
            store.flush().await?;
            self.ack_dirty = false;
            tracing::error!(sink = %self.name, seq, event_id = %id, attempts = attempt, error = %error,
                "gave up: the event is a dead letter; `pollhook events list --dead` shows it, `pollhook events replay --sink {} --dead` re-delivers it", self.name);
            return Ok(());
        }
        let wait =
            retry_after.unwrap_or_else(|| on_schedule(&self.delivery.retry_schedule, attempt));
        slot.state = State::Waiting {
            due: Instant::now() + wait,
        };
        store.record_attempts(
            &self.name,
            seq,
            Attempts {
                count: attempt,
                last_at: now_ms(),
            },
        )?;
        store.flush().await?;
        tracing::warn!(sink = %self.name, seq, event_id = %id, attempt, max_attempts = self.delivery.max_attempts,
            retry_in = ?wait, error = %error, "delivery failed; retrying");
        Ok(())
    }
}

/// The ordering key's hash (see [`Slot::key`]).
fn subject_key(subject: &str) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the same subject gives the same hash for the whole run.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(subject.as_bytes());
    h.finish()
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{event_id, NewEvent};
    use crate::sinks::Runner;
    use crate::store::Batch;
    use std::sync::Mutex;

    /// Records (subject, seq) in completion order; fails events per a script; tracks the most
    /// deliveries seen in flight at once.
    #[derive(Default)]
    struct Scripted {
        log: Mutex<Vec<(String, u64, u32)>>,
        /// seq -> outcomes for successive attempts (then Delivered).
        script: Mutex<HashMap<u64, Vec<Outcome>>>,
        delay_ms: Mutex<HashMap<u64, u64>>,
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
    }

    impl Endpoint for Scripted {
        fn deliver(&self, job: Job) -> futures_util::future::BoxFuture<'_, Outcome> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                let n = self.now.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(n, SeqCst);
                let seq = job.event.seq;
                let delay = self
                    .delay_ms
                    .lock()
                    .unwrap()
                    .get(&seq)
                    .copied()
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                self.now.fetch_sub(1, SeqCst);
                let doc: serde_json::Value =
                    serde_json::from_str(job.envelope.payload.get()).unwrap();
                let outcome = {
                    let mut script = self.script.lock().unwrap();
                    match script.get_mut(&seq) {
                        Some(v) if !v.is_empty() => v.remove(0),
                        _ => Outcome::Delivered,
                    }
                };
                self.log.lock().unwrap().push((
                    doc["doc"].as_str().unwrap().to_string(),
                    seq,
                    job.attempt,
                ));
                outcome
            })
        }
    }

    fn fail() -> Outcome {
        Outcome::Failed {
            error: "boom".into(),
            retry_after: None,
        }
    }

    fn ev(n: u32, doc: &str) -> NewEvent {
        NewEvent {
            id: event_id(&["q", &n.to_string()]),
            provider: "caminvoice",
            account: "a".into(),
            event_type: if n % 2 == 0 {
                "DOCUMENT.X".into()
            } else {
                "ENTITY.Y".into()
            },
            occurred_at: 0,
            detected_at: now_ms(),
            subject: format!("m/{doc}"),
            payload: format!(r#"{{"doc":"{doc}","n":{n}}}"#),
        }
    }

    async fn store_with(events: Vec<NewEvent>) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        store.commit(Batch::of_events(events)).await.unwrap();
        (dir, store)
    }

    fn delivery(ordering: DeliveryOrder, concurrency: usize, max_attempts: u32) -> Delivery {
        Delivery {
            retry_schedule: vec![Duration::from_millis(10)],
            max_attempts,
            ordering,
            concurrency,
        }
    }

    /// Retries an hour apart: a drain never meets a retry that became due while it ran (how
    /// long a flush takes is the machine's business); tests pass the hour with
    /// [`an_hour_passes`].
    fn hourly(ordering: DeliveryOrder, concurrency: usize, max_attempts: u32) -> Delivery {
        Delivery {
            retry_schedule: vec![Duration::from_secs(3600)],
            ..delivery(ordering, concurrency, max_attempts)
        }
    }

    /// Dates the last failed attempt of `seq` an hour back, as if the retry wait had passed.
    fn an_hour_passes(store: &Store, seq: u64) {
        let a = store.attempts("s", seq).unwrap().expect("a failed attempt");
        store
            .record_attempts(
                "s",
                seq,
                Attempts {
                    count: a.count,
                    last_at: a.last_at - 3_600_000,
                },
            )
            .unwrap();
    }

    #[tokio::test]
    async fn in_order_retries_the_head_before_anything_after_it() {
        let (_d, store) = store_with((1..=4).map(|n| ev(n, "d")).collect()).await;
        let ep = Arc::new(Scripted::default());
        ep.script.lock().unwrap().insert(2, vec![fail(), fail()]);
        let mut r = Runner::queue(
            "s",
            Filter::default(),
            ep.clone(),
            hourly(DeliveryOrder::InOrder, 1, 5),
        );
        for attempt in 1..=2 {
            let e = crate::sinks::drain(&store, &mut r).await.unwrap_err();
            assert!(e.to_string().contains("boom"), "{e}");
            assert_eq!(
                store.acked("s").unwrap(),
                1,
                "the ack stops before the failed head"
            );
            assert_eq!(store.attempts("s", 2).unwrap().unwrap().count, attempt);
            an_hour_passes(&store, 2);
        }
        assert_eq!(crate::sinks::drain(&store, &mut r).await.unwrap(), 3);
        let order: Vec<(u64, u32)> = ep
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s, a)| (*s, *a))
            .collect();
        assert_eq!(order, vec![(1, 1), (2, 1), (2, 2), (2, 3), (3, 1), (4, 1)]);
        assert_eq!(store.acked("s").unwrap(), 4);
        assert_eq!(
            store.attempts("s", 2).unwrap(),
            None,
            "attempts are forgotten once delivered"
        );
    }

    #[tokio::test]
    async fn an_attempt_cut_by_the_shutdown_is_neither_counted_nor_acked_nor_dead() {
        let (_d, store) = store_with(vec![ev(1, "d"), ev(2, "d")]).await;
        let ep = Arc::new(Scripted::default());
        ep.script.lock().unwrap().insert(
            1,
            vec![Outcome::Interrupted {
                error: "pollhook is shutting down".into(),
            }],
        );
        // One attempt allowed: a counted failure would make a dead letter at once.
        let mut r = Runner::queue(
            "s",
            Filter::default(),
            ep.clone(),
            delivery(DeliveryOrder::InOrder, 1, 1),
        );
        assert_eq!(crate::sinks::drain(&store, &mut r).await.unwrap(), 0);
        assert_eq!(store.acked("s").unwrap(), 0);
        assert_eq!(store.attempts("s", 1).unwrap(), None);
        assert!(store.dead_letters(Some("s")).unwrap().is_empty());
        // The next start delivers both, the first as its first attempt.
        let mut r = Runner::queue(
            "s",
            Filter::default(),
            ep.clone(),
            delivery(DeliveryOrder::InOrder, 1, 1),
        );
        assert_eq!(crate::sinks::drain(&store, &mut r).await.unwrap(), 2);
        let attempts: Vec<(u64, u32)> = ep
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s, a)| (*s, *a))
            .collect();
        assert_eq!(attempts, vec![(1, 1), (1, 1), (2, 1)]);
    }

    #[tokio::test]
    async fn attempts_survive_a_restart_and_max_attempts_makes_a_dead_letter() {
        let (_d, store) = store_with(vec![ev(1, "d"), ev(2, "d")]).await;
        let ep = Arc::new(Scripted::default());
        ep.script.lock().unwrap().insert(1, vec![fail(); 10]);
        for _ in 0..2 {
            // A fresh queue each time: what it knows about attempts comes from the store.
            let mut r = Runner::queue(
                "s",
                Filter::default(),
                ep.clone(),
                hourly(DeliveryOrder::InOrder, 1, 3),
            );
            assert!(crate::sinks::drain(&store, &mut r).await.is_err());
            an_hour_passes(&store, 1);
        }
        let mut r = Runner::queue(
            "s",
            Filter::default(),
            ep.clone(),
            hourly(DeliveryOrder::InOrder, 1, 3),
        );
        assert_eq!(crate::sinks::drain(&store, &mut r).await.unwrap(), 1);
        let dead = store.dead_letters(Some("s")).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event.seq, dead[0].attempts, dead[0].error.as_str()),
            (1, 3, "boom")
        );
        assert_eq!(
            store.acked("s").unwrap(),
            2,
            "a dead letter no longer holds the ack back"
        );
        assert_eq!(store.attempts("s", 1).unwrap(), None);
    }

    #[tokio::test]
    async fn gone_is_a_dead_letter_at_once_and_filtered_events_are_acked_undelivered() {
        let (_d, store) = store_with((1..=4).map(|n| ev(n, "d")).collect()).await;
        let ep = Arc::new(Scripted::default());
        ep.script.lock().unwrap().insert(
            2,
            vec![Outcome::Gone {
                error: "410".into(),
            }],
        );
        let filter = Filter {
            events: vec!["DOCUMENT.*".into()],
            accounts: vec![],
        };
        let mut r = Runner::queue(
            "s",
            filter,
            ep.clone(),
            delivery(DeliveryOrder::InOrder, 1, 24),
        );
        assert_eq!(crate::sinks::drain(&store, &mut r).await.unwrap(), 1);
        let seen: Vec<u64> = ep.log.lock().unwrap().iter().map(|(_, s, _)| *s).collect();
        assert_eq!(seen, vec![2, 4], "odd events are ENTITY.Y, filtered out");
        assert_eq!(store.dead_letters(None).unwrap()[0].attempts, 1);
        assert_eq!(store.acked("s").unwrap(), 4);
    }

    #[tokio::test]
    async fn per_document_keeps_each_documents_order_and_runs_documents_in_parallel() {
        let docs = ["a", "b", "c", "d"];
        let events: Vec<NewEvent> = (1..=40).map(|n| ev(n, docs[n as usize % 4])).collect();
        let (_d, store) = store_with(events).await;
        let ep = Arc::new(Scripted::default());
        {
            let mut delays = ep.delay_ms.lock().unwrap();
            for seq in 1..=40u64 {
                delays.insert(seq, fastrand::u64(0..15));
            }
            // Document "c" (seq 2, 6, 10, ...) fails twice at seq 6: its later events wait,
            // the other documents go on.
            ep.script.lock().unwrap().insert(6, vec![fail(), fail()]);
        }
        let r = Runner::queue(
            "s",
            Filter::default(),
            ep.clone(),
            delivery(DeliveryOrder::PerDocument, 4, 10),
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::sinks::run(Arc::clone(&store), r, stop_rx));
        let deadline = Instant::now() + Duration::from_secs(120);
        while store.acked("s").unwrap() < 40 {
            assert!(
                Instant::now() < deadline,
                "not all delivered: {:?}",
                ep.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let log = ep.log.lock().unwrap().clone();
        for doc in docs {
            let seqs: Vec<u64> = log
                .iter()
                .filter(|(d, _, _)| d == doc)
                .map(|(_, s, _)| *s)
                .collect();
            let mut sorted = seqs.clone();
            sorted.sort();
            assert_eq!(seqs, sorted, "document {doc} out of order: {seqs:?}");
        }
        assert_eq!(log.len(), 42, "40 deliveries plus two failed attempts");
        assert!(
            ep.peak.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "never ran in parallel"
        );
        assert!(
            ep.peak.load(std::sync::atomic::Ordering::SeqCst) <= 4,
            "concurrency exceeded"
        );
        // While seq 6 waited on its retries, other documents went past it.
        let retried = log.iter().position(|(_, s, a)| *s == 6 && *a == 3).unwrap();
        assert!(
            log[..retried].iter().any(|(d, s, _)| d != "c" && *s > 6),
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn a_waiting_retry_does_not_block_shutdown_or_the_ack_of_others() {
        let (_d, store) = store_with(vec![ev(1, "x"), ev(2, "y")]).await;
        let ep = Arc::new(Scripted::default());
        ep.script.lock().unwrap().insert(1, vec![fail(); 100]);
        let mut d = delivery(DeliveryOrder::PerDocument, 2, 100);
        d.retry_schedule = vec![Duration::from_secs(3600)];
        let r = Runner::queue("s", Filter::default(), ep.clone(), d);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(crate::sinks::run(Arc::clone(&store), r, stop_rx));
        let deadline = Instant::now() + Duration::from_secs(120);
        while ep.log.lock().unwrap().len() < 2 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("stops promptly")
            .unwrap();
        assert_eq!(
            store.acked("s").unwrap(),
            0,
            "seq 1 is unfinished, so nothing is acked past it"
        );
        assert_eq!(store.attempts("s", 1).unwrap().unwrap().count, 1);
    }
}
