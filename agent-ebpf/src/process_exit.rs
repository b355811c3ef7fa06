//! sched_process_exit (tp_btf): when a traced process's last thread exits,
//! tells the agent to fold its counters away (after a grace period: the
//! exiting threads' final switch-outs, which free their state, follow).
//! A tp_btf program, unlike the classic tracepoint, is not skipped while
//! another program or a map syscall holds the CPU's recursion guard.
use agent_common::{
    event::{ProcEvent, PROC_EXIT},
    stats::diag,
};
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::warn;

use crate::{
    maps::{bump_diag, layout, PIDS, PID_FILTER, PROC_EVENTS},
    task::KernelTask,
};

/// `sched_process_exit(struct task_struct *p, bool group_dead)` (Linux
/// 6.16+; before, without `group_dead`).
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    let p = KernelTask::arg(&ctx, 0);
    if !p.comm_traced() {
        return 0;
    }
    let tgid = p.tgid();
    // The agent's layout says whether this kernel passes group_dead; on a
    // kernel without it the verifier never sees the read of argument 1.
    let group_dead = if layout!(exit_group_dead) != 0 {
        ctx.arg::<u64>(1) & 0xff != 0
    } else {
        // Take the leader's exit (the agent's /proc sweep catches the rare
        // leader that exits before its threads).
        p.pid() == tgid
    };
    if !group_dead || (PID_FILTER.load() != 0 && unsafe { PIDS.get(tgid) }.is_none()) {
        return 0;
    }
    if PROC_EVENTS
        .output(
            ProcEvent {
                kind: PROC_EXIT,
                tgid,
            },
            0,
        )
        .is_err()
    {
        bump_diag(diag::EVENTS_LOST);
        warn!(
            &ctx,
            "pgpreempt: process event ring full, exit of {} not sent", tgid
        );
    }
    0
}
