//! Futex waits with a known answer: waiters block on shared futexes (as
//! PostgreSQL's semaphores do) until a known peer wakes them.
mod common;

use agent_common::stats::counter;
use common::workload::{
    errno, fork_child, futex_wait_blocked, futex_wake, now_ns, own_run_delay_ns, reap, set_comm,
    sleep_ns, Shared,
};

const WAITERS: usize = 3;
const ROUNDS: u32 = 25;
const HOLD_NS: u64 = 8_000_000;

#[repr(C)]
struct Board {
    words: [u32; WAITERS],
    /// What each waiter saw: waits that blocked, and their total time.
    waits: [u64; WAITERS],
    wait_ns: [u64; WAITERS],
    /// Each waiter's futex calls that blocked until a wake: woken, with a
    /// voluntary switch (the kernel's count) during the call. A wait can
    /// also end without blocking: woken while preempted before it slept.
    blocked: [u64; WAITERS],
    /// Each waiter's run-queue time over its rounds (schedstat).
    queued_ns: [u64; WAITERS],
    /// Time of the calls that also slept on something else (more than one
    /// voluntary switch: a page under migration), and the longest call.
    other_sleep_call_ns: [u64; WAITERS],
    longest_ns: [u64; WAITERS],
    ready: u32,
}

#[test]
fn futex_wait_count_is_exact_and_time_within_two_percent() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-futex");
    check_rounds(&mut agent);
}

/// While the kernel compacts memory, a task may sleep (uninterruptibly) on a
/// page under migration inside its futex call: that is not a futex wait.
/// Before the agent told the two apart this failed about one run in five
/// (24 waits counted for 25).
#[test]
fn futex_waits_stay_exact_while_the_kernel_compacts_memory() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-futex");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let compactor = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // A one-shot trigger: compact every zone now.
                let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    for _ in 0..5 {
        check_rounds(&mut agent);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    compactor.join().unwrap();
    agent.refresh();
    let d = agent.diag();
    eprintln!(
        "switches the kernel did not show the agent: {} switch-ins (ended one run late), {} switch-outs",
        d[agent_common::stats::diag::SWITCH_IN_MISSED],
        d[agent_common::stats::diag::SWITCH_OUT_MISSED]
    );
}

/// One run of the waiters and their waker, checked against what the waiters
/// saw.
fn check_rounds(agent: &mut pgpreempt::agent::Agent) {
    let missed_before = common::missed_switch_outs(agent);
    let board: Shared<Board> = Shared::new();
    let b = board.ptr;
    let mut pids = Vec::new();
    for w in 0..WAITERS {
        pids.push(fork_child(move || {
            set_comm(b"pgpt-futex");
            // The new comm is seen at the task's next scheduler event.
            sleep_ns(1_000_000);
            let board = unsafe { &mut *b };
            // Fault in the code of the measured loop (returns EAGAIN).
            futex_wait_blocked(&mut board.words[w], u32::MAX);
            let q0 = own_run_delay_ns();
            for round in 0..ROUNDS {
                // Block until the waker moves the word past `round`.
                loop {
                    let t0 = now_ns();
                    let (r, blocked, switches) = futex_wait_blocked(&mut board.words[w], round);
                    let t1 = now_ns();
                    board.blocked[w] += blocked;
                    if switches > 1 {
                        board.other_sleep_call_ns[w] += t1 - t0;
                    }
                    board.longest_ns[w] = board.longest_ns[w].max(t1 - t0);
                    if r == 0 || (r == -1 && errno() != libc::EAGAIN) {
                        board.waits[w] += 1;
                        board.wait_ns[w] += t1 - t0;
                    }
                    if unsafe { std::ptr::read_volatile(&board.words[w]) } != round {
                        break;
                    }
                }
            }
            board.queued_ns[w] = own_run_delay_ns() - q0;
        }));
    }
    let waker = fork_child(move || {
        set_comm(b"pgpt-futex");
        sleep_ns(1_000_000);
        let board = unsafe { &mut *b };
        for round in 0..ROUNDS {
            sleep_ns(HOLD_NS);
            for w in 0..WAITERS {
                unsafe { std::ptr::write_volatile(&mut board.words[w], round + 1) };
                futex_wake(&mut board.words[w], 1);
            }
        }
    });
    pids.push(waker);
    reap(&pids);
    agent.refresh();
    // A switch-out the kernel did not run the program for (rare, under
    // memory pressure) loses the wait it started; the agent counts those
    // (dropped_events{reason="switch_out_missed"}), and only those may be
    // missing.
    let missed = common::missed_switch_outs(agent) - missed_before;

    let board = board.get();
    for (w, &pid) in pids[..WAITERS].iter().enumerate() {
        let c = agent.process_counters(pid).expect("waiter traced");
        common::assert_exact_but_missed(
            &format!("waiter {w}: futex waits that blocked (woken, with a voluntary switch)"),
            c.v[counter::FUTEX_WAITS],
            board.blocked[w],
            missed,
        );
        assert!(
            board.waits[w] >= ROUNDS as u64 / 2,
            "waiter {w} rarely blocked: {}",
            board.waits[w]
        );
        // Within 2%, plus what the waiter's own clock sees and a wait does
        // not: a wait is timed from the block to running again, and the call
        // also holds the time before the block, longer when the waiter was
        // preempted there (it waited for a CPU: at most its run-queue time)
        // or slept on something else (a page under migration: at most those
        // calls' time); a missed switch-out loses a wait (at most the
        // longest call).
        let slack =
            board.queued_ns[w] + board.other_sleep_call_ns[w] + missed * board.longest_ns[w];
        common::assert_close(
            &format!("waiter {w} futex wait ns"),
            c.v[counter::FUTEX_WAIT_NS] as f64,
            board.wait_ns[w] as f64,
            0.0,
            board.wait_ns[w] as f64 * 0.02 + slack as f64,
        );
        assert_eq!(c.v[counter::FUTEX_WAKES], 0, "waiter {w} woke nobody");
    }
    let wc = agent.process_counters(waker).expect("waker traced");
    // Every wait that blocked was ended by the waker's futex wake.
    common::assert_exact_but_missed(
        "waiters the waker woke from a blocked wait",
        wc.v[counter::FUTEX_WAKES],
        board.blocked.iter().sum::<u64>(),
        missed,
    );
    assert_eq!(wc.v[counter::FUTEX_WAITS], 0);
}
