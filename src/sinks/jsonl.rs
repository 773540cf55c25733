//! The JSON Lines sink: one envelope per line, fsync'd before the ack.
//!
//! Effectively-once across restarts: when it (re)opens the file it reads its own tail to learn
//! the last seq written, drops a partial last line a crash may have left, and skips events it
//! already wrote. A failed write closes the file, so the next attempt re-reads the tail.

use super::{Sink, SinkError};
use crate::event::StoredEvent;
use crate::providers::BoxFuture;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Appends envelopes to a file.
pub struct JsonlSink {
    name: String,
    path: PathBuf,
    /// The open file and the last seq it holds; `None` until (re)opened.
    open: Option<(File, u64)>,
}

impl JsonlSink {
    pub fn new(name: &str, path: &Path) -> JsonlSink {
        JsonlSink {
            name: name.to_string(),
            path: path.to_path_buf(),
            open: None,
        }
    }
}

/// Opens `path` for appending, truncates a partial last line, and returns the last seq written.
fn open(path: &Path) -> std::io::Result<(File, u64)> {
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
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
            let opened = self.open.take();
            let batch = events.to_vec();
            let result = tokio::task::spawn_blocking(move || {
                let (mut file, written) = match opened {
                    Some(o) => o,
                    None => open(&path)?,
                };
                let last = append(&mut file, written, &batch)?;
                Ok::<_, std::io::Error>((file, last))
            })
            .await
            .expect("the JSONL writer task panicked");
            match result {
                Ok(open) => {
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
}
