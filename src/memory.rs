//! The allocator's two settings that keep the daemon's memory bounded (glibc only; nothing
//! elsewhere): [`limit_arenas`], called first thing in `main`, and [`trim`].
//!
//! glibc gives every thread that allocates an arena of its own, up to 8 per core: the daemon
//! (tokio's workers and blocking pool, sled's threads) made 13–16, and memory freed in one
//! arena stays there for that arena's thread. After a burst of 100,000 changed documents half
//! of the heap was free yet resident. Two arenas hold the same work with far less kept (the
//! measurements are in BENCHMARKS.md); [`trim`] gives back what a burst freed once it is over.

/// Arenas glibc may create (set before the first thread starts).
pub const ARENAS: i32 = 2;

/// Limits glibc to [`ARENAS`] arenas. Call before any thread is started (first thing in
/// `main`); the environment's `MALLOC_ARENA_MAX`, when set, wins.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator parameter; no thread allocates yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}

/// Returns free heap pages to the operating system (after sled's recovery, after a busy
/// cycle).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
