//! `cargo xtask bench`: what the agent costs, measured side by side in one
//! run (these machines are shared and noisy, so only ratios from interleaved
//! rounds are reported). Writes BENCHMARKS.md and prints the same tables.
use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    faults,
    measure::{agent, agent_bin, median, mib, parse, per_program, scrape, sum, tps, Bg, Rss},
    pg::Scratch,
    root, sh,
};

/// The peer: a bpftrace runqlat-style script (the issue's, verbatim).
const PEER: &str = include_str!("../bench/runqlat-peer.bt");

struct Plan {
    rounds: usize,
    pipe_loops: u32,
    pairs: usize,
    pair_secs: u32,
    /// Pages the fault loop touches per run.
    fault_pages: usize,
}

impl Plan {
    fn quick() -> Plan {
        Plan {
            rounds: 5,
            pipe_loops: 20_000,
            pairs: 2,
            pair_secs: 5,
            fault_pages: 100_000,
        }
    }
    fn full() -> Plan {
        Plan {
            rounds: 7,
            pipe_loops: 100_000,
            pairs: 5,
            pair_secs: 20,
            fault_pages: 300_000,
        }
    }
}

/// One `perf bench sched pipe` on CPU 0: µs per operation.
fn pipe(loops: u32) -> Result<f64> {
    let out = Command::new("taskset")
        .args([
            "-c",
            "0",
            "perf",
            "bench",
            "sched",
            "pipe",
            "-l",
            &loops.to_string(),
        ])
        .output()
        .context("running perf bench (Debian package linux-perf)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("usecs/op"))
        .context("perf bench printed no usecs/op")?;
    Ok(line.split_whitespace().next().unwrap_or("nan").parse()?)
}

#[derive(Clone, Copy, PartialEq)]
enum Cfg {
    Baseline,
    Agent,
    AgentTraced,
    Floor,
    FloorBtf,
    Peer,
}

impl Cfg {
    const ALL: [Cfg; 6] = [
        Cfg::Baseline,
        Cfg::Agent,
        Cfg::AgentTraced,
        Cfg::Floor,
        Cfg::FloorBtf,
        Cfg::Peer,
    ];
    fn name(self) -> &'static str {
        match self {
            Cfg::Baseline => "no agent",
            Cfg::Agent => "pgpreempt (default)",
            Cfg::AgentTraced => "pgpreempt, ping-pong traced (--comm sched-pipe)",
            Cfg::Floor => "floor: one program counting sched_switch (classic tracepoint)",
            Cfg::FloorBtf => "floor: one program counting sched_switch (tp_btf, as the agent)",
            Cfg::Peer => "peer: bpftrace runqlat-style script",
        }
    }
    /// Starts what this configuration runs beside the benchmark.
    fn start(self) -> Result<Option<Bg>> {
        Ok(match self {
            Cfg::Baseline => None,
            Cfg::Agent | Cfg::AgentTraced => {
                let extra: &[&str] = if self == Cfg::AgentTraced {
                    &["--comm", "sched-pipe"]
                } else {
                    &[]
                };
                Some(agent(extra)?.0)
            }
            Cfg::Floor | Cfg::FloorBtf => {
                let mut c = Command::new(agent_bin());
                c.args(["floor", "--log-level", "warn"]);
                if self == Cfg::FloorBtf {
                    c.arg("--btf");
                }
                let c = c.spawn()?;
                std::thread::sleep(Duration::from_millis(800));
                Some(Bg(c))
            }
            Cfg::Peer => {
                let c = Command::new("bpftrace")
                    .args(["-e", PEER])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting bpftrace (Debian package bpftrace)")?;
                std::thread::sleep(Duration::from_secs(4));
                Some(Bg(c))
            }
        })
    }
}

/// A configuration whose own rounds spread by more than this (largest over
/// smallest) saw other load come and go: its ratios are not evidence.
const NOISE_LIMIT: f64 = 1.25;

/// Largest over smallest sample.
fn spread(v: &[f64]) -> f64 {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    hi / lo
}

/// How a target reads in the report: met, missed, or not judged because the
/// baseline itself moved by more than [`NOISE_LIMIT`].
fn verdict(ok: bool, baseline_spread: f64) -> String {
    if baseline_spread > NOISE_LIMIT || baseline_spread.is_nan() {
        format!("inconclusive: the baseline's own rounds spread {baseline_spread:.2} x (other load on the machine); rerun when it is quiet")
    } else if ok {
        "met".into()
    } else {
        "**missed**".into()
    }
}

struct Switches {
    ratios: Vec<(Cfg, f64)>,
    baseline_spread: f64,
}

fn context_switches(plan: &Plan, out: &mut String) -> Result<Switches> {
    let mut us: Vec<Vec<f64>> = vec![Vec::new(); Cfg::ALL.len()];
    for round in 0..plan.rounds {
        eprintln!("bench: context-switch round {}/{}", round + 1, plan.rounds);
        for (i, cfg) in Cfg::ALL.iter().enumerate() {
            let _running = cfg.start()?;
            us[i].push(pipe(plan.pipe_loops)?);
        }
    }
    let base = median(&us[0]);
    writeln!(
        out,
        "| configuration | µs/op (median of {}) | ratio to no agent | rounds |",
        plan.rounds
    )?;
    writeln!(out, "|---|---|---|---|")?;
    let mut ratios = Vec::new();
    for (i, cfg) in Cfg::ALL.iter().enumerate() {
        let m = median(&us[i]);
        let rounds: Vec<String> = us[i].iter().map(|v| format!("{v:.2}")).collect();
        writeln!(
            out,
            "| {} | {m:.2} | {:.3} | {} |",
            cfg.name(),
            m / base,
            rounds.join(" ")
        )?;
        ratios.push((*cfg, m / base));
    }
    let baseline_spread = spread(&us[0]);
    if baseline_spread > NOISE_LIMIT {
        writeln!(out, "\n**Noisy run:** the no-agent rounds alone spread {baseline_spread:.2} x, so other load came and went during this table.")?;
    }
    Ok(Switches {
        ratios,
        baseline_spread,
    })
}

/// The fault loop beside: nothing, the agent (the loop untraced), the agent
/// tracing it (`--comm pgp-faults`).
const FAULT_CFGS: [(&str, Option<&[&str]>); 3] = [
    ("no agent", None),
    ("pgpreempt (default), loop untraced", Some(&[])),
    (
        "pgpreempt, loop traced (--comm pgp-faults)",
        Some(&["--comm", faults::COMM]),
    ),
];

/// The mappings the loop faults on: (name, shared).
const MAPPINGS: [(&str, bool); 2] = [("private", false), ("shared", true)];

/// Ratios to no agent of the fault microbenchmark: `[mapping][cfg]`.
struct Faults {
    ratios: [[f64; 3]; 2],
    /// Of the private mapping's no-agent rounds.
    baseline_spread: f64,
}

/// The fault microbenchmark: interleaved rounds of the loop beside each of
/// [`FAULT_CFGS`], on a private and a shared anonymous mapping; then the
/// memory programs' own cost from the kernel's BPF statistics.
fn page_faults(plan: &Plan, out: &mut String) -> Result<Faults> {
    // [mapping][cfg] -> ns per page of each round.
    let mut ns: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); FAULT_CFGS.len()]; MAPPINGS.len()];
    let (mut faults_seen, mut pages) = (0u64, 0u64);
    for round in 0..plan.rounds {
        eprintln!("bench: page-fault round {}/{}", round + 1, plan.rounds);
        for (c, (_, extra)) in FAULT_CFGS.iter().enumerate() {
            let _running = match extra {
                Some(extra) => Some(agent(extra)?.0),
                None => None,
            };
            for (m, (_, shared)) in MAPPINGS.iter().enumerate() {
                let r = faults::run(plan.fault_pages, *shared)?;
                ns[m][c].push(r.ns_per_page);
                faults_seen += r.faults;
                pages += r.pages;
            }
        }
    }
    writeln!(
        out,
        "| mapping | configuration | ns per page (median of {}) | ratio to no agent | rounds |\n|---|---|---|---|---|",
        plan.rounds
    )?;
    let mut ratios = [[f64::NAN; 3]; 2];
    for (m, (mapping, _)) in MAPPINGS.iter().enumerate() {
        let base = median(&ns[m][0]);
        for (c, (name, _)) in FAULT_CFGS.iter().enumerate() {
            let v = median(&ns[m][c]);
            ratios[m][c] = v / base;
            let rounds: Vec<String> = ns[m][c].iter().map(|v| format!("{v:.0}")).collect();
            writeln!(
                out,
                "| {mapping} | {name} | {v:.0} | {:.3} | {} |",
                v / base,
                rounds.join(" ")
            )?;
        }
    }
    writeln!(
        out,
        "\nThe kernel counted {:.3} minor faults per page touched ({faults_seen} faults, {pages} pages).",
        faults_seen as f64 / pages.max(1) as f64
    )?;
    let baseline_spread = spread(&ns[0][0]);
    if baseline_spread > NOISE_LIMIT {
        writeln!(out, "\n**Noisy run:** the no-agent rounds alone spread {baseline_spread:.2} x, so other load came and went during this table.")?;
    }

    // The programs' own cost: one loop of each mapping beside an agent with
    // BPF statistics, untraced and traced.
    let mut stats = Vec::new();
    for (_, extra) in &FAULT_CFGS[1..] {
        let mut args = vec!["--bpf-stats"];
        args.extend_from_slice(extra.unwrap_or(&[]));
        let (_a, port) = agent(&args)?;
        for (_, shared) in MAPPINGS {
            faults::run(plan.fault_pages, shared)?;
        }
        stats.push(per_program(port)?);
    }
    writeln!(
        out,
        "\nThe memory programs' cost (kernel BPF statistics, `run_time_ns / run_cnt`), one loop of each mapping beside an agent with `--bpf-stats`; the untraced runs include every other task's faults and `mmap_lock` calls on the host meanwhile:\n\n| program | untraced: runs | ns/run | traced: runs | ns/run |\n|---|---|---|---|---|"
    )?;
    for prog in FAULT_PROGRAMS {
        let cell = |rows: &[(String, f64, f64)]| {
            rows.iter()
                .find(|(p, ..)| p == prog)
                .map_or("0 | -".to_string(), |(_, runs, ns)| {
                    format!("{runs:.0} | {ns:.0}")
                })
        };
        writeln!(
            out,
            "| `{prog}` | {} | {} |",
            cell(&stats[0]),
            cell(&stats[1])
        )?;
    }
    Ok(Faults {
        ratios,
        baseline_spread,
    })
}

/// The programs a faulting process runs.
const FAULT_PROGRAMS: [&str; 4] = [
    "page_fault_user",
    "page_fault_kernel",
    "mmap_lock_start_locking",
    "mmap_lock_acquire_returned",
];

/// The fault targets: (what, mapping, configuration, at most).
const FAULT_TARGETS: [(&str, usize, usize, f64); 2] = [
    ("page faults, untraced process", 0, 1, 1.05),
    ("page faults, traced process", 0, 2, 1.15),
];

/// The fault targets' rows of the targets table.
fn fault_targets(f: &Faults, out: &mut String) -> Result<()> {
    for (what, m, c, limit) in FAULT_TARGETS {
        let r = f.ratios[m][c];
        writeln!(
            out,
            "| {what} ≤ {limit:.2} | {r:.3} | {} |",
            verdict(r <= limit, f.baseline_spread)
        )?;
    }
    writeln!(
        out,
        "| (page faults, shared mapping: untraced / traced) | {:.3} / {:.3} | |",
        f.ratios[1][1], f.ratios[1][2]
    )?;
    Ok(())
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let f: Vec<&str> = stat[stat.rfind(')').context("stat")? + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ
}

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("VmHWM")?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

struct Pg {
    tps_ratio: f64,
    spread: (f64, f64),
    baseline_spread: f64,
    cpu_share: f64,
    rss_mib: f64,
    /// Steady-state RSS (KiB, the largest of the rounds): just after
    /// start-up, and at the end of a pgbench round.
    idle_rss: u64,
    load_rss: u64,
    /// Of `load_rss`: BPF maps mapped into the daemon (ring buffers).
    maps_rss: u64,
}

fn postgres(plan: &Plan, out: &mut String) -> Result<Pg> {
    let pg = Scratch::start()?;
    pg.init_pgbench(4)?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let clients = cpus * 4;
    let (mut ratios, mut cpu, mut rss) = (Vec::new(), Vec::new(), 0u64);
    let mut steady = (0u64, 0u64, 0u64);
    let mut baseline = Vec::new();
    let mut rows = Vec::new();
    let (c, secs) = (clients.to_string(), plan.pair_secs.to_string());
    let run = || tps(&pg, &["-c", &c, "-j", "2", "-T", &secs]);
    for pair in 0..plan.pairs {
        eprintln!("bench: pgbench pair {}/{}", pair + 1, plan.pairs);
        // Alternate the order so that drift does not favour one side.
        let with = |cpu: &mut Vec<f64>, rss: &mut u64, steady: &mut (u64, u64, u64)| {
            let (a, _) = agent(&[])?;
            let pid = a.0.id();
            let idle = Rss::of(pid)?;
            let (c0, t0) = (cpu_secs(pid)?, Instant::now());
            let tps = run()?;
            cpu.push((cpu_secs(pid)? - c0) / t0.elapsed().as_secs_f64());
            let load = Rss::of(pid)?;
            *rss = (*rss).max(vm_hwm_kib(pid)?);
            steady.0 = steady.0.max(idle.total);
            if load.total > steady.1 {
                (steady.1, steady.2) = (load.total, load.bpf_maps);
            }
            anyhow::Ok(tps)
        };
        let (without, with_agent) = if pair % 2 == 0 {
            let w = run()?;
            (w, with(&mut cpu, &mut rss, &mut steady)?)
        } else {
            let a = with(&mut cpu, &mut rss, &mut steady)?;
            (run()?, a)
        };
        ratios.push(with_agent / without);
        baseline.push(without);
        rows.push(format!(
            "| {} | {without:.0} | {with_agent:.0} | {:.3} |",
            pair + 1,
            with_agent / without
        ));
    }
    writeln!(out, "pgbench TPC-B-like, {clients} clients on {cpus} CPUs, {} pairs of {} s, agent with default settings (uprobes on):\n", plan.pairs, plan.pair_secs)?;
    writeln!(
        out,
        "| pair | tps without | tps with | ratio |\n|---|---|---|---|"
    )?;
    for r in rows {
        writeln!(out, "{r}")?;
    }
    let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = ratios.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    writeln!(
        out,
        "\nmedian ratio {:.3}, spread {lo:.3} to {hi:.3}",
        median(&ratios)
    )?;
    let baseline_spread = spread(&baseline);
    if baseline_spread > NOISE_LIMIT {
        writeln!(out, "\n**Noisy run:** tps without the agent alone spread {baseline_spread:.2} x across pairs, so other load came and went.")?;
    }
    Ok(Pg {
        tps_ratio: median(&ratios),
        spread: (lo, hi),
        baseline_spread,
        cpu_share: median(&cpu),
        rss_mib: rss as f64 / 1024.0,
        idle_rss: steady.0,
        load_rss: steady.1,
        maps_rss: steady.2,
    })
}

/// Events lost during the per-program run.
struct Drops {
    /// That the agent could not record (a full map or ring buffer).
    by_agent: f64,
    /// Scheduler events the kernel did not run the programs for (found
    /// afterwards; switch-ins made good one run late).
    missed: f64,
    /// `sched_switch` runs in the same run, for scale.
    switches: f64,
}

/// The `reason`s of scheduler events the kernel did not deliver (the agent's
/// `snapshot::KERNEL_SKIPPED`).
const MISSED_REASONS: [&str; 3] = ["switch_in_missed", "switch_out_missed", "waking_missed"];

/// Per-program cost and drops from one more pgbench run with BPF statistics.
fn programs(plan: &Plan, out: &mut String) -> Result<Drops> {
    let pg = Scratch::start()?;
    pg.init_pgbench(4)?;
    let (_a, port) = agent(&["--bpf-stats"])?;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    tps(
        &pg,
        &[
            "-c",
            &(cpus * 4).to_string(),
            "-j",
            "2",
            "-T",
            &plan.pair_secs.to_string(),
        ],
    )?;
    writeln!(out, "| program | runs | ns/run |\n|---|---|---|")?;
    let mut switches = 0.0;
    for (prog, runs, ns) in per_program(port)? {
        writeln!(out, "| `{prog}` | {runs:.0} | {ns:.0} |")?;
        if prog == "sched_switch" {
            switches = runs;
        }
    }
    let m = parse(&scrape(port)?);
    let mut drops = Drops {
        by_agent: 0.0,
        missed: 0.0,
        switches,
    };
    let mut reasons = Vec::new();
    for ((name, labels), v) in &m {
        if name != "pgpreempt_dropped_events_total" || *v == 0.0 {
            continue;
        }
        reasons.push(format!("{labels} {v:.0}"));
        if MISSED_REASONS
            .iter()
            .any(|r| labels.contains(&format!("\"{r}\"")))
        {
            drops.missed += v;
        } else {
            drops.by_agent += v;
        }
    }
    writeln!(
        out,
        "\nevents or samples dropped by the agent: {:.0}; scheduler events the kernel did not run the programs for (detected, switch-ins made good one run late): {:.0} of {switches:.0} switches{}",
        drops.by_agent,
        drops.missed,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    )?;
    Ok(drops)
}

/// Scrape time with 1,000 traced processes (synthetic: `sleep`).
fn scrape_time(out: &mut String) -> Result<f64> {
    const N: usize = 1000;
    let mut sleepers: Vec<Bg> = Vec::with_capacity(N);
    for _ in 0..N {
        sleepers.push(Bg(Command::new("sleep").arg("600").spawn()?));
    }
    let (_a, port) = agent(&["--comm", "sleep"])?;
    let t = Instant::now();
    loop {
        let m = parse(&scrape(port)?);
        let tracked: f64 = sum(&m, "pgpreempt_tracked_processes");
        if tracked >= N as f64 {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the agent tracked only {tracked} of {N} processes");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut ms = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        scrape(port)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let m = median(&ms);
    writeln!(
        out,
        "/metrics scrape with {N} traced processes: median {m:.2} ms of 20 scrapes"
    )?;
    Ok(m)
}

/// The agent's map memory: the tables `pgpreempt map-memory` prints (the
/// maps loaded with the daemon's and a trace session's default sizes,
/// measured by the kernel and modelled at 96 and 192 CPUs). Returns the
/// daemon's total at 96 CPUs, in MiB.
fn map_memory(out: &mut String) -> Result<f64> {
    let o = Command::new(agent_bin())
        .args(["map-memory", "--log-level", "warn"])
        .output()
        .context("running pgpreempt map-memory")?;
    if !o.status.success() {
        bail!(
            "pgpreempt map-memory failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let text = String::from_utf8(o.stdout)?;
    let at96 = daemon_total_at_96(&text).context("no daemon total in the map-memory tables")?;
    out.push_str(&text);
    Ok(at96)
}

/// The daemon's total at 96 CPUs (MiB) from the first table's total row:
/// `| **total** | | | | | **here** | **at 96** | **at 192** |`.
fn daemon_total_at_96(tables: &str) -> Option<f64> {
    let row = tables.lines().find(|l| l.starts_with("| **total** |"))?;
    let cell = row.split('|').nth(7)?.trim().trim_matches('*');
    let (v, unit) = cell.split_once(' ')?;
    let v: f64 = v.parse().ok()?;
    Some(match unit {
        "MiB" => v,
        "KiB" => v / 1024.0,
        "GiB" => v * 1024.0,
        "B" => v / 1024.0 / 1024.0,
        _ => return None,
    })
}

/// The daemon's map memory at 96 CPUs must stay under this (issue 11).
const MAP_MEMORY_LIMIT_MIB: f64 = 32.0;

/// The daemon's steady-state RSS budget (issue 14).
const STEADY_RSS_LIMIT_MIB: f64 = 16.0;

/// Replaces the section of `md` that `section` replaces (it starts with
/// its `## ` heading line), or puts it before the heading `next` if `md`
/// has no such section.
fn replace_section(md: &str, section: &str, next: &str) -> String {
    let section = section.trim_end();
    let heading = format!("{}\n", section.lines().next().unwrap_or_default());
    let (before, after) = if let Some(start) = md.find(&heading) {
        let body = start + heading.len();
        let after = md[body..].find("\n## ").map_or("", |i| &md[body + i + 1..]);
        (&md[..start], after)
    } else if let Some(at) = md.find(next) {
        (&md[..at], &md[at..])
    } else if md.trim().is_empty() {
        ("", "")
    } else {
        return format!("{}\n\n{section}\n", md.trim_end());
    };
    if after.is_empty() {
        format!("{before}{section}\n")
    } else {
        format!("{before}{section}\n\n{after}")
    }
}

/// Now, as `date -u` prints it for the record.
fn utc_now() -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `cargo xtask bench --map-memory`: only the map-memory section (a minute
/// instead of five: no workload runs), written into BENCHMARKS.md in place.
pub fn run_map_memory() -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    let date = utc_now()?;
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut section = format!(
        "## Map memory\n\nThis section alone: `cargo xtask bench --map-memory` on {date}, Linux {}.\n\n",
        release.trim()
    );
    let at96 = map_memory(&mut section)?;
    writeln!(
        section,
        "\nDaemon at 96 CPUs: {at96:.1} MiB (target < {MAP_MEMORY_LIMIT_MIB} MiB: {}).",
        if at96 < MAP_MEMORY_LIMIT_MIB {
            "met"
        } else {
            "**missed**"
        }
    )?;
    write_section(&section, "## At scale")
}

/// Writes `section` into BENCHMARKS.md in place (before heading `next` if
/// the file has no such section yet) and prints it.
fn write_section(section: &str, next: &str) -> Result<()> {
    let path = root().join("BENCHMARKS.md");
    let md = std::fs::read_to_string(&path).unwrap_or_default();
    std::fs::write(&path, replace_section(&md, section, next))?;
    println!("{section}\n(written into {})", path.display());
    Ok(())
}

/// The page-fault section's heading, and the one it goes before.
const FAULTS_HEADING: &str = "## Page-fault cost";
const AFTER_FAULTS: &str = "## PostgreSQL throughput";

/// What the page-fault section says it measured.
fn faults_intro(plan: &Plan) -> String {
    format!("A process touching fresh 4 KiB pages (`cargo xtask fault-loop`, pinned to CPU 0): it maps 8 MiB of anonymous memory (`MADV_NOHUGEPAGE`), writes one byte to each page and unmaps it, {} pages per run. The figure is the loop's CPU time (user and system, `CLOCK_PROCESS_CPUTIME_ID`) per page, mapping and unmapping included: the programs run in the faulting task's context, so their cost is in it, and time spent waiting for the CPU while other work ran on it is not. One run of every configuration and mapping after another; the loop is traced when its comm (`{}`) is in the agent's `--comm`.\n", plan.fault_pages, faults::COMM)
}

/// `cargo xtask bench --faults`: only the page-fault section (about a
/// minute), written into BENCHMARKS.md in place, with its targets.
pub fn run_faults() -> Result<()> {
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    let plan = Plan::full();
    let mut section = format!(
        "{FAULTS_HEADING}\n\nThis section alone: `cargo xtask bench --faults` on {}, {}.\n\n{}\n",
        utc_now()?,
        host(),
        faults_intro(&plan)
    );
    let f = page_faults(&plan, &mut section)?;
    writeln!(section, "\n| target | measured | |\n|---|---|---|")?;
    fault_targets(&f, &mut section)?;
    write_section(&section, AFTER_FAULTS)
}

/// The machine, for the record: CPUs, their model, the kernel.
fn host() -> String {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpus} vCPUs ({cpu_model}), Linux {}", release.trim())
}

pub fn run(quick: bool) -> Result<()> {
    let plan = if quick { Plan::quick() } else { Plan::full() };
    if crate::setup::which("bpftrace").is_none() {
        bail!("bpftrace (the peer) is missing; install it with: apt-get install -y bpftrace");
    }
    sh(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--release", "-p", "pgpreempt"]))?;
    let started = Instant::now();
    let mut md = String::new();
    let date = utc_now()?;
    writeln!(md, "# Benchmarks\n")?;
    writeln!(md, "Produced by `cargo xtask bench{}` on {date}: {}. Every ratio comes from rounds interleaved in one run; the machine is shared, so compare ratios, not absolute numbers.\n", if quick { " --quick" } else { "" }, host())?;

    writeln!(md, "## Context-switch cost\n\n`taskset -c 0 perf bench sched pipe -l {}`, one round of every configuration after another.\n", plan.pipe_loops)?;
    let ctx = context_switches(&plan, &mut md)?;
    writeln!(md, "\n{FAULTS_HEADING}\n\n{}", faults_intro(&plan))?;
    let fault_cost = page_faults(&plan, &mut md)?;
    writeln!(md, "\n{AFTER_FAULTS}\n")?;
    let pg = postgres(&plan, &mut md)?;
    writeln!(
        md,
        "\n## Per-program cost during pgbench (kernel BPF statistics, `run_time_ns / run_cnt`)\n"
    )?;
    let drops = programs(&plan, &mut md)?;
    writeln!(md, "\n## The daemon itself\n")?;
    writeln!(md, "CPU (user + system) during the pgbench rounds with the agent: median {:.2}% of one core; peak RSS {:.1} MiB (while loading: the kernel's BTF, parsed).", pg.cpu_share * 100.0, pg.rss_mib)?;
    writeln!(md, "\nSteady-state RSS (VmRSS, the largest of the rounds): {} MiB just after start-up, {} MiB at the end of a pgbench round; of it {} MiB are BPF maps mapped into the daemon (its ring buffers). The maps' own memory is kernel memory, not RSS (\"Map memory\" below).", mib(pg.idle_rss), mib(pg.load_rss), mib(pg.maps_rss))?;
    let scrape_ms = scrape_time(&mut md)?;
    writeln!(md, "\n## Map memory\n")?;
    let map_mib = map_memory(&mut md)?;
    writeln!(md, "\n## At scale (16 cores)\n\nSkipped: no 16-core machine was lent to the session that produced this file.")?;

    let ratio = |c: Cfg| {
        ctx.ratios
            .iter()
            .find(|(k, _)| *k == c)
            .map(|(_, r)| *r)
            .unwrap_or(f64::NAN)
    };
    let check = |ok: bool| if ok { "met" } else { "**missed**" };
    writeln!(md, "\n## Targets\n\n| target | measured | |\n|---|---|---|")?;
    writeln!(
        md,
        "| context switch, untraced tasks ≤ 1.15 | {:.3} | {} |",
        ratio(Cfg::Agent),
        verdict(ratio(Cfg::Agent) <= 1.15, ctx.baseline_spread)
    )?;
    writeln!(
        md,
        "| context switch, traced tasks ≤ 1.25 | {:.3} | {} |",
        ratio(Cfg::AgentTraced),
        verdict(ratio(Cfg::AgentTraced) <= 1.25, ctx.baseline_spread)
    )?;
    writeln!(md, "| (peer, for comparison) | {:.3} | |", ratio(Cfg::Peer))?;
    writeln!(
        md,
        "| (floor, classic tracepoint / tp_btf) | {:.3} / {:.3} | |",
        ratio(Cfg::Floor),
        ratio(Cfg::FloorBtf)
    )?;
    fault_targets(&fault_cost, &mut md)?;
    writeln!(
        md,
        "| pgbench tps ≥ 0.99 of without | {:.3} ({:.3} to {:.3}) | {} |",
        pg.tps_ratio,
        pg.spread.0,
        pg.spread.1,
        verdict(pg.tps_ratio >= 0.99, pg.baseline_spread)
    )?;
    writeln!(
        md,
        "| daemon CPU < 1% of one core | {:.2}% | {} |",
        pg.cpu_share * 100.0,
        check(pg.cpu_share < 0.01)
    )?;
    writeln!(
        md,
        "| daemon RSS < 30 MiB | {:.1} MiB | {} |",
        pg.rss_mib,
        check(pg.rss_mib < 30.0)
    )?;
    writeln!(
        md,
        "| daemon steady-state RSS < {STEADY_RSS_LIMIT_MIB} MiB (end of pgbench) | {} MiB | {} |",
        mib(pg.load_rss),
        check((pg.load_rss as f64) < STEADY_RSS_LIMIT_MIB * 1024.0)
    )?;
    writeln!(
        md,
        "| scrape < 20 ms with 1,000 processes | {scrape_ms:.2} ms | {} |",
        check(scrape_ms < 20.0)
    )?;
    writeln!(
        md,
        "| daemon map memory at 96 CPUs < {MAP_MEMORY_LIMIT_MIB} MiB | {map_mib:.1} MiB | {} |",
        check(map_mib < MAP_MEMORY_LIMIT_MIB)
    )?;
    writeln!(
        md,
        "| no drops by the agent | {:.0} | {} |",
        drops.by_agent,
        check(drops.by_agent == 0.0)
    )?;
    writeln!(
        md,
        "| (scheduler events the kernel skipped, per million switches) | {:.1} | |",
        drops.missed * 1e6 / drops.switches.max(1.0)
    )?;
    writeln!(
        md,
        "\nTotal run time: {:.0} s.\n",
        started.elapsed().as_secs_f64()
    )?;
    md.push_str(include_str!("../bench/soak.md"));
    md.push_str(include_str!("../bench/what-was-tried.md"));

    // A quick run is too noisy for the record: it goes under target/.
    let path = if quick {
        root().join("target/BENCHMARKS.quick.md")
    } else {
        root().join("BENCHMARKS.md")
    };
    std::fs::write(&path, &md)?;
    println!("{md}\n(written to {})", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_baseline_lets_targets_be_judged() {
        let quiet = spread(&[5.2, 5.4, 5.3, 5.6, 5.25]);
        assert!(quiet < NOISE_LIMIT);
        assert_eq!(verdict(true, quiet), "met");
        assert_eq!(verdict(false, quiet), "**missed**");
    }

    #[test]
    fn the_map_memory_section() {
        let tables = "intro\n\n| map | type |\n|---|---|\n| `TASKS` | lru_hash | 32768 | no | 352 | 13.3 MiB | 13.3 MiB | 13.3 MiB |\n| **total** | | | | | **17.2 MiB** | **29.9 MiB** | **42.8 MiB** |\n\n| **total**, no process traced yet | | | | | **17.3 MiB** | **30.0 MiB** | **42.9 MiB** |\n";
        assert_eq!(daemon_total_at_96(tables), Some(29.9));
        assert_eq!(
            daemon_total_at_96("| **total** | | | | | **1 B** | **512.0 KiB** | **1 MiB** |"),
            Some(0.5)
        );
        assert_eq!(daemon_total_at_96("no table"), None);
        // In place, between its heading and the next; before "At scale" if absent.
        let md = "# B\n\n## The daemon itself\n\nx\n\n## Map memory\n\nold\n\n## At scale\n\ny\n";
        let new = replace_section(md, "## Map memory\n\nnew\n", "## At scale");
        assert_eq!(
            new,
            "# B\n\n## The daemon itself\n\nx\n\n## Map memory\n\nnew\n\n## At scale\n\ny\n"
        );
        let without = "# B\n\n## The daemon itself\n\nx\n\n## At scale\n\ny\n";
        assert_eq!(
            replace_section(without, "## Map memory\n\nnew\n", "## At scale"),
            new
        );
        // The last section.
        let last = "# B\n\n## Map memory\n\nold\n";
        assert_eq!(
            replace_section(last, "## Map memory\n\nnew\n", "## At scale"),
            "# B\n\n## Map memory\n\nnew\n"
        );
    }

    #[test]
    fn the_page_fault_section_and_its_targets() {
        let quiet = Faults {
            ratios: [[1.0, 1.04, 1.2], [1.0, 0.99, 1.1]],
            baseline_spread: 1.1,
        };
        let mut out = String::new();
        fault_targets(&quiet, &mut out).unwrap();
        assert_eq!(
            out,
            "| page faults, untraced process ≤ 1.05 | 1.040 | met |\n\
             | page faults, traced process ≤ 1.15 | 1.200 | **missed** |\n\
             | (page faults, shared mapping: untraced / traced) | 0.990 / 1.100 | |\n"
        );
        // Written in place after the context switches, before pgbench.
        let md = "# B\n\n## Context-switch cost\n\nx\n\n## PostgreSQL throughput\n\ny\n";
        let with = replace_section(md, "## Page-fault cost\n\nnew\n", AFTER_FAULTS);
        assert_eq!(
            with,
            "# B\n\n## Context-switch cost\n\nx\n\n## Page-fault cost\n\nnew\n\n## PostgreSQL throughput\n\ny\n"
        );
        assert_eq!(
            replace_section(&with, "## Page-fault cost\n\nnewer\n", AFTER_FAULTS),
            with.replace("new\n", "newer\n")
        );
    }

    #[test]
    fn a_noisy_baseline_judges_nothing() {
        // The pgbench baseline of a run while other jobs shared the machine.
        let noisy = spread(&[2896.0, 1254.0, 1044.0, 902.0, 1124.0]);
        assert!(noisy > 3.0);
        assert!(verdict(true, noisy).starts_with("inconclusive"));
        assert!(verdict(false, noisy).starts_with("inconclusive"));
        assert!(verdict(true, f64::NAN).starts_with("inconclusive"));
    }
}
