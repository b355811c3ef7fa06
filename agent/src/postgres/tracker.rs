//! The agent's table of traced processes: classifies new ones (from the
//! kernel's ring buffer and from /proc), keeps their labels current, tells
//! the kernel their group, and folds away the ones that exited.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agent_common::stats::{Counters, ProcInfo};

use crate::{
    postgres::backend_type::{parse_title, FORKED_CHILD},
    postgres::groups::{Groups, Labels},
    postgres::processes::{Classified, ProcFs},
    postgres::starts::Starts,
};

/// How long after its exit notice a process's counters are kept in the
/// kernel map before they are folded away: the notice comes at
/// `sched_process_exit`, and its threads' final switch-outs (which count
/// the wait before their last run) follow within microseconds. One that
/// comes later still (a very long `exit_mm`) counts in its group only, or
/// re-creates the entry, which the 10-second /proc sweep then removes.
pub const EXIT_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct Tracked {
    pub tgid: u32,
    pub class: Classified,
    pub group: u32,
    pub cluster_id: u32,
    pub exited_at: Option<Instant>,
    /// Forked while the agent ran, and its start not counted yet (it is,
    /// under its labels, once its title settles or it exits).
    pub start_pending: bool,
    /// The kernel's exit notice was handled (the /proc sweep can see a
    /// process gone before its notice is read).
    pub exit_noticed: bool,
}

impl Tracked {
    pub fn labels(&self) -> Labels {
        Labels {
            cluster: self.class.cluster.clone(),
            backend_type: self.class.backend_type.into(),
        }
    }
}

/// A process that exited, with its final counters.
#[derive(Debug, Clone)]
pub struct Departed {
    pub tgid: u32,
    pub class: Classified,
    pub counters: Counters,
}

/// What the tracker needs from the kernel maps (a trait, so the table logic
/// is tested without BPF).
pub trait KernelMaps {
    fn set_proc_info(&mut self, tgid: u32, info: ProcInfo);
    fn remove_proc(&mut self, tgid: u32) -> Option<Counters>;
    /// The processes the kernel keeps per-process counters or labels for
    /// (labels: also those it gave a child at its fork, whose notices the
    /// ring may have dropped).
    fn counted_procs(&self) -> Vec<u32>;
}

pub struct Tracker {
    pub procfs: ProcFs,
    pub groups: Groups,
    pub procs: HashMap<u32, Tracked>,
    pub departed: Vec<Departed>,
    /// Processes added since the agent last looked (for uprobe attachment).
    pub added: Vec<u32>,
    /// Processes the kernel counted but the tracker never classified (gone
    /// before their title was read), by when they were seen gone: their
    /// counters are folded away like the others'.
    unclassified_exits: HashMap<u32, Instant>,
    /// Starts and lifetimes of the processes forked while the agent ran.
    pub starts: Starts,
    comms: HashSet<String>,
    pids: HashSet<u32>,
    keep_departed: bool,
}

impl Tracker {
    pub fn new(procfs: ProcFs, comms: &[String], pids: &[u32], keep_departed: bool) -> Self {
        Self::with_groups(procfs, comms, pids, keep_departed, Groups::new())
    }

    /// A tracker whose group ids come from `groups` (sized as the kernel's
    /// `GROUP_STATS`).
    pub fn with_groups(
        procfs: ProcFs,
        comms: &[String],
        pids: &[u32],
        keep_departed: bool,
        groups: Groups,
    ) -> Self {
        Self {
            procfs,
            groups,
            procs: HashMap::new(),
            departed: Vec::new(),
            added: Vec::new(),
            unclassified_exits: HashMap::new(),
            starts: Starts::default(),
            comms: comms.iter().cloned().collect(),
            pids: pids.iter().copied().collect(),
            keep_departed,
        }
    }

    /// True if the process passes the `--comm`/`--pid` selection.
    pub fn selected(&self, pid: u32) -> bool {
        if !self.pids.is_empty() && !self.pids.contains(&pid) {
            return false;
        }
        self.procfs
            .comm(pid)
            .is_some_and(|c| self.comms.contains(&c))
    }

    /// Finds every selected process in /proc.
    pub fn scan(&mut self, maps: &mut impl KernelMaps) {
        for pid in self.procfs.pids() {
            if !self.procs.contains_key(&pid) && self.selected(pid) {
                self.add(pid, maps);
            }
        }
    }

    /// The kernel saw a new traced process.
    pub fn on_new(&mut self, tgid: u32, maps: &mut impl KernelMaps) {
        if !self.procs.contains_key(&tgid) {
            self.add(tgid, maps);
        }
    }

    /// A process of a known cluster forked `tgid` (the kernel's notice,
    /// sent before the child first ran). The kernel already counts the
    /// child in its parent's `child_group`; this records it under the same
    /// labels from what is known (it may be gone from /proc already), and
    /// its title is read at the next poll. An earlier process under the
    /// same pid whose exit was not folded away yet is folded now: its exit
    /// notice came first.
    pub fn on_fork(&mut self, tgid: u32, ppid: u32, maps: &mut impl KernelMaps) {
        if self.procs.contains_key(&tgid) || self.unclassified_exits.contains_key(&tgid) {
            if let Some(t) = self.procs.get_mut(&tgid) {
                t.exited_at.get_or_insert_with(Instant::now);
            }
            self.fold(tgid, maps);
        }
        let Some(parent) = self.procs.get(&ppid) else {
            // Not a process the agent knows (the kernel gives a child a
            // group only if its parent has one): learn it from /proc.
            return self.on_new(tgid, maps);
        };
        let cluster = parent.class.cluster.clone();
        let cluster_id = parent.cluster_id;
        let group = self.groups.id(&cluster, FORKED_CHILD);
        // Again: folding the earlier process removed the kernel's entry.
        maps.set_proc_info(
            tgid,
            ProcInfo {
                group,
                cluster: cluster_id,
                child_group: 0,
                _pad: 0,
            },
        );
        self.procs.insert(
            tgid,
            Tracked {
                tgid,
                class: Classified {
                    cluster,
                    backend_type: FORKED_CHILD,
                    activity: String::new(),
                    settled: false,
                },
                group,
                cluster_id,
                exited_at: None,
                start_pending: true,
                exit_noticed: false,
            },
        );
        self.added.push(tgid);
    }

    /// The kernel saw a traced process exit: its title (read as it exited,
    /// if the kernel could) settles its labels if nothing read it before,
    /// and its lifetime is counted.
    pub fn on_exit(&mut self, tgid: u32, title: Option<&[u8]>, lifetime_ns: u64) {
        let Some(t) = self.procs.get_mut(&tgid) else {
            self.unclassified_exits
                .entry(tgid)
                .or_insert_with(Instant::now);
            return;
        };
        if std::mem::replace(&mut t.exit_noticed, true) {
            return;
        }
        t.exited_at.get_or_insert_with(Instant::now);
        if !t.class.settled {
            if let Some(title) = title {
                let parsed = parse_title(&String::from_utf8_lossy(title), false);
                if parsed.settled {
                    t.class.backend_type = parsed.backend_type;
                    t.class.activity = parsed.activity;
                }
            }
            // Settled now, by its title or by what is known of it.
            t.class.settled = true;
        }
        let labels = t.labels();
        if std::mem::take(&mut t.start_pending) {
            self.starts.started(&labels);
        }
        if lifetime_ns > 0 {
            self.starts.lived(&labels, lifetime_ns as f64 / 1e9);
        }
    }

    /// A process gone without an exit notice (the /proc sweep).
    fn gone(&mut self, tgid: u32) {
        match self.procs.get_mut(&tgid) {
            Some(t) => {
                t.exited_at.get_or_insert_with(Instant::now);
            }
            None => {
                self.unclassified_exits
                    .entry(tgid)
                    .or_insert_with(Instant::now);
            }
        }
    }

    fn add(&mut self, pid: u32, maps: &mut impl KernelMaps) {
        let Some(class) = self.procfs.classify(pid) else {
            return;
        };
        let group = self.groups.id(&class.cluster, class.backend_type);
        let cluster_id = self.groups.cluster_id(&class.cluster);
        let child_group = self.child_group(&class);
        maps.set_proc_info(
            pid,
            ProcInfo {
                group,
                cluster: cluster_id,
                child_group,
                _pad: 0,
            },
        );
        self.procs.insert(
            pid,
            Tracked {
                tgid: pid,
                class,
                group,
                cluster_id,
                exited_at: None,
                start_pending: false,
                exit_noticed: false,
            },
        );
        self.added.push(pid);
    }

    /// The group the kernel gives the children of a process of this class
    /// at their fork: a postmaster's are its cluster's client backends
    /// until their titles say otherwise (`FORKED_CHILD`); other processes'
    /// children wait for the agent (0).
    fn child_group(&mut self, class: &Classified) -> u32 {
        if class.backend_type == "postmaster" {
            self.groups.id(&class.cluster, FORKED_CHILD)
        } else {
            0
        }
    }

    /// Re-reads titles that were not settled, updating groups that changed;
    /// with `all`, also notices processes that died without an exit notice.
    pub fn refresh(&mut self, maps: &mut impl KernelMaps, sweep: bool) {
        let now = Instant::now();
        let mut gone = Vec::new();
        for t in self.procs.values_mut() {
            if t.exited_at.is_some() {
                continue;
            }
            if sweep && !self.procfs.exists(t.tgid) {
                t.exited_at = Some(now);
                continue;
            }
            if t.class.settled {
                continue;
            }
            match self.procfs.classify(t.tgid) {
                Some(c) => {
                    if c.cluster != t.class.cluster || c.backend_type != t.class.backend_type {
                        t.group = self.groups.id(&c.cluster, c.backend_type);
                        t.cluster_id = self.groups.cluster_id(&c.cluster);
                        let child_group = if c.backend_type == "postmaster" {
                            self.groups.id(&c.cluster, FORKED_CHILD)
                        } else {
                            0
                        };
                        maps.set_proc_info(
                            t.tgid,
                            ProcInfo {
                                group: t.group,
                                cluster: t.cluster_id,
                                child_group,
                                _pad: 0,
                            },
                        );
                    }
                    t.class = c;
                    if t.class.settled && std::mem::take(&mut t.start_pending) {
                        self.starts.started(&t.labels());
                    }
                }
                None => gone.push(t.tgid),
            }
        }
        for tgid in gone {
            self.gone(tgid);
        }
        if sweep {
            // Exit notices can be lost (a full ring): anything the kernel
            // still counts or labels for a process that is gone is folded
            // away too (a fork whose notice was lost left a label).
            for tgid in maps.counted_procs() {
                if !self.procs.contains_key(&tgid) && !self.procfs.exists(tgid) {
                    self.unclassified_exits.entry(tgid).or_insert(now);
                }
            }
        }
        self.harvest(maps, now);
    }

    /// Folds away processes whose exit is older than the grace period.
    fn harvest(&mut self, maps: &mut impl KernelMaps, now: Instant) {
        let done: Vec<u32> = self
            .procs
            .values()
            .filter(|t| {
                t.exited_at
                    .is_some_and(|at| now.duration_since(at) >= EXIT_GRACE)
            })
            .map(|t| t.tgid)
            .collect();
        let mut done: Vec<(u32, Option<Classified>)> = done
            .into_iter()
            .map(|tgid| (tgid, self.retire(tgid)))
            .collect();
        self.unclassified_exits.retain(|&tgid, at| {
            if now.duration_since(*at) < EXIT_GRACE {
                return true;
            }
            // A live process that reused the pid keeps the entry.
            if !self.procs.contains_key(&tgid) {
                done.push((tgid, None));
            }
            false
        });
        for (tgid, class) in done {
            self.depart(tgid, class, maps);
        }
    }

    /// Removes a process from the table; a start not counted yet (its
    /// exit notice was lost) is counted under the labels it had.
    fn retire(&mut self, tgid: u32) -> Option<Classified> {
        let t = self.procs.remove(&tgid)?;
        if t.start_pending {
            self.starts.started(&t.labels());
        }
        Some(t.class)
    }

    /// Folds away a process's kernel counters (kept as departed in trace
    /// sessions).
    fn depart(&mut self, tgid: u32, class: Option<Classified>, maps: &mut impl KernelMaps) {
        let counters = maps.remove_proc(tgid);
        if self.keep_departed {
            if let Some(counters) = counters {
                self.departed.push(Departed {
                    tgid,
                    class: class.unwrap_or_else(Classified::unclassified),
                    counters,
                });
            }
        }
    }

    /// Folds away a process now, before its grace period ends: its pid
    /// belongs to a new process.
    fn fold(&mut self, tgid: u32, maps: &mut impl KernelMaps) {
        self.unclassified_exits.remove(&tgid);
        let class = self.retire(tgid);
        self.depart(tgid, class, maps);
    }

    /// True if some live process's title was not settled yet (a fresh fork
    /// still showing the postmaster's command line).
    pub fn has_unsettled(&self) -> bool {
        self.procs
            .values()
            .any(|t| t.exited_at.is_none() && !t.class.settled)
    }

    /// Live processes per label set, for `pgpreempt_tracked_processes`.
    pub fn tracked_by_labels(&self) -> Vec<(Labels, u64)> {
        let mut m: HashMap<Labels, u64> = HashMap::new();
        for (_, l) in self.groups.all().skip(1) {
            m.insert(l.clone(), 0);
        }
        for t in self.procs.values().filter(|t| t.exited_at.is_none()) {
            *m.entry(t.labels()).or_default() += 1;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        fs,
        os::unix::fs::symlink,
        path::{Path, PathBuf},
    };

    #[derive(Default)]
    struct FakeMaps {
        info: HashMap<u32, ProcInfo>,
        stats: HashMap<u32, Counters>,
    }
    impl KernelMaps for FakeMaps {
        fn set_proc_info(&mut self, tgid: u32, info: ProcInfo) {
            self.info.insert(tgid, info);
        }
        fn remove_proc(&mut self, tgid: u32) -> Option<Counters> {
            self.info.remove(&tgid);
            self.stats.remove(&tgid)
        }
        fn counted_procs(&self) -> Vec<u32> {
            let mut v: Vec<u32> = self.stats.keys().chain(self.info.keys()).copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        }
    }

    fn entry(root: &Path, pid: u32, ppid: u32, comm: &str, title: &str, cwd: &Path) {
        let d = root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("cmdline"), title.replace(' ', "\0")).unwrap();
        fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 1")).unwrap();
        let _ = fs::remove_file(d.join("cwd"));
        symlink(cwd, d.join("cwd")).unwrap();
    }

    #[test]
    fn scans_relabels_and_harvests() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proc");
        let data = tmp.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("postmaster.pid"), "10\n").unwrap();
        entry(&root, 10, 1, "postgres", "/usr/bin/postgres -D /d", &data);
        entry(&root, 11, 10, "postgres", "/usr/bin/postgres -D /d", &data); // fresh fork
        entry(&root, 12, 1, "bash", "bash", tmp.path());
        let comms = vec!["postgres".to_string()];
        let mut t = Tracker::new(ProcFs::at(&root), &comms, &[], true);
        let mut maps = FakeMaps::default();
        t.scan(&mut maps);
        assert_eq!(t.procs.len(), 2, "bash is not selected");
        let pm_group = maps.info[&10].group;
        let child_group = maps.info[&11].group;
        assert_ne!(pm_group, child_group);
        assert_eq!(maps.info[&10].cluster, maps.info[&11].cluster);
        assert_eq!(
            maps.info[&10].child_group, child_group,
            "a fresh fork counts where the kernel puts the postmaster's children"
        );
        assert_eq!(t.procs[&11].class.backend_type, "client backend");

        // The child sets its title: it moves to the checkpointer group.
        entry(&root, 11, 10, "postgres", "postgres: checkpointer", &data);
        t.refresh(&mut maps, false);
        assert_ne!(maps.info[&11].group, child_group);
        assert_eq!(maps.info[&11].child_group, 0);
        assert_eq!(t.procs[&11].class.backend_type, "checkpointer");

        // It exits: kept through the grace period, then folded away.
        let mut c = Counters::zeroed();
        c.v[1] = 42;
        maps.stats.insert(11, c);
        t.on_exit(11, None, 0);
        t.refresh(&mut maps, false);
        assert!(t.procs.contains_key(&11));
        std::thread::sleep(EXIT_GRACE);
        t.refresh(&mut maps, false);
        assert!(!t.procs.contains_key(&11));
        assert!(!maps.info.contains_key(&11));
        assert_eq!(t.departed.len(), 1);
        assert_eq!(t.departed[0].counters.v[1], 42);

        // A process that vanished without a notice is found by the sweep.
        fs::remove_dir_all(root.join("10")).unwrap();
        t.refresh(&mut maps, true);
        std::thread::sleep(EXIT_GRACE);
        t.refresh(&mut maps, false);
        assert!(t.procs.is_empty());
    }

    /// A postmaster in a fixture /proc, and a tracker that knows it.
    fn cluster_fixture(tmp: &Path) -> (PathBuf, Tracker, FakeMaps) {
        let root = tmp.join("proc");
        let data = tmp.join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("postmaster.pid"), "10\n").unwrap();
        entry(&root, 10, 1, "postgres", "/usr/bin/postgres -D /d", &data);
        let comms = vec!["postgres".to_string()];
        let mut t = Tracker::new(ProcFs::at(&root), &comms, &[], true);
        let mut maps = FakeMaps::default();
        t.scan(&mut maps);
        (data, t, maps)
    }

    fn labels(cluster: &Path, backend_type: &str) -> Labels {
        Labels {
            cluster: cluster.display().to_string(),
            backend_type: backend_type.into(),
        }
    }

    #[test]
    fn a_backend_gone_before_its_title_was_read_keeps_its_cluster_and_type() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, mut t, mut maps) = cluster_fixture(tmp.path());
        let child_group = maps.info[&10].child_group;
        // Forked, and gone from /proc before the agent looked: the exit
        // notice carries its title and lifetime.
        t.on_fork(20, 10, &mut maps);
        assert_eq!(maps.info[&20].group, child_group);
        assert_eq!(maps.info[&20].cluster, maps.info[&10].cluster);
        t.on_exit(20, Some(b"postgres: u db [local] idle"), 3_000_000);
        // A parallel worker, equally short.
        t.on_fork(21, 10, &mut maps);
        t.on_exit(
            21,
            Some(b"postgres: parallel worker for PID 20"),
            12_000_000,
        );
        // One whose title was never set nor read (a connection refused
        // before authentication): what is known of it.
        t.on_fork(22, 10, &mut maps);
        t.on_exit(22, None, 1_000_000);
        // One whose exit notice was lost: the sweep finds it gone.
        t.on_fork(23, 10, &mut maps);
        t.refresh(&mut maps, true);
        std::thread::sleep(EXIT_GRACE);
        t.refresh(&mut maps, false);
        assert_eq!(t.procs.len(), 1, "only the postmaster is left");
        let types: Vec<_> = t.departed.iter().map(|d| d.class.backend_type).collect();
        assert!(
            types.is_empty(),
            "no counters were kept for them: {types:?}"
        );
        let cb = labels(&data, "client backend");
        let pw = labels(&data, "parallel worker");
        assert_eq!(t.starts.starts[&cb], 3);
        assert_eq!(t.starts.starts[&pw], 1);
        assert_eq!(t.starts.lifetimes[&cb].count, 2);
        assert!((t.starts.lifetimes[&cb].sum_seconds - 0.004).abs() < 1e-9);
        assert_eq!(t.starts.lifetimes[&pw].count, 1);
    }

    #[test]
    fn a_reused_pid_folds_its_earlier_owner_away_at_the_fork() {
        let tmp = tempfile::tempdir().unwrap();
        let (_data, mut t, mut maps) = cluster_fixture(tmp.path());
        t.on_fork(30, 10, &mut maps);
        let mut c = Counters::zeroed();
        c.v[0] = 5;
        maps.stats.insert(30, c);
        t.on_exit(30, Some(b"postgres: u db [local] idle"), 1_000_000);
        // The pid comes back within the grace period: the old counters are
        // folded at once, and the new process keeps its kernel entry.
        t.on_fork(30, 10, &mut maps);
        assert_eq!(t.departed.len(), 1);
        assert_eq!(t.departed[0].counters.v[0], 5);
        assert_eq!(t.departed[0].class.backend_type, "client backend");
        assert!(maps.info.contains_key(&30));
        assert!(t.procs[&30].exited_at.is_none());
        t.refresh(&mut maps, false);
        assert!(
            maps.info.contains_key(&30),
            "not harvested with the old one"
        );
    }

    #[test]
    fn a_fork_whose_notices_were_lost_leaves_no_label_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let (_data, mut t, mut maps) = cluster_fixture(tmp.path());
        // The kernel labelled child 40 at its fork; the ring was full, so
        // neither its fork nor its exit notice came, and it is gone.
        let child = ProcInfo {
            child_group: 0,
            ..maps.info[&10]
        };
        maps.info.insert(40, child);
        t.refresh(&mut maps, true);
        std::thread::sleep(EXIT_GRACE);
        t.refresh(&mut maps, false);
        assert!(!maps.info.contains_key(&40), "{:?}", maps.info.keys());
        assert!(maps.info.contains_key(&10));
    }

    #[test]
    fn processes_never_classified_are_folded_away_too() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proc");
        fs::create_dir_all(&root).unwrap();
        let comms = vec!["postgres".to_string()];
        let mut t = Tracker::new(ProcFs::at(&root), &comms, &[], true);
        let mut maps = FakeMaps::default();
        // The kernel counted two processes that were gone before the agent
        // read their titles: one sent its exit notice, one's was lost.
        let mut c = Counters::zeroed();
        c.v[1] = 7;
        maps.stats.insert(30, c);
        maps.stats.insert(31, c);
        t.on_new(30, &mut maps);
        t.on_exit(30, None, 0);
        assert!(t.procs.is_empty(), "nothing to classify");
        t.refresh(&mut maps, true);
        std::thread::sleep(EXIT_GRACE);
        t.refresh(&mut maps, false);
        assert!(
            maps.stats.is_empty(),
            "both entries removed: {:?}",
            maps.stats.keys()
        );
        assert_eq!(t.departed.len(), 2);
        assert!(t
            .departed
            .iter()
            .all(|d| d.class.backend_type == "other" && d.counters.v[1] == 7));
    }

    #[test]
    fn pid_selection_restricts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("proc");
        entry(
            &root,
            20,
            1,
            "postgres",
            "postgres: checkpointer",
            tmp.path(),
        );
        entry(&root, 21, 1, "postgres", "postgres: walwriter", tmp.path());
        let comms = vec!["postgres".to_string()];
        let t = Tracker::new(ProcFs::at(&root), &comms, &[21], false);
        assert!(!t.selected(20));
        assert!(t.selected(21));
    }
}
