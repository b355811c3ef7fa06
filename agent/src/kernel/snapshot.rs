//! Reading the kernel's aggregates: per-CPU values summed, per group and
//! per process, and the names of the kernel's health counters. Plain data,
//! so the outputs can be tested without BPF.
use agent_common::stats::{diag, Counters, GroupStats, Hist, NUM_COUNTERS, NUM_HISTS};

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

pub fn zero_group() -> GroupStats {
    GroupStats {
        counters: Counters::zeroed(),
        hists: [Hist {
            buckets: [0; agent_common::hist::HIST_BUCKETS],
            sum_ns: 0,
        }; NUM_HISTS],
    }
}

/// Sums per-CPU copies of a group's statistics.
pub fn sum_groups<'a>(per_cpu: impl IntoIterator<Item = &'a GroupStats>) -> GroupStats {
    let mut total = zero_group();
    for g in per_cpu {
        add_counters(&mut total.counters, &g.counters);
        for (a, b) in total.hists.iter_mut().zip(g.hists.iter()) {
            add_hist(a, b);
        }
    }
    total
}

/// Sums per-CPU copies of a process's counters.
pub fn sum_counters<'a>(per_cpu: impl IntoIterator<Item = &'a Counters>) -> Counters {
    let mut total = Counters::zeroed();
    for c in per_cpu {
        add_counters(&mut total, c);
    }
    total
}

pub fn is_zero(g: &GroupStats) -> bool {
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
        let s = sum_groups([&a, &b]);
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
