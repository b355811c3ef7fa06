//! Prometheus exposition: the metric names, their help, and the text format
//! (through the `prometheus` crate's encoder).
use agent_common::{
    hist::{bucket_upper_ns, FINITE_BUCKETS},
    stats::{counter, hist_kind, Hist},
};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::{agent::Snapshot, postgres::groups::Labels};

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

/// Every metric family of a snapshot.
pub fn families(s: &Snapshot, version: &str) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    let c = |idx: usize| move |g: &agent_common::stats::GroupTotals| g.counters.v[idx] as f64;

    let mut switches = Vec::new();
    for (l, g) in &s.groups {
        for (kind, idx) in [
            ("voluntary", counter::VOLUNTARY_SWITCHES),
            ("involuntary", counter::INVOLUNTARY_SWITCHES),
        ] {
            let mut labels = group_labels(l);
            labels.push(label("kind", kind));
            switches.push(counter_metric(labels, c(idx)(g)));
        }
    }
    out.push(family(
        "pgpreempt_context_switches_total",
        "Context switches of traced tasks. kind=involuntary: switched out while still runnable (preempted); voluntary: switched out to sleep.",
        MetricType::COUNTER,
        switches,
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
    ] {
        out.push(family(
            name,
            help,
            MetricType::COUNTER,
            s.groups.iter().map(|(l, g)| counter_metric(group_labels(l), g.counters.v[idx] as f64 / scale)).collect(),
        ));
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
        "Events the kernel programs could not record, by reason. Non-zero means undercounting: raise --max-processes. switch_in_missed and switch_out_missed: scheduler events the kernel did not run the programs for (rare; a missed switch-in is made good one run late).",
        MetricType::COUNTER,
        crate::kernel::snapshot::DIAG_REASONS
            .iter()
        .map(|&(r, i)| counter_metric(vec![label("reason", r)], s.diag[i] as f64))
        .collect(),
    ));
    out
}

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
                },
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
        }
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
}
