//! Per-task state, the process filter, and reading tracepoint records.
use agent_common::{
    config::{CommFilter, MAX_COMMS},
    event::{ProcEvent, PROC_NEW},
    stats::{diag, Counters},
};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::TracePointContext, EbpfContext};
use aya_log_ebpf::warn;

use crate::{
    account::Sink,
    maps::{
        bump_diag, global_field, COMMS, PIDS, PID_FILTER, PROC_EVENTS, PROC_INFO, PROC_STATS, TASKS,
    },
};

/// The task is not traced (filtered out by `--pid`).
pub const IGNORED: u32 = 1;

/// No futex call in flight.
pub const FUTEX_NONE: u32 = 0;
/// A futex wait is in flight.
pub const FUTEX_WAIT: u32 = 1;
/// A futex wake is in flight.
pub const FUTEX_WAKE: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskState {
    /// 0 until the task has been seen running (then it is known).
    pub tgid: u32,
    pub flags: u32,
    /// The process's group and cluster (from `PROC_INFO`), refreshed at each
    /// switch-out.
    pub group: u32,
    pub cluster: u32,
    /// When the task was switched out involuntarily (0: it was not).
    pub offcpu_ns: u64,
    /// When the task was woken (0: no wakeup pending).
    pub wake_ns: u64,
    /// A wakeup latency measured before the task's process was known.
    pub pending_wakeup_ns: u64,
    /// The futex call in flight: kind, start and address.
    pub futex_start_ns: u64,
    pub futex_uaddr: u64,
    pub futex_kind: u32,
    pub _pad: u32,
}

const EMPTY: TaskState = TaskState {
    tgid: 0,
    flags: 0,
    group: 0,
    cluster: 0,
    offcpu_ns: 0,
    wake_ns: 0,
    pending_wakeup_ns: 0,
    futex_start_ns: 0,
    futex_uaddr: 0,
    futex_kind: FUTEX_NONE,
    _pad: 0,
};

static ZERO_COUNTERS: Counters = Counters::zeroed();

/// A tracepoint record copied to the stack with one helper call. Fields are
/// then read at offsets from tracefs: the verifier refuses context loads at
/// offsets that are not instruction immediates, and rustc emits no CO-RE.
#[repr(C, align(8))]
pub struct Record<const N: usize>(pub [u8; N]);

impl<const N: usize> Record<N> {
    /// Copies the record in place (a by-value return would be copied again,
    /// byte by byte). On failure the record reads as zeros.
    #[inline(always)]
    pub fn read(ctx: &TracePointContext) -> Self {
        let mut r = Record([0u8; N]);
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(
                r.0.as_mut_ptr() as *mut core::ffi::c_void,
                N as u32,
                ctx.as_ptr(),
            )
        };
        r
    }

    /// The field at `offset` (the agent checked that every field fits).
    #[inline(always)]
    pub fn get<T: Copy + Default>(&self, offset: u32) -> T {
        let off = offset as usize;
        if off + core::mem::size_of::<T>() > N {
            return T::default();
        }
        unsafe { core::ptr::read(self.0.as_ptr().add(off) as *const T) }
    }

    /// True if the 16-byte `comm` at `offset` is one of the traced names.
    #[inline(always)]
    pub fn comm_traced(&self, offset: u32) -> bool {
        comm_matches(self.get(offset), self.get(offset + 8))
    }
}

/// Record sizes the programs copy (the agent checks the layout fits).
pub const SWITCH_RECORD: usize = agent_common::config::SWITCH_RECORD;
pub const WAKEUP_RECORD: usize = agent_common::config::WAKEUP_RECORD;
pub const SYSCALL_RECORD: usize = agent_common::config::SYSCALL_RECORD;

/// True if the comm words are one of the traced names.
#[inline(always)]
pub fn comm_matches(lo: u64, hi: u64) -> bool {
    let len = global_field!(COMMS, CommFilter, len);
    let p = core::ptr::addr_of!(COMMS) as *const CommFilter;
    let mut i = 0;
    while i < MAX_COMMS {
        if i as u32 >= len {
            return false;
        }
        let w = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*p).words[i])) };
        if w[0] == lo && w[1] == hi {
            return true;
        }
        i += 1;
    }
    false
}

/// The state of `tid`, created if missing.
#[inline(always)]
pub fn task_or_create(ctx: &TracePointContext, tid: u32) -> Option<&'static mut TaskState> {
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
/// time), applies `--pid`, registers the process, and refreshes its group.
/// Returns false if the task is not traced.
#[inline(always)]
pub fn resolve_current(ctx: &TracePointContext, ts: &mut TaskState) -> bool {
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
        register_process(ctx, tgid);
        refresh_group(ts);
        if ts.pending_wakeup_ns != 0 {
            let d = ts.pending_wakeup_ns;
            ts.pending_wakeup_ns = 0;
            Sink::of(ts).wakeup(d);
        }
    } else {
        refresh_group(ts);
    }
    true
}

/// Makes sure the process has a per-process entry; the first time, tells
/// the agent so that it classifies the process.
#[inline(always)]
fn register_process(ctx: &TracePointContext, tgid: u32) {
    if PROC_STATS.get_ptr_mut(tgid).is_some() {
        return;
    }
    // BPF_NOEXIST: two threads racing here both succeed at most once.
    match PROC_STATS.insert(tgid, &ZERO_COUNTERS, 1) {
        Ok(()) => {
            if PROC_EVENTS
                .output(
                    ProcEvent {
                        kind: PROC_NEW,
                        tgid,
                    },
                    0,
                )
                .is_err()
            {
                bump_diag(diag::EVENTS_LOST);
            }
        }
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

#[inline(always)]
fn refresh_group(ts: &mut TaskState) {
    if let Some(info) = unsafe { PROC_INFO.get(ts.tgid) } {
        ts.group = info.group;
        ts.cluster = info.cluster;
    }
}
