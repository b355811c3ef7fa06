//! sched_process_exit (tp_btf): when a traced process's last thread exits,
//! tells the agent to fold its counters away (after a grace period: the
//! exiting threads' final switch-outs, which free their state, follow),
//! with its title and how long it lived. A backend that lives a few
//! milliseconds is often gone before the agent reads its title from /proc;
//! here (Linux 6.18) the exiting task still has its memory, and PostgreSQL
//! keeps its title in the argv area. A tp_btf program, unlike the classic
//! tracepoint, is not skipped while another program or a map syscall holds
//! the CPU's recursion guard.
use agent_common::event::{PROC_EXIT, TITLE_LEN};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use aya_log_ebpf::warn;

use crate::{
    maps::{layout, proc_event, PIDS, PID_FILTER},
    task::KernelTask,
};

/// `sched_process_exit(struct task_struct *p, bool group_dead)` (Linux
/// 6.16+; before, without `group_dead`). It runs in `p`'s own context.
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
    let Some(mut e) = proc_event(PROC_EXIT, tgid, 0) else {
        warn!(
            &ctx,
            "pgpreempt: process event ring full, exit of {} not sent", tgid
        );
        return 0;
    };
    let ev = e.as_mut_ptr();
    let lifetime = unsafe { bpf_ktime_get_ns() }.saturating_sub(p.group_leader().start_time());
    unsafe { (*ev).lifetime_ns = lifetime };
    // The title, read in place into the notice. A kernel that released the
    // memory before this tracepoint (no `mm`), or a page that is not
    // present, leaves it empty: the agent then labels the process from
    // what it knows (README, "Short-lived processes").
    let (start, end) = p.arg_area();
    if start != 0 && end > start {
        let title = unsafe { &mut (*ev).title };
        if let Ok(t) = unsafe { bpf_probe_read_user_str_bytes(start as *const u8, title) } {
            unsafe { (*ev).title_len = t.len().min(TITLE_LEN) as u32 };
        }
    }
    e.submit(0);
    0
}
