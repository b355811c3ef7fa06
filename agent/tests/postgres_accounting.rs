//! A real PostgreSQL under pgbench: per-backend involuntary switches and
//! run-queue time against the kernel's accounting. The windows are exact
//! because every backend is blocked at their edges, waiting on a table
//! lock that the test holds.
mod common;

use std::time::Duration;

use agent_common::stats::counter;
use common::postgres::{clients, run_polling, Cluster};
use pgpreempt::{agent::Agent, config::Config};

#[test]
fn backends_match_the_kernel_under_pgbench() {
    common::require_root();
    let pg = Cluster::start(&[]);
    pg.init_pgbench(2);

    let mut agent = Agent::start(&Config::default()).expect("agent starts");
    // More clients than CPUs, so backends preempt each other.
    let mut bench = pg.start_pgbench();
    let mut lock = pg.session();
    pg.block_pgbench(&mut lock);
    let pids = pg.pgbench_backends();
    assert_eq!(pids.len(), clients());
    agent.refresh();
    for &p in &pids {
        let labels = agent.labels_of(p).expect("backend tracked");
        assert_eq!(labels.backend_type, "client backend", "pid {p}");
        assert_eq!(
            labels.cluster,
            pg.data().canonicalize().unwrap().display().to_string()
        );
    }

    // The kernel's group for client backends: the backends were forked after
    // the agent started, as `other` (their title not set yet), and must have
    // moved to `client backend` in the kernel too, not only in the agent.
    let cluster = pg.data().canonicalize().unwrap().display().to_string();
    let client_group_invol = |agent: &Agent| {
        group_counter(
            agent,
            &cluster,
            "client backend",
            counter::INVOLUNTARY_SWITCHES,
        )
    };
    let group_before = client_group_invol(&agent);
    let read = |agent: &Agent| -> Vec<_> {
        pids.iter()
            .map(|&p| {
                (
                    common::truth(p),
                    agent.process_counters(p).expect("backend counted"),
                )
            })
            .collect()
    };
    // The Lock wait event is set just before the semaphore sleep: wait for
    // the sleep itself, as at the closing edge.
    common::wait_asleep(&pids);
    let before = read(&agent);
    lock.send("COMMIT;");
    std::thread::sleep(Duration::from_secs(6));
    pg.block_pgbench(&mut lock);
    common::wait_asleep(&pids);
    let after = read(&agent);
    agent.refresh();

    let (mut sum_a, mut sum_k, mut invol_total) = (0u64, 0u64, 0u64);
    for (i, (b, a)) in before.iter().zip(after.iter()).enumerate() {
        let w = common::Window {
            kernel: (b.0, a.0),
            agent: (b.1, a.1),
        };
        let (invol, a_wait, k_wait) = w.assert_matches_kernel(&format!("backend {}", pids[i]));
        invol_total += invol;
        sum_a += a_wait;
        sum_k += k_wait;
        assert!(
            a.1.v[counter::FUTEX_WAITS] > b.1.v[counter::FUTEX_WAITS],
            "backend {} never waited on a futex",
            pids[i]
        );
    }
    let group_delta = client_group_invol(&agent) - group_before;
    assert!(
        group_delta >= invol_total * 99 / 100,
        "the client backend group counted {group_delta} involuntary switches, its backends {invol_total}"
    );
    eprintln!(
        "run-queue time: agent {:.3} s, kernel {:.3} s; involuntary switches {invol_total}",
        sum_a as f64 / 1e9,
        sum_k as f64 / 1e9
    );
    assert!(
        invol_total > 50,
        "pgbench caused only {invol_total} involuntary switches"
    );

    // The metrics show the same cluster with the right labels.
    let text = pgpreempt::daemon::exposition::render(&agent.snapshot(), "test");
    assert!(text.contains("backend_type=\"client backend\""), "{text}");
    assert!(text.contains("backend_type=\"checkpointer\""));
    assert!(text.contains("backend_type=\"postmaster\""));

    lock.send("COMMIT;");
    let _ = bench.kill();
    let _ = bench.wait();
}

fn group_counter(agent: &Agent, cluster: &str, backend_type: &str, idx: usize) -> u64 {
    agent
        .snapshot()
        .groups
        .iter()
        .filter(|(l, _)| l.cluster == cluster && l.backend_type == backend_type)
        .map(|(_, g)| g.counters.v[idx])
        .sum()
}

#[test]
fn lock_holder_preemption_and_spinlock_sites_under_pgbench() {
    common::require_root();
    // A tiny buffer pool makes the buffer-mapping spinlocks contend.
    let pg = Cluster::start(&["shared_buffers=2MB"]);
    pg.init_pgbench(2);
    let cluster = pg.data().canonicalize().unwrap().display().to_string();
    let mut agent = Agent::start(&Config::default()).expect("agent starts");

    // Clients well above the CPU count: lock holders get preempted.
    run_polling(
        &mut agent,
        pg.pgbench().args([
            "-c",
            &clients().to_string(),
            "-j",
            "2",
            "-T",
            "8",
            "postgres",
        ]),
    );
    let holder = group_counter(
        &agent,
        &cluster,
        "client backend",
        counter::HOLDER_PREEMPTIONS,
    );
    let delay = group_counter(&agent, &cluster, "client backend", counter::WAITER_DELAY_NS);
    eprintln!(
        "client backends: {holder} holder preemptions, {:.3} s waiter delay",
        delay as f64 / 1e9
    );
    assert!(
        holder > 0,
        "no lock-holder preemption among client backends"
    );
    assert!(delay > 0, "no waiter delay among client backends");

    // Select-only with 16 clients per CPU: contended spinlocks, named by site.
    run_polling(
        &mut agent,
        pg.pgbench().args([
            "-S",
            "-c",
            &(clients() * 4).to_string(),
            "-j",
            "2",
            "-T",
            "10",
            "postgres",
        ]),
    );
    let sites = agent.spin_sites();
    let ours: Vec<_> = sites.iter().filter(|s| s.cluster == cluster).collect();
    eprintln!(
        "spin sites: {:?}",
        ours.iter()
            .map(|s| (
                s.site.as_str(),
                s.hist.buckets.iter().sum::<u64>(),
                s.hist.sum_ns
            ))
            .collect::<Vec<_>>()
    );
    assert!(!ours.is_empty(), "no contended s_lock seen");
    assert!(
        ours.iter()
            .all(|s| s.site != "unknown" && !s.site.is_empty()),
        "unnamed sites: {ours:?}"
    );
    assert!(ours.iter().any(|s| s.hist.sum_ns > 0));
    let spins = group_counter(&agent, &cluster, "client backend", counter::SPINS);
    assert!(spins > 0);
    assert_eq!(
        agent.snapshot().uprobe_errors,
        0,
        "the PostgreSQL binary has s_lock"
    );
}
