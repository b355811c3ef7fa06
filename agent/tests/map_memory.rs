//! The agent's maps in this kernel: the daemon's fit in 32 MiB at 96 CPUs,
//! the model agrees with the kernel's own accounting (`memlock` in fdinfo)
//! map by map, and a trace session's per-process map is sized as configured
//! and takes memory only for the processes in it.
mod common;

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use agent_common::{
    config::{DEFAULT_MAX_GROUPS, DEFAULT_MAX_PROCESSES, DEFAULT_MAX_SPIN_SITES},
    stats::{Counters, SiteName, SpinStats},
};
use pgpreempt::{
    check::map_memory::{daemon_config, markdown, trace_config},
    config::Config,
    kernel::map_memory::{self, human, MapMemoryReport},
    kernel::probes::Probes,
};

const MIB: u64 = 1 << 20;

/// A process's counters (`PROC_STATS`'s value), bytes.
const COUNTERS: u64 = size_of::<Counters>() as u64;

/// The kernel structs' sizes differ between kernel builds by a few hundred
/// bytes at most: the fixed part of a map's model may be off by this much.
const FIXED_SLACK: u64 = 1024;

fn load(cfg: &Config) -> (Probes, MapMemoryReport) {
    let mut p = Probes::load(cfg).expect("programs load");
    p.verify().expect("the verifier accepts them");
    let r = map_memory::measure(&p.ebpf).expect("fdinfo readable");
    (p, r)
}

/// Every map's model here is the kernel's figure, but for the fixed part.
fn assert_model_matches(r: &MapMemoryReport) {
    for m in &r.maps {
        let modelled = m
            .modelled
            .unwrap_or_else(|| panic!("{}: type {} not modelled", m.name, m.type_name));
        assert!(
            modelled.abs_diff(m.memlock) <= FIXED_SLACK,
            "{}: kernel {} B, model {modelled} B",
            m.name,
            m.memlock
        );
        // What grows with the CPUs is at most what the kernel counts here.
        assert!(
            m.per_cpu_bytes * u64::from(r.possible_cpus) <= m.memlock,
            "{}",
            m.name
        );
    }
    assert_eq!(r.total_at(r.possible_cpus), r.total());
}

#[test]
fn the_daemons_maps_fit_32_mib_at_96_cpus() {
    common::require_root();
    let (_p, r) = load(&daemon_config());
    {
        // The trace configuration loads too (its PROC_STATS is created
        // without preallocation, which the tp_btf programs may use).
        let (_t, trace) = load(&trace_config());
        assert_model_matches(&trace);
        let m = trace.get("PROC_STATS").unwrap();
        assert_eq!(m.shape.max_entries, DEFAULT_MAX_PROCESSES);
        assert!(!m.preallocated);
        eprintln!("{}", markdown(&r, &trace));
    }
    assert_eq!(
        r.possible_cpus,
        map_memory::parse_cpu_list(
            &std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap()
        )
        .unwrap()
    );
    assert_model_matches(&r);
    let shape = |name: &str| r.get(name).unwrap_or_else(|| panic!("{name}"));
    // The daemon does not count per process: one preallocated entry (not
    // preallocated, the allocator's cache would cost CPUs x CPUs values).
    let proc_stats = shape("PROC_STATS");
    assert_eq!(proc_stats.shape.max_entries, 1);
    assert!(proc_stats.preallocated);
    assert_eq!(proc_stats.per_cpu_bytes, COUNTERS + 32);
    assert_eq!(shape("GROUP_STATS").shape.max_entries, DEFAULT_MAX_GROUPS);
    assert_eq!(
        shape("SHARED_GROUP_STATS").shape.max_entries,
        DEFAULT_MAX_GROUPS
    );
    assert_eq!(shape("SHARED_GROUP_STATS").per_cpu_bytes, 0, "one copy");
    assert_eq!(
        shape("SPIN_SITES").shape.max_entries,
        DEFAULT_MAX_SPIN_SITES
    );
    // A site's name is kept once, not per CPU.
    let names = shape("SPIN_SITE_NAMES");
    assert_eq!(names.shape.max_entries, DEFAULT_MAX_SPIN_SITES);
    assert_eq!(names.shape.value_size as usize, size_of::<SiteName>());
    assert_eq!(
        shape("SPIN_SITES").shape.value_size as usize,
        size_of::<SpinStats>()
    );
    // The budget (every map is preallocated: nothing grows with use).
    assert!(r.maps.iter().all(|m| m.preallocated));
    let at96 = r.total_at(96);
    assert_eq!(r.total_full_at(96), at96);
    assert!(
        at96 < 32 * MIB,
        "{} at 96 CPUs (here {})",
        human(at96),
        human(r.total())
    );
    eprintln!(
        "daemon: {} here ({} CPUs), {} at 96, {} at 192",
        human(r.total()),
        r.possible_cpus,
        human(at96),
        human(r.total_at(192))
    );

    // Without the uprobes the spinlock sites are not kept either.
    let (_p, r) = load(&Config {
        uprobes: false,
        ..daemon_config()
    });
    assert_eq!(shape_of(&r, "SPIN_SITES"), 1);
    assert_eq!(shape_of(&r, "SPIN_SITE_NAMES"), 1);
    // The flags size what they name.
    let (_p, r) = load(&Config {
        max_groups: 256,
        max_spin_sites: 1024,
        ..daemon_config()
    });
    assert_eq!(shape_of(&r, "GROUP_STATS"), 256);
    assert_eq!(shape_of(&r, "SPIN_SITES"), 1024);
    assert_eq!(shape_of(&r, "SPIN_SITE_NAMES"), 1024);
    assert!(Probes::load(&Config {
        max_groups: 257,
        ..daemon_config()
    })
    .is_err());
}

fn shape_of(r: &MapMemoryReport, name: &str) -> u32 {
    r.get(name).unwrap().shape.max_entries
}

/// Kills and reaps the children on every path.
struct Children(Vec<Child>);
impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_trace_sessions_per_process_map_holds_only_its_processes() {
    common::require_root();
    // `sleep` under a name of its own, so that only the test's processes
    // are traced on this shared machine.
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("pgpmm-sleep");
    std::fs::copy("/bin/sleep", &bin).unwrap();
    let cfg = Config {
        comms: vec!["pgpmm-sleep".into()],
        max_processes: 100,
        ..trace_config()
    };
    // Loaded (the maps are created), attached further down.
    let mut p = Probes::load(&cfg).expect("programs load");
    let r = map_memory::measure(&p.ebpf).unwrap();
    assert_model_matches(&r);
    let m = r.get("PROC_STATS").unwrap();
    assert_eq!(m.shape.max_entries, 100, "sized as configured");
    assert!(!m.preallocated);
    assert_eq!(m.elements, Some(0));
    let empty = m.memlock;
    let per_process = m.per_element_at(r.possible_cpus).unwrap();
    assert_eq!(
        per_process,
        88 + COUNTERS * u64::from(r.possible_cpus),
        "the element, list nodes and a value (Counters) per CPU"
    );
    p.attach().expect("attaches");

    // Each process is added by a tp_btf program (sched_switch) at its first
    // switch-out: the kernel allocates its entry then.
    const N: u64 = 5;
    let kids = Children(
        (0..N)
            .map(|_| Command::new(&bin).arg("30").spawn().unwrap())
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = map_memory::measure(&p.ebpf).unwrap();
        if r.get("PROC_STATS").unwrap().elements == Some(N) || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let m = r.get("PROC_STATS").unwrap();
    assert_eq!(m.elements, Some(N), "one entry per traced process");
    assert_eq!(
        m.memlock,
        empty + N * per_process,
        "the kernel accounts exactly the entries in it"
    );
    assert_model_matches(&r);
    // At 96 CPUs a process costs its value 96 times.
    assert_eq!(
        m.at(r.possible_cpus, 96) - m.at(r.possible_cpus, 95),
        32 + N * COUNTERS
    );
    eprintln!(
        "trace: PROC_STATS {} with {N} processes here; each adds {} here, {} at 96 CPUs; full ({}) at 96 CPUs: {}",
        human(m.memlock),
        human(per_process),
        human(m.per_element_at(96).unwrap()),
        m.shape.max_entries,
        human(m.full_at(r.possible_cpus, 96))
    );
    drop(kids);
}
