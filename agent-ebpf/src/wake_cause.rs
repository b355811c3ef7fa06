//! Why a traced task woke (README, "Idle wake-ups"): decided in
//! `sched_waking`, which runs in the waker's context, and counted with the
//! wake-up itself at the end of the run it starts (`sched_switch`).
//!
//! - timer: the waking runs inside a timer expiry on this CPU. The
//!   programs below keep a per-CPU depth of `hrtimer_expire_entry`/`_exit`
//!   (`hrtimer_wakeup`: the timeouts of nanosleep, poll, select and
//!   epoll_wait, which PostgreSQL's latch waits and `pg_usleep` use) and
//!   `timer_expire_entry`/`_exit` (`schedule_timeout`). Expiries nest at
//!   most two deep (a hard interrupt's hrtimer inside the timer softirq).
//! - process: the waker is a user task (it has an mm): a latch set (a
//!   signal), a semaphore post (a futex wake), a socket or pipe write. An
//!   interrupt that arrives while a process runs wakes in that process's
//!   context, and counts here too: without kallsyms (lockdown) the programs
//!   cannot tell interrupt context from the task.
//! - other: the rest (kernel threads, the idle task's interrupts, a process
//!   past releasing its memory at exit).
//!
//! The cause is written into the woken task's state (`wake_cause`, one
//! byte) when it is woken, and taken into `run_cause` at its switch-in
//! after the sleep, not at the sleep's switch-out: `try_to_wake_up` fires
//! `sched_waking` before it waits for the task to be off its CPU, so the
//! waking can come before the `sched_switch` of the same sleep. Between
//! the waking and the switch-in the task is not running and takes no new
//! sleep, so no later waking overwrites the cause.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    maps::{TaskState, TIMER_DEPTH, WAKE_OTHER, WAKE_PROCESS, WAKE_TIMER},
    task::KernelTask,
};

#[inline(always)]
fn enter() {
    if let Some(d) = TIMER_DEPTH.get_ptr_mut(0) {
        unsafe { *d += 1 };
    }
}

/// Saturating: an expiry that began before the program was attached ends
/// without an entry (the exits are attached first).
#[inline(always)]
fn leave() {
    if let Some(d) = TIMER_DEPTH.get_ptr_mut(0) {
        unsafe {
            if *d > 0 {
                *d -= 1;
            }
        }
    }
}

#[btf_tracepoint(function = "hrtimer_expire_entry")]
pub fn hrtimer_expire_entry(_ctx: BtfTracePointContext) -> u32 {
    enter();
    0
}

#[btf_tracepoint(function = "hrtimer_expire_exit")]
pub fn hrtimer_expire_exit(_ctx: BtfTracePointContext) -> u32 {
    leave();
    0
}

#[btf_tracepoint(function = "timer_expire_entry")]
pub fn timer_expire_entry(_ctx: BtfTracePointContext) -> u32 {
    enter();
    0
}

#[btf_tracepoint(function = "timer_expire_exit")]
pub fn timer_expire_exit(_ctx: BtfTracePointContext) -> u32 {
    leave();
    0
}

/// The cause of a waking by `waker` (the current task), on this CPU now.
#[inline(always)]
pub fn of_waking(waker: KernelTask) -> u8 {
    if let Some(d) = TIMER_DEPTH.get_ptr(0) {
        if unsafe { *d } != 0 {
            return WAKE_TIMER;
        }
    }
    if waker.mm() != 0 && waker.pid() != 0 {
        WAKE_PROCESS
    } else {
        WAKE_OTHER
    }
}

/// In `sched_waking` (another CPU may be switching the task out): one
/// byte store.
#[inline(always)]
pub fn woken(ts: &mut TaskState, cause: u8) {
    unsafe { core::ptr::write_volatile(&mut ts.wake_cause, cause) };
}

/// At the switch-in after a sleep: the waking's cause becomes the run's.
#[inline(always)]
pub fn running(ts: &mut TaskState) {
    ts.run_cause = unsafe { core::ptr::read_volatile(&ts.wake_cause) };
    unsafe { core::ptr::write_volatile(&mut ts.wake_cause, 0) };
}

/// At a switch-in after a preemption: no waking is pending.
#[inline(always)]
pub fn forget(ts: &mut TaskState) {
    unsafe { core::ptr::write_volatile(&mut ts.wake_cause, 0) };
}
