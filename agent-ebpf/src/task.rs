//! Per-task state, the process filter, and reading tracepoint records.
use agent_common::{
    config::CommFilter,
    event::{ProcEvent, PROC_NEW},
    stats::{diag, Counters},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_task_pt_regs},
    programs::{BtfTracePointContext, TracePointContext},
    EbpfContext,
};
use aya_log_ebpf::warn;

use crate::maps::{
    bump_diag, global_field, task_layout, TaskState, ANNOUNCED, COMMS, EMPTY, GENERATION, IGNORED,
    PER_PROCESS, PIDS, PID_FILTER, PROC_EVENTS, PROC_INFO, PROC_STATS, TASKS,
};

static ZERO_COUNTERS: Counters = Counters::zeroed();

/// Direct loads from the tracepoint context at an offset read from
/// tracefs. The verifier only accepts context loads whose offset is an
/// instruction immediate, and rustc emits no CO-RE; but the offset comes from
/// the frozen .rodata map, so the verifier knows its value and explores only
/// the matching arm. Every arm is one load with an immediate offset, in asm
/// so that LLVM cannot fold the arms back into `ctx + offset`: no helper
/// call, no copy.
macro_rules! ctx_load {
    ($name:ident, $ty:ty, $width:literal, [$($off:literal),*]) => {
        #[inline(always)]
        pub fn $name(ctx: &TracePointContext, offset: u32) -> $ty {
            let p = ctx.as_ptr();
            let v: u64;
            match offset {
                $($off => unsafe {
                    core::arch::asm!(
                        concat!("{v} = *(", $width, " *)({p} + ", stringify!($off), ")"),
                        v = lateout(reg) v,
                        p = in(reg) p,
                        options(readonly, nostack, preserves_flags),
                    )
                },)*
                _ => v = 0,
            }
            v as $ty
        }
    };
}
// A load must not reach past the record (the kernel refuses the attach), so
// one-byte fields (sched_process_exit's group_dead) get a one-byte load.
ctx_load!(
    ctx_u8,
    u8,
    "u8",
    [24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]
);

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

    /// The kernel's total run-queue time of the task, in ns
    /// (`sched_info.run_delay`, schedstat's second field). At a switch-out
    /// it includes the wait before the run now ending.
    #[inline(always)]
    pub fn run_delay(self) -> u64 {
        self.load(task_layout!(run_delay))
    }

    /// How many times the task has been switched in (`sched_info.pcount`).
    #[inline(always)]
    pub fn pcount(self) -> u64 {
        self.load(task_layout!(pcount))
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

/// The state of `tid`, created if missing.
#[inline(always)]
pub fn task_or_create<C: EbpfContext>(ctx: &C, tid: u32) -> Option<&'static mut TaskState> {
    if let Some(ts) = TASKS.get_ptr_mut(tid) {
        return Some(unsafe { &mut *ts });
    }
    if TASKS.insert(tid, EMPTY, 0).is_err() {
        bump_diag(diag::TASK_MAP_FULL);
        warn!(ctx, "pgpreempt: task map full, tid {} not traced", tid);
        return None;
    }
    TASKS.get_ptr_mut(tid).map(|ts| unsafe { &mut *ts })
}

/// The state of `tid` if it is traced.
#[inline(always)]
pub fn task(tid: u32) -> Option<&'static mut TaskState> {
    let ts = unsafe { &mut *TASKS.get_ptr_mut(tid)? };
    if ts.flags & IGNORED != 0 {
        return None;
    }
    Some(ts)
}

/// Called while `ts` is the current task: learns its process (the first
/// time), applies `--pid`, and refreshes its group if the agent changed any.
/// Returns false if the task is not traced.
#[inline(always)]
pub fn resolve_current<C: EbpfContext>(ctx: &C, ts: &mut TaskState) -> bool {
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
            add_process(ctx, tgid);
        }
        refresh_group(ctx, ts);
    } else {
        refresh_group(ctx, ts);
    }
    true
}

/// Makes sure the process has a per-process entry.
#[inline(always)]
fn add_process<C: EbpfContext>(ctx: &C, tgid: u32) {
    if PROC_STATS.get_ptr_mut(tgid).is_some() {
        return;
    }
    // BPF_NOEXIST: of two threads racing here, one inserts.
    match PROC_STATS.insert(tgid, &ZERO_COUNTERS, 1) {
        Ok(()) => {}
        Err(e) if e == -17 => {} // EEXIST: another thread won
        Err(_) => {
            bump_diag(diag::PROC_MAP_FULL);
            warn!(
                ctx,
                "pgpreempt: process map full, tgid {} counted in its group only", tgid
            );
        }
    }
}

/// Re-reads the task's group when the agent changed any (one array load
/// otherwise). A process the agent does not know yet is announced once per
/// task, and counted in the unassigned group until the agent classifies it.
#[inline(always)]
fn refresh_group<C: EbpfContext>(ctx: &C, ts: &mut TaskState) {
    let generation = match GENERATION.get(0) {
        Some(g) => *g,
        None => 0,
    };
    if ts.generation == generation {
        return;
    }
    if let Some(info) = unsafe { PROC_INFO.get(ts.tgid) } {
        ts.group = info.group;
        ts.cluster = info.cluster;
        ts.generation = generation;
    } else if ts.flags & ANNOUNCED == 0 {
        ts.flags |= ANNOUNCED;
        if PROC_EVENTS
            .output(
                ProcEvent {
                    kind: PROC_NEW,
                    tgid: ts.tgid,
                },
                0,
            )
            .is_err()
        {
            bump_diag(diag::EVENTS_LOST);
            warn!(
                ctx,
                "pgpreempt: process event ring full, new process {} not sent", ts.tgid
            );
        }
    }
}
