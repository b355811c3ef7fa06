//! `cargo xtask soak --minutes N`: the daemon under connection churn for a
//! long time. A scratch PostgreSQL under `pgbench -C` (a new backend per
//! transaction), a scrape of /metrics every second, and at the start and
//! every minute the daemon's RSS, how full its kernel maps are, the number
//! of series it serves and its dropped events by reason; then whether RSS
//! and the series count stayed flat. Not part of CI or `cargo xtask test`.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    measure::{agent, mib, parse, scrape, sum, Bg, Rss},
    pg::Scratch,
    root, sh,
};

/// pgbench's clients and threads: a connection per transaction each.
const CLIENTS: &str = "8";
const THREADS: &str = "2";

/// The minute the last minutes are compared with: after start-up, and
/// after the daemon's `/findings` window (its snapshots of the last five
/// minutes, one every 10 s) has filled.
const REFERENCE_MINUTE: u64 = 6;

/// RSS is flat when each of the last minutes is within this of the
/// reference minute (KiB).
const RSS_FLAT_KIB: u64 = 1024;

/// The series count is flat when each of the last minutes is within this
/// share of the reference minute's.
const SERIES_FLAT: f64 = 0.02;

/// Minutes compared with the reference minute at the end.
const LAST_MINUTES: usize = 3;

/// The kernel maps whose fill is shown: the per-task and per-process ones.
const COUNTED_MAPS: [&str; 3] = ["TASKS", "PROC_INFO", "SEEDS"];

/// Drop reasons that are scheduler events the kernel did not run the
/// programs for (the agent's `snapshot::KERNEL_SKIPPED`), not the agent's.
const KERNEL_MISSES: [&str; 3] = ["switch_in_missed", "switch_out_missed", "waking_missed"];

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" {
    fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
}

/// What is read at the start and once a minute.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub minute: u64,
    pub rss: Rss,
    /// Sum of `pgpreempt_tracked_processes`.
    pub tracked: f64,
    /// Entries and capacity of the maps in `COUNTED_MAPS` (bpftool).
    pub maps: Vec<(String, u64, u64)>,
    /// Series in one scrape.
    pub series: usize,
    /// `pgpreempt_dropped_events_total` by reason.
    pub drops: BTreeMap<String, f64>,
}

pub fn run(minutes: u64) -> Result<()> {
    crate::pg::require_root()?;
    if minutes == 0 {
        bail!("--minutes: at least 1");
    }
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    // Ctrl-C and SIGTERM end the run early; everything is still cleaned up
    // (pgbench, the daemon and PostgreSQL are stopped by their drops).
    unsafe {
        signal(2, on_signal);
        signal(15, on_signal);
    }
    println!("== starting a scratch PostgreSQL cluster");
    let pg = Scratch::start_with(&["shared_buffers=32MB", "max_connections=50"])?;
    pg.init_pgbench(1)?;
    let (daemon, port) = agent(&[])?;
    let pid = daemon.0.id();
    println!("== pgpreempt run (pid {pid}) on 127.0.0.1:{port}");
    let secs = minutes * 60;
    let out = std::fs::File::create(pg.dir.join("pgbench.out"))?;
    let mut pgbench = Bg(pg
        .pgbench()
        .args(["-C", "-S", "-n", "-c", CLIENTS, "-j", THREADS])
        .args(["-T", &secs.to_string(), "postgres"])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .context("starting pgbench")?);
    println!(
        "== pgbench -C -S -c {CLIENTS} -j {THREADS} for {minutes} min, /metrics scraped every second\n"
    );
    println!("{}", header());
    let bpftool = crate::setup::which("bpftool");
    let started = Instant::now();
    let mut samples = vec![sample(0, pid, port, bpftool.as_deref())?];
    println!("{}", row(&samples[0]));
    let mut scrapes = 0u64;
    let mut failed_scrapes = 0u64;
    let mut next = Duration::from_secs(1);
    let mut ended = None;
    while started.elapsed() < Duration::from_secs(secs) {
        if STOP.load(Ordering::SeqCst) {
            ended = Some("interrupted");
            break;
        }
        if let Some(st) = pgbench.0.try_wait()? {
            if !st.success() {
                ended = Some("pgbench failed");
                break;
            }
            if started.elapsed() + Duration::from_secs(5) < Duration::from_secs(secs) {
                ended = Some("pgbench ended early");
                break;
            }
        }
        if let Some(wait) = next.checked_sub(started.elapsed()) {
            std::thread::sleep(wait.min(Duration::from_millis(200)));
            continue;
        }
        next += Duration::from_secs(1);
        match scrape(port) {
            Ok(body) if !body.is_empty() => scrapes += 1,
            _ => {
                if std::fs::metadata(format!("/proc/{pid}")).is_err() {
                    ended = Some("the daemon exited");
                    break;
                }
                failed_scrapes += 1;
            }
        }
        let minute = started.elapsed().as_secs() / 60;
        if minute > samples.last().map_or(0, |s| s.minute) && minute < minutes {
            let s = sample(minute, pid, port, bpftool.as_deref())?;
            println!("{}", row(&s));
            samples.push(s);
        }
    }
    if ended.is_none() {
        let s = sample(minutes, pid, port, bpftool.as_deref())?;
        println!("{}", row(&s));
        samples.push(s);
    }
    // pgbench prints its summary when its -T ends.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ended.is_none() && Instant::now() < deadline && pgbench.0.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(pgbench);
    let pgbench_out = std::fs::read_to_string(pg.dir.join("pgbench.out")).unwrap_or_default();
    drop(daemon);
    drop(pg);
    println!(
        "\n{}",
        summary(&samples, scrapes, failed_scrapes, &pgbench_out)
    );
    if let Some(why) = ended {
        println!(
            "(ended after {:.0} s: {why})",
            started.elapsed().as_secs_f64()
        );
    }
    println!("(pgbench, the daemon, the cluster and its files are gone)");
    Ok(())
}

fn sample(minute: u64, pid: u32, port: u16, bpftool: Option<&std::path::Path>) -> Result<Sample> {
    let body = scrape(port)?;
    let m = parse(&body);
    let drops = m
        .iter()
        .filter(|((n, _), _)| n == "pgpreempt_dropped_events_total")
        .map(|((_, l), v)| {
            let reason = l
                .trim_start_matches("reason=\"")
                .trim_end_matches('"')
                .to_string();
            (reason, *v)
        })
        .collect();
    Ok(Sample {
        minute,
        rss: Rss::of(pid)?,
        tracked: sum(&m, "pgpreempt_tracked_processes"),
        maps: bpftool.map(|b| map_fill(b, pid)).unwrap_or_default(),
        series: series(&body),
        drops,
    })
}

/// Series in a Prometheus text exposition.
pub fn series(body: &str) -> usize {
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// (name, entries, max entries) of the daemon's maps in `COUNTED_MAPS`,
/// from bpftool; the daemon's maps are those its file descriptors hold.
fn map_fill(bpftool: &std::path::Path, pid: u32) -> Vec<(String, u64, u64)> {
    let json = |args: &[&str]| -> Option<serde_json::Value> {
        let out = Command::new(bpftool).arg("-j").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    let held = map_ids(pid);
    let Some(maps) = json(&["map", "show"]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for m in maps.as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        let id = m["id"].as_u64().unwrap_or(0);
        if !held.contains(&id) || !COUNTED_MAPS.contains(&name) {
            continue;
        }
        let entries = json(&["map", "dump", "id", &id.to_string()])
            .and_then(|d| d.as_array().map(Vec::len))
            .unwrap_or(0);
        out.push((
            name.to_string(),
            entries as u64,
            m["max_entries"].as_u64().unwrap_or(0),
        ));
    }
    out.sort_by_key(|(n, ..)| COUNTED_MAPS.iter().position(|c| c == n));
    out
}

/// The ids of the BPF maps process `pid` holds (`map_id:` in its fdinfo).
fn map_ids(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

fn header() -> String {
    format!(
        "{:>4} {:>8} {:>8} {:>8} {:>7} {:<50} {:>6}  dropped events (non-zero)",
        "min", "RSS MiB", "anon", "maps", "tracked", "kernel maps (entries/max)", "series"
    )
}

fn row(s: &Sample) -> String {
    let maps = if s.maps.is_empty() {
        "(bpftool missing)".to_string()
    } else {
        s.maps
            .iter()
            .map(|(n, e, max)| format!("{n} {e}/{max}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let drops: Vec<String> = s
        .drops
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(r, v)| format!("{r}={v:.0}"))
        .collect();
    format!(
        "{:>4} {:>8} {:>8} {:>8} {:>7.0} {:<50} {:>6}  {}",
        s.minute,
        mib(s.rss.total),
        mib(s.rss.anon),
        mib(s.rss.bpf_maps),
        s.tracked,
        maps,
        s.series,
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(" ")
        }
    )
}

/// Whether RSS and the series count stayed flat, and the drops.
pub fn summary(samples: &[Sample], scrapes: u64, failed: u64, pgbench: &str) -> String {
    let mut out = String::from("== summary\n");
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return out;
    };
    let _ = writeln!(
        out,
        "{} minutes, {scrapes} scrapes ({failed} failed); RSS {} -> {} MiB (peak {} MiB, {} MiB of it BPF maps mapped in); series {} -> {}",
        last.minute,
        mib(first.rss.total),
        mib(last.rss.total),
        mib(last.rss.peak),
        mib(last.rss.bpf_maps),
        first.series,
        last.series
    );
    for l in pgbench
        .lines()
        .filter(|l| l.starts_with("number of transactions actually") || l.starts_with("tps"))
    {
        let _ = writeln!(out, "pgbench: {l}");
    }
    match flatness(samples) {
        None => {
            let _ = writeln!(
                out,
                "flat: not judged (needs minute {REFERENCE_MINUTE} and {LAST_MINUTES} minutes after it: --minutes {} or more)",
                REFERENCE_MINUTE + LAST_MINUTES as u64
            );
        }
        Some(f) => {
            let _ = writeln!(
                out,
                "RSS flat (each of the last {LAST_MINUTES} minutes within {} MiB of minute {}'s {} MiB): {} (largest difference {} MiB)",
                RSS_FLAT_KIB / 1024,
                f.reference,
                mib(f.reference_rss),
                yes(f.rss_flat),
                mib(f.rss_worst)
            );
            let _ = writeln!(
                out,
                "series flat (within {:.0}% of minute {}'s {}): {} (largest difference {})",
                SERIES_FLAT * 100.0,
                f.reference,
                f.reference_series,
                yes(f.series_flat),
                f.series_worst
            );
        }
    }
    let drops: Vec<String> = last
        .drops
        .iter()
        .map(|(r, v)| (r, v - first.drops.get(r).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(r, d)| {
            let whose = if KERNEL_MISSES.contains(&r.as_str()) {
                " (the kernel skipped the programs)"
            } else {
                ""
            };
            format!("{r} {d:.0}{whose}")
        })
        .collect();
    let _ = writeln!(
        out,
        "dropped events during the run: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

/// The comparison of the last minutes with minute [`REFERENCE_MINUTE`].
#[derive(Debug, PartialEq)]
pub struct Flatness {
    pub reference: u64,
    pub reference_rss: u64,
    pub reference_series: usize,
    pub rss_worst: u64,
    pub series_worst: usize,
    pub rss_flat: bool,
    pub series_flat: bool,
}

pub fn flatness(samples: &[Sample]) -> Option<Flatness> {
    let reference = samples.iter().find(|s| s.minute == REFERENCE_MINUTE)?;
    let last: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.minute > reference.minute)
        .rev()
        .take(LAST_MINUTES)
        .collect();
    if last.len() < LAST_MINUTES {
        return None;
    }
    let rss_worst = last
        .iter()
        .map(|s| s.rss.total.abs_diff(reference.rss.total))
        .max()?;
    let series_worst = last
        .iter()
        .map(|s| s.series.abs_diff(reference.series))
        .max()?;
    Some(Flatness {
        reference: reference.minute,
        reference_rss: reference.rss.total,
        reference_series: reference.series,
        rss_worst,
        series_worst,
        rss_flat: rss_worst <= RSS_FLAT_KIB,
        series_flat: series_worst as f64 <= reference.series as f64 * SERIES_FLAT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, rss: u64, series: usize) -> Sample {
        Sample {
            minute,
            rss: Rss {
                total: rss,
                ..Rss::default()
            },
            series,
            ..Sample::default()
        }
    }

    #[test]
    fn flat_is_the_last_three_minutes_against_minute_six() {
        let steady: Vec<Sample> = (0..=20).map(|m| at(m, 8000 + m * 50, 400)).collect();
        let f = flatness(&steady).unwrap();
        assert_eq!((f.reference, f.rss_worst), (6, 700));
        assert!(f.rss_flat && f.series_flat);
        // Start-up and the filling /findings window do not count.
        let mut late = steady.clone();
        late[0].rss.total = 30_000;
        late[5].series = 100;
        assert_eq!(flatness(&late), Some(f));
        // Growth past 1 MiB, or past 2% more series, is not flat.
        let mut growing = steady.clone();
        growing[20].rss.total = 8300 + 1025;
        growing[19].series = 409;
        let g = flatness(&growing).unwrap();
        assert!(!g.rss_flat && !g.series_flat, "{g:?}");
        // Too short to judge.
        assert_eq!(flatness(&steady[..9]), None);
        assert!(flatness(&steady[..10]).is_some());
    }

    #[test]
    fn the_summary_lists_drops_during_the_run() {
        let mut first = at(0, 8000, 400);
        first.drops = [("switch_in_missed".to_string(), 3.0)].into();
        let mut last = at(5, 8100, 400);
        last.drops = [
            ("switch_in_missed".to_string(), 10.0),
            ("task_map_full".to_string(), 0.0),
        ]
        .into();
        let s = summary(
            &[first, last],
            300,
            0,
            "tps = 340.5 (without initial connection time)\n",
        );
        assert!(
            s.contains("switch_in_missed 7 (the kernel skipped the programs)"),
            "{s}"
        );
        assert!(!s.contains("task_map_full"), "{s}");
        assert!(s.contains("pgbench: tps = 340.5"), "{s}");
        assert!(s.contains("flat: not judged"), "{s}");
        assert_eq!(
            series("# HELP a\n# TYPE a counter\na 1\nb{x=\"1\"} 2\n\n"),
            2
        );
    }
}
