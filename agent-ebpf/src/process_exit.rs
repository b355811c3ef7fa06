//! sched/sched_process_exit: frees the exiting task's state and, when the
//! whole process is gone, tells the agent to fold its counters away.
use agent_common::{
    event::{ProcEvent, PROC_EXIT},
    stats::diag,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::warn;

use crate::{
    maps::{bump_diag, layout, PROC_EVENTS, TASKS},
    sched_switch::{catch_up_missed_switch_in, Clock},
    task::ctx_u8,
};

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(ts) = TASKS.get_ptr_mut(tid) else {
        return 0;
    };
    let ts = unsafe { &mut *ts };
    catch_up_missed_switch_in(ts, &mut Clock(0));
    let tgid = ts.tgid;
    let _ = TASKS.remove(tid);
    let offset = layout!(exit_group_dead);
    let group_dead = if offset != 0 {
        ctx_u8(&ctx, offset) != 0
    } else {
        // Before Linux 6.16 the record has no group_dead: take the leader's
        // exit (the agent's /proc sweep catches the rare leader that exits
        // before its threads).
        tid == tgid
    };
    if group_dead && tgid != 0 {
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
    }
    0
}
