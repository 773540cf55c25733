//! `pollhook events tail`: follows a JSONL sink's file the way `tail -F` does, printing each
//! envelope line as the sink writes it — which is right after the event is committed.
//!
//! It reads the file, never the store: sled allows one process, and a `tail` holding the
//! store would stop the daemon from starting. Rotation (the path now names another file, by
//! logrotate or `rotate_bytes`) is followed after the old file is read to its end; a truncated
//! file is read again from its start. Only complete lines are printed. This module never
//! writes to the file it follows.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// How often the file is checked for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Prints the last `history` lines of `path`, then every new line, until `stop` completes
/// (or `out` is closed: a broken pipe ends the follow without error).
pub async fn follow(
    path: &Path,
    history: usize,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(stop);
    let mut current: Option<(File, u64)> = None; // the file and its inode
    let mut pos = 0u64;
    let mut partial = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let ino = f.metadata()?.ino();
        pos = history_start(&mut f, history)?;
        current = Some((f, ino));
    }
    loop {
        if current.is_none() {
            if let Ok(f) = File::open(path) {
                let ino = f.metadata()?.ino();
                current = Some((f, ino));
                pos = 0;
                partial.clear();
            }
        }
        if let Some((f, ino)) = current.as_mut() {
            let len = f.metadata()?.len();
            if len < pos {
                pos = 0; // truncated in place
                partial.clear();
            }
            f.seek(SeekFrom::Start(pos))?;
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            pos += buf.len() as u64;
            partial.extend_from_slice(&buf);
            if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                let done: Vec<u8> = partial.drain(..=end).collect();
                match out.write_all(&done).and_then(|_| out.flush()) {
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    other => other?,
                }
            }
            // The old file is read to its end; switch when the path names another file.
            let moved = std::fs::metadata(path)
                .map(|m| m.ino() != *ino)
                .unwrap_or(true);
            if moved {
                current = None;
                continue;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

/// The offset where the last `n` complete lines start.
fn history_start(f: &mut File, n: usize) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    if n == 0 {
        return Ok(len);
    }
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(start))?;
        f.take(len - start).read_to_end(&mut buf)?;
        // Newlines ending complete lines, from the end; a partial last line is not counted.
        let ends: Vec<usize> = buf
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| i)
            .collect();
        if ends.len() > n {
            return Ok(start + ends[ends.len() - n - 1] as u64 + 1);
        }
        if start == 0 {
            return Ok(0);
        }
        window *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read while `follow` holds it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    async fn until(out: &Shared, want: &str) {
        // 50 ms at a time for two minutes at most: a busy machine is slow, not wrong.
        for _ in 0..2400 {
            if String::from_utf8_lossy(&out.0.lock().unwrap()) == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "wanted {want:?}, got {:?}",
            String::from_utf8_lossy(&out.0.lock().unwrap())
        );
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[tokio::test]
    async fn follows_new_lines_across_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        append(&path, "1\n2\n3\n");
        let out = Shared::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let (path, mut out) = (path.clone(), out.clone());
            tokio::spawn(async move {
                follow(&path, 2, &mut out, async {
                    let _ = stop_rx.await;
                })
                .await
            })
        };
        until(&out, "2\n3\n").await;
        append(&path, "4\n5"); // 5 is incomplete: not printed yet
        until(&out, "2\n3\n4\n").await;
        append(&path, "\n");
        until(&out, "2\n3\n4\n5\n").await;
        std::fs::rename(&path, dir.path().join("e.jsonl.1")).unwrap();
        append(&path, "6\nsix and a half\n");
        until(&out, "2\n3\n4\n5\n6\nsix and a half\n").await;
        // Truncation is seen by the size going down: the new content is shorter than what was
        // read, whenever the next poll comes.
        std::fs::write(&path, "").unwrap();
        append(&path, "7\n");
        until(&out, "2\n3\n4\n5\n6\nsix and a half\n7\n").await;
        stop_tx.send(()).unwrap();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn history_counts_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e");
        std::fs::write(&path, "a\nb\nc\npartial").unwrap();
        let mut f = File::open(&path).unwrap();
        assert_eq!(history_start(&mut f, 2).unwrap(), 2);
        assert_eq!(history_start(&mut f, 10).unwrap(), 0);
        assert_eq!(history_start(&mut f, 0).unwrap(), 13);
    }
}
