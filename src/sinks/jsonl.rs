//! The JSON Lines sink: one envelope per line, fsync'd before the ack.
//!
//! Effectively-once across restarts: when it (re)opens the file it reads its own tail to learn
//! the last seq written, drops a partial last line a crash may have left, and skips events it
//! already wrote. A failed write closes the file, so the next attempt re-reads the tail.
//!
//! A seq means something only in the store that assigned it. So the sink resumes from its
//! tail only if its store wrote that line (the line's event id maps to its seq in the store's
//! `ids`, see [`Origin::wrote`]); a file written with another store (a deleted or replaced
//! state dir) is refused, with nothing written or acknowledged, and [`check`] refuses it at
//! start-up already. [`tail`] and [`after`] read files for `store reset` and `store restore`.
//!
//! Rotation: a [`Reopen`] handle (fired by the daemon at SIGHUP, after logrotate moved the
//! file) makes every JSONL sink built with it reopen its path before its next write; with `rotate_bytes` the sink itself renames a file
//! that reached the size to `path.1` (`path.1` to `path.2`, ..., keeping `rotate_keep`). Either
//! way the last seq written is carried over, so nothing is written twice across a rotation.
//! This module never deletes a file other than the oldest rotated one it made.

use super::{Sink, SinkError};
use crate::event::StoredEvent;
use crate::store::{Origin, StoreError};
use futures_util::future::BoxFuture;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The "reopen your files" signal, handed explicitly to the JSONL sinks that obey it (the
/// daemon fires it at SIGHUP). A generation counter: each sink reopens its file when it sees
/// a new value. Cheap to clone; every clone is the same signal.
#[derive(Clone, Debug, Default)]
pub struct Reopen(Arc<AtomicU64>);

impl Reopen {
    /// Makes every sink holding this handle reopen its path before its next write.
    pub fn fire(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Appends envelopes to a file.
pub struct JsonlSink {
    name: String,
    path: PathBuf,
    /// The open file and the last seq it holds; `None` until (re)opened.
    open: Option<(File, u64)>,
    /// The last seq this sink wrote durably, kept across reopen and rotation.
    written: u64,
    /// `rotate_bytes` and `rotate_keep`.
    rotate: Option<(u64, u32)>,
    /// What tells it to reopen its file, and the generation the open file belongs to.
    reopen: Reopen,
    generation: u64,
    /// The store it delivers from; the tail of the file must be its own (`None` only in unit
    /// tests that call `deliver` directly: the file is then trusted).
    origin: Option<Origin>,
    /// The file's permission bits (`mode`), set on every open whatever the umask.
    mode: u32,
}

impl JsonlSink {
    pub fn new(name: &str, path: &Path) -> JsonlSink {
        JsonlSink {
            name: name.to_string(),
            path: path.to_path_buf(),
            open: None,
            written: 0,
            rotate: None,
            reopen: Reopen::default(),
            generation: 0,
            origin: None,
            mode: crate::files::FILE_MODE,
        }
    }

    /// Gives the file (and rotated ones, which it was) `mode` (default 0600).
    pub fn mode(mut self, mode: u32) -> JsonlSink {
        self.mode = mode;
        self
    }

    /// Reopens the file before the next write whenever `reopen` fires (SIGHUP).
    pub fn reopen_on(mut self, reopen: &Reopen) -> JsonlSink {
        self.generation = reopen.generation();
        self.reopen = reopen.clone();
        self
    }

    /// Rotates the file once it has reached `bytes` (if set), keeping `keep` old files.
    pub fn rotate(mut self, bytes: Option<u64>, keep: u32) -> JsonlSink {
        self.rotate = bytes.map(|b| (b, keep.max(1)));
        self
    }
}

/// `path.N`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Shifts `path.1..` up by one (dropping the oldest beyond `keep`) and moves `path` to `path.1`.
fn rotate_files(path: &Path, keep: u32) -> std::io::Result<()> {
    let _ = std::fs::remove_file(rotated(path, keep));
    for n in (1..keep).rev() {
        match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(path, rotated(path, 1))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The last complete line of a sink's file: its event's seq and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    pub seq: u64,
    pub id: String,
    /// The file it was read from (`path`, or `path.1` after a rotation).
    pub file: PathBuf,
}

/// Why a file is not resumed from.
enum OpenError {
    Io(std::io::Error),
    /// Its last line was not written by this store: the message says what to do.
    Foreign(String),
    Store(StoreError),
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// The tail the sink resumes from: the last complete line of `path`, or when it holds none
/// and `rotating`, of `path.1` (the sink may have rotated just before a crash). Reads only.
pub fn tail(path: &Path, rotating: bool) -> std::io::Result<Option<Tail>> {
    let mut candidates = vec![path.to_path_buf()];
    if rotating {
        candidates.push(rotated(path, 1));
    }
    for file in candidates {
        match File::open(&file) {
            Ok(mut f) => {
                if let (Some(pos), _) = last_line(&mut f)? {
                    return Ok(Some(Tail {
                        seq: pos.0,
                        id: pos.1,
                        file,
                    }));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// `None` when `origin` wrote `tail`; else why the sink must not resume from it.
fn foreign(name: &str, tail: &Tail, origin: &Origin) -> Result<Option<String>, StoreError> {
    if origin.wrote(&tail.id, tail.seq)? {
        return Ok(None);
    }
    let detail = match origin.seq_of(&tail.id)? {
        Some(other) => format!(" (it has that event at seq {other})"),
        None => String::new(),
    };
    Ok(Some(format!(
        "sink {name}: {} ends with event {} at seq {}, which this state store never committed{detail}: the file was written with another store (was the state dir deleted, replaced, or restored from an older backup?). Nothing was written to it or acknowledged.\nhelp: restore the state dir from a backup with `pollhook store restore FILE --config <your config>`; or, if you started over on purpose, `pollhook store reset --config <your config> --yes` continues this file after seq {}; or move the file aside",
        tail.file.display(),
        tail.id,
        tail.seq,
        tail.seq
    )))
}

/// Why a JSONL sink's file cannot be resumed from with a store.
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    /// The file's last line was not written by this store: the message says what happened and
    /// what to do (an operator must choose: restore, reset, or move the file aside).
    #[error("{0}")]
    Foreign(String),
    /// The file cannot be read.
    #[error("sink {sink}: cannot read {}: {source}", path.display())]
    Unreadable {
        sink: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store could not be asked.
    #[error("sink {sink}: {source}")]
    Store { sink: String, source: StoreError },
}

/// Checks before anything runs that the file of a JSONL sink can be resumed from with this
/// store: its last line, if any, is one `origin` wrote. The error says what happened and what
/// to do.
pub fn check(
    name: &str,
    path: &Path,
    rotating: bool,
    origin: &Origin,
) -> Result<(), PositionError> {
    let tail = tail(path, rotating).map_err(|source| PositionError::Unreadable {
        sink: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    match tail {
        None => Ok(()),
        Some(t) => match foreign(name, &t, origin) {
            Ok(None) => Ok(()),
            Ok(Some(why)) => Err(PositionError::Foreign(why)),
            Err(source) => Err(PositionError::Store {
                sink: name.to_string(),
                source,
            }),
        },
    }
}

/// Opens `path` for appending and returns the last seq written: checks with `origin` that the
/// file's tail is this store's, then truncates a partial last line.
fn open(
    name: &str,
    path: &Path,
    rotating: bool,
    mode: u32,
    origin: Option<&Origin>,
) -> Result<(File, u64), OpenError> {
    if let (Some(origin), Some(t)) = (origin, tail(path, rotating)?) {
        if let Some(why) = foreign(name, &t, origin).map_err(OpenError::Store)? {
            return Err(OpenError::Foreign(why));
        }
    }
    let (file, seq) = open_one(path, mode)?;
    if seq == 0 && rotating {
        if let Ok(mut old) = File::open(rotated(path, 1)) {
            return Ok((file, last_line(&mut old)?.0.map_or(0, |p| p.0)));
        }
    }
    Ok((file, seq))
}

fn open_one(path: &Path, mode: u32) -> std::io::Result<(File, u64)> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(mode)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    let (pos, valid_len) = last_line(&mut file)?;
    let len = file.metadata()?.len();
    if valid_len < len {
        tracing::warn!(path = %path.display(), bytes = len - valid_len,
            "removing a partial last line (an interrupted write); its event is written again");
        file.set_len(valid_len)?;
        file.sync_data()?;
    }
    Ok((file, pos.map_or(0, |p| p.0)))
}

/// The (seq, id) of the last complete line (`None` if there is none, or it is not an
/// envelope), and the length up to and including its newline.
fn last_line(file: &mut File) -> std::io::Result<(Option<(u64, String)>, u64)> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if start == 0 {
                return Ok((None, 0));
            }
            window *= 4;
            continue;
        };
        let begin = match buf[..end].iter().rposition(|b| *b == b'\n') {
            Some(p) => p + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        return Ok((position(&buf[begin..end]), start + end as u64 + 1));
    }
}

/// The seq and id of an envelope line.
fn position(line: &[u8]) -> Option<(u64, String)> {
    #[derive(serde::Deserialize)]
    struct Pos {
        seq: u64,
        id: String,
    }
    serde_json::from_slice::<Pos>(line)
        .ok()
        .map(|p| (p.seq, p.id))
}

/// What a sink's files hold after a seq: every envelope line with a greater seq, oldest first
/// (seq, id, line), and the first line at or before it (the boundary), for `store restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct After {
    pub lines: Vec<(u64, String, Vec<u8>)>,
    pub boundary: Option<Tail>,
}

/// Reads `path`, then `path.1`, `path.2`, ... backwards, line by line, until a line at or
/// before `seq`. Lines that are not envelopes, and a partial last line, are skipped.
pub fn after(path: &Path, seq: u64) -> std::io::Result<After> {
    let mut out = After::default();
    for n in 0..=1000 {
        let file = if n == 0 {
            path.to_path_buf()
        } else {
            rotated(path, n)
        };
        let mut f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && n == 0 => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        lines_backwards(&mut f, |line| match position(line) {
            Some((s, id)) if s > seq => {
                out.lines.push((s, id, line.to_vec()));
                true
            }
            Some((s, id)) => {
                out.boundary = Some(Tail {
                    seq: s,
                    id,
                    file: file.clone(),
                });
                false
            }
            None => true,
        })?;
        if out.boundary.is_some() {
            break;
        }
    }
    out.lines.reverse();
    Ok(out)
}

/// Calls `each` with every complete line of `file` (without its newline), last first, while
/// it returns true. A partial last line (no newline) is skipped. Memory: one block and a line.
fn lines_backwards(file: &mut File, mut each: impl FnMut(&[u8]) -> bool) -> std::io::Result<()> {
    const BLOCK: u64 = 64 * 1024;
    let mut pos = file.metadata()?.len();
    // Unprocessed bytes; once `trimmed`, they end just after a newline.
    let mut buf: Vec<u8> = Vec::new();
    let mut trimmed = false;
    loop {
        if trimmed {
            while !buf.is_empty() {
                let body = &buf[..buf.len() - 1];
                match body.iter().rposition(|b| *b == b'\n') {
                    Some(p) => {
                        if !each(&body[p + 1..]) {
                            return Ok(());
                        }
                        buf.truncate(p + 1);
                    }
                    None if pos == 0 => {
                        each(body);
                        return Ok(());
                    }
                    None => break,
                }
            }
        }
        if pos == 0 {
            return Ok(());
        }
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        pos = start;
        if !trimmed {
            if let Some(p) = buf.iter().rposition(|b| *b == b'\n') {
                buf.truncate(p + 1);
                trimmed = true;
            }
        }
    }
}

/// Writes the events not yet in the file and fsyncs. Returns the last seq written.
fn append(file: &mut File, written: u64, events: &[StoredEvent]) -> std::io::Result<u64> {
    let mut buf = Vec::new();
    let mut last = written;
    for e in events.iter().filter(|e| e.seq > written) {
        buf.extend_from_slice(&e.line);
        buf.push(b'\n');
        last = e.seq;
    }
    if !buf.is_empty() {
        file.write_all(&buf)?;
        file.sync_data()?;
    }
    Ok(last)
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn attach(&mut self, origin: &Origin) {
        self.origin = Some(origin.clone());
    }

    fn deliver<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let path = self.path.clone();
            let generation = self.reopen.generation();
            let mut opened = self.open.take();
            if generation != self.generation {
                tracing::info!(sink = %self.name, path = %path.display(), "reopening the JSONL file");
                opened = None;
                self.generation = generation;
            }
            let (carried, rotate, mode) = (self.written, self.rotate, self.mode);
            let (name, origin) = (self.name.clone(), self.origin.clone());
            let batch = events.to_vec();
            let result = tokio::task::spawn_blocking(move || {
                let (mut file, mut written) = match opened {
                    Some(o) => o,
                    None => open(&name, &path, rotate.is_some(), mode, origin.as_ref())?,
                };
                written = written.max(carried);
                if let Some((limit, keep)) = rotate {
                    let pending = batch.iter().any(|e| e.seq > written);
                    if pending && file.metadata()?.len() >= limit {
                        drop(file);
                        rotate_files(&path, keep)?;
                        file = open_one(&path, mode)?.0;
                    }
                }
                let last = append(&mut file, written, &batch)?;
                Ok::<_, OpenError>((file, last))
            })
            .await
            .expect("the JSONL writer task panicked");
            match result {
                Ok(open) => {
                    self.written = open.1;
                    self.open = Some(open);
                    Ok(())
                }
                Err(OpenError::Io(e)) => Err(SinkError {
                    delivered: 0,
                    message: format!(
                        "cannot write {}: {e}; check free space and permissions — nothing after the last complete line is acknowledged",
                        self.path.display()
                    ),
                }),
                Err(OpenError::Foreign(why)) => Err(SinkError {
                    delivered: 0,
                    message: why,
                }),
                Err(OpenError::Store(e)) => Err(SinkError {
                    delivered: 0,
                    message: e.to_string(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64) -> StoredEvent {
        StoredEvent {
            seq,
            line: format!(r#"{{"id":"evt_{seq}","seq":{seq},"payload":{{}}}}"#).into_bytes(),
        }
    }

    fn lines(path: &Path) -> Vec<u64> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_each_event_once_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1), ev(2)]).await.unwrap();
        // A restart after the write but before the ack: the same events are offered again.
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1), ev(2), ev(3)]).await.unwrap();
        s.deliver(&[ev(3), ev(4)]).await.unwrap();
        assert_eq!(lines(&path), vec![1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn the_file_gets_its_mode_whatever_created_it() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1)]).await.unwrap();
        assert_eq!(mode(&path), 0o600, "default: the pollhook user only");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let mut s = JsonlSink::new("j", &path).mode(0o640).rotate(Some(1), 2);
        s.deliver(&[ev(2)]).await.unwrap();
        assert_eq!(mode(&path), 0o640, "the configured mode, set on open");
        assert_eq!(
            mode(&rotated(&path, 1)),
            0o640,
            "the rotated file was the same file"
        );
    }

    #[tokio::test]
    async fn a_partial_last_line_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1)]).await.unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"id":"evt_2","seq":2,"pay"#).unwrap();
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(2)]).await.unwrap();
        assert_eq!(lines(&path), vec![1, 2]);
    }

    #[tokio::test]
    async fn long_lines_and_empty_files_are_read_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        std::fs::write(&path, "").unwrap();
        let big = StoredEvent {
            seq: 7,
            line: format!(
                r#"{{"id":"evt_7","seq":7,"pad":"{}"}}"#,
                "x".repeat(300_000)
            )
            .into_bytes(),
        };
        let mut s = JsonlSink::new("j", &path);
        s.deliver(std::slice::from_ref(&big)).await.unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(last_line(&mut f).unwrap().0.unwrap().0, 7);
    }

    #[tokio::test]
    async fn an_unwritable_path_is_a_clear_error() {
        let mut s = JsonlSink::new("j", Path::new("/nonexistent-dir/e.jsonl"));
        let e = s.deliver(&[ev(1)]).await.unwrap_err();
        assert!(
            e.message.contains("cannot write /nonexistent-dir/e.jsonl"),
            "{}",
            e.message
        );
        assert_eq!(e.delivered, 0);
    }

    #[tokio::test]
    async fn sighup_reopens_the_path_after_logrotate_moved_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let hup = Reopen::default();
        let mut s = JsonlSink::new("j", &path).reopen_on(&hup);
        s.deliver(&[ev(1), ev(2)]).await.unwrap();
        std::fs::rename(&path, dir.path().join("e.jsonl.1")).unwrap();
        hup.fire();
        // Event 2 is offered again (not acked yet): it is in the rotated file, so not rewritten.
        s.deliver(&[ev(2), ev(3)]).await.unwrap();
        assert_eq!(lines(&dir.path().join("e.jsonl.1")), vec![1, 2]);
        assert_eq!(lines(&path), vec![3]);
    }

    #[tokio::test]
    async fn size_rotation_keeps_rotate_keep_files_and_writes_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let one_line = ev(1).line.len() as u64 + 1;
        let mut s = JsonlSink::new("j", &path).rotate(Some(2 * one_line), 2);
        for seq in 1..=8 {
            s.deliver(&[ev(seq)]).await.unwrap();
        }
        assert_eq!(lines(&path), vec![7, 8]);
        assert_eq!(lines(&rotated(&path, 1)), vec![5, 6]);
        assert_eq!(lines(&rotated(&path, 2)), vec![3, 4]);
        assert!(
            !rotated(&path, 3).exists(),
            "only rotate_keep = 2 old files are kept"
        );
        // A crash right after a rotation leaves an empty file: a restarted sink finds the last
        // seq in path.1 and does not write 5 and 6 again.
        s.deliver(&[ev(9)]).await.unwrap();
        s.deliver(&[ev(10)]).await.unwrap();
        drop(s);
        rotate_files(&path, 2).unwrap();
        let mut s = JsonlSink::new("j", &path).rotate(Some(2 * one_line), 2);
        s.deliver(&[ev(9), ev(10), ev(11)]).await.unwrap();
        assert_eq!(lines(&path), vec![11]);
    }

    fn new_event(n: u32) -> crate::event::NewEvent {
        super::super::testutil::new_event("j", n)
    }

    /// A dispatcher's view of a JSONL sink at `path`.
    fn runner(path: &Path) -> super::super::Runner {
        super::super::Runner::batch(
            crate::config::Filter::default(),
            Box::new(JsonlSink::new("j", path)),
        )
    }

    async fn commit(store: &crate::store::Store, events: Vec<crate::event::NewEvent>) {
        store
            .commit(crate::store::Batch::of_events(events))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_file_written_with_another_store_is_refused_and_nothing_is_acked() {
        use super::super::drain;
        use crate::store::Store;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        {
            let old = Store::open(&dir.path().join("old")).unwrap();
            commit(&old, (1..=3).map(new_event).collect()).await;
            drain(&old, &mut runner(&path)).await.unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        // Another store (the state dir was lost): seqs 1 and 2 again, other events.
        let new = Store::open(&dir.path().join("new")).unwrap();
        commit(&new, (10..=11).map(new_event).collect()).await;
        let e = drain(&new, &mut runner(&path))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("never committed") && e.contains("store reset"),
            "{e}"
        );
        assert_eq!(new.acked("j").unwrap(), 0, "acked what it did not write");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        let cfg = crate::config::Sink {
            name: "j".into(),
            filter: Default::default(),
            kind: crate::config::SinkKind::Jsonl(crate::config::JsonlSettings {
                path: path.clone(),
                rotate_bytes: None,
                rotate_keep: 5,
                mode: crate::files::FILE_MODE,
            }),
        };
        assert!(super::super::check_positions(&new, std::slice::from_ref(&cfg)).is_err());
        // The same event at another seq is refused too, naming both.
        drop(new);
        let (reset, _) = Store::reset(&dir.path().join("new"), 1, &[]).unwrap();
        commit(&reset, vec![new_event(3)]).await;
        let e = drain(&reset, &mut runner(&path))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("(it has that event at seq 1)"), "{e}");
    }

    #[tokio::test]
    async fn after_a_reset_that_adopted_the_tail_the_file_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1), ev(2)]).await.unwrap();
        let t = tail(&path, false).unwrap().unwrap();
        assert_eq!((t.seq, t.id.as_str()), (2, "evt_2"));
        let (store, _) =
            crate::store::Store::reset(&dir.path().join("state"), t.seq + 1, &[(t.id, t.seq)])
                .unwrap();
        commit(&store, vec![new_event(1)]).await;
        assert_eq!(
            super::super::drain(&store, &mut runner(&path))
                .await
                .unwrap(),
            1
        );
        assert_eq!(lines(&path), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_pruned_outbox_a_rotated_file_and_an_emptied_file_raise_no_false_alarm() {
        use super::super::{drain, Runner};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let store = crate::store::Store::open(&dir.path().join("state")).unwrap();
        let rotating = || {
            Runner::batch(
                crate::config::Filter::default(),
                Box::new(JsonlSink::new("j", &path).rotate(Some(1), 2)),
            )
        };
        commit(&store, (1..=3).map(new_event).collect()).await;
        drain(&store, &mut runner(&path)).await.unwrap();
        // Every event pruned from the outbox: the file's last line is still this store's.
        let p = store.prune(i64::MAX, &["j".to_string()]).await.unwrap();
        assert_eq!(p.events, 3);
        commit(&store, vec![new_event(4)]).await;
        assert_eq!(drain(&store, &mut runner(&path)).await.unwrap(), 1);
        // Rotated by size; then an empty file (as a crash right after a rotation leaves it):
        // the tail checked is path.1's.
        commit(&store, vec![new_event(5)]).await;
        assert_eq!(drain(&store, &mut rotating()).await.unwrap(), 1);
        assert_eq!(lines(&path), vec![5]);
        rotate_files(&path, 2).unwrap();
        assert_eq!(tail(&path, true).unwrap().unwrap().seq, 5);
        commit(&store, vec![new_event(6)]).await;
        assert_eq!(drain(&store, &mut rotating()).await.unwrap(), 1);
        assert_eq!(lines(&path), vec![6]);
        // Emptied by the operator: nothing to resume from, the sink goes on after its ack.
        std::fs::write(&path, "").unwrap();
        commit(&store, vec![new_event(7)]).await;
        assert_eq!(drain(&store, &mut runner(&path)).await.unwrap(), 1);
        assert_eq!(lines(&path), vec![7]);
    }

    #[test]
    fn after_reads_back_across_rotated_files_up_to_the_boundary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let text = |seqs: std::ops::RangeInclusive<u64>| {
            seqs.map(|n| format!("{}\n", String::from_utf8(ev(n).line).unwrap()))
                .collect::<String>()
        };
        std::fs::write(rotated(&path, 2), text(1..=3)).unwrap();
        std::fs::write(rotated(&path, 1), text(4..=6)).unwrap();
        // A partial last line (a crash) is not an event.
        std::fs::write(&path, text(7..=8) + r#"{"id":"evt_9","seq":9"#).unwrap();
        let a = after(&path, 5).unwrap();
        assert_eq!(
            a.lines.iter().map(|l| l.0).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        assert_eq!(a.lines[0].2, ev(6).line);
        let b = a.boundary.unwrap();
        assert_eq!(
            (b.seq, b.id.as_str(), b.file),
            (5, "evt_5", rotated(&path, 1))
        );
        let a = after(&path, 0).unwrap();
        assert_eq!(a.lines.len(), 8);
        assert_eq!(a.boundary, None);
        let a = after(&path, 8).unwrap();
        assert!(a.lines.is_empty());
        assert_eq!(a.boundary.unwrap().seq, 8);
        // Lines longer than the read block.
        let long = StoredEvent {
            seq: 20,
            line: format!(
                r#"{{"id":"evt_20","seq":20,"pad":"{}"}}"#,
                "x".repeat(200_000)
            )
            .into_bytes(),
        };
        std::fs::write(&path, [long.line.clone(), b"\n".to_vec()].concat()).unwrap();
        let a = after(&path, 6).unwrap();
        assert_eq!(a.lines.len(), 1);
        assert_eq!(a.lines[0].2, long.line);
        assert_eq!(a.boundary.unwrap().seq, 6);
    }
}
