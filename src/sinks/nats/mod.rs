//! The NATS JetStream sink: one publish per event into a stream, acked only after its PubAck.
//!
//! It is an [`Endpoint`], so the per-event queue gives it what the other endpoints have:
//! filters, per-sink acks, retries, dead letters, per-document ordering and replay. With
//! `ordering = "per-document"` (its default) up to `concurrency` publishes are in flight at
//! once — many PubAcks pending — while a document's next event is published only after the
//! previous one's PubAck, so each document's events keep their order in the stream.
//!
//! Message: subject from the template (`config::subject`), body the payload (or the envelope line),
//! headers `Nats-Msg-Id` = the event id (JetStream drops a repeat within the stream's
//! `duplicate_window`; a duplicate PubAck counts as delivered), `Pollhook-Provider`,
//! `Pollhook-Account`, `Pollhook-Type`.
//!
//! **Effectively once beyond the duplicate window.** JetStream forgets ids after its window;
//! a daemon may be down longer, or a PubAck may be lost and the retry come much later. So the
//! sink asks the stream itself before it could publish something twice:
//! - at start ([`Endpoint::prepare`]) it reads the stream's messages (headers only) since the
//!   oldest unacknowledged event was detected, minus [`CLOCK_SKEW`], looks each `Nats-Msg-Id`
//!   up in the store's `ids` tree, and takes every event after its ack that the stream already
//!   holds as delivered. The ids are compared, never stream or store positions: a replaced
//!   store or a stream shared by several shards cannot make it skip an event;
//! - during the run, an event whose attempt ended without an answer (no PubAck in time, a
//!   broken connection) is looked up the same way before it is published again.
//!
//! The stream (its existence, that it captures the sink's subjects) is checked when the sink
//! connects; `create_stream` creates a missing one.
//!
//! Secrets (token, password, nkey seed, creds) are resolved at build and handed only to the
//! client's connect options.

use super::{BuildError, Endpoint, Job, Outcome};
use crate::config::{subject, Body, NatsAuth, NatsSettings, Secret};
use crate::store::Store;
use crate::time::{now_ms, parse_timestamp, Millis};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

/// How far before an event's detection (or first publish) the stream is read: covers a
/// difference between this host's clock and the NATS server's (the stream stamps messages with
/// the server's clock) and events committed slightly out of their detection order.
pub const CLOCK_SKEW: Duration = Duration::from_secs(600);
/// Outbox events after the ack whose detection times bound the start-up read.
const CANDIDATES: usize = 4096;
/// Messages fetched per request while reading the stream.
const READ_BATCH: usize = 1000;
/// Publishes the client keeps awaiting a PubAck for, at most (above any `concurrency`).
const MAX_ACK_INFLIGHT: usize = 8192;

/// A NATS sink.
pub struct Nats {
    name: String,
    settings: NatsSettings,
    secret: Option<Secret>,
    /// The connection, once made and the stream checked.
    conn: tokio::sync::Mutex<Option<Conn>>,
    memory: Mutex<Memory>,
    /// Serializes stream reads; holds what the last one covered.
    last_read: tokio::sync::Mutex<Option<Read>>,
}

#[derive(Clone)]
struct Conn {
    js: jetstream::Context,
}

#[derive(Default)]
struct Memory {
    /// Ids of unacknowledged events that the stream was found to hold.
    present: HashSet<String>,
    /// Events whose last attempt ended without an answer: when one was first sent, and when
    /// the last such failure was seen.
    unknown: HashMap<String, (Millis, Millis)>,
}

/// A completed read of the stream: when it started and from which instant it read.
#[derive(Debug, Clone, Copy)]
struct Read {
    started: Millis,
    from: Millis,
}

impl Nats {
    /// Resolves the sink's secret (the error names its source, never a value).
    pub fn new(name: &str, settings: &NatsSettings) -> Result<Nats, BuildError> {
        let secret = match settings.auth.secret() {
            None => None,
            Some(r) => Some(r.resolve().map_err(|source| BuildError::Secret {
                sink: name.to_string(),
                source,
            })?),
        };
        if let (NatsAuth::Creds(r), Some(s)) = (&settings.auth, &secret) {
            // Parse now, so a malformed creds file is a start-up error.
            async_nats::ConnectOptions::with_credentials(s.expose()).map_err(|_| {
                BuildError::BadSecret {
                    sink: name.to_string(),
                    message: format!("{}: not a NATS credentials file (it holds a user JWT and an nkey seed between -----BEGIN/END----- lines; `nsc generate creds` makes one)", r.origin),
                }
            })?;
        }
        for path in settings
            .tls_ca_file
            .iter()
            .chain(settings.tls_client.iter().flat_map(|(c, k)| [c, k]))
        {
            std::fs::File::open(path).map_err(|source| BuildError::File {
                sink: name.to_string(),
                path: path.clone(),
                source,
            })?;
        }
        Ok(Nats {
            name: name.to_string(),
            settings: settings.clone(),
            secret,
            conn: tokio::sync::Mutex::new(None),
            memory: Mutex::default(),
            last_read: tokio::sync::Mutex::new(None),
        })
    }

    fn servers(&self) -> String {
        self.settings.servers.join(", ")
    }

    /// The connection, connecting and checking the stream first if needed.
    async fn conn(&self) -> Result<Conn, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let conn = self.connect().await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<Conn, String> {
        let s = &self.settings;
        let sink = self.name.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("pollhook {} sink {}", env!("CARGO_PKG_VERSION"), self.name))
            .connection_timeout(s.timeout)
            .request_timeout(Some(s.timeout))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(sink = %sink, "connected to NATS")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(sink = %sink, "disconnected from NATS; reconnecting (publishes wait and are retried)")
                        }
                        other => tracing::warn!(sink = %sink, "NATS: {other}"),
                    }
                }
            });
        let secret = self.secret.as_ref().map(|s| s.expose().to_string());
        opts = match (&s.auth, secret) {
            (NatsAuth::Token(_), Some(t)) => opts.token(t),
            (NatsAuth::UserPassword { user, .. }, Some(p)) => {
                opts.user_and_password(user.clone(), p)
            }
            (NatsAuth::NkeySeed(_), Some(seed)) => opts.nkey(seed),
            (NatsAuth::Creds(_), Some(c)) => opts
                .credentials(&c)
                .map_err(|_| "the NATS credentials are malformed".to_string())?,
            _ => opts,
        };
        if let Some(ca) = &s.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &s.tls_client {
            opts = opts
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        let client = opts.connect(s.servers.as_slice()).await.map_err(|e| {
            format!(
                "cannot connect to NATS at {}: {e}; is the server running and reachable, and are the sink's credentials and TLS settings right?",
                self.servers()
            )
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(s.timeout)
            .max_ack_inflight(MAX_ACK_INFLIGHT)
            .backpressure_on_inflight(true)
            .build(client);
        self.check_stream(&js).await?;
        Ok(Conn { js })
    }

    /// The stream exists (or is created) and captures every subject the template makes.
    async fn check_stream(&self, js: &jetstream::Context) -> Result<(), String> {
        let s = &self.settings;
        let pattern = s.subject.pattern();
        let info = match js.get_stream(&s.stream).await {
            Ok(mut st) => st
                .info()
                .await
                .map_err(|e| format!("cannot read stream {}: {e}", s.stream))?
                .clone(),
            Err(e) if is_not_found(&e) && s.create_stream => {
                let created = js
                    .create_stream(stream::Config {
                        name: s.stream.clone(),
                        subjects: vec![pattern.clone()],
                        storage: stream::StorageType::File,
                        description: Some("pollhook events (create_stream)".into()),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| format!("cannot create stream {}: {e}", s.stream))?;
                tracing::info!(sink = %self.name, stream = %s.stream, subjects = %pattern,
                    "created the stream (file storage, 1 replica, the server's duplicate window and no limits: adjust with `nats stream edit`)");
                created.cached_info().clone()
            }
            Err(e) if is_not_found(&e) => {
                return Err(format!(
                    "stream {} does not exist on {}; create it, e.g. `nats stream add {} --subjects '{pattern}' --storage file --replicas 1 --dupe-window 2m --defaults`, or set create_stream = true on the sink",
                    s.stream, self.servers(), s.stream
                ))
            }
            Err(e) => {
                return Err(format!(
                    "cannot look up stream {} on {}: {e}; is JetStream enabled on the server (nats-server -js)?",
                    s.stream,
                    self.servers()
                ))
            }
        };
        let captured = info
            .config
            .subjects
            .iter()
            .any(|f| subject::covers(f, &pattern));
        if !captured {
            return Err(format!(
                "stream {} does not capture the sink's subjects {pattern} (subject = {:?}); it captures [{}]. Add {pattern} to the stream's subjects (`nats stream edit {}`), or change the sink's `subject`",
                s.stream,
                s.subject.to_string(),
                info.config.subjects.join(", "),
                s.stream
            ));
        }
        if info.config.sealed {
            return Err(format!(
                "stream {} is sealed: it takes no new messages",
                s.stream
            ));
        }
        if info.config.duplicate_window.is_zero() {
            tracing::warn!(sink = %self.name, stream = %s.stream,
                "the stream has no duplicate window: a publish repeated after a lost PubAck is caught only by the sink's stream check");
        }
        Ok(())
    }

    /// Reads the stream's messages (headers only) stored at or after `from` on the server's
    /// clock, up to its last message now, and returns the `Nats-Msg-Id`s that `keep` accepts.
    async fn read_ids(
        &self,
        conn: &Conn,
        from: Millis,
        keep: impl Fn(&str) -> bool,
    ) -> Result<HashSet<String>, String> {
        let name = &self.settings.stream;
        let fail = |e: &dyn std::fmt::Display| format!("cannot read stream {name}: {e}");
        let mut st = conn.js.get_stream(name).await.map_err(|e| fail(&e))?;
        let last = st.info().await.map_err(|e| fail(&e))?.state.last_sequence;
        let mut found = HashSet::new();
        if last == 0 {
            return Ok(found);
        }
        let start_time = async_nats::jetstream::consumer::DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::from_nanos(i128::from(from.max(0)) * 1_000_000)
                .map_err(|e| fail(&e))?,
        };
        let reader: consumer::PullConsumer = st
            .create_consumer(consumer::pull::Config {
                deliver_policy: start_time,
                ack_policy: consumer::AckPolicy::None,
                headers_only: true,
                memory_storage: true,
                inactive_threshold: Duration::from_secs(300),
                description: Some(format!("pollhook sink {}: stream check", self.name)),
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))?;
        let consumer_name = reader.cached_info().name.clone();
        let mut read = 0u64;
        let result = async {
            if reader.cached_info().num_pending == 0 {
                return Ok(());
            }
            loop {
                let mut batch = reader
                    .fetch()
                    .max_messages(READ_BATCH)
                    .messages()
                    .await
                    .map_err(|e| fail(&e))?;
                let mut got = 0;
                let mut reached_end = false;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| fail(&e))?;
                    got += 1;
                    let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                    reached_end |= seq >= last;
                    if let Some(id) = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    {
                        if keep(id.as_str()) {
                            found.insert(id.as_str().to_string());
                        }
                    }
                }
                read += got;
                if got == 0 || reached_end {
                    return Ok::<(), String>(());
                }
            }
        }
        .await;
        // The consumer also goes by itself after `inactive_threshold`.
        let _ = st.delete_consumer(&consumer_name).await;
        result?;
        tracing::debug!(sink = %self.name, stream = %name, read, found = found.len(), "read the stream's ids");
        Ok(found)
    }

    /// Before an event whose earlier attempt got no answer is sent again: reads the stream
    /// (unless a read that started after that failure already covered its first send) and
    /// notes the unacknowledged events it holds.
    async fn check_unknown(
        &self,
        conn: &Conn,
        first_sent: Millis,
        failed_at: Millis,
    ) -> Result<(), String> {
        let mut last = self.last_read.lock().await;
        let skew = CLOCK_SKEW.as_millis() as Millis;
        if let Some(r) = *last {
            if r.started >= failed_at && r.from <= first_sent - skew {
                return Ok(());
            }
        }
        let (from, ids): (Millis, HashSet<String>) = {
            let m = crate::locks::lock(&self.memory);
            let oldest = m
                .unknown
                .values()
                .map(|(f, _)| *f)
                .min()
                .unwrap_or(first_sent);
            (
                oldest.min(first_sent) - skew,
                m.unknown.keys().cloned().collect(),
            )
        };
        let started = now_ms();
        let found = self.read_ids(conn, from, |id| ids.contains(id)).await?;
        self.note_present(
            found,
            "events whose PubAck was lost are in the stream already; not published again",
        );
        *last = Some(Read { started, from });
        Ok(())
    }

    /// Remembers events the stream holds (delivered without publishing), and says so.
    fn note_present(&self, found: HashSet<String>, what: &str) {
        if !found.is_empty() {
            tracing::info!(sink = %self.name, stream = %self.settings.stream, events = found.len(), "{what}");
        }
        crate::locks::lock(&self.memory).present.extend(found);
    }

    /// One publish and its PubAck.
    async fn publish(&self, conn: &Conn, job: &Job) -> Outcome {
        let env = &job.envelope;
        let s = &self.settings;
        let subject = s
            .subject
            .render(&env.provider, &env.account, &env.event_type);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, header_value(&env.id));
        headers.insert("Pollhook-Provider", header_value(&env.provider));
        headers.insert("Pollhook-Account", header_value(&env.account));
        headers.insert("Pollhook-Type", header_value(&env.event_type));
        let body = match s.body {
            Body::Payload => bytes::Bytes::copy_from_slice(env.payload.get().as_bytes()),
            Body::Envelope => bytes::Bytes::from(job.event.line.clone()),
        };
        let sent_at = now_ms();
        let pending = match conn.js.publish_with_headers(subject.clone(), headers, body).await {
            Ok(p) => p,
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Outcome::Gone {
                    error: format!("the event is larger than the NATS server's max_payload ({e}); raise max_payload on the server, then `pollhook events replay --sink {} --dead`", self.name),
                }
            }
            Err(e) => {
                // Not handed to the connection: nothing was sent.
                return Outcome::Failed {
                    error: format!("cannot publish to {subject}: {e}"),
                    retry_after: None,
                };
            }
        };
        match pending.await {
            Ok(ack) if ack.stream == s.stream => {
                if ack.duplicate {
                    tracing::debug!(sink = %self.name, event_id = %env.id, stream_seq = ack.sequence, "the stream already had it (duplicate PubAck)");
                }
                Outcome::Delivered
            }
            Ok(ack) => Outcome::Failed {
                error: format!(
                    "stream {} took the message on {subject}, not stream {}: the streams' subjects changed since the start; fix them, or set `stream` to the one that captures {}",
                    ack.stream,
                    s.stream,
                    s.subject.pattern()
                ),
                retry_after: None,
            },
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => Outcome::Failed {
                error: format!(
                    "no stream captures {subject} (no responders): was stream {} deleted or edited?",
                    s.stream
                ),
                retry_after: None,
            },
            Err(e) => {
                // Sent, but no answer, or an answer that is not a PubAck: the stream may
                // hold it. Before the retry, the stream is asked (`check_unknown`).
                let now = now_ms();
                let mut m = crate::locks::lock(&self.memory);
                let entry = m.unknown.entry(env.id.clone()).or_insert((sent_at, now));
                entry.1 = now;
                Outcome::Failed {
                    error: format!("publish to {subject} got no PubAck: {e}"),
                    retry_after: None,
                }
            }
        }
    }

    async fn attempt(&self, job: Job) -> Outcome {
        let id = job.envelope.id.clone();
        let unknown = {
            let mut m = crate::locks::lock(&self.memory);
            if m.present.remove(&id) {
                m.unknown.remove(&id);
                return Outcome::Delivered;
            }
            m.unknown.get(&id).copied()
        };
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(error) => {
                return Outcome::Failed {
                    error,
                    retry_after: None,
                }
            }
        };
        if let Some((first_sent, failed_at)) = unknown {
            if let Err(error) = self.check_unknown(&conn, first_sent, failed_at).await {
                return Outcome::Failed {
                    error,
                    retry_after: None,
                };
            }
            let mut m = crate::locks::lock(&self.memory);
            if m.present.remove(&id) {
                m.unknown.remove(&id);
                return Outcome::Delivered;
            }
        }
        let outcome = self.publish(&conn, &job).await;
        let finished = matches!(outcome, Outcome::Delivered | Outcome::Gone { .. })
            || job.attempt >= self.settings.delivery.max_attempts;
        if finished {
            crate::locks::lock(&self.memory).unknown.remove(&id);
        }
        outcome
    }

    /// The start-up check: events after the ack that the stream already holds.
    async fn find_published(&self, store: &Store, acked: u64) -> Result<(), String> {
        let conn = self.conn().await?;
        let events = store
            .read_outbox(acked, CANDIDATES)
            .map_err(|e| e.to_string())?;
        let Some(oldest) = events
            .iter()
            .filter_map(|e| e.envelope().ok())
            .filter_map(|env| parse_timestamp(&env.detected_at))
            .min()
        else {
            return Ok(());
        };
        let from = oldest - CLOCK_SKEW.as_millis() as Millis;
        let started = now_ms();
        let found = self
            .read_ids(
                &conn,
                from,
                |id| matches!(store.seq_of(id), Ok(Some(seq)) if seq > acked),
            )
            .await?;
        self.note_present(found, "events after the sink's ack are in the stream already (published before a restart): acknowledging them without publishing again");
        *self.last_read.lock().await = Some(Read { started, from });
        Ok(())
    }
}

impl Endpoint for Nats {
    fn deliver(&self, job: Job) -> BoxFuture<'_, Outcome> {
        Box::pin(self.attempt(job))
    }

    fn prepare<'a>(&'a self, store: &'a Store, acked: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.find_published(store, acked))
    }
}

fn is_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// A header value cannot hold a line break: control characters become `_`.
fn header_value(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_cannot_break_a_line() {
        assert_eq!(header_value("acme\r\nX-Evil: 1"), "acme__X-Evil: 1");
        assert_eq!(header_value("DOCUMENT.DELIVERED"), "DOCUMENT.DELIVERED");
    }
}
