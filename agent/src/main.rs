//! The `pgpreempt` command line.
use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pgpreempt::{
    check,
    config::{Config, DEFAULT_COMMS},
    daemon,
    trace::diff,
    trace::{self, TraceOptions},
};

/// The default metrics port. Prometheus's exporter range 9100-9999 is fully
/// allocated; 19432 is outside it and outside Linux's ephemeral ports.
const DEFAULT_LISTEN: &str = "127.0.0.1:19432";

#[derive(Parser)]
#[command(
    name = "pgpreempt",
    version,
    about = "Why did PostgreSQL get slower on this kernel? Lock-holder preemption, off-CPU time and futex waits of PostgreSQL processes, from eBPF."
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info")]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the exporter: trace PostgreSQL processes and serve Prometheus metrics.
    Run(RunArgs),
    /// Can this host be traced? Kernel, preemption model, RSEQ slice
    /// extension, BTF, tracefs, privileges, and every PostgreSQL cluster
    /// (version, s_lock, huge pages). Exits 1 when tracing cannot work.
    Check {
        /// Print the same as a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// An on-demand trace session: a live view every second, then a report
    /// (totals, memory, histograms, top lock holders, top spin sites).
    Trace(TraceArgs),
    /// A short trace session that prints only what it found, ranked: the
    /// causes that take the time of PostgreSQL processes, their evidence,
    /// and what to try. Exits 0 when nothing significant was found, 3 when
    /// something was (1: error, 2: bad usage).
    #[command(
        after_help = "Examples:\n  pgpreempt diagnose\n  pgpreempt diagnose --duration 2m --cluster /var/lib/postgresql/15/main\n  pgpreempt diagnose --json > findings.json; echo $?"
    )]
    Diagnose(DiagnoseArgs),
    /// Compare `trace --json` reports: BEFORE.json AFTER.json, or several
    /// per side, BEFORE.json... -- AFTER.json... (e.g. before and after a
    /// kernel upgrade). The environment, the load, each figure per second
    /// and per involuntary switch (mean and min..max per side), and a
    /// verdict that calls only changes beyond the spread within each side.
    Diff(DiffArgs),
    /// The kernel memory of the agent's maps with the default sizes, for
    /// `pgpreempt run` and `pgpreempt trace`, here and at 96 and 192 CPUs:
    /// the Markdown tables `cargo xtask bench` writes into BENCHMARKS.md.
    #[command(hide = true)]
    MapMemory,
    /// The benchmark floor: a sched_switch program that only counts, until
    /// SIGINT or SIGTERM (used by `cargo xtask bench`).
    #[command(hide = true)]
    Floor {
        /// Attach the tp_btf floor (the agent's attach type) instead of the
        /// classic tracepoint one.
        #[arg(long)]
        btf: bool,
    },
}

#[derive(clap::Args)]
struct DiffArgs {
    /// The baseline reports, before `--`; without `--`, exactly two
    /// reports: BEFORE AFTER.
    #[arg(value_name = "BEFORE")]
    before: Vec<PathBuf>,
    /// The reports to compare with them, after `--`.
    #[arg(last = true, value_name = "AFTER")]
    after: Vec<PathBuf>,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address for /metrics and /healthz.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    #[command(flatten)]
    select: SelectArgs,
    /// Turn on the kernel's BPF run-time statistics while running, for
    /// pgpreempt_bpf_program_* (costs ~20 ns per program run).
    #[arg(long)]
    bpf_stats: bool,
    #[command(flatten)]
    probes: ProbeArgs,
}

/// What to load, for `run` and `trace` alike.
#[derive(clap::Args)]
struct ProbeArgs {
    /// Do not attach the s_lock uprobes (no spin metrics).
    #[arg(long)]
    no_uprobes: bool,
    /// Processes traced at once (the kernel's per-process maps; a trace
    /// session's per-process counters take memory only for processes that
    /// exist).
    #[arg(long, default_value_t = agent_common::config::DEFAULT_MAX_PROCESSES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_processes: u32,
    // Help from `max_groups_help` (the cost per group, from the map types).
    #[arg(long, help = max_groups_help(), default_value_t = agent_common::config::DEFAULT_MAX_GROUPS,
          value_parser = clap::value_parser!(u32).range(2..=i64::from(agent_common::config::MAX_GROUPS)))]
    max_groups: u32,
    // Help from `max_spin_sites_help`.
    #[arg(long, help = max_spin_sites_help(), default_value_t = agent_common::config::DEFAULT_MAX_SPIN_SITES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_spin_sites: u32,
    /// tracefs mount point (default /sys/kernel/tracing, mounted if missing).
    #[arg(long)]
    tracefs: Option<PathBuf>,
}

impl ProbeArgs {
    /// The configuration these options and the selection describe.
    fn config(self, select: SelectArgs) -> anyhow::Result<Config> {
        let mut cfg = Config {
            max_processes: self.max_processes,
            max_groups: self.max_groups,
            max_spin_sites: self.max_spin_sites,
            tracefs: self.tracefs,
            uprobes: !self.no_uprobes,
            ..Config::default()
        };
        select.apply(&mut cfg)?;
        Ok(cfg)
    }
}

#[derive(clap::Args)]
struct TraceArgs {
    /// How long to trace: 30s, 2m, 1h (default: until Ctrl-C).
    #[arg(long, value_parser = trace::parse_duration)]
    duration: Option<Duration>,
    /// Only this cluster's processes (its data directory; it must be running).
    #[arg(long, value_name = "DATADIR")]
    cluster: Option<PathBuf>,
    /// Write the report as JSON to FILE (`-`: print it instead of the
    /// view and the text report).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also print the log2 histogram of each wait in the text report.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    probes: ProbeArgs,
}

#[derive(clap::Args)]
struct DiagnoseArgs {
    /// How long to trace: 30s, 2m, 1h.
    #[arg(long, value_parser = trace::parse_duration, default_value = "30s")]
    duration: Duration,
    /// Only this cluster's processes (its data directory; it must be running).
    #[arg(long, value_name = "DATADIR")]
    cluster: Option<PathBuf>,
    /// Print the diagnosis as JSON (the `findings` of a trace report, with
    /// the headline).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    select: SelectArgs,
    #[command(flatten)]
    probes: ProbeArgs,
}

#[derive(clap::Args)]
struct SelectArgs {
    /// Trace tasks with this comm (repeatable; replaces the default postgres, postmaster).
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    comms: Vec<String>,
    /// Trace only this process and its threads (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
}

impl SelectArgs {
    fn apply(self, cfg: &mut Config) -> anyhow::Result<()> {
        if !self.comms.is_empty() {
            cfg.comms = self.comms;
        } else {
            cfg.comms = DEFAULT_COMMS.iter().map(|s| s.to_string()).collect();
        }
        if cfg.comms.len() > agent_common::config::MAX_COMMS {
            anyhow::bail!("--comm: at most {} names", agent_common::config::MAX_COMMS);
        }
        cfg.pids = self.pids;
        Ok(())
    }
}

/// A comm as the kernel keeps it: 1 to 15 bytes.
/// `--max-groups`: what each group costs in kernel memory (the per-CPU and
/// the shared part of a group's statistics).
fn max_groups_help() -> String {
    use agent_common::stats::{GroupStats, SharedGroupStats};
    format!(
        "Label sets (cluster x backend_type) counted apart, 2 to {}; the rest are counted as cluster=\"overflow\". Each costs {} bytes per possible CPU of kernel memory, and {} bytes once.",
        agent_common::config::MAX_GROUPS,
        size_of::<GroupStats>(),
        size_of::<SharedGroupStats>()
    )
}

/// `--max-spin-sites`: what each site costs (its per-CPU statistics, and
/// its name once).
fn max_spin_sites_help() -> String {
    use agent_common::stats::{SiteName, SpinStats};
    format!(
        "Spinlock call sites counted (all clusters together); more are counted as dropped. Each costs {} bytes per possible CPU of kernel memory, and {} bytes once for its name.",
        size_of::<SpinStats>(),
        size_of::<SiteName>()
    )
}

fn parse_comm(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 {
        Err(format!(
            "{s:?}: a comm is 1 to 15 bytes (the kernel truncates longer names)"
        ))
    } else {
        Ok(s.to_string())
    }
}

/// The command line, with `diff`'s two sides checked: a bad one is a
/// usage error like clap's own.
fn parse() -> Result<Cli, clap::Error> {
    use clap::CommandFactory;
    let mut cli = Cli::try_parse()?;
    if let Command::Diff(d) = &mut cli.command {
        // clap does not tell `A B --` from `A B`: look for the separator.
        let separator = std::env::args_os().any(|a| a == "--");
        let (before, after) = diff::sides(
            std::mem::take(&mut d.before),
            std::mem::take(&mut d.after),
            separator,
        )
        .map_err(|e| {
            Cli::command().error(clap::error::ErrorKind::WrongNumberOfValues, e.to_string())
        })?;
        (d.before, d.after) = (before, after);
    }
    Ok(cli)
}

fn main() -> ExitCode {
    // Before anything sizeable is allocated (see daemon::heap).
    daemon::heap::tune();
    let cli = match parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // One line: clap's first line, and where to look.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "pgpreempt: {} (see pgpreempt --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp_millis()
        .init();
    match run(cli.command) {
        Ok(Outcome::Yes) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::FAILURE,
        Ok(Outcome::Found) => ExitCode::from(3),
        Err(e) => {
            // One line, the cause chain joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("pgpreempt: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// How a command that ran ends.
enum Outcome {
    /// Exit 0.
    Yes,
    /// The answer is "no" (check: tracing cannot work): exit 1.
    No,
    /// `diagnose` found something significant: exit 3.
    Found,
}

impl From<bool> for Outcome {
    fn from(ok: bool) -> Outcome {
        if ok {
            Outcome::Yes
        } else {
            Outcome::No
        }
    }
}

fn run(cmd: Command) -> anyhow::Result<Outcome> {
    match cmd {
        Command::Run(a) => {
            let cfg = Config {
                bpf_stats: a.bpf_stats,
                // The exporter aggregates per group only (see Config::per_process).
                per_process: false,
                ..a.probes.config(a.select)?
            };
            daemon::run(cfg, a.listen).map(|()| Outcome::Yes)
        }
        Command::Check { json } => check::run(json).map(Outcome::from),
        Command::Trace(a) => trace::run(TraceOptions {
            config: a.probes.config(a.select)?,
            duration: a.duration,
            cluster: a.cluster,
            json: a.json,
            verbose: a.verbose,
        })
        .map(|()| Outcome::Yes),
        Command::Diagnose(a) => {
            let opts = TraceOptions {
                config: a.probes.config(a.select)?,
                duration: Some(a.duration),
                cluster: a.cluster,
                json: None,
                verbose: false,
            };
            // Bad input is said before anything else.
            if let Some(dir) = &opts.cluster {
                trace::resolve_cluster(dir, &pgpreempt::postgres::processes::ProcFs::default())?;
            }
            eprintln!(
                "pgpreempt diagnose: tracing for {} ...",
                humantime::format_duration(a.duration)
            );
            let report = trace::record(&opts, false)?;
            let d = pgpreempt::diagnosis::diagnose(&report);
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&d).context("printing the diagnosis")?
                );
            } else {
                let what = match &report.selection.cluster {
                    Some(c) => format!("pgpreempt diagnose, cluster {c}"),
                    None => "pgpreempt diagnose".to_string(),
                };
                print!("{}", pgpreempt::diagnosis::render::full(&d, &what));
            }
            Ok(if d.significant {
                Outcome::Found
            } else {
                Outcome::Yes
            })
        }
        Command::Diff(DiffArgs {
            before,
            after,
            json,
        }) => {
            let d = diff::compare_files(&before, &after)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&d).context("printing the comparison")?
                );
            } else {
                print!("{}", diff::render(&d));
            }
            Ok(Outcome::Yes)
        }
        Command::MapMemory => {
            use check::map_memory::{daemon_config, load_and_measure, markdown, trace_config};
            let load = |cfg| {
                load_and_measure(&cfg)
                    .map(|(_, r)| r)
                    .map_err(anyhow::Error::msg)
            };
            let (daemon, trace) = (load(daemon_config())?, load(trace_config())?);
            print!("{}", markdown(&daemon, &trace));
            Ok(Outcome::Yes)
        }
        Command::Floor { btf } => daemon::floor(btf).map(|()| Outcome::Yes),
    }
}
