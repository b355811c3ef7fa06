//! Loading the kernel programs with this kernel's tracepoint layout and
//! attaching them. Dropping [`Probes`] detaches and unloads everything;
//! nothing is pinned, so nothing outlives the agent.
use std::os::fd::OwnedFd;

use agent_common::config::CommFilter;
use aya::{
    maps::HashMap as BpfHashMap,
    programs::{BtfTracePoint, ProgramError, TracePoint},
    Btf, Ebpf, EbpfLoader,
};

use crate::{
    config::Config, error::AgentError, kernel::privileges, kernel::task_layout, kernel::tracefs,
};

/// The compiled kernel programs (built by build.rs with aya-build).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pgpreempt"));

/// Where a program attaches.
#[derive(Clone, Copy, Debug)]
pub enum Hook {
    /// A tp_btf program on this raw tracepoint: called with the tracepoint's
    /// arguments (task pointers), without a formatted record.
    Btf(&'static str),
    /// A classic tracepoint (category, name); `required` unless it is one
    /// that only some kernels have.
    Tracepoint(&'static str, &'static str, bool),
}

/// Every program `pgpreempt run` attaches, by name. The scheduler events are
/// tp_btf (cheaper per event than the classic tracepoint; see
/// BENCHMARKS.md). Futex waits and wakes are read from the tasks' saved
/// registers by these same programs: no syscall tracepoint, whose slow
/// syscall path every task would pay for. Wakeup latency is the growth of
/// the task's own run-queue time (`sched_info.run_delay`) read at
/// `sched_switch`: no wakeup program.
pub const PROGRAMS: &[(&str, Hook)] = &[
    ("sched_switch", Hook::Btf("sched_switch")),
    ("sched_waking", Hook::Btf("sched_waking")),
    ("sched_process_exit", Hook::Btf("sched_process_exit")),
];

pub struct Probes {
    pub ebpf: Ebpf,
    /// The programs that are attached, by name.
    pub attached: Vec<&'static str>,
    /// Holds BPF_ENABLE_STATS on while the agent runs (`--bpf-stats`).
    _stats: Option<OwnedFd>,
    /// The tracefs root the layout was read from.
    tracefs: std::path::PathBuf,
    /// The kernel's BTF, parsed for the first tp_btf program.
    btf: Option<Btf>,
}

impl Probes {
    /// Loads (but does not attach) the programs.
    pub fn load(cfg: &Config) -> Result<Probes, AgentError> {
        privileges::check()?;
        let root = tracefs::locate(cfg.tracefs.as_deref())?;
        let layout = tracefs::layout(&root)?;
        let btf_path = std::path::Path::new(task_layout::VMLINUX_BTF);
        let task_layout = task_layout::read(btf_path)?;
        let syscalls = task_layout::read_syscalls(btf_path)?;
        log::debug!("{}", task_layout::describe(&task_layout));
        let comms = CommFilter::new(cfg.comms.iter().map(|c| c.as_bytes()))
            .ok_or_else(|| AgentError::Config("--comm: at most 8 names of 1 to 15 bytes".into()))?;
        let pid_filter: u32 = u32::from(!cfg.pids.is_empty());
        let per_process: u32 = u32::from(cfg.per_process);
        let mut loader = EbpfLoader::new();
        loader
            // No CO-RE relocations to apply (rustc emits none): drop the
            // loader's parsed copy of the kernel's BTF, which the tp_btf
            // programs parse again one at a time (see `attach`), so that two
            // copies are never held at once.
            .btf(None)
            .override_global("LAYOUT", &layout, true)
            .override_global("TASK_LAYOUT", &task_layout, true)
            .override_global("SYSCALLS", &syscalls, true)
            .override_global("COMMS", &comms, true)
            .override_global("PID_FILTER", &pid_filter, true)
            .override_global("PER_PROCESS", &per_process, true)
            .map_max_entries("TASKS", cfg.max_tasks)
            .map_max_entries("SEEDS", cfg.max_tasks)
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
            btf: None,
        })
    }

    /// Loads one program into the kernel (the verifier checks it).
    fn load_one(&mut self, name: &'static str, hook: Hook) -> Result<(), AgentError> {
        let program = program(&mut self.ebpf, name)?;
        match hook {
            Hook::Btf(tp) => {
                let prog: &mut BtfTracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
                let btf = match &self.btf {
                    Some(b) => b,
                    None => self.btf.insert(Btf::from_sys_fs().map_err(|e| {
                        AgentError::KernelUnsupported(format!("reading the kernel's BTF: {e}"))
                    })?),
                };
                prog.load(tp, btf).map_err(|e| load_error(name, e))
            }
            Hook::Tracepoint(..) => {
                let prog: &mut TracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
                prog.load().map_err(|e| load_error(name, e))
            }
        }
    }

    /// Loads and attaches one program (alone: the benchmark floor).
    pub fn attach_one(&mut self, name: &'static str, hook: Hook) -> Result<(), AgentError> {
        self.load_one(name, hook)?;
        let attach_error = |e: ProgramError| AgentError::Attach {
            program: format!("{name} to {hook:?}"),
            detail: format!("{e:#}"),
        };
        let program = program(&mut self.ebpf, name)?;
        match hook {
            Hook::Btf(_) => {
                let prog: &mut BtfTracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
                prog.attach().map_err(attach_error)?;
            }
            Hook::Tracepoint(category, tp, _) => {
                let prog: &mut TracePoint = program
                    .try_into()
                    .map_err(|e: ProgramError| AgentError::Load(e.to_string()))?;
                prog.attach(category, tp).map_err(attach_error)?;
            }
        }
        self.attached.push(name);
        Ok(())
    }

    /// False for an optional tracepoint this kernel lacks.
    fn on_this_kernel(&self, hook: Hook) -> bool {
        match hook {
            Hook::Tracepoint(category, tp, false) => {
                self.tracefs.join("events").join(category).join(tp).exists()
            }
            _ => true,
        }
    }

    /// Loads into the kernel and attaches every program whose tracepoint
    /// exists. On error, whatever was attached is detached when `self` drops.
    pub fn attach(&mut self) -> Result<(), AgentError> {
        for &(name, hook) in PROGRAMS {
            if !self.on_this_kernel(hook) {
                log::debug!("{hook:?} not on this kernel; {name} not attached");
                continue;
            }
            self.attach_one(name, hook)?;
        }
        self.btf = None; // only needed to load tp_btf programs
        Ok(())
    }

    /// Loads every program whose tracepoint exists into the kernel, so that
    /// the verifier checks it, without attaching any (`pgpreempt check`).
    /// Returns how many loaded; dropping `self` unloads them.
    pub fn verify(&mut self) -> Result<usize, AgentError> {
        let mut n = 0;
        for &(name, hook) in PROGRAMS {
            if self.on_this_kernel(hook) {
                self.load_one(name, hook)?;
                n += 1;
            }
        }
        self.btf = None;
        Ok(n)
    }
}

/// Program `name` of the object.
fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, AgentError> {
    ebpf.program_mut(name)
        .ok_or_else(|| AgentError::Load(format!("program {name} missing from the object")))
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
