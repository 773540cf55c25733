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

    #[test]
    fn cpu_time_grows_with_work_and_matches_proc_stat() {
        let before = cpu_time();
        let mut x = 0u64;
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = cpu_time();
        assert!(after > before, "{before:?} -> {after:?}");
        let from_proc = cpu_time_of(std::process::id()).expect("/proc/self/stat readable");
        // Clock ticks are coarse (10 ms); both count the same process.
        assert!(from_proc.as_secs_f64() <= after.as_secs_f64() + 0.05);
        assert!(from_proc.as_secs_f64() + 0.5 >= after.as_secs_f64() - before.as_secs_f64());
    }

    #[test]
    fn peak_rss_sees_a_large_allocation_and_resets() {
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
