//! `cargo xtask cost`: each kernel program's mean run time from the
//! kernel's BPF statistics (run_time_ns / run_cnt), in three settings:
//! untraced tasks, traced tasks on one CPU, and PostgreSQL under pgbench.
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::{
    demo::{parse, scrape, wait_up, Agent},
    pg::Scratch,
    root, sh,
};

fn per_program(port: u16) -> Result<Vec<(String, f64, f64)>> {
    let m = parse(&scrape(port)?);
    let mut out = Vec::new();
    for ((name, labels), runs) in &m {
        if name != "pgpreempt_bpf_program_runs_total" || *runs == 0.0 {
            continue;
        }
        let secs = m
            .get(&(
                "pgpreempt_bpf_program_run_seconds_total".to_string(),
                labels.clone(),
            ))
            .copied()
            .unwrap_or(0.0);
        let prog = labels
            .trim_start_matches("program=\"")
            .trim_end_matches('"')
            .to_string();
        out.push((prog, *runs, secs * 1e9 / runs));
    }
    Ok(out)
}

fn with_agent(
    extra: &[&str],
    work: impl FnOnce() -> Result<()>,
) -> Result<Vec<(String, f64, f64)>> {
    let port = crate::demo::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "run",
        "--bpf-stats",
        "--log-level",
        "warn",
        "--listen",
        &listen,
    ];
    args.extend_from_slice(extra);
    let _agent = Agent(
        Command::new(root().join("target/release/pgpreempt"))
            .args(&args)
            .spawn()
            .context("starting pgpreempt")?,
    );
    wait_up(port)?;
    work()?;
    per_program(port)
}

fn print(title: &str, rows: &[(String, f64, f64)], only: &[&str]) {
    println!("\n{title}");
    for (p, runs, ns) in rows {
        if only.is_empty() || only.contains(&p.as_str()) {
            println!("  {p:<22} {runs:>10.0} runs {ns:>7.0} ns/run");
        }
    }
}

pub fn run() -> Result<()> {
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
        &["sched_switch", "sched_wakeup"],
    );
    let traced = with_agent(&["--comm", "sched-pipe"], pipe)?;
    print(
        "traced tasks (the same, with --comm sched-pipe):",
        &traced,
        &["sched_switch", "sched_wakeup"],
    );

    let pg = Scratch::start()?;
    sh(pg
        .pgbench()
        .args(["-i", "-q", "-s", "2", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    let mixed = with_agent(&[], || {
        sh(pg
            .pgbench()
            .args(["-c", "8", "-j", "2", "-T", "10", "postgres"])
            .stdout(Stdio::null()))
    })?;
    print(
        "PostgreSQL under pgbench (8 clients, 10 s; traced backends and untraced pgbench):",
        &mixed,
        &[],
    );
    Ok(())
}
