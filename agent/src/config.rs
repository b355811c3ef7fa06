//! What to trace and with what limits: shared by `run` and the tests.
use std::path::PathBuf;

use agent_common::config::{
    DEFAULT_MAX_GROUPS, DEFAULT_MAX_PROCESSES, DEFAULT_MAX_SPIN_SITES, DEFAULT_MAX_TASKS,
};

/// The comms traced by default.
pub const DEFAULT_COMMS: &[&str] = &["postgres", "postmaster"];

#[derive(Debug, Clone)]
pub struct Config {
    /// Tasks whose `comm` is one of these are traced.
    pub comms: Vec<String>,
    /// If non-empty, only these processes (and their threads) are traced.
    pub pids: Vec<u32>,
    /// tracefs root; `None`: /sys/kernel/tracing, mounted if needed.
    pub tracefs: Option<PathBuf>,
    /// Processes classified at once (`PROC_INFO`), and in trace sessions
    /// also counted per process (`PROC_STATS`).
    pub max_processes: u32,
    pub max_tasks: u32,
    /// Label sets (`cluster` x `backend_type`), the unassigned and overflow
    /// groups included: entries of the per-CPU `GROUP_STATS`.
    pub max_groups: u32,
    /// Spinlock call sites (all clusters): entries of the per-CPU `SPIN_SITES`.
    pub max_spin_sites: u32,
    /// Keep BPF run-time statistics on while the agent runs.
    pub bpf_stats: bool,
    /// Keep the final counters of processes that exited (trace sessions).
    pub keep_departed: bool,
    /// Count per process as well as per group (trace sessions, tests). The
    /// daemon only needs groups, and skips this cost.
    pub per_process: bool,
    /// Attach the `s_lock` uprobes (spin metrics).
    pub uprobes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            comms: DEFAULT_COMMS.iter().map(|s| s.to_string()).collect(),
            pids: Vec::new(),
            tracefs: None,
            max_processes: DEFAULT_MAX_PROCESSES,
            max_tasks: DEFAULT_MAX_TASKS,
            max_groups: DEFAULT_MAX_GROUPS,
            max_spin_sites: DEFAULT_MAX_SPIN_SITES,
            bpf_stats: false,
            keep_departed: false,
            per_process: true,
            uprobes: true,
        }
    }
}
