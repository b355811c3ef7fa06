//! PostgreSQL's `int s_lock(volatile slock_t *lock, const char *file, int line, const char *func)`,
//! exported by the test binaries that include this file (with `#[path]`, not
//! through `common`, so that only they export it): the agent probes `s_lock`
//! in the binary of each traced process, this one too. Here `lock` points at
//! the spin duration in ns, and the return value (the number of sleeps) is
//! `line`.
use std::ffi::{c_char, c_int};

use super::common::workload::spin_for;

/// # Safety
/// `lock` must point at a readable u64.
#[unsafe(no_mangle)]
#[inline(never)]
pub unsafe extern "C" fn s_lock(
    lock: *mut u64,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
) -> c_int {
    std::hint::black_box((file, func));
    spin_for(unsafe { std::ptr::read_volatile(lock) });
    line
}
