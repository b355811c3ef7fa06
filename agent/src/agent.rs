//! The agent: loaded probes plus the process table, and the reads that the
//! daemon, trace sessions and tests make of them.
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use agent_common::{
    event::{ProcEvent, ProcNotice, PROC_EXIT, PROC_FORK, PROC_NEW},
    stats::{
        diag, Counters, GroupStats, GroupTotals, PreemptorKey, ProcInfo, Segment, SharedGroupStats,
        SiteName, SpinKey, SpinStats, TaskSeed, PREEMPTOR_OVERFLOW,
    },
};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};

use crate::{
    config::Config,
    error::AgentError,
    kernel::kernel_info::KernelInfo,
    kernel::map_memory,
    kernel::probes::Probes,
    kernel::snapshot::{self, ProgramStats},
    kernel::task_seeds,
    kernel::uprobes::Uprobes,
    postgres::groups::{Groups, Labels},
    postgres::processes::ProcFs,
    postgres::shared_memory::{self, ClusterSegment},
    postgres::spin_sites::{SiteLabels, SpinSite},
    postgres::starts::Starts,
    postgres::tracker::{KernelMaps, Tracker},
};

/// Everything a scrape shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub groups: Vec<(Labels, GroupTotals)>,
    /// Live traced processes per label set.
    pub tracked: Vec<(Labels, u64)>,
    pub kernel: KernelInfo,
    pub programs: Vec<ProgramStats>,
    pub diag: [u64; diag::NUM],
    pub spin_sites: Vec<SpinSite>,
    /// Binaries whose `s_lock` could not be probed.
    pub uprobe_errors: u64,
    /// Each cluster's main shared memory segment, where it was found.
    pub shared_memory: Vec<SharedMemory>,
    /// Who took the CPU from traced processes, counted since the start.
    pub preemptors: Vec<Preemptor>,
    /// CPUs online on the host.
    pub online_cpus: u32,
    /// Processes started (forked by a cluster's processes) and their
    /// lifetimes, since the start.
    pub starts: Starts,
}

/// The tasks of one command name that ran next when processes of one
/// cluster were switched out involuntarily.
#[derive(Debug, Clone, PartialEq)]
pub struct Preemptor {
    /// The cluster preempted; empty for the names counted together when
    /// the kernel's map was full (`comm` is then `(others)`).
    pub cluster: String,
    pub comm: String,
    pub count: u64,
}

/// A cluster's main shared memory segment, for people.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedMemory {
    pub cluster: String,
    /// Its page size in bytes (4096, or the huge page size).
    pub page_size: u64,
    /// `on` (hugetlb), `partial` (4 kB pages, some on transparent huge
    /// pages) or `off`.
    pub huge_pages: &'static str,
    pub size_bytes: u64,
}

/// Entries in the kernel's per-task and per-process maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntries {
    /// `TASKS`: per-thread state.
    pub tasks: u64,
    /// `SEEDS`: threads' run-queue time at start-up, not yet read.
    pub seeds: u64,
    /// `PROC_INFO`: processes the agent classified.
    pub proc_info: u64,
    /// `PROC_STATS`: per-process counters (trace sessions and tests).
    pub proc_stats: u64,
}

/// How long a spinlock site may stay without a readable name before it is
/// shown as `site="unknown"` (its process and every peer exited).
pub const UNNAMED_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Agent {
    probes: Probes,
    uprobes: Option<Uprobes>,
    /// Behind a mutex so that reads (`&self`) can admit new site labels.
    site_labels: std::sync::Mutex<SiteLabels>,
    /// Site names resolved so far (fixed once set).
    site_names: std::sync::Mutex<HashMap<SpinKey, String>>,
    /// When each site still without a name was first seen.
    site_first_seen: std::sync::Mutex<HashMap<SpinKey, std::time::Instant>>,
    maps: Maps,
    events: RingBuf<MapData>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    pub tracker: Tracker,
    pub kernel: KernelInfo,
    /// When the programs were attached: counting starts here.
    pub attached_at: std::time::Instant,
    refreshes: u64,
    /// Main shared memory segments by cluster id.
    segments: HashMap<u32, KnownSegment>,
}

/// A cluster's main segment as last read.
struct KnownSegment {
    /// The process it was read from (a new postmaster reads it again).
    from: u32,
    found: Option<ClusterSegment>,
    read_at: Instant,
}

/// The maps the agent writes or reads often, taken out of the `Ebpf`.
struct Maps {
    proc_info: BpfHashMap<MapData, u32, ProcInfo>,
    proc_stats: PerCpuHashMap<MapData, u32, Counters>,
    group_stats: PerCpuArray<MapData, GroupStats>,
    shared_group_stats: Array<MapData, SharedGroupStats>,
    segments: Array<MapData, Segment>,
    diag: PerCpuArray<MapData, u64>,
    generation: Array<MapData, u64>,
    generation_now: u64,
    spin_sites: PerCpuHashMap<MapData, SpinKey, SpinStats>,
    spin_site_names: BpfHashMap<MapData, SpinKey, SiteName>,
    seeds: BpfHashMap<MapData, u32, TaskSeed>,
    preemptors: BpfHashMap<MapData, PreemptorKey, u64>,
}

impl KernelMaps for Maps {
    fn set_proc_info(&mut self, tgid: u32, info: ProcInfo) {
        if let Err(e) = self.proc_info.insert(tgid, info, 0) {
            log::warn!(
                "cannot record process {tgid} in the kernel map: {e}; raise --max-processes"
            );
            return;
        }
        // Tasks cache their group: moving the generation makes them re-read it.
        self.generation_now += 1;
        if let Err(e) = self.generation.set(0, self.generation_now, 0) {
            log::warn!("cannot update the label generation: {e}");
        }
    }

    fn remove_proc(&mut self, tgid: u32) -> Option<Counters> {
        let counters = self
            .proc_stats
            .get(&tgid, 0)
            .ok()
            .map(|v| snapshot::sum_counters(v.iter()));
        let _ = self.proc_stats.remove(&tgid);
        let _ = self.proc_info.remove(&tgid);
        counters
    }

    fn counted_procs(&self) -> Vec<u32> {
        // PROC_INFO too: sched_process_fork writes entries for children
        // whose fork (and exit) notices the ring may have dropped.
        let mut v: Vec<u32> = self.proc_stats.keys().filter_map(Result::ok).collect();
        v.extend(self.proc_info.keys().filter_map(Result::ok));
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn take<T>(p: &mut Probes, name: &'static str) -> Result<T, AgentError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = p.ebpf.take_map(name).ok_or(AgentError::Map {
        map: name,
        detail: "missing".into(),
    })?;
    T::try_from(m).map_err(|e| AgentError::Map {
        map: name,
        detail: e.to_string(),
    })
}

impl Agent {
    /// Loads the programs, classifies the processes already running,
    /// attaches, and classifies again (to catch those born in between).
    pub fn start(cfg: &Config) -> Result<Agent, AgentError> {
        let mut probes = Probes::load(cfg)?;
        let logger = match aya_log::EbpfLogger::init(&mut probes.ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("no kernel-side log: {e}");
                None
            }
        };
        let mut maps = Maps {
            proc_info: take(&mut probes, "PROC_INFO")?,
            proc_stats: take(&mut probes, "PROC_STATS")?,
            group_stats: take(&mut probes, "GROUP_STATS")?,
            shared_group_stats: take(&mut probes, "SHARED_GROUP_STATS")?,
            segments: take(&mut probes, "SEGMENTS")?,
            diag: take(&mut probes, "DIAG")?,
            generation: take(&mut probes, "GENERATION")?,
            generation_now: 0,
            spin_sites: take(&mut probes, "SPIN_SITES")?,
            spin_site_names: take(&mut probes, "SPIN_SITE_NAMES")?,
            seeds: take(&mut probes, "SEEDS")?,
            preemptors: take(&mut probes, "PREEMPTORS")?,
        };
        // Counted into when the map is full: it must exist first.
        maps.preemptors
            .insert(PREEMPTOR_OVERFLOW, 0, 0)
            .map_err(|e| AgentError::Map {
                map: "PREEMPTORS",
                detail: e.to_string(),
            })?;
        let events: RingBuf<MapData> = take(&mut probes, "PROC_EVENTS")?;
        let mut tracker = Tracker::with_groups(
            ProcFs::default(),
            &cfg.comms,
            &cfg.pids,
            cfg.keep_departed,
            Groups::with_capacity(cfg.max_groups),
        );
        tracker.scan(&mut maps);
        probes.attach()?;
        let attached_at = std::time::Instant::now();
        tracker.scan(&mut maps);
        // After the attach: a thread that switches out in between is seen
        // by the programs themselves and never reads its seed.
        let seeded = task_seeds::write(
            &mut maps.seeds,
            std::path::Path::new("/proc"),
            tracker.procs.keys().copied(),
        )?;
        log::debug!("run-queue time of {seeded} threads read at start-up");
        let mut agent = Agent {
            probes,
            uprobes: cfg.uprobes.then(Uprobes::default),
            site_labels: std::sync::Mutex::new(SiteLabels::default()),
            site_names: std::sync::Mutex::new(HashMap::new()),
            site_first_seen: std::sync::Mutex::new(HashMap::new()),
            maps,
            events,
            logger,
            tracker,
            kernel: KernelInfo::read(),
            attached_at,
            refreshes: 0,
            segments: HashMap::new(),
        };
        agent.attach_new_binaries();
        Ok(agent)
    }

    /// Handles pending process events and kernel log records. Cheap: the
    /// ring buffer is read through shared memory, without a syscall when empty.
    pub fn poll(&mut self) {
        while let Some(item) = self.events.next() {
            if item.len() < std::mem::size_of::<ProcNotice>() {
                continue;
            }
            // SAFETY: the kernel wrote a ProcNotice, or a ProcEvent (which
            // starts with one) when the record is that long;
            // read_unaligned copes with any alignment.
            let head: ProcNotice =
                unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ProcNotice) };
            let full = (item.len() >= std::mem::size_of::<ProcEvent>())
                .then(|| unsafe { std::ptr::read_unaligned(item.as_ptr() as *const ProcEvent) });
            drop(item);
            match (head.kind, full) {
                (PROC_NEW, _) => self.tracker.on_new(head.tgid, &mut self.maps),
                (PROC_FORK, Some(ev)) => self.tracker.on_fork(ev.tgid, ev.ppid, &mut self.maps),
                (PROC_EXIT, Some(ev)) => self.tracker.on_exit(ev.tgid, ev.title(), ev.lifetime_ns),
                _ => {}
            }
        }
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
        // A fresh backend is classified while it still shows the postmaster's
        // command line: re-read such titles at every poll, not once a second.
        if self.tracker.has_unsettled() {
            self.tracker.refresh(&mut self.maps, false);
        }
        self.attach_new_binaries();
    }

    /// Probes `s_lock` in the binaries of processes added since last time,
    /// and learns the main shared memory segment of new clusters.
    fn attach_new_binaries(&mut self) {
        let added = std::mem::take(&mut self.tracker.added);
        for &pid in &added {
            self.learn_segment(pid);
        }
        if let Some(u) = self.uprobes.as_mut() {
            for pid in added {
                u.ensure(&mut self.probes.ebpf, pid);
            }
        }
    }

    /// Reads the main shared memory segment of a new process's cluster if
    /// it is not known yet, or if the process is a postmaster (a restarted
    /// cluster maps a new one). Processes of one cluster inherit it at one
    /// address; the kernel programs count faults in that range. A cluster
    /// whose segment was not found (a postmaster caught before it mapped
    /// it) is read again from its next new process, at most once a second;
    /// processes without a postmaster (`pid:` clusters) have none.
    fn learn_segment(&mut self, pid: u32) {
        let Some(t) = self.tracker.procs.get(&pid) else {
            return;
        };
        let cluster = t.cluster_id;
        if cluster == 0
            || cluster >= agent_common::config::MAX_GROUPS
            || t.class.cluster.starts_with("pid:")
        {
            return;
        }
        let postmaster = t.class.backend_type == "postmaster";
        match self.segments.get(&cluster) {
            Some(k) if k.from == pid => return,
            Some(k) if !postmaster && k.found.is_some() => return,
            Some(k) if !postmaster && k.read_at.elapsed() < Duration::from_secs(1) => return,
            _ => {}
        }
        let found = shared_memory::of_process(std::path::Path::new("/proc"), pid);
        let segment = found.as_ref().map(|f| f.segment).unwrap_or_default();
        if let Err(e) = self.maps.segments.set(cluster, segment, 0) {
            log::warn!("cannot record the shared memory of cluster {cluster}: {e}");
            return;
        }
        if let Some(f) = &found {
            log::debug!(
                "cluster {cluster}: main shared memory {:#x}-{:#x} ({})",
                f.segment.start,
                f.segment.end,
                f.huge_pages.summary
            );
        }
        self.segments.insert(
            cluster,
            KnownSegment {
                from: pid,
                found,
                read_at: Instant::now(),
            },
        );
    }

    /// The main shared memory segments of the clusters with a live process.
    pub fn shared_memory(&self) -> Vec<SharedMemory> {
        let live: std::collections::HashSet<u32> = self
            .tracker
            .procs
            .values()
            .filter(|t| t.exited_at.is_none())
            .map(|t| t.cluster_id)
            .collect();
        let mut out: Vec<SharedMemory> = self
            .segments
            .iter()
            .filter(|(id, _)| live.contains(id))
            .filter_map(|(&id, known)| {
                let seg = known.found.as_ref()?;
                let cluster = self.tracker.groups.cluster_name(id)?.to_string();
                let h = &seg.huge_pages;
                Some(SharedMemory {
                    cluster,
                    page_size: h.page_size_kb.max(4) * 1024,
                    huge_pages: match h.state {
                        shared_memory::State::On => "on",
                        shared_memory::State::Partial => "partial",
                        shared_memory::State::Off => "off",
                    },
                    size_bytes: h.size_kb * 1024,
                })
            })
            .collect();
        out.sort_by(|a, b| a.cluster.cmp(&b.cluster));
        out
    }

    /// Spinlock call sites, per cluster, with capped labels.
    pub fn spin_sites(&self) -> Vec<SpinSite> {
        let mut raw = Vec::new();
        let mut names = self.site_names.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<SpinKey> = self.maps.spin_sites.keys().filter_map(Result::ok).collect();
        for key in keys {
            let Ok(v) = self.maps.spin_sites.get(&key, 0) else {
                continue;
            };
            let per_cpu: Vec<SpinStats> = v.iter().copied().collect();
            // A site keeps the first name it is shown under, so its series
            // never moves: an unnamed site is held back until its name is
            // read, or shown as "unknown" for good after UNNAMED_GRACE.
            let name = match names.get(&key) {
                Some(n) => n.clone(),
                None => {
                    let found = self
                        .maps
                        .spin_site_names
                        .get(&key, 0)
                        .ok()
                        .and_then(|n| crate::postgres::spin_sites::site_name(&n))
                        .or_else(|| self.read_site_name(&key));
                    let first_seen = *self
                        .site_first_seen
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(key)
                        .or_insert_with(std::time::Instant::now);
                    match found {
                        Some(n) => n,
                        None if first_seen.elapsed() >= UNNAMED_GRACE => "unknown".into(),
                        None => continue,
                    }
                }
            };
            names.insert(key, name.clone());
            raw.push((self.cluster_label(key.cluster), name, per_cpu));
        }
        let mut labels = self.site_labels.lock().unwrap_or_else(|p| p.into_inner());
        crate::postgres::spin_sites::fold(&mut labels, raw)
    }

    /// Once a second: new processes, label changes, exits. Every tenth call
    /// also sweeps /proc for anything the ring buffer missed.
    pub fn refresh(&mut self) {
        self.poll();
        self.refreshes += 1;
        let sweep = self.refreshes.is_multiple_of(10);
        if sweep {
            self.tracker.scan(&mut self.maps);
        }
        self.tracker.refresh(&mut self.maps, sweep);
        // Resolve new site names while their processes are alive.
        let _ = self.spin_sites();
    }

    /// One process's counters, summed over CPUs (None if it has none).
    pub fn process_counters(&self, tgid: u32) -> Option<Counters> {
        if let Ok(v) = self.maps.proc_stats.get(&tgid, 0) {
            return Some(snapshot::sum_counters(v.iter()));
        }
        self.tracker
            .departed
            .iter()
            .find(|d| d.tgid == tgid)
            .map(|d| d.counters)
    }

    /// One group's statistics, summed over CPUs, with its shared part.
    pub fn group_stats(&self, group: u32) -> Option<GroupTotals> {
        let v = self.maps.group_stats.get(&group, 0).ok()?;
        let shared = self.maps.shared_group_stats.get(&group, 0).ok();
        Some(snapshot::sum_groups(v.iter(), shared.as_ref()))
    }

    pub fn diag(&self) -> [u64; diag::NUM] {
        let mut out = [0u64; diag::NUM];
        for (i, o) in out.iter_mut().enumerate() {
            if let Ok(v) = self.maps.diag.get(&(i as u32), 0) {
                *o = v.iter().sum();
            }
        }
        out
    }

    /// How many entries the per-task and per-process maps hold now (keys
    /// walked one by one: for tests and `check`, not for every scrape).
    pub fn map_entries(&self) -> MapEntries {
        let count = |name: &str| -> u64 {
            self.probes
                .ebpf
                .map(name)
                .and_then(|m| match m {
                    aya::maps::Map::HashMap(d)
                    | aya::maps::Map::LruHashMap(d)
                    | aya::maps::Map::PerCpuHashMap(d) => {
                        use std::os::fd::AsFd;
                        Some(map_memory::count_keys(d.fd().as_fd(), 4))
                    }
                    _ => None,
                })
                .unwrap_or(0)
        };
        MapEntries {
            tasks: count("TASKS"),
            seeds: self.maps.seeds.keys().filter(Result::is_ok).count() as u64,
            proc_info: self.maps.proc_info.keys().filter(Result::is_ok).count() as u64,
            proc_stats: self.maps.proc_stats.keys().filter(Result::is_ok).count() as u64,
        }
    }

    /// The kernel's run-time statistics for each attached program.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let mut out = Vec::new();
        for (name, prog) in self.probes.ebpf.programs() {
            if let Ok(info) = prog.info() {
                out.push(ProgramStats {
                    name: name.to_string(),
                    runs: info.run_count(),
                    run_ns: info.run_time().as_nanos() as u64,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn attached_programs(&self) -> &[&'static str] {
        &self.probes.attached
    }

    /// A site name the kernel could not read: from the memory of a live
    /// process of the site's cluster (they share the binary's mapping).
    fn read_site_name(&self, key: &SpinKey) -> Option<String> {
        self.tracker
            .procs
            .values()
            .filter(|t| t.cluster_id == key.cluster && t.exited_at.is_none())
            .find_map(|t| crate::postgres::spin_sites::read_name_from(t.tgid, key.func))
    }

    /// The label of a kernel cluster id (`unassigned` if unknown).
    fn cluster_label(&self, id: u32) -> String {
        self.tracker
            .groups
            .cluster_name(id)
            .unwrap_or(crate::postgres::groups::UNASSIGNED_CLUSTER)
            .to_string()
    }

    /// Who took the CPU from traced processes, per cluster and name.
    pub fn preemptors(&self) -> Vec<Preemptor> {
        let keys: Vec<PreemptorKey> = self.maps.preemptors.keys().filter_map(Result::ok).collect();
        let mut out: Vec<Preemptor> = Vec::new();
        for key in keys {
            let Ok(count) = self.maps.preemptors.get(&key, 0) else {
                continue;
            };
            let (cluster, comm) = if key == PREEMPTOR_OVERFLOW {
                (String::new(), "(others)".to_string())
            } else {
                let cluster = self.cluster_label(key.cluster);
                let end = key.comm.iter().position(|&b| b == 0).unwrap_or(16);
                let comm = String::from_utf8_lossy(&key.comm[..end]).into_owned();
                (cluster, if comm.is_empty() { "?".into() } else { comm })
            };
            // Two ids can carry one label (a cluster seen before its data
            // directory was known): summed.
            match out
                .iter_mut()
                .find(|p| p.cluster == cluster && p.comm == comm)
            {
                Some(p) => p.count += count,
                None => out.push(Preemptor {
                    cluster,
                    comm,
                    count,
                }),
            }
        }
        out.sort_by(|a, b| (&a.cluster, &a.comm).cmp(&(&b.cluster, &b.comm)));
        out
    }

    /// Everything a scrape shows.
    pub fn snapshot(&self) -> Snapshot {
        let spin_sites = self.spin_sites();
        let mut groups = Vec::new();
        for (id, labels) in self.tracker.groups.all() {
            let Some(stats) = self.group_stats(id) else {
                continue;
            };
            if id == 0 && snapshot::is_zero(&stats) {
                continue;
            }
            groups.push((labels.clone(), stats));
        }
        Snapshot {
            groups,
            tracked: self.tracker.tracked_by_labels(),
            kernel: self.kernel.clone(),
            programs: self.program_stats(),
            diag: self.diag(),
            spin_sites,
            uprobe_errors: self.uprobes.as_ref().map_or(0, |u| u.errors),
            shared_memory: self.shared_memory(),
            preemptors: self.preemptors(),
            online_cpus: online_cpus(),
            starts: self.tracker.starts.clone(),
        }
    }

    /// The labels a process has now.
    pub fn labels_of(&self, tgid: u32) -> Option<Labels> {
        self.tracker.procs.get(&tgid).map(|t| t.labels())
    }
}

/// CPUs online now (`sysconf(_SC_NPROCESSORS_ONLN)`).
pub fn online_cpus() -> u32 {
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    u32::try_from(n).unwrap_or(0)
}
