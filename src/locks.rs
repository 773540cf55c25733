//! The one policy for a poisoned lock: take the guard anyway.
//!
//! A `std` lock is poisoned when a thread panicked while holding it. Every critical section in
//! pollhook is a short update of plain data — counters, a token cache, the member list, the
//! secrets to mask — that is whole after each statement, so a panic elsewhere (a bug, already
//! reported through its task's `JoinError`) leaves nothing half-written behind the lock.
//! Propagating the poison (`lock().unwrap()`) would turn that one bug into a panic in every
//! later user of the lock — every later cycle, the watchdog, the log writer — and a daemon
//! must keep polling and delivering. So daemon code takes its guards through these functions;
//! tests may `unwrap()` (a poisoned lock in a test should fail it). `redact`, which sits in
//! this same lowest layer, spells the rule out (`PoisonError::into_inner`).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `m.lock()`, poisoned or not.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `l.read()`, poisoned or not.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// `l.write()`, poisoned or not.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
