//! Per-task state, the process filter, and reading tracepoint records.
use agent_common::{
    config::CommFilter,
    event::{ProcNotice, PROC_NEW},
    stats::{diag, Counters},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_task_pt_regs},
    programs::BtfTracePointContext,
};

use crate::maps::{
    bump_diag, global_field, task_layout, TaskState, ANNOUNCED, COMMS, EMPTY, GENERATION, IGNORED,
    PER_PROCESS, PIDS, PID_FILTER, PROC_EVENTS, PROC_INFO, PROC_STATS, TASKS,
};

static ZERO_COUNTERS: Counters = Counters::zeroed();
static EMPTY_STATE: TaskState = EMPTY;

/// A `struct task_struct *` argument of a tp_btf program. Its fields are
/// plain loads, which the verifier checks against the kernel's BTF, at
/// offsets from `TASK_LAYOUT`: a frozen global, so the verifier knows each
/// offset's value and the pointer arithmetic stays constant.
#[derive(Clone, Copy)]
pub struct KernelTask(*const u8);

impl KernelTask {
    /// Argument `n` of the tracepoint.
    #[inline(always)]
    pub fn arg(ctx: &BtfTracePointContext, n: usize) -> Self {
        KernelTask(ctx.arg::<*const u8>(n))
    }

    #[inline(always)]
    fn load<T: Copy>(self, offset: u32) -> T {
        unsafe { core::ptr::read_volatile(self.0.add(offset as usize) as *const T) }
    }

    /// The task running this program.
    #[inline(always)]
    pub fn current() -> Self {
        KernelTask(unsafe { bpf_get_current_task_btf() } as *const u8)
    }

    /// The syscall number and one argument from the task's saved user
    /// registers (`bpf_task_pt_regs`, a BTF pointer: plain loads at offsets
    /// from BTF), given where both are in `struct pt_regs`.
    #[inline(always)]
    pub fn syscall(self, nr_offset: u32, nr_size: u32, arg_offset: u32) -> (u64, u64) {
        let regs = unsafe { bpf_task_pt_regs(self.0 as *mut _) } as *const u8;
        let nr = unsafe {
            if nr_size == 4 {
                core::ptr::read_volatile(regs.add(nr_offset as usize) as *const u32) as u64
            } else {
                core::ptr::read_volatile(regs.add(nr_offset as usize) as *const u64)
            }
        };
        let arg = unsafe { core::ptr::read_volatile(regs.add(arg_offset as usize) as *const u64) };
        (nr, arg)
    }

    /// The thread id.
    #[inline(always)]
    pub fn pid(self) -> u32 {
        self.load(task_layout!(pid))
    }

    /// The process id (the thread group's leader's tid).
    #[inline(always)]
    pub fn tgid(self) -> u32 {
        self.load(task_layout!(tgid))
    }

    /// The task's address (with its start time, who owns a `TASKS` entry).
    #[inline(always)]
    pub fn addr(self) -> u64 {
        self.0 as u64
    }

    /// When the task started (ns since boot).
    #[inline(always)]
    pub fn start_time(self) -> u64 {
        self.load(task_layout!(start_time))
    }

    /// True if `ts` is this task's state (not a previous owner's of its tid).
    #[inline(always)]
    pub fn owns(self, ts: &TaskState) -> bool {
        ts.task == self.addr() && ts.start_time == self.start_time()
    }

    /// The kernel's total run-queue time of the task, in ns
    /// (`sched_info.run_delay`, schedstat's second field). At a switch-out
    /// it includes the wait before the run now ending.
    #[inline(always)]
    pub fn run_delay(self) -> u64 {
        self.load(task_layout!(run_delay))
    }

    /// The task's time on a CPU (`se.sum_exec_runtime`), as the scheduler
    /// brought it up to date before `sched_switch` (schedstat's first field).
    #[inline(always)]
    pub fn sum_exec_runtime(self) -> u64 {
        self.load(task_layout!(sum_exec_runtime))
    }

    /// The task's command name, as two little-endian words.
    #[inline(always)]
    pub fn comm_words(self) -> (u64, u64) {
        let off = task_layout!(comm);
        (self.load(off), self.load(off + 8))
    }

    /// How many times the task has been switched in (`sched_info.pcount`).
    #[inline(always)]
    pub fn pcount(self) -> u64 {
        self.load(task_layout!(pcount))
    }

    /// The task's parent (`real_parent`, an RCU-protected BTF pointer: its
    /// fields are read with faulting-safe loads).
    #[inline(always)]
    pub fn parent(self) -> Self {
        KernelTask(self.load::<*const u8>(task_layout!(real_parent)))
    }

    /// The task's process leader (a BTF pointer, like `parent`).
    #[inline(always)]
    pub fn group_leader(self) -> Self {
        KernelTask(self.load::<*const u8>(task_layout!(group_leader)))
    }

    /// The task's `struct mm_struct *` as an address (0 for a kernel thread).
    #[inline(always)]
    pub fn mm(self) -> u64 {
        self.load(task_layout!(task_mm))
    }

    /// Where the process's argv lies (`mm->arg_start`, `arg_end`): (0, 0)
    /// without an `mm` (a kernel thread, or a task past `exit_mm`).
    #[inline(always)]
    pub fn arg_area(self) -> (u64, u64) {
        let mm = self.mm();
        if mm == 0 {
            return (0, 0);
        }
        let mm = mm as *const u8;
        let (start, end) = (task_layout!(mm_arg_start), task_layout!(mm_arg_end));
        unsafe {
            (
                core::ptr::read_volatile(mm.add(start as usize) as *const u64),
                core::ptr::read_volatile(mm.add(end as usize) as *const u64),
            )
        }
    }

    /// Non-zero while the task runs with page faults disabled.
    #[inline(always)]
    pub fn pagefault_disabled(self) -> i32 {
        self.load(task_layout!(pagefault_disabled))
    }

    /// How many times the process has called exec (low 32 bits).
    #[inline(always)]
    pub fn exec_id(self) -> u32 {
        self.load(task_layout!(self_exec_id))
    }

    /// True if the task's `comm` is one of the traced names.
    #[inline(always)]
    pub fn comm_traced(self) -> bool {
        let off = task_layout!(comm);
        comm_matches(self.load(off), self.load(off + 8))
    }
}

/// True if the comm words are one of the traced names.
#[inline(always)]
pub fn comm_matches(lo: u64, hi: u64) -> bool {
    let len = global_field!(COMMS, CommFilter, len);
    let p = core::ptr::addr_of!(COMMS) as *const CommFilter;
    CommFilter::matches_with(
        len,
        |i| unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).words[i])) },
        lo,
        hi,
    )
}

/// The state of task `t`, created if missing. An entry left by an earlier
/// task with the same tid (its final switch-out unseen) is started afresh.
#[inline(always)]
pub fn task_or_create(t: KernelTask) -> Option<&'static mut TaskState> {
    if let Some(ts) = own_state(t) {
        return Some(ts);
    }
    let tid = t.pid();
    if let Some(stale) = TASKS.get_ptr(tid) {
        // A task whose final switch-out was not seen, and which died inside
        // `s_lock`: it stops counting as a spinner.
        let stale = unsafe { &*stale };
        if stale.spin_start_ns != 0 {
            crate::memory::spinners_add(stale.spin_cluster, -1);
        }
    }
    // BPF_ANY: creates, or replaces a stale entry whole. The new value is
    // read from `.rodata`, not copied onto sched_switch's stack (392 bytes
    // of its 512).
    if TASKS.insert(tid, &EMPTY_STATE, 0).is_err() {
        // Counted, not logged: a log call is a subprogram whose stack adds
        // to sched_switch's (512 bytes in all). The agent reports the count.
        bump_diag(diag::TASK_MAP_FULL);
        return None;
    }
    let ts = unsafe { &mut *TASKS.get_ptr_mut(tid)? };
    ts.task = t.addr();
    ts.start_time = t.start_time();
    Some(ts)
}

/// Task `t`'s entry, traced or not (None if missing or an earlier owner's).
#[inline(always)]
pub fn own_state(t: KernelTask) -> Option<&'static mut TaskState> {
    let ts = unsafe { &mut *TASKS.get_ptr_mut(t.pid())? };
    if !t.owns(ts) {
        return None;
    }
    Some(ts)
}

/// The state of task `t` if it is traced.
#[inline(always)]
pub fn task(t: KernelTask) -> Option<&'static mut TaskState> {
    let ts = own_state(t)?;
    if ts.flags & IGNORED != 0 {
        return None;
    }
    Some(ts)
}

/// Called from `sched_switch` while `ts` is the task switching out: learns
/// its process (the first time), applies `--pid`, and refreshes its group
/// if the agent changed any. Returns false if the task is not traced.
#[inline(always)]
pub fn resolve_current(ts: &mut TaskState) -> bool {
    if ts.flags & IGNORED != 0 {
        return false;
    }
    if ts.tgid == 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        ts.tgid = tgid;
        if PID_FILTER.load() != 0 && unsafe { PIDS.get(tgid) }.is_none() {
            ts.flags |= IGNORED;
            return false;
        }
        if PER_PROCESS.load() != 0 {
            add_process(tgid);
        }
    }
    refresh_group(ts);
    true
}

/// The group the task's events go to now, without writing its state: for
/// the uprobes, which run preemptible on full and lazy kernels and can be
/// interrupted by the task's own switch-out (only `sched_switch` writes the
/// labels).
#[inline(always)]
pub fn current_labels(ts: &TaskState) -> (u32, u32) {
    if ts.generation != generation() {
        if let Some((group, cluster)) = labels_of(ts.tgid) {
            return (group, cluster);
        }
    }
    (ts.group, ts.cluster)
}

/// A process's group and cluster from `PROC_INFO`, two loads from the map
/// value (no copy of it on the stack).
#[inline(always)]
pub fn labels_of(tgid: u32) -> Option<(u32, u32)> {
    let info = PROC_INFO.get_ptr(tgid)?;
    unsafe {
        Some((
            core::ptr::read_volatile(core::ptr::addr_of!((*info).group)),
            core::ptr::read_volatile(core::ptr::addr_of!((*info).cluster)),
        ))
    }
}

#[inline(always)]
fn generation() -> u64 {
    match GENERATION.get(0) {
        Some(g) => unsafe { core::ptr::read_volatile(g) },
        None => 0,
    }
}

/// Makes sure the process has a per-process entry.
#[inline(always)]
fn add_process(tgid: u32) {
    if PROC_STATS.get_ptr_mut(tgid).is_some() {
        return;
    }
    // BPF_NOEXIST: of two threads racing here, one inserts.
    match PROC_STATS.insert(tgid, &ZERO_COUNTERS, 1) {
        Ok(()) => {}
        Err(e) if e == -17 => {} // EEXIST: another thread won
        // Counted (not logged, as in `task_or_create`): the process is
        // counted in its group only.
        Err(_) => bump_diag(diag::PROC_MAP_FULL),
    }
}

/// Re-reads the task's group when the agent changed any (one array load
/// otherwise). A process the agent does not know yet is announced once per
/// task, and counted in the unassigned group until the agent classifies it.
/// The generation is kept on a miss too: the lookup is not repeated at every
/// switch until the agent changes something.
#[inline(always)]
fn refresh_group(ts: &mut TaskState) {
    let generation = generation();
    if ts.generation == generation {
        return;
    }
    ts.generation = generation;
    if let Some((group, cluster)) = labels_of(ts.tgid) {
        ts.group = group;
        ts.cluster = cluster;
    } else if ts.flags & ANNOUNCED == 0 {
        ts.flags |= ANNOUNCED;
        let notice = ProcNotice {
            kind: PROC_NEW,
            tgid: ts.tgid,
        };
        if PROC_EVENTS.output(notice, 0).is_err() {
            bump_diag(diag::EVENTS_LOST);
        }
    }
}
