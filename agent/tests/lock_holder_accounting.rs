//! Lock-holder preemption with a known answer: a holder takes a lock built on
//! a shared futex and burns CPU in its critical section while a CPU hog on
//! the same CPU preempts it; waiters block on the futex until the holder
//! wakes them. The holder records its own run-queue wait across each
//! critical section (schedstat), which is the answer.
mod common;

use agent_common::stats::counter;
use common::workload::{
    burn_cpu, errno, fork_child, futex_wait_blocked, futex_wake, is_asleep, kill, own_nivcsw,
    own_run_delay_ns, pin_to_cpu, reap, set_comm, sleep_ns, spin_for, Shared,
};
use pgpreempt::{agent::Agent, config::Config};

const WAITERS: usize = 2;
const ROUNDS: u32 = 16;
const CS_CPU_NS: u64 = 6_000_000;

#[repr(C)]
struct Board {
    word: u32,
    waiting: std::sync::atomic::AtomicU32,
    /// Ground truth from the holder: run-queue ns and involuntary switches
    /// inside its critical sections.
    cs_run_delay_ns: u64,
    cs_nivcsw: u64,
    waits: [u64; WAITERS],
    /// Each waiter's futex calls that blocked until a wake (woken, with a
    /// voluntary switch during the call: the kernel's count).
    blocked: [u64; WAITERS],
    /// Each waiter's wait per round, as the waiter measured it, and the
    /// holder's critical section (CLOCK_MONOTONIC ns).
    wait_start: [[u64; ROUNDS as usize]; WAITERS],
    wait_end: [[u64; ROUNDS as usize]; WAITERS],
    cs_start: [u64; ROUNDS as usize],
    cs_end: [u64; ROUNDS as usize],
}

struct Run {
    holder_preemptions: u64,
    holder_preempted_ns: u64,
    waiter_delay_ns: [u64; WAITERS],
    overflows: u64,
    truth_ns: u64,
    truth_nivcsw: u64,
}

fn run(with_hog: bool) -> Run {
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-lock".into()],
        uprobes: false,
        ..Config::default()
    })
    .expect("agent starts");
    let board: Shared<Board> = Shared::new();
    let b = board.ptr as usize;
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (hold_cpu, wait_cpu) = (cpus - 1, 0);
    let hog = with_hog.then(|| {
        fork_child(move || {
            set_comm(b"pgpt-hog");
            pin_to_cpu(hold_cpu);
            spin_for(60_000_000_000);
        })
    });
    let mut waiters = Vec::new();
    for w in 0..WAITERS {
        waiters.push(fork_child(move || {
            set_comm(b"pgpt-lock");
            pin_to_cpu(wait_cpu);
            sleep_ns(1_000_000);
            let board = unsafe { &mut *(b as *mut Board) };
            // Fault in the code of the measured loop (returns EAGAIN).
            futex_wait_blocked(&mut board.word, u32::MAX);
            for round in 0..ROUNDS {
                board
                    .waiting
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                board.wait_start[w][round as usize] = common::workload::now_ns();
                while unsafe { std::ptr::read_volatile(&board.word) } == round {
                    let (r, blocked, _) = futex_wait_blocked(&mut board.word, round);
                    board.blocked[w] += blocked;
                    if r == 0 || errno() != libc::EAGAIN {
                        board.waits[w] += 1;
                    }
                }
                board.wait_end[w][round as usize] = common::workload::now_ns();
            }
        }));
    }
    let mut waiter_pids = [0u32; WAITERS];
    waiter_pids.copy_from_slice(&waiters);
    let holder = fork_child(move || {
        set_comm(b"pgpt-lock");
        pin_to_cpu(hold_cpu);
        sleep_ns(1_000_000);
        let board = unsafe { &mut *(b as *mut Board) };
        for round in 0..ROUNDS {
            // Wait until every waiter is (about to be) blocked on the lock.
            while board.waiting.load(std::sync::atomic::Ordering::SeqCst)
                < (round + 1) * WAITERS as u32
            {
                sleep_ns(1_000_000);
            }
            // And until each is asleep in the kernel: a waiter delayed
            // between the count and its futex call (a busy machine) would
            // otherwise start waiting after the preemptions it is charged.
            // The truth starts before the check that finds them asleep, so a
            // preemption during that check (when they may already wait) is
            // in it too.
            sleep_ns(5_000_000);
            let (d0, n0) = loop {
                let snapshot = (own_run_delay_ns(), own_nivcsw());
                if waiter_pids.iter().all(|&p| is_asleep(p)) {
                    break snapshot;
                }
                sleep_ns(1_000_000);
            };
            // The critical section: CPU work, preempted by the hog.
            board.cs_start[round as usize] = common::workload::now_ns();
            burn_cpu(CS_CPU_NS);
            let (d1, n1) = (own_run_delay_ns(), own_nivcsw());
            board.cs_end[round as usize] = common::workload::now_ns();
            board.cs_run_delay_ns += d1 - d0;
            board.cs_nivcsw += n1 - n0;
            // Release: wake every waiter.
            unsafe { std::ptr::write_volatile(&mut board.word, round + 1) };
            futex_wake(&mut board.word, i32::MAX);
            // Think time between lock cycles.
            sleep_ns(20_000_000);
        }
    });
    let mut all = waiters.clone();
    all.push(holder);
    reap(&all);
    if let Some(h) = hog {
        kill(h);
        reap(&[h]);
    }
    agent.refresh();
    let missed = common::missed_switch_outs(&agent);
    let hc = agent.process_counters(holder).expect("holder traced");
    let mut waiter_delay_ns = [0; WAITERS];
    let mut overflows = 0;
    for (i, &w) in waiters.iter().enumerate() {
        let c = agent.process_counters(w).expect("waiter traced");
        waiter_delay_ns[i] = c.v[counter::WAITER_DELAY_NS];
        overflows += c.v[counter::HISTORY_OVERFLOWS];
    }
    let board = board.get();
    for (i, &w) in waiters.iter().enumerate() {
        let c = agent.process_counters(w).expect("waiter traced");
        // Every blocking wait, by the kernel's count; nearly every round
        // blocks (a wait can end unslept: woken while preempted before it
        // slept). Only a switch-out the kernel did not run the program for
        // (counted, see futex_accounting) may lose one.
        common::assert_exact_but_missed(
            &format!("waiter {i}: futex waits that blocked"),
            c.v[counter::FUTEX_WAITS],
            board.blocked[i],
            missed,
        );
        assert!(
            board.blocked[i] >= ROUNDS as u64 - 2,
            "waiter {i} blocked only {} times",
            board.blocked[i]
        );
    }
    // The waiters' own measurements: every wait covered its round's critical
    // section (so each waiter's truth is the holder's run-queue wait there),
    // and no waiter can have been delayed longer than it waited.
    for (w, delay) in waiter_delay_ns.iter().enumerate() {
        let mut waited = 0;
        for r in 0..ROUNDS as usize {
            assert!(
                board.wait_start[w][r] <= board.cs_start[r]
                    && board.wait_end[w][r] >= board.cs_end[r],
                "waiter {w} round {r}: its wait did not cover the critical section"
            );
            waited += board.wait_end[w][r] - board.wait_start[w][r];
        }
        assert!(
            *delay <= waited,
            "waiter {w}: delay {delay} ns exceeds its {waited} ns of waiting"
        );
    }
    Run {
        holder_preemptions: hc.v[counter::HOLDER_PREEMPTIONS],
        holder_preempted_ns: hc.v[counter::HOLDER_PREEMPTED_NS],
        waiter_delay_ns,
        overflows,
        truth_ns: board.cs_run_delay_ns,
        truth_nivcsw: board.cs_nivcsw,
    }
}

#[test]
fn preempted_holders_and_the_delay_they_cause_match_the_holders_schedstat() {
    common::require_root();
    let r = run(true);
    eprintln!(
        "holder: {} preemptions, {:.1} ms preempted (truth {} switches, {:.1} ms); waiters delayed {:?} ns; {} overflows",
        r.holder_preemptions,
        r.holder_preempted_ns as f64 / 1e6,
        r.truth_nivcsw,
        r.truth_ns as f64 / 1e6,
        r.waiter_delay_ns,
        r.overflows
    );
    assert!(
        r.truth_ns > 20_000_000,
        "the hog barely preempted the holder ({} ns): no test",
        r.truth_ns
    );
    assert!(r.holder_preemptions > 0);
    assert_eq!(
        r.overflows, 0,
        "a 6 ms critical section fits in the history"
    );
    common::assert_close(
        "holder preempted ns",
        r.holder_preempted_ns as f64,
        r.truth_ns as f64,
        10.0,
        0.0,
    );
    for (i, d) in r.waiter_delay_ns.iter().enumerate() {
        // Each waiter waited through every critical section.
        common::assert_close(
            &format!("waiter {i} delay ns"),
            *d as f64,
            r.truth_ns as f64,
            10.0,
            0.0,
        );
    }
}

#[test]
fn an_unpreempted_holder_causes_no_holder_preemptions() {
    common::require_root();
    let r = run(false);
    eprintln!(
        "holder: {} preemptions (truth {} switches, {} ns)",
        r.holder_preemptions, r.truth_nivcsw, r.truth_ns
    );
    // Within one: a preemption in the few microseconds between the last
    // check that the waiters sleep and the release (the wake call) overlaps
    // their waits but falls outside the holder's own measurement, or the
    // other way round at the check.
    assert!(
        r.holder_preemptions.abs_diff(r.truth_nivcsw) <= 1,
        "{} holder preemptions against {} involuntary switches in the critical sections",
        r.holder_preemptions,
        r.truth_nivcsw
    );
    // Nothing charged without a charged preemption.
    if r.holder_preemptions == 0 {
        assert_eq!(r.holder_preempted_ns, 0);
        assert_eq!(r.waiter_delay_ns, [0; WAITERS]);
    }
}
