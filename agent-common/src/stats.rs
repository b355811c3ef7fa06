//! What the kernel programs aggregate: per-process counters and per-group
//! counters plus log2 histograms.

use crate::hist::HIST_BUCKETS;

/// Indices into [`Counters::v`]. Names and meanings are in the README.
pub mod counter {
    /// Switches out with the task asleep (S, D, ...).
    pub const VOLUNTARY_SWITCHES: usize = 0;
    /// Switches out with the task still runnable (R, or R+ preempted in the kernel).
    pub const INVOLUNTARY_SWITCHES: usize = 1;
    /// Completed preemption intervals: involuntary switch-out until running again.
    pub const PREEMPTIONS: usize = 2;
    /// Sum of those intervals.
    pub const PREEMPTED_NS: usize = 3;
    /// Completed wakeup-to-running intervals.
    pub const WAKEUPS: usize = 4;
    /// Sum of those intervals.
    pub const WAKEUP_LATENCY_NS: usize = 5;
    /// Futex waits that blocked (see README).
    pub const FUTEX_WAITS: usize = 6;
    /// Time spent in those calls.
    pub const FUTEX_WAIT_NS: usize = 7;
    /// Waiters woken from a futex wait by this task inside a futex wake.
    pub const FUTEX_WAKES: usize = 8;
    /// Involuntary switch-outs of a task that overlapped the futex wait of a
    /// task it then woke (counted once per switch-out, on the holder).
    pub const HOLDER_PREEMPTIONS: usize = 9;
    /// The off-CPU time of those switch-outs (on the holder).
    pub const HOLDER_PREEMPTED_NS: usize = 10;
    /// Per wait ended by a holder: overlap of the wait with the holder's
    /// involuntary off-CPU intervals (on the waiter).
    pub const WAITER_DELAY_NS: usize = 11;
    /// Of the `WAKEUPS`, those whose waking ran inside a timer expiry
    /// (`hrtimer_expire_*`, `timer_expire_*`: a timeout of the task's own
    /// sleep) and those a user process woke (a latch set, a semaphore post,
    /// a socket or pipe write). The rest (kernel threads, the idle task, a
    /// waking unseen) is `WAKEUPS` minus both (README, "Idle wake-ups").
    /// Per CPU: they change at nearly every voluntary switch, and an atomic
    /// add on a line every CPU shares would bounce it between them.
    pub const WAKEUPS_TIMER: usize = 12;
    /// Contended spinlock acquisitions (`s_lock` calls).
    pub const SPINS: usize = 13;
    /// Time in `s_lock`.
    pub const SPIN_NS: usize = 14;
    /// Sleeps taken while spinning (`s_lock`'s return value).
    pub const SPIN_DELAYS: usize = 15;
    pub const WAKEUPS_PROCESS: usize = 16;

    // The memory side (README, "Memory stalls"). Page faults taken in user
    // mode (`exceptions/page_fault_user`), by where the address lands:
    /// The cluster's main shared memory segment (shared_buffers and the rest).
    pub const FAULTS_MAIN_SHARED: usize = 17;
    /// Other shared mappings: dynamic shared memory (`/dev/shm`), SysV.
    pub const FAULTS_OTHER_SHARED: usize = 18;
    /// Private anonymous memory (heap, stack, private mmap).
    pub const FAULTS_PRIVATE: usize = 19;
    /// Private file mappings (the binary, libraries, mapped files).
    pub const FAULTS_FILE: usize = 20;
    /// Of the faults above, those on huge-page (hugetlb) mappings.
    pub const FAULTS_HUGETLB: usize = 21;
    /// Faults taken while another process of the same cluster was inside
    /// `s_lock` (the proxy for "a spinlock holder faulted").
    pub const FAULTS_WHILE_OTHERS_SPIN: usize = 22;
    /// Faults taken by a process while itself inside `s_lock`.
    pub const FAULTS_WHILE_SPINNING: usize = 23;
    /// Involuntary switch-outs while another process of the same cluster
    /// was inside `s_lock`, and their off-CPU time.
    pub const PREEMPTIONS_WHILE_OTHERS_SPIN: usize = 24;
    pub const PREEMPTED_NS_WHILE_OTHERS_SPIN: usize = 25;
    /// `mmap_lock` waits (from `mmap_lock_start_locking` to
    /// `mmap_lock_acquire_returned`) of at most 1 µs, read and write, and the
    /// time of all waits. Longer waits are counted by
    /// `MMAP_LOCK_READ_SLOW`/`WRITE_SLOW` and in the shared histograms.
    pub const MMAP_LOCK_READ_FAST: usize = 26;
    pub const MMAP_LOCK_READ_WAIT_NS: usize = 27;
    pub const MMAP_LOCK_WRITE_FAST: usize = 28;
    pub const MMAP_LOCK_WRITE_WAIT_NS: usize = 29;
    /// Time on a CPU: the growth of the task's `se.sum_exec_runtime`
    /// (schedstat's first field) from one switch-out to the next.
    pub const ON_CPU_NS: usize = 30;

    // Rare events: per-CPU per process, but one shared copy per group
    // (`SharedGroupStats`, atomic adds), to keep the per-CPU maps small.
    /// `mmap_lock` waits longer than 1 µs.
    pub const MMAP_LOCK_READ_SLOW: usize = 31;
    pub const MMAP_LOCK_WRITE_SLOW: usize = 32;
    /// Direct reclaim (`mm_vmscan_direct_reclaim_begin/end`) in the task's
    /// own context, and its time.
    pub const RECLAIM_DIRECT: usize = 33;
    pub const RECLAIM_DIRECT_NS: usize = 34;
    /// Memory-cgroup reclaim (`mm_vmscan_memcg_reclaim_begin/end`).
    pub const RECLAIM_MEMCG: usize = 35;
    pub const RECLAIM_MEMCG_NS: usize = 36;
    /// Compaction in the task's own context (`mm_compaction_begin/end`).
    pub const COMPACTIONS: usize = 37;
    pub const COMPACTION_NS: usize = 38;
    /// NUMA balancing moved the task to another node (`sched_move_numa`,
    /// `sched_swap_numa`).
    pub const NUMA_MIGRATIONS: usize = 39;
    /// Pages migrated in the task's context (`mm_migrate_pages`, succeeded).
    pub const PAGES_MIGRATED: usize = 40;
    /// Waits that began before the holder's kept history (on the waiter).
    /// Rare: shared per group (its per-CPU slot went to the wake-ups).
    pub const HISTORY_OVERFLOWS: usize = 41;
    /// Involuntary switch-outs while inside `s_lock`. Rare next to the
    /// switches themselves: shared per group.
    pub const SPINNER_PREEMPTIONS: usize = 42;
    /// Number of counters (the rest of the array is reserved).
    pub const USED: usize = 43;
}

/// Counters below this index are kept per CPU in [`GroupStats`]; the rest
/// (rare events) in one shared copy per group ([`SharedGroupStats`]).
pub const HOT_COUNTERS: usize = 31;

/// Room for the counters that later measurements add, without a layout change.
pub const NUM_COUNTERS: usize = 44;

/// Counters, indexed by the constants in [`counter`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    pub v: [u64; NUM_COUNTERS],
}

impl Counters {
    pub const fn zeroed() -> Self {
        Self {
            v: [0; NUM_COUNTERS],
        }
    }
}

/// Which histogram in [`GroupStats::hists`].
pub mod hist_kind {
    /// From an involuntary switch-out until the task runs again.
    pub const PREEMPTED: usize = 0;
    /// From wakeup until the task runs.
    pub const WAKEUP_LATENCY: usize = 1;
    /// Time blocked in one futex wait.
    pub const FUTEX_WAIT: usize = 2;
    /// One `mmap_lock` wait, read and write (`le="1e-06"` from the per-CPU
    /// `MMAP_LOCK_*_FAST` counters, the rest shared; see `counter`).
    pub const MMAP_LOCK_READ_WAIT: usize = 3;
    pub const MMAP_LOCK_WRITE_WAIT: usize = 4;
    /// One direct reclaim, one memory-cgroup reclaim, one compaction.
    pub const RECLAIM_DIRECT: usize = 5;
    pub const RECLAIM_MEMCG: usize = 6;
    pub const COMPACTION: usize = 7;
}
/// Histograms kept per CPU in [`GroupStats`].
pub const NUM_HISTS: usize = 3;
/// All histograms, as the agent presents a group ([`GroupTotals`]): the
/// per-CPU ones, then those of [`SharedGroupStats`].
pub const ALL_HISTS: usize = 8;
/// Histograms in [`SharedGroupStats`] (kinds `NUM_HISTS..ALL_HISTS`).
pub const SHARED_HISTS: usize = ALL_HISTS - NUM_HISTS;

/// A log2 histogram (see [`crate::hist`]) with the exact sum of observations.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Hist {
    pub buckets: [u64; HIST_BUCKETS],
    pub sum_ns: u64,
}

/// What the kernel aggregates per CPU for one group (one `cluster`,
/// `backend_type` label set). Group ids are assigned by the agent; group 0
/// holds events of processes that the agent has not classified yet.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GroupStats {
    pub counters: [u64; HOT_COUNTERS],
    pub hists: [Hist; NUM_HISTS],
}

/// What the kernel aggregates for one group in a single copy (not per
/// CPU), with atomic adds: events too rare to need a copy per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SharedGroupStats {
    /// Counters `HOT_COUNTERS..NUM_COUNTERS`.
    pub counters: [u64; NUM_COUNTERS - HOT_COUNTERS],
    pub hists: [Hist; SHARED_HISTS],
}

/// One group as the agent presents it: the per-CPU part summed, plus the
/// shared part, every counter and histogram by its index.
#[derive(Clone, Copy, Debug)]
pub struct GroupTotals {
    pub counters: Counters,
    pub hists: [Hist; ALL_HISTS],
}

/// A cluster's main shared memory segment, as the agent found it in the
/// postmaster's `/proc/PID/maps` (key: cluster id).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Segment {
    /// `[start, end)` in the processes of the cluster (inherited at fork).
    pub start: u64,
    pub end: u64,
    /// Non-zero: the segment is on huge pages (hugetlb).
    pub huge: u32,
    pub _pad: u32,
}

/// Group 0: processes seen by the kernel before the agent classified them.
pub const UNASSIGNED_GROUP: u32 = 0;

/// The agent's classification of one process (key: tgid), written by the
/// agent and read by the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Index into the group statistics.
    pub group: u32,
    /// Cluster id: a holder and a waiter are matched only within one
    /// cluster (processes sharing one shared-memory segment).
    pub cluster: u32,
    /// The group a process forked by this one starts in (0: none, the
    /// child waits for the agent): for a postmaster, its cluster's client
    /// backends. The kernel gives it to the child at the fork, so that a
    /// backend that lives a few milliseconds is counted under its cluster
    /// from its first event (`sched_process_fork`).
    pub child_group: u32,
    pub _pad: u32,
}

/// A thread's run-queue time when the agent started (key: tid), from
/// `/proc/PID/task/TID/schedstat`: the kernel programs measure wakeup
/// latency as the growth of that figure, and a thread they first see after
/// start-up needs to know where it stood (see agent `task_seeds`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TaskSeed {
    /// `sched_info.run_delay`, ns.
    pub run_delay: u64,
    /// `se.sum_exec_runtime`, ns (schedstat's first field).
    pub sum_exec: u64,
    /// Non-zero: the thread was asleep, so the wait before its next run
    /// follows a wakeup.
    pub slept: u32,
    pub _pad: u32,
}

/// Who ran next when a traced task was switched out involuntarily: its
/// command name up to the first `/` (`kworker/3:1` counts as `kworker`),
/// per cluster (key of `PREEMPTORS`, value: a count).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct PreemptorKey {
    pub cluster: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// The key counted when `PREEMPTORS` is full (the agent inserts it first).
pub const PREEMPTOR_OVERFLOW: PreemptorKey = PreemptorKey {
    cluster: u32::MAX,
    _pad: 0,
    comm: [0; 16],
};

/// Agent health counters kept by the kernel programs (index into `DIAG`).
pub mod diag {
    /// A task could not be added to the task map.
    pub const TASK_MAP_FULL: usize = 0;
    /// A process could not be added to the per-process map.
    pub const PROC_MAP_FULL: usize = 1;
    /// A process event could not be written to the ring buffer.
    pub const EVENTS_LOST: usize = 2;
    /// A group id out of range (an agent bug: counted rather than trusted).
    pub const BAD_GROUP: usize = 3;
    /// A new spinlock call site could not be added (the site map is full).
    pub const SPIN_SITES_FULL: usize = 4;
    /// A traced task switched out while the programs still had it off the
    /// CPU: the kernel did not run `sched_switch` for its switch-in (rare,
    /// under load). What the switch-in ends was ended at that switch-out,
    /// one run late.
    pub const SWITCH_IN_MISSED: usize = 5;
    /// Switch-outs of traced tasks the kernel did not run `sched_switch` for,
    /// seen afterwards in the task's run count (`sched_info.pcount`): what
    /// they would have started (a futex wait, a preemption) is missing.
    pub const SWITCH_OUT_MISSED: usize = 6;
    /// A page fault whose mapping could not be looked up (the process's
    /// `mmap_lock` was taken for writing): counted in no region.
    pub const FAULT_REGION_UNKNOWN: usize = 7;
    /// A process forked by a postmaster could not be given its cluster at
    /// the fork (the process-information map is full): it is counted as
    /// unattributed until the agent classifies it.
    pub const PROC_INFO_FULL: usize = 8;
    /// A wake-up whose waking the programs did not see before its run
    /// ended (no `sched_waking` recorded a cause for it): counted as
    /// `other`. Rare (about one timer wake-up in 400 on a loaded 2-vCPU VM);
    /// no setting changes it.
    pub const WAKING_MISSED: usize = 9;
    pub const NUM: usize = 10;
}

/// How many recent involuntary off-CPU intervals each task keeps for
/// lock-holder attribution.
pub const HOLDER_HISTORY: usize = 16;

/// Longest spinlock call-site name kept (PostgreSQL passes `__func__`).
pub const SITE_NAME_LEN: usize = 64;

/// A spinlock call site: the `func` string's address in the cluster's
/// binary (processes of one postmaster share it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SpinKey {
    pub cluster: u32,
    pub _pad: u32,
    pub func: u64,
}

/// Contended acquisitions at one call site (per CPU). The site's name is
/// kept once, in a map of its own ([`SiteName`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SpinStats {
    pub delays: u64,
    pub hist: Hist,
}

/// A call site's name, NUL-terminated (one copy, not per CPU): added by the
/// first uprobe run that reads it, never empty, never changed.
pub type SiteName = [u8; SITE_NAME_LEN];
