//! Prometheus exposition: the metric names, their help, and the text format
//! (through the `prometheus` crate's encoder).
use agent_common::{
    hist::{bucket_upper_ns, FINITE_BUCKETS},
    stats::{counter, hist_kind, Hist},
};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::{
    agent::Snapshot,
    postgres::{
        groups::{Labels, UNASSIGNED_CLUSTER},
        starts::{Lifetimes, LIFETIME_BOUNDS},
    },
};

const NS: f64 = 1e9;

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn group_labels(l: &Labels) -> Vec<LabelPair> {
    vec![
        label("cluster", &l.cluster),
        label("backend_type", &l.backend_type),
    ]
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

fn counter_metric(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::from_label(labels);
    m.set_counter(c);
    m
}

fn gauge_metric(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::from_label(labels);
    m.set_gauge(g);
    m
}

/// A kernel log2 histogram as a Prometheus histogram in seconds. The kernel's
/// buckets already are `le` buckets, so this only accumulates them.
pub fn histogram_metric(labels: Vec<LabelPair>, h: &Hist) -> Metric {
    let mut buckets = Vec::with_capacity(FINITE_BUCKETS);
    let mut cumulative = 0u64;
    for i in 0..FINITE_BUCKETS {
        cumulative += h.buckets[i];
        let mut b = Bucket::default();
        b.set_upper_bound(bucket_upper_ns(i) as f64 / NS);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let total = cumulative + h.buckets[FINITE_BUCKETS];
    let mut hist = Histogram::default();
    hist.set_bucket(buckets);
    hist.set_sample_count(total);
    hist.set_sample_sum(h.sum_ns as f64 / NS);
    let mut m = Metric::from_label(labels);
    m.set_histogram(hist);
    m
}

/// Wake-ups by cause (`cause` label values): timer, process, and the
/// rest, other.
pub fn wakeup_causes(c: &agent_common::stats::Counters) -> [(&'static str, u64); 3] {
    let (all, timer, process) = (
        c.v[counter::WAKEUPS],
        c.v[counter::WAKEUPS_TIMER],
        c.v[counter::WAKEUPS_PROCESS],
    );
    [
        ("timer", timer),
        ("process", process),
        ("other", all.saturating_sub(timer + process)),
    ]
}

/// Starts per label set, with every known label set present (at zero if
/// none started), so that `rate()` sees the first start.
fn starts_with_zeros(s: &Snapshot) -> Vec<(Labels, u64)> {
    let mut m: std::collections::BTreeMap<Labels, u64> = s
        .groups
        .iter()
        .filter(|(l, _)| l.cluster != UNASSIGNED_CLUSTER)
        .map(|(l, _)| (l.clone(), 0))
        .collect();
    for (l, n) in &s.starts.starts {
        m.insert(l.clone(), *n);
    }
    m.into_iter().collect()
}

/// A lifetime histogram in seconds.
fn lifetime_metric(labels: Vec<LabelPair>, h: &Lifetimes) -> Metric {
    let mut buckets = Vec::with_capacity(LIFETIME_BOUNDS.len());
    let mut cumulative = 0u64;
    for (i, bound) in LIFETIME_BOUNDS.iter().enumerate() {
        cumulative += h.buckets[i];
        let mut b = Bucket::default();
        b.set_upper_bound(*bound);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    let mut hist = Histogram::default();
    hist.set_bucket(buckets);
    hist.set_sample_count(h.count);
    hist.set_sample_sum(h.sum_seconds);
    let mut m = Metric::from_label(labels);
    m.set_histogram(hist);
    m
}

/// Every metric family of a snapshot.
pub fn families(s: &Snapshot, version: &str) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let c = |idx: usize| move |g: &agent_common::stats::GroupTotals| g.counters.v[idx] as f64;

    // One counter per group and value of `name`, each from its index.
    let split = |name: &str, values: &[(&str, usize)]| -> Vec<Metric> {
        let mut metrics = Vec::new();
        for (l, g) in &s.groups {
            for &(value, idx) in values {
                let mut labels = group_labels(l);
                labels.push(label(name, value));
                metrics.push(counter_metric(labels, c(idx)(g)));
            }
        }
        metrics
    };
    out.push(family(
        "pgpreempt_context_switches_total",
        "Context switches of traced tasks. kind=involuntary: switched out while still runnable (preempted); voluntary: switched out to sleep.",
        MetricType::COUNTER,
        split(
            "kind",
            &[
                ("voluntary", counter::VOLUNTARY_SWITCHES),
                ("involuntary", counter::INVOLUNTARY_SWITCHES),
            ],
        ),
    ));

    out.push(family(
        "pgpreempt_wakeups_total",
        "Wake-ups of traced tasks: runs that follow a voluntary sleep, counted when the run ends, by what woke the task. cause=timer: a timer expiry (the task's own timeout: a latch wait's timeout, pg_usleep); process: a user process (a latch set, a semaphore post, a socket or pipe write; also an interrupt that arrived while a process ran); other: the rest (kernel threads, the idle task, a process exiting). Idle wake-ups keep CPUs out of deep idle states.",
        MetricType::COUNTER,
        s.groups
            .iter()
            .flat_map(|(l, g)| {
                wakeup_causes(&g.counters).map(|(cause, n)| {
                    let mut labels = group_labels(l);
                    labels.push(label("cause", cause));
                    counter_metric(labels, n as f64)
                })
            })
            .collect(),
    ));

    out.push(family(
        "pgpreempt_cpu_seconds_total",
        "Time traced tasks ran on a CPU (the growth of the scheduler's sum_exec_runtime between switch-outs). With the run-queue time (pgpreempt_preempted_seconds_sum, pgpreempt_wakeup_latency_seconds_sum) and lock waiting (pgpreempt_futex_wait_seconds_sum) it makes the active time every share of the diagnosis is of.",
        MetricType::COUNTER,
        s.groups
            .iter()
            .map(|(l, g)| counter_metric(group_labels(l), g.counters.v[counter::ON_CPU_NS] as f64 / NS))
            .collect(),
    ));
    out.push(family(
        "pgpreempt_preempted_by_total",
        "Who took the CPU: involuntary switch-outs of a cluster's traced tasks, by the command name of the task that ran next (kworker/3:1 as kworker). At most 1024 names are kept; later ones are counted as comm=\"(others)\" with an empty cluster.",
        MetricType::COUNTER,
        s.preemptors
            .iter()
            .map(|p| counter_metric(vec![label("cluster", &p.cluster), label("comm", &p.comm)], p.count as f64))
            .collect(),
    ));

    for (name, help, kind) in [
        (
            "pgpreempt_preempted_seconds",
            "Time from an involuntary switch-out until the task runs again (run-queue wait after preemption).",
            hist_kind::PREEMPTED,
        ),
        (
            "pgpreempt_wakeup_latency_seconds",
            "Time from wakeup (put on a run queue) until the task runs.",
            hist_kind::WAKEUP_LATENCY,
        ),
        (
            "pgpreempt_futex_wait_seconds",
            "Time blocked in one futex wait, from blocking until running again (PostgreSQL semaphores: LWLock and lock waits).",
            kind_futex(),
        ),
    ] {
        let metrics = s
            .groups
            .iter()
            .map(|(l, g)| histogram_metric(group_labels(l), &g.hists[kind]))
            .collect();
        out.push(family(name, help, MetricType::HISTOGRAM, metrics));
    }

    for (name, help, idx, scale) in [
        (
            "pgpreempt_lock_holder_preemptions_total",
            "Involuntary switch-outs of a task (the holder) that overlapped the futex wait of at least one task it then woke. Counted on the holder.",
            counter::HOLDER_PREEMPTIONS,
            1.0,
        ),
        (
            "pgpreempt_lock_holder_preempted_seconds_total",
            "Off-CPU time of those switch-outs: how long lock holders sat preempted while others waited for them. Counted on the holder.",
            counter::HOLDER_PREEMPTED_NS,
            NS,
        ),
        (
            "pgpreempt_lock_waiter_delay_seconds_total",
            "Waiting caused by preempted lock holders: for each futex wait ended by a holder, the overlap of the wait with the holder's involuntary off-CPU time. Counted on the waiter.",
            counter::WAITER_DELAY_NS,
            NS,
        ),
        (
            "pgpreempt_lock_holder_history_overflows_total",
            "Waits that began before the holder's kept preemption history (16 intervals): their waiter delay is a lower bound. Counted on the waiter.",
            counter::HISTORY_OVERFLOWS,
            1.0,
        ),
        (
            "pgpreempt_spinner_preemptions_total",
            "Involuntary switch-outs of a task while it was spinning in s_lock: a spinner that burned its time slice waiting.",
            counter::SPINNER_PREEMPTIONS,
            1.0,
        ),
        (
            "pgpreempt_huge_page_faults_total",
            "Of the page faults, those on huge-page (hugetlb) mappings: with huge_pages=on, the main shared memory's faults land here, one per 2 MB page instead of one per 4 kB page.",
            counter::FAULTS_HUGETLB,
            1.0,
        ),
        (
            "pgpreempt_faults_while_others_spin_total",
            "Page faults taken while at least one other process of the same cluster was spinning in s_lock: the measurable proxy for a spinlock holder that faulted (PostgreSQL's spinlock holder cannot be seen, its spinning waiters can).",
            counter::FAULTS_WHILE_OTHERS_SPIN,
            1.0,
        ),
        (
            "pgpreempt_faults_while_spinning_total",
            "Page faults taken by a process while it was itself spinning in s_lock.",
            counter::FAULTS_WHILE_SPINNING,
            1.0,
        ),
        (
            "pgpreempt_preemptions_while_others_spin_total",
            "Involuntary switch-outs while at least one other process of the same cluster was spinning in s_lock: the proxy for a spinlock holder that was preempted.",
            counter::PREEMPTIONS_WHILE_OTHERS_SPIN,
            1.0,
        ),
        (
            "pgpreempt_preempted_while_others_spin_seconds_total",
            "Off-CPU time of those switch-outs, until the task ran again: how long processes sat preempted while others of their cluster spun.",
            counter::PREEMPTED_NS_WHILE_OTHERS_SPIN,
            NS,
        ),
        (
            "pgpreempt_numa_migrations_total",
            "Moves of a task to another NUMA node by NUMA balancing (sched_move_numa, sched_swap_numa): its memory is then remote until migrated. Zero on one-node hosts.",
            counter::NUMA_MIGRATIONS,
            1.0,
        ),
        (
            "pgpreempt_pages_migrated_total",
            "Base pages migrated in the task's own context (mm_migrate_pages, for any reason: NUMA balancing's misplaced pages, its own direct compaction, mbind, demotion), a stall the query waits through.",
            counter::PAGES_MIGRATED,
            1.0,
        ),
    ] {
        out.push(family(
            name,
            help,
            MetricType::COUNTER,
            s.groups.iter().map(|(l, g)| counter_metric(group_labels(l), g.counters.v[idx] as f64 / scale)).collect(),
        ));
    }

    out.push(family(
        "pgpreempt_page_faults_total",
        "Page faults on the process's memory (taken in user mode, or by the kernel copying to or from it in a system call, as pread into an empty shared buffer does), by where the address lands. region=main_shared: the cluster's main shared memory segment (shared_buffers and the rest; every backend faults in each page it touches once, 512 times as often on 4 kB pages as on 2 MB huge pages); other_shared: other shared mappings (dynamic shared memory in /dev/shm, SysV); private: private anonymous memory (heap, stack); file: private file mappings (the binary, libraries).",
        MetricType::COUNTER,
        split("region", &FAULT_REGIONS),
    ));

    for (name, help, label_name, kinds) in [
        (
            "pgpreempt_mmap_lock_wait_seconds",
            "Time a process waited to take its own mmap_lock (the address-space lock), from mmap_lock_start_locking to mmap_lock_acquire_returned; _count is the acquisitions (the kernel's try-locks included: they wait for nothing). lock=write: mmap, munmap, brk (memory allocated or freed, dynamic shared memory attached); lock=read: page faults that fall back from the per-VMA lock, and other reads of the address space. Long waits mean another holder: a /proc/PID/smaps reader, khugepaged.",
            "lock",
            &[
                ("read", hist_kind::MMAP_LOCK_READ_WAIT),
                ("write", hist_kind::MMAP_LOCK_WRITE_WAIT),
            ][..],
        ),
        (
            "pgpreempt_reclaim_stall_seconds",
            "Time a task spent reclaiming memory itself before it could allocate: kind=direct, the host short of free memory; kind=memcg, its memory cgroup at its limit.",
            "kind",
            &[
                ("direct", hist_kind::RECLAIM_DIRECT),
                ("memcg", hist_kind::RECLAIM_MEMCG),
            ][..],
        ),
        (
            "pgpreempt_compaction_stall_seconds",
            "Time a task spent compacting memory itself (direct compaction, to assemble a huge page or another large allocation).",
            "",
            &[("", hist_kind::COMPACTION)][..],
        ),
    ] {
        let mut metrics = Vec::new();
        for (l, g) in &s.groups {
            for &(value, kind) in kinds {
                let mut labels = group_labels(l);
                if !label_name.is_empty() {
                    labels.push(label(label_name, value));
                }
                metrics.push(histogram_metric(labels, &g.hists[kind]));
            }
        }
        out.push(family(name, help, MetricType::HISTOGRAM, metrics));
    }

    let site_labels = |x: &crate::postgres::spin_sites::SpinSite| {
        vec![label("cluster", &x.cluster), label("site", &x.site)]
    };
    out.push(family(
        "pgpreempt_spin_seconds",
        "Duration of each contended spinlock acquisition (one s_lock call), by the calling function PostgreSQL names.",
        MetricType::HISTOGRAM,
        s.spin_sites.iter().map(|x| histogram_metric(site_labels(x), &x.hist)).collect(),
    ));
    out.push(family(
        "pgpreempt_spin_delays_total",
        "Sleeps taken while spinning (s_lock's return value: pg_usleep calls of 1 ms and more).",
        MetricType::COUNTER,
        s.spin_sites
            .iter()
            .map(|x| counter_metric(site_labels(x), x.delays as f64))
            .collect(),
    ));
    out.push(family(
        "pgpreempt_uprobe_attach_errors_total",
        "PostgreSQL binaries whose s_lock could not be probed (no such symbol, unreadable): spin metrics are missing for them.",
        MetricType::COUNTER,
        vec![counter_metric(vec![], s.uprobe_errors as f64)],
    ));

    out.push(family(
        "pgpreempt_futex_wakes_total",
        "Waiters woken from a futex wait by this task inside a futex wake (one per waiter). Counted on the waker.",
        MetricType::COUNTER,
        s.groups
            .iter()
            .map(|(l, g)| counter_metric(group_labels(l), c(counter::FUTEX_WAKES)(g)))
            .collect(),
    ));

    out.push(family(
        "pgpreempt_tracked_processes",
        "Traced processes alive now.",
        MetricType::GAUGE,
        s.tracked
            .iter()
            .map(|(l, n)| gauge_metric(group_labels(l), *n as f64))
            .collect(),
    ));

    out.push(family(
        "pgpreempt_process_starts_total",
        "Processes forked by a cluster's processes since the agent started (a connection without a pooler is a new client backend), counted once the backend type is known: its title, read from /proc or by the kernel as it exited. Hundreds a second is a connection storm: a pooler is the fix.",
        MetricType::COUNTER,
        starts_with_zeros(s)
            .into_iter()
            .map(|(l, n)| counter_metric(group_labels(&l), n as f64))
            .collect(),
    ));

    out.push(family(
        "pgpreempt_process_lifetime_seconds",
        "How long the processes forked since the agent started lived, from fork to exit.",
        MetricType::HISTOGRAM,
        s.starts
            .lifetimes
            .iter()
            .map(|(l, h)| lifetime_metric(group_labels(l), h))
            .collect(),
    ));

    out.push(family(
        "pgpreempt_shared_memory_info",
        "Each cluster's main shared memory segment as found in the postmaster's smaps: page_size in bytes (4096, or the huge page size), huge_pages on (hugetlb), partial (4 kB pages, some on transparent huge pages) or off. Off on a large shared_buffers means many page faults per backend.",
        MetricType::GAUGE,
        s.shared_memory
            .iter()
            .map(|m| {
                gauge_metric(
                    vec![
                        label("cluster", &m.cluster),
                        label("page_size", &m.page_size.to_string()),
                        label("huge_pages", m.huge_pages),
                    ],
                    1.0,
                )
            })
            .collect(),
    ));

    out.push(family(
        "pgpreempt_kernel_info",
        "The kernel release and preemption model (none, voluntary, full, lazy, rt or unknown).",
        MetricType::GAUGE,
        vec![gauge_metric(
            vec![
                label("release", &s.kernel.release),
                label("preempt_model", &s.kernel.preempt.model),
            ],
            1.0,
        )],
    ));

    out.push(family(
        "pgpreempt_build_info",
        "The pgpreempt version.",
        MetricType::GAUGE,
        vec![gauge_metric(vec![label("version", version)], 1.0)],
    ));

    out.push(family(
        "pgpreempt_bpf_program_runs_total",
        "Runs of each pgpreempt kernel program (counted while BPF statistics are on: --bpf-stats or kernel.bpf_stats_enabled=1).",
        MetricType::COUNTER,
        s.programs
            .iter()
            .map(|p| counter_metric(vec![label("program", &p.name)], p.runs as f64))
            .collect(),
    ));
    out.push(family(
        "pgpreempt_bpf_program_run_seconds_total",
        "Time spent in each pgpreempt kernel program (while BPF statistics are on).",
        MetricType::COUNTER,
        s.programs
            .iter()
            .map(|p| counter_metric(vec![label("program", &p.name)], p.run_ns as f64 / NS))
            .collect(),
    ));

    out.push(family(
        "pgpreempt_dropped_events_total",
        "Events the kernel programs could not record, by reason. Non-zero means undercounting: raise --max-processes. switch_in_missed and switch_out_missed: scheduler events the kernel did not run the programs for (rare; a missed switch-in is made good one run late); waking_missed: a wake-up whose waking was not seen, counted as cause other. fault_region_unknown: page faults whose mapping could not be looked up (its mmap_lock was held for writing), counted in no region.",
        MetricType::COUNTER,
        crate::kernel::snapshot::DIAG_REASONS
            .iter()
        .map(|&(r, i)| counter_metric(vec![label("reason", r)], s.diag[i] as f64))
        .collect(),
    ));
    out
}

/// The `region` of each page-fault counter.
pub const FAULT_REGIONS: [(&str, usize); 4] = [
    ("main_shared", counter::FAULTS_MAIN_SHARED),
    ("other_shared", counter::FAULTS_OTHER_SHARED),
    ("private", counter::FAULTS_PRIVATE),
    ("file", counter::FAULTS_FILE),
];

const fn kind_futex() -> usize {
    hist_kind::FUTEX_WAIT
}

/// The text exposition of a snapshot.
pub fn render(s: &Snapshot, version: &str) -> String {
    // The encoder rejects a family without metrics (no PostgreSQL on the host
    // yet), and would fail the whole scrape: leave such families out.
    let families: Vec<MetricFamily> = families(s, version)
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        kernel::kernel_info::{KernelInfo, PreemptModel},
        kernel::snapshot::{zero_group, ProgramStats},
    };

    fn snap() -> Snapshot {
        let mut g = zero_group();
        g.counters.v[counter::INVOLUNTARY_SWITCHES] = 7;
        g.counters.v[counter::VOLUNTARY_SWITCHES] = 3;
        g.hists[hist_kind::PREEMPTED].buckets[0] = 2; // <= 1 µs
        g.hists[hist_kind::PREEMPTED].buckets[3] = 1; // <= 8 µs
        g.hists[hist_kind::PREEMPTED].buckets[FINITE_BUCKETS] = 1; // > 8.39 s
        g.hists[hist_kind::PREEMPTED].sum_ns = 9_000_005_000;
        let l = Labels {
            cluster: "/var/lib/pg".into(),
            backend_type: "client backend".into(),
        };
        Snapshot {
            groups: vec![(l.clone(), g)],
            tracked: vec![(l, 4)],
            kernel: KernelInfo {
                release: "6.18.0".into(),
                preempt: PreemptModel {
                    model: "none".into(),
                    source: "test".into(),
                    dynamic: None,
                },
                rseq_slice: None,
            },
            programs: vec![ProgramStats {
                name: "sched_switch".into(),
                runs: 10,
                run_ns: 1500,
            }],
            diag: [0; agent_common::stats::diag::NUM],
            spin_sites: vec![crate::postgres::spin_sites::SpinSite {
                cluster: "/var/lib/pg".into(),
                site: "StrategyGetBuffer".into(),
                delays: 2,
                hist: {
                    let mut h = zero_group().hists[0];
                    h.buckets[4] = 3; // <= 16 µs
                    h.sum_ns = 30_000;
                    h
                },
            }],
            uprobe_errors: 1,
            shared_memory: vec![],
            preemptors: vec![],
            online_cpus: 2,
            starts: Default::default(),
        }
    }

    /// A snapshot with every memory figure set, and two clusters' segments.
    fn memory_snap() -> Snapshot {
        let mut s = snap();
        let c = &mut s.groups[0].1.counters.v;
        for (i, idx) in [
            counter::FAULTS_MAIN_SHARED,
            counter::FAULTS_OTHER_SHARED,
            counter::FAULTS_PRIVATE,
            counter::FAULTS_FILE,
        ]
        .into_iter()
        .enumerate()
        {
            c[idx] = 1000 + i as u64;
        }
        c[counter::FAULTS_HUGETLB] = 5;
        c[counter::FAULTS_WHILE_OTHERS_SPIN] = 40;
        c[counter::FAULTS_WHILE_SPINNING] = 2;
        c[counter::PREEMPTIONS_WHILE_OTHERS_SPIN] = 6;
        c[counter::PREEMPTED_NS_WHILE_OTHERS_SPIN] = 1_500_000;
        c[counter::NUMA_MIGRATIONS] = 3;
        c[counter::PAGES_MIGRATED] = 512;
        let h = &mut s.groups[0].1.hists;
        h[hist_kind::MMAP_LOCK_READ_WAIT].buckets[0] = 100;
        h[hist_kind::MMAP_LOCK_READ_WAIT].sum_ns = 50_000;
        h[hist_kind::MMAP_LOCK_WRITE_WAIT].buckets[5] = 1; // <= 32 µs
        h[hist_kind::MMAP_LOCK_WRITE_WAIT].sum_ns = 20_000;
        h[hist_kind::RECLAIM_MEMCG].buckets[4] = 116;
        h[hist_kind::RECLAIM_MEMCG].sum_ns = 1_800_000;
        h[hist_kind::COMPACTION].buckets[10] = 1;
        h[hist_kind::COMPACTION].sum_ns = 1_000_000;
        s.shared_memory = vec![
            crate::agent::SharedMemory {
                cluster: "/var/lib/pg".into(),
                page_size: 4096,
                huge_pages: "off",
                size_bytes: 143 << 20,
            },
            crate::agent::SharedMemory {
                cluster: "/srv/pg2".into(),
                page_size: 2 << 20,
                huge_pages: "on",
                size_bytes: 1 << 30,
            },
        ];
        s
    }

    #[test]
    fn wakeups_by_cause() {
        let mut s = snap();
        let c = &mut s.groups[0].1.counters.v;
        c[counter::WAKEUPS] = 100;
        c[counter::WAKEUPS_TIMER] = 60;
        c[counter::WAKEUPS_PROCESS] = 30;
        let text = render(&s, "0.1.0");
        let l = r#"cluster="/var/lib/pg",backend_type="client backend""#;
        for want in [
            "# HELP pgpreempt_wakeups_total Wake-ups of traced tasks".to_string(),
            "# TYPE pgpreempt_wakeups_total counter".to_string(),
            format!(r#"pgpreempt_wakeups_total{{{l},cause="timer"}} 60"#),
            format!(r#"pgpreempt_wakeups_total{{{l},cause="process"}} 30"#),
            format!(r#"pgpreempt_wakeups_total{{{l},cause="other"}} 10"#),
        ] {
            assert!(text.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn memory_metrics() {
        let text = render(&memory_snap(), "0.1.0");
        let l = r#"cluster="/var/lib/pg",backend_type="client backend""#;
        for want in [
            format!(r#"pgpreempt_page_faults_total{{{l},region="main_shared"}} 1000"#),
            format!(r#"pgpreempt_page_faults_total{{{l},region="other_shared"}} 1001"#),
            format!(r#"pgpreempt_page_faults_total{{{l},region="private"}} 1002"#),
            format!(r#"pgpreempt_page_faults_total{{{l},region="file"}} 1003"#),
            format!("pgpreempt_huge_page_faults_total{{{l}}} 5"),
            format!("pgpreempt_faults_while_others_spin_total{{{l}}} 40"),
            format!("pgpreempt_faults_while_spinning_total{{{l}}} 2"),
            format!("pgpreempt_preemptions_while_others_spin_total{{{l}}} 6"),
            format!("pgpreempt_preempted_while_others_spin_seconds_total{{{l}}} 0.0015"),
            format!("pgpreempt_numa_migrations_total{{{l}}} 3"),
            format!("pgpreempt_pages_migrated_total{{{l}}} 512"),
            format!(r#"pgpreempt_mmap_lock_wait_seconds_bucket{{{l},lock="read",le="0.000001"}} 100"#),
            format!(r#"pgpreempt_mmap_lock_wait_seconds_count{{{l},lock="read"}} 100"#),
            format!(r#"pgpreempt_mmap_lock_wait_seconds_sum{{{l},lock="read"}} 0.00005"#),
            format!(r#"pgpreempt_mmap_lock_wait_seconds_bucket{{{l},lock="write",le="0.000016"}} 0"#),
            format!(r#"pgpreempt_mmap_lock_wait_seconds_bucket{{{l},lock="write",le="0.000032"}} 1"#),
            format!(r#"pgpreempt_reclaim_stall_seconds_count{{{l},kind="memcg"}} 116"#),
            format!(r#"pgpreempt_reclaim_stall_seconds_sum{{{l},kind="memcg"}} 0.0018"#),
            format!(r#"pgpreempt_reclaim_stall_seconds_count{{{l},kind="direct"}} 0"#),
            format!(r#"pgpreempt_compaction_stall_seconds_bucket{{{l},le="0.001024"}} 1"#),
            format!("pgpreempt_compaction_stall_seconds_count{{{l}}} 1"),
            r#"pgpreempt_shared_memory_info{cluster="/var/lib/pg",page_size="4096",huge_pages="off"} 1"#.into(),
            r#"pgpreempt_shared_memory_info{cluster="/srv/pg2",page_size="2097152",huge_pages="on"} 1"#.into(),
            r#"pgpreempt_dropped_events_total{reason="fault_region_unknown"} 0"#.into(),
            "# TYPE pgpreempt_mmap_lock_wait_seconds histogram".into(),
            "# TYPE pgpreempt_shared_memory_info gauge".into(),
        ] {
            assert!(text.contains(&want), "missing {want} in\n{text}");
        }
        // Every family explains itself.
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no help for {name}"
            );
        }
        // Without clusters found, the info family is left out, not empty.
        let mut s = memory_snap();
        s.shared_memory.clear();
        let text = render(&s, "0.1.0");
        assert!(!text.contains("pgpreempt_shared_memory_info"));
        assert!(!text.contains("encoding failed"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_seconds() {
        let text = render(&snap(), "0.1.0");
        let l = r#"cluster="/var/lib/pg",backend_type="client backend""#;
        assert!(
            text.contains(&format!(
                "pgpreempt_preempted_seconds_bucket{{{l},le=\"0.000001\"}} 2"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "pgpreempt_preempted_seconds_bucket{{{l},le=\"0.000004\"}} 2"
        )));
        assert!(text.contains(&format!(
            "pgpreempt_preempted_seconds_bucket{{{l},le=\"0.000008\"}} 3"
        )));
        assert!(text.contains(&format!(
            "pgpreempt_preempted_seconds_bucket{{{l},le=\"8.388608\"}} 3"
        )));
        assert!(text.contains(&format!(
            "pgpreempt_preempted_seconds_bucket{{{l},le=\"+Inf\"}} 4"
        )));
        assert!(text.contains(&format!("pgpreempt_preempted_seconds_count{{{l}}} 4")));
        assert!(text.contains(&format!("pgpreempt_preempted_seconds_sum{{{l}}} 9.000005")));
    }

    #[test]
    fn a_host_without_postgres_still_scrapes() {
        let mut s = snap();
        s.groups.clear();
        s.tracked.clear();
        let text = render(&s, "0.1.0");
        assert!(!text.contains("encoding failed"), "{text}");
        assert!(
            text.contains("pgpreempt_build_info{version=\"0.1.0\"} 1"),
            "{text}"
        );
        assert!(text.contains("pgpreempt_kernel_info{"));
        assert!(!text.contains("pgpreempt_context_switches_total"));
    }

    #[test]
    fn cpu_time_and_who_took_the_cpu() {
        let mut s = snap();
        s.groups[0].1.counters.v[counter::ON_CPU_NS] = 2_500_000_000;
        s.preemptors = vec![
            crate::agent::Preemptor {
                cluster: "/var/lib/pg".into(),
                comm: "pgbench".into(),
                count: 42,
            },
            crate::agent::Preemptor {
                cluster: String::new(),
                comm: "(others)".into(),
                count: 3,
            },
        ];
        let text = render(&s, "0.1.0");
        for want in [
            r#"pgpreempt_cpu_seconds_total{cluster="/var/lib/pg",backend_type="client backend"} 2.5"#,
            r#"pgpreempt_preempted_by_total{cluster="/var/lib/pg",comm="pgbench"} 42"#,
            r#"pgpreempt_preempted_by_total{cluster="",comm="(others)"} 3"#,
            "# TYPE pgpreempt_cpu_seconds_total counter",
            "# TYPE pgpreempt_preempted_by_total counter",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        // Before anyone preempted a traced task: no family, a valid scrape.
        s.preemptors.clear();
        let text = render(&s, "0.1.0");
        assert!(!text.contains("pgpreempt_preempted_by_total"));
        assert!(!text.contains("encoding failed"));
    }

    #[test]
    fn counters_gauges_and_info() {
        let text = render(&snap(), "0.1.0");
        assert!(text.contains(r#"pgpreempt_context_switches_total{cluster="/var/lib/pg",backend_type="client backend",kind="involuntary"} 7"#), "{text}");
        assert!(text.contains(r#"kind="voluntary"} 3"#));
        assert!(text.contains(
            r#"pgpreempt_tracked_processes{cluster="/var/lib/pg",backend_type="client backend"} 4"#
        ));
        assert!(text.contains(r#"pgpreempt_kernel_info{release="6.18.0",preempt_model="none"} 1"#));
        assert!(text.contains(r#"pgpreempt_build_info{version="0.1.0"} 1"#));
        assert!(text.contains(
            r#"pgpreempt_bpf_program_run_seconds_total{program="sched_switch"} 0.0000015"#
        ));
        assert!(text.contains("# TYPE pgpreempt_futex_wait_seconds histogram"));
        assert!(text.contains(r#"pgpreempt_dropped_events_total{reason="task_map_full"} 0"#));
        assert!(text.contains(r#"pgpreempt_spin_seconds_bucket{cluster="/var/lib/pg",site="StrategyGetBuffer",le="0.000016"} 3"#), "{text}");
        assert!(text.contains(
            r#"pgpreempt_spin_delays_total{cluster="/var/lib/pg",site="StrategyGetBuffer"} 2"#
        ));
        assert!(text.contains("pgpreempt_uprobe_attach_errors_total 1"));
        assert!(text.contains("# TYPE pgpreempt_lock_waiter_delay_seconds_total counter"));
    }

    #[test]
    fn process_starts_and_lifetimes() {
        let mut s = snap();
        let cb = Labels {
            cluster: "/var/lib/pg".into(),
            backend_type: "client backend".into(),
        };
        let text = render(&s, "0.1.0");
        assert!(
            text.contains(r#"pgpreempt_process_starts_total{cluster="/var/lib/pg",backend_type="client backend"} 0"#),
            "present at zero before the first start: {text}"
        );
        assert!(!text.contains("pgpreempt_process_lifetime_seconds_bucket"));
        s.starts.started(&cb);
        s.starts.started(&cb);
        s.starts.lived(&cb, 0.003);
        s.starts.lived(&cb, 20.0);
        let text = render(&s, "0.1.0");
        assert!(text.contains(r#"pgpreempt_process_starts_total{cluster="/var/lib/pg",backend_type="client backend"} 2"#));
        assert!(text.contains(r#"pgpreempt_process_lifetime_seconds_bucket{cluster="/var/lib/pg",backend_type="client backend",le="0.005"} 1"#), "{text}");
        assert!(text.contains(r#"pgpreempt_process_lifetime_seconds_bucket{cluster="/var/lib/pg",backend_type="client backend",le="30"} 2"#), "{text}");
        assert!(text.contains(r#"pgpreempt_process_lifetime_seconds_count{cluster="/var/lib/pg",backend_type="client backend"} 2"#));
        assert!(text.contains(r#"pgpreempt_process_lifetime_seconds_sum{cluster="/var/lib/pg",backend_type="client backend"} 20.003"#), "{text}");
    }
}
