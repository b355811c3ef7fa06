//! `cargo xtask cost`: each kernel program's mean run time from the
//! kernel's BPF statistics (run_time_ns / run_cnt), in three settings:
//! untraced tasks, traced tasks on one CPU, and PostgreSQL under pgbench;
//! then pgbench throughput without the agent, and with it with uprobes off
//! and on.
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
    drop(pg);
    throughput()
}

/// pgbench TPS with no agent, the agent without uprobes, and the agent with
/// them, in interleaved rounds, on the workload that contends spinlocks
/// (select-only, `shared_buffers=2MB`, 32 clients).
fn throughput() -> Result<()> {
    const ROUNDS: usize = 3;
    let pg = Scratch::start_with(&["shared_buffers=2MB"])?;
    sh(pg
        .pgbench()
        .args(["-i", "-q", "-s", "2", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    let bench = || -> Result<f64> {
        let out = pg
            .pgbench()
            .args(["-S", "-c", "32", "-j", "2", "-T", "8", "postgres"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("tps = "))
            .context("pgbench printed no tps")?;
        Ok(line[6..].split_whitespace().next().unwrap_or("0").parse()?)
    };
    let configs: [(&str, Option<&[&str]>); 3] = [
        ("no agent", None),
        ("agent --no-uprobes", Some(&["--no-uprobes"])),
        ("agent (uprobes on)", Some(&[])),
    ];
    let mut tps = vec![Vec::new(); configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, args)) in configs.iter().enumerate() {
            let t = match args {
                None => bench()?,
                Some(extra) => {
                    let mut t = 0.0;
                    with_agent(extra, || {
                        t = bench()?;
                        Ok(())
                    })?;
                    t
                }
            };
            tps[i].push(t);
        }
    }
    println!("\npgbench -S, 32 clients, shared_buffers=2MB, {ROUNDS} interleaved rounds of 8 s (median tps, ratio to no agent):");
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = median(&tps[0]);
    for (i, (name, _)) in configs.iter().enumerate() {
        let m = median(&tps[i]);
        println!(
            "  {name:<22} {m:>9.0} tps  {:.3}  (rounds: {:?})",
            m / base,
            tps[i].iter().map(|t| *t as u64).collect::<Vec<_>>()
        );
    }
    Ok(())
}
