//! The JSON Lines sink: one envelope per line, fsync'd before the ack.
//!
//! Effectively-once across restarts: when it (re)opens the file it reads its own tail to learn
//! the last seq written, drops a partial last line a crash may have left, and skips events it
//! already wrote. A failed write closes the file, so the next attempt re-reads the tail.
//!
//! Rotation: [`reopen_all`] (SIGHUP, after logrotate moved the file) makes every JSONL sink
//! reopen its path before its next write; with `rotate_bytes` the sink itself renames a file
//! that reached the size to `path.1` (`path.1` to `path.2`, ..., keeping `rotate_keep`). Either
//! way the last seq written is carried over, so nothing is written twice across a rotation.
//! This module never deletes a file other than the oldest rotated one it made.

use super::{Sink, SinkError};
use crate::event::StoredEvent;
use crate::providers::BoxFuture;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped by [`reopen_all`]; each sink reopens its file when it sees a new value.
static REOPEN: AtomicU64 = AtomicU64::new(0);

/// Makes every JSONL sink in this process reopen its path before its next write (SIGHUP).
pub fn reopen_all() {
    REOPEN.fetch_add(1, Ordering::SeqCst);
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
    /// The [`REOPEN`] value the open file belongs to.
    generation: u64,
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
            generation: REOPEN.load(Ordering::SeqCst),
            mode: crate::files::FILE_MODE,
        }
    }

    /// Gives the file (and rotated ones, which it was) `mode` (default 0600).
    pub fn mode(mut self, mode: u32) -> JsonlSink {
        self.mode = mode;
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

/// Opens `path` for appending, truncates a partial last line, and returns the last seq written.
/// When the file holds no line and `rotating`, the last seq of `path.1` counts instead (the
/// sink may have rotated just before a crash).
fn open(path: &Path, rotating: bool, mode: u32) -> std::io::Result<(File, u64)> {
    let (file, seq) = open_one(path, mode)?;
    if seq == 0 && rotating {
        if let Ok(mut old) = File::open(rotated(path, 1)) {
            return Ok((file, last_line(&mut old)?.0));
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
    let (seq, valid_len) = last_line(&mut file)?;
    let len = file.metadata()?.len();
    if valid_len < len {
        tracing::warn!(path = %path.display(), bytes = len - valid_len,
            "removing a partial last line (an interrupted write); its event is written again");
        file.set_len(valid_len)?;
        file.sync_data()?;
    }
    Ok((file, seq))
}

/// The seq of the last complete line and the length up to and including its newline.
fn last_line(file: &mut File) -> std::io::Result<(u64, u64)> {
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(file).take(len - start).read_to_end(&mut buf)?;
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if start == 0 {
                return Ok((0, 0));
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
        let seq = serde_json::from_slice::<serde_json::Value>(&buf[begin..end])
            .ok()
            .and_then(|v| v.get("seq").and_then(|s| s.as_u64()))
            .unwrap_or(0);
        return Ok((seq, start + end as u64 + 1));
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

    fn deliver<'a>(
        &'a mut self,
        events: &'a [StoredEvent],
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let path = self.path.clone();
            let generation = REOPEN.load(Ordering::SeqCst);
            let mut opened = self.open.take();
            if generation != self.generation {
                tracing::info!(sink = %self.name, path = %path.display(), "reopening the JSONL file");
                opened = None;
                self.generation = generation;
            }
            let (carried, rotate, mode) = (self.written, self.rotate, self.mode);
            let batch = events.to_vec();
            let result = tokio::task::spawn_blocking(move || {
                let (mut file, mut written) = match opened {
                    Some(o) => o,
                    None => open(&path, rotate.is_some(), mode)?,
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
                Ok::<_, std::io::Error>((file, last))
            })
            .await
            .expect("the JSONL writer task panicked");
            match result {
                Ok(open) => {
                    self.written = open.1;
                    self.open = Some(open);
                    Ok(())
                }
                Err(e) => Err(SinkError {
                    delivered: 0,
                    message: format!(
                        "cannot write {}: {e}; check free space and permissions — nothing after the last complete line is acknowledged",
                        self.path.display()
                    ),
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
            line: format!(r#"{{"seq":7,"pad":"{}"}}"#, "x".repeat(300_000)).into_bytes(),
        };
        let mut s = JsonlSink::new("j", &path);
        s.deliver(std::slice::from_ref(&big)).await.unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(last_line(&mut f).unwrap().0, 7);
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
        let mut s = JsonlSink::new("j", &path);
        s.deliver(&[ev(1), ev(2)]).await.unwrap();
        std::fs::rename(&path, dir.path().join("e.jsonl.1")).unwrap();
        reopen_all();
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
}
