//! What a trace session reads from its agent, and how that becomes a
//! [`Report`]: per-process counters (live processes from the kernel map,
//! exited ones from the tracker's `departed` list), per-group statistics
//! for totals, backend types and histograms, and spin sites. The building
//! half is plain data so that it is tested without BPF.
use std::collections::{BTreeMap, HashSet};

use agent_common::stats::{hist_kind, Counters, GroupTotals, Hist, ALL_HISTS};

use crate::{
    agent::Agent,
    agent::{Preemptor, Snapshot},
    kernel::snapshot::{self, DIAG_REASONS},
    postgres::groups::{Labels, UNASSIGNED_CLUSTER},
    postgres::processes::{pg_version, Classified},
    trace::report_json::{
        BackendTypeJson, ClusterJson, Figures, HistogramJson, KernelJson, PreemptorJson,
        ProcessJson, Report, Selection, SharedMemoryJson, SpinSiteJson, SCHEMA_VERSION,
    },
};

/// Histograms kept per group, by report name.
pub const GROUP_HISTOGRAMS: [(&str, usize); ALL_HISTS] = [
    ("preempted_seconds", hist_kind::PREEMPTED),
    ("wakeup_latency_seconds", hist_kind::WAKEUP_LATENCY),
    ("futex_wait_seconds", hist_kind::FUTEX_WAIT),
    (
        "mmap_lock_read_wait_seconds",
        hist_kind::MMAP_LOCK_READ_WAIT,
    ),
    (
        "mmap_lock_write_wait_seconds",
        hist_kind::MMAP_LOCK_WRITE_WAIT,
    ),
    ("reclaim_direct_stall_seconds", hist_kind::RECLAIM_DIRECT),
    ("reclaim_memcg_stall_seconds", hist_kind::RECLAIM_MEMCG),
    ("compaction_stall_seconds", hist_kind::COMPACTION),
];

/// One process as the session saw it.
#[derive(Debug, Clone)]
pub struct ProcessSample {
    pub tgid: u32,
    pub class: Classified,
    /// None: it never ran while traced (asleep the whole session).
    pub counters: Option<Counters>,
    pub exited: bool,
    pub started_during_session: bool,
}

/// Everything a report is built from.
#[derive(Debug, Clone)]
pub struct Sample {
    pub snapshot: Snapshot,
    pub processes: Vec<ProcessSample>,
}

/// Reads the agent: every process it tracks or tracked.
pub fn sample(agent: &Agent, initial: &HashSet<u32>) -> Sample {
    let mut processes = Vec::new();
    for t in agent.tracker.procs.values() {
        let mut class = t.class.clone();
        // Settled titles are not re-read by the tracker: take the activity now.
        if t.exited_at.is_none() {
            if let Some(title) = agent.tracker.procfs.title(t.tgid) {
                class.activity = crate::postgres::backend_type::parse_title(
                    &title,
                    class.backend_type == "postmaster",
                )
                .activity;
            }
        }
        processes.push(ProcessSample {
            tgid: t.tgid,
            class,
            counters: agent.process_counters(t.tgid),
            exited: t.exited_at.is_some(),
            started_during_session: !initial.contains(&t.tgid),
        });
    }
    for d in &agent.tracker.departed {
        processes.push(ProcessSample {
            tgid: d.tgid,
            class: d.class.clone(),
            counters: Some(d.counters),
            exited: true,
            started_during_session: !initial.contains(&d.tgid),
        });
    }
    processes.sort_by_key(|p| (p.tgid, !p.exited));
    Sample {
        snapshot: agent.snapshot(),
        processes,
    }
}

/// Which processes and groups a session reports.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this cluster label (a canonical data directory).
    pub cluster: Option<String>,
}

impl Filter {
    pub fn keeps(&self, cluster: &str) -> bool {
        match &self.cluster {
            Some(c) => c == cluster,
            None => true,
        }
    }
}

/// Session facts that do not come from the agent.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub started_at: String,
    pub duration_seconds: f64,
    pub selection: Selection,
    pub filter: Filter,
}

fn empty_hist() -> Hist {
    snapshot::zero_group().hists[0]
}

/// Builds the report from a sample.
pub fn build(s: &Sample, info: &SessionInfo) -> Report {
    let keep = |cluster: &str| {
        // Processes not classified yet belong to no cluster: only a session
        // without --cluster reports them (in totals and backend types).
        if cluster == UNASSIGNED_CLUSTER {
            info.filter.cluster.is_none()
        } else {
            info.filter.keeps(cluster)
        }
    };

    let processes: Vec<ProcessJson> = s
        .processes
        .iter()
        .filter(|p| keep(&p.class.cluster))
        .map(|p| ProcessJson {
            pid: p.tgid,
            cluster: p.class.cluster.clone(),
            backend_type: p.class.backend_type.to_string(),
            activity: p.class.activity.clone(),
            started_during_session: p.started_during_session,
            exited_during_session: p.exited,
            figures: p
                .counters
                .as_ref()
                .map(Figures::from_counters)
                .unwrap_or_default(),
        })
        .collect();

    let mut per_labels: BTreeMap<Labels, u64> = BTreeMap::new();
    for p in &processes {
        *per_labels
            .entry(Labels {
                cluster: p.cluster.clone(),
                backend_type: p.backend_type.clone(),
            })
            .or_default() += 1;
    }

    // Groups: one per label set (a label set that overflowed shares one).
    let mut groups: BTreeMap<Labels, GroupTotals> = BTreeMap::new();
    for (labels, stats) in &s.snapshot.groups {
        if !keep(&labels.cluster) {
            continue;
        }
        let e = groups
            .entry(labels.clone())
            .or_insert_with(snapshot::zero_group);
        snapshot::add_counters(&mut e.counters, &stats.counters);
        for (a, b) in e.hists.iter_mut().zip(stats.hists.iter()) {
            snapshot::add_hist(a, b);
        }
    }
    let mut total = snapshot::zero_group();
    for g in groups.values() {
        snapshot::add_counters(&mut total.counters, &g.counters);
        for (a, b) in total.hists.iter_mut().zip(g.hists.iter()) {
            snapshot::add_hist(a, b);
        }
    }
    let backend_types = groups
        .iter()
        .map(|(l, g)| {
            let lifetimes = s.snapshot.starts.lifetimes.get(l);
            BackendTypeJson {
                cluster: l.cluster.clone(),
                backend_type: l.backend_type.clone(),
                processes: per_labels.get(l).copied().unwrap_or(0),
                process_starts: s.snapshot.starts.starts.get(l).copied().unwrap_or(0),
                process_exits: lifetimes.map_or(0, |h| h.count),
                mean_lifetime_seconds: lifetimes
                    .map_or(0.0, |h| h.sum_seconds / h.count.max(1) as f64),
                figures: Figures::from_counters(&g.counters),
                histograms: GROUP_HISTOGRAMS
                    .iter()
                    .map(|&(name, k)| HistogramJson::from_hist(name, &g.hists[k]))
                    .collect(),
            }
        })
        .collect();

    let spin_sites: Vec<SpinSiteJson> = s
        .snapshot
        .spin_sites
        .iter()
        .filter(|x| keep(&x.cluster))
        .map(|x| SpinSiteJson {
            cluster: x.cluster.clone(),
            site: x.site.clone(),
            count: x.hist.buckets.iter().sum(),
            seconds: x.hist.sum_ns as f64 / 1e9,
            delays: x.delays,
        })
        .collect();
    let mut spin_hist = empty_hist();
    for x in s.snapshot.spin_sites.iter().filter(|x| keep(&x.cluster)) {
        snapshot::add_hist(&mut spin_hist, &x.hist);
    }
    let mut histograms: Vec<HistogramJson> = GROUP_HISTOGRAMS
        .iter()
        .map(|&(name, k)| HistogramJson::from_hist(name, &total.hists[k]))
        .collect();
    histograms.push(HistogramJson::from_hist("spin_seconds", &spin_hist));

    let mut clusters: BTreeMap<String, ClusterJson> = BTreeMap::new();
    for p in &processes {
        let c = clusters
            .entry(p.cluster.clone())
            .or_insert_with(|| ClusterJson {
                cluster: p.cluster.clone(),
                postmaster_pid: None,
                version: pg_version(&p.cluster),
                processes: 0,
                shared_memory: shared_memory_of(&s.snapshot, &p.cluster),
            });
        c.processes += 1;
        if p.backend_type == "postmaster" && !p.exited_during_session {
            c.postmaster_pid = Some(p.pid);
        }
    }

    let mut report = Report {
        schema_version: SCHEMA_VERSION,
        pgpreempt_version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: info.started_at.clone(),
        duration_seconds: info.duration_seconds,
        kernel: KernelJson {
            release: s.snapshot.kernel.release.clone(),
            preempt_model: s.snapshot.kernel.preempt.model.clone(),
            preempt_model_source: s.snapshot.kernel.preempt.source.clone(),
            preempt_dynamic: s.snapshot.kernel.preempt.dynamic,
            rseq_slice_extension: s.snapshot.kernel.rseq_slice,
        },
        online_cpus: s.snapshot.online_cpus,
        selection: info.selection.clone(),
        clusters: clusters.into_values().collect(),
        totals: Figures::from_counters(&total.counters),
        backend_types,
        processes,
        histograms,
        spin_sites,
        dropped_events: DIAG_REASONS
            .iter()
            .map(|&(r, i)| (r.to_string(), s.snapshot.diag[i]))
            .collect(),
        uprobe_errors: s.snapshot.uprobe_errors,
        preempted_by: preempted_by(&s.snapshot.preemptors, &info.filter),
        findings: vec![],
    };
    report.findings = crate::diagnosis::diagnose(&report).findings;
    report
}

/// A report from a snapshot's totals alone, with no per-process rows: the
/// daemon's window (a [`snapshot::delta`] of two snapshots) is one. Its
/// clusters come from the label sets and the shared memory segments
/// found, so the diagnosis sees huge pages as a trace session does.
pub fn build_totals(snapshot: &Snapshot, info: &SessionInfo) -> Report {
    let s = Sample {
        snapshot: snapshot.clone(),
        processes: vec![],
    };
    let mut report = build(&s, info);
    let mut clusters: BTreeMap<String, ClusterJson> = BTreeMap::new();
    for (l, _) in &snapshot.groups {
        if l.cluster == UNASSIGNED_CLUSTER
            || l.cluster == "overflow"
            || !info.filter.keeps(&l.cluster)
            || clusters.contains_key(&l.cluster)
        {
            continue;
        }
        let processes = snapshot
            .tracked
            .iter()
            .filter(|(t, _)| t.cluster == l.cluster)
            .map(|(_, n)| *n)
            .sum();
        clusters.insert(
            l.cluster.clone(),
            ClusterJson {
                cluster: l.cluster.clone(),
                postmaster_pid: None,
                version: pg_version(&l.cluster),
                processes,
                shared_memory: shared_memory_of(snapshot, &l.cluster),
            },
        );
    }
    report.clusters = clusters.into_values().collect();
    report.findings = crate::diagnosis::diagnose(&report).findings;
    report
}

/// A cluster's main shared memory segment, as the report shows it.
fn shared_memory_of(s: &Snapshot, cluster: &str) -> Option<SharedMemoryJson> {
    s.shared_memory
        .iter()
        .find(|m| m.cluster == cluster)
        .map(|m| SharedMemoryJson {
            page_size_bytes: m.page_size,
            huge_pages: m.huge_pages.to_string(),
            size_bytes: m.size_bytes,
        })
}

/// Preemptors of the selected clusters, by name, most first.
fn preempted_by(all: &[Preemptor], filter: &Filter) -> Vec<PreemptorJson> {
    let mut by_comm: BTreeMap<String, u64> = BTreeMap::new();
    for p in all
        .iter()
        .filter(|p| p.cluster.is_empty() || filter.keeps(&p.cluster))
    {
        *by_comm.entry(p.comm.clone()).or_default() += p.count;
    }
    let mut v: Vec<PreemptorJson> = by_comm
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(comm, preemptions)| PreemptorJson { comm, preemptions })
        .collect();
    v.sort_by(|a, b| b.preemptions.cmp(&a.preemptions).then(a.comm.cmp(&b.comm)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::stats::{counter, diag};

    use crate::{
        kernel::kernel_info::{KernelInfo, PreemptModel},
        postgres::spin_sites::SpinSite,
    };

    fn class(cluster: &str, backend_type: &'static str) -> Classified {
        Classified {
            cluster: cluster.into(),
            backend_type,
            activity: "idle".into(),
            settled: true,
        }
    }

    fn counters(invol: u64, preempted_ns: u64) -> Counters {
        let mut c = Counters::zeroed();
        c.v[counter::INVOLUNTARY_SWITCHES] = invol;
        c.v[counter::PREEMPTED_NS] = preempted_ns;
        c
    }

    fn group(invol: u64, hist_bucket: usize) -> GroupTotals {
        let mut g = snapshot::zero_group();
        g.counters = counters(invol, invol * 1000);
        g.hists[hist_kind::PREEMPTED].buckets[hist_bucket] = invol;
        g.hists[hist_kind::PREEMPTED].sum_ns = invol * 1000;
        g.counters.v[counter::FAULTS_MAIN_SHARED] = 2 * invol;
        g.hists[hist_kind::RECLAIM_MEMCG].buckets[4] = 1;
        g
    }

    fn labels(c: &str, t: &str) -> Labels {
        Labels {
            cluster: c.into(),
            backend_type: t.into(),
        }
    }

    fn sample() -> Sample {
        let mut diag_counts = [0; diag::NUM];
        diag_counts[diag::EVENTS_LOST] = 2;
        let spin = |c: &str, site: &str, n: u64| {
            let mut hist = empty_hist();
            hist.buckets[4] = n;
            hist.sum_ns = n * 10_000;
            SpinSite {
                cluster: c.into(),
                site: site.into(),
                delays: 1,
                hist,
            }
        };
        Sample {
            snapshot: Snapshot {
                groups: vec![
                    (labels(UNASSIGNED_CLUSTER, "other"), group(5, 1)),
                    (labels("/a", "client backend"), group(100, 3)),
                    (labels("/a", "postmaster"), group(1, 2)),
                    (labels("/b", "client backend"), group(1000, 5)),
                ],
                tracked: vec![],
                kernel: KernelInfo {
                    release: "6.18.0".into(),
                    preempt: PreemptModel {
                        model: "none".into(),
                        source: "/proc/config.gz".into(),
                        dynamic: None,
                    },
                    rseq_slice: None,
                },
                programs: vec![],
                diag: diag_counts,
                spin_sites: vec![
                    spin("/a", "XLogFlush", 3),
                    spin("/b", "StrategyGetBuffer", 7),
                ],
                uprobe_errors: 1,
                shared_memory: vec![crate::agent::SharedMemory {
                    cluster: "/a".into(),
                    page_size: 2 << 20,
                    huge_pages: "on",
                    size_bytes: 128 << 20,
                }],
                preemptors: vec![
                    crate::agent::Preemptor {
                        cluster: "/a".into(),
                        comm: "pgbench".into(),
                        count: 5,
                    },
                    crate::agent::Preemptor {
                        cluster: "/b".into(),
                        comm: "pgbench".into(),
                        count: 4,
                    },
                    crate::agent::Preemptor {
                        cluster: "/b".into(),
                        comm: "kworker".into(),
                        count: 1,
                    },
                    crate::agent::Preemptor {
                        cluster: String::new(),
                        comm: "(others)".into(),
                        count: 0,
                    },
                ],
                online_cpus: 2,
                starts: Default::default(),
            },
            processes: vec![
                ProcessSample {
                    tgid: 10,
                    class: class("/a", "postmaster"),
                    counters: None,
                    exited: false,
                    started_during_session: false,
                },
                ProcessSample {
                    tgid: 11,
                    class: class("/a", "client backend"),
                    counters: Some(counters(60, 6000)),
                    exited: false,
                    started_during_session: false,
                },
                ProcessSample {
                    tgid: 12,
                    class: class("/a", "client backend"),
                    counters: Some(counters(40, 4000)),
                    exited: true,
                    started_during_session: true,
                },
                ProcessSample {
                    tgid: 20,
                    class: class("/b", "client backend"),
                    counters: Some(counters(1000, 1)),
                    exited: false,
                    started_during_session: false,
                },
            ],
        }
    }

    fn info(cluster: Option<&str>) -> SessionInfo {
        SessionInfo {
            started_at: "2026-11-24T05:00:00Z".into(),
            duration_seconds: 10.0,
            selection: Selection::default(),
            filter: Filter {
                cluster: cluster.map(String::from),
            },
        }
    }

    #[test]
    fn a_cluster_filter_keeps_only_that_cluster() {
        let r = build(&sample(), &info(Some("/a")));
        assert_eq!(
            r.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        // Totals are the cluster's groups: not /b, not the unattributed group.
        assert_eq!(r.totals.involuntary_switches, 101);
        assert_eq!(r.backend_types.len(), 2);
        let cb = r
            .backend_types
            .iter()
            .find(|b| b.backend_type == "client backend")
            .unwrap();
        assert_eq!(cb.processes, 2);
        assert_eq!(cb.figures.involuntary_switches, 100);
        assert_eq!(
            cb.histogram("preempted_seconds").unwrap().counts[3],
            100,
            "per-type histograms come from the group"
        );
        assert_eq!(r.clusters.len(), 1);
        assert_eq!(r.clusters[0].postmaster_pid, Some(10));
        assert_eq!(r.clusters[0].processes, 3);
        assert_eq!(
            r.clusters[0].shared_memory,
            Some(SharedMemoryJson {
                page_size_bytes: 2 << 20,
                huge_pages: "on".into(),
                size_bytes: 128 << 20,
            })
        );
        assert_eq!(cb.figures.page_faults_main_shared, 200);
        assert_eq!(r.totals.page_faults_main_shared, 202);
        assert_eq!(
            r.histogram("reclaim_memcg_stall_seconds").unwrap().count(),
            2
        );
        // Every group histogram, the memory ones included, per type and in all.
        for (name, _) in GROUP_HISTOGRAMS {
            assert!(cb.histogram(name).is_some(), "{name} per type");
            assert!(r.histogram(name).is_some(), "{name} in all");
        }
        assert_eq!(r.spin_sites.len(), 1);
        assert_eq!(r.spin_sites[0].count, 3);
        assert!((r.spin_sites[0].seconds - 30e-6).abs() < 1e-12);
        assert_eq!(r.histogram("spin_seconds").unwrap().count(), 3);
        assert_eq!(r.histogram("preempted_seconds").unwrap().count(), 101);
        assert_eq!(r.dropped_events["process_events_lost"], 2);
        assert_eq!(r.uprobe_errors, 1);
    }

    #[test]
    fn processes_that_lived_part_of_the_session_are_reported() {
        let r = build(&sample(), &info(Some("/a")));
        let gone = r.processes.iter().find(|p| p.pid == 12).unwrap();
        assert!(gone.exited_during_session && gone.started_during_session);
        assert_eq!(gone.figures.involuntary_switches, 40);
        assert!((gone.figures.preempted_seconds - 4e-6).abs() < 1e-15);
        // A process that never ran is listed with zeros, not dropped.
        let pm = r.processes.iter().find(|p| p.pid == 10).unwrap();
        assert_eq!(pm.figures, Figures::default());
    }

    #[test]
    fn without_a_filter_everything_counts() {
        let r = build(&sample(), &info(None));
        assert_eq!(r.processes.len(), 4);
        assert_eq!(r.totals.involuntary_switches, 5 + 100 + 1 + 1000);
        assert_eq!(r.clusters.len(), 2);
        assert_eq!(r.clusters[1].shared_memory, None, "/b's segment not found");
        assert_eq!(r.spin_sites.len(), 2);
        assert!(r
            .backend_types
            .iter()
            .any(|b| b.cluster == UNASSIGNED_CLUSTER && b.processes == 0));
    }
    #[test]
    fn a_report_from_totals_alone_has_clusters_but_no_processes() {
        let mut snap = sample().snapshot;
        snap.tracked = vec![(labels("/a", "client backend"), 3)];
        let r = build_totals(&snap, &info(None));
        assert!(r.processes.is_empty());
        assert_eq!(r.totals.involuntary_switches, 5 + 100 + 1 + 1000);
        let names: Vec<&str> = r.clusters.iter().map(|c| c.cluster.as_str()).collect();
        assert_eq!(names, ["/a", "/b"], "not the unattributed group");
        assert_eq!(r.clusters[0].processes, 3);
        assert_eq!(
            r.clusters[0]
                .shared_memory
                .as_ref()
                .map(|m| m.huge_pages.as_str()),
            Some("on")
        );
        assert!(!r.findings.is_empty(), "diagnosed");
        let only_b = build_totals(&snap, &info(Some("/b")));
        assert_eq!(only_b.clusters.len(), 1);
        assert_eq!(only_b.totals.involuntary_switches, 1000);
    }
}
