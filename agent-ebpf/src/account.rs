//! Aggregation in the kernel: per-process counters and per-group counters
//! plus log2 histograms, all in per-CPU maps.
//!
//! The scheduler programs run with preemption off, so their per-CPU `+=`
//! cannot be interleaved on one CPU. The uprobes run preemptible on full and
//! lazy kernels (migration off, so still on one CPU): another task's program
//! can run on that CPU between their load and store. They add atomically
//! (`Sink::add_atomic`), a single instruction that nothing on the CPU can
//! split; the scheduler programs' plain adds then cannot land inside one.
//!
//! Rare events (counters from `HOT_COUNTERS` on, the memory stall
//! histograms) have one copy per group, not one per CPU
//! (`SHARED_GROUP_STATS`): always added atomically.
use agent_common::{
    config::MAX_GROUPS,
    hist::bucket_index,
    stats::{counter, diag, hist_kind, Counters, GroupStats, HOT_COUNTERS, NUM_HISTS},
};

use crate::maps::{
    atomic_add, bump_diag, TaskState, GROUP_STATS, PER_PROCESS, PROC_STATS, SHARED_GROUP_STATS,
};

/// Where one task's events are counted: its process and its group.
/// Nullable raw pointers rather than `Option`s: the `None` path of an
/// `Option<*mut T>` can leave a register undefined, which the verifier rejects.
pub struct Sink {
    proc: *mut Counters,
    group: *mut GroupStats,
    group_id: u32,
}

impl Sink {
    /// The task's process and its group as `sched_switch` last read it.
    #[inline(always)]
    pub fn of(ts: &TaskState) -> Self {
        Self::new(ts.tgid, ts.group)
    }

    #[inline(always)]
    pub fn new(tgid: u32, group: u32) -> Self {
        let mut g = core::ptr::null_mut();
        if group < MAX_GROUPS {
            if let Some(s) = GROUP_STATS.get_ptr_mut(group) {
                g = s;
            }
        } else {
            bump_diag(diag::BAD_GROUP);
        }
        let mut proc = core::ptr::null_mut();
        if PER_PROCESS.load() != 0 && tgid != 0 {
            if let Some(p) = PROC_STATS.get_ptr_mut(tgid) {
                proc = p;
            }
        }
        Self {
            proc,
            group: g,
            group_id: group,
        }
    }

    #[inline(always)]
    pub fn add(&self, idx: usize, v: u64) {
        if idx >= counter::USED {
            return;
        }
        if !self.proc.is_null() {
            unsafe { (*self.proc).v[idx] += v };
        }
        if idx >= HOT_COUNTERS {
            self.add_shared(idx, v);
        } else if !self.group.is_null() {
            unsafe { (*self.group).counters[idx] += v };
        }
    }

    /// [`Sink::add`] for programs that may be preempted (the uprobes).
    #[inline(always)]
    pub fn add_atomic(&self, idx: usize, v: u64) {
        if idx >= counter::USED {
            return;
        }
        if !self.proc.is_null() {
            atomic_add(unsafe { core::ptr::addr_of_mut!((*self.proc).v[idx]) }, v);
        }
        if idx >= HOT_COUNTERS {
            self.add_shared(idx, v);
        } else if !self.group.is_null() {
            atomic_add(
                unsafe { core::ptr::addr_of_mut!((*self.group).counters[idx]) },
                v,
            );
        }
    }

    /// A rare counter of the group: its one shared copy, atomically.
    #[inline(always)]
    fn add_shared(&self, idx: usize, v: u64) {
        if self.group.is_null() {
            return; // a bad group id, counted in `new`
        }
        if let Some(s) = SHARED_GROUP_STATS.get_ptr_mut(self.group_id) {
            if let Some(c) = unsafe { (*s).counters.get_mut(idx - HOT_COUNTERS) } {
                atomic_add(c, v);
            }
        }
    }

    /// One observation in a shared histogram (`kind` from `NUM_HISTS`):
    /// its bucket, and its sum unless `with_sum` is false.
    #[inline(always)]
    fn observe_shared(&self, kind: usize, ns: u64, with_sum: bool) {
        if self.group.is_null() {
            return;
        }
        let Some(s) = SHARED_GROUP_STATS.get_ptr_mut(self.group_id) else {
            return;
        };
        if let Some(h) = unsafe { (*s).hists.get_mut(kind.wrapping_sub(NUM_HISTS)) } {
            if let Some(b) = h.buckets.get_mut(bucket_index(ns)) {
                atomic_add(b, 1);
            }
            if with_sum {
                atomic_add(&mut h.sum_ns, ns);
            }
        }
    }

    /// One memory stall (reclaim or compaction): a count and a sum (per
    /// process and group) and an observation in the group's histogram.
    #[inline(always)]
    pub fn stall(&self, count: usize, sum: usize, kind: usize, ns: u64) {
        self.add(count, 1);
        self.add(sum, ns);
        self.observe_shared(kind, ns, true);
    }

    /// One `mmap_lock` wait. Waits of at most 1 µs, nearly all of them, are
    /// counted per CPU (the histogram's first bucket); longer ones in the
    /// shared histogram. The time of all of them is a per-CPU sum, which is
    /// the histogram's sum.
    #[inline(always)]
    pub fn mmap_lock_wait(&self, write: bool, ns: u64) {
        let (fast, slow, sum, kind) = if write {
            (
                counter::MMAP_LOCK_WRITE_FAST,
                counter::MMAP_LOCK_WRITE_SLOW,
                counter::MMAP_LOCK_WRITE_WAIT_NS,
                hist_kind::MMAP_LOCK_WRITE_WAIT,
            )
        } else {
            (
                counter::MMAP_LOCK_READ_FAST,
                counter::MMAP_LOCK_READ_SLOW,
                counter::MMAP_LOCK_READ_WAIT_NS,
                hist_kind::MMAP_LOCK_READ_WAIT,
            )
        };
        self.add(sum, ns);
        if bucket_index(ns) == 0 {
            self.add(fast, 1);
        } else {
            self.add(slow, 1);
            self.observe_shared(kind, ns, false);
        }
    }

    /// One interval: a count, a sum, and a histogram observation.
    #[inline(always)]
    fn interval(&self, count: usize, sum: usize, kind: usize, ns: u64) {
        self.add(count, 1);
        self.add(sum, ns);
        if !self.group.is_null() {
            if let Some(h) = unsafe { (*self.group).hists.get_mut(kind) } {
                if let Some(b) = h.buckets.get_mut(bucket_index(ns)) {
                    *b += 1;
                }
                h.sum_ns += ns;
            }
        }
    }

    #[inline(always)]
    pub fn preempted(&self, ns: u64) {
        self.interval(
            counter::PREEMPTIONS,
            counter::PREEMPTED_NS,
            hist_kind::PREEMPTED,
            ns,
        );
    }

    #[inline(always)]
    pub fn wakeup(&self, ns: u64) {
        self.interval(
            counter::WAKEUPS,
            counter::WAKEUP_LATENCY_NS,
            hist_kind::WAKEUP_LATENCY,
            ns,
        );
    }

    #[inline(always)]
    pub fn futex_wait(&self, ns: u64) {
        self.interval(
            counter::FUTEX_WAITS,
            counter::FUTEX_WAIT_NS,
            hist_kind::FUTEX_WAIT,
            ns,
        );
    }
}
