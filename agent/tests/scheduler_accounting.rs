//! The scheduler programs against the kernel's own accounting, on synthetic
//! CPU contention: involuntary switches vs `nonvoluntary_ctxt_switches`,
//! preempted + wakeup latency vs schedstat run-queue time.
mod common;

use agent_common::stats::counter;
use common::workload::{fork_child, kill, pin_to_cpu, reap, set_comm, spin_for, Gate};
use pgpreempt::{agent::Agent, config::Config};

fn config(comm: &str) -> Config {
    Config {
        comms: vec![comm.into()],
        ..Config::default()
    }
}

#[test]
fn involuntary_switches_and_run_queue_time_match_the_kernel() {
    common::require_root();
    let mut agent = Agent::start(&config("pgpt-spin")).expect("agent starts");
    let gate = Gate::new();
    let done = Gate::new();
    // Three spinners pinned to one CPU preempt each other; each round they
    // wait at the gate (asleep), spin 150 ms, report, and wait again.
    let kids: Vec<u32> = (0..3)
        .map(|_| {
            let (gate, done) = (gate, done);
            fork_child(move || {
                // Keep only the ends this child uses, so closing the gate is EOF.
                unsafe {
                    libc::close(gate.w);
                    libc::close(done.r);
                }
                set_comm(b"pgpt-spin");
                pin_to_cpu(0);
                while gate.pass() {
                    spin_for(150_000_000);
                    unsafe { libc::write(done.w, b"x".as_ptr() as *const libc::c_void, 1) };
                }
            })
        })
        .collect();
    // A first round makes every child known to the agent.
    let run_round = || {
        gate.release(kids.len());
        for _ in 0..kids.len() {
            let mut b = 0u8;
            assert_eq!(
                unsafe { libc::read(done.r, &mut b as *mut u8 as *mut libc::c_void, 1) },
                1
            );
        }
        common::wait_asleep(&kids);
    };
    run_round();
    agent.refresh();

    let before: Vec<_> = kids
        .iter()
        .map(|&p| {
            (
                common::truth(p),
                agent.process_counters(p).expect("child traced"),
            )
        })
        .collect();
    for _ in 0..3 {
        run_round();
    }
    let after: Vec<_> = kids
        .iter()
        .map(|&p| (common::truth(p), agent.process_counters(p).unwrap()))
        .collect();

    let mut total_invol = 0;
    for (i, (&pid, ((k0, a0), (k1, a1)))) in
        kids.iter().zip(before.iter().zip(after.iter())).enumerate()
    {
        let k_invol = (k1.nonvoluntary - k0.nonvoluntary) as f64;
        let a_invol =
            (a1.v[counter::INVOLUNTARY_SWITCHES] - a0.v[counter::INVOLUNTARY_SWITCHES]) as f64;
        total_invol += k_invol as u64;
        common::assert_close(
            &format!("child {i} (pid {pid}) involuntary switches"),
            a_invol,
            k_invol,
            1.0,
            1.0,
        );
        let k_wait = (k1.run_delay_ns - k0.run_delay_ns) as f64;
        let a_wait = ((a1.v[counter::PREEMPTED_NS] - a0.v[counter::PREEMPTED_NS])
            + (a1.v[counter::WAKEUP_LATENCY_NS] - a0.v[counter::WAKEUP_LATENCY_NS]))
            as f64;
        common::assert_close(
            &format!("child {i} (pid {pid}) run-queue ns"),
            a_wait,
            k_wait,
            3.0,
            0.0,
        );
        let k_vol = (k1.voluntary - k0.voluntary) as f64;
        let a_vol = (a1.v[counter::VOLUNTARY_SWITCHES] - a0.v[counter::VOLUNTARY_SWITCHES]) as f64;
        common::assert_close(
            &format!("child {i} voluntary switches"),
            a_vol,
            k_vol,
            1.0,
            1.0,
        );
    }
    // The workload must have produced the thing under test.
    assert!(
        total_invol > 30,
        "only {total_invol} involuntary switches: the contention did not happen"
    );

    gate.close();
    reap(&kids);
    for k in kids {
        kill(k);
    }
}

#[test]
fn exited_processes_keep_their_group_counts() {
    common::require_root();
    let mut agent = Agent::start(&config("pgpt-exit")).expect("agent starts");
    let kids: Vec<u32> = (0..4)
        .map(|_| {
            fork_child(|| {
                set_comm(b"pgpt-exit");
                for _ in 0..20 {
                    common::workload::sleep_ns(1_000_000);
                }
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(50));
    agent.refresh();
    let group_total = |a: &Agent| -> u64 {
        a.snapshot()
            .groups
            .iter()
            .map(|(_, g)| g.counters.v[counter::VOLUNTARY_SWITCHES])
            .sum()
    };
    reap(&kids);
    let at_exit = group_total(&agent);
    assert!(at_exit >= 4 * 20, "each child slept 20 times: {at_exit}");
    std::thread::sleep(pgpreempt::tracker::EXIT_GRACE * 2);
    agent.refresh();
    agent.refresh();
    for k in &kids {
        assert!(
            !agent.tracker.procs.contains_key(k),
            "exited process {k} still tracked"
        );
    }
    assert!(
        group_total(&agent) >= at_exit,
        "a counter went backwards when processes exited"
    );
}
