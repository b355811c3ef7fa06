//! Maps, their value types and load-time settings. Sizes marked "set by the agent" are
//! overridden with `EbpfLoader::set_max_entries`.
use agent_common::event::ProcEvent;
use agent_common::{
    config::{CommFilter, TaskLayout, TracepointLayout, MAX_GROUPS, MAX_PREEMPTORS},
    futex::SyscallLayout,
    stats::{
        diag, Counters, GroupStats, PreemptorKey, ProcInfo, Segment, SharedGroupStats, SiteName,
        SpinKey, SpinStats, TaskSeed, HOLDER_HISTORY,
    },
};
use aya_ebpf::{
    macros::map,
    maps::{
        ring_buf::RingBufEntry, Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
    },
    Global,
};

/// The task is not traced (filtered out by `--pid`).
pub const IGNORED: u32 = 1;
/// The agent has been told about this task's process.
pub const ANNOUNCED: u32 = 2;
/// Its last switch-out was voluntary: the run-queue time before its next
/// run is a wakeup latency.
pub const SLEPT: u32 = 4;
/// Its last switch-out was involuntary and it stayed runnable (R), so the
/// kernel counts its wait: the run-queue time before its next run is
/// preempted time. (Preempted while going to sleep, R+, the kernel does not
/// count the wait: it is timed with the clock.)
pub const QUEUED: u32 = 8;
/// Its current involuntary off-CPU interval began while another process of
/// its cluster was inside `s_lock`: its length is added to
/// `PREEMPTED_NS_WHILE_OTHERS_SPIN` when it ends.
pub const OTHERS_SPIN: u32 = 16;
/// The fault program is looking up the faulting address's mapping: the
/// `mmap_lock` try-lock that `bpf_find_vma` takes (which the kernel traces
/// like any acquisition) is not the task's.
pub const FINDING_VMA: u32 = 32;
/// `sched_switch` saw the task's switch-in since its last switch-out; a
/// switch-out without it is a switch-in the kernel did not run the program
/// for (`diag::SWITCH_IN_MISSED`), and the wake-up's cause is still in
/// `wake_cause`.
pub const SEEN_IN: u32 = 64;

/// `TaskState::wake_cause`: the waking ran inside a timer expiry on the
/// waker's CPU (the task's own timeout), or in a user process; 0: neither,
/// or no waking was seen.
pub const WAKE_TIMER: u8 = 1;
pub const WAKE_PROCESS: u8 = 2;
/// Neither (a kernel thread, the idle task); 0 in `wake_cause` means no
/// waking was seen.
pub const WAKE_OTHER: u8 = 3;

/// Kinds of memory stall in the low bits of `TaskState::stall_start_ns`.
pub const STALL_RECLAIM_DIRECT: u64 = 1;
pub const STALL_RECLAIM_MEMCG: u64 = 2;
pub const STALL_COMPACTION: u64 = 3;
pub const STALL_KIND_MASK: u64 = 3;

/// One task's state, keyed by tid in `TASKS`. Created at the task's first
/// traced switch-out (or its first switch-out after a reused tid, see
/// `task`), freed at its final (TASK_DEAD) switch-out.
///
/// Writers: `sched_switch` for the task (switching out or in; it runs with
/// preemption off, and one CPU at a time runs a task), `sched_waking` in the
/// task's own context while it is running (`hist_counted`), and the task's
/// own `s_lock` uprobes (`spin_start_ns`, `spin_site` only), and the memory
/// programs in the task's own context (`memory`: labels on a first event,
/// `mmap_lock_start_ns`, `stall_start_ns`; they run with preemption off and
/// cannot run inside the task's uprobes). Other tasks' programs read it
/// (`futex_start_ns`, the history).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskState {
    /// The task this entry belongs to: its `task_struct` address and start
    /// time. A tid reused by a new task (whose task_struct may even sit at
    /// the freed one's address) finds a mismatch and starts afresh.
    pub task: u64,
    pub start_time: u64,
    /// 0 until the task has been seen running (then it is known).
    pub tgid: u32,
    pub flags: u32,
    /// The process's group and cluster (from `PROC_INFO`), refreshed at each
    /// switch-out.
    pub group: u32,
    pub cluster: u32,
    /// The `GENERATION` at which `group` and `cluster` were read (or at
    /// which `PROC_INFO` had no entry for the process).
    pub generation: u64,
    /// When the task was switched out involuntarily (0: it was not).
    pub offcpu_ns: u64,
    /// The kernel's run-queue time of the task (`sched_info.run_delay`) at
    /// its last switch-out.
    pub run_delay_seen: u64,
    /// Its `sched_info.pcount` (runs after a wait on a run queue) then; 0
    /// until its first switch-out (a task has run once by then).
    pub pcount_seen: u64,
    /// Its time on a CPU (`se.sum_exec_runtime`) then.
    pub exec_seen: u64,
    /// When the task blocked in a futex wait; 0: not in one. One word, so
    /// that `sched_waking` on another CPU reads a wait and its start at once.
    pub futex_start_ns: u64,
    /// Next slot of the preemption history (a ring, see `lock_holder`).
    pub hist_next: u32,
    /// Slot + 1 of the newest interval if its end is not known yet (0: none):
    /// the task was preempted while runnable (R) and runs again; its end is
    /// its start plus the growth of `run_delay`, read when needed.
    pub hist_open: u16,
    /// Why the task was last woken (`WAKE_*`), written by `sched_waking` on
    /// the waker's CPU, possibly before the sleep's own switch-out has run
    /// here: one byte, stored alone, never read-modify-written.
    pub wake_cause: u8,
    /// The cause of the run now going on (`wake_cause` taken at the
    /// switch-in after a sleep), counted at its switch-out.
    pub run_cause: u8,
    /// Recent involuntary off-CPU intervals: [start, end] in ns (end 0: empty).
    pub hist_start: [u64; HOLDER_HISTORY],
    pub hist_end: [u64; HOLDER_HISTORY],
    /// Bit i: interval i was already counted as a lock-holder preemption.
    pub hist_counted: u32,
    /// The cluster of the spin site entered (`s_lock`), so that the return
    /// finds the same site whatever the agent relabelled meanwhile.
    pub spin_cluster: u32,
    /// End of the newest interval pushed out of the ring.
    pub evicted_end_ns: u64,
    /// When the task entered `s_lock` (0: not spinning), and the call site.
    pub spin_start_ns: u64,
    pub spin_site: u64,
    /// When the task began to wait for an `mmap_lock` (0: not waiting);
    /// bit 0 set for a write lock.
    pub mmap_lock_start_ns: u64,
    /// When its reclaim or compaction began (0: none), the kind
    /// (`STALL_*`) in the low two bits. They do not nest: reclaim and
    /// compaction run with `PF_MEMALLOC`, which stops both.
    pub stall_start_ns: u64,
}

pub const EMPTY: TaskState = TaskState {
    task: 0,
    start_time: 0,
    tgid: 0,
    flags: 0,
    group: 0,
    cluster: 0,
    generation: u64::MAX,
    offcpu_ns: 0,
    run_delay_seen: 0,
    pcount_seen: 0,
    exec_seen: 0,
    futex_start_ns: 0,
    hist_next: 0,
    hist_open: 0,
    wake_cause: 0,
    run_cause: 0,
    hist_start: [0; HOLDER_HISTORY],
    hist_end: [0; HOLDER_HISTORY],
    hist_counted: 0,
    spin_cluster: 0,
    evicted_end_ns: 0,
    spin_start_ns: 0,
    spin_site: 0,
    mmap_lock_start_ns: 0,
    stall_start_ns: 0,
};

/// Tracepoint field offsets, from tracefs.
#[unsafe(no_mangle)]
pub static LAYOUT: Global<TracepointLayout> = Global::new(TracepointLayout {
    exit_group_dead: 0,
    _pad: 0,
});

/// `struct pt_regs` offsets and this architecture's futex syscall numbers.
#[unsafe(no_mangle)]
pub static SYSCALLS: Global<SyscallLayout> = Global::new(SyscallLayout {
    nr: 0,
    op: 0,
    nr_size: 8,
    _pad: 0,
    numbers: [0; 4],
});

/// task_struct field offsets, from the kernel's BTF.
#[unsafe(no_mangle)]
pub static TASK_LAYOUT: Global<TaskLayout> = Global::new(TaskLayout {
    pid: 0,
    tgid: 0,
    comm: 0,
    run_delay: 0,
    pcount: 0,
    start_time: 0,
    vma_flags: 0,
    vma_file: 0,
    real_parent: 0,
    task_mm: 0,
    mm_lock_seq: 0,
    vma_start: 0,
    vma_end: 0,
    pagefault_disabled: 0,
    self_exec_id: 0,
    sum_exec_runtime: 0,
    group_leader: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    _pad: 0,
});

/// Which `comm`s are traced.
#[unsafe(no_mangle)]
pub static COMMS: Global<CommFilter> = Global::new(CommFilter {
    words: [[0; 2]; agent_common::config::MAX_COMMS],
    len: 0,
    _pad: 0,
});

/// Non-zero: only processes in `PIDS` are traced.
#[unsafe(no_mangle)]
pub static PID_FILTER: Global<u32> = Global::new(0);

/// Non-zero: also count per process (`PROC_STATS`), for trace sessions and
/// tests. The daemon leaves it off; the verifier then prunes that code.
#[unsafe(no_mangle)]
pub static PER_PROCESS: Global<u32> = Global::new(0);

/// Per task (thread) state, keyed by tid. LRU, so a lost exit cannot leak.
/// Size set by the agent.
#[map]
pub static TASKS: LruHashMap<u32, TaskState> = LruHashMap::with_max_entries(32768, 0);

/// The state of a task whose first traced switch-out is its last
/// (`TASK_DEAD`): counted from here, never inserted into `TASKS`.
#[map]
pub static EXIT_SCRATCH: PerCpuArray<TaskState> = PerCpuArray::with_max_entries(1, 0);

/// Threads' run-queue time when the agent started, keyed by tid: read once,
/// at a thread's first switch-out, then removed. LRU: a thread that never
/// runs again cannot fill it. Size set by the agent.
#[map]
pub static SEEDS: LruHashMap<u32, TaskSeed> = LruHashMap::with_max_entries(32768, 0);

/// Per-process counters, keyed by tgid. The agent deletes an entry after the
/// process exited and its counts were folded into the totals.
/// Size set by the agent.
#[map]
pub static PROC_STATS: PerCpuHashMap<u32, Counters> = PerCpuHashMap::with_max_entries(8192, 0);

/// The agent's classification of each process, keyed by tgid.
/// Size set by the agent.
#[map]
pub static PROC_INFO: HashMap<u32, ProcInfo> = HashMap::with_max_entries(8192, 0);

/// Counters and histograms per group (label set).
#[map]
pub static GROUP_STATS: PerCpuArray<GroupStats> = PerCpuArray::with_max_entries(MAX_GROUPS, 0);

/// The rare events of each group, one copy (not per CPU), atomic adds.
/// Size set by the agent (the groups).
#[map]
pub static SHARED_GROUP_STATS: Array<SharedGroupStats> = Array::with_max_entries(MAX_GROUPS, 0);

/// Each cluster's main shared memory segment (key: cluster id), written by
/// the agent.
#[map]
pub static SEGMENTS: Array<Segment> = Array::with_max_entries(MAX_GROUPS, 0);

/// How many processes of each cluster are inside `s_lock` now (key:
/// cluster id; atomic adds from the uprobes, and at the final switch-out of
/// a task that died inside it).
#[map]
pub static SPINNERS: Array<u64> = Array::with_max_entries(MAX_GROUPS, 0);

/// Bumped by the agent after it changes `PROC_INFO`; tasks cache their
/// group and re-read it when this moves.
#[map]
pub static GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// The `--pid` set (tgids).
#[map]
pub static PIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Contended `s_lock` calls per call site, per CPU. Size set by the agent.
#[map]
pub static SPIN_SITES: PerCpuHashMap<SpinKey, SpinStats> = PerCpuHashMap::with_max_entries(1024, 0);

/// The call sites' names, one copy each (not per CPU, so that a name costs
/// 64 bytes, not 64 per possible CPU). Size set by the agent (as
/// `SPIN_SITES`).
#[map]
pub static SPIN_SITE_NAMES: HashMap<SpinKey, SiteName> = HashMap::with_max_entries(1024, 0);

/// Who took the CPU: per cluster and command name, the involuntary
/// switch-outs of traced tasks where that name ran next (`sched_switch`,
/// atomic adds). Entries are never removed; when it is full, new names are
/// counted under `PREEMPTOR_OVERFLOW`, which the agent inserts first.
#[map]
pub static PREEMPTORS: HashMap<PreemptorKey, u64> = HashMap::with_max_entries(MAX_PREEMPTORS, 0);

/// `sched_switch`'s scratch space for a `PREEMPTORS` key.
#[map]
pub static PREEMPTOR_KEY: PerCpuArray<PreemptorKey> = PerCpuArray::with_max_entries(1, 0);

/// Process births and deaths, for the agent. Rare, so a ring buffer: at
/// 1,000 connections a second (a fork and an exit each, 160 bytes an
/// event), 256 KiB hold 0.8 s of them if the agent falls behind.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// The mapping a traced fault outside the main segment last landed in, on
/// this CPU (see `memory::region`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VmaCache {
    /// Whose: the process (`tgid`, its leader's start time, which tells it
    /// from an earlier process with the same pid, and which of its
    /// programs: the exec count), its `mm` and that mm's `mm_lock_seq` when
    /// the mapping was looked up. A process that reuses a dead one's pid
    /// can get its freed `mm` back at the same address, with the same
    /// sequence if it took the lock for writing as often.
    pub mm: u64,
    pub leader_start: u64,
    pub seq: u32,
    pub tgid: u32,
    pub exec_id: u32,
    pub _pad: u32,
    pub start: u64,
    pub end: u64,
    /// The region counter, and non-zero for a hugetlb mapping.
    pub region: u32,
    pub huge: u32,
}

/// How many mappings each CPU keeps: a backend faults in a few dozen
/// (the binary and its libraries after the fork, heap, stack), and several
/// backends share a CPU.
pub const VMA_CACHE_ENTRIES: usize = 16;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct VmaCaches {
    /// The entry the next look-up replaces (round robin).
    pub next: u32,
    pub _pad: u32,
    pub e: [VmaCache; VMA_CACHE_ENTRIES],
}

#[map]
pub static VMA_CACHE: PerCpuArray<VmaCaches> = PerCpuArray::with_max_entries(1, 0);

/// How deep this CPU is in timer expiries (`wake_cause`).
#[map]
pub static TIMER_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// The benchmark floor's counter (floor.rs).
#[map]
pub static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Health counters (see `agent_common::stats::diag`).
#[map]
pub static DIAG: PerCpuArray<u64> = PerCpuArray::with_max_entries(diag::NUM as u32, 0);

/// Reads one field of a load-time global struct without copying the whole
/// struct (a volatile load, so the compiler cannot fold the default in).
macro_rules! global_field {
    ($global:expr, $ty:ty, $field:ident) => {{
        let p = core::ptr::addr_of!($global) as *const $ty;
        #[allow(unused_unsafe)]
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!((*p).$field))
        }
    }};
}
pub(crate) use global_field;

/// An offset from [`LAYOUT`].
macro_rules! layout {
    ($field:ident) => {
        $crate::maps::global_field!(
            $crate::maps::LAYOUT,
            agent_common::config::TracepointLayout,
            $field
        )
    };
}
pub(crate) use layout;

/// An offset from [`TASK_LAYOUT`].
macro_rules! task_layout {
    ($field:ident) => {
        $crate::maps::global_field!(
            $crate::maps::TASK_LAYOUT,
            agent_common::config::TaskLayout,
            $field
        )
    };
}
pub(crate) use task_layout;

/// Reserves a process notice in `PROC_EVENTS` with its head written; the
/// caller fills the rest in place (a notice is too big for `sched_switch`'s
/// stack) and submits it. `None` (counted) when the ring is full.
#[inline(always)]
pub fn proc_event(kind: u32, tgid: u32, ppid: u32) -> Option<RingBufEntry<ProcEvent>> {
    let Some(mut e) = PROC_EVENTS.reserve::<ProcEvent>(0) else {
        bump_diag(diag::EVENTS_LOST);
        return None;
    };
    let p = e.as_mut_ptr();
    unsafe {
        (*p).kind = kind;
        (*p).tgid = tgid;
        (*p).ppid = ppid;
        (*p).title_len = 0;
        (*p).lifetime_ns = 0;
    }
    Some(e)
}

#[inline(always)]
pub fn bump_diag(idx: usize) {
    add_diag(idx, 1);
}

#[inline(always)]
pub fn add_diag(idx: usize, n: u64) {
    if let Some(c) = DIAG.get_ptr_mut(idx as u32) {
        // Atomic: the uprobes count here too, and they can be preempted.
        atomic_add(c, n);
    }
}

/// Adds `v` to `*p` in one atomic instruction (BPF's atomic add, which
/// returns nothing; `core`'s atomics are not offered for this target). A
/// program that can be preempted (a uprobe on a full or lazy kernel) adds to
/// shared per-CPU values with it: nothing on the CPU can split it.
#[inline(always)]
pub fn atomic_add(p: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack, preserves_flags),
        )
    };
}
