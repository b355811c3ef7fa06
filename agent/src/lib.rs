//! pgpreempt: why PostgreSQL got slower on a new kernel. eBPF programs on the
//! scheduler and futex tracepoints, aggregated in the kernel, served as
//! Prometheus metrics.
pub mod agent;
pub mod backend_type;
pub mod check;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod error;
pub mod exposition;
pub mod groups;
pub mod kernel_info;
pub mod privileges;
pub mod probes;
pub mod processes;
pub mod report_json;
pub mod server;
pub mod snapshot;
pub mod spin_sites;
pub mod task_layout;
pub mod task_seeds;
pub mod text_histogram;
pub mod text_table;
pub mod trace;
pub mod tracefs;
pub mod tracker;
pub mod uprobes;
