//! Shared by `demo`, `cost` and `bench`: running the agent beside a
//! workload and reading what it and pgbench report.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::{pg::Scratch, root};

/// A helper process, stopped with SIGTERM (the agent then detaches itself)
/// and reaped on every exit path.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        unsafe { kill(self.0.id() as i32, 15) };
        let _ = self.0.wait();
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

pub fn scrape(port: u16) -> Result<String> {
    get(port, "/metrics")
}

/// The body of `GET path` on the agent.
pub fn get(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until the agent serves metrics.
pub fn wait_up(port: u16) -> Result<()> {
    for _ in 0..200 {
        if scrape(port).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("pgpreempt did not start serving metrics")
}

/// (metric name, labels text) -> value.
pub fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let mut m = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if let Ok(v) = value.parse() {
            m.insert((name.to_string(), labels.to_string()), v);
        }
    }
    m
}

/// The agent binary: this tree's release build, or `PGPREEMPT_BIN` (to
/// measure another build the same way, e.g. before and after a change).
pub fn agent_bin() -> std::path::PathBuf {
    match std::env::var_os("PGPREEMPT_BIN") {
        Some(p) => p.into(),
        None => root().join("target/release/pgpreempt"),
    }
}

/// `pgpreempt run` on a free port with extra flags, once it serves metrics.
pub fn agent(extra: &[&str]) -> Result<(Bg, u16)> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["run", "--log-level", "warn", "--listen", &listen];
    args.extend_from_slice(extra);
    let a = Bg(Command::new(agent_bin())
        .args(&args)
        .spawn()
        .context("starting pgpreempt")?);
    wait_up(port)?;
    Ok((a, port))
}

/// Each program's (runs, ns per run) from a scrape of a `--bpf-stats` agent.
pub fn per_program(port: u16) -> Result<Vec<(String, f64, f64)>> {
    let m: BTreeMap<(String, String), f64> = parse(&scrape(port)?);
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

/// One pgbench run against the scratch cluster: its tps.
pub fn tps(pg: &Scratch, args: &[&str]) -> Result<f64> {
    let out = pg.pgbench().args(args).arg("postgres").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .context("pgbench printed no tps")?;
    Ok(line[6..]
        .split_whitespace()
        .next()
        .unwrap_or("nan")
        .parse()?)
}

/// The sum of every series of metric `name` in a parsed scrape.
pub fn sum(m: &BTreeMap<(String, String), f64>, name: &str) -> f64 {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| v)
        .sum()
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
