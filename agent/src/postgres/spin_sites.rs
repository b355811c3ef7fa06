//! Spinlock call sites as metric labels: the kernel keys sites by the
//! address of their name; here they become `site` label values, capped per
//! cluster so that a bad actor cannot blow up the series count. A site keeps
//! its label once admitted, so its counters never move to `other`.
use std::collections::{BTreeMap, HashMap};

use agent_common::stats::{Hist, SiteName, SpinStats};

use crate::kernel::snapshot::add_hist;

/// Contended spinlock acquisitions at one call site of one cluster.
#[derive(Debug, Clone)]
pub struct SpinSite {
    pub cluster: String,
    pub site: String,
    pub delays: u64,
    pub hist: Hist,
}

/// Distinct site labels per cluster; later sites are folded into `other`.
pub const MAX_SITES_PER_CLUSTER: usize = 32;
pub const OTHER: &str = "other";

#[derive(Default, Debug)]
pub struct SiteLabels {
    admitted: HashMap<String, Vec<String>>,
}

impl SiteLabels {
    /// The label for `name` in `cluster`.
    pub fn label(&mut self, cluster: &str, name: &str) -> String {
        let names = self.admitted.entry(cluster.to_string()).or_default();
        if names.iter().any(|n| n == name) {
            return name.to_string();
        }
        if names.len() < MAX_SITES_PER_CLUSTER && name != OTHER {
            names.push(name.to_string());
            return name.to_string();
        }
        OTHER.to_string()
    }
}

/// A site name as the kernel keeps it (`SPIN_SITE_NAMES`): up to its NUL;
/// `None` if empty.
pub fn site_name(name: &SiteName) -> Option<String> {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    (end > 0).then(|| String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Reads a NUL-terminated site name at `addr` in process `pid`'s memory
/// (this faults the page in, which the kernel probe cannot do).
pub fn read_name_from(pid: u32, addr: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut buf = [0u8; agent_common::stats::SITE_NAME_LEN];
    let n = f.read_at(&mut buf, addr).ok()?;
    let end = buf[..n].iter().position(|&b| b == 0)?;
    (end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Folds per-site, per-CPU values into labelled sites (sites that share a
/// label, such as `other` or one name at two addresses, are added up).
/// Input: (cluster, site name, per-CPU values).
pub fn fold(
    labels: &mut SiteLabels,
    sites: impl IntoIterator<Item = (String, String, Vec<SpinStats>)>,
) -> Vec<SpinSite> {
    let mut out: BTreeMap<(String, String), SpinSite> = BTreeMap::new();
    for (cluster, name, per_cpu) in sites {
        let label = labels.label(&cluster, &name);
        let e = out
            .entry((cluster.clone(), label.clone()))
            .or_insert_with(|| SpinSite {
                cluster,
                site: label,
                delays: 0,
                hist: Hist {
                    buckets: [0; agent_common::hist::HIST_BUCKETS],
                    sum_ns: 0,
                },
            });
        for v in &per_cpu {
            e.delays += v.delays;
            add_hist(&mut e.hist, &v.hist);
        }
    }
    out.into_values().collect()
}

/// What the spinlock taken at a call site protects, and what to try when
/// it is contended (PostgreSQL 13-17 function names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meaning {
    pub protects: &'static str,
    pub try_: &'static str,
}

/// The meaning of the spinlock at `site` (a function name).
pub fn meaning(site: &str) -> Meaning {
    match site {
        "StrategyGetBuffer" | "StrategyFreeBuffer" | "StrategySyncStart" | "ClockSweepTick"
        | "StrategyNotifyBgWriter" => Meaning {
            protects: "the buffer replacement strategy lock",
            try_: "Every buffer miss takes this lock: shared_buffers is too small for the working set. Raise shared_buffers (and use huge_pages=on with it); the Linux 7.0 slowdown was page faults taken while holding it.",
        },
        "hash_search_with_hash_value" | "get_hash_entry" | "hash_search" | "BufTableLookup"
        | "BufTableInsert" | "BufTableDelete" => Meaning {
            protects: "a partitioned shared hash table's freelist (buffer mapping or the lock table)",
            try_: "Buffer mapping churn (a working set larger than shared_buffers) or many locks taken at once: raise shared_buffers, and keep fewer backends active at once (a connection pooler).",
        },
        "ReserveXLogInsertLocation" | "XLogInsertRecord" | "GetXLogInsertRecPtr"
        | "XLogBytePosToRecPtr" | "XLogFlush" | "XLogBackgroundFlush" | "GetInsertRecPtr"
        | "XLogSetAsyncXactLSN" | "WALInsertLockAcquire" | "GetFlushRecPtr"
        | "GetXLogWriteRecPtr" | "XLogWrite" => Meaning {
            protects: "WAL insertion and flush positions",
            try_: "Many backends writing WAL at once: fewer concurrent writers (a pooler), batching writes in larger transactions, faster WAL storage; wal_buffers if it is small.",
        },
        "LWLockWaitListLock" | "LWLockAcquire" | "LWLockRelease" | "LWLockWaitListUnlock" => {
            Meaning {
                protects: "an LWLock's wait list",
                try_: "A hot LWLock: pg_stat_activity's wait_event names it; fewer backends active at once (a connection pooler) shortens its queue.",
            }
        }
        "LockBufHdr" | "WaitBufHdrUnlocked" | "PinBuffer" | "UnpinBuffer" => Meaning {
            protects: "a buffer header",
            try_: "Many backends on the same hot page (an index root, a small table): spread the hot rows, or keep fewer backends active at once.",
        },
        "ProcArrayAdd" | "ProcArrayRemove" | "ProcKill" | "InitProcess" => Meaning {
            protects: "the process array and free PGPROC list (backend start and exit)",
            try_: "Connection churn: every connection starts and ends a backend; use a connection pooler.",
        },
        _ => Meaning {
            protects: "a PostgreSQL spinlock",
            try_: "Look the function up in the PostgreSQL source to see what the spinlock protects; fewer backends active at once (a connection pooler) shortens every spinlock queue.",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(count: u64) -> SpinStats {
        let mut s = SpinStats {
            delays: count,
            hist: Hist {
                buckets: [0; agent_common::hist::HIST_BUCKETS],
                sum_ns: count * 1000,
            },
        };
        s.hist.buckets[3] = count;
        s
    }

    #[test]
    fn names_can_be_read_from_process_memory() {
        static NAME: &[u8] = b"ReserveXLogInsertLocation\0";
        let got = read_name_from(std::process::id(), NAME.as_ptr() as u64);
        assert_eq!(got.as_deref(), Some("ReserveXLogInsertLocation"));
        assert_eq!(read_name_from(u32::MAX, 0), None);
    }

    #[test]
    fn names_end_at_their_nul() {
        let mut name: SiteName = [0; agent_common::stats::SITE_NAME_LEN];
        assert_eq!(site_name(&name), None);
        name[..17].copy_from_slice(b"StrategyGetBuffer");
        assert_eq!(site_name(&name).as_deref(), Some("StrategyGetBuffer"));
        // A name the kernel truncated to the buffer has no NUL.
        let full = [b'x'; agent_common::stats::SITE_NAME_LEN];
        assert_eq!(site_name(&full).map(|n| n.len()), Some(full.len()));
    }

    #[test]
    fn sites_beyond_the_cap_fold_into_other_and_stay_put() {
        let mut l = SiteLabels::default();
        for i in 0..MAX_SITES_PER_CLUSTER {
            assert_eq!(l.label("/a", &format!("f{i}")), format!("f{i}"));
        }
        assert_eq!(l.label("/a", "late"), OTHER);
        assert_eq!(l.label("/b", "late"), "late", "the cap is per cluster");
        assert_eq!(l.label("/a", "f0"), "f0", "admitted sites keep their label");
    }

    #[test]
    fn folding_adds_cpus_and_shared_labels() {
        let mut l = SiteLabels::default();
        let site = |c: &str, n: &str, v| (c.to_string(), n.to_string(), v);
        let sites = vec![
            site("/a", "XLogFlush", vec![stats(2), stats(3)]),
            site("/a", "XLogFlush", vec![stats(1)]), // same name, another address
            site("/b", "get_hash_entry", vec![stats(5)]),
        ];
        let out = fold(&mut l, sites);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].cluster.as_str(), out[0].site.as_str()),
            ("/a", "XLogFlush")
        );
        assert_eq!(out[0].hist.buckets[3], 6);
        assert_eq!(out[0].delays, 6);
        assert_eq!(out[1].hist.sum_ns, 5000);
    }
}
