//! pgpreempt: why PostgreSQL got slower on a new kernel. eBPF programs on the
//! scheduler and futex tracepoints, aggregated in the kernel, served as
//! Prometheus metrics.
//!
//! The folders follow the data: `kernel` loads and attaches the programs and
//! reads their maps; `postgres` knows PostgreSQL's processes and gives the
//! kernel their labels; `agent` ties the two together; `diagnosis` names
//! the causes in a session's figures; the outputs are `daemon`
//! (`pgpreempt run`, `/findings`), `trace` (`trace`, `diagnose` and
//! `diff`) and `check`. The diagnosis reads the session report that
//! `trace` defines (`trace::report_json`), which the daemon also builds.
//! Imports point down that path: an output may use the model and the kernel
//! side, the model may use the kernel side, never the other way.
pub mod agent;
pub mod check;
pub mod config;
pub mod daemon;
pub mod diagnosis;
pub mod error;
pub mod kernel;
pub mod postgres;
pub mod trace;
