//! `pgpreempt check`: can this host be traced, and what is known about it.
//! A few readable lines (or `--json`), and a non-zero exit when tracing
//! cannot work. Everything is read under a host root (`/`, or a fixture
//! tree in tests) so that every branch is tested on constructed inputs.
pub mod map_memory;
pub mod memory;
pub mod postgres;

use crate::postgres::shared_memory;
use std::{
    fmt::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    kernel::kernel_info::{read_config_at, KernelInfo},
    kernel::map_memory::MapMemoryReport,
    kernel::privileges,
    kernel::rseq,
};

/// Tracepoints without which pgpreempt does not start.
pub const REQUIRED_TRACEPOINTS: &[&str] = &[
    "sched/sched_switch",
    "sched/sched_waking",
    "sched/sched_process_exit",
    "timer/hrtimer_expire_entry",
    "timer/hrtimer_expire_exit",
    "timer/timer_expire_entry",
    "timer/timer_expire_exit",
];

const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_PTRACE: u32 = 19;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    /// Tracing works, but something is missing or worth knowing.
    Warn,
    /// Tracing cannot work.
    Fail,
    /// Not judged.
    Info,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub status: Status,
    pub detail: String,
}

fn item(status: Status, detail: impl Into<String>) -> Item {
    Item {
        status,
        detail: detail.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KernelCheck {
    pub release: String,
    pub preempt_model: String,
    pub preempt_model_source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// True when tracing can work here.
    pub ok: bool,
    pub kernel: KernelCheck,
    pub rseq_slice_extension: rseq::RseqSlice,
    pub btf: Item,
    pub tracefs: Item,
    pub tracepoints: Item,
    /// The memory programs' tracepoints (optional) and the NUMA nodes.
    pub memory: memory::MemoryCheck,
    pub privileges: Item,
    /// The kernel programs loaded (verified, not attached), or why not.
    pub bpf_programs: Item,
    /// The maps' kernel memory with the daemon's configuration, here and on
    /// bigger hosts (None: the programs were not loaded).
    pub map_memory: Option<map_memory::MapMemoryCheck>,
    pub bpf_stats: Item,
    pub lockdown: Item,
    pub clusters: Vec<postgres::Cluster>,
}

/// What loading the kernel programs found.
pub struct Loaded {
    /// How many programs passed the verifier.
    pub programs: usize,
    /// The maps' memory, or why it could not be read.
    pub map_memory: Result<MapMemoryReport, String>,
}

/// What `gather` needs besides files under the host root.
pub struct Probes<'a> {
    /// The answer of the RSEQ slice-extension prctl.
    pub rseq: rseq::Probe,
    /// Loads the kernel programs without attaching them: how many and their
    /// maps' memory, or why not. None: not tried (fixtures).
    pub load_programs: Option<&'a dyn Fn() -> Result<Loaded, String>>,
    /// Runs `<binary> --version`.
    pub version_of: &'a dyn Fn(&Path) -> Option<String>,
}

/// Gathers the check under host root `root`.
pub fn gather(root: &Path, probes: &Probes) -> CheckReport {
    let at = |rel: &str| -> PathBuf { root.join(rel) };
    let k = KernelInfo::read_at(root);
    let config = read_config_at(root, &k.release);
    let cmdline = std::fs::read_to_string(at("proc/cmdline")).unwrap_or_default();
    let rseq = rseq::assess(
        config.as_ref().map(|(c, s)| (c.as_str(), s.as_str())),
        &cmdline,
        probes.rseq,
    );

    // The scheduler programs are tp_btf and take task_struct offsets from
    // BTF: without it nothing can be traced.
    let btf = match crate::kernel::task_layout::read(&at("sys/kernel/btf/vmlinux")) {
        Ok(l) => item(
            Status::Ok,
            format!(
                "/sys/kernel/btf/vmlinux ({})",
                crate::kernel::task_layout::describe(&l)
            ),
        ),
        Err(e) => item(
            Status::Fail,
            format!("{e}; the scheduler programs (tp_btf) need it"),
        ),
    };

    let caps = std::fs::read_to_string(at("proc/self/status"))
        .ok()
        .and_then(|s| privileges::effective_caps(&s))
        .unwrap_or(0);
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    let missing = privileges::missing(caps);
    let privileges = if !missing.is_empty() {
        item(
            Status::Fail,
            format!(
                "missing {}: run as root or grant CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE",
                missing.join(", ")
            ),
        )
    } else if !has(CAP_SYS_PTRACE) {
        item(
            Status::Warn,
            "CAP_BPF and CAP_PERFMON present, CAP_SYS_PTRACE missing: PostgreSQL's /proc entries (cluster, uprobes, spin-site names) may be unreadable",
        )
    } else {
        item(
            Status::Ok,
            "CAP_BPF, CAP_PERFMON (or CAP_SYS_ADMIN) and CAP_SYS_PTRACE",
        )
    };

    let tracefs_root = at("sys/kernel/tracing");
    let mounted = tracefs_root.join("events").is_dir();
    let tracefs = if mounted {
        item(Status::Ok, "mounted at /sys/kernel/tracing")
    } else if has(CAP_SYS_ADMIN) {
        item(
            Status::Warn,
            "not mounted at /sys/kernel/tracing; pgpreempt mounts it when it starts",
        )
    } else {
        item(
            Status::Fail,
            "not mounted at /sys/kernel/tracing, and mounting needs CAP_SYS_ADMIN: `mount -t tracefs nodev /sys/kernel/tracing` as root",
        )
    };
    let tracepoints = if !mounted {
        item(Status::Info, "not checked: tracefs is not mounted")
    } else {
        let absent: Vec<&str> = REQUIRED_TRACEPOINTS
            .iter()
            .copied()
            .filter(|tp| !tracefs_root.join("events").join(tp).join("format").exists())
            .collect();
        if absent.is_empty() {
            item(
                Status::Ok,
                format!("all {} required are present", REQUIRED_TRACEPOINTS.len()),
            )
        } else {
            item(Status::Fail, format!("missing: {}", absent.join(", ")))
        }
    };

    let memory = memory::assess(
        mounted.then(|| tracefs_root.join("events")).as_deref(),
        &at("sys/devices/system/node"),
        std::fs::read_to_string(at("proc/sys/kernel/numa_balancing"))
            .ok()
            .as_deref(),
    );

    let mut map_memory = None;
    let bpf_programs = match probes.load_programs {
        None => item(Status::Info, "not tried"),
        Some(_) if privileges.status == Status::Fail => {
            item(Status::Info, "not tried: missing privileges")
        }
        Some(_) if tracepoints.status == Status::Fail => {
            item(Status::Info, "not tried: tracepoints missing")
        }
        Some(load) => match load() {
            Ok(l) => {
                match l.map_memory {
                    Ok(r) => map_memory = Some(map_memory::for_check(&r)),
                    Err(e) => log::warn!("map memory not measured: {e}"),
                }
                item(
                    Status::Ok,
                    format!(
                        "{} programs load and pass this kernel's verifier, as run and as trace load them (loaded, not attached)",
                        l.programs
                    ),
                )
            }
            Err(e) => item(Status::Fail, e),
        },
    };

    let bpf_stats = match std::fs::read_to_string(at("proc/sys/kernel/bpf_stats_enabled"))
        .map(|s| s.trim().to_string())
    {
        Ok(v) if v == "1" => item(
            Status::Info,
            "on (kernel.bpf_stats_enabled=1): every BPF program run costs ~20 ns more",
        ),
        Ok(_) => item(
            Status::Info,
            "off; `pgpreempt run --bpf-stats` turns them on while it runs",
        ),
        Err(e) => item(
            Status::Info,
            format!("unknown: /proc/sys/kernel/bpf_stats_enabled: {e}"),
        ),
    };

    let lockdown = match std::fs::read_to_string(at("sys/kernel/security/lockdown")) {
        Ok(s) => {
            let mode = s
                .split_whitespace()
                .find(|w| w.starts_with('['))
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
                .unwrap_or_else(|| s.trim().to_string());
            let note = if mode == "none" {
                String::new()
            } else {
                " (kprobes and fentry are refused; pgpreempt uses neither)".into()
            };
            item(Status::Info, format!("{mode}{note}"))
        }
        Err(_) => item(
            Status::Info,
            "unknown (securityfs not mounted at /sys/kernel/security)",
        ),
    };

    let clusters = postgres::find(&at("proc"), probes.version_of);

    let ok = [&btf, &privileges, &tracefs, &tracepoints, &bpf_programs]
        .iter()
        .all(|i| i.status != Status::Fail);
    CheckReport {
        ok,
        kernel: KernelCheck {
            release: k.release,
            preempt_model: k.preempt.model,
            preempt_model_source: k.preempt.source,
        },
        rseq_slice_extension: rseq,
        btf,
        tracefs,
        tracepoints,
        memory,
        privileges,
        bpf_programs,
        map_memory,
        bpf_stats,
        lockdown,
        clusters,
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn shown(i: &Item) -> String {
    match i.status {
        Status::Ok => format!("ok: {}", i.detail),
        Status::Warn => format!("WARNING: {}", i.detail),
        Status::Fail => format!("FAILED: {}", i.detail),
        Status::Info => i.detail.clone(),
    }
}

/// The check as readable lines.
pub fn render(c: &CheckReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgpreempt check: {}",
        if c.ok {
            "tracing can work on this host"
        } else {
            "tracing CANNOT work on this host"
        }
    );
    let r = &c.rseq_slice_extension;
    let lines: Vec<(&str, String)> = vec![
        ("kernel", c.kernel.release.clone()),
        (
            "preemption",
            format!(
                "{} (from {})",
                c.kernel.preempt_model, c.kernel.preempt_model_source
            ),
        ),
        (
            "rseq slices",
            format!(
                "supported: {} ({}); enabled: {} ({})",
                yes_no(r.supported),
                r.supported_source,
                yes_no(r.enabled),
                r.enabled_source
            ),
        ),
        ("BTF", shown(&c.btf)),
        ("tracefs", shown(&c.tracefs)),
        ("tracepoints", shown(&c.tracepoints)),
        ("memory events", shown(&c.memory.tracepoints)),
        ("NUMA", shown(&c.memory.numa)),
        ("privileges", shown(&c.privileges)),
        ("BPF programs", shown(&c.bpf_programs)),
        (
            "map memory",
            match (&c.map_memory, c.bpf_programs.status) {
                (Some(m), _) => m.detail.clone(),
                (None, Status::Ok) => "not measured (why is logged above)".to_string(),
                (None, _) => "not measured (the programs were not loaded)".to_string(),
            },
        ),
        ("BPF stats", shown(&c.bpf_stats)),
        ("lockdown", shown(&c.lockdown)),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "  {k:<13} {v}");
    }
    let _ = writeln!(out, "\nPostgreSQL clusters: {}", c.clusters.len());
    if c.clusters.is_empty() {
        let _ = writeln!(
            out,
            "  none running (a postgres process whose cwd holds a postmaster.pid naming it)"
        );
    }
    for cl in &c.clusters {
        let _ = writeln!(out, "  {}", cl.data_directory);
        let hp = match &cl.huge_pages {
            Some(h) if h.state == shared_memory::State::On => cl.huge_pages_detail.clone(),
            Some(_) => format!("WARNING: {}", cl.huge_pages_detail),
            None => format!("unknown: {}", cl.huge_pages_detail),
        };
        let rows = [
            (
                "version",
                format!(
                    "{} ({})",
                    cl.version.as_deref().unwrap_or("unknown"),
                    cl.version_source
                ),
            ),
            (
                "postmaster",
                format!(
                    "pid {}, {} processes, {} client backends, binary {}",
                    cl.postmaster_pid,
                    cl.processes,
                    cl.client_backends,
                    cl.binary.as_deref().unwrap_or("unreadable")
                ),
            ),
            (
                "s_lock",
                if cl.s_lock_probeable {
                    format!("probe-able: {}", cl.s_lock_detail)
                } else {
                    format!("WARNING: {}", cl.s_lock_detail)
                },
            ),
            ("huge pages", hp),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "    {k:<11} {v}");
        }
    }
    out
}

/// Loads (verifies) the kernel programs without attaching them, as a trace
/// session loads them (per-process counting on: the verifier sees that
/// code too) and as the daemon does, whose maps it measures.
pub fn load_programs() -> Result<Loaded, String> {
    use crate::kernel::probes::Probes;
    let mut trace = Probes::load(&map_memory::trace_config()).map_err(|e| e.to_string())?;
    trace.verify().map_err(|e| e.to_string())?;
    drop(trace);
    let mut daemon = Probes::load(&map_memory::daemon_config()).map_err(|e| e.to_string())?;
    let programs = daemon.verify().map_err(|e| e.to_string())?;
    let map_memory = crate::kernel::map_memory::measure(&daemon.ebpf)
        .map_err(|e| format!("reading the maps' /proc/self/fdinfo: {e}"));
    Ok(Loaded {
        programs,
        map_memory,
    })
}

/// `pgpreempt check` on this host.
pub fn run(json: bool) -> anyhow::Result<bool> {
    let load = load_programs;
    let report = gather(
        Path::new("/"),
        &Probes {
            rseq: rseq::probe(),
            load_programs: Some(&load),
            version_of: &postgres::run_version,
        },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(report.ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{fs, os::unix::fs::symlink};

    /// A fake host: /proc, /sys and /boot under a temporary root.
    struct Host {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    const ROOT_CAPS: &str = "Name:\tpgpreempt\nCapEff:\t000001ffffffffff\n";

    fn root_btf_dir(root: &std::path::Path) -> PathBuf {
        root.join("sys/kernel/btf")
    }

    impl Host {
        fn new() -> Host {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().to_path_buf();
            let h = Host { _tmp: tmp, root };
            h.write("proc/sys/kernel/osrelease", "7.0.1\n");
            h.write("proc/cmdline", "ro quiet\n");
            h.write("proc/self/status", ROOT_CAPS);
            h.write("proc/sys/kernel/bpf_stats_enabled", "0\n");
            // The running kernel's BTF: the check parses it.
            std::fs::create_dir_all(root_btf_dir(&h.root)).unwrap();
            std::os::unix::fs::symlink(
                crate::kernel::task_layout::VMLINUX_BTF,
                h.root.join("sys/kernel/btf/vmlinux"),
            )
            .unwrap();
            for tp in REQUIRED_TRACEPOINTS {
                h.write(
                    &format!("sys/kernel/tracing/events/{tp}/format"),
                    "name: x\n",
                );
            }
            h
        }
        fn write(&self, rel: &str, text: &str) {
            let p = self.root.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        fn remove(&self, rel: &str) {
            let p = self.root.join(rel);
            if p.is_dir() {
                fs::remove_dir_all(p).unwrap();
            } else {
                fs::remove_file(p).unwrap();
            }
        }
        /// A process: comm, title, parent, cwd, exe.
        fn process(&self, pid: u32, ppid: u32, title: &str, cwd: &Path, exe: &Path) {
            let d = format!("proc/{pid}");
            self.write(&format!("{d}/comm"), "postgres\n");
            self.write(&format!("{d}/cmdline"), &title.replace(' ', "\0"));
            self.write(
                &format!("{d}/stat"),
                &format!("{pid} (postgres) S {ppid} 1"),
            );
            symlink(cwd, self.root.join(&d).join("cwd")).unwrap();
            symlink(exe, self.root.join(&d).join("exe")).unwrap();
        }
        fn check(
            &self,
            rseq: rseq::Probe,
            load: Option<&dyn Fn() -> Result<Loaded, String>>,
        ) -> CheckReport {
            let version = |p: &Path| postgres::run_version(p);
            gather(
                &self.root,
                &Probes {
                    rseq,
                    load_programs: load,
                    version_of: &version,
                },
            )
        }
        /// A running cluster whose binary is a script printing a version.
        fn cluster(&self, smaps_fixture: Option<&str>) -> PathBuf {
            let data = self.root.join("data");
            fs::create_dir_all(&data).unwrap();
            fs::write(data.join("postmaster.pid"), "100\n").unwrap();
            fs::write(data.join("PG_VERSION"), "16\n").unwrap();
            let bin = self.root.join("bin/postgres");
            self.write(
                "bin/postgres",
                "#!/bin/sh\necho 'postgres (PostgreSQL) 16.4 (fixture)'\n",
            );
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
            self.process(
                100,
                1,
                "/usr/lib/postgresql/16/bin/postgres -D /data",
                &data,
                &bin,
            );
            self.process(101, 100, "postgres: checkpointer ", &data, &bin);
            self.process(102, 100, "postgres: u db [local] idle", &data, &bin);
            self.process(103, 100, "postgres: u db [local] UPDATE", &data, &bin);
            if let Some(f) = smaps_fixture {
                let text = fs::read_to_string(
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("tests/fixtures/smaps")
                        .join(f),
                )
                .unwrap();
                self.write("proc/100/smaps", &text);
            }
            data
        }
    }

    fn config_gz(h: &Host, text: &str) {
        use std::io::Write;
        let p = h.root.join("proc/config.gz");
        let mut e = flate2::write::GzEncoder::new(fs::File::create(p).unwrap(), Default::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap();
    }

    #[test]
    fn a_ready_host_with_a_cluster_on_4k_pages() {
        let h = Host::new();
        config_gz(&h, "CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_VOLUNTARY=y\n# CONFIG_RSEQ_SLICE_EXTENSION is not set\n");
        let data = h.cluster(Some("postmaster-4k-pages.smaps"));
        // All memory tracepoints but memcg reclaim's, on one NUMA node.
        for (_, hook) in crate::kernel::probes::MEMORY_PROGRAMS {
            if let crate::kernel::probes::Hook::OptionalBtf(category, name) = hook {
                if !name.starts_with("mm_vmscan_memcg") {
                    h.write(
                        &format!("sys/kernel/tracing/events/{category}/{name}/format"),
                        "name: x\n",
                    );
                }
            }
        }
        h.write("sys/devices/system/node/online", "0\n");
        let load = || {
            use crate::kernel::map_memory::{MapMemory, Shape};
            let group_stats = Shape {
                map_type: 6,
                key_size: 4,
                value_size: 864,
                max_entries: 128,
                flags: 0,
            };
            Ok(Loaded {
                programs: 12,
                map_memory: Ok(MapMemoryReport {
                    possible_cpus: 2,
                    maps: vec![MapMemory::new("GROUP_STATS", group_stats, 222_520, None, 2)],
                }),
            })
        };
        let c = h.check(rseq::Probe::Disabled, Some(&load));
        assert!(c.ok, "{c:#?}");
        assert_eq!(c.kernel.release, "7.0.1");
        assert_eq!(c.kernel.preempt_model, "voluntary");
        assert_eq!(
            c.kernel.preempt_model_source,
            "/proc/config.gz (PREEMPT_DYNAMIC default)"
        );
        assert_eq!(c.rseq_slice_extension.supported, Some(false));
        assert_eq!(c.bpf_programs.status, Status::Ok);
        assert_eq!(c.clusters.len(), 1);
        let cl = &c.clusters[0];
        assert_eq!(cl.data_directory, data.display().to_string());
        assert_eq!(cl.postmaster_pid, 100);
        assert_eq!(cl.version.as_deref(), Some("16.4"));
        assert!(cl.version_source.contains("--version"));
        assert_eq!((cl.processes, cl.client_backends), (4, 2));
        assert!(!cl.s_lock_probeable, "a shell script has no s_lock");
        assert_eq!(
            cl.huge_pages.as_ref().unwrap().state,
            shared_memory::State::Off
        );
        let text = render(&c);
        assert!(text.starts_with("pgpreempt check: tracing can work on this host\n"));
        assert!(text
            .contains("preemption    voluntary (from /proc/config.gz (PREEMPT_DYNAMIC default))"));
        assert!(
            text.contains("huge pages  WARNING: off: the main shared memory"),
            "{text}"
        );
        assert!(text.contains("pid 100, 4 processes, 2 client backends"));
        // 222,520 B here; 94 more CPUs of 128 x 864 B each at 96.
        assert!(
            text.contains(
                "  map memory    217.3 KiB here (2 CPUs), 10.1 MiB at 96 CPUs, 20.3 MiB at 192 (pgpreempt run, default sizes)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  memory events 11 of 13 memory tracepoints present; missing: vmscan/mm_vmscan_memcg_reclaim_begin, vmscan/mm_vmscan_memcg_reclaim_end (not attached: memory-cgroup reclaim stalls stay zero)\n"),
            "{text}"
        );
        assert!(
            text.contains("  NUMA          1 node: NUMA balancing never moves a task (numa_migrations stay zero; pages migrated are compaction's and mbind's only)\n"),
            "{text}"
        );
        // The JSON form has the same facts.
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["memory"]["numa_nodes"], 1);
        assert_eq!(v["memory"]["tracepoints"]["status"], "info");
        assert_eq!(
            v["memory"]["programs"][0],
            serde_json::json!({
                "program": "page_fault_user",
                "tracepoint": "exceptions/page_fault_user",
                "measures": "page faults by region, and faults while others spin",
                "present": true
            })
        );
        let memcg = v["memory"]["programs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["program"] == "memcg_reclaim_begin")
            .unwrap();
        assert_eq!(memcg["present"], false);
        assert_eq!(v["clusters"][0]["huge_pages"]["state"], "off");
        assert_eq!(v["ok"], true);
        assert_eq!(v["map_memory"]["daemon"]["bytes"], 222_520);
        assert_eq!(v["map_memory"]["daemon"]["at"][0]["cpus"], 96);
        assert_eq!(
            v["map_memory"]["daemon"]["at"][0]["bytes"],
            222_520 + 94 * 128 * 864
        );
    }

    #[test]
    fn huge_pages_on_and_versions_from_pg_version() {
        let h = Host::new();
        let data = h.cluster(Some("postmaster-hugetlb.smaps"));
        // A binary that does not answer --version: PG_VERSION gives the major.
        h.write("bin/postgres", "#!/bin/sh\nexit 1\n");
        let c = h.check(rseq::Probe::Unknown, None);
        let cl = &c.clusters[0];
        assert_eq!(
            cl.huge_pages.as_ref().unwrap().state,
            shared_memory::State::On
        );
        assert_eq!(cl.version.as_deref(), Some("16"));
        assert!(cl
            .version_source
            .starts_with(&format!("{}/PG_VERSION", data.display())));
        let text = render(&c);
        assert!(text.contains("huge pages  on: the main shared memory (/anon_hugepage (deleted), 144 MB) uses 2048 kB pages"), "{text}");
        // Unreadable smaps: said, not guessed.
        h.remove("proc/100/smaps");
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(c.clusters[0].huge_pages.is_none());
        assert!(render(&c).contains("huge pages  unknown: cannot read"));
    }

    #[test]
    fn preemption_model_sources() {
        // debugfs first, when readable.
        let h = Host::new();
        config_gz(&h, "CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_NONE=y\n");
        h.write(
            "sys/kernel/debug/sched/preempt",
            "none voluntary full (lazy)\n",
        );
        h.write("proc/cmdline", "preempt=full\n");
        let c = h.check(rseq::Probe::Unknown, None);
        assert_eq!(
            (
                c.kernel.preempt_model.as_str(),
                c.kernel.preempt_model_source.as_str()
            ),
            ("lazy", "/sys/kernel/debug/sched/preempt")
        );
        // Then preempt= on the command line of a PREEMPT_DYNAMIC kernel.
        h.remove("sys/kernel/debug");
        let c = h.check(rseq::Probe::Unknown, None);
        assert_eq!(c.kernel.preempt_model, "full");
        assert_eq!(c.kernel.preempt_model_source, "/proc/cmdline preempt=");
        // Then the config's choice; /boot/config-<release> without /proc/config.gz.
        h.remove("proc/config.gz");
        h.write("proc/cmdline", "ro\n");
        h.write(
            "boot/config-7.0.1",
            "CONFIG_PREEMPT_RT=y\nCONFIG_RSEQ_SLICE_EXTENSION=y\n",
        );
        let c = h.check(rseq::Probe::Answered(0), None);
        assert_eq!(
            (
                c.kernel.preempt_model.as_str(),
                c.kernel.preempt_model_source.as_str()
            ),
            ("rt", "/boot/config-7.0.1")
        );
        assert_eq!(c.rseq_slice_extension.supported, Some(true));
        assert_eq!(c.rseq_slice_extension.enabled, Some(true));
        assert!(c
            .rseq_slice_extension
            .supported_source
            .contains("/boot/config-7.0.1"));
        // Nothing at all: unknown, said so.
        h.remove("boot");
        let c = h.check(rseq::Probe::Unknown, None);
        assert_eq!(c.kernel.preempt_model, "unknown");
    }

    #[test]
    fn rseq_disabled_on_the_command_line() {
        let h = Host::new();
        config_gz(&h, "CONFIG_PREEMPT_LAZY=y\nCONFIG_RSEQ_SLICE_EXTENSION=y\n");
        h.write("proc/cmdline", "ro rseq_slice_ext=0\n");
        let c = h.check(rseq::Probe::Disabled, None);
        let r = &c.rseq_slice_extension;
        assert_eq!((r.supported, r.enabled), (Some(true), Some(false)));
        assert!(render(&c).contains("supported: yes (CONFIG_RSEQ_SLICE_EXTENSION=y in /proc/config.gz); enabled: no (rseq_slice_ext=off"));
    }

    #[test]
    fn what_makes_tracing_impossible() {
        // No privileges: fails, and the programs are not even tried.
        let h = Host::new();
        h.write("proc/self/status", "CapEff:\t0000000000000000\n");
        let load = || -> Result<Loaded, String> { panic!("must not load without privileges") };
        let c = h.check(rseq::Probe::Unknown, Some(&load));
        assert!(!c.ok);
        assert_eq!(c.privileges.status, Status::Fail);
        assert!(c.privileges.detail.contains("CAP_BPF"));
        assert!(render(&c).starts_with("pgpreempt check: tracing CANNOT work"));

        // tracefs not mounted: root mounts it (warning), others fail.
        let h = Host::new();
        h.remove("sys/kernel/tracing");
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(c.ok);
        assert_eq!(c.tracefs.status, Status::Warn);
        assert_eq!(
            c.memory.tracepoints.detail,
            "not checked: tracefs is not mounted"
        );
        h.write("proc/self/status", "CapEff:\t000000c000000000\n"); // CAP_BPF + CAP_PERFMON
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(!c.ok);
        assert_eq!(c.tracefs.status, Status::Fail);
        assert_eq!(c.privileges.status, Status::Warn, "no CAP_SYS_PTRACE");

        // A missing tracepoint.
        let h = Host::new();
        h.remove("sys/kernel/tracing/events/sched/sched_waking");
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(!c.ok);
        assert!(c.tracepoints.detail.contains("sched/sched_waking"));

        // Programs the verifier rejects.
        let h = Host::new();
        let load =
            || -> Result<Loaded, String> { Err("loading the eBPF programs failed: x".into()) };
        let c = h.check(rseq::Probe::Unknown, Some(&load));
        assert!(!c.ok);
        assert_eq!(c.bpf_programs.status, Status::Fail);

        // No BTF: the scheduler programs cannot load.
        let h = Host::new();
        h.remove("sys/kernel/btf");
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(!c.ok);
        assert_eq!(c.btf.status, Status::Fail);
        assert!(
            c.btf.detail.contains("CONFIG_DEBUG_INFO_BTF"),
            "{}",
            c.btf.detail
        );

        // No PostgreSQL is not a failure.
        let h = Host::new();
        let c = h.check(rseq::Probe::Unknown, None);
        assert!(c.ok);
        assert_eq!(c.btf.status, Status::Ok);
        assert!(c.clusters.is_empty());
        assert!(render(&c).contains("PostgreSQL clusters: 0\n  none running"));
    }
}
