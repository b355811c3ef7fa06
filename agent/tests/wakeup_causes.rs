//! Wake-ups by cause (README, "Idle wake-ups") against workloads whose
//! answer they know themselves: sleeps that end by their own timeout
//! (timer), and two processes that wake each other over pipes (process).
mod common;

use agent_common::stats::{counter, Counters};
use common::workload::{
    fork_child, futex_wait, futex_wake, is_asleep, now_ns, pin_to_cpu, reap, set_comm, sleep_ns,
    thread_nvcsw, Killed, Shared,
};

/// Sleeps per timer child: 50 ms each, one second.
const SLEEPS: usize = 20;
const SLEEP_NS: u64 = 50_000_000;

/// How a timer child sleeps: the three timeouts PostgreSQL's waits use.
#[derive(Clone, Copy, Debug)]
enum Sleep {
    Nanosleep,
    Poll,
    Epoll,
}

#[repr(C)]
struct Board {
    go: u32,
    /// Per child: its voluntary switches during its loop (getrusage), and
    /// the loop's wall time.
    switches: [u64; 3],
    elapsed_ns: [u64; 3],
    /// Per child: loop iterations done (the pipe test's messages).
    messages: [u64; 3],
}

fn wait_go(board: &mut Board) {
    while unsafe { std::ptr::read_volatile(&board.go) } == 0 {
        futex_wait(&mut board.go, 0);
    }
}

fn go(board: &Shared<Board>) {
    let b = board.get();
    unsafe { std::ptr::write_volatile(&mut b.go, 1) };
    futex_wake(&mut b.go, i32::MAX);
}

fn sleep_once(how: Sleep, epfd: i32) {
    match how {
        Sleep::Nanosleep => sleep_ns(SLEEP_NS),
        Sleep::Poll => {
            unsafe { libc::poll(std::ptr::null_mut(), 0, (SLEEP_NS / 1_000_000) as i32) };
        }
        Sleep::Epoll => {
            let mut ev: libc::epoll_event = unsafe { std::mem::zeroed() };
            unsafe { libc::epoll_wait(epfd, &mut ev, 1, (SLEEP_NS / 1_000_000) as i32) };
        }
    }
}

/// Switch-ins the kernel did not run `sched_switch` for, and runs whose
/// waking the programs did not see (`waking_missed`): the reported ways a
/// wake-up can lack its cause.
fn missed_switch_ins(agent: &pgpreempt::agent::Agent) -> u64 {
    let d = agent.diag();
    d[agent_common::stats::diag::SWITCH_IN_MISSED] + d[agent_common::stats::diag::WAKING_MISSED]
}

/// What the agent counted for each child from the test's go to its exit
/// (`wakeups` of `before` and `after`), and the misses it reported
/// meanwhile: `missed_in` (switch-ins and wakings, which leave a run
/// without its cause) and `missed` (those and switch-outs).
struct Window {
    before: Vec<Counters>,
    after: Vec<Counters>,
    missed_in: u64,
    missed: u64,
}

/// Waits until every child is asleep on the go futex, reads the agent,
/// lets the children go, reaps them and reads the agent again.
fn run_window(
    agent: &mut pgpreempt::agent::Agent,
    kids: Vec<Killed>,
    board: &Shared<Board>,
) -> Window {
    let pids: Vec<u32> = kids.iter().map(|k| k.0).collect();
    while !pids.iter().all(|&p| is_asleep(p)) {
        sleep_ns(5_000_000);
    }
    agent.refresh();
    let counters = |agent: &pgpreempt::agent::Agent| -> Vec<Counters> {
        pids.iter()
            .map(|&p| agent.process_counters(p).expect("child traced"))
            .collect()
    };
    let before = counters(agent);
    let missed_before = common::missed_switch_outs(agent);
    let in_before = missed_switch_ins(agent);
    go(board);
    reap(&kids.into_iter().map(Killed::disarm).collect::<Vec<_>>());
    agent.refresh();
    let missed_in = missed_switch_ins(agent) - in_before;
    let missed = common::missed_switch_outs(agent) - missed_before + missed_in;
    let after = counters(agent);
    Window {
        before,
        after,
        missed_in,
        missed,
    }
}

fn wakeups(a: &Counters, b: &Counters) -> (u64, u64, u64, u64) {
    let d = |i: usize| b.v[i] - a.v[i];
    let (all, timer, process) = (
        d(counter::WAKEUPS),
        d(counter::WAKEUPS_TIMER),
        d(counter::WAKEUPS_PROCESS),
    );
    (all, timer, process, all - timer - process)
}

/// Three processes sleep 20 times for 50 ms each, by nanosleep, poll and
/// epoll_wait: each gives exactly 20 timer wake-ups, at 20 per second. The
/// window is bounded by their own counts: each is asleep on a futex before
/// (the test's wake of it is one process wake-up), sleeps 20 times, and
/// exits (its final switch-out counts the last wake-up).
#[test]
fn a_50ms_sleep_loop_gives_20_timer_wakeups_per_second() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-timer");
    let board: Shared<Board> = Shared::new();
    let b = board.ptr;
    let kids: Vec<Killed> = [Sleep::Nanosleep, Sleep::Poll, Sleep::Epoll]
        .into_iter()
        .enumerate()
        .map(|(i, how)| {
            Killed(fork_child(move || {
                set_comm(b"pgpt-timer");
                let board = unsafe { &mut *b };
                let epfd = unsafe { libc::epoll_create1(0) };
                // Fault the loop's code in before the window.
                sleep_once(how, epfd);
                let _ = thread_nvcsw();
                let _ = now_ns();
                wait_go(board);
                let (n0, t0) = (thread_nvcsw(), now_ns());
                for _ in 0..SLEEPS {
                    sleep_once(how, epfd);
                }
                board.elapsed_ns[i] = now_ns() - t0;
                board.switches[i] = thread_nvcsw() - n0;
            }))
        })
        .collect();
    let pids: Vec<u32> = kids.iter().map(|k| k.0).collect();
    while !pids.iter().all(|&p| is_asleep(p)) {
        sleep_ns(5_000_000);
    }
    // Past the first sleep (50 ms): asleep on the go futex once asleep again.
    sleep_ns(2 * SLEEP_NS);
    let Window {
        before,
        after,
        missed_in,
        missed,
    } = run_window(&mut agent, kids, &board);
    let board = board.get();
    for (i, how) in [Sleep::Nanosleep, Sleep::Poll, Sleep::Epoll]
        .into_iter()
        .enumerate()
    {
        let (all, timer, process, other) = wakeups(&before[i], &after[i]);
        let secs = board.elapsed_ns[i] as f64 / 1e9;
        eprintln!(
            "{how:?}: {all} wake-ups in {secs:.3} s: timer {timer} ({:.1}/s), process {process}, other {other}; the child's own voluntary switches in its loop {}; {missed_in} switch-ins missed or wakings skipped on the host",
            timer as f64 / secs,
            board.switches[i]
        );
        // The workload did what it says: one sleep per iteration.
        assert_eq!(
            board.switches[i], SLEEPS as u64,
            "{how:?}: the child slept other than once per iteration: no test"
        );
        common::assert_exact_but_missed(
            &format!("{how:?}: timer wake-ups"),
            timer,
            SLEEPS as u64,
            missed,
        );
        // The test's futex wake of the child, before its loop.
        common::assert_exact_but_missed(&format!("{how:?}: process wake-ups"), process, 1, missed);
        assert!(
            other <= missed_in,
            "{how:?}: {other} wake-ups counted as other ({missed_in} switch-ins missed)"
        );
        // At most 20 a second; fewer only if the loop overran its sleeps
        // (a loaded machine), never by half.
        let rate = timer as f64 / secs;
        assert!(
            rate <= 20.0 && rate > 10.0,
            "{how:?}: {rate:.1} timer wake-ups per second, not about 20"
        );
    }
}

/// Two processes on one CPU pass a byte back and forth over two pipes,
/// `MESSAGES` times: every sleep in their loops is a blocking read that the
/// other's write ends, a process wake-up. Each child counts its own
/// voluntary switches (getrusage) over its loop: the agent's process
/// wake-ups equal them, plus the test's futex wake before the loop.
#[test]
fn processes_waking_each_other_over_pipes_give_process_wakeups() {
    const MESSAGES: u64 = 500;
    common::require_root();
    let mut agent = common::agent_for("pgpt-pingpong");
    let board: Shared<Board> = Shared::new();
    let b = board.ptr;
    let (mut ab, mut ba) = ([0i32; 2], [0i32; 2]);
    assert_eq!(unsafe { libc::pipe(ab.as_mut_ptr()) }, 0);
    assert_eq!(unsafe { libc::pipe(ba.as_mut_ptr()) }, 0);
    let player = |i: usize, first: bool, rx: i32, tx: i32| {
        Killed(fork_child(move || {
            set_comm(b"pgpt-pingpong");
            pin_to_cpu(0);
            let board = unsafe { &mut *b };
            let _ = thread_nvcsw();
            wait_go(board);
            let n0 = thread_nvcsw();
            let mut byte = 0u8;
            let p = &mut byte as *mut u8 as *mut libc::c_void;
            for m in 0..MESSAGES {
                if first {
                    unsafe { libc::write(tx, p, 1) };
                    if unsafe { libc::read(rx, p, 1) } != 1 {
                        break;
                    }
                } else {
                    if unsafe { libc::read(rx, p, 1) } != 1 {
                        break;
                    }
                    unsafe { libc::write(tx, p, 1) };
                }
                board.messages[i] = m + 1;
            }
            board.switches[i] = thread_nvcsw() - n0;
        }))
    };
    let kids = [
        player(0, true, ba[0], ab[1]),
        player(1, false, ab[0], ba[1]),
    ];
    for fd in ab.into_iter().chain(ba) {
        unsafe { libc::close(fd) };
    }
    let Window {
        before,
        after,
        missed_in,
        missed,
    } = run_window(&mut agent, kids.into(), &board);
    let board = board.get();
    let mut slept = 0;
    for i in 0..2 {
        let (all, timer, process, other) = wakeups(&before[i], &after[i]);
        eprintln!(
            "player {i}: {} messages, {} voluntary switches in its loop; agent: {all} wake-ups, process {process}, timer {timer}, other {other}",
            board.messages[i], board.switches[i]
        );
        assert_eq!(board.messages[i], MESSAGES, "player {i} stopped early");
        slept += board.switches[i];
        common::assert_exact_but_missed(
            &format!("player {i}: process wake-ups (its sleeps in the loop and the go)"),
            process,
            board.switches[i] + 1,
            missed,
        );
        assert_eq!(timer, 0, "player {i}: timer wake-ups");
        assert!(
            other <= missed_in,
            "player {i}: {other} wake-ups counted as other ({missed_in} switch-ins missed)"
        );
    }
    // On one CPU, at least one of the two sleeps per round trip.
    assert!(
        slept >= MESSAGES,
        "only {slept} sleeps for {MESSAGES} round trips: no test"
    );
}

/// A process's voluntary switches, all threads (`/proc/PID/task/*/status`),
/// and whether every thread is asleep; None if it is gone.
fn voluntary_and_asleep(pid: u32) -> Option<(u64, bool)> {
    let mut total = 0;
    let mut asleep = true;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let tid: u32 = t.ok()?.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
        for l in status.lines() {
            if let Some(v) = l.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().ok()?;
            }
            if let Some(v) = l.strip_prefix("State:") {
                asleep &= matches!(v.trim().chars().next(), Some('S' | 'I'));
            }
        }
    }
    Some((total, asleep))
}

/// The cluster's processes: the postmaster and its children.
fn cluster_processes(postmaster: u32) -> Vec<u32> {
    let mut v = vec![postmaster];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            v.push(pid);
        }
    }
    v.sort();
    v
}

/// One edge of the idle window: every process asleep, its voluntary
/// switches read from /proc before and after the agent's counters, and
/// unchanged between (else read again): the two sides see the same sleeps.
fn idle_edge(agent: &mut pgpreempt::agent::Agent, pids: &[u32]) -> Vec<(u64, Counters)> {
    for _ in 0..200 {
        let first: Vec<_> = pids.iter().map(|&p| voluntary_and_asleep(p)).collect();
        if first.iter().any(|x| !matches!(x, Some((_, true)))) {
            std::thread::sleep(std::time::Duration::from_millis(7));
            continue;
        }
        agent.refresh();
        let counters: Vec<Counters> = pids
            .iter()
            .map(|&p| agent.process_counters(p).unwrap_or(Counters::zeroed()))
            .collect();
        let second: Vec<_> = pids.iter().map(|&p| voluntary_and_asleep(p)).collect();
        if first == second {
            return first
                .into_iter()
                .zip(counters)
                .map(|(x, c)| (x.unwrap().0, c))
                .collect();
        }
    }
    panic!("the idle cluster's processes never were all asleep at once");
}

/// An idle PostgreSQL (no client): each process's wake-ups over a window
/// equal its voluntary switches in /proc, within 1% (a sleep's wake-up is
/// counted at the end of the run it starts, so with the process asleep at
/// both edges the two count the same sleeps). The wake-ups per second of
/// each auxiliary process, by cause, are printed: README, "Idle
/// wake-ups", records them (`PGPREEMPT_IDLE_SECONDS=60`, default 20;
/// `PGPREEMPT_IDLE_SETTLE=150`, seconds idle before the window, default 3).
#[test]
fn idle_postgres_wakeups_match_voluntary_switches() {
    use common::postgres::Cluster;
    use pgpreempt::{agent::Agent, config::Config};
    common::require_root();
    let seconds: u64 = std::env::var("PGPREEMPT_IDLE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // How long the cluster idles before the window: the background writer
    // sleeps 200 ms until its scan has lapped the buffer pool (about 120 s
    // with no buffer allocated), then hibernates (10 s sleeps).
    let settle: u64 = std::env::var("PGPREEMPT_IDLE_SETTLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let pg = Cluster::start(&[]);
    let mut agent = Agent::start(&Config::default()).expect("agent starts");
    let pids = cluster_processes(pg.postmaster_pid());
    // Let the start-up settle (the first checkpoint, autovacuum's first
    // round) and the agent classify every process.
    std::thread::sleep(std::time::Duration::from_secs(settle));
    agent.refresh();
    let before = idle_edge(&mut agent, &pids);
    let missed_before = common::missed_switch_outs(&agent);
    let t0 = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let after = idle_edge(&mut agent, &pids);
    let secs = t0.elapsed().as_secs_f64();
    let missed = common::missed_switch_outs(&agent) - missed_before;
    let (mut total_k, mut total_a) = (0, 0);
    eprintln!(
        "PostgreSQL idle for {secs:.1} s: wake-ups per second (timer, process, other) and /proc voluntary switches"
    );
    for (i, &pid) in pids.iter().enumerate() {
        let labels = agent.labels_of(pid).expect("process classified");
        let truth = after[i].0 - before[i].0;
        let (all, timer, process, other) = wakeups(&before[i].1, &after[i].1);
        eprintln!(
            "  {:<30} pid {pid:>7}: {:>6.2}/s (timer {:.2}, process {:.2}, other {:.2}); /proc {:.2}/s ({truth} switches)",
            labels.backend_type,
            all as f64 / secs,
            timer as f64 / secs,
            process as f64 / secs,
            other as f64 / secs,
            truth as f64 / secs,
        );
        let slack = (truth as f64 * 0.01).floor() as u64 + missed;
        assert!(
            all.abs_diff(truth) <= slack,
            "{} (pid {pid}): {all} wake-ups, /proc says {truth} voluntary switches ({missed} switch-outs missed)",
            labels.backend_type
        );
        total_k += truth;
        total_a += all;
    }
    assert!(
        total_k >= 2,
        "only {total_k} voluntary switches in {secs:.0} s of idle PostgreSQL: no test"
    );
    eprintln!("  all: {total_a} wake-ups, /proc {total_k}");
}
