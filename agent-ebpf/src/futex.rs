//! Futex waits and wakes, seen from the scheduler, without syscall
//! tracepoints (they would put every syscall of every task on the kernel's
//! slower path: BENCHMARKS.md).
//!
//! A traced task that switches out voluntarily while its saved registers
//! say it is in a futex wait (`agent_common::futex::classify`) starts a
//! wait; its next switch-in ends it. The task that wakes it (sched_waking
//! runs in the waker) while itself in a futex wake is the one it waited
//! for: the lock-holder attribution runs there.
use agent_common::{
    futex::{classify, SyscallLayout, CALL_WAIT, CALL_WAKE},
    stats::counter,
};
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    account::Sink,
    lock_holder::attribute_wait,
    maps::{global_field, TaskState, FUTEX_NONE, FUTEX_WAIT, SYSCALLS},
    task::{task, KernelTask},
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
/// (a clock read) only for a futex wait.
#[inline(always)]
pub fn blocking(prev: KernelTask, ts: &mut TaskState, state: u64, now: impl FnOnce() -> u64) {
    let interruptible = state & (TASK_INTERRUPTIBLE | TASK_UNINTERRUPTIBLE) == TASK_INTERRUPTIBLE;
    if interruptible && futex_call(prev) == CALL_WAIT {
        ts.futex_kind = FUTEX_WAIT;
        ts.futex_start_ns = now();
    } else {
        ts.futex_kind = FUTEX_NONE;
    }
}

/// At a switch-in of a task in a futex wait: the wait is over.
#[inline(always)]
pub fn running_again(ts: &mut TaskState, now: u64) {
    ts.futex_kind = FUTEX_NONE;
    let d = now.saturating_sub(ts.futex_start_ns);
    Sink::of(ts).futex_wait(d);
}

/// `sched_waking(struct task_struct *p)`, in the waker's context.
#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking(ctx: BtfTracePointContext) -> u32 {
    // Cheapest first: task fields and saved registers, no map lookup, so
    // that every other wakeup ends here.
    let p = KernelTask::arg(&ctx, 0);
    if !p.comm_traced() || futex_call(p) != CALL_WAIT {
        return 0;
    }
    let waker = KernelTask::current();
    if !waker.comm_traced() || futex_call(waker) != CALL_WAKE {
        return 0;
    }
    let Some(w) = task(p.pid()) else { return 0 };
    if w.futex_kind != FUTEX_WAIT {
        return 0;
    }
    let Some(h) = task(waker.pid()) else { return 0 };
    // Futex words are only shared within a cluster (its shared memory).
    if h.cluster != w.cluster || h.tgid == 0 {
        return 0;
    }
    Sink::of(h).add(counter::FUTEX_WAKES, 1);
    attribute_wait(w, h, unsafe { bpf_ktime_get_ns() });
    0
}
