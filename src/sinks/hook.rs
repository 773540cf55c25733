//! The hook sink: runs the configured program once per event, by argv, never through a shell.
//!
//! The payload (or the envelope line) goes to stdin, exactly, with no trailing newline, and
//! whole before the program starts: stdin is an in-memory file ([`input_file`], a memfd) read
//! from its start, so no hook ever sees a cut input, whatever happens to the daemon. The
//! event's id, type, account, provider, seq and attempt number go into `POLLHOOK_*` variables
//! of an environment cleared of everything but PATH, HOME, LANG, TZ and the sink's `env`
//! allow-list — the daemon's own secrets never reach a hook. The program runs in its own
//! process group, with the umask the daemon inherited. At its timeout, or when the daemon's
//! shutdown reaches it ([`Hook::with_stop`]), the whole group gets SIGTERM, then SIGKILL after
//! [`TERM_GRACE`]; a cancelled attempt (or a second signal to the daemon,
//! [`kill_all_groups`]) SIGKILLs it at once. Exit 0 means delivered — also after SIGTERM, if
//! the hook finished its work and exited cleanly. Its stdout and stderr go to the log,
//! truncated.
//!
//! This module must never pass anything through `sh -c`, never inherit the daemon's
//! environment, and never leave a process group running past an attempt that gave up on it.

use super::{Endpoint, Job, Outcome};
use crate::config::{HookSettings, HookStdin};
use crate::shutdown::Stop;
use crate::time::format_duration;
use futures_util::future::BoxFuture;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes of each of stdout and stderr kept for the log; the rest is read and counted.
pub const OUTPUT_KEPT: usize = 4096;
/// After the hook exits, how long its output pipes may stay open (a background child holding
/// them) before the rest is dropped.
const OUTPUT_GRACE: Duration = Duration::from_millis(250);
/// Variables a hook always gets from the daemon's environment, when set.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "LANG", "TZ"];
/// Between SIGTERM and SIGKILL: time for a hook to finish or roll back its work.
pub const TERM_GRACE: Duration = Duration::from_secs(5);

/// Process groups of hooks running now (see [`kill_all_groups`]).
static LIVE_GROUPS: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// SIGKILLs every hook process group still running: for an exit that cannot wait (a second
/// signal to the daemon), so that no hook outlives it.
pub fn kill_all_groups() {
    let groups = std::mem::take(&mut *crate::locks::lock(&LIVE_GROUPS));
    for pgid in groups {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// A hook sink.
pub struct Hook {
    name: String,
    settings: HookSettings,
    /// PATH, HOME, LANG, TZ and the allow-list, as the daemon has them (read once at start).
    env: Vec<(String, OsString)>,
    /// Set at the daemon's shutdown: running hooks are terminated, none is started.
    stop: Stop,
}

impl Hook {
    pub fn new(name: &str, settings: &HookSettings) -> Hook {
        let mut env = Vec::new();
        for var in BASE_ENV
            .iter()
            .copied()
            .chain(settings.env.iter().map(|s| s.as_str()))
        {
            match std::env::var_os(var) {
                Some(v) => env.push((var.to_string(), v)),
                None if settings.env.iter().any(|e| e == var) => {
                    tracing::warn!(sink = name, variable = var,
                        "`env` lists a variable the daemon's environment lacks; the hook will not get it");
                }
                None => {}
            }
        }
        Hook {
            name: name.to_string(),
            settings: settings.clone(),
            env,
            stop: Stop::never(),
        }
    }

    /// Terminates running hooks (SIGTERM, then SIGKILL after [`TERM_GRACE`]) and starts none
    /// once `stop` is set.
    pub fn with_stop(mut self, stop: Stop) -> Hook {
        self.stop = stop;
        self
    }

    async fn attempt(&self, job: &Job) -> Outcome {
        let s = &self.settings;
        let env = &job.envelope;
        if self.stop.is_set() {
            return Outcome::Interrupted {
                error: "not started: pollhook is shutting down".into(),
            };
        }
        let mut cmd = tokio::process::Command::new(&s.command[0]);
        cmd.args(&s.command[1..])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("POLLHOOK_EVENT_ID", &env.id)
            .env("POLLHOOK_TYPE", &env.event_type)
            .env("POLLHOOK_ACCOUNT", &env.account)
            .env("POLLHOOK_PROVIDER", &env.provider)
            .env("POLLHOOK_SEQ", job.event.seq.to_string())
            .env("POLLHOOK_ATTEMPT", job.attempt.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &s.workdir {
            cmd.current_dir(dir);
        }
        let input = match s.stdin {
            HookStdin::Payload => env.payload.get().as_bytes(),
            HookStdin::Envelope => job.event.line.as_slice(),
        };
        match input_file(input) {
            Ok(file) => cmd.stdin(file),
            Err(e) => {
                return Outcome::Failed {
                    error: format!("cannot prepare the hook's input (an in-memory file): {e}"),
                    retry_after: None,
                }
            }
        };
        if let Some(mask) = crate::files::inherited_umask() {
            // SAFETY: umask(2) is async-signal-safe; the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let error = format!(
                    "cannot start {:?}: {e}; check `command`{} of this sink (the program must exist and be executable by the pollhook user)",
                    s.command[0],
                    if s.workdir.is_some() { " and `workdir`" } else { "" }
                );
                return Outcome::Failed {
                    error,
                    retry_after: None,
                };
            }
        };
        // The group's id is the child's pid (process_group(0)); until it is reaped that pid
        // cannot be reused, so killing the group cannot hit a stranger.
        let mut group = GroupKill::new(child.id().map(|p| p as libc::pid_t));

        let out = tokio::spawn(capture(child.stdout.take().expect("stdout is piped")));
        let err = tokio::spawn(capture(child.stderr.take().expect("stderr is piped")));

        let exit = tokio::select! {
            exit = tokio::time::timeout(s.timeout, child.wait()) => Some(exit),
            _ = self.stop.wait() => None,
        };
        let result = match exit {
            Some(Ok(Ok(status))) => {
                group.disarm();
                Ok(status)
            }
            Some(Ok(Err(e))) => {
                group.kill();
                let _ = child.wait().await;
                Err(format!("waiting for the hook failed: {e}"))
            }
            Some(Err(_)) => Err(format!(
                "timed out after {}; {} (raise `timeout` if the hook legitimately needs longer)",
                format_duration(s.timeout),
                terminate(&mut child, &mut group).await.1
            )),
            None => match terminate(&mut child, &mut group).await {
                (Some(status), _) if status.success() => Ok(status),
                (_, how) => {
                    let (stdout, stderr) = (collect(out).await, collect(err).await);
                    self.log_output(job, &stdout, &stderr);
                    return Outcome::Interrupted {
                        error: format!("pollhook is shutting down: {how}"),
                    };
                }
            },
        };
        let stdout = collect(out).await;
        let stderr = collect(err).await;
        self.log_output(job, &stdout, &stderr);
        match result {
            Ok(status) if status.success() => Outcome::Delivered,
            Ok(status) => Outcome::Failed {
                error: format!("{}{}", describe(status), last_line(&stderr)),
                retry_after: None,
            },
            Err(error) => Outcome::Failed {
                error,
                retry_after: None,
            },
        }
    }

    fn log_output(&self, job: &Job, stdout: &Captured, stderr: &Captured) {
        let (sink, id, seq, attempt) = (&self.name, &job.envelope.id, job.event.seq, job.attempt);
        if !stdout.kept.is_empty() {
            tracing::info!(sink = %sink, event_id = %id, seq, attempt, stdout = %stdout.text(), "hook output");
        }
        if !stderr.kept.is_empty() {
            tracing::warn!(sink = %sink, event_id = %id, seq, attempt, stderr = %stderr.text(), "hook error output");
        }
    }
}

impl Endpoint for Hook {
    fn deliver(&self, job: Job) -> BoxFuture<'_, Outcome> {
        Box::pin(async move { self.attempt(&job).await })
    }
}

/// The hook's stdin: `input` in an anonymous in-memory file (memfd), positioned at its start.
/// It is complete before the hook starts, so a daemon killed mid-attempt (`kill -9`) cannot
/// leave the hook reading a cut payload, as it could from a pipe the daemon was still
/// writing; and no task feeds a pipe. `memfd_create` is in systemd's `@system-service` set.
fn input_file(input: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: a static NUL-terminated name and flags; a non-negative result is a new file
    // descriptor that nothing else owns, which the File takes over.
    let fd = unsafe { libc::memfd_create(c"pollhook-hook-input".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above: `fd` is open and owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(input)?;
    file.rewind()?;
    Ok(file)
}

/// SIGTERM to the hook's group, up to [`TERM_GRACE`] for it to exit, then SIGKILL to whatever
/// of the group is left. Returns the exit status when the hook exited by itself in time, and
/// what happened, for the error.
async fn terminate(
    child: &mut tokio::process::Child,
    group: &mut GroupKill,
) -> (Option<ExitStatus>, String) {
    group.signal(libc::SIGTERM);
    match tokio::time::timeout(TERM_GRACE, child.wait()).await {
        Ok(Ok(status)) => {
            // Children it left behind do not outlive the attempt.
            group.kill();
            (
                Some(status),
                "its process group got SIGTERM and the hook exited".into(),
            )
        }
        _ => {
            group.kill();
            let _ = child.wait().await;
            (
                None,
                format!(
                    "its process group got SIGTERM, then SIGKILL {} later",
                    format_duration(TERM_GRACE)
                ),
            )
        }
    }
}

/// Kills a process group on drop unless disarmed: a cancelled attempt leaves nothing behind.
/// While armed, the group is listed in [`LIVE_GROUPS`].
struct GroupKill(Option<libc::pid_t>);

impl GroupKill {
    fn new(pgid: Option<libc::pid_t>) -> GroupKill {
        if let Some(p) = pgid {
            crate::locks::lock(&LIVE_GROUPS).insert(p);
        }
        GroupKill(pgid)
    }
    fn signal(&self, sig: libc::c_int) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the group; no memory is involved.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }
    fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.disarm();
    }
    fn disarm(&mut self) {
        if let Some(p) = self.0.take() {
            crate::locks::lock(&LIVE_GROUPS).remove(&p);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The first [`OUTPUT_KEPT`] bytes of a stream and how many bytes it had.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    total: usize,
}

impl Captured {
    fn text(&self) -> String {
        let mut t = String::from_utf8_lossy(&self.kept).trim_end().to_string();
        if self.total > self.kept.len() {
            t.push_str(&format!(" … ({} more bytes)", self.total - self.kept.len()));
        }
        t
    }
}

async fn capture(mut r: impl AsyncRead + Unpin) -> Captured {
    let mut c = Captured::default();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let keep = n.min(OUTPUT_KEPT - c.kept.len());
        c.kept.extend_from_slice(&buf[..keep]);
        c.total += n;
    }
    c
}

/// Waits briefly for a reader: a background child may hold the pipe open forever.
async fn collect(task: tokio::task::JoinHandle<Captured>) -> Captured {
    let abort = task.abort_handle();
    match tokio::time::timeout(OUTPUT_GRACE, task).await {
        Ok(Ok(c)) => c,
        _ => {
            abort.abort();
            Captured::default()
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the hook exited with status {code}"),
        (None, Some(sig)) => format!("the hook was killed by signal {sig}"),
        _ => format!("the hook failed: {status}"),
    }
}

/// `; stderr: <its last line>` (at most 200 characters), or nothing.
fn last_line(c: &Captured) -> String {
    let text = String::from_utf8_lossy(&c.kept);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!(
            "; stderr: {}",
            l.trim().chars().take(200).collect::<String>()
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Delivery;
    use crate::event::{Envelope, StoredEvent};
    use std::path::Path;
    use std::sync::Arc;

    fn job(attempt: u32) -> Job {
        job_with(
            attempt,
            r#"{"type":"DOCUMENT.DELIVERED","document_id":"d1"}"#,
        )
    }

    fn job_with(attempt: u32, payload: &str) -> Job {
        let line = format!(r#"{{"id":"evt_1","seq":7,"provider":"caminvoice","account":"acme","type":"DOCUMENT.DELIVERED","occurred_at":"2026-01-01T00:00:00.000Z","detected_at":"2026-01-01T00:00:01.000Z","payload":{payload}}}"#).into_bytes();
        let event = StoredEvent { seq: 7, line };
        let envelope: Envelope = event.envelope().unwrap();
        Job {
            event: Arc::new(event),
            envelope: Arc::new(envelope),
            attempt,
        }
    }

    fn hook(dir: &Path, script: &str, timeout: Duration, stdin: HookStdin) -> Hook {
        let path = dir.join("hook.sh");
        std::fs::write(&path, script).unwrap();
        Hook::new(
            "h",
            &HookSettings {
                command: vec!["/bin/sh".into(), path.display().to_string()],
                stdin,
                env: vec!["POLLHOOK_TEST_ALLOWED".into()],
                workdir: Some(dir.to_path_buf()),
                timeout,
                delivery: Delivery::default(),
            },
        )
    }

    #[tokio::test]
    async fn the_hook_gets_the_exact_payload_and_only_the_allowed_environment() {
        // The test process is the "daemon": a secret in its environment must not reach the hook.
        std::env::set_var("POLLHOOK_TEST_SECRET", "s3cr3t-in-daemon-env");
        std::env::set_var("POLLHOOK_TEST_ALLOWED", "passed-through");
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "cat > stdin.out\nenv > env.out\npwd > pwd.out\necho done\n",
            Duration::from_secs(10),
            HookStdin::Payload,
        );
        assert_eq!(h.deliver(job(3)).await, Outcome::Delivered);
        let stdin = std::fs::read_to_string(dir.path().join("stdin.out")).unwrap();
        assert_eq!(stdin, r#"{"type":"DOCUMENT.DELIVERED","document_id":"d1"}"#);
        let env = std::fs::read_to_string(dir.path().join("env.out")).unwrap();
        assert!(
            !env.contains("s3cr3t"),
            "the daemon's secret leaked:\n{env}"
        );
        for want in [
            "POLLHOOK_EVENT_ID=evt_1",
            "POLLHOOK_TYPE=DOCUMENT.DELIVERED",
            "POLLHOOK_ACCOUNT=acme",
            "POLLHOOK_PROVIDER=caminvoice",
            "POLLHOOK_SEQ=7",
            "POLLHOOK_ATTEMPT=3",
            "POLLHOOK_TEST_ALLOWED=passed-through",
        ] {
            assert!(env.lines().any(|l| l == want), "{want} missing in:\n{env}");
        }
        let allowed = [
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "POLLHOOK_TEST_ALLOWED",
            "PWD",
            "SHLVL",
            "_",
            "OLDPWD",
        ];
        for line in env.lines() {
            let name = line.split('=').next().unwrap();
            assert!(
                allowed.contains(&name)
                    || (name.starts_with("POLLHOOK_") && name != "POLLHOOK_TEST_SECRET"),
                "unexpected variable {name} in the hook's environment"
            );
        }
        let pwd = std::fs::read_to_string(dir.path().join("pwd.out")).unwrap();
        assert_eq!(
            Path::new(pwd.trim()).canonicalize().unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }

    /// Regression: a daemon killed (`kill -9`) while it wrote a hook's stdin left that hook a
    /// cut payload. The input is now whole before the hook starts: its size, looked at before
    /// a byte is read, is the payload's — a megabyte, where a pipe holds 64 KiB.
    #[tokio::test]
    async fn the_whole_input_is_there_before_the_hook_starts() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "stat -L -c %s /dev/stdin > size.out\ncat > stdin.out\n",
            Duration::from_secs(30),
            HookStdin::Payload,
        );
        let payload = format!(
            r#"{{"type":"DOCUMENT.DELIVERED","pad":"{}"}}"#,
            "x".repeat(1 << 20)
        );
        assert_eq!(h.deliver(job_with(1, &payload)).await, Outcome::Delivered);
        let size = std::fs::read_to_string(dir.path().join("size.out")).unwrap();
        assert_eq!(size.trim(), payload.len().to_string());
        let stdin = std::fs::read_to_string(dir.path().join("stdin.out")).unwrap();
        assert!(stdin == payload, "the hook read {} bytes", stdin.len());
    }

    #[tokio::test]
    async fn envelope_mode_sends_the_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "cat > stdin.out\n",
            Duration::from_secs(10),
            HookStdin::Envelope,
        );
        assert_eq!(h.deliver(job(1)).await, Outcome::Delivered);
        let stdin = std::fs::read(dir.path().join("stdin.out")).unwrap();
        assert_eq!(stdin, job(1).event.line);
    }

    #[tokio::test]
    async fn a_failing_hook_says_its_status_and_last_stderr_line() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "echo 'ERP is down' >&2\nexit 3\n",
            Duration::from_secs(10),
            HookStdin::Payload,
        );
        match h.deliver(job(1)).await {
            Outcome::Failed {
                error,
                retry_after: None,
            } => {
                assert!(
                    error.contains("status 3") && error.contains("ERP is down"),
                    "{error}"
                )
            }
            other => panic!("{other:?}"),
        }
        let missing = Hook::new(
            "h",
            &HookSettings {
                command: vec!["/nonexistent/hook".into()],
                stdin: HookStdin::Payload,
                env: vec![],
                workdir: None,
                timeout: Duration::from_secs(1),
                delivery: Delivery::default(),
            },
        );
        match missing.deliver(job(1)).await {
            Outcome::Failed { error, .. } => assert!(
                error.contains("cannot start") && error.contains("`command`"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hung_hook_and_its_children_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The hook starts a background child, records its pid, and hangs. The timeout must
        // fire after the pid is written (else there is no child to check): on a busy machine
        // the shell may be slow to get there, so the timeout doubles until it was.
        let mut timeout = Duration::from_millis(500);
        let pid: i32 = loop {
            let h = hook(
                dir.path(),
                "sleep 1000 &\necho $! > child.pid.new && mv child.pid.new child.pid\nsleep 1000\n",
                timeout,
                HookStdin::Payload,
            );
            let _ = std::fs::remove_file(&pidfile);
            match h.deliver(job(1)).await {
                Outcome::Failed { error, .. } => assert!(error.contains("timed out"), "{error}"),
                other => panic!("{other:?}"),
            }
            if let Ok(text) = std::fs::read_to_string(&pidfile) {
                break text.trim().parse().unwrap();
            }
            assert!(
                timeout < Duration::from_secs(120),
                "the hook never wrote its pid"
            );
            timeout *= 2;
        };
        assert!(
            gone(pid).await,
            "the hook's child {pid} survived the timeout"
        );
    }

    /// Delivers with `h`, fires the stop once the hook wrote `ready`, and returns the outcome
    /// and the time from the stop to the outcome.
    async fn stopped_at_shutdown(dir: &Path, script: &str) -> (Outcome, Duration) {
        let (trigger, stop) = crate::shutdown::channel();
        let h = hook(dir, script, Duration::from_secs(600), HookStdin::Payload).with_stop(stop);
        let ready = dir.join("ready");
        let attempt = h.deliver(job(1));
        tokio::pin!(attempt);
        while std::fs::metadata(&ready)
            .map(|m| m.len() == 0)
            .unwrap_or(true)
        {
            tokio::select! {
                o = &mut attempt => panic!("the hook finished early: {o:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        let fired = std::time::Instant::now();
        trigger.fire();
        let outcome = attempt.await;
        (outcome, fired.elapsed())
    }

    #[tokio::test]
    async fn at_shutdown_a_hook_that_ignores_sigterm_is_sigkilled_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, took) = stopped_at_shutdown(
            dir.path(),
            "trap '' TERM\nsleep 1000 &\necho $! > child.pid\necho x > ready\nwait\n",
        )
        .await;
        match outcome {
            Outcome::Interrupted { error } => assert!(
                error.contains("shutting down") && error.contains("SIGTERM, then SIGKILL"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            took >= TERM_GRACE,
            "SIGKILL came before the grace: {took:?}"
        );
        let pid: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(gone(pid).await, "the hook's child {pid} survived SIGKILL");
        // Once stopped, no hook starts.
        let h = hook(
            dir.path(),
            "exit 0\n",
            Duration::from_secs(5),
            HookStdin::Payload,
        )
        .with_stop({
            let (t, s) = crate::shutdown::channel();
            t.fire();
            s
        });
        assert!(matches!(
            h.deliver(job(1)).await,
            Outcome::Interrupted { .. }
        ));
    }

    #[tokio::test]
    async fn at_shutdown_a_hook_that_finishes_on_sigterm_counts_as_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, took) = stopped_at_shutdown(
            dir.path(),
            "trap 'echo finished > done; exit 0' TERM\nsleep 1000 &\necho x > ready\nwait $!\n",
        )
        .await;
        assert_eq!(outcome, Outcome::Delivered);
        assert!(took < TERM_GRACE, "{took:?}");
        assert!(dir.path().join("done").exists());
    }

    #[tokio::test]
    async fn a_cancelled_attempt_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "sleep 1000 &\necho $! > child.pid\nsleep 1000\n",
            Duration::from_secs(600),
            HookStdin::Payload,
        );
        let pidfile = dir.path().join("child.pid");
        let attempt = h.deliver(job(1));
        let wait = async {
            while std::fs::metadata(&pidfile)
                .map(|m| m.len() == 0)
                .unwrap_or(true)
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            _ = attempt => panic!("the hook finished"),
            _ = wait => {}
        }
        // `attempt` is dropped here, as the daemon drops sink tasks that overrun shutdown.
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            gone(pid).await,
            "the hook's child {pid} survived cancellation"
        );
    }

    #[tokio::test]
    async fn a_hook_writing_100_kb_is_logged_truncated_with_the_count_of_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let h = hook(
            dir.path(),
            "head -c 100000 /dev/zero | tr '\\0' x\nhead -c 100000 /dev/zero | tr '\\0' y >&2\nexit 0\n",
            Duration::from_secs(600),
            HookStdin::Payload,
        );
        let logs = crate::logging::LogBuf::default();
        // A current-thread runtime: the hook's reader tasks run on this thread too.
        let outcome = {
            let _scope = tracing::subscriber::set_default(logs.subscriber("info"));
            h.deliver(job(1)).await
        };
        assert_eq!(outcome, Outcome::Delivered);
        let text = logs.text();
        let more = format!("… ({} more bytes)", 100_000 - OUTPUT_KEPT);
        for (message, field, byte) in [
            ("hook output", "stdout", "x"),
            ("hook error output", "stderr", "y"),
        ] {
            let line = text
                .lines()
                .find(|l| l.contains(message))
                .unwrap_or_else(|| panic!("no {field} line in:\n{text}"));
            let kept = byte.repeat(OUTPUT_KEPT);
            assert!(line.contains(&format!("{field}={kept} {more}")), "{line}");
            assert!(!line.contains(&format!("{kept}{byte}")), "more than kept");
        }
    }

    #[tokio::test]
    async fn a_silent_background_child_holding_the_output_does_not_hang_delivery() {
        let dir = tempfile::tempdir().unwrap();
        // A background child keeps stdout open after the hook exits 0.
        let h = hook(
            dir.path(),
            "echo started\nsleep 1000 &\necho $! > bg.pid\nexit 0\n",
            Duration::from_secs(600),
            HookStdin::Payload,
        );
        // Waiting for the child's end of the pipe would take 1000 s: the test would time out
        // long before; delivery returns once the hook itself has exited.
        let outcome = tokio::time::timeout(Duration::from_secs(300), h.deliver(job(1)))
            .await
            .expect("delivery waited for the background child");
        assert_eq!(outcome, Outcome::Delivered);
        let bg: i32 = std::fs::read_to_string(dir.path().join("bg.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) on the sleeper this test started.
        unsafe { libc::kill(bg, libc::SIGKILL) };
    }

    /// Whether `pid` is gone (or a zombie) within two minutes (at once, normally).
    async fn gone(pid: i32) -> bool {
        for _ in 0..2400 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 3 is the state; Z = zombie (dead, waiting for its parent to reap it).
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}
