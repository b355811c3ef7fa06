//! Futex waits with a known answer: waiters block on shared futexes (as
//! PostgreSQL's semaphores do) until a known peer wakes them.
mod common;

use agent_common::stats::counter;
use common::workload::{
    errno, fork_child, futex_wait_blocked, futex_wake, now_ns, reap, set_comm, sleep_ns, Shared,
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
    /// The kernel's count of each waiter's voluntary switches inside its
    /// futex calls: each wait that really blocked is one (a wait can also
    /// end without blocking: woken while preempted before it slept).
    blocked: [u64; WAITERS],
    ready: u32,
}

#[test]
fn futex_wait_count_is_exact_and_time_within_two_percent() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-futex");
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
            for round in 0..ROUNDS {
                // Block until the waker moves the word past `round`.
                loop {
                    let t0 = now_ns();
                    let (r, blocked) = futex_wait_blocked(&mut board.words[w], round);
                    let t1 = now_ns();
                    board.blocked[w] += blocked;
                    if r == 0 || (r == -1 && errno() != libc::EAGAIN) {
                        board.waits[w] += 1;
                        board.wait_ns[w] += t1 - t0;
                    }
                    if unsafe { std::ptr::read_volatile(&board.words[w]) } != round {
                        break;
                    }
                }
            }
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

    let board = board.get();
    for (w, &pid) in pids[..WAITERS].iter().enumerate() {
        let c = agent.process_counters(pid).expect("waiter traced");
        assert_eq!(
            c.v[counter::FUTEX_WAITS],
            board.blocked[w],
            "waiter {w}: futex waits that blocked (the kernel's voluntary switches)"
        );
        assert!(
            board.waits[w] >= ROUNDS as u64 / 2,
            "waiter {w} rarely blocked: {}",
            board.waits[w]
        );
        common::assert_close(
            &format!("waiter {w} futex wait ns"),
            c.v[counter::FUTEX_WAIT_NS] as f64,
            board.wait_ns[w] as f64,
            2.0,
            0.0,
        );
        assert_eq!(c.v[counter::FUTEX_WAKES], 0, "waiter {w} woke nobody");
    }
    let wc = agent.process_counters(waker).expect("waker traced");
    // Every wait that blocked was ended by the waker's futex wake.
    assert_eq!(
        wc.v[counter::FUTEX_WAKES],
        board.blocked.iter().sum::<u64>(),
        "waiters the waker woke from a blocked wait"
    );
    assert_eq!(wc.v[counter::FUTEX_WAITS], 0);
}
