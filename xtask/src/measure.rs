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

/// What a process holds in memory now (KiB), from `/proc/PID/status` and
/// `/proc/PID/smaps`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rss {
    /// VmRSS: everything resident.
    pub total: u64,
    /// RssAnon: heap, stacks and other private memory.
    pub anon: u64,
    /// VmHWM: the peak of `total` so far.
    pub peak: u64,
    /// BPF maps mapped into the process (ring buffers, mmapable arrays),
    /// part of `total`.
    pub bpf_maps: u64,
}

impl Rss {
    pub fn of(pid: u32) -> Result<Rss> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("process {pid} is gone"))?;
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        Ok(Rss::parse(&status, &smaps))
    }

    pub fn parse(status: &str, smaps: &str) -> Rss {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let mut bpf_maps = 0;
        let mut in_map = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                in_map = line.ends_with("anon_inode:bpf-map");
            } else if let (true, Some(v)) = (in_map, line.strip_prefix("Rss:")) {
                bpf_maps += v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Rss {
            total: field("VmRSS:"),
            anon: field("RssAnon:"),
            peak: field("VmHWM:"),
            bpf_maps,
        }
    }
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_from_status_and_smaps() {
        let status = "Name:\tpgpreempt\nVmHWM:\t   25400 kB\nVmRSS:\t    7700 kB\nRssAnon:\t     960 kB\nRssFile:\t    6740 kB\n";
        let smaps = "\
55f6e69ed000-55f6e6db8000 r--p 00000000 fd:01 123 /usr/bin/pgpreempt
Rss:                2988 kB
7f35a7d76000-7f35a7db7000 rw-s 00000000 00:0f 45 anon_inode:bpf-map
Rss:                 260 kB
7f35a7d55000-7f35a7d76000 r--s 00000000 00:0f 45 anon_inode:bpf-map
Size:                132 kB
Rss:                 132 kB
7ffc8897c000-7ffc8899d000 rw-p 00000000 00:00 0 [stack]
Rss:                  80 kB
";
        assert_eq!(
            Rss::parse(status, smaps),
            Rss {
                total: 7700,
                anon: 960,
                peak: 25400,
                bpf_maps: 392
            }
        );
        assert_eq!(mib(7700), "7.5");
    }
}
