//! The agent's errors. Each message says what to do about it.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "tracefs not found at {0}: mount it with `mount -t tracefs nodev /sys/kernel/tracing` (as root)"
    )]
    TracefsMissing(PathBuf),

    #[error(
        "cannot read tracefs at {0}: permission denied (tracefs is readable by root only: run as root or grant CAP_DAC_READ_SEARCH)"
    )]
    TracefsDenied(PathBuf),

    #[error(
        "missing privileges: pgpreempt needs CAP_BPF and CAP_PERFMON, plus CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read PostgreSQL's /proc entries and tracefs (run it as root or grant those capabilities){0}"
    )]
    MissingPrivileges(String),

    #[error("this kernel cannot run pgpreempt: {0} (Linux 5.15 or later with tracepoints, BTF and BPF is required)")]
    KernelUnsupported(String),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("loading the eBPF programs failed: {0}")]
    Load(String),

    #[error("attaching {program} failed: {detail}")]
    Attach { program: String, detail: String },

    #[error("eBPF map {map}: {detail}")]
    Map { map: &'static str, detail: String },

    #[error("invalid option: {0}")]
    Config(String),
}
