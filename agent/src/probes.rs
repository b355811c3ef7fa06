//! Loading the kernel programs with this kernel's tracepoint layout and
//! attaching them. Dropping [`Probes`] detaches and unloads everything;
//! nothing is pinned, so nothing outlives the agent.
use std::os::fd::OwnedFd;

use agent_common::config::CommFilter;
use aya::{
    maps::HashMap as BpfHashMap,
    programs::{ProgramError, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::{config::Config, error::AgentError, privileges, tracefs};

/// The compiled kernel programs (built by build.rs with aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pgpreempt"));

/// (program, tracepoint category, tracepoint name). Programs whose
/// tracepoint is missing on this kernel are skipped if optional.
const PROGRAMS: &[(&str, &str, &str, bool)] = &[
    ("sched_switch", "sched", "sched_switch", true),
    ("sched_wakeup", "sched", "sched_wakeup", true),
    ("sched_wakeup_new", "sched", "sched_wakeup_new", true),
    ("sched_process_exit", "sched", "sched_process_exit", true),
    ("sys_enter_futex", "syscalls", "sys_enter_futex", true),
    ("sys_exit_futex", "syscalls", "sys_exit_futex", true),
    (
        "sys_enter_futex_wait",
        "syscalls",
        "sys_enter_futex_wait",
        false,
    ),
    (
        "sys_exit_futex_wait",
        "syscalls",
        "sys_exit_futex_wait",
        false,
    ),
    (
        "sys_enter_futex_wake",
        "syscalls",
        "sys_enter_futex_wake",
        false,
    ),
    (
        "sys_exit_futex_wake",
        "syscalls",
        "sys_exit_futex_wake",
        false,
    ),
    (
        "sys_enter_futex_waitv",
        "syscalls",
        "sys_enter_futex_waitv",
        false,
    ),
    (
        "sys_exit_futex_waitv",
        "syscalls",
        "sys_exit_futex_waitv",
        false,
    ),
];

pub struct Probes {
    pub ebpf: Ebpf,
    /// The programs that are attached, by name.
    pub attached: Vec<&'static str>,
    /// Holds BPF_ENABLE_STATS on while the agent runs (`--bpf-stats`).
    _stats: Option<OwnedFd>,
    /// The tracefs root the layout was read from.
    tracefs: std::path::PathBuf,
}

impl Probes {
    /// Loads (but does not attach) the programs.
    pub fn load(cfg: &Config) -> Result<Probes, AgentError> {
        privileges::check()?;
        let root = tracefs::locate(cfg.tracefs.as_deref())?;
        let layout = tracefs::layout(&root)?;
        let comms = CommFilter::new(cfg.comms.iter().map(|c| c.as_bytes()))
            .ok_or_else(|| AgentError::Config("--comm: at most 8 names of 1 to 15 bytes".into()))?;
        let pid_filter: u32 = u32::from(!cfg.pids.is_empty());
        let per_process: u32 = u32::from(cfg.per_process);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("LAYOUT", &layout, true)
            .override_global("COMMS", &comms, true)
            .override_global("PID_FILTER", &pid_filter, true)
            .override_global("PER_PROCESS", &per_process, true)
            .map_max_entries("TASKS", cfg.max_tasks)
            .map_max_entries("PROC_STATS", cfg.max_processes)
            .map_max_entries("PROC_INFO", cfg.max_processes);
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(|e| {
            let msg = format!("{e:#}");
            if msg.contains("Operation not permitted") || msg.contains("EPERM") {
                AgentError::MissingPrivileges(format!(" ({msg})"))
            } else {
                AgentError::Load(msg)
            }
        })?;
        if !cfg.pids.is_empty() {
            let mut pids: BpfHashMap<_, u32, u32> =
                BpfHashMap::try_from(ebpf.map_mut("PIDS").ok_or(AgentError::Map {
                    map: "PIDS",
                    detail: "missing".into(),
                })?)
                .map_err(|e| AgentError::Map {
                    map: "PIDS",
                    detail: e.to_string(),
                })?;
            for &p in &cfg.pids {
                pids.insert(p, 1, 0).map_err(|e| AgentError::Map {
                    map: "PIDS",
                    detail: e.to_string(),
                })?;
            }
        }
        let stats = if cfg.bpf_stats {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
                    AgentError::Config(format!(
                        "--bpf-stats: enabling BPF run-time statistics failed ({e}): it needs CAP_SYS_ADMIN; without it, drop --bpf-stats and set the sysctl kernel.bpf_stats_enabled=1 instead"
                    ))
                })?,
            )
        } else {
            None
        };
        Ok(Probes {
            ebpf,
            attached: Vec::new(),
            _stats: stats,
            tracefs: root,
        })
    }

    /// Loads and attaches one program (alone: the benchmark floor).
    pub fn attach_one(
        &mut self,
        name: &'static str,
        category: &str,
        tp: &str,
    ) -> Result<(), AgentError> {
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| AgentError::Load(format!("program {name} missing from the object")))?
            .try_into()
            .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
        prog.load().map_err(|e| load_error(name, e))?;
        prog.attach(category, tp).map_err(|e| AgentError::Attach {
            program: format!("{name} to {category}/{tp}"),
            detail: format!("{e:#}"),
        })?;
        self.attached.push(name);
        Ok(())
    }

    /// Loads into the kernel and attaches every program whose tracepoint
    /// exists. On error, whatever was attached is detached when `self` drops.
    pub fn attach(&mut self) -> Result<(), AgentError> {
        for &(name, category, tp, required) in PROGRAMS {
            if !required && !self.tracefs.join("events").join(category).join(tp).exists() {
                log::debug!("tracepoint {category}/{tp} not on this kernel; {name} not attached");
                continue;
            }
            self.attach_one(name, category, tp)?;
        }
        Ok(())
    }
}

fn load_error(name: &str, e: ProgramError) -> AgentError {
    let msg = match &e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if io_error.kind() == std::io::ErrorKind::PermissionDenied
                && verifier_log.to_string().trim().is_empty()
            {
                return AgentError::MissingPrivileges(format!(" (loading {name}: {io_error})"));
            }
            format!("{io_error}\n{verifier_log}")
        }
        other => format!("{other:#}"),
    };
    AgentError::Load(format!("program {name}: {msg}"))
}
