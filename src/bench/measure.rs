//! Process measurements for the benchmark, from the Linux kernel: CPU time, peak resident
//! memory (resettable, so each cycle gets its own peak) and another process's CPU time.

use std::time::Duration;

/// User + system CPU time this process has used so far (all threads).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one rusage struct into the zeroed buffer we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Resets this process's peak resident set size to the current one (`/proc/self/clear_refs`,
/// Linux 4.0 and later). `false` when the kernel refused: the peak then covers the whole run.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process since start or the last [`reset_peak_rss`], bytes.
pub fn peak_rss() -> Option<u64> {
    status_kb("/proc/self/status", "VmHWM:").map(|kb| kb * 1024)
}

/// Resident set size of this process now, bytes.
pub fn rss() -> Option<u64> {
    status_kb("/proc/self/status", "VmRSS:").map(|kb| kb * 1024)
}

/// A field of `/proc/<pid>/status` in kB.
fn status_kb(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// User + system CPU time process `pid` has used so far (`/proc/<pid>/stat`).
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of the calling thread only.
    fn thread_cpu_time() -> Duration {
        // SAFETY: clock_gettime writes one timespec into the zeroed struct we own.
        let mut t: libc::timespec = unsafe { std::mem::zeroed() };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    // Other tests run on other threads of this process meanwhile and add CPU time of their
    // own: the checks bracket one reading between two others instead of assuming the process
    // is idle.
    #[test]
    fn cpu_time_grows_with_work_and_matches_proc_stat() {
        let before = cpu_time();
        // 100 ms of this thread's own CPU, however long the machine makes that take.
        let mine = thread_cpu_time();
        let mut x = 0u64;
        while thread_cpu_time() - mine < Duration::from_millis(100) {
            for _ in 0..10_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let after = cpu_time();
        assert!(
            after - before >= Duration::from_millis(100),
            "{before:?} -> {after:?} for 100 ms of work"
        );
        // /proc counts user and system time each in clock ticks (10 ms), truncated: between
        // the two rusage readings around it, within two ticks.
        let tick = Duration::from_millis(20);
        let first = cpu_time();
        let from_proc = cpu_time_of(std::process::id()).expect("/proc/self/stat readable");
        let last = cpu_time();
        assert!(
            from_proc <= last + tick && from_proc + tick >= first,
            "/proc says {from_proc:?}, rusage {first:?} .. {last:?}"
        );
    }

    /// The peak resident set is per process, and other tests allocate and free meanwhile: the
    /// peak test runs alone, in a child process that runs only it.
    #[test]
    fn peak_rss_sees_a_large_allocation_and_resets() {
        const ALONE: &str = "POLLHOOK_MEASURE_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let name = "bench::measure::tests::peak_rss_sees_a_large_allocation_and_resets";
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1", "--nocapture"])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        let base = peak_rss().expect("VmHWM readable");
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let peak = peak_rss().unwrap();
        assert!(peak >= base + (60 << 20), "{base} -> {peak}");
        drop(big);
        if reset_peak_rss() {
            assert!(peak_rss().unwrap() < peak - (32 << 20));
        }
    }
}
