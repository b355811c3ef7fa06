//! Spinlock probes with a known answer: this test binary exports a function
//! named `s_lock` with PostgreSQL's signature; children call it from known
//! call-site names and spin for known durations.
mod common;

use std::ffi::{c_int, CStr};

use agent_common::stats::counter;
use common::workload::{fork_child, now_ns, reap, set_comm, sleep_ns, spin_for, Gate, Shared};
use pgpreempt::{agent::Agent, config::Config};

#[path = "common/s_lock.rs"]
mod s_lock;
use s_lock::s_lock;

/// (site, calls, ns per call, sleeps per call)
const SITES: [(&CStr, u64, u64, c_int); 3] = [
    (c"StrategyGetBuffer", 5, 2_000_000, 1),
    (c"XLogFlush", 3, 5_000_000, 0),
    (c"get_hash_entry", 7, 1_000_000, 2),
];

#[repr(C)]
struct Truth {
    ns: [std::sync::atomic::AtomicU64; 3],
}

fn run(uprobes: bool) -> (Agent, Vec<u32>, Shared<Truth>) {
    // A traced process of another binary, without s_lock, is seen first:
    // it must be reported without keeping later binaries from being probed.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    common::wait_asleep(&[other.id()]);
    let mut agent = Agent::start(&Config {
        comms: vec!["pgpt-spinner".into(), "sleep".into()],
        uprobes,
        ..Config::default()
    })
    .expect("agent starts");
    let gate = Gate::new();
    let done = Gate::new();
    let truth: Shared<Truth> = Shared::new();
    let t = truth.ptr as usize;
    let kids: Vec<u32> = (0..2)
        .map(|_| {
            fork_child(move || {
                unsafe {
                    libc::close(gate.w);
                    libc::close(done.r);
                }
                set_comm(b"pgpt-spinner");
                if !gate.pass() {
                    return;
                }
                let truth = unsafe { &mut *(t as *mut Truth) };
                for (i, (site, calls, ns, sleeps)) in SITES.iter().enumerate() {
                    for _ in 0..*calls {
                        let mut d = *ns;
                        let t0 = now_ns();
                        let r =
                            unsafe { s_lock(&mut d, c"s_lock.c".as_ptr(), *sleeps, site.as_ptr()) };
                        let t1 = now_ns();
                        assert_eq!(r, *sleeps);
                        truth.ns[i].fetch_add(t1 - t0, std::sync::atomic::Ordering::SeqCst);
                        sleep_ns(100_000);
                    }
                }
                // Stay alive until the agent has looked (it reads site names
                // the probe could not: these strings were never touched here).
                unsafe { libc::write(done.w, b"x".as_ptr() as *const libc::c_void, 1) };
                gate.pass();
            })
        })
        .collect();
    // The children block at the gate: the agent sees them, finds their
    // binary (this test) and attaches to its s_lock before they call it.
    common::wait_asleep(&kids);
    agent.refresh();
    gate.release(kids.len());
    for _ in 0..kids.len() {
        let mut b = 0u8;
        assert_eq!(
            unsafe { libc::read(done.r, &mut b as *mut u8 as *mut libc::c_void, 1) },
            1
        );
    }
    agent.refresh();
    gate.release(kids.len());
    reap(&kids);
    gate.close();
    done.close();
    let _ = other.kill();
    let _ = other.wait();
    (agent, kids, truth)
}

#[test]
fn spin_counts_are_exact_and_times_within_five_percent() {
    common::require_root();
    let (agent, kids, truth) = run(true);
    let sites = agent.spin_sites();
    let truth = truth.get();
    for (i, (site, calls, _, sleeps)) in SITES.iter().enumerate() {
        let name = site.to_str().unwrap();
        let s = sites
            .iter()
            .find(|s| s.site == name)
            .unwrap_or_else(|| panic!("site {name} missing: {sites:?}"));
        let count: u64 = s.hist.buckets.iter().sum();
        assert_eq!(
            count,
            calls * kids.len() as u64,
            "{name}: contended acquisitions"
        );
        assert_eq!(
            s.delays,
            calls * *sleeps as u64 * kids.len() as u64,
            "{name}: sleeps"
        );
        common::assert_close(
            &format!("{name} spin ns"),
            s.hist.sum_ns as f64,
            truth.ns[i].load(std::sync::atomic::Ordering::SeqCst) as f64,
            5.0,
            0.0,
        );
        assert!(
            s.cluster.starts_with("pid:"),
            "children of the test are grouped by parent: {}",
            s.cluster
        );
    }
    // Per process too, and the metrics show the sites by name.
    let total: u64 = kids
        .iter()
        .map(|&k| agent.process_counters(k).unwrap().v[counter::SPINS])
        .sum();
    assert_eq!(
        total,
        SITES.iter().map(|s| s.1).sum::<u64>() * kids.len() as u64
    );
    let text = pgpreempt::daemon::exposition::render(&agent.snapshot(), "test");
    assert!(text.contains("site=\"StrategyGetBuffer\""), "{text}");
    // `sleep` has no s_lock: reported once; this test's binary was probed after it.
    assert_eq!(agent.snapshot().uprobe_errors, 1);
}

#[test]
fn no_uprobes_means_no_spin_metrics() {
    common::require_root();
    let (agent, _, _) = run(false);
    assert!(agent.spin_sites().is_empty());
    assert!(!common::loaded_tracing_programs()
        .iter()
        .any(|n| n.starts_with("s_lock")));
}

#[test]
fn spinners_preempted_inside_s_lock_are_counted() {
    common::require_root();
    let mut agent = common::agent_for("pgpt-spinner");
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let hog = fork_child(move || {
        set_comm(b"pgpt-hog");
        common::workload::pin_to_cpu(cpu);
        spin_for(60_000_000_000);
    });
    let gate = Gate::new();
    let truth: Shared<std::sync::atomic::AtomicU64> = Shared::new();
    let t = truth.ptr as usize;
    let spinner = fork_child(move || {
        unsafe { libc::close(gate.w) };
        set_comm(b"pgpt-spinner");
        common::workload::pin_to_cpu(cpu);
        if !gate.pass() {
            return;
        }
        let truth = unsafe { &*(t as *const std::sync::atomic::AtomicU64) };
        for _ in 0..20 {
            let mut d = 4_000_000u64;
            let n0 = common::workload::own_nivcsw();
            unsafe {
                s_lock(
                    &mut d,
                    c"s_lock.c".as_ptr(),
                    0,
                    c"StrategyGetBuffer".as_ptr(),
                )
            };
            let n1 = common::workload::own_nivcsw();
            truth.fetch_add(n1 - n0, std::sync::atomic::Ordering::SeqCst);
        }
    });
    common::wait_asleep(&[spinner]);
    agent.refresh();
    gate.release(1);
    reap(&[spinner]);
    common::workload::kill(hog);
    reap(&[hog]);
    gate.close();
    agent.refresh();
    let got = agent.process_counters(spinner).unwrap().v[counter::SPINNER_PREEMPTIONS];
    let want = truth.get().load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("spinner preemptions: agent {got}, spinner's own count {want}");
    assert!(want > 0, "the hog never preempted the spinner: no test");
    // The spinner's count brackets the call (its /proc reads, the probe
    // trap); the probes sit just inside it, so a preemption at the very edge
    // is the spinner's alone.
    common::assert_close("spinner preemptions", got as f64, want as f64, 10.0, 2.0);
    assert!(
        got <= want,
        "the agent saw more spinner preemptions ({got}) than there were ({want})"
    );
    // The exposition with spin sites passes promtool.
    common::promtool_check(&pgpreempt::daemon::exposition::render(
        &agent.snapshot(),
        "test",
    ));
}
