//! Lock-holder preemption, from sched_switch and futex alone.
//!
//! Task H is a preempted lock holder when it is switched out involuntarily
//! while task W (same cluster) is blocked in a futex wait, and H then issues
//! the wake that ends W's wait. Only at W's wakeup do we learn who H is, so
//! every task keeps its last few involuntary off-CPU intervals, and when H
//! wakes W (sched_waking, see `futex`), W's wait is overlapped with them.
use agent_common::stats::{counter, HOLDER_HISTORY};

use crate::{account::Sink, maps::TaskState};

/// Called when `ts` runs again after an involuntary switch-out at `start`.
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
    ts.hist_next = ts.hist_next.wrapping_add(1);
}

/// Called when task `h` wakes `w` out of a futex wait at `now` (from inside
/// a futex wake): charges the overlap of the wait with `h`'s preemptions.
#[inline(always)]
pub fn attribute_wait(w: &mut TaskState, h: &mut TaskState, now: u64) {
    let wait_start = w.futex_start_ns;
    let woke_at = now;
    let mut overlap = 0u64;
    let mut newly = 0u64;
    let mut newly_ns = 0u64;
    let mut i = 0;
    while i < HOLDER_HISTORY {
        let (s, e) = (h.hist_start[i], h.hist_end[i]);
        let lo = if s > wait_start { s } else { wait_start };
        let hi = if e < woke_at { e } else { woke_at };
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
