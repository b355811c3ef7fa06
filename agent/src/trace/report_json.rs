//! The trace session report as JSON: what `pgpreempt trace --json FILE`
//! writes and `pgpreempt diff` reads. Every field is documented in the
//! README ("Trace sessions"); `*_seconds` fields are sums over the session.
use std::{collections::BTreeMap, path::Path};

use agent_common::{
    hist::{bucket_upper_ns, FINITE_BUCKETS, HIST_BUCKETS},
    stats::{counter, Counters, Hist},
};
use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning or is removed (adding fields is fine).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub pgpreempt_version: String,
    /// When the programs were attached, RFC 3339 UTC.
    pub started_at: String,
    /// From attach to the last read of the counters.
    pub duration_seconds: f64,
    pub kernel: KernelJson,
    /// CPUs online on the host (0 in reports written before it was added).
    #[serde(default)]
    pub online_cpus: u32,
    pub selection: Selection,
    pub clusters: Vec<ClusterJson>,
    /// Every traced event of the selection, including processes that could
    /// not be listed one by one (see `processes`).
    pub totals: Figures,
    pub backend_types: Vec<BackendTypeJson>,
    pub processes: Vec<ProcessJson>,
    pub histograms: Vec<HistogramJson>,
    pub spin_sites: Vec<SpinSiteJson>,
    /// Events the kernel programs could not record, by reason (zero normally).
    pub dropped_events: BTreeMap<String, u64>,
    /// PostgreSQL binaries whose `s_lock` could not be probed.
    pub uprobe_errors: u64,
    /// Who took the CPU: the tasks that ran next when a selected process
    /// was switched out involuntarily, by command name (`kworker/3:1` as
    /// `kworker`), most first.
    #[serde(default)]
    pub preempted_by: Vec<PreemptorJson>,
    /// The diagnosis of the session (README, "Diagnosing an incident"):
    /// significant findings by share, then context. Empty in reports
    /// written before it was added.
    #[serde(default)]
    pub findings: Vec<crate::diagnosis::Finding>,
}

/// The tasks of one command name that took the CPU from selected processes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreemptorJson {
    /// The command name up to its first `/`; `(others)` for names the
    /// kernel's bounded map had no room for.
    pub comm: String,
    /// Involuntary switch-outs of selected processes where it ran next.
    pub preemptions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelJson {
    pub release: String,
    /// none, voluntary, full, lazy, rt or unknown.
    pub preempt_model: String,
    pub preempt_model_source: String,
    /// The model can be chosen at boot (`preempt=`, PREEMPT_DYNAMIC); null
    /// if not known.
    #[serde(default)]
    pub preempt_dynamic: Option<bool>,
    /// The RSEQ time-slice extension is in this kernel and enabled; null if
    /// not known.
    #[serde(default)]
    pub rseq_slice_extension: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    pub comms: Vec<String>,
    pub pids: Vec<u32>,
    /// `--cluster`, as a canonical data directory.
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterJson {
    /// The cluster label: the data directory, or `pid:<parent>`.
    pub cluster: String,
    pub postmaster_pid: Option<u32>,
    /// Major version from the data directory's `PG_VERSION`, if readable.
    pub version: Option<String>,
    /// Processes of this cluster in `processes`.
    pub processes: u64,
    /// Its main shared memory segment, as the agent found it in the
    /// postmaster's smaps (null if not found).
    #[serde(default)]
    pub shared_memory: Option<SharedMemoryJson>,
}

/// A cluster's main shared memory segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedMemoryJson {
    /// 4096, or the huge page size.
    pub page_size_bytes: u64,
    /// `on` (hugetlb), `partial` (4 kB pages, some on transparent huge
    /// pages) or `off`.
    pub huge_pages: String,
    pub size_bytes: u64,
}

/// The figures kept per process, per backend type and in total. Counts are
/// events; `*_seconds` are sums of durations over the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Time on a CPU (the growth of schedstat's `sum_exec_runtime` between
    /// switch-outs). Added in schema version 1: zero in older reports.
    #[serde(default)]
    pub on_cpu_seconds: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// Completed preemptions (involuntary switch-out until running again).
    pub preemptions: u64,
    pub preempted_seconds: f64,
    pub wakeups: u64,
    pub wakeup_latency_seconds: f64,
    /// The `wakeups` by cause (README, "Idle wake-ups"): a timer expiry
    /// (the task's own timeout), a user process, and the rest. Added in
    /// schema version 1: zero in older reports.
    #[serde(default)]
    pub wakeups_timer: u64,
    #[serde(default)]
    pub wakeups_process: u64,
    #[serde(default)]
    pub wakeups_other: u64,
    pub futex_waits: u64,
    pub futex_wait_seconds: f64,
    pub futex_wakes: u64,
    pub holder_preemptions: u64,
    pub holder_preempted_seconds: f64,
    pub waiter_delay_seconds: f64,
    pub holder_history_overflows: u64,
    pub spins: u64,
    pub spin_seconds: f64,
    pub spin_delays: u64,
    pub spinner_preemptions: u64,
    // The memory side (README, "Memory stalls"). Added in schema version 1:
    // a report written before them reads as zeros.
    /// Page faults by region: the cluster's main shared memory segment,
    /// other shared mappings, private anonymous memory, private files.
    #[serde(default)]
    pub page_faults_main_shared: u64,
    #[serde(default)]
    pub page_faults_other_shared: u64,
    #[serde(default)]
    pub page_faults_private: u64,
    #[serde(default)]
    pub page_faults_file: u64,
    /// Of those, faults on hugetlb mappings.
    #[serde(default)]
    pub huge_page_faults: u64,
    /// Faults taken while another process of the cluster was in `s_lock`.
    #[serde(default)]
    pub faults_while_others_spin: u64,
    /// Faults taken while the process itself was in `s_lock`.
    #[serde(default)]
    pub faults_while_spinning: u64,
    /// Involuntary switch-outs while another process of the cluster was in
    /// `s_lock`, and their off-CPU time.
    #[serde(default)]
    pub preemptions_while_others_spin: u64,
    #[serde(default)]
    pub preempted_while_others_spin_seconds: f64,
    /// `mmap_lock` acquisitions (waits through the locking path), read and
    /// write, and their time.
    #[serde(default)]
    pub mmap_lock_read_waits: u64,
    #[serde(default)]
    pub mmap_lock_read_wait_seconds: f64,
    #[serde(default)]
    pub mmap_lock_write_waits: u64,
    #[serde(default)]
    pub mmap_lock_write_wait_seconds: f64,
    /// Direct reclaim, memory-cgroup reclaim and compaction in the task's
    /// own context, and their time.
    #[serde(default)]
    pub reclaim_direct_stalls: u64,
    #[serde(default)]
    pub reclaim_direct_stall_seconds: f64,
    #[serde(default)]
    pub reclaim_memcg_stalls: u64,
    #[serde(default)]
    pub reclaim_memcg_stall_seconds: f64,
    #[serde(default)]
    pub compaction_stalls: u64,
    #[serde(default)]
    pub compaction_stall_seconds: f64,
    /// Moves to another NUMA node, and pages migrated in the task's context.
    #[serde(default)]
    pub numa_migrations: u64,
    #[serde(default)]
    pub pages_migrated: u64,
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Figures {
    pub fn from_counters(c: &Counters) -> Figures {
        let v = |i: usize| c.v[i];
        let (read_waits, write_waits) = crate::kernel::snapshot::mmap_lock_waits(c);
        Figures {
            on_cpu_seconds: secs(v(counter::ON_CPU_NS)),
            voluntary_switches: v(counter::VOLUNTARY_SWITCHES),
            involuntary_switches: v(counter::INVOLUNTARY_SWITCHES),
            preemptions: v(counter::PREEMPTIONS),
            preempted_seconds: secs(v(counter::PREEMPTED_NS)),
            wakeups: v(counter::WAKEUPS),
            wakeup_latency_seconds: secs(v(counter::WAKEUP_LATENCY_NS)),
            wakeups_timer: v(counter::WAKEUPS_TIMER),
            wakeups_process: v(counter::WAKEUPS_PROCESS),
            wakeups_other: v(counter::WAKEUPS)
                .saturating_sub(v(counter::WAKEUPS_TIMER) + v(counter::WAKEUPS_PROCESS)),
            futex_waits: v(counter::FUTEX_WAITS),
            futex_wait_seconds: secs(v(counter::FUTEX_WAIT_NS)),
            futex_wakes: v(counter::FUTEX_WAKES),
            holder_preemptions: v(counter::HOLDER_PREEMPTIONS),
            holder_preempted_seconds: secs(v(counter::HOLDER_PREEMPTED_NS)),
            waiter_delay_seconds: secs(v(counter::WAITER_DELAY_NS)),
            holder_history_overflows: v(counter::HISTORY_OVERFLOWS),
            spins: v(counter::SPINS),
            spin_seconds: secs(v(counter::SPIN_NS)),
            spin_delays: v(counter::SPIN_DELAYS),
            spinner_preemptions: v(counter::SPINNER_PREEMPTIONS),
            page_faults_main_shared: v(counter::FAULTS_MAIN_SHARED),
            page_faults_other_shared: v(counter::FAULTS_OTHER_SHARED),
            page_faults_private: v(counter::FAULTS_PRIVATE),
            page_faults_file: v(counter::FAULTS_FILE),
            huge_page_faults: v(counter::FAULTS_HUGETLB),
            faults_while_others_spin: v(counter::FAULTS_WHILE_OTHERS_SPIN),
            faults_while_spinning: v(counter::FAULTS_WHILE_SPINNING),
            preemptions_while_others_spin: v(counter::PREEMPTIONS_WHILE_OTHERS_SPIN),
            preempted_while_others_spin_seconds: secs(v(counter::PREEMPTED_NS_WHILE_OTHERS_SPIN)),
            mmap_lock_read_waits: read_waits,
            mmap_lock_read_wait_seconds: secs(v(counter::MMAP_LOCK_READ_WAIT_NS)),
            mmap_lock_write_waits: write_waits,
            mmap_lock_write_wait_seconds: secs(v(counter::MMAP_LOCK_WRITE_WAIT_NS)),
            reclaim_direct_stalls: v(counter::RECLAIM_DIRECT),
            reclaim_direct_stall_seconds: secs(v(counter::RECLAIM_DIRECT_NS)),
            reclaim_memcg_stalls: v(counter::RECLAIM_MEMCG),
            reclaim_memcg_stall_seconds: secs(v(counter::RECLAIM_MEMCG_NS)),
            compaction_stalls: v(counter::COMPACTIONS),
            compaction_stall_seconds: secs(v(counter::COMPACTION_NS)),
            numa_migrations: v(counter::NUMA_MIGRATIONS),
            pages_migrated: v(counter::PAGES_MIGRATED),
        }
    }

    /// Page faults in every region.
    pub fn page_faults(&self) -> u64 {
        self.page_faults_main_shared
            + self.page_faults_other_shared
            + self.page_faults_private
            + self.page_faults_file
    }

    /// Whether any memory figure is non-zero.
    pub fn has_memory(&self) -> bool {
        self.page_faults() > 0
            || self.huge_page_faults > 0
            || self.preemptions_while_others_spin > 0
            || self.mmap_lock_read_waits + self.mmap_lock_write_waits > 0
            || self.reclaim_direct_stalls + self.reclaim_memcg_stalls + self.compaction_stalls > 0
            || self.numa_migrations + self.pages_migrated > 0
    }

    /// Run-queue time: preempted plus wakeup latency (schedstat's run_delay).
    pub fn run_queue_seconds(&self) -> f64 {
        self.preempted_seconds + self.wakeup_latency_seconds
    }

    /// The time the processes were busy or waiting for something they
    /// needed: on a CPU, waiting for one, or waiting for a lock (futex).
    /// The denominator of every share in the diagnosis. Idle waits (for a
    /// client, a latch, I/O) are not in it.
    pub fn active_seconds(&self) -> f64 {
        self.on_cpu_seconds + self.run_queue_seconds() + self.futex_wait_seconds
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendTypeJson {
    pub cluster: String,
    pub backend_type: String,
    /// Processes of this type in `processes`.
    pub processes: u64,
    /// Processes of this type forked during the session (README,
    /// "Short-lived processes"), and how many of them exited, with their
    /// mean lifetime (fork to exit).
    #[serde(default)]
    pub process_starts: u64,
    #[serde(default)]
    pub process_exits: u64,
    #[serde(default)]
    pub mean_lifetime_seconds: f64,
    #[serde(flatten)]
    pub figures: Figures,
    /// This type's `preempted_seconds`, `wakeup_latency_seconds` and
    /// `futex_wait_seconds` histograms.
    pub histograms: Vec<HistogramJson>,
}

impl BackendTypeJson {
    pub fn histogram(&self, name: &str) -> Option<&HistogramJson> {
        self.histograms.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessJson {
    pub pid: u32,
    pub cluster: String,
    pub backend_type: String,
    /// The activity in its process title when last read.
    pub activity: String,
    /// Not running yet when the session started.
    pub started_during_session: bool,
    /// Exited before the session ended (its final counters are kept).
    pub exited_during_session: bool,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A log2 histogram: `counts[i]` observations fell in
/// `(upper_bounds_seconds[i-1], upper_bounds_seconds[i]]`; the last bound
/// is null (+Inf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramJson {
    pub name: String,
    pub upper_bounds_seconds: Vec<Option<f64>>,
    pub counts: Vec<u64>,
    pub sum_seconds: f64,
}

impl HistogramJson {
    pub fn from_hist(name: &str, h: &Hist) -> HistogramJson {
        HistogramJson {
            name: name.to_string(),
            upper_bounds_seconds: (0..HIST_BUCKETS)
                .map(|i| (i < FINITE_BUCKETS).then(|| secs(bucket_upper_ns(i))))
                .collect(),
            counts: h.buckets.to_vec(),
            sum_seconds: secs(h.sum_ns),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (None if empty;
    /// `Some(f64::INFINITY)` in the overflow bucket).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        quantile_bound(&self.upper_bounds_seconds, &self.counts, q)
    }
}

/// The upper bound of the bucket that holds quantile `q` of `counts`.
pub fn quantile_bound(bounds: &[Option<f64>], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let want = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, c) in bounds.iter().zip(counts) {
        seen += c;
        if seen >= want {
            return Some(b.unwrap_or(f64::INFINITY));
        }
    }
    Some(f64::INFINITY)
}

/// Contended spinlock acquisitions (`s_lock` calls) at one call site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpinSiteJson {
    pub cluster: String,
    pub site: String,
    pub count: u64,
    pub seconds: f64,
    /// Sleeps taken while spinning.
    pub delays: u64,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pgpreempt trace report: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is a report of schema version {found}; this pgpreempt reads version {SCHEMA_VERSION}")]
    Version { path: String, found: u32 },
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    pub fn from_json(text: &str) -> Result<Report, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn read(path: &Path) -> Result<Report, ReadError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
            path: shown.clone(),
            source,
        })?;
        let r = Report::from_json(&text).map_err(|source| ReadError::Parse {
            path: shown.clone(),
            source,
        })?;
        if r.schema_version != SCHEMA_VERSION {
            return Err(ReadError::Version {
                path: shown,
                found: r.schema_version,
            });
        }
        Ok(r)
    }

    pub fn histogram(&self, name: &str) -> Option<&HistogramJson> {
        self.histograms.iter().find(|h| h.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small report with every kind of entry, for the tests here and in diff.
    pub(crate) fn sample(duration: f64, scale: f64) -> Report {
        let mut c = Counters::zeroed();
        for (i, v) in c.v.iter_mut().enumerate().take(counter::USED) {
            *v = ((i as u64 + 1) * 1_000_003) * scale as u64;
        }
        let f = Figures::from_counters(&c);
        let mut h = Hist {
            buckets: [0; HIST_BUCKETS],
            sum_ns: 123_456_789,
        };
        h.buckets[3] = 10;
        h.buckets[HIST_BUCKETS - 1] = 1;
        Report {
            schema_version: SCHEMA_VERSION,
            pgpreempt_version: "0.1.0".into(),
            started_at: "2026-11-24T05:00:00Z".into(),
            duration_seconds: duration,
            kernel: KernelJson {
                release: "6.18.0".into(),
                preempt_model: "none".into(),
                preempt_model_source: "/proc/config.gz".into(),
                preempt_dynamic: Some(false),
                rseq_slice_extension: None,
            },
            online_cpus: 2,
            selection: Selection {
                comms: vec!["postgres".into()],
                pids: vec![],
                cluster: Some("/data".into()),
            },
            clusters: vec![ClusterJson {
                cluster: "/data".into(),
                postmaster_pid: Some(10),
                version: Some("15".into()),
                processes: 1,
                shared_memory: Some(SharedMemoryJson {
                    page_size_bytes: 4096,
                    huge_pages: "off".into(),
                    size_bytes: 143 << 20,
                }),
            }],
            totals: f,
            backend_types: vec![BackendTypeJson {
                cluster: "/data".into(),
                backend_type: "client backend".into(),
                processes: 1,
                process_starts: 1,
                process_exits: 1,
                mean_lifetime_seconds: 0.004,
                figures: f,
                histograms: vec![HistogramJson::from_hist("preempted_seconds", &h)],
            }],
            processes: vec![ProcessJson {
                pid: 11,
                cluster: "/data".into(),
                backend_type: "client backend".into(),
                activity: "UPDATE".into(),
                started_during_session: true,
                exited_during_session: false,
                figures: f,
            }],
            histograms: vec![HistogramJson::from_hist("preempted_seconds", &h)],
            spin_sites: vec![SpinSiteJson {
                cluster: "/data".into(),
                site: "StrategyGetBuffer".into(),
                count: 3,
                seconds: 0.000_123_4,
                delays: 1,
            }],
            dropped_events: [("task_map_full".to_string(), 0)].into_iter().collect(),
            uprobe_errors: 0,
            preempted_by: vec![PreemptorJson {
                comm: "pgbench".into(),
                preemptions: 7,
            }],
            findings: vec![],
        }
    }

    #[test]
    fn round_trips_through_json_exactly() {
        let r = sample(10.25, 1.0);
        let text = r.to_json();
        let back = Report::from_json(&text).unwrap();
        assert_eq!(back, r);
        // The schema the README promises, by name.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["duration_seconds"], 10.25);
        assert_eq!(v["kernel"]["release"], "6.18.0");
        assert_eq!(v["kernel"]["preempt_model"], "none");
        let p = &v["processes"][0];
        for k in [
            "pid",
            "cluster",
            "backend_type",
            "voluntary_switches",
            "involuntary_switches",
            "preempted_seconds",
            "wakeups",
            "wakeup_latency_seconds",
            "wakeups_timer",
            "wakeups_process",
            "wakeups_other",
            "futex_waits",
            "futex_wait_seconds",
            "holder_preemptions",
            "holder_preempted_seconds",
            "waiter_delay_seconds",
            "spins",
            "spin_seconds",
        ] {
            assert!(!p[k].is_null(), "process field {k} missing");
        }
        for k in [
            "page_faults_main_shared",
            "page_faults_other_shared",
            "page_faults_private",
            "page_faults_file",
            "huge_page_faults",
            "faults_while_others_spin",
            "faults_while_spinning",
            "preemptions_while_others_spin",
            "preempted_while_others_spin_seconds",
            "mmap_lock_read_waits",
            "mmap_lock_read_wait_seconds",
            "mmap_lock_write_waits",
            "mmap_lock_write_wait_seconds",
            "reclaim_direct_stalls",
            "reclaim_direct_stall_seconds",
            "reclaim_memcg_stalls",
            "reclaim_memcg_stall_seconds",
            "compaction_stalls",
            "compaction_stall_seconds",
            "numa_migrations",
            "pages_migrated",
        ] {
            assert!(!p[k].is_null(), "process field {k} missing");
            assert!(!v["totals"][k].is_null(), "totals field {k} missing");
            assert!(
                !v["backend_types"][0][k].is_null(),
                "backend type field {k} missing"
            );
        }
        // mmap_lock acquisitions are the fast waits plus the slow ones.
        assert_eq!(
            p["mmap_lock_read_waits"],
            (counter::MMAP_LOCK_READ_FAST as u64 + 1 + counter::MMAP_LOCK_READ_SLOW as u64 + 1)
                * 1_000_003
        );
        let sm = &v["clusters"][0]["shared_memory"];
        assert_eq!(sm["page_size_bytes"], 4096);
        assert_eq!(sm["huge_pages"], "off");
        assert_eq!(p["involuntary_switches"], 2_000_006);
        assert!((p["preempted_seconds"].as_f64().unwrap() - 0.004000012).abs() < 1e-12);
        let h = &v["histograms"][0];
        assert_eq!(h["name"], "preempted_seconds");
        assert_eq!(h["upper_bounds_seconds"][0], 1e-6);
        assert!(h["upper_bounds_seconds"][HIST_BUCKETS - 1].is_null());
        assert_eq!(h["counts"][3], 10);
        for k in ["cluster", "site", "count", "seconds", "delays"] {
            assert!(!v["spin_sites"][0][k].is_null(), "spin site field {k}");
        }
    }

    /// The memory fields of the figures (added in schema version 1).
    pub(crate) fn memory_fields() -> Vec<String> {
        let memory: Vec<String> = serde_json::to_value(Figures::default())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| {
                k.contains("fault")
                    || k.contains("mmap_lock")
                    || k.contains("stall")
                    || k.contains("while_others_spin")
                    || k.contains("migrat")
            })
            .cloned()
            .collect();
        assert_eq!(memory.len(), 21, "{memory:?}");
        memory
    }

    #[test]
    fn reports_written_before_the_memory_fields_still_read() {
        let r = sample(10.0, 1.0);
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        let memory = memory_fields();
        let strip = |o: &mut serde_json::Value| {
            let o = o.as_object_mut().unwrap();
            for k in &memory {
                o.remove(k);
            }
        };
        strip(&mut v["totals"]);
        strip(&mut v["processes"][0]);
        strip(&mut v["backend_types"][0]);
        v["clusters"][0]
            .as_object_mut()
            .unwrap()
            .remove("shared_memory");
        let old = Report::from_json(&v.to_string()).unwrap();
        assert_eq!(old.totals.page_faults(), 0);
        assert_eq!(old.processes[0].figures.mmap_lock_read_wait_seconds, 0.0);
        assert_eq!(old.totals.spins, r.totals.spins);
        assert_eq!(old.clusters[0].shared_memory, None);
    }

    #[test]
    fn reading_reports_bad_files_in_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.json");
        let e = Report::read(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read ") && e.contains("missing.json"),
            "{e}"
        );
        let bad = tmp.path().join("bad.json");
        std::fs::write(&bad, "{\"duration_seconds\": 3}").unwrap();
        let e = Report::read(&bad).unwrap_err().to_string();
        assert!(e.contains("is not a pgpreempt trace report"), "{e}");
        assert!(!e.contains('\n'));
        let mut r = sample(1.0, 1.0);
        r.schema_version = 99;
        let old = tmp.path().join("v99.json");
        std::fs::write(&old, r.to_json()).unwrap();
        let e = Report::read(&old).unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn quantile_bounds() {
        let b = [Some(1.0), Some(2.0), None];
        assert_eq!(quantile_bound(&b, &[0, 0, 0], 0.99), None);
        assert_eq!(quantile_bound(&b, &[99, 1, 0], 0.99), Some(1.0));
        assert_eq!(quantile_bound(&b, &[98, 2, 0], 0.99), Some(2.0));
        assert_eq!(quantile_bound(&b, &[1, 0, 1], 0.99), Some(f64::INFINITY));
        assert_eq!(quantile_bound(&b, &[0, 5, 0], 0.5), Some(2.0));
    }
}
