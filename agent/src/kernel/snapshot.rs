//! Reading the kernel's aggregates: per-CPU values summed, per group and
//! per process, and the names of the kernel's health counters. Plain data,
//! so the outputs can be tested without BPF.
use agent_common::stats::{
    counter, diag, hist_kind, Counters, GroupStats, GroupTotals, Hist, SharedGroupStats, ALL_HISTS,
    HOT_COUNTERS, NUM_COUNTERS, NUM_HISTS,
};

/// Adds `b` into `a`, element by element.
pub fn add_counters(a: &mut Counters, b: &Counters) {
    for (x, y) in a.v.iter_mut().zip(b.v.iter()) {
        *x = x.wrapping_add(*y);
    }
}

pub fn add_hist(a: &mut Hist, b: &Hist) {
    for (x, y) in a.buckets.iter_mut().zip(b.buckets.iter()) {
        *x = x.wrapping_add(*y);
    }
    a.sum_ns = a.sum_ns.wrapping_add(b.sum_ns);
}

const ZERO_HIST: Hist = Hist {
    buckets: [0; agent_common::hist::HIST_BUCKETS],
    sum_ns: 0,
};

pub fn zero_group() -> GroupTotals {
    GroupTotals {
        counters: Counters::zeroed(),
        hists: [ZERO_HIST; ALL_HISTS],
    }
}

/// Adds two groups' totals.
pub fn add_group(a: &mut GroupTotals, b: &GroupTotals) {
    add_counters(&mut a.counters, &b.counters);
    for (x, y) in a.hists.iter_mut().zip(b.hists.iter()) {
        add_hist(x, y);
    }
}

/// A group's totals: its per-CPU copies summed, plus its shared copy.
///
/// The `mmap_lock` wait histograms are assembled here: waits of at most
/// 1 µs are per-CPU counters (the first bucket), longer ones are in the
/// shared histograms, and the time of all of them is a per-CPU sum.
pub fn sum_groups<'a>(
    per_cpu: impl IntoIterator<Item = &'a GroupStats>,
    shared: Option<&SharedGroupStats>,
) -> GroupTotals {
    let mut total = zero_group();
    for g in per_cpu {
        for (x, y) in total.counters.v.iter_mut().zip(g.counters.iter()) {
            *x = x.wrapping_add(*y);
        }
        for (a, b) in total.hists.iter_mut().zip(g.hists.iter()) {
            add_hist(a, b);
        }
    }
    if let Some(s) = shared {
        for (x, y) in total.counters.v[HOT_COUNTERS..]
            .iter_mut()
            .zip(s.counters.iter())
        {
            *x = x.wrapping_add(*y);
        }
        for (a, b) in total.hists[NUM_HISTS..].iter_mut().zip(s.hists.iter()) {
            add_hist(a, b);
        }
    }
    for (kind, fast, sum) in [
        (
            hist_kind::MMAP_LOCK_READ_WAIT,
            counter::MMAP_LOCK_READ_FAST,
            counter::MMAP_LOCK_READ_WAIT_NS,
        ),
        (
            hist_kind::MMAP_LOCK_WRITE_WAIT,
            counter::MMAP_LOCK_WRITE_FAST,
            counter::MMAP_LOCK_WRITE_WAIT_NS,
        ),
    ] {
        let h = &mut total.hists[kind];
        h.buckets[0] = h.buckets[0].wrapping_add(total.counters.v[fast]);
        h.sum_ns = total.counters.v[sum];
    }
    total
}

/// `mmap_lock` waits, read and write, in a set of counters (per process or
/// per group): the fast ones plus the slow ones.
pub fn mmap_lock_waits(c: &Counters) -> (u64, u64) {
    (
        c.v[counter::MMAP_LOCK_READ_FAST] + c.v[counter::MMAP_LOCK_READ_SLOW],
        c.v[counter::MMAP_LOCK_WRITE_FAST] + c.v[counter::MMAP_LOCK_WRITE_SLOW],
    )
}

/// Page faults in every region.
pub fn page_faults(c: &Counters) -> u64 {
    c.v[counter::FAULTS_MAIN_SHARED]
        + c.v[counter::FAULTS_OTHER_SHARED]
        + c.v[counter::FAULTS_PRIVATE]
        + c.v[counter::FAULTS_FILE]
}

/// Sums per-CPU copies of a process's counters.
pub fn sum_counters<'a>(per_cpu: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut total = Counters::zeroed();
    for c in per_cpu {
        add_counters(&mut total, c);
    }
    total
}

pub fn is_zero(g: &GroupTotals) -> bool {
    g.counters.v.iter().all(|&v| v == 0)
        && g.hists.iter().all(|h| h.buckets.iter().all(|&b| b == 0))
}

/// The `reason` of each kernel-side health counter, as the metrics and
/// trace reports name it.
pub const DIAG_REASONS: [(&str, usize); diag::NUM] = [
    ("task_map_full", diag::TASK_MAP_FULL),
    ("process_map_full", diag::PROC_MAP_FULL),
    ("process_events_lost", diag::EVENTS_LOST),
    ("bad_group", diag::BAD_GROUP),
    ("spin_sites_full", diag::SPIN_SITES_FULL),
    ("switch_in_missed", diag::SWITCH_IN_MISSED),
    ("switch_out_missed", diag::SWITCH_OUT_MISSED),
    ("fault_region_unknown", diag::FAULT_REGION_UNKNOWN),
];

/// The reasons above that are scheduler events the kernel did not run the
/// programs for: no setting changes them, and a missed switch-in is made
/// good. Reports and the alert rule tell them apart from drops by the
/// agent (the bench keeps its own copy: xtask does not link the agent).
pub const KERNEL_SKIPPED: [&str; 2] = ["switch_in_missed", "switch_out_missed"];

/// One program's cost, from the kernel's BPF statistics.
#[derive(Debug, Clone)]
pub struct ProgramStats {
    pub name: String,
    pub runs: u64,
    pub run_ns: u64,
}

const _: () = assert!(NUM_COUNTERS >= agent_common::stats::counter::USED);

#[cfg(test)]
mod tests {
    use super::*;

    fn sum_groups_of(g: [&GroupTotals; 2]) -> GroupTotals {
        let mut s = zero_group();
        add_group(&mut s, g[0]);
        add_group(&mut s, g[1]);
        s
    }

    #[test]
    fn shared_and_per_cpu_parts_make_one_group() {
        let zero = GroupStats {
            counters: [0; HOT_COUNTERS],
            hists: [ZERO_HIST; NUM_HISTS],
        };
        let mut a = zero;
        a.counters[counter::FAULTS_PRIVATE] = 3;
        a.counters[counter::MMAP_LOCK_READ_FAST] = 10;
        a.counters[counter::MMAP_LOCK_READ_WAIT_NS] = 9_000;
        let mut b = zero;
        b.counters[counter::MMAP_LOCK_READ_FAST] = 5;
        b.counters[counter::MMAP_LOCK_READ_WAIT_NS] = 1_000;
        let mut shared = SharedGroupStats {
            counters: [0; NUM_COUNTERS - HOT_COUNTERS],
            hists: [ZERO_HIST; agent_common::stats::SHARED_HISTS],
        };
        shared.counters[counter::RECLAIM_MEMCG - HOT_COUNTERS] = 2;
        shared.counters[counter::MMAP_LOCK_READ_SLOW - HOT_COUNTERS] = 1;
        let slow = &mut shared.hists[hist_kind::MMAP_LOCK_READ_WAIT - NUM_HISTS];
        slow.buckets[2] = 1;
        slow.sum_ns = 12345; // not used: the per-CPU sum is the sum
        let t = sum_groups([&a, &b], Some(&shared));
        assert_eq!(t.counters.v[counter::FAULTS_PRIVATE], 3);
        assert_eq!(t.counters.v[counter::RECLAIM_MEMCG], 2);
        let h = &t.hists[hist_kind::MMAP_LOCK_READ_WAIT];
        assert_eq!(h.buckets[0], 15);
        assert_eq!(h.buckets[2], 1);
        assert_eq!(h.sum_ns, 10_000);
        assert_eq!(mmap_lock_waits(&t.counters), (16, 0));
        assert!(!is_zero(&t));
    }

    #[test]
    fn per_cpu_values_sum_elementwise() {
        let mut a = zero_group();
        a.counters.v[1] = 5;
        a.hists[0].buckets[3] = 2;
        a.hists[0].sum_ns = 100;
        let mut b = zero_group();
        b.counters.v[1] = 7;
        b.hists[0].buckets[3] = 1;
        b.hists[0].buckets[24] = 4;
        b.hists[0].sum_ns = 50;
        let s = sum_groups_of([&a, &b]);
        assert_eq!(s.counters.v[1], 12);
        assert_eq!(s.hists[0].buckets[3], 3);
        assert_eq!(s.hists[0].buckets[24], 4);
        assert_eq!(s.hists[0].sum_ns, 150);
        assert!(!is_zero(&s));
        assert!(is_zero(&zero_group()));
        let mut c1 = Counters::zeroed();
        c1.v[0] = 1;
        let mut c2 = Counters::zeroed();
        c2.v[0] = 2;
        assert_eq!(sum_counters([&c1, &c2]).v[0], 3);
    }
}
