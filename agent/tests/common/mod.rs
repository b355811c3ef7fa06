//! Helpers for the privileged integration tests: kernel ground truth from
//! /proc, forked synthetic workloads, and a scratch PostgreSQL.
#![allow(dead_code)]
pub mod dashboards;
pub mod http;
pub mod memcg;
pub mod postgres;
pub mod systemd;
pub mod workload;

use std::fs;

/// The kernel's own accounting for one thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelTruth {
    pub nonvoluntary: u64,
    pub voluntary: u64,
    /// Time waiting on a run queue, from schedstat (ns).
    pub run_delay_ns: u64,
    /// Time on a CPU, from schedstat (ns).
    pub on_cpu_ns: u64,
}

pub fn truth(pid: u32) -> KernelTruth {
    let status = fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).expect("status");
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    let sched = fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).expect("schedstat");
    let run_delay_ns = sched.split_whitespace().nth(1).unwrap().parse().unwrap();
    let on_cpu_ns = sched.split_whitespace().next().unwrap().parse().unwrap();
    KernelTruth {
        on_cpu_ns,
        nonvoluntary: field("nonvoluntary_ctxt_switches:"),
        voluntary: field("voluntary_ctxt_switches:"),
        run_delay_ns,
    }
}

/// The scheduler state letter of a process (R, S, D, ...).
pub fn state(pid: u32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 2..].chars().next())
        .unwrap_or('?')
}

/// Waits until every pid is asleep (S or D) and has stayed so for a moment.
pub fn wait_asleep(pids: &[u32]) {
    for _ in 0..500 {
        if pids.iter().all(|&p| matches!(state(p), 'S' | 'D')) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            if pids.iter().all(|&p| matches!(state(p), 'S' | 'D')) {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("processes {pids:?} did not go to sleep");
}

/// Asserts `got` is within `pct` percent of `want` (and at most `floor` off,
/// for tiny counts).
pub fn assert_close(what: &str, got: f64, want: f64, pct: f64, floor: f64) {
    let diff = (got - want).abs();
    let allowed = (want.abs() * pct / 100.0).max(floor);
    assert!(
        diff <= allowed,
        "{what}: agent {got} vs kernel {want} (off by {diff}, allowed {allowed})"
    );
}

/// Switch-outs of traced tasks the kernel did not run `sched_switch` for, as
/// the agent counted them (`dropped_events{reason="switch_out_missed"}`):
/// each loses what it started (a futex wait, a sleep before a wakeup).
pub fn missed_switch_outs(agent: &pgpreempt::agent::Agent) -> u64 {
    agent.diag()[agent_common::stats::diag::SWITCH_OUT_MISSED]
}

/// An exact count: the agent's `got` equals `want`, less at most the
/// `missed` switch-outs the agent itself reported, never more.
pub fn assert_exact_but_missed(what: &str, got: u64, want: u64, missed: u64) {
    assert!(
        got <= want && want - got <= missed,
        "{what}: agent {got}, truth {want} ({missed} switch-outs reported missed)"
    );
}

/// An agent tracing tasks named `comm`, with the default settings (per-process
/// counters and uprobes on).
pub fn agent_for(comm: &str) -> pgpreempt::agent::Agent {
    let cfg = pgpreempt::config::Config {
        comms: vec![comm.into()],
        ..Default::default()
    };
    pgpreempt::agent::Agent::start(&cfg).expect("agent starts")
}

pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests load eBPF programs and must run as root"
    );
}

/// The tracing-type BPF programs loaded right now, by name.
pub fn loaded_tracing_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            let t = format!("{:?}", p.program_type());
            t.contains("TRACEPOINT") || t.contains("TRACING") || t.contains("KPROBE")
        })
        .map(|p| p.name_as_str().unwrap_or("?").to_string())
        .collect()
}

/// `program args...` as an unprivileged user: `nobody`, every capability
/// dropped.
pub fn unprivileged(program: &str, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new("setpriv");
    c.args([
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
        program,
    ])
    .args(args);
    c
}

/// Our programs loaded right now (those `pgpreempt run` attaches, under
/// the kernel's 15-byte names, and the s_lock probes).
pub fn our_programs() -> usize {
    let ours: Vec<&str> = pgpreempt::kernel::probes::PROGRAMS
        .iter()
        .map(|(name, _)| &name[..name.len().min(15)])
        .collect();
    loaded_tracing_programs()
        .iter()
        .filter(|n| {
            n.starts_with("sched_") || n.starts_with("s_lock") || ours.contains(&n.as_str())
        })
        .count()
}

/// Our programs loaded before a check: waits (up to 2 s) for those of an
/// earlier test, which the kernel frees after an RCU grace period, to go.
pub fn our_programs_settled() -> usize {
    let t = std::time::Instant::now();
    while our_programs() != 0 && t.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    our_programs()
}

/// Asserts that our loaded programs are back to `before`. The kernel frees a
/// detached tp_btf program after an RCU grace period, so it can be listed
/// for a few milliseconds after its process exited; one still there after
/// two seconds stayed attached, which is a bug.
pub fn assert_programs_back_to(before: usize, what: &str) {
    let t = std::time::Instant::now();
    while our_programs() != before && t.elapsed() < std::time::Duration::from_secs(2) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(our_programs(), before, "{what}");
}

/// One process's window, as the kernel and the agent saw it.
pub struct Window {
    pub kernel: (KernelTruth, KernelTruth),
    pub agent: (agent_common::stats::Counters, agent_common::stats::Counters),
}

impl Window {
    fn delta(&self, idx: usize) -> u64 {
        self.agent.1.v[idx] - self.agent.0.v[idx]
    }

    /// Involuntary switches within 1% (or one event) of
    /// `nonvoluntary_ctxt_switches`, and preempted + wakeup time within 3% of
    /// schedstat's run-queue time. Returns (involuntary, agent run-queue ns,
    /// kernel run-queue ns).
    pub fn assert_matches_kernel(&self, what: &str) -> (u64, u64, u64) {
        use agent_common::stats::counter;
        let (k0, k1) = self.kernel;
        let k_invol = k1.nonvoluntary - k0.nonvoluntary;
        let a_invol = self.delta(counter::INVOLUNTARY_SWITCHES);
        assert_close(
            &format!("{what} involuntary switches"),
            a_invol as f64,
            k_invol as f64,
            1.0,
            1.0,
        );
        let k_wait = k1.run_delay_ns - k0.run_delay_ns;
        let a_wait = self.delta(counter::PREEMPTED_NS) + self.delta(counter::WAKEUP_LATENCY_NS);
        assert_close(
            &format!("{what} run-queue ns"),
            a_wait as f64,
            k_wait as f64,
            3.0,
            0.0,
        );
        // Time on a CPU: schedstat's first field, which the scheduler
        // brings up to date before each switch-out.
        assert_close(
            &format!("{what} on-CPU ns"),
            self.delta(counter::ON_CPU_NS) as f64,
            (k1.on_cpu_ns - k0.on_cpu_ns) as f64,
            1.0,
            0.0,
        );
        (k_invol, a_wait, k_wait)
    }

    pub fn assert_voluntary_matches_kernel(&self, what: &str) {
        let (k0, k1) = self.kernel;
        let a = self.delta(agent_common::stats::counter::VOLUNTARY_SWITCHES);
        assert_close(
            &format!("{what} voluntary switches"),
            a as f64,
            (k1.voluntary - k0.voluntary) as f64,
            1.0,
            1.0,
        );
    }
}

/// `promtool check metrics` must report nothing about a scrape.
pub fn promtool_check(body: &str) {
    use std::{
        io::Write,
        process::{Command, Stdio},
    };
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is needed: run `cargo xtask setup`");
    p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// Live tasks whose `comm` is one of `comms`, counted from /proc: processes
/// (by the leader's comm, as the agent selects them) and threads (by each
/// thread's own comm, as the kernel programs see them).
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveTasks {
    pub processes: u64,
    pub threads: u64,
}

pub fn live_tasks(comms: &[&str]) -> LiveTasks {
    let traced = |path: std::path::PathBuf| {
        fs::read_to_string(path).is_ok_and(|c| comms.contains(&c.trim_end_matches('\n')))
    };
    let mut live = LiveTasks::default();
    let Ok(dir) = fs::read_dir("/proc") else {
        return live;
    };
    for e in dir.filter_map(Result::ok) {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if traced(e.path().join("comm")) {
            live.processes += 1;
        }
        if let Ok(tasks) = fs::read_dir(e.path().join("task")) {
            live.threads += tasks
                .filter_map(Result::ok)
                .filter(|t| traced(t.path().join("comm")))
                .count() as u64;
        }
    }
    live
}
