//! Short lives, churn and pid reuse (issue 11): what a task's last run and
//! its exit leave behind. Known answers come from the kernel's own accounting
//! (each child's schedstat and status, read by itself just before it exits
//! and from its zombie; `wait4`'s rusage), and the kernel maps' sizes from
//! `Agent::map_entries` against the live tasks counted in /proc.
mod common;

use std::{
    ffi::{c_int, c_void},
    io::Read,
    process::Stdio,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use agent_common::stats::{counter, diag, Counters};
use common::{
    postgres::Cluster,
    workload::{
        burn_cpu, clone_thread, fork_child, futex_wait, futex_wake, now_ns, own_nivcsw,
        own_run_delay_ns, pin_to_cpu, reap, reap_rusage, run_delay_of, set_comm, set_fifo,
        sleep_ns, spin_for, wait_exited, Gate, Killed, Shared,
    },
};
use pgpreempt::{agent::Agent, config::Config};

#[path = "common/s_lock.rs"]
mod s_lock;
use s_lock::s_lock;

/// Every group's counters summed: all that the kernel counted for the
/// traced tasks, classified or not (group 0 holds the unclassified).
fn all_groups(agent: &Agent) -> Counters {
    let mut sum = Counters::zeroed();
    for (id, _) in agent.tracker.groups.all() {
        if let Some(g) = agent.group_stats(id) {
            for (s, v) in sum.v.iter_mut().zip(g.counters.v.iter()) {
                *s += v;
            }
        }
    }
    sum
}

fn run_queue_ns(c: &Counters) -> u64 {
    c.v[counter::PREEMPTED_NS] + c.v[counter::WAKEUP_LATENCY_NS]
}

/// Polls the agent as the daemon and trace sessions do: `poll` every 100 ms,
/// `refresh` every tenth time (once a second).
struct Cadence {
    ticks: u64,
}

impl Cadence {
    fn new() -> Self {
        Cadence { ticks: 0 }
    }
    fn tick(&mut self, agent: &mut Agent) {
        std::thread::sleep(Duration::from_millis(100));
        self.ticks += 1;
        if self.ticks.is_multiple_of(10) {
            agent.refresh();
        } else {
            agent.poll();
        }
    }
}

// ---------------------------------------------------------------------------
// A. The last run-queue wait of a short-lived task.

const SHORT_CHILDREN: usize = 600;
/// Children running at once: four per CPU here, so they wait on run queues.
/// Children running at once per CPU: more runnable than CPUs on any host
/// (8 at a time on the 2-vCPU VMs; a 16-CPU host with 8 saw no contention).
const SHORT_PER_CPU: usize = 4;

/// CPU time child `i` burns: 1 to 20 ms, and for half of them 1 to 3 ms
/// (often a single run: the wait before it is the child's only one).
fn short_cpu_ns(i: usize) -> u64 {
    let ms = if i.is_multiple_of(2) {
        (i / 2) % 3 + 1
    } else {
        (i * 7) % 20 + 1
    };
    ms as u64 * 1_000_000
}

/// Forks `n` children, [`SHORT_PER_CPU`] per CPU at a time (at most 64),
/// each running `child(i)`; once a batch is forked, `reap(i, pid)` waits
/// for each of it. Allocates nothing (it runs in a forked child).
fn in_batches(n: usize, child: impl Fn(usize) + Copy, mut reap: impl FnMut(usize, u32)) {
    let batch =
        (SHORT_PER_CPU * std::thread::available_parallelism().map_or(2, |n| n.get())).min(64);
    let mut pids = [0u32; 64];
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        for i in start..end {
            pids[i - start] = fork_child(move || child(i));
        }
        for i in start..end {
            reap(i, pids[i - start]);
        }
    }
}

#[repr(C)]
struct ShortBoard {
    pids: [u32; SHORT_CHILDREN],
    /// Each child's own figures, read by itself just before its `_exit`.
    own_delay: [u64; SHORT_CHILDREN],
    own_nivcsw: [u64; SHORT_CHILDREN],
    /// The kernel's final figures: the zombie's schedstat run_delay, and
    /// `ru_nivcsw` from `wait4`.
    final_delay: [u64; SHORT_CHILDREN],
    final_nivcsw: [u64; SHORT_CHILDREN],
    done: u32,
}

/// Children that each burn 1-20 ms of CPU, four per CPU at a time,
/// then exit. Each one's run-queue time ends with the wait before its last
/// run, which only its exit can count: before the fix the agent dropped it
/// (sched_process_exit deleted the task's state first), about half of the
/// total.
#[test]
fn short_lived_children_run_queue_time_matches_their_own_schedstat() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-short");
    let board: Shared<ShortBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();
    // The children are forked by a traced process, so that they are traced
    // from birth (a child renamed after its fork may have waited untraced
    // before). Its own counts are taken off below.
    let forker = fork_child(move || {
        unsafe { libc::close(gate.w) };
        set_comm(b"pgpt-short");
        let board = unsafe { &mut *(b as *mut ShortBoard) };
        in_batches(
            SHORT_CHILDREN,
            move |i| {
                let board = unsafe { &mut *(b as *mut ShortBoard) };
                burn_cpu(short_cpu_ns(i));
                board.own_delay[i] = own_run_delay_ns();
                board.own_nivcsw[i] = own_nivcsw();
            },
            |i, pid| {
                board.pids[i] = pid;
                wait_exited(pid);
                board.final_delay[i] = run_delay_of(pid);
                board.final_nivcsw[i] = reap_rusage(pid).ru_nivcsw as u64;
            },
        );
        unsafe { std::ptr::write_volatile(&mut board.done, 1) };
        // Asleep until the test has read the agent.
        gate.pass();
    });
    let mut cadence = Cadence::new();
    let started = Instant::now();
    while unsafe { std::ptr::read_volatile(&board.get().done) } == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the children did not finish"
        );
        cadence.tick(&mut agent);
    }
    common::wait_asleep(&[forker]);
    // Exit grace periods pass.
    std::thread::sleep(Duration::from_secs(1));
    agent.refresh();
    agent.refresh();

    let groups = all_groups(&agent);
    let mine = agent
        .process_counters(forker)
        .expect("the forking process is traced and alive");
    let agent_wait = run_queue_ns(&groups) - run_queue_ns(&mine);
    let agent_invol =
        groups.v[counter::INVOLUNTARY_SWITCHES] - mine.v[counter::INVOLUNTARY_SWITCHES];
    let missed = common::missed_switch_outs(&agent);
    let board_ref = board.get();
    let own_wait: u64 = board_ref.own_delay.iter().sum();
    let final_wait: u64 = board_ref.final_delay.iter().sum();
    let own_invol: u64 = board_ref.own_nivcsw.iter().sum();
    let final_invol: u64 = board_ref.final_nivcsw.iter().sum();
    eprintln!(
        "{SHORT_CHILDREN} short-lived children: run-queue time: agent {:.3} s; the children's own schedstat just before exit {:.3} s, their zombies' {:.3} s; involuntary switches: agent {agent_invol}, the children's own count {own_invol}, wait4 {final_invol}; {missed} switch-outs reported missed",
        agent_wait as f64 / 1e9,
        own_wait as f64 / 1e9,
        final_wait as f64 / 1e9,
    );
    gate.release(1);
    reap(&[forker]);
    gate.close();

    // The workload did what it is for: children waited for a CPU.
    assert!(
        own_wait > 500_000_000 && own_invol > SHORT_CHILDREN as u64,
        "little contention ({own_wait} ns, {own_invol} involuntary switches): no test"
    );
    // Every wait up to a child's last read of its schedstat ends before a
    // switch-out or the exit that follows, so the agent must count at least
    // that (3%: the tolerance of the other run-queue checks). It cannot count
    // more than the kernel did over the children's whole lives, the zombie's
    // figure (3% again: waits of tasks preempted while going to sleep are
    // timed by the clock, not in schedstat).
    assert!(
        agent_wait as f64 >= own_wait as f64 * 0.97,
        "the agent counted {agent_wait} ns of run-queue time, the children's own schedstat says {own_wait} ns before they exited: the waits before their last runs were lost"
    );
    assert!(
        agent_wait as f64 <= final_wait as f64 * 1.03,
        "the agent counted {agent_wait} ns of run-queue time, more than the kernel's {final_wait} ns for the children's whole lives"
    );
    // Involuntary switches: at least those before each child's last read
    // (less switch-outs the agent reported missed), at most the kernel's
    // count for the whole life (switches in the exit path may or may not be
    // counted).
    assert!(
        agent_invol + missed >= own_invol && agent_invol <= final_invol,
        "involuntary switches: agent {agent_invol}, the children's own count before exit {own_invol}, wait4 {final_invol} ({missed} switch-outs reported missed)"
    );
}

// ---------------------------------------------------------------------------
// B and C. Connection churn against a real PostgreSQL.

const TRACED: &[&str] = &["postgres", "postmaster"];

/// `pgpreempt run` (the daemon): per-process counters off. Three minutes:
/// long enough that the ~100 stale task entries a second seen before the fix
/// would be far past any bound, and, at four minutes, fill the task map.
const DAEMON_CHURN_SECS: u64 = 180;
/// A trace session (per-process counters, departed processes kept): a
/// minute of churn makes tens of thousands of short-lived processes, more
/// than the process map holds.
const TRACE_CHURN_SECS: u64 = 60;
/// How often the maps are checked during the churn.
const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Map entries allowed beyond the live traced tasks while connections churn:
/// the map and /proc are read one after the other, and meanwhile pgbench's 4
/// clients open and close connections (a backend lives a few ms), so a
/// handful of tasks may have come or gone between the two reads; 64 is ten
/// times that, and two orders of magnitude below what a leak of stale
/// entries reaches within the first 10 s.
const CHURN_SLACK: u64 = 64;
/// Map entries allowed beyond the live traced tasks once the churn is over:
/// nothing of pgbench is left, but the cluster's own processes (an
/// autovacuum worker, a parallel worker) and other clusters on this host
/// may start or end between the two reads.
const SETTLED_SLACK: u64 = 16;

/// The maps' sizes against the live traced tasks: `threads` and
/// `processes` are the larger of two /proc counts taken around the map read.
struct Sizes {
    maps: pgpreempt::agent::MapEntries,
    live: common::LiveTasks,
}

fn sizes(agent: &Agent) -> Sizes {
    let a = common::live_tasks(TRACED);
    let maps = agent.map_entries();
    let b = common::live_tasks(TRACED);
    Sizes {
        maps,
        live: common::LiveTasks {
            processes: a.processes.max(b.processes),
            threads: a.threads.max(b.threads),
        },
    }
}

impl std::fmt::Display for Sizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TASKS {} (live traced threads {}), PROC_INFO {} and PROC_STATS {} (live traced processes {}), SEEDS {}",
            self.maps.tasks,
            self.live.threads,
            self.maps.proc_info,
            self.maps.proc_stats,
            self.live.processes,
            self.maps.seeds
        )
    }
}

fn assert_no_full_maps(agent: &Agent, when: &str) {
    let d = agent.diag();
    assert_eq!(
        d[diag::TASK_MAP_FULL],
        0,
        "{when}: the task map was full ({} inserts failed)",
        d[diag::TASK_MAP_FULL]
    );
    assert_eq!(
        d[diag::PROC_MAP_FULL],
        0,
        "{when}: the process map was full ({} processes counted in their group only)",
        d[diag::PROC_MAP_FULL]
    );
}

/// The check every `CHECK_EVERY` during a churn: no map full, and no more
/// task entries than live traced threads (plus what is in flight).
fn assert_no_entries_left_behind(agent: &Agent, at: Duration) {
    let s = sizes(agent);
    eprintln!("{:>4} s: {s}", at.as_secs());
    let when = format!("after {} s of connection churn", at.as_secs());
    assert_no_full_maps(agent, &when);
    assert!(
        s.maps.tasks <= s.live.threads + CHURN_SLACK,
        "{when}: {s}: task entries left behind by exited tasks"
    );
}

/// Runs `pgbench -C` (a new connection, so a new backend, per transaction)
/// for `secs`, polling the agent like the daemon and calling `check` every
/// [`CHECK_EVERY`]. Returns the transactions pgbench reports, one per
/// connection.
fn churn(
    agent: &mut Agent,
    cadence: &mut Cadence,
    pg: &Cluster,
    secs: u64,
    mut check: impl FnMut(&Agent, Duration),
) -> u64 {
    let mut bench = pg
        .pgbench()
        .args([
            "-C",
            "-S",
            "-c",
            "4",
            "-j",
            "2",
            "-T",
            &secs.to_string(),
            "postgres",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut next = CHECK_EVERY;
    let status = loop {
        if let Some(st) = bench.try_wait().unwrap() {
            break st;
        }
        cadence.tick(agent);
        if started.elapsed() >= next {
            check(agent, started.elapsed());
            next += CHECK_EVERY;
        }
    };
    let mut out = String::new();
    bench
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "pgbench failed:\n{out}");
    let key = "number of transactions actually processed:";
    out.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench's output:\n{out}"))
}

/// Polls the agent for up to 2 s after the churn until `ok` holds of the
/// maps' sizes; returns the last sizes either way.
fn settle(agent: &mut Agent, cadence: &mut Cadence, ok: impl Fn(&Sizes) -> bool) -> Sizes {
    let started = Instant::now();
    loop {
        let s = sizes(agent);
        if ok(&s) || started.elapsed() >= Duration::from_secs(2) {
            return s;
        }
        cadence.tick(agent);
    }
}

/// The daemon under connection churn: every exited backend's task and
/// process entries must go. Before the fix, switch-outs in the exit path
/// after sched_process_exit re-created task entries that nothing freed: the
/// map grew by about 100 a second and filled after 4-5 minutes.
#[test]
fn churn_leaves_no_task_or_process_entries_behind() {
    common::require_root();
    let pg = Cluster::start(&[]);
    pg.init_pgbench(1);
    // What `pgpreempt run` loads: groups only.
    let mut agent = Agent::start(&Config {
        per_process: false,
        ..Config::default()
    })
    .expect("agent starts");
    let mut cadence = Cadence::new();
    let transactions = churn(
        &mut agent,
        &mut cadence,
        &pg,
        DAEMON_CHURN_SECS,
        assert_no_entries_left_behind,
    );
    let s = settle(&mut agent, &mut cadence, |s| {
        s.maps.tasks <= s.live.threads + SETTLED_SLACK
            && s.maps.proc_info <= s.live.processes + SETTLED_SLACK
    });
    eprintln!("{transactions} connections; 2 s after the end: {s}");
    assert!(
        transactions > 1000,
        "pgbench made only {transactions} connections: no churn"
    );
    assert_no_full_maps(&agent, "after the churn");
    assert!(
        s.maps.tasks <= s.live.threads + SETTLED_SLACK,
        "2 s after the churn: {s}: task entries left behind"
    );
    assert!(
        s.maps.proc_info <= s.live.processes + SETTLED_SLACK,
        "2 s after the churn: {s}: process entries left behind"
    );
    // The labels: the switches of the backends (each lives a few ms) are
    // counted under their cluster and `client backend` from their fork, as
    // `pgpreempt run` exports them; nothing under `other` or unattributed.
    std::thread::sleep(pgpreempt::postgres::tracker::EXIT_GRACE);
    agent.refresh();
    let cluster = pg.data().canonicalize().unwrap().display().to_string();
    let snapshot = agent.snapshot();
    let switches = |cluster: &str, backend_type: &str| -> u64 {
        snapshot
            .groups
            .iter()
            .filter(|(l, _)| l.cluster == cluster && l.backend_type == backend_type)
            .map(|(_, g)| {
                g.counters.v[counter::VOLUNTARY_SWITCHES]
                    + g.counters.v[counter::INVOLUNTARY_SWITCHES]
            })
            .sum()
    };
    let client = switches(&cluster, "client backend");
    let other = switches(&cluster, "other");
    let unattributed = switches(pgpreempt::postgres::groups::UNASSIGNED_CLUSTER, "other");
    let starts = snapshot
        .starts
        .starts
        .iter()
        .find(|(l, _)| l.cluster == cluster && l.backend_type == "client backend")
        .map_or(0, |(_, n)| *n);
    let lifetimes = snapshot
        .starts
        .lifetimes
        .iter()
        .find(|(l, _)| l.cluster == cluster && l.backend_type == "client backend")
        .map(|(_, h)| h.clone())
        .unwrap_or_default();
    let lost = agent.diag()[diag::EVENTS_LOST];
    eprintln!(
        "switches: client backend {client}, other {other}, unattributed {unattributed}; {starts} client-backend starts for {transactions} connections ({:.0}/s), {} lifetimes (mean {:.1} ms); {lost} process events lost",
        starts as f64 / DAEMON_CHURN_SECS as f64,
        lifetimes.count,
        lifetimes.sum_seconds * 1e3 / lifetimes.count.max(1) as f64
    );
    assert!(
        (other + unattributed) * 100 <= client,
        "{} switches of the backends under other labels, against {client} labelled client backend",
        other + unattributed
    );
    assert_eq!(unattributed, 0, "nothing of the cluster is unattributed");
    assert!(
        starts as f64 >= transactions as f64 * 0.99
            && starts as f64 <= transactions as f64 * 1.01 + 4.0,
        "{starts} client-backend starts counted for {transactions} connections"
    );
    assert!(
        lifetimes.count + lost >= starts && lifetimes.count <= starts,
        "{} lifetimes for {starts} starts ({lost} process events lost)",
        lifetimes.count
    );
}

/// A trace session under connection churn: per-process counters of every
/// exited process must go (before the fix those of processes that exited
/// before the agent classified them stayed for good, and filled the map),
/// and the session must report every connection.
#[test]
fn churn_in_a_trace_session_leaves_no_process_counters_behind() {
    common::require_root();
    let pg = Cluster::start(&[]);
    pg.init_pgbench(1);
    let cluster = pg.data().canonicalize().unwrap().display().to_string();
    // What `pgpreempt trace` loads (trace::run): per process, departed kept.
    let mut agent = Agent::start(&Config {
        per_process: true,
        keep_departed: true,
        ..Config::default()
    })
    .expect("agent starts");
    let mut cadence = Cadence::new();
    let transactions = churn(
        &mut agent,
        &mut cadence,
        &pg,
        TRACE_CHURN_SECS,
        assert_no_entries_left_behind,
    );
    let s = settle(&mut agent, &mut cadence, |s| {
        s.maps.tasks <= s.live.threads + SETTLED_SLACK
            && s.maps.proc_stats <= s.live.processes + SETTLED_SLACK
    });
    // Every backend, also one that exited before the agent read its title
    // (most of them live a few ms), is labelled with its cluster from its
    // fork and as a client backend (its title read as it exited, or the
    // assumption for a child of a postmaster): none is unclassified or
    // `other`. The last backends exited at the end: the agent folds their
    // counters away (into `departed`) after its exit grace, so count once
    // that has passed.
    for _ in 0..2 {
        std::thread::sleep(pgpreempt::postgres::tracker::EXIT_GRACE + Duration::from_millis(100));
        agent.refresh();
    }
    let unclassified = pgpreempt::postgres::processes::Classified::unclassified();
    let mut by_labels = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut note = |cluster: &str, backend_type: &str, c: &Counters| {
        let e = by_labels
            .entry(format!("{cluster}/{backend_type}"))
            .or_default();
        e.0 += 1;
        e.1 += c.v[counter::VOLUNTARY_SWITCHES] + c.v[counter::INVOLUNTARY_SWITCHES];
    };
    for d in &agent.tracker.departed {
        // Not an autovacuum worker or another process the cluster starts
        // and stops on its own.
        let backend = matches!(d.class.backend_type, "client backend" | "other");
        if (d.class.cluster == cluster && backend) || d.class == unclassified {
            note(&d.class.cluster, d.class.backend_type, &d.counters);
        }
    }
    eprintln!("departed (cluster/backend type: processes, switches): {by_labels:?}");
    let client = format!("{cluster}/client backend");
    let (departed, departed_switches) = by_labels.get(&client).copied().unwrap_or_default();
    let mislabelled: u64 = by_labels
        .iter()
        .filter(|(k, _)| **k != client)
        .map(|(_, v)| v.1)
        .sum();
    let live = agent
        .tracker
        .procs
        .values()
        .filter(|t| {
            t.class.cluster == cluster && matches!(t.class.backend_type, "client backend" | "other")
        })
        .count() as u64;
    let lost = agent.diag()[diag::EVENTS_LOST];
    let snapshot = agent.snapshot();
    let starts = snapshot
        .starts
        .starts
        .iter()
        .find(|(l, _)| l.cluster == cluster && l.backend_type == "client backend")
        .map_or(0, |(_, n)| *n);
    let unattributed: u64 = snapshot
        .groups
        .iter()
        .filter(|(l, _)| l.cluster == pgpreempt::postgres::groups::UNASSIGNED_CLUSTER)
        .map(|(_, g)| {
            g.counters.v[counter::VOLUNTARY_SWITCHES] + g.counters.v[counter::INVOLUNTARY_SWITCHES]
        })
        .sum();
    eprintln!(
        "{transactions} connections; client backends in the report: {departed} departed + {live} tracked, {starts} starts counted; {lost} process events lost; switches of client backends {departed_switches}, under other labels {mislabelled}, unattributed {unattributed}; 2 s after the end: {s}"
    );
    assert!(
        transactions > 1000,
        "pgbench made only {transactions} connections: no churn"
    );
    assert_no_full_maps(&agent, "after the churn");
    assert!(
        s.maps.proc_stats <= s.live.processes + SETTLED_SLACK,
        "2 s after the churn: {s}: per-process counters left behind"
    );
    // Every transaction of `pgbench -C` had its own connection, so its own
    // backend (pgbench also connects once to read the scale, and
    // transactions cut short at the end are not in its count: there were
    // more backends, never fewer). The only tolerance: processes whose
    // birth or death notice the agent itself reported lost (ring full).
    assert!(
        departed + live + lost >= transactions,
        "the session saw {} client backends ({departed} departed, {live} tracked, {lost} process events lost) for {transactions} connections",
        departed + live
    );
    assert!(
        mislabelled * 100 <= departed_switches,
        "{mislabelled} switches of short-lived processes under other labels, against {departed_switches} labelled client backend: {by_labels:?}"
    );
    assert_eq!(unattributed, 0, "nothing of the cluster is unattributed");
    // One start per connection, within 1% (and the few setup connections).
    assert!(
        starts as f64 >= transactions as f64 * 0.99
            && starts as f64 <= transactions as f64 * 1.01 + 4.0,
        "{starts} client-backend starts counted for {transactions} connections"
    );
}

// ---------------------------------------------------------------------------
// D. A pid used again.

/// pid_max during the test: small enough that a few thousand forks wrap it.
const PID_MAX: u32 = 8192;
/// The first pid after a wrap (the kernel's RESERVED_PIDS).
const FIRST_PID: u32 = 300;
/// New processes started on reused pids, and the sleeps each makes.
const REUSERS: usize = 48;
const REUSER_SLEEPS: u64 = 20;

/// Lowers /proc/sys/kernel/pid_max; the old value comes back on drop, also
/// when the test panics.
struct PidMax {
    old: String,
}

impl PidMax {
    fn lower_to(max: u32) -> PidMax {
        let old = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
        let old_max: u32 = old.trim().parse().unwrap();
        if old_max > max {
            std::fs::write("/proc/sys/kernel/pid_max", max.to_string()).unwrap();
        }
        PidMax { old }
    }
}

impl Drop for PidMax {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/pid_max", self.old.trim());
    }
}

#[repr(C)]
struct ReuseBoard {
    /// Bit p: pid p was a traced process or thread of the churn.
    used: [AtomicU64; PID_MAX as usize / 64],
    churned: AtomicU64,
    /// The forker saw the pids wrap and waits for `go`.
    wrapped: AtomicU32,
    go: AtomicU32,
    reusers: [AtomicU32; REUSERS],
    /// Reusers done with their sleeps (then asleep at the gate).
    ready: AtomicU32,
}

fn mark_used(board: &ReuseBoard, pid: u32) {
    if let Some(w) = board.used.get(pid as usize / 64) {
        w.fetch_or(1 << (pid % 64), Ordering::SeqCst);
    }
}

fn was_used(board: &ReuseBoard, pid: u32) -> bool {
    board
        .used
        .get(pid as usize / 64)
        .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (pid % 64)) != 0)
}

/// The stack of a churn child's second thread (each forked child has its
/// own copy).
static mut THREAD_STACK: [u8; 64 * 1024] = [0; 64 * 1024];

/// A churn child's second thread: sleeps (a traced switch-out), then exits
/// last, so its exit tears down the address space (a long exit path).
extern "C" fn churn_thread(_: *mut c_void) -> c_int {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 50_000,
    };
    unsafe { libc::syscall(libc::SYS_nanosleep, &ts, std::ptr::null_mut::<c_void>()) };
    0
}

/// A churn child: a process and a second thread, both traced, both switch
/// out, and both exit within a millisecond (the agent never classifies it).
fn churn_child(board: &ReuseBoard) {
    mark_used(board, unsafe { libc::getpid() } as u32);
    let tid = unsafe {
        clone_thread(
            churn_thread,
            std::ptr::addr_of_mut!(THREAD_STACK),
            std::ptr::null_mut(),
        )
    };
    if tid > 0 {
        mark_used(board, tid as u32);
    }
    sleep_ns(10_000);
    // The main thread exits alone (not the group): the thread is the last.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

/// Traced processes and threads come and go until their pids wrap; then new
/// traced processes land on pids the churn used. Each must start from
/// nothing: announced to the agent, and its per-process counters exactly the
/// kernel's (read while it sleeps). Before the fix a reused pid could find
/// the task state an exit-path switch-out of the old owner re-created (its
/// tgid, its "announced" flag, its run counts) or the per-process counters
/// of an old owner the agent never classified.
#[test]
fn a_reused_pid_carries_nothing_from_its_previous_owner() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-reuse");
    let mut cadence = Cadence::new();
    let board: Shared<ReuseBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();

    let _pid_max = PidMax::lower_to(PID_MAX);
    // The churn starts at the bottom of the range, so that it covers it all
    // before it wraps.
    std::fs::write("/proc/sys/kernel/ns_last_pid", (FIRST_PID - 1).to_string())
        .expect("writing ns_last_pid");
    // A real-time task on the churn's CPU wakes every 30 us: an exiting task
    // that has it waiting is switched out in its exit path (cond_resched),
    // after sched_process_exit: the switch-outs that left stale entries.
    let ticker = Killed(fork_child(|| {
        set_comm(b"pgpt-ticker");
        pin_to_cpu(0);
        set_fifo(1);
        loop {
            sleep_ns(30_000);
        }
    }));
    let forker = Killed(fork_child(move || {
        unsafe { libc::close(gate.w) };
        set_comm(b"pgpt-reuse");
        pin_to_cpu(0);
        let board = unsafe { &*(b as *const ReuseBoard) };
        let mut last = 0;
        'churn: loop {
            let mut kids = [0u32; 8];
            for k in kids.iter_mut() {
                *k = fork_child(move || churn_child(unsafe { &*(b as *const ReuseBoard) }));
            }
            reap(&kids);
            board.churned.fetch_add(kids.len() as u64, Ordering::SeqCst);
            for &k in &kids {
                if k < last {
                    break 'churn;
                }
                last = k;
            }
        }
        board.wrapped.store(1, Ordering::SeqCst);
        while board.go.load(Ordering::SeqCst) == 0 {
            sleep_ns(1_000_000);
        }
        for i in 0..REUSERS {
            let pid = fork_child(move || {
                let board = unsafe { &*(b as *const ReuseBoard) };
                for _ in 0..REUSER_SLEEPS {
                    sleep_ns(100_000);
                }
                board.ready.fetch_add(1, Ordering::SeqCst);
                gate.pass();
            });
            board.reusers[i].store(pid, Ordering::SeqCst);
        }
        gate.pass();
        let pids: Vec<u32> = board
            .reusers
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .collect();
        reap(&pids);
    }));
    let board = board.get();
    let started = Instant::now();
    while board.wrapped.load(Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pids did not wrap after {} churned children",
            board.churned.load(Ordering::SeqCst)
        );
        cadence.tick(&mut agent);
    }
    drop(ticker);
    let churn_secs = started.elapsed().as_secs_f64();
    // The exits of the churn pass their grace period, so that what is left
    // now is what nothing will free.
    for _ in 0..15 {
        cadence.tick(&mut agent);
    }
    let left = sizes_of(&agent, "pgpt-reuse");
    eprintln!(
        "churn: {} processes with a second thread in {churn_secs:.1} s, pids wrapped; left behind: {left}",
        board.churned.load(Ordering::SeqCst)
    );

    // New processes on the churn's pids, each asleep at the gate when read.
    let missed_before = common::missed_switch_outs(&agent);
    board.go.store(1, Ordering::SeqCst);
    let started = Instant::now();
    while board.ready.load(Ordering::SeqCst) < REUSERS as u32 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new processes did not finish their sleeps"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids: Vec<u32> = board
        .reusers
        .iter()
        .map(|p| p.load(Ordering::SeqCst))
        .collect();
    common::wait_asleep(&pids);
    // Only `poll`: the /proc sweep of `refresh` would find a process the
    // kernel never announced.
    for _ in 0..5 {
        agent.poll();
        std::thread::sleep(Duration::from_millis(20));
    }
    let missed = common::missed_switch_outs(&agent) - missed_before;
    let mut reused = 0;
    let mut wrong = Vec::new();
    for &pid in &pids {
        if !was_used(board, pid) {
            continue;
        }
        reused += 1;
        let k = common::truth(pid);
        let announced = agent
            .tracker
            .procs
            .get(&pid)
            .is_some_and(|t| t.exited_at.is_none());
        let Some(c) = agent.process_counters(pid) else {
            wrong.push(format!(
                "pid {pid}: no per-process counters (announced: {announced})"
            ));
            continue;
        };
        let (vol, invol) = (
            c.v[counter::VOLUNTARY_SWITCHES],
            c.v[counter::INVOLUNTARY_SWITCHES],
        );
        let exact = |got: u64, want: u64| got <= want && want - got <= missed;
        if !announced || !exact(vol, k.voluntary) || !exact(invol, k.nonvoluntary) {
            wrong.push(format!(
                "pid {pid}: announced {announced}; voluntary switches agent {vol}, kernel {}; involuntary agent {invol}, kernel {}; run-queue ns agent {}, kernel {}",
                k.voluntary,
                k.nonvoluntary,
                run_queue_ns(&c),
                k.run_delay_ns
            ));
        }
    }
    gate.release(REUSERS + 1);
    reap(&[forker.disarm()]);
    gate.close();
    eprintln!(
        "{reused} of {REUSERS} new processes on pids the churn used; {} wrong ({missed} switch-outs reported missed)",
        wrong.len()
    );
    assert!(
        reused >= REUSERS / 2,
        "only {reused} of {REUSERS} new processes landed on pids the churn used: no test"
    );
    assert!(
        wrong.is_empty(),
        "{} of {reused} processes on reused pids carry something of the pid's previous owner:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The maps' sizes against the live tasks named `comm`.
fn sizes_of(agent: &Agent, comm: &str) -> Sizes {
    Sizes {
        maps: agent.map_entries(),
        live: common::live_tasks(&[comm]),
    }
}

// ---------------------------------------------------------------------------
// E. The start of a futex wait, read from another CPU.

/// How long the ping-pong runs.
const PINGPONG_SECS: u64 = 12;
/// CPU the waiter burns between two waits.
const WAITER_RUN_NS: u64 = 3_000_000;

#[repr(C)]
struct PingBoard {
    word: u32,
    /// The round the waiter is about to wait in, plus one.
    armed: u32,
    stop: u32,
    done: u32,
    /// What the waiter saw: time inside its futex_wait calls, the calls,
    /// and the rounds.
    wait_ns: u64,
    calls: u64,
    rounds: u64,
}

/// A waiter blocks on a shared futex; its peer, a traced waker that a CPU hog
/// keeps preempting, wakes it as soon as it sees the waiter arm, after a delay
/// that sweeps a few microseconds (so that some wakes land while the waiter
/// is still switching out). The waiter delay the agent charges (time the
/// waiter's wait overlapped the waker's preemptions) can never exceed the
/// time the waiter spent inside its futex calls, by its own clock. Before
/// the fix the wait's kind was published before its start time, so a wake
/// racing the waiter's switch-out could use the previous wait's start and
/// charge the waker's preemptions since then again. (On x86 the window is
/// one clock read, so this seldom shows; it guards against that order.)
#[test]
fn waiter_delay_never_exceeds_the_time_waited() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-pingpong");
    let board: Shared<PingBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();
    let waiter = Killed(fork_child(move || {
        unsafe { libc::close(gate.w) };
        set_comm(b"pgpt-pingpong");
        pin_to_cpu(1);
        if !gate.pass() {
            return;
        }
        let board = unsafe { &mut *(b as *mut PingBoard) };
        let mut round = 0u32;
        while unsafe { std::ptr::read_volatile(&board.stop) } == 0 {
            burn_cpu(WAITER_RUN_NS);
            unsafe { std::ptr::write_volatile(&mut board.armed, round + 1) };
            loop {
                let t0 = now_ns();
                futex_wait(&mut board.word, round);
                let t1 = now_ns();
                board.wait_ns += t1 - t0;
                board.calls += 1;
                if unsafe { std::ptr::read_volatile(&board.word) } != round {
                    break;
                }
            }
            round += 1;
            board.rounds += 1;
        }
        unsafe { std::ptr::write_volatile(&mut board.done, 1) };
    }));
    let waker = Killed(fork_child(move || {
        unsafe { libc::close(gate.w) };
        set_comm(b"pgpt-pingpong");
        pin_to_cpu(0);
        if !gate.pass() {
            return;
        }
        let board = unsafe { &mut *(b as *mut PingBoard) };
        let mut round = 0u32;
        loop {
            loop {
                if unsafe { std::ptr::read_volatile(&board.armed) } == round + 1 {
                    break;
                }
                if unsafe { std::ptr::read_volatile(&board.done) } != 0 {
                    return;
                }
                std::hint::spin_loop();
            }
            // 0 to 3.2 us, a different step each round.
            spin_for(((round as u64).wrapping_mul(2_654_435_761) >> 7) % 64 * 50);
            unsafe { std::ptr::write_volatile(&mut board.word, round + 1) };
            futex_wake(&mut board.word, 1);
            round += 1;
        }
    }));
    let hog = Killed(fork_child(|| {
        set_comm(b"pgpt-hog");
        pin_to_cpu(0);
        loop {
            std::hint::spin_loop();
        }
    }));
    common::wait_asleep(&[waiter.0, waker.0]);
    // Both are classified (one cluster: a wake is only charged within one).
    agent.refresh();
    gate.release(2);
    let mut cadence = Cadence::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(PINGPONG_SECS) {
        cadence.tick(&mut agent);
    }
    unsafe { std::ptr::write_volatile(&mut board.get().stop, 1) };
    let (waiter, waker) = (waiter.disarm(), waker.disarm());
    reap(&[waiter, waker]);
    drop(hog);
    gate.close();
    agent.refresh();
    let board = board.get();
    let w = agent.process_counters(waiter).expect("waiter counted");
    let h = agent.process_counters(waker).expect("waker counted");
    let delay = w.v[counter::WAITER_DELAY_NS];
    eprintln!(
        "waiter: {} rounds, {} futex calls, {:.3} s inside them by its clock; agent: {} waits, {:.3} s waited, waiter delay {:.3} s; waker: {} wakes, {} holder preemptions ({:.3} s)",
        board.rounds,
        board.calls,
        board.wait_ns as f64 / 1e9,
        w.v[counter::FUTEX_WAITS],
        w.v[counter::FUTEX_WAIT_NS] as f64 / 1e9,
        delay as f64 / 1e9,
        h.v[counter::FUTEX_WAKES],
        h.v[counter::HOLDER_PREEMPTIONS],
        h.v[counter::HOLDER_PREEMPTED_NS] as f64 / 1e9,
    );
    // The hog did hold up the waker while the waiter waited.
    assert!(
        delay > 0 && board.rounds > 100,
        "no waiter delay in {} rounds: no test",
        board.rounds
    );
    // A wait as the agent times it lies inside the waiter's call (the same
    // clock, CLOCK_MONOTONIC), and a holder's preemptions do not overlap
    // each other, so the sum of overlaps is at most the time waited. 100 us
    // in all for rounding: nothing should need it.
    assert!(
        delay <= board.wait_ns + 100_000,
        "the agent charged {delay} ns of waiter delay for {} ns spent waiting: a wait's start was read stale",
        board.wait_ns
    );
}

// ---------------------------------------------------------------------------
// F. Spinlock counts under preemption.

const SPINNERS: usize = 4;
const SPIN_CALLS: u64 = 100_000;

/// Several processes pinned to one CPU call `s_lock` in a tight loop (no
/// spin time), preempting each other; every call must be counted, in each
/// process, in their group and in the site's histogram. The uprobe programs
/// add to per-CPU values without atomics: on a preemptible kernel one can be
/// preempted mid-add by another process's program on the same CPU, and an
/// add is lost. On this PREEMPT_NONE VM a program is never preempted, so the
/// race cannot occur here; the test guards preemptible kernels.
#[test]
fn spin_counts_are_exact_under_preemption() {
    common::require_root();
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-spinner".into()],
        keep_departed: true,
        ..Config::default()
    })
    .expect("agent starts");
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let (gate, done) = (Gate::new(), Gate::new());
    let kids: Vec<u32> = (0..SPINNERS)
        .map(|_| {
            fork_child(move || {
                unsafe {
                    libc::close(gate.w);
                    libc::close(done.r);
                }
                set_comm(b"pgpt-spinner");
                pin_to_cpu(cpu);
                if !gate.pass() {
                    return;
                }
                for _ in 0..SPIN_CALLS {
                    let mut d = 0u64;
                    unsafe {
                        s_lock(
                            &mut d,
                            c"s_lock.c".as_ptr(),
                            1,
                            c"StrategyGetBuffer".as_ptr(),
                        )
                    };
                }
                // Alive until the agent has read the site's name.
                unsafe { libc::write(done.w, b"x".as_ptr() as *const c_void, 1) };
                gate.pass();
            })
        })
        .collect();
    // Seen before they call s_lock: the agent probes this binary first.
    common::wait_asleep(&kids);
    agent.refresh();
    gate.release(SPINNERS);
    for _ in 0..SPINNERS {
        let mut b = 0u8;
        assert_eq!(
            unsafe { libc::read(done.r, &mut b as *mut u8 as *mut c_void, 1) },
            1
        );
    }
    agent.refresh();
    let sites = agent.spin_sites();
    gate.release(SPINNERS);
    let nivcsw: u64 = kids.iter().map(|&k| reap_rusage(k).ru_nivcsw as u64).sum();
    gate.close();
    done.close();
    agent.refresh();

    let total = SPIN_CALLS * SPINNERS as u64;
    let groups = all_groups(&agent);
    let site = sites.iter().find(|s| s.site == "StrategyGetBuffer");
    let site_count = site.map_or(0, |s| s.hist.buckets.iter().sum::<u64>());
    let site_delays = site.map_or(0, |s| s.delays);
    eprintln!(
        "{SPINNERS} spinners x {SPIN_CALLS} calls on CPU {cpu}, {nivcsw} involuntary switches: group spins {}, delays {}; site count {site_count}, delays {site_delays}",
        groups.v[counter::SPINS],
        groups.v[counter::SPIN_DELAYS]
    );
    assert!(
        nivcsw >= SPINNERS as u64,
        "the spinners hardly preempted each other ({nivcsw} involuntary switches): no test"
    );
    for &k in &kids {
        let c = agent.process_counters(k).expect("spinner counted");
        assert_eq!(c.v[counter::SPINS], SPIN_CALLS, "spinner {k}: spins");
        assert_eq!(c.v[counter::SPIN_DELAYS], SPIN_CALLS, "spinner {k}: sleeps");
    }
    assert_eq!(groups.v[counter::SPINS], total, "spins in the group");
    assert_eq!(groups.v[counter::SPIN_DELAYS], total, "sleeps in the group");
    assert!(site.is_some(), "site StrategyGetBuffer missing: {sites:?}");
    assert_eq!(site_count, total, "the site's histogram count");
    assert_eq!(site_delays, total, "the site's sleeps");
}

// ---------------------------------------------------------------------------
// F. Children of a postmaster that live 1-20 ms.

const BRIEF_CHILDREN: usize = 400;

#[repr(C)]
struct BriefBoard {
    /// Each child's own `getrusage` counts, read just before its `_exit`.
    own_nvcsw: [u64; BRIEF_CHILDREN],
    own_nivcsw: [u64; BRIEF_CHILDREN],
    /// `wait4`'s, for its whole life (the final switch included).
    final_nvcsw: [u64; BRIEF_CHILDREN],
    final_nivcsw: [u64; BRIEF_CHILDREN],
    done: u32,
}

/// A stand-in postmaster (its working directory holds a `postmaster.pid`
/// naming it, which is how the agent finds a cluster) forks children that
/// each live 1 to 20 ms, sleeping and burning CPU, four per CPU at a time,
/// and exit before the agent can read their titles. What `pgpreempt run`
/// counts for them (groups only) must be under the cluster and `client
/// backend` (the label of a postmaster's child whose title never became
/// another type), within 1% of their own counts; nothing under `other` or
/// unattributed; one start and one lifetime each.
#[test]
fn children_of_a_postmaster_that_live_milliseconds_keep_their_labels() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    let cdir = std::ffi::CString::new(data.as_os_str().as_encoded_bytes()).unwrap();
    let board: Shared<BriefBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();
    let postmaster = fork_child(move || {
        set_comm(b"pgpt-brief");
        unsafe { libc::chdir(cdir.as_ptr()) };
        // Until the agent knows it as a postmaster.
        gate.pass();
        let board = unsafe { &mut *(b as *mut BriefBoard) };
        in_batches(
            BRIEF_CHILDREN,
            move |i| {
                let board = unsafe { &mut *(b as *mut BriefBoard) };
                // 0 to 3 sleeps of 1 ms, and 1 to 20 ms of CPU.
                for _ in 0..i % 4 {
                    sleep_ns(1_000_000);
                }
                burn_cpu(short_cpu_ns(i));
                let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
                board.own_nvcsw[i] = ru.ru_nvcsw as u64;
                board.own_nivcsw[i] = ru.ru_nivcsw as u64;
            },
            |i, pid| {
                let ru = reap_rusage(pid);
                board.final_nvcsw[i] = ru.ru_nvcsw as u64;
                board.final_nivcsw[i] = ru.ru_nivcsw as u64;
            },
        );
        unsafe { std::ptr::write_volatile(&mut board.done, 1) };
        gate.pass();
    });
    std::fs::write(
        data.join("postmaster.pid"),
        format!("{postmaster}\n{}\n", data.display()),
    )
    .unwrap();
    common::wait_asleep(&[postmaster]);
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-brief".into()],
        per_process: false,
        ..Config::default()
    })
    .expect("agent starts");
    let cluster = data.display().to_string();
    assert_eq!(
        agent
            .labels_of(postmaster)
            .map(|l| (l.cluster, l.backend_type)),
        Some((cluster.clone(), "postmaster".to_string())),
        "the stand-in is known as a postmaster"
    );
    gate.release(1);
    let mut cadence = Cadence::new();
    let started = Instant::now();
    while unsafe { std::ptr::read_volatile(&board.get().done) } == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the children did not finish"
        );
        cadence.tick(&mut agent);
    }
    common::wait_asleep(&[postmaster]);
    std::thread::sleep(pgpreempt::postgres::tracker::EXIT_GRACE);
    agent.refresh();
    agent.refresh();

    let snapshot = agent.snapshot();
    let group = |cluster: &str, backend_type: &str| -> Counters {
        let mut sum = Counters::zeroed();
        for (l, g) in &snapshot.groups {
            if l.cluster == cluster && l.backend_type == backend_type {
                for (s, v) in sum.v.iter_mut().zip(g.counters.v.iter()) {
                    *s += v;
                }
            }
        }
        sum
    };
    let client = group(&cluster, "client backend");
    let other = group(&cluster, "other");
    let unattributed = group(pgpreempt::postgres::groups::UNASSIGNED_CLUSTER, "other");
    let bb = board.get();
    let own_vol: u64 = bb.own_nvcsw.iter().sum();
    let own_invol: u64 = bb.own_nivcsw.iter().sum();
    let final_vol: u64 = bb.final_nvcsw.iter().sum();
    let final_invol: u64 = bb.final_nivcsw.iter().sum();
    let (vol, invol) = (
        client.v[counter::VOLUNTARY_SWITCHES],
        client.v[counter::INVOLUNTARY_SWITCHES],
    );
    let missed = common::missed_switch_outs(&agent);
    let labels = pgpreempt::postgres::groups::Labels {
        cluster: cluster.clone(),
        backend_type: "client backend".into(),
    };
    let starts = snapshot.starts.starts.get(&labels).copied().unwrap_or(0);
    let lifetimes = snapshot
        .starts
        .lifetimes
        .get(&labels)
        .cloned()
        .unwrap_or_default();
    let lost = agent.diag()[diag::EVENTS_LOST];
    eprintln!(
        "{BRIEF_CHILDREN} children: client backend voluntary {vol} (their own {own_vol}, wait4 {final_vol}), involuntary {invol} (their own {own_invol}, wait4 {final_invol}); other {}, unattributed {}; {starts} starts, {} lifetimes (mean {:.1} ms); {missed} switch-outs missed, {lost} process events lost",
        other.v[counter::VOLUNTARY_SWITCHES] + other.v[counter::INVOLUNTARY_SWITCHES],
        unattributed.v[counter::VOLUNTARY_SWITCHES] + unattributed.v[counter::INVOLUNTARY_SWITCHES],
        lifetimes.count,
        lifetimes.sum_seconds * 1e3 / lifetimes.count.max(1) as f64,
    );
    gate.release(1);
    reap(&[postmaster]);
    gate.close();

    assert!(
        own_vol > BRIEF_CHILDREN as u64 && own_invol > BRIEF_CHILDREN as u64 / 4,
        "the children hardly switched ({own_vol} voluntary, {own_invol} involuntary): no test"
    );
    // Within 1% of their own counts. The agent also counts the switches
    // after a child's last `getrusage` (its exit path), and not its final
    // switch (TASK_DEAD, which the kernel counts as voluntary, in wait4's
    // figure only if it came before the reaping), so never more than
    // wait4's whole-life count.
    common::assert_close("voluntary switches", vol as f64, own_vol as f64, 1.0, 0.0);
    assert!(vol <= final_vol, "voluntary {vol}, wait4 {final_vol}");
    assert!(
        (invol + missed) as f64 >= own_invol as f64 * 0.99 && invol <= final_invol,
        "involuntary: agent {invol}, their own {own_invol}, wait4 {final_invol} ({missed} missed)"
    );
    for (what, c) in [("other", &other), ("unattributed", &unattributed)] {
        assert_eq!(
            c.v[counter::VOLUNTARY_SWITCHES]
                + c.v[counter::INVOLUNTARY_SWITCHES]
                + c.v[counter::ON_CPU_NS],
            0,
            "nothing of the children under {what}"
        );
    }
    assert_eq!(starts + lost, BRIEF_CHILDREN as u64, "one start per child");
    assert_eq!(
        lifetimes.count + lost,
        BRIEF_CHILDREN as u64,
        "one lifetime per child"
    );
    assert!(
        lifetimes.sum_seconds >= BRIEF_CHILDREN as f64 * 0.001
            && lifetimes.sum_seconds <= BRIEF_CHILDREN as f64 * 0.5,
        "lifetimes sum to {} s",
        lifetimes.sum_seconds
    );
}

// ---------------------------------------------------------------------------
// G. Children of a postmaster that exec another program.

/// Children per phase: enough in the second one that their fork notices,
/// unread while they run, overflow the 256 KiB ring (168 bytes a notice).
const EXEC_CHILDREN: [u32; 2] = [200, 3000];

#[repr(C)]
struct ExecBoard {
    done: [u32; 2],
}

/// A stand-in postmaster forks children that exec `/bin/true` (their
/// command name changes, so no exit notice comes). The kernel gives each
/// one a `PROC_INFO` entry at its fork; once they are gone, only the
/// postmaster's may be left: first with the agent polling, then with the
/// agent not reading the ring while they run (the ring overflows, and some
/// fork notices are lost).
#[test]
fn children_of_a_postmaster_that_exec_leave_no_process_info_behind() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    let cdir = std::ffi::CString::new(data.as_os_str().as_encoded_bytes()).unwrap();
    let board: Shared<ExecBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();
    let prog = std::ffi::CString::new("/bin/true").unwrap();
    let postmaster = fork_child(move || {
        set_comm(b"pgpt-fexec");
        unsafe { libc::chdir(cdir.as_ptr()) };
        let argv = [prog.as_ptr(), std::ptr::null()];
        for (phase, n) in EXEC_CHILDREN.iter().enumerate() {
            gate.pass();
            for _ in 0..*n {
                let pid = fork_child(|| unsafe {
                    libc::execv(prog.as_ptr(), argv.as_ptr());
                });
                reap(&[pid]);
            }
            let board = unsafe { &mut *(b as *mut ExecBoard) };
            unsafe { std::ptr::write_volatile(&mut board.done[phase], 1) };
        }
        gate.pass();
    });
    std::fs::write(
        data.join("postmaster.pid"),
        format!("{postmaster}\n{}\n", data.display()),
    )
    .unwrap();
    common::wait_asleep(&[postmaster]);
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-fexec".into()],
        per_process: false,
        ..Config::default()
    })
    .expect("agent starts");
    assert_eq!(
        agent.labels_of(postmaster).map(|l| l.backend_type),
        Some("postmaster".to_string())
    );
    let settle = |agent: &mut Agent| {
        // Ten refreshes: the tenth sweeps /proc and the maps.
        for _ in 0..2 {
            std::thread::sleep(pgpreempt::postgres::tracker::EXIT_GRACE);
            for _ in 0..10 {
                agent.refresh();
            }
        }
    };
    let mut cadence = Cadence::new();
    let mut results = Vec::new();
    for (phase, &children) in EXEC_CHILDREN.iter().enumerate() {
        gate.release(1);
        let started = Instant::now();
        while unsafe { std::ptr::read_volatile(&board.get().done[phase]) } == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "phase {phase}"
            );
            if phase == 0 {
                cadence.tick(&mut agent);
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        settle(&mut agent);
        let proc_info = agent.map_entries().proc_info;
        let lost = agent.diag()[diag::EVENTS_LOST];
        let starts = agent
            .snapshot()
            .starts
            .of_cluster(&data.display().to_string());
        eprintln!(
            "phase {phase}: {} children exec'd; PROC_INFO {proc_info} entries, {lost} process events lost, {starts} starts counted",
            children
        );
        results.push((proc_info, lost));
    }
    gate.release(1);
    reap(&[postmaster]);
    gate.close();
    assert_eq!(
        results[0].0, 1,
        "phase 0: only the postmaster's entry is left"
    );
    assert!(results[1].1 > 0, "phase 1: the ring overflowed (no test)");
    assert_eq!(
        results[1].0, 1,
        "phase 1: only the postmaster's entry is left ({} process events lost)",
        results[1].1
    );
}

// ---------------------------------------------------------------------------
// H. A full process-information map at the fork.

const FULL_CHILDREN: usize = 24;

#[repr(C)]
struct FullBoard {
    forked: u32,
}

/// A stand-in postmaster forks more live children than `PROC_INFO` holds:
/// the kernel cannot label the last ones at their fork
/// (`process_info_full`), but every start is still counted.
#[test]
fn a_full_process_map_at_the_fork_still_counts_every_start() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().canonicalize().unwrap();
    let cdir = std::ffi::CString::new(data.as_os_str().as_encoded_bytes()).unwrap();
    let board: Shared<FullBoard> = Shared::new();
    let b = board.ptr as usize;
    let gate = Gate::new();
    let children = Gate::new();
    let postmaster = fork_child(move || {
        set_comm(b"pgpt-pfull");
        unsafe { libc::chdir(cdir.as_ptr()) };
        gate.pass();
        let mut pids = [0u32; FULL_CHILDREN];
        for p in pids.iter_mut() {
            *p = fork_child(|| {
                children.pass();
            });
        }
        let board = unsafe { &mut *(b as *mut FullBoard) };
        unsafe { std::ptr::write_volatile(&mut board.forked, 1) };
        reap(&pids);
        gate.pass();
    });
    std::fs::write(
        data.join("postmaster.pid"),
        format!("{postmaster}\n{}\n", data.display()),
    )
    .unwrap();
    common::wait_asleep(&[postmaster]);
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-pfull".into()],
        per_process: false,
        max_processes: 8,
        ..Config::default()
    })
    .expect("agent starts");
    gate.release(1);
    let mut cadence = Cadence::new();
    while unsafe { std::ptr::read_volatile(&board.get().forked) } == 0 {
        cadence.tick(&mut agent);
    }
    for _ in 0..5 {
        cadence.tick(&mut agent);
    }
    children.release(FULL_CHILDREN);
    for _ in 0..2 {
        std::thread::sleep(pgpreempt::postgres::tracker::EXIT_GRACE);
        for _ in 0..10 {
            agent.refresh();
        }
    }
    let full = agent.diag()[diag::PROC_INFO_FULL];
    let starts = agent
        .snapshot()
        .starts
        .of_cluster(&data.display().to_string());
    let lost = agent.diag()[diag::EVENTS_LOST];
    eprintln!("{FULL_CHILDREN} children: {full} not labelled at the fork (map full), {starts} starts counted, {lost} events lost");
    gate.release(1);
    reap(&[postmaster]);
    gate.close();
    children.close();
    assert!(full > 0, "the map never filled: no test");
    assert_eq!(starts, FULL_CHILDREN as u64, "one start per child");
}
