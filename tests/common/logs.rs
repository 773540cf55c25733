//! Per-test log capture: each test gets its own buffer and its own tokio runtime, and every
//! thread of that runtime (workers, blocking pool, and the thread that blocks on it) has the
//! test's subscriber as its scoped default. Tests running side by side in one binary never see
//! each other's lines, so an assertion about a log line is about this test's run.

use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tracing::dispatcher::{self, DefaultGuard, Dispatch};

thread_local! {
    /// The scoped default of a runtime thread, dropped when the thread stops.
    static GUARD: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// The logs of one test, every level of every crate.
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    dispatch: Dispatch,
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn new() -> Logs {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || Writer(Arc::clone(&sink)))
            .finish();
        Logs {
            buf,
            dispatch: Dispatch::new(subscriber),
        }
    }

    /// Runs `test` to completion on a fresh two-worker runtime whose threads all log here.
    pub fn run<F: Future>(&self, test: F) -> F::Output {
        let on_start = self.dispatch.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                let guard = dispatcher::set_default(&on_start);
                GUARD.with(|g| *g.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| GUARD.with(|g| drop(g.borrow_mut().take())))
            .build()
            .unwrap();
        let _here = dispatcher::set_default(&self.dispatch);
        rt.block_on(test)
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}
