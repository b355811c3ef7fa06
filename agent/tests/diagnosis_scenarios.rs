//! `pgpreempt diagnose` end to end on a real PostgreSQL: each test induces
//! one cause, runs `diagnose --json --duration Ns --cluster DATADIR`, checks
//! the exit code (3: something found, 0: nothing significant), that the
//! finding names the cause, and that its share is within reason of what the
//! test computes itself from the kernel's own accounting
//! (`/proc/PID/task/TID/schedstat` of the cluster's processes, over the
//! session: from the agent's "trace session" line to its exit).
//!
//! The host is a shared 2-vCPU VM where other work competes for the CPUs.
//! Every scenario but CPU saturation runs the cluster and its pgbench at
//! nice -20 (`Niced`): the cause a test induces is then the one the cluster
//! sees, not the neighbours' load. CPU saturation is induced by the test's
//! own pgbench and hog, at the default nice.
mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{
    memcg::MemCgroup,
    postgres::{Cluster, HugePages},
    workload::{fork_child, set_comm, Killed},
};
use pgpreempt::diagnosis::{render, Cause, Diagnosis};

const BIN: &str = env!("CARGO_BIN_EXE_pgpreempt");

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Time on a CPU and on a run queue (ns) of each thread, from schedstat.
type Sched = HashMap<u32, (u64, u64)>;

/// The postmaster and its children (the processes `--cluster` selects),
/// each thread's schedstat.
fn cluster_sched(postmaster: u32) -> Sched {
    let mut out = Sched::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name: state, ppid, ...
        let Some(ppid) = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != postmaster && ppid != postmaster {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")) else {
                continue;
            };
            let v: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() >= 2 {
                out.insert(tid, (v[0], v[1]));
            }
        }
    }
    out
}

/// The kernel's accounting of the cluster over the session, in seconds.
#[derive(Debug, Clone, Copy)]
struct Truth {
    on_cpu: f64,
    run_queue: f64,
    wall: f64,
}

impl Truth {
    fn between(a: &Sched, b: &Sched, wall: f64) -> Truth {
        let (mut on, mut rq) = (0u64, 0u64);
        for (tid, &(e1, d1)) in b {
            // A thread new during the session counts from its start.
            let (e0, d0) = a.get(tid).copied().unwrap_or((0, 0));
            on += e1.saturating_sub(e0);
            rq += d1.saturating_sub(d0);
        }
        Truth {
            on_cpu: on as f64 / 1e9,
            run_queue: rq as f64 / 1e9,
            wall,
        }
    }

    /// Run-queue time as a share of on-CPU plus run-queue time: the
    /// agent's CPU saturation share has the same numerator and a
    /// denominator larger by the lock (futex) waits, so this is its upper
    /// bound.
    fn run_queue_share(&self) -> f64 {
        self.run_queue / (self.on_cpu + self.run_queue).max(1e-9)
    }
}

/// One `pgpreempt diagnose` run, as it answered and as the kernel saw it.
struct Diagnosed {
    code: i32,
    d: Diagnosis,
    truth: Truth,
}

impl Diagnosed {
    fn finding(&self, c: Cause) -> Option<&pgpreempt::diagnosis::Finding> {
        self.d.findings.iter().find(|f| f.cause == c)
    }
    fn top(&self) -> Cause {
        self.d.findings[0].cause
    }
    fn share(&self, c: Cause) -> f64 {
        self.finding(c)
            .and_then(|f| f.share)
            .unwrap_or_else(|| panic!("no {c:?} share"))
    }
}

/// Runs `pgpreempt diagnose --json --duration {secs}s --cluster DATADIR`,
/// reading the cluster's schedstat when the session has attached (the
/// "trace session" log line) and when it has exited, and prints the
/// diagnosis as `diagnose` would (its text rendering).
fn diagnose(pg: &Cluster, secs: u32, scenario: &str) -> Diagnosed {
    diagnose_then(pg, secs, scenario, || ()).0
}

/// [`diagnose`], running `start` once the session has attached (its
/// result lives until the session ends).
fn diagnose_then<T>(
    pg: &Cluster,
    secs: u32,
    scenario: &str,
    start: impl FnOnce() -> T,
) -> (Diagnosed, T) {
    let pm = pg.postmaster_pid();
    let mut child = Command::new(BIN)
        .args(["diagnose", "--json", "--duration", &format!("{secs}s")])
        .arg("--cluster")
        .arg(pg.data())
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("trace session:") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let attached = rx.recv_timeout(Duration::from_secs(120));
    let a = cluster_sched(pm);
    let t0 = std::time::Instant::now();
    let started = start();
    let status = child.wait().unwrap();
    let b = cluster_sched(pm);
    let wall = t0.elapsed().as_secs_f64();
    let err = err_reader.join().unwrap();
    let out = out_reader.join().unwrap();
    assert!(attached.is_ok(), "diagnose never attached: {status}\n{err}");
    let code = status.code().unwrap_or(-1);
    let d: Diagnosis = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("diagnose --json printed no diagnosis ({e}): {out}\n{err}"));
    let truth = Truth::between(&a, &b, wall);
    eprintln!(
        "--- {scenario}: pgpreempt diagnose exited {code}\n{}--- the kernel (schedstat of the cluster over {:.1} s): on a CPU {:.3} s/s, run queue {:.3} s/s, run-queue share {:.1}%",
        render::full(&d, "pgpreempt diagnose"),
        truth.wall,
        truth.on_cpu / truth.wall,
        truth.run_queue / truth.wall,
        100.0 * truth.run_queue_share()
    );
    (Diagnosed { code, d, truth }, started)
}

/// Children killed (and reaped) on drop, also when a test panics.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // runuser forwards the signal to pgbench.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// pgbench against `pg` with `args`, at nice `nice`, until killed.
fn pgbench(pg: &Cluster, nice: i32, args: &[&str]) -> Child {
    let mut c = Command::new("nice");
    c.args(["-n", &nice.to_string()])
        .args(["runuser", "-u", "postgres", "--"])
        .arg(pg.bin.join("pgbench"))
        .arg("-h")
        .arg(pg.dir.path())
        .args(["-U", "postgres"])
        .args(args)
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().unwrap()
}

/// Waits until `n` pgbench connections run queries.
fn wait_for_clients(pg: &Cluster, n: usize) {
    pg.wait_for(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'",
        |got| got.parse::<usize>().unwrap_or(0) >= n,
        "pgbench clients to connect",
    );
}

/// Sets the postmaster's nice value: backends it forks from now on
/// inherit it.
fn renice(pid: u32, nice: i32) {
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) };
    assert_eq!(r, 0, "setpriority({pid}, {nice})");
}

/// The nice value of the cluster and its pgbench in the scenarios that
/// must not see the neighbours' load.
const NICE: i32 = -20;

/// A scratch cluster with `settings`, reniced, with pgbench tables of
/// `scale`.
fn cluster(settings: &[&str], scale: u32, nice: i32) -> Cluster {
    let pg = Cluster::start(settings);
    pg.init_pgbench(scale);
    renice(pg.postmaster_pid(), nice);
    pg
}

/// Asserts `agent` is within `[lo, hi]`, saying what was compared.
fn within(what: &str, agent: f64, lo: f64, hi: f64) {
    assert!(
        (lo..=hi).contains(&agent),
        "{what}: agent {:.1}%, want {:.1}%..{:.1}%",
        100.0 * agent,
        100.0 * lo,
        100.0 * hi
    );
}

/// Many more select-only clients than CPUs, plus a process that only
/// computes (`pgpt-hog`): PostgreSQL's processes wait for a CPU most of
/// their active time, and the finding says who took it.
#[test]
fn cpu_saturation_names_who_took_the_cpu() {
    common::require_root();
    let pg = cluster(&["huge_pages=off"], 2, 0);
    let _hog = Killed(fork_child(|| {
        set_comm(b"pgpt-hog");
        loop {
            std::hint::black_box(0u64);
        }
    }));
    let clients = 8 * cpus();
    let _bench = Kids(vec![pgbench(
        &pg,
        0,
        &["-S", "-c", &clients.to_string(), "-j", "2", "-T", "600"],
    )]);
    wait_for_clients(&pg, clients);
    let r = diagnose(&pg, 6, "CPU saturation");

    assert_eq!(r.code, 3, "CPU saturation is significant: exit 3");
    assert_eq!(r.top(), Cause::CpuSaturation);
    let share = r.share(Cause::CpuSaturation);
    // The kernel's run-queue share is the agent's upper bound (the agent's
    // denominator adds lock waits; select-only has few). The kernel's
    // window is a little longer than the agent's (it runs from the log
    // line to the exit, which includes detaching): 5 points either way.
    let truth = r.truth.run_queue_share();
    within("CPU saturation share", share, truth - 0.10, truth + 0.05);
    assert!(
        share >= 0.25,
        "{clients} clients and a hog on {} CPUs: above the alert level",
        cpus()
    );
    let f = r.finding(Cause::CpuSaturation).unwrap();
    assert!(f.above_alert_level);
    // Who took the CPU: the hog or pgbench among the first names.
    let by: Vec<&str> = f.evidence["preempted_by"]
        .as_array()
        .unwrap()
        .iter()
        .take(3)
        .map(|p| p["comm"].as_str().unwrap())
        .collect();
    assert!(
        by.iter().any(|c| *c == "pgpt-hog" || *c == "pgbench"),
        "preempted by {by:?}"
    );
    assert!(f.statement.contains(&format!("on {} CPUs", cpus())));
}

/// A light, rate-limited pgbench: the cluster is nearly idle, and the
/// verdict is "nothing significant" (exit 0), not a list of small numbers.
#[test]
fn a_light_load_gets_nothing_significant() {
    common::require_root();
    let pg = cluster(&["huge_pages=off"], 1, NICE);
    let _bench = Kids(vec![pgbench(
        &pg,
        NICE,
        &["-S", "-R", "20", "-c", "2", "-j", "1", "-T", "600"],
    )]);
    wait_for_clients(&pg, 2);
    let r = diagnose(&pg, 5, "healthy");
    assert_eq!(r.code, 0, "nothing significant: exit 0");
    assert!(!r.d.significant);
    assert_eq!(r.top(), Cause::NothingSignificant);
    assert_eq!(r.d.headline.len(), 1);
    assert!(r.d.headline[0].starts_with("Nothing significant"));
    // What the agent counted active is what the kernel counted busy,
    // within the lock waits it adds and a millisecond a second either way.
    let kernel_busy = (r.truth.on_cpu + r.truth.run_queue) / r.truth.wall;
    let active = r.d.active_seconds_per_second;
    assert!(
        active <= kernel_busy * 1.5 + 0.002 && active >= kernel_busy * 0.5 - 0.002,
        "active {active:.4} s/s, kernel {kernel_busy:.4} s/s"
    );
}

/// Select-only on a buffer pool of 2 MB (256 buffers): the clock sweep and
/// the buffer mapping partitions are contended, and backends spin in
/// `s_lock`. On 4 or more CPUs the spinlock finding must name its site.
///
/// On 2 vCPUs it cannot: at most two backends run at once, so a spinlock
/// is rarely contended, and a contended one is released within
/// microseconds. Measured here (32 clients, 8 s sessions, nice -20):
/// `s_lock` entered 0 to 1 times per session (the notes saw 80 to 140 in
/// 10 s), far below the 2% of active time `SPIN_SHARE` asks for, while
/// run-queue time was 84% of active time (kernel: 85%). There the test
/// checks that the diagnosis says what does happen: CPU saturation.
#[test]
fn spinlock_contention_names_the_site() {
    common::require_root();
    let pg = cluster(&["huge_pages=off", "shared_buffers=2MB"], 5, NICE);
    let clients = (16 * cpus()).min(64);
    let _bench = Kids(vec![pgbench(
        &pg,
        NICE,
        &["-S", "-c", &clients.to_string(), "-j", "2", "-T", "600"],
    )]);
    wait_for_clients(&pg, clients);
    let r = diagnose(&pg, 8, "spinlock contention");
    assert_eq!(r.code, 3);
    if cpus() < 4 {
        assert_eq!(r.top(), Cause::CpuSaturation);
        let truth = r.truth.run_queue_share();
        within(
            "CPU saturation share",
            r.share(Cause::CpuSaturation),
            truth - 0.10,
            truth + 0.05,
        );
        return;
    }
    let f = r
        .finding(Cause::SpinlockContention)
        .expect("a spinlock finding");
    assert!(f.significant);
    let site = f.evidence["sites"][0]["site"].as_str().unwrap();
    assert!(
        [
            "StrategyGetBuffer",
            "hash_search_with_hash_value",
            "get_hash_entry",
            "ReserveXLogInsertLocation"
        ]
        .contains(&site),
        "top site {site}"
    );
    assert!(f.statement.contains(site), "{}", f.statement);
}

const BIG_BUFFERS: &str = "shared_buffers=256MB";

/// After a restart with 256 MB of shared buffers, backends that start
/// during the session fault in every page of the segment they touch: on
/// 4 KB pages that is the finding; the same run on huge pages is not.
/// pgbench starts once the session has attached, so that its backends'
/// first touches (which the kernel's fault-around does not spare: the
/// first backend to touch a buffer page allocates it) fall inside it.
///
/// Not asserted first: findings are ranked by the time they take, and on
/// 2 vCPUs eight clients also make CPU saturation, which takes more time
/// than faults estimated at 1 µs each.
#[test]
fn shared_memory_on_4kb_pages_and_not_on_huge_pages() {
    common::require_root();
    let pg = cluster(&[BIG_BUFFERS, "huge_pages=off"], 5, NICE);
    let need: u64 = pg
        .query("SHOW shared_memory_size_in_huge_pages")
        .parse()
        .unwrap();
    let run = |huge: &str| {
        pg.restart(&[BIG_BUFFERS, &format!("huge_pages={huge}")]);
        renice(pg.postmaster_pid(), NICE);
        diagnose_then(&pg, 6, &format!("huge_pages={huge}"), || {
            Kids(vec![pgbench(
                &pg,
                NICE,
                &["-S", "-c", "8", "-j", "2", "-T", "600"],
            )])
        })
        .0
    };
    let off = run("off");
    let _reserved = HugePages::reserve(need + 8);
    let on = run("on");
    drop(pg);

    assert_eq!(off.code, 3);
    let f = off
        .finding(Cause::SharedMemory4kPages)
        .expect("a 4 KB pages finding with huge pages off");
    assert!(f.significant);
    assert_eq!(f.evidence["huge_pages"], "off");
    assert!(
        f.evidence["main_shared_faults_per_second"]
            .as_f64()
            .unwrap()
            >= 1000.0,
        "{:?}",
        f.evidence
    );
    assert!(
        on.finding(Cause::SharedMemory4kPages).is_none(),
        "a 4 KB pages finding with huge pages on"
    );
}

/// Backends in a memory cgroup far smaller than the table they scan: every
/// page they read in is charged to it, and they reclaim in their own
/// context.
#[test]
fn memory_stalls_under_a_memory_cgroup_limit() {
    common::require_root();
    // 16 MB of buffers: a scan of the 65 MB table goes through a small
    // ring and reads every page from the kernel's page cache.
    // Made before the cluster, so removed after it stopped (and its
    // backends left the cgroup).
    let cg = MemCgroup::create("scenario", Some(32 << 20));
    let pg = cluster(&["huge_pages=off", "shared_buffers=16MB"], 5, NICE);
    let script = pg.dir.path().join("scan.sql");
    std::fs::write(
        &script,
        "CREATE TABLE copy AS SELECT * FROM pgbench_accounts;\nDROP TABLE copy;\n",
    )
    .unwrap();
    let clients = 1usize;
    let script_arg = format!("{}", script.display());
    let _bench = Kids(vec![pgbench(
        &pg,
        NICE,
        &[
            "-n",
            "-f",
            &script_arg,
            "-c",
            &clients.to_string(),
            "-T",
            "600",
        ],
    )]);
    wait_for_clients(&pg, clients);
    for pid in pg
        .query("SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench'")
        .lines()
    {
        cg.add(pid.parse().unwrap());
    }
    // The table's pages leave the page cache: the next reads are charged
    // to the cgroup.
    drop_table_cache(&pg);
    let r = diagnose(&pg, 6, "memory stalls");
    assert_eq!(r.code, 3);
    assert_eq!(r.top(), Cause::MemoryStalls);
    let f = r.finding(Cause::MemoryStalls).unwrap();
    assert!(
        f.headline.contains("memory cgroup reclaim"),
        "{}",
        f.headline
    );
    assert!(f.try_[0].contains("memory.max"), "{:?}", f.try_);
    // The kernel keeps no reclaim time per task; what it does bound: one
    // backend in the cgroup cannot stall longer than the session (1 s/s),
    // and its stalls are no more of its active time than the share says
    // of all of them (the share's denominator is the whole cluster's
    // active time, which the kernel's on-CPU plus run-queue time bounds
    // from below).
    let memcg = f.evidence["memcg_reclaim_seconds_per_second"]
        .as_f64()
        .unwrap();
    assert!(
        memcg > 0.0 && memcg <= clients as f64 * 1.05,
        "{memcg} s/s of memcg reclaim"
    );
    let kernel_active = (r.truth.on_cpu + r.truth.run_queue) / r.truth.wall;
    within(
        "memory stall share",
        r.share(Cause::MemoryStalls),
        0.02,
        (memcg / (kernel_active * 0.9)).min(1.0),
    );
}

/// Drops pgbench_accounts' pages from the page cache (after a checkpoint,
/// so they are clean).
fn drop_table_cache(pg: &Cluster) {
    pg.query("CHECKPOINT");
    let rel = pg.query("SELECT pg_relation_filepath('pgbench_accounts')");
    let base = pg.data().join(rel);
    for i in 0.. {
        let p = if i == 0 {
            base.clone()
        } else {
            base.with_extension(i.to_string())
        };
        let Ok(f) = std::fs::File::open(&p) else {
            break;
        };
        use std::os::fd::AsRawFd;
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}
