//! The kernel side: checks what this kernel offers, loads and attaches the
//! eBPF programs (tracepoints and uprobes), and reads their maps back as
//! plain sums.
pub mod kernel_info;
pub mod map_memory;
pub mod privileges;
pub mod probes;
pub mod rseq;
pub mod snapshot;
pub mod task_layout;
pub mod task_seeds;
pub mod tracefs;
pub mod uprobes;
