//! sched_wakeup and sched_wakeup_new (tp_btf): the start of a wakeup
//! latency (the task was put on a run queue).
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::task::{task_or_create, KernelTask, IGNORED};

/// `sched_wakeup(struct task_struct *p)`
#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> u32 {
    woken(&ctx, KernelTask::arg(&ctx, 0));
    0
}

/// `sched_wakeup_new(struct task_struct *p)`
#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> u32 {
    woken(&ctx, KernelTask::arg(&ctx, 0));
    0
}

#[inline(always)]
fn woken(ctx: &BtfTracePointContext, p: KernelTask) {
    if !p.comm_traced() {
        return;
    }
    let Some(ts) = task_or_create(ctx, p.pid()) else {
        return;
    };
    // A task preempted inside the kernel with a sleep state set (R+) is
    // still queued: its wait is already timed from the preemption.
    if ts.flags & IGNORED != 0 || ts.offcpu_ns != 0 {
        return;
    }
    ts.wake_ns = unsafe { bpf_ktime_get_ns() };
}
