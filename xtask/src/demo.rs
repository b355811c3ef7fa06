//! `cargo xtask demo`: a scratch PostgreSQL under pgbench (more clients than
//! CPUs), traced by `pgpreempt run`, then a short summary of the metrics.
use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};

use crate::{
    measure::{free_port, parse, scrape, wait_up, Bg},
    pg::Scratch,
    root, sh,
};

fn label<'a>(labels: &'a str, key: &str) -> Option<&'a str> {
    labels
        .split(',')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=\"")))
        .map(|v| v.trim_end_matches('"'))
}

/// The `q` quantile's bucket bound from cumulative `le` buckets.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    buckets
        .iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

fn fmt_s(s: f64) -> String {
    if s.is_infinite() {
        ">8s".into()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else {
        format!("{:.1}ms", s * 1e3)
    }
}

pub fn run(seconds: u32) -> Result<()> {
    crate::pg::require_root()?;
    let root = root();
    sh(Command::new("cargo")
        .current_dir(&root)
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let clients = (cpus * 4).max(8);

    println!("== starting a scratch PostgreSQL cluster");
    let pg = Scratch::start()?;
    pg.init_pgbench(4)?;

    let port = free_port()?;
    println!("== starting pgpreempt run --listen 127.0.0.1:{port}");
    let agent = Bg(Command::new(root.join("target/release/pgpreempt"))
        .args([
            "run",
            "--bpf-stats",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .spawn()
        .context("starting pgpreempt")?);
    wait_up(port)?;
    let before = parse(&scrape(port)?);

    println!("== pgbench: {clients} clients on {cpus} CPUs for {seconds} s");
    let out = pg
        .pgbench()
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &cpus.to_string(),
            "-T",
            &seconds.to_string(),
            "postgres",
        ])
        .output()?;
    let tps = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("tps"))
        .unwrap_or("tps = ?")
        .to_string();
    let after = parse(&scrape(port)?);
    // The diagnosis of the daemon's window (here: the whole run).
    let findings = crate::measure::get(port, "/findings").unwrap_or_default();
    drop(agent);
    let cluster = pg.datadir().display().to_string();
    drop(pg);

    println!("\n== what pgpreempt saw ({tps})");
    summarize(&before, &after, &cluster, seconds as f64);
    print_findings(&findings);
    println!("\n(cluster, agent and temporary files removed)");
    Ok(())
}

/// The headline and statements of the daemon's `/findings`.
fn print_findings(body: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        println!("\n(no /findings answer)");
        return;
    };
    println!(
        "\n== the diagnosis (GET /findings; `pgpreempt diagnose` says the same for a session)"
    );
    for h in v["headline"].as_array().into_iter().flatten() {
        println!("{}", h.as_str().unwrap_or_default());
    }
    for f in v["findings"].as_array().into_iter().flatten() {
        if f["significant"] == true {
            println!("\n- {}", f["statement"].as_str().unwrap_or_default());
            for t in f["try"].as_array().into_iter().flatten() {
                println!("  try: {}", t.as_str().unwrap_or_default());
            }
        }
    }
}

fn summarize(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
    cluster: &str,
    secs: f64,
) {
    let delta = |name: &str, labels: &str| {
        let k = (name.to_string(), labels.to_string());
        after.get(&k).copied().unwrap_or(0.0) - before.get(&k).copied().unwrap_or(0.0)
    };
    println!(
        "{:<22} {:>10} {:>10} {:>12} {:>10} {:>10} {:>11} {:>10}",
        "backend_type", "invol/s", "vol/s", "preempted/s", "p99", "wake p50", "wake p99", "futex/s"
    );
    let mut types: Vec<String> = after
        .keys()
        .filter(|(n, l)| {
            n == "pgpreempt_context_switches_total" && label(l, "cluster") == Some(cluster)
        })
        .filter_map(|(_, l)| label(l, "backend_type").map(str::to_string))
        .collect();
    types.dedup();
    for bt in types {
        let gl = format!("cluster=\"{cluster}\",backend_type=\"{bt}\"");
        let invol = delta(
            "pgpreempt_context_switches_total",
            &format!("{gl},kind=\"involuntary\""),
        ) / secs;
        let vol = delta(
            "pgpreempt_context_switches_total",
            &format!("{gl},kind=\"voluntary\""),
        ) / secs;
        let preempted = delta("pgpreempt_preempted_seconds_sum", &gl) / secs;
        let hist = |name: &str| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = after
                .keys()
                .filter(|(n, l)| n == name && l.starts_with(&gl))
                .filter_map(|(n, l)| {
                    let le = label(l, "le")?;
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((le, delta(n, l)))
                })
                .collect();
            v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            v
        };
        let pre = hist("pgpreempt_preempted_seconds_bucket");
        let wake = hist("pgpreempt_wakeup_latency_seconds_bucket");
        let q = |b: &[(f64, f64)], q| quantile(b, q).map(fmt_s).unwrap_or_else(|| "-".into());
        let futex = delta("pgpreempt_futex_wait_seconds_count", &gl) / secs;
        if invol + vol == 0.0 {
            continue;
        }
        println!(
            "{:<22} {:>10.0} {:>10.0} {:>11.1}% {:>10} {:>10} {:>11} {:>10.0}",
            bt,
            invol,
            vol,
            preempted * 100.0,
            q(&pre, 0.99),
            q(&wake, 0.5),
            q(&wake, 0.99),
            futex
        );
    }
    // Lock holders: how much of the lock waiting their preemption caused.
    let sum_over = |name: &str| -> f64 {
        after
            .keys()
            .filter(|(n, l)| n == name && label(l, "cluster") == Some(cluster))
            .map(|(n, l)| delta(n, l))
            .sum()
    };
    let holders = sum_over("pgpreempt_lock_holder_preemptions_total");
    let delay = sum_over("pgpreempt_lock_waiter_delay_seconds_total");
    let waits = sum_over("pgpreempt_futex_wait_seconds_sum");
    println!(
        "\nlock holders preempted while others waited: {:.0}/s; the waiting they caused: {:.2} s/s, {:.1}% of all futex (lock) waiting",
        holders / secs,
        delay / secs,
        if waits > 0.0 { delay / waits * 100.0 } else { 0.0 }
    );
    let mut sites: Vec<(String, f64, f64)> = after
        .keys()
        .filter(|(n, l)| {
            n == "pgpreempt_spin_seconds_count" && label(l, "cluster") == Some(cluster)
        })
        .map(|(n, l)| {
            let site = label(l, "site").unwrap_or("?").to_string();
            (site, delta(n, l), delta("pgpreempt_spin_seconds_sum", l))
        })
        .filter(|(_, count, _)| *count > 0.0)
        .collect();
    sites.sort_by(|a, b| b.2.total_cmp(&a.2));
    if sites.is_empty() {
        println!("contended spinlocks (s_lock): none seen");
    } else {
        let top: Vec<String> = sites
            .iter()
            .take(5)
            .map(|(s, c, t)| format!("{s} ({c:.0} x, {})", fmt_s(*t)))
            .collect();
        println!(
            "contended spinlocks (s_lock), most time first: {}",
            top.join(", ")
        );
    }
    let total: f64 = after
        .iter()
        .filter(|((n, _), _)| n == "pgpreempt_bpf_program_run_seconds_total")
        .map(|((n, l), _)| delta(n, l))
        .sum();
    println!(
        "\npreempted/s: run-queue time after preemption per second of wall time (100% = one CPU's worth).\n\
         p99 columns: upper bound of the log2 bucket that holds the 99th percentile.\n\
         agent cost: {:.2}% of one CPU in its kernel programs.",
        total / secs * 100.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_and_quantiles() {
        let m = parse("# HELP x\nx_total{a=\"1\",b=\"2\"} 5\ny 2.5\n");
        assert_eq!(m[&("x_total".into(), "a=\"1\",b=\"2\"".into())], 5.0);
        assert_eq!(m[&("y".into(), "".into())], 2.5);
        assert_eq!(label("a=\"1\",le=\"0.5\"", "le"), Some("0.5"));
        let b = [
            (0.001, 50.0),
            (0.002, 98.0),
            (0.004, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(&b, 0.5), Some(0.001));
        assert_eq!(quantile(&b, 0.99), Some(0.004));
        assert_eq!(quantile(&[(1.0, 0.0)], 0.5), None);
    }
}
