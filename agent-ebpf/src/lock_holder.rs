//! Lock-holder preemption, from sched_switch and futex alone.
//!
//! Task H is a preempted lock holder when it is switched out involuntarily
//! while task W (same cluster) is blocked in a futex wait, and H then issues
//! the wake that ends W's wait. Only at W's wakeup do we learn who H is, so
//! every task keeps its last few involuntary off-CPU intervals, and when H
//! wakes W (sched_waking, see `futex`), W's wait is overlapped with them.
//!
//! An interval of a task preempted while runnable (R) is left open when the
//! task runs again: its length is the growth of the task's `run_delay`,
//! which the kernel has counted by then, so no clock is read to end it. It
//! is closed at the task's next switch-out, or read from the running task.
use agent_common::stats::{counter, HOLDER_HISTORY};

use crate::{account::Sink, maps::TaskState};

/// Pushes an involuntary off-CPU interval [start, end] into the task's ring;
/// `end` 0 leaves it open (`TaskState::hist_open`).
#[inline(always)]
pub fn remember_preemption(ts: &mut TaskState, start: u64, end: u64) {
    let i = (ts.hist_next as usize) & (HOLDER_HISTORY - 1);
    if let (Some(s), Some(e)) = (ts.hist_start.get_mut(i), ts.hist_end.get_mut(i)) {
        if *e != 0 {
            ts.evicted_end_ns = *e;
        }
        *s = start;
        *e = end;
    }
    ts.hist_counted &= !(1u32 << i);
    ts.hist_open = if end == 0 { i as u16 + 1 } else { 0 };
    ts.hist_next = ts.hist_next.wrapping_add(1);
}

/// Closes the open interval, if any, while the task runs (its wait is
/// over): it lasted `waited`, the growth of the task's run-queue time since
/// the switch-out that began it.
#[inline(always)]
pub fn close_open_interval(ts: &mut TaskState, waited: u64) {
    if ts.hist_open == 0 {
        return;
    }
    let i = (ts.hist_open as usize - 1) & (HOLDER_HISTORY - 1);
    if let (Some(s), Some(e)) = (ts.hist_start.get(i), ts.hist_end.get_mut(i)) {
        *e = *s + waited.max(1);
    }
    ts.hist_open = 0;
}

/// Called when task `h` wakes `w` out of a futex wait that began at
/// `wait_start`, at `now` (from inside a futex wake): charges the overlap of
/// the wait with `h`'s preemptions. `h_waited` is the growth of `h`'s
/// run-queue time since its last switch-out: h is running, so its open
/// interval, if any, is over and that long.
#[inline(always)]
pub fn attribute_wait(w: &TaskState, wait_start: u64, h: &mut TaskState, now: u64, h_waited: u64) {
    close_open_interval(h, h_waited);
    let mut overlap = 0u64;
    let mut newly = 0u64;
    let mut newly_ns = 0u64;
    let mut i = 0;
    while i < HOLDER_HISTORY {
        let (s, e) = (h.hist_start[i], h.hist_end[i]);
        let lo = if s > wait_start { s } else { wait_start };
        let hi = if e < now { e } else { now };
        if e != 0 && hi > lo {
            overlap += hi - lo;
            if h.hist_counted & (1u32 << i) == 0 {
                h.hist_counted |= 1u32 << i;
                newly += 1;
                newly_ns += e - s;
            }
        }
        i += 1;
    }
    let waiter = Sink::of(w);
    if overlap > 0 {
        waiter.add(counter::WAITER_DELAY_NS, overlap);
    }
    if h.evicted_end_ns > wait_start {
        // Intervals during this wait were pushed out of the holder's ring:
        // what is left is a lower bound; say so rather than guess.
        waiter.add(counter::HISTORY_OVERFLOWS, 1);
    }
    if newly > 0 {
        let holder = Sink::of(h);
        holder.add(counter::HOLDER_PREEMPTIONS, newly);
        holder.add(counter::HOLDER_PREEMPTED_NS, newly_ns);
    }
}
