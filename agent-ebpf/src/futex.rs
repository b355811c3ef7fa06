//! syscalls/sys_{enter,exit}_futex and the futex2 calls (futex_wait,
//! futex_wake, futex_waitv): time blocked in waits, wakes that woke someone,
//! and who woke which address (for lock-holder attribution).
use agent_common::stats::{counter, WakeKey, WakeRecord};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    account::Sink,
    lock_holder::attribute_wait,
    maps::{layout, WAKERS},
    task::{
        ctx_u32, ctx_u64, resolve_current, task, TaskState, FUTEX_NONE, FUTEX_WAIT, FUTEX_WAKE,
    },
};

/// `op & FUTEX_CMD_MASK` strips FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
const FUTEX_CMD_MASK: u32 = 127;
const EAGAIN: i64 = -11;

#[tracepoint]
pub fn sys_enter_futex(ctx: TracePointContext) -> u32 {
    enter(&ctx, None, layout!(futex_uaddr));
    0
}

#[tracepoint]
pub fn sys_enter_futex_wait(ctx: TracePointContext) -> u32 {
    enter(&ctx, Some(FUTEX_WAIT), layout!(futex_wait_uaddr));
    0
}

#[tracepoint]
pub fn sys_enter_futex_wake(ctx: TracePointContext) -> u32 {
    enter(&ctx, Some(FUTEX_WAKE), layout!(futex_wake_uaddr));
    0
}

#[tracepoint]
pub fn sys_enter_futex_waitv(ctx: TracePointContext) -> u32 {
    // A vector of futexes: timed as one wait, with the vector's address.
    enter(&ctx, Some(FUTEX_WAIT), layout!(futex_waitv_uaddr));
    0
}

#[tracepoint]
pub fn sys_exit_futex(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_futex_wait(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_futex_wake(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_futex_waitv(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[inline(always)]
/// `kind` is `None` for the multiplexed futex(2), whose `op` decides.
fn enter(ctx: &TracePointContext, kind: Option<u32>, uaddr_offset: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // Only tasks already seen by the scheduler programs (comm filter) have
    // state; every other task's futex call ends at this lookup.
    let Some(ts) = task(pid_tgid as u32) else {
        return;
    };
    let kind = match kind {
        Some(k) => k,
        None => match ctx_u32(ctx, layout!(futex_op)) & FUTEX_CMD_MASK {
            0 | 9 => FUTEX_WAIT,              // WAIT, WAIT_BITSET (PostgreSQL's sem_wait)
            1 | 3 | 4 | 5 | 10 => FUTEX_WAKE, // WAKE, REQUEUE, CMP_REQUEUE, WAKE_OP, WAKE_BITSET
            _ => return,
        },
    };
    if !resolve_current(ctx, ts) {
        return;
    }
    let uaddr = ctx_u64(ctx, uaddr_offset);
    let now = unsafe { bpf_ktime_get_ns() };
    ts.futex_kind = kind;
    ts.futex_start_ns = now;
    ts.futex_uaddr = uaddr;
    if kind == FUTEX_WAKE {
        record_waker(ts, pid_tgid as u32, uaddr, now);
    }
}

/// Remembers that this task is waking `uaddr`. Recorded at entry: the
/// woken task can return from its wait before the waker's call returns.
#[inline(always)]
fn record_waker(ts: &TaskState, tid: u32, uaddr: u64, now: u64) {
    let key = WakeKey {
        cluster: ts.cluster,
        _pad: 0,
        uaddr,
    };
    // PostgreSQL wakes a bounded set of addresses (one semaphore per
    // backend): overwrite in place; an LRU insert (a new node under the LRU
    // lock) only the first time an address is woken.
    if let Some(r) = WAKERS.get_ptr_mut(&key) {
        unsafe {
            (*r).waker_tid = tid;
            (*r).waker_tgid = ts.tgid;
            (*r).ns = now;
        }
        return;
    }
    let rec = WakeRecord {
        waker_tid: tid,
        waker_tgid: ts.tgid,
        ns: now,
    };
    let _ = WAKERS.insert(key, rec, 0);
}

#[inline(always)]
fn exit(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(ts) = task(pid_tgid as u32) else {
        return;
    };
    let kind = ts.futex_kind;
    if kind == FUTEX_NONE {
        return;
    }
    ts.futex_kind = FUTEX_NONE;
    let ret = ctx_u64(ctx, layout!(sys_exit_ret)) as i64;
    if kind == FUTEX_WAIT {
        // EAGAIN: the futex word had already changed, so the call never slept.
        if ret != EAGAIN {
            let now = unsafe { bpf_ktime_get_ns() };
            let d = now.saturating_sub(ts.futex_start_ns);
            Sink::of(ts).futex_wait(d);
            if ret == 0 {
                // Woken: by whom, and was that task preempted meanwhile?
                attribute_wait(ts, pid_tgid as u32, now);
            }
        }
    } else if ret > 0 {
        Sink::of(ts).add(counter::FUTEX_WAKES, 1);
    }
}
