//! `cargo xtask`: setup, test and demo for pgpreempt.
mod bench;
mod cost;
mod demo;
mod faults;
mod measure;
mod pg;
mod setup;
mod soak;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, set up, test and demo pgpreempt")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, rust-src, bpf-linker); idempotent.
    Setup,
    /// Run every test: unit tests, then the privileged tests that load the
    /// eBPF programs against a PostgreSQL the tests start themselves.
    Test {
        /// Extra arguments for the integration test binaries (a filter, say).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Overhead benchmarks, side by side with a floor program and a bpftrace
    /// peer; writes BENCHMARKS.md.
    Bench {
        /// A short run (under 3 minutes) with fewer rounds.
        #[arg(long)]
        quick: bool,
        /// Only the "Map memory" section (the agent's kernel maps, here and
        /// modelled at 96 and 192 CPUs; no workload), updated in place in
        /// BENCHMARKS.md.
        #[arg(long, conflicts_with = "quick")]
        map_memory: bool,
        /// Only the "Page-fault cost" section (a process touching fresh
        /// 4 KiB pages, with and without the agent, traced and untraced;
        /// about a minute), updated in place in BENCHMARKS.md.
        #[arg(long, conflicts_with_all = ["quick", "map_memory"])]
        faults: bool,
    },
    /// Each kernel program's mean cost (ns per run) from the kernel's BPF statistics.
    Cost {
        /// Only the scheduler programs (sched_switch, sched_waking, the
        /// timer expiries): `perf bench sched pipe` untraced and traced, and
        /// PostgreSQL under pgbench (about a minute).
        #[arg(long)]
        sched: bool,
    },
    /// The benchmarks' faulting process (run by `bench` and `cost`): maps
    /// fresh anonymous memory, touches each 4 KiB page once, unmaps it.
    #[command(hide = true)]
    FaultLoop {
        /// About this many pages (page faults).
        #[arg(long, default_value_t = 200_000)]
        pages: usize,
        /// A shared anonymous mapping instead of a private one.
        #[arg(long)]
        shared: bool,
    },
    /// The daemon for N minutes under connection churn (`pgbench -C`) and a
    /// scrape every second: RSS, map fill, series and drops at the start
    /// and every minute, then whether RSS and the series count stayed flat.
    /// Not run by CI or `test`.
    Soak {
        /// Minutes of churn.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
    },
    /// Show the main job: a scratch PostgreSQL under pgbench, traced for ~20 s.
    Demo {
        /// Seconds of pgbench load.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test { args } => setup::run().and_then(|()| test::run(&args)),
        Cmd::Bench {
            map_memory: true, ..
        } => setup::run().and_then(|()| bench::run_map_memory()),
        Cmd::Bench { faults: true, .. } => setup::run().and_then(|()| bench::run_faults()),
        Cmd::Bench { quick, .. } => setup::run().and_then(|()| bench::run(quick)),
        Cmd::FaultLoop { pages, shared } => faults::fault_loop(pages, shared),
        Cmd::Cost { sched } => setup::run().and_then(|()| cost::run(sched)),
        Cmd::Soak { minutes } => setup::run().and_then(|()| soak::run(minutes)),
        Cmd::Demo { seconds } => setup::run().and_then(|()| demo::run(seconds)),
    };
    if let Err(e) = r {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command, failing with its command line if it fails.
pub fn sh(cmd: &mut std::process::Command) -> anyhow::Result<()> {
    let st = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {cmd:?}: {e}"))?;
    anyhow::ensure!(st.success(), "{cmd:?} failed ({st})");
    Ok(())
}
