//! sched/sched_wakeup and sched/sched_wakeup_new: the start of a wakeup
//! latency (the task was put on a run queue).
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};

use crate::{
    maps::layout,
    task::{ctx_comm_traced, ctx_u32, task_or_create, IGNORED},
};

#[tracepoint]
pub fn sched_wakeup(ctx: TracePointContext) -> u32 {
    woken(&ctx, layout!(wakeup_comm), layout!(wakeup_pid));
    0
}

#[tracepoint]
pub fn sched_wakeup_new(ctx: TracePointContext) -> u32 {
    woken(&ctx, layout!(wakeup_new_comm), layout!(wakeup_new_pid));
    0
}

#[inline(always)]
fn woken(ctx: &TracePointContext, comm: u32, pid: u32) {
    if !ctx_comm_traced(ctx, comm) {
        return;
    }
    let pid = ctx_u32(ctx, pid);
    let Some(ts) = task_or_create(ctx, pid) else {
        return;
    };
    // A task preempted inside the kernel with a sleep state set (R+) is
    // still queued: its wait is already timed from the preemption.
    if ts.flags & IGNORED != 0 || ts.offcpu_ns != 0 {
        return;
    }
    ts.wake_ns = unsafe { bpf_ktime_get_ns() };
}
