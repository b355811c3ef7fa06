//! Reading the kernel's aggregates: per-CPU values summed, per group and
//! per process, and the names of the kernel's health counters. Plain data,
//! so the outputs can be tested without BPF.
use agent_common::stats::{
    counter, diag, hist_kind, Counters, GroupStats, GroupTotals, Hist, SharedGroupStats, ALL_HISTS,
    HOT_COUNTERS, NUM_COUNTERS, NUM_HISTS,
};

use std::collections::BTreeMap;

use crate::{
    agent::{Preemptor, Snapshot},
    postgres::{groups::Labels, spin_sites::SpinSite},
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

/// `a - b` element by element, never below zero: a counter that went
/// down (a label set whose ids changed, a site folded into `other`) counts
/// nothing for the interval rather than wrapping to a huge number.
pub fn sub_counters(a: &Counters, b: &Counters) -> Counters {
    let mut out = *a;
    for (x, y) in out.v.iter_mut().zip(b.v.iter()) {
        *x = x.saturating_sub(*y);
    }
    out
}

/// `a - b` for a histogram, bucket by bucket, never below zero.
pub fn sub_hist(a: &Hist, b: &Hist) -> Hist {
    let mut out = *a;
    for (x, y) in out.buckets.iter_mut().zip(b.buckets.iter()) {
        *x = x.saturating_sub(*y);
    }
    out.sum_ns = a.sum_ns.saturating_sub(b.sum_ns);
    out
}

/// `a - b` for a group's totals, never below zero.
pub fn sub_group(a: &GroupTotals, b: &GroupTotals) -> GroupTotals {
    let mut out = zero_group();
    out.counters = sub_counters(&a.counters, &b.counters);
    for ((o, x), y) in out.hists.iter_mut().zip(a.hists.iter()).zip(b.hists.iter()) {
        *o = sub_hist(x, y);
    }
    out
}

/// What happened between two snapshots of one agent: `newer`'s cumulative
/// totals less `older`'s, per label set (group totals), per spin site,
/// per preemptor and per health counter. Keys only in `newer` count in
/// full (they began after `older`); keys only in `older` are dropped.
/// Label sets listed twice are added up first. Nothing goes below zero
/// (see [`sub_counters`]). Everything else (kernel, programs, tracked
/// processes, shared memory, CPUs) is `newer`'s.
pub fn delta(newer: &Snapshot, older: &Snapshot) -> Snapshot {
    let merged = |s: &Snapshot| {
        let mut m: BTreeMap<Labels, GroupTotals> = BTreeMap::new();
        for (l, g) in &s.groups {
            add_group(m.entry(l.clone()).or_insert_with(zero_group), g);
        }
        m
    };
    let old_groups = merged(older);
    let groups = merged(newer)
        .into_iter()
        .map(|(l, g)| {
            let d = match old_groups.get(&l) {
                Some(o) => sub_group(&g, o),
                None => g,
            };
            (l, d)
        })
        .collect();
    let spin_sites = newer
        .spin_sites
        .iter()
        .map(|s| {
            let old = older
                .spin_sites
                .iter()
                .find(|o| o.cluster == s.cluster && o.site == s.site);
            match old {
                Some(o) => SpinSite {
                    cluster: s.cluster.clone(),
                    site: s.site.clone(),
                    delays: s.delays.saturating_sub(o.delays),
                    hist: sub_hist(&s.hist, &o.hist),
                },
                None => s.clone(),
            }
        })
        .collect();
    let preemptors = newer
        .preemptors
        .iter()
        .map(|p| {
            let old = older
                .preemptors
                .iter()
                .find(|o| o.cluster == p.cluster && o.comm == p.comm)
                .map_or(0, |o| o.count);
            Preemptor {
                cluster: p.cluster.clone(),
                comm: p.comm.clone(),
                count: p.count.saturating_sub(old),
            }
        })
        .collect();
    let mut diag = newer.diag;
    for (x, y) in diag.iter_mut().zip(older.diag.iter()) {
        *x = x.saturating_sub(*y);
    }
    Snapshot {
        groups,
        tracked: newer.tracked.clone(),
        kernel: newer.kernel.clone(),
        programs: newer.programs.clone(),
        diag,
        spin_sites,
        uprobe_errors: newer.uprobe_errors,
        shared_memory: newer.shared_memory.clone(),
        preemptors,
        online_cpus: newer.online_cpus,
        starts: newer.starts.since(&older.starts),
    }
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
    ("process_info_full", diag::PROC_INFO_FULL),
    ("waking_missed", diag::WAKING_MISSED),
];

/// The reasons above that are scheduler events the kernel did not run the
/// programs for: no setting changes them, and a missed switch-in is made
/// good. Reports and the alert rule tell them apart from drops by the
/// agent (the bench keeps its own copy: xtask does not link the agent).
pub const KERNEL_SKIPPED: [&str; 3] = ["switch_in_missed", "switch_out_missed", "waking_missed"];

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
    use agent_common::stats::diag;

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
    fn snap_with(
        groups: Vec<(&str, GroupTotals)>,
        sites: Vec<(&str, u64, u64)>,
        preemptors: Vec<(&str, u64)>,
        lost: u64,
    ) -> Snapshot {
        let mut diag_counts = [0; diag::NUM];
        diag_counts[diag::EVENTS_LOST] = lost;
        Snapshot {
            groups: groups
                .into_iter()
                .map(|(t, g)| {
                    (
                        Labels {
                            cluster: "/a".into(),
                            backend_type: t.into(),
                        },
                        g,
                    )
                })
                .collect(),
            tracked: vec![],
            kernel: crate::kernel::kernel_info::KernelInfo {
                release: "6.18.0".into(),
                preempt: crate::kernel::kernel_info::PreemptModel {
                    model: "full".into(),
                    source: "test".into(),
                    dynamic: None,
                },
                rseq_slice: None,
            },
            programs: vec![],
            diag: diag_counts,
            spin_sites: sites
                .into_iter()
                .map(|(site, n, delays)| SpinSite {
                    cluster: "/a".into(),
                    site: site.into(),
                    delays,
                    hist: {
                        let mut h = ZERO_HIST;
                        h.buckets[4] = n;
                        h.sum_ns = n * 10_000;
                        h
                    },
                })
                .collect(),
            uprobe_errors: 0,
            shared_memory: vec![],
            preemptors: preemptors
                .into_iter()
                .map(|(comm, count)| Preemptor {
                    cluster: "/a".into(),
                    comm: comm.into(),
                    count,
                })
                .collect(),
            online_cpus: 2,
            starts: Default::default(),
        }
    }

    fn on_cpu(ns: u64, preempted: u64) -> GroupTotals {
        let mut g = zero_group();
        g.counters.v[counter::ON_CPU_NS] = ns;
        g.hists[hist_kind::PREEMPTED].buckets[3] = preempted;
        g.hists[hist_kind::PREEMPTED].sum_ns = preempted * 5;
        g
    }

    #[test]
    fn a_delta_is_what_happened_between_two_snapshots() {
        let older = snap_with(
            vec![
                ("client backend", on_cpu(1_000, 2)),
                ("checkpointer", on_cpu(50, 0)),
            ],
            vec![("StrategyGetBuffer", 3, 1)],
            vec![("pgbench", 10), ("postgres", 4)],
            2,
        );
        let newer = snap_with(
            vec![
                ("client backend", on_cpu(600, 1)),
                // The same label set twice (two ids): added up first.
                ("client backend", on_cpu(3_000, 6)),
                ("checkpointer", on_cpu(50, 0)),
                ("autovacuum worker", on_cpu(70, 1)),
            ],
            vec![("StrategyGetBuffer", 5, 4), ("XLogFlush", 2, 0)],
            vec![("pgbench", 25), ("postgres", 4), ("kworker", 1)],
            3,
        );
        let d = delta(&newer, &older);
        let by = |t: &str| {
            d.groups
                .iter()
                .filter(|(l, _)| l.backend_type == t)
                .map(|(_, g)| *g)
                .collect::<Vec<_>>()
        };
        let cb = by("client backend");
        assert_eq!(cb.len(), 1, "one row per label set");
        assert_eq!(cb[0].counters.v[counter::ON_CPU_NS], 2_600);
        assert_eq!(cb[0].hists[hist_kind::PREEMPTED].buckets[3], 5);
        assert_eq!(cb[0].hists[hist_kind::PREEMPTED].sum_ns, 25);
        assert!(is_zero(&by("checkpointer")[0]));
        // New since the older snapshot: counted in full.
        assert_eq!(
            by("autovacuum worker")[0].counters.v[counter::ON_CPU_NS],
            70
        );
        let site = |n: &str| d.spin_sites.iter().find(|s| s.site == n).unwrap();
        assert_eq!(site("StrategyGetBuffer").hist.buckets[4], 2);
        assert_eq!(site("StrategyGetBuffer").hist.sum_ns, 20_000);
        assert_eq!(site("StrategyGetBuffer").delays, 3);
        assert_eq!(site("XLogFlush").hist.buckets[4], 2);
        let p = |c: &str| d.preemptors.iter().find(|p| p.comm == c).unwrap().count;
        assert_eq!((p("pgbench"), p("postgres"), p("kworker")), (15, 0, 1));
        assert_eq!(d.diag[diag::EVENTS_LOST], 1);
        // A snapshot less itself is nothing.
        let z = delta(&newer, &newer);
        assert!(z.groups.iter().all(|(_, g)| is_zero(g)));
        assert!(z.preemptors.iter().all(|p| p.count == 0));
    }

    #[test]
    fn counters_that_went_down_count_nothing_not_a_huge_number() {
        // A label set whose totals shrank (its ids changed), a site whose
        // calls were folded into `other`, a preemptor relabelled.
        let older = snap_with(
            vec![("client backend", on_cpu(5_000, 9))],
            vec![("StrategyGetBuffer", 8, 6)],
            vec![("pgbench", 100)],
            7,
        );
        let newer = snap_with(
            vec![("client backend", on_cpu(1_000, 2))],
            vec![("StrategyGetBuffer", 3, 1)],
            vec![("pgbench", 40)],
            0,
        );
        let d = delta(&newer, &older);
        let g = &d.groups[0].1;
        assert!(is_zero(g), "{g:?}");
        assert_eq!(g.hists[hist_kind::PREEMPTED].sum_ns, 0);
        assert_eq!(d.spin_sites[0].hist.sum_ns, 0);
        assert_eq!(d.spin_sites[0].delays, 0);
        assert_eq!(d.preemptors[0].count, 0);
        assert_eq!(d.diag[diag::EVENTS_LOST], 0);
        let f = crate::trace::report_json::Figures::from_counters(&g.counters);
        assert_eq!(f.on_cpu_seconds, 0.0);
    }
}
