//! Futex waits and wakes, seen from the scheduler, without syscall
//! tracepoints (they would put every syscall of every task on the kernel's
//! slower path: BENCHMARKS.md).
//!
//! A traced task that switches out voluntarily while its saved registers
//! say it is in a futex wait (`agent_common::futex::classify`) starts a
//! wait; its next switch-in ends it. The task that wakes it (sched_waking
//! runs in the waker) while itself in a futex wake is the one it waited
//! for: the lock-holder attribution runs there.
use core::sync::atomic::{compiler_fence, Ordering};

use agent_common::{
    futex::{classify, SyscallLayout, CALL_WAIT, CALL_WAKE},
    stats::counter,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    account::Sink,
    lock_holder::attribute_wait,
    maps::{global_field, TaskState, SYSCALLS},
    task::{task, KernelTask},
    wake_cause,
};

/// The futex call `t` is in (`CALL_*`), from its saved registers.
#[inline(always)]
fn futex_call(t: KernelTask) -> u32 {
    let numbers = global_field!(SYSCALLS, SyscallLayout, numbers);
    let (nr, op) = t.syscall(
        global_field!(SYSCALLS, SyscallLayout, nr),
        global_field!(SYSCALLS, SyscallLayout, nr_size),
        global_field!(SYSCALLS, SyscallLayout, op),
    );
    classify(numbers, nr, op)
}

/// `TASK_INTERRUPTIBLE` and `TASK_UNINTERRUPTIBLE` in a task's state.
const TASK_INTERRUPTIBLE: u64 = 0x1;
const TASK_UNINTERRUPTIBLE: u64 = 0x2;

/// At a voluntary switch-out of traced task `prev` (state `ts`, scheduler
/// state `state`): starts a futex wait if it is blocking in one. A futex
/// wait sleeps interruptibly; an uninterruptible sleep inside a futex call
/// is something else (a page under migration, a page lock). `now` is called
/// (a clock read) only for a futex wait. The start is one word, written
/// once: `sched_waking` on another CPU sees 0 or this wait's start, never
/// a wait with an earlier start.
#[inline(always)]
pub fn blocking(prev: KernelTask, ts: &mut TaskState, state: u64, now: impl FnOnce() -> u64) {
    let interruptible = state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE) == TASK_INTERRUPTIBLE;
    let start = if interruptible && futex_call(prev) == CALL_WAIT {
        now()
    } else {
        0
    };
    // The labels a waker reads (cluster, group) are written before.
    compiler_fence(Ordering::Release);
    unsafe { core::ptr::write_volatile(&mut ts.futex_start_ns, start) };
}

/// At a switch-in of a task in a futex wait: the wait is over.
#[inline(always)]
pub fn running_again(ts: &mut TaskState, now: u64) {
    let d = now.saturating_sub(ts.futex_start_ns);
    unsafe { core::ptr::write_volatile(&mut ts.futex_start_ns, 0) };
    Sink::of(ts).futex_wait(d);
}

/// `sched_waking(struct task_struct *p)`, in the waker's context: records
/// why a traced task wakes (`wake_cause`), and attributes a futex wait
/// that the waker ends from inside a futex wake.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> u32 {
    // Cheapest first: an untraced task ends at its comm (one load).
    let p = KernelTask::arg(&ctx, 0);
    if !p.comm_traced() {
        return 0;
    }
    let Some(w) = task(p) else { return 0 };
    let waker = KernelTask::current();
    wake_cause::woken(w, wake_cause::of_waking(waker));
    // The futex path: task fields and saved registers, no more lookups, so
    // that every other wakeup ends here.
    if futex_call(p) != CALL_WAIT || !waker.comm_traced() || futex_call(waker) != CALL_WAKE {
        return 0;
    }
    // Read once: 0 if the waiter has not blocked yet (or woke already).
    let wait_start = unsafe { core::ptr::read_volatile(&w.futex_start_ns) };
    if wait_start == 0 {
        return 0;
    }
    compiler_fence(Ordering::Acquire);
    let Some(h) = task(waker) else { return 0 };
    // Futex words are only shared within a cluster (its shared memory).
    if h.cluster != w.cluster || h.tgid == 0 {
        return 0;
    }
    Sink::of(h).add(counter::FUTEX_WAKES, 1);
    // The waker is running: its run-queue time already holds the wait
    // before this run, the length of its open interval (if it ran once
    // since its last switch-out: else the growth holds several waits).
    let h_waited = if waker.pcount().wrapping_sub(h.pcount_seen) == 1 {
        waker.run_delay().saturating_sub(h.run_delay_seen)
    } else {
        0
    };
    attribute_wait(w, wait_start, h, unsafe { bpf_ktime_get_ns() }, h_waited);
    0
}
