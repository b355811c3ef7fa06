//! Loading the kernel programs with this kernel's tracepoint layout and
//! attaching them. Dropping [`Probes`] detaches and unloads everything;
//! nothing is pinned, so nothing outlives the agent.
use std::os::fd::OwnedFd;

use agent_common::config::{CommFilter, MAX_GROUPS};
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
    /// The same on a tracepoint that only some kernels have (category, name
    /// as tracefs shows them): not attached where it is missing.
    OptionalBtf(&'static str, &'static str),
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
///
/// The memory programs (README, "Memory stalls") attach where the kernel
/// has their tracepoints; `pgpreempt check` says which it has.
pub const PROGRAMS: &[(&str, Hook)] = &[
    ("sched_switch", Hook::Btf("sched_switch")),
    // Timer expiries, for the cause of a wake-up: the exits first, so that
    // an expiry under way at attach time cannot leave a CPU counted inside
    // one (README, "Idle wake-ups").
    ("hrtimer_expire_exit", Hook::Btf("hrtimer_expire_exit")),
    ("timer_expire_exit", Hook::Btf("timer_expire_exit")),
    ("hrtimer_expire_entry", Hook::Btf("hrtimer_expire_entry")),
    ("timer_expire_entry", Hook::Btf("timer_expire_entry")),
    ("sched_waking", Hook::Btf("sched_waking")),
    ("sched_process_exit", Hook::Btf("sched_process_exit")),
    ("sched_process_fork", Hook::Btf("sched_process_fork")),
    MEMORY_PROGRAMS[0],
    MEMORY_PROGRAMS[1],
    MEMORY_PROGRAMS[2],
    MEMORY_PROGRAMS[3],
    MEMORY_PROGRAMS[4],
    MEMORY_PROGRAMS[5],
    MEMORY_PROGRAMS[6],
    MEMORY_PROGRAMS[7],
    MEMORY_PROGRAMS[8],
    MEMORY_PROGRAMS[9],
    MEMORY_PROGRAMS[10],
    MEMORY_PROGRAMS[11],
    MEMORY_PROGRAMS[12],
];

/// The memory programs and their tracepoints.
pub const MEMORY_PROGRAMS: [(&str, Hook); 13] = [
    (
        "page_fault_user",
        Hook::OptionalBtf("exceptions", "page_fault_user"),
    ),
    (
        "page_fault_kernel",
        Hook::OptionalBtf("exceptions", "page_fault_kernel"),
    ),
    (
        "mmap_lock_start_locking",
        Hook::OptionalBtf("mmap_lock", "mmap_lock_start_locking"),
    ),
    (
        "mmap_lock_acquire_returned",
        Hook::OptionalBtf("mmap_lock", "mmap_lock_acquire_returned"),
    ),
    (
        "direct_reclaim_begin",
        Hook::OptionalBtf("vmscan", "mm_vmscan_direct_reclaim_begin"),
    ),
    (
        "direct_reclaim_end",
        Hook::OptionalBtf("vmscan", "mm_vmscan_direct_reclaim_end"),
    ),
    (
        "memcg_reclaim_begin",
        Hook::OptionalBtf("vmscan", "mm_vmscan_memcg_reclaim_begin"),
    ),
    (
        "memcg_reclaim_end",
        Hook::OptionalBtf("vmscan", "mm_vmscan_memcg_reclaim_end"),
    ),
    (
        "compaction_begin",
        Hook::OptionalBtf("compaction", "mm_compaction_begin"),
    ),
    (
        "compaction_end",
        Hook::OptionalBtf("compaction", "mm_compaction_end"),
    ),
    (
        "sched_move_numa",
        Hook::OptionalBtf("sched", "sched_move_numa"),
    ),
    (
        "sched_swap_numa",
        Hook::OptionalBtf("sched", "sched_swap_numa"),
    ),
    (
        "mm_migrate_pages",
        Hook::OptionalBtf("migrate", "mm_migrate_pages"),
    ),
];

/// `BPF_F_NO_PREALLOC`: a hash map that allocates its elements as they are
/// inserted.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// The sizes (and flags) of the maps that depend on the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    pub proc_stats: u32,
    /// Creation flags of `PROC_STATS`: preallocated (0) when it is not
    /// used, so that its one entry costs one value per CPU; otherwise
    /// `BPF_F_NO_PREALLOC`, so that it holds memory only for the processes
    /// in it, not `max_processes` values per CPU. (Not preallocated, the
    /// kernel's allocator also keeps a cache of free values on every CPU,
    /// each with a copy per CPU: about 192 B x CPUs x CPUs, which `memlock`
    /// does not count; README, "Map memory".)
    pub proc_stats_flags: u32,
    pub groups: u32,
    pub spin_sites: u32,
}

impl MapSizes {
    /// What `cfg` needs: per-process counters only when it counts per
    /// process, spinlock sites only with the uprobes.
    pub fn of(cfg: &Config) -> Result<MapSizes, AgentError> {
        if !(2..=MAX_GROUPS).contains(&cfg.max_groups) {
            return Err(AgentError::Config(format!(
                "--max-groups: 2 to {MAX_GROUPS} (the unassigned and the overflow group count)"
            )));
        }
        if cfg.max_spin_sites == 0 || cfg.max_processes == 0 || cfg.max_tasks == 0 {
            return Err(AgentError::Config(
                "--max-spin-sites, --max-processes and the task map: at least 1 entry".into(),
            ));
        }
        Ok(MapSizes {
            proc_stats: if cfg.per_process {
                cfg.max_processes
            } else {
                1
            },
            proc_stats_flags: if cfg.per_process {
                BPF_F_NO_PREALLOC
            } else {
                0
            },
            groups: cfg.max_groups,
            spin_sites: if cfg.uprobes { cfg.max_spin_sites } else { 1 },
        })
    }
}

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
        let sizes = MapSizes::of(cfg)?;
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
            .map_max_entries("PROC_INFO", cfg.max_processes)
            // Maps the configuration does not use get one entry: a per-CPU
            // map's memory is multiplied by every possible CPU (README,
            // "Map memory"). PROC_STATS's flags are set below (MapSizes).
            .map_max_entries("PROC_STATS", sizes.proc_stats)
            .map_max_entries("GROUP_STATS", sizes.groups)
            .map_max_entries("SHARED_GROUP_STATS", sizes.groups)
            .map_max_entries("SPIN_SITES", sizes.spin_sites)
            .map_max_entries("SPIN_SITE_NAMES", sizes.spin_sites);
        let object = with_map_flags(EBPF_OBJECT, "PROC_STATS", sizes.proc_stats_flags)
            .map_err(AgentError::Load)?;
        let mut ebpf = loader.load(object.as_bytes()).map_err(|e| {
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
            Hook::Btf(tp) | Hook::OptionalBtf(_, tp) => {
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
            Hook::Btf(_) | Hook::OptionalBtf(..) => {
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
            Hook::Tracepoint(category, tp, false) | Hook::OptionalBtf(category, tp) => {
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

/// An object file copied to 8-byte aligned memory (as
/// `include_bytes_aligned!` gives it), for the loader.
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn new(bytes: &[u8]) -> AlignedObject {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        AlignedObject {
            words,
            len: bytes.len(),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes, and u8 has
        // no alignment requirement.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// The object with hash map `name` created with `flags`. aya 0.14 can size
/// a map at load time (`map_max_entries`) but not change its flags, so the
/// map's definition is patched: a `struct bpf_map_def` (type, key size,
/// value size, max entries, flags, id, pinning: little-endian u32s) in the
/// `maps` section, found through the symbol table.
pub fn with_map_flags(object: &[u8], name: &str, flags: u32) -> Result<AlignedObject, String> {
    use object::{Object, ObjectSection, ObjectSymbol};
    const FLAGS_AT: usize = 16;
    const DEF_SIZE: u64 = 28;
    let file = object::File::parse(object).map_err(|e| format!("the kernel object: {e}"))?;
    let sym = file
        .symbol_by_name(name)
        .ok_or_else(|| format!("map {name} missing from the kernel object"))?;
    let section = sym
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or_else(|| format!("map {name}: no section"))?;
    let (sec_off, sec_len) = section
        .file_range()
        .ok_or_else(|| format!("map {name}: its section has no data"))?;
    if section.name() != Ok("maps") || sym.size() != DEF_SIZE || sym.address() + DEF_SIZE > sec_len
    {
        return Err(format!(
            "map {name}: not a legacy map definition ({:?}, {} bytes)",
            section.name(),
            sym.size()
        ));
    }
    let at = usize::try_from(sec_off + sym.address()).map_err(|e| e.to_string())?;
    let map_type = u32::from_le_bytes(object[at..at + 4].try_into().expect("4 bytes"));
    // Hash, per-CPU hash: the only types for which the flag means this.
    if !matches!(map_type, 1 | 5) {
        return Err(format!("map {name}: type {map_type} is not a hash map"));
    }
    let mut out = AlignedObject::new(object);
    out.bytes_mut()[at + FLAGS_AT..at + FLAGS_AT + 4].copy_from_slice(&flags.to_le_bytes());
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `bpf_map_def` of map `name` in `object`, as seven u32s.
    fn def(object: &[u8], name: &str) -> [u32; 7] {
        use object::{Object, ObjectSection, ObjectSymbol};
        let file = object::File::parse(object).unwrap();
        let sym = file.symbol_by_name(name).unwrap();
        let sec = file.section_by_index(sym.section_index().unwrap()).unwrap();
        let at = (sec.file_range().unwrap().0 + sym.address()) as usize;
        std::array::from_fn(|i| {
            u32::from_le_bytes(object[at + 4 * i..at + 4 * i + 4].try_into().unwrap())
        })
    }

    #[test]
    fn proc_stats_flags_are_set_at_load() {
        // As agent-ebpf/src/maps.rs declares it: per-CPU hash, u32 key,
        // Counters, preallocated.
        let before = def(EBPF_OBJECT, "PROC_STATS");
        let value = std::mem::size_of::<agent_common::stats::Counters>() as u32;
        assert_eq!(before[..5], [5, 4, value, before[3], 0]);
        for flags in [BPF_F_NO_PREALLOC, 0] {
            let patched = with_map_flags(EBPF_OBJECT, "PROC_STATS", flags).unwrap();
            let bytes = patched.as_bytes();
            assert_eq!(bytes.as_ptr() as usize % 8, 0, "aligned for the loader");
            assert_eq!(bytes.len(), EBPF_OBJECT.len());
            let after = def(bytes, "PROC_STATS");
            assert_eq!(after[4], flags);
            assert_eq!((&after[..4], &after[5..]), (&before[..4], &before[5..]));
            // Nothing else moved: only those four bytes differ.
            let differ = bytes
                .iter()
                .zip(EBPF_OBJECT)
                .filter(|(a, b)| a != b)
                .count();
            assert!(differ <= 4);
            assert_eq!(def(bytes, "GROUP_STATS"), def(EBPF_OBJECT, "GROUP_STATS"));
        }
        assert!(with_map_flags(EBPF_OBJECT, "NO_SUCH_MAP", 1).is_err());
        // An array is refused: the flag would mean something else there.
        assert!(with_map_flags(EBPF_OBJECT, "GROUP_STATS", 1)
            .err()
            .unwrap()
            .contains("not a hash map"));
    }

    #[test]
    fn sizes_follow_the_configuration() {
        let trace = Config::default();
        let s = MapSizes::of(&trace).unwrap();
        assert_eq!(
            (s.proc_stats, s.proc_stats_flags),
            (trace.max_processes, BPF_F_NO_PREALLOC)
        );
        let daemon = Config {
            per_process: false,
            uprobes: false,
            ..Config::default()
        };
        let s = MapSizes::of(&daemon).unwrap();
        assert_eq!((s.proc_stats, s.proc_stats_flags, s.spin_sites), (1, 0, 1));
        assert_eq!(s.groups, agent_common::config::DEFAULT_MAX_GROUPS);
        for bad in [1, MAX_GROUPS + 1] {
            assert!(MapSizes::of(&Config {
                max_groups: bad,
                ..Config::default()
            })
            .is_err());
        }
    }
}
