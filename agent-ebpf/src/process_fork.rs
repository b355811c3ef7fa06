//! sched_process_fork (tp_btf): a process that a known PostgreSQL process
//! forks (a backend, an auxiliary process, a parallel worker) is given its
//! parent's cluster, and the group the agent chose for the parent's
//! children, before it first runs: every event of a backend that lives a
//! few milliseconds is counted under its cluster, whether or not the agent
//! reads its title before it exits. The agent is told, to classify it and
//! to count the start.
use agent_common::{
    event::PROC_FORK,
    stats::{diag, ProcInfo},
};
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use aya_log_ebpf::warn;

use crate::{
    maps::{bump_diag, proc_event, PID_FILTER, PROC_INFO},
    task::KernelTask,
};

/// `sched_process_fork(struct task_struct *parent, struct task_struct
/// *child)`, in the parent's context, before the child first runs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    let child = KernelTask::arg(&ctx, 1);
    // A new thread shares its process's entry; `--pid` traces only the
    // processes named.
    let tgid = child.pid();
    if !child.comm_traced() || child.tgid() != tgid || PID_FILTER.load() != 0 {
        return 0;
    }
    let ppid = KernelTask::arg(&ctx, 0).tgid();
    let Some(parent) = (unsafe { PROC_INFO.get(ppid) }) else {
        return 0;
    };
    if parent.child_group == 0 {
        return 0;
    }
    let info = ProcInfo {
        group: parent.child_group,
        cluster: parent.cluster,
        child_group: 0,
        _pad: 0,
    };
    // BPF_ANY: an entry under this pid is an earlier process's, whose exit
    // the agent has not folded away yet (it tells them apart by the order
    // of the notices). A full map leaves the child unattributed until the
    // agent classifies it; the agent is told all the same, so that its
    // start is counted.
    if PROC_INFO.insert(&tgid, &info, 0).is_err() {
        bump_diag(diag::PROC_INFO_FULL);
    }
    match proc_event(PROC_FORK, tgid, ppid) {
        Some(e) => e.submit(0),
        None => warn!(
            &ctx,
            "pgpreempt: process event ring full, start of {} not sent", tgid
        ),
    }
    0
}
