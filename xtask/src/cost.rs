//! `cargo xtask cost`: each kernel program's mean run time from the
//! kernel's BPF statistics (run_time_ns / run_cnt), in five settings:
//! untraced tasks, traced tasks on one CPU, a process faulting fresh pages
//! untraced and traced (the memory programs), and PostgreSQL under pgbench;
//! then pgbench throughput without the agent, and with it with uprobes off
//! and on.
use std::process::{Command, Stdio};

use anyhow::Result;

use crate::{
    faults,
    measure::{agent, median, per_program, tps},
    pg::Scratch,
    root, sh,
};

fn with_agent(
    extra: &[&str],
    work: impl FnOnce() -> Result<()>,
) -> Result<Vec<(String, f64, f64)>> {
    let mut args = vec!["--bpf-stats"];
    args.extend_from_slice(extra);
    let (_agent, port) = agent(&args)?;
    work()?;
    per_program(port)
}

fn print(title: &str, rows: &[(String, f64, f64)], only: &[&str]) {
    println!("\n{title}");
    for (p, runs, ns) in rows {
        if only.is_empty() || only.contains(&p.as_str()) {
            println!("  {p:<26} {runs:>10.0} runs {ns:>7.0} ns/run");
        }
    }
}

/// The scheduler programs and the timer expiries that give a wake-up its
/// cause.
const SCHED: [&str; 6] = [
    "sched_switch",
    "sched_waking",
    "hrtimer_expire_entry",
    "hrtimer_expire_exit",
    "timer_expire_entry",
    "timer_expire_exit",
];

/// All five settings, or with `sched_only` the scheduler ones: the pipe
/// (untraced and traced) and PostgreSQL under pgbench.
pub fn run(sched_only: bool) -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    let pipe = || {
        sh(Command::new("taskset")
            .args(["-c", "0", "perf", "bench", "sched", "pipe", "-l", "200000"])
            .stdout(Stdio::null()))
    };
    let untraced = with_agent(&[], pipe)?;
    print(
        "untraced tasks (perf bench sched pipe on one CPU; nothing traced):",
        &untraced,
        &SCHED,
    );
    let traced = with_agent(&["--comm", "sched-pipe"], pipe)?;
    print(
        "traced tasks (the same, with --comm sched-pipe):",
        &traced,
        &SCHED,
    );

    if sched_only {
        return pgbench_mixed();
    }

    // The memory programs: a process faulting 100,000 fresh pages of a
    // private mapping, then of a shared one (its mmap and munmap take the
    // mmap_lock).
    const MEMORY: [&str; 4] = [
        "page_fault_user",
        "page_fault_kernel",
        "mmap_lock_start_locking",
        "mmap_lock_acquire_returned",
    ];
    let fault = || {
        faults::run(100_000, false)?;
        faults::run(100_000, true).map(|_| ())
    };
    let untraced = with_agent(&[], fault)?;
    print(
        "a faulting process, untraced (cargo xtask fault-loop; every task's faults on the host count):",
        &untraced,
        &MEMORY,
    );
    let traced = with_agent(&["--comm", faults::COMM], fault)?;
    print("the same, traced (--comm pgp-faults):", &traced, &MEMORY);
    pgbench_mixed()?;
    throughput()
}

/// PostgreSQL under pgbench, every program.
fn pgbench_mixed() -> Result<()> {
    let pg = Scratch::start()?;
    pg.init_pgbench(2)?;
    let mixed = with_agent(&[], || {
        tps(&pg, &["-c", "8", "-j", "2", "-T", "10"]).map(|_| ())
    })?;
    print(
        "PostgreSQL under pgbench (8 clients, 10 s; traced backends and untraced pgbench):",
        &mixed,
        &[],
    );
    drop(pg);
    Ok(())
}

/// pgbench TPS with no agent, the agent without uprobes, and the agent with
/// them, in interleaved rounds, on the workload that contends spinlocks
/// (select-only, `shared_buffers=2MB`, 32 clients).
fn throughput() -> Result<()> {
    const ROUNDS: usize = 3;
    let pg = Scratch::start_with(&["shared_buffers=2MB"])?;
    pg.init_pgbench(2)?;
    let bench = || tps(&pg, &["-S", "-c", "32", "-j", "2", "-T", "8"]);
    let configs: [(&str, Option<&[&str]>); 3] = [
        ("no agent", None),
        ("agent --no-uprobes", Some(&["--no-uprobes"])),
        ("agent (uprobes on)", Some(&[])),
    ];
    let mut rounds = vec![Vec::new(); configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, args)) in configs.iter().enumerate() {
            let t = match args {
                None => bench()?,
                Some(extra) => {
                    let _agent = agent(extra)?;
                    bench()?
                }
            };
            rounds[i].push(t);
        }
    }
    println!("\npgbench -S, 32 clients, shared_buffers=2MB, {ROUNDS} interleaved rounds of 8 s (median tps, ratio to no agent):");
    let base = median(&rounds[0]);
    for (i, (name, _)) in configs.iter().enumerate() {
        let m = median(&rounds[i]);
        let each: Vec<u64> = rounds[i].iter().map(|t| *t as u64).collect();
        println!(
            "  {name:<22} {m:>9.0} tps  {:.3}  (rounds: {each:?})",
            m / base
        );
    }
    Ok(())
}
