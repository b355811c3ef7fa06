//! The systemd unit (deploy/systemd/pgpreempt.service), tested without
//! systemd: `systemd-analyze verify` and `security` where systemd-analyze
//! exists; the real agent run as an unprivileged user (as DynamicUser=
//! gives) with exactly the unit's capabilities and no_new_privs, in a mount
//! namespace that is read-only everywhere with /home, /root and /tmp masked
//! (ProtectSystem=strict, ProtectHome=, PrivateTmp=), against a real
//! PostgreSQL; each capability dropped in turn; and every other hardening
//! option checked against what the agent does, from an strace of a run.
//! Settings are parsed from the unit file, never copied.
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    http::{free_port, get, Guard},
    postgres::Cluster,
    systemd::{self, setpriv_name, Unit},
};

const BIN: &str = env!("CARGO_BIN_EXE_pgpreempt");

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The unit (and, with `dropin`, the spinlocks drop-in beside it in
/// pgpreempt.service.d/) with its paths pointed at this build and checkout.
fn local_unit(dir: &Path, dropin: bool) -> PathBuf {
    let bin = std::fs::canonicalize(BIN).unwrap().display().to_string();
    let flags = systemd::flags_path().canonicalize().unwrap();
    let local = |text: String| {
        text.replace("/usr/local/bin/pgpreempt", &bin).replace(
            "EnvironmentFile=/etc/default/pgpreempt",
            &format!("EnvironmentFile={}", flags.display()),
        )
    };
    let p = dir.join("pgpreempt.service");
    std::fs::write(&p, local(Unit::load().text)).unwrap();
    if dropin {
        let d = dir.join("pgpreempt.service.d");
        std::fs::create_dir_all(&d).unwrap();
        let text = std::fs::read_to_string(systemd::spinlocks_dropin_path()).unwrap();
        std::fs::write(d.join("spinlocks.conf"), local(text)).unwrap();
    }
    p
}

/// Runs systemd-analyze with the unit directory first in the search path
/// (so the drop-in there applies): its output, after checking it succeeded.
fn analyze(sa: &Path, dir: &Path, args: &[&str], unit: &Path) -> String {
    let out = Command::new(sa)
        .args(args)
        .arg(unit)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze {args:?}:\n{text}");
    text
}

#[test]
fn systemd_analyze_verifies_the_unit_and_rates_it_ok() {
    let Some(sa) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    for dropin in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let unit = local_unit(dir.path(), dropin);
        let text = analyze(&sa, dir.path(), &["verify"], &unit);
        assert!(
            !text.contains("pgpreempt.service") && !text.contains("spinlocks.conf"),
            "systemd-analyze verify warns (drop-in: {dropin}):\n{text}"
        );
        let text = analyze(
            &sa,
            dir.path(),
            &["security", "--offline=true", "--no-pager"],
            &unit,
        );
        let overall = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("systemd-analyze security:\n{text}"));
        eprintln!("drop-in {dropin}: {}", overall.trim());
        // With the drop-in, CAP_SYS_ADMIN must show in the rating (the
        // drop-in was applied).
        assert_eq!(
            text.lines()
                .any(|l| l.starts_with('✗') && l.contains("CAP_SYS_ADMIN")),
            dropin,
            "drop-in {dropin}:\n{text}"
        );
        if !dropin {
            assert!(
                overall.contains(" OK") || overall.contains(" SAFE"),
                "want an exposure level of OK or SAFE: {overall}"
            );
        }
    }
}

#[test]
fn every_capability_has_a_reason_and_the_unit_keeps_what_the_agent_needs() {
    let unit = Unit::load();
    let caps = unit.capabilities();
    assert!(!caps.is_empty());
    let ambient: BTreeSet<String> = unit.list("AmbientCapabilities").into_iter().collect();
    assert_eq!(
        caps.iter().cloned().collect::<BTreeSet<_>>(),
        ambient,
        "AmbientCapabilities differs from CapabilityBoundingSet"
    );
    let reasons = &unit.all("CapabilityBoundingSet")[0].comment;
    for c in &caps {
        assert!(
            reasons.contains(&format!("{c}:")),
            "no comment says why {c} is needed"
        );
    }
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
    ] {
        assert_eq!(unit.get(k), Some(v), "{k}");
    }
    // These would break the agent (see the unit's comment).
    assert!(!matches!(
        unit.get("ProtectProc"),
        Some("invisible" | "noaccess" | "ptraceable")
    ));
    assert_ne!(unit.get("ProcSubset"), Some("pid"));
    assert_ne!(unit.get("PrivateUsers"), Some("yes"));
    assert_ne!(unit.get("PrivateNetwork"), Some("yes"));
}

/// Keeps the scratch cluster under a select-only load with a tiny buffer
/// pool: client backends switch, and s_lock is contended (spin sites).
struct Load {
    pg: Cluster,
    _bench: Guard,
}

fn load() -> Load {
    let pg = Cluster::start(&["shared_buffers=2MB"]);
    pg.init_pgbench(2);
    let bench = Guard(
        pg.select_only("600")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    Load { pg, _bench: bench }
}

impl Load {
    fn cluster(&self) -> String {
        self.pg.data().canonicalize().unwrap().display().to_string()
    }
}

/// The unit's command line (ExecStart= with the flags file), listening on
/// `port` of loopback instead.
fn agent_args(unit: &Unit, port: u16) -> Vec<String> {
    let mut f = systemd::flags();
    let i = f
        .iter()
        .position(|a| a == "--listen")
        .expect("--listen in the flags");
    f[i + 1] = format!("127.0.0.1:{port}");
    unit.exec_args(&f)
}

/// setpriv options: user nobody (owns no files, as a DynamicUser= account),
/// no supplementary groups, no_new_privs, and exactly `caps` as inheritable,
/// ambient and bounding sets.
fn setpriv_args(caps: &[String]) -> Vec<String> {
    let set: String = caps
        .iter()
        .map(|c| format!(",+{}", setpriv_name(c)))
        .collect();
    vec![
        "--reuid=nobody".into(),
        "--regid=nogroup".into(),
        "--clear-groups".into(),
        "--no-new-privs".into(),
        format!("--inh-caps=-all{set}"),
        format!("--ambient-caps=-all{set}"),
        format!("--bounding-set=-all{set}"),
    ]
}

/// The file-system view of ProtectSystem=strict (with ProtectKernelTunables=
/// and ProtectControlGroups=: every mount read-only), ProtectHome=yes
/// (/home, /root, /run/user empty and inaccessible) and PrivateTmp=yes (an
/// empty /tmp and /var/tmp), built in a private mount namespace (remounts
/// there do not touch the host's mounts). The shell checks that nothing is
/// left writable, then runs setpriv on the agent, opened before a masked
/// /tmp or /root could hide it.
const CONFINE: &str = r#"
set -e
exec 3< "$AGENT"
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in / /usr /etc /var /sys/fs/cgroup /proc/sys "$(dirname "$AGENT")"; do
  if touch "$d/.pgpreempt-rw-probe" 2>/dev/null; then
    rm -f "$d/.pgpreempt-rw-probe"; echo "still writable: $d" >&2; exit 97
  fi
done
for d in /home /root /run/user; do
  if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=000 tmpfs "$d"; fi
done
for d in /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs "$d"; done
if [ -n "$(ls -A /tmp)" ]; then echo "/tmp is not private" >&2; exit 98; fi
exec setpriv $SETPRIV /proc/self/fd/3 "$@"
"#;

/// Starts the agent as `unit` runs it, with `caps`.
fn start_confined(unit: &Unit, caps: &[String], port: u16, log: &Path) -> Guard {
    let f = std::fs::File::create(log).unwrap();
    Guard(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                CONFINE,
                "sh",
            ])
            .args(agent_args(unit, port))
            .env("AGENT", BIN)
            .env("SETPRIV", setpriv_args(caps).join(" "))
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap(),
    )
}

/// The unit's ExecStartPre=+ step, as systemd would run it (as root, before
/// the agent), with kernel.bpf_stats_enabled restored afterwards.
struct StartPre {
    old: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl StartPre {
    fn run(unit: &Unit) -> StartPre {
        let old = std::fs::read_to_string(BPF_STATS).ok();
        for s in unit.all("ExecStartPre") {
            let cmd = s
                .value
                .strip_prefix('+')
                .expect("a privileged (+) ExecStartPre");
            assert!(
                cmd.contains("kernel.bpf_stats_enabled=1"),
                "this test knows how to undo only the bpf_stats_enabled sysctl: {cmd}"
            );
            let argv: Vec<&str> = cmd.split_whitespace().collect();
            let st = Command::new(argv[0]).args(&argv[1..]).status().unwrap();
            assert!(st.success(), "{cmd}");
        }
        StartPre { old }
    }
}

impl Drop for StartPre {
    fn drop(&mut self) {
        if let Some(v) = &self.old {
            let _ = std::fs::write(BPF_STATS, v);
        }
    }
}

/// Values of the samples of `name` whose labels contain each of `labels`.
fn samples(body: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

fn sum(body: &str, name: &str, labels: &[&str]) -> f64 {
    samples(body, name, labels).iter().sum()
}

/// Scrapes until `done` holds, or fails with the last scrape and the log.
fn wait_for(
    agent: &mut Guard,
    port: u16,
    log: &Path,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        assert!(
            agent.alive(),
            "the confined agent exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        if let Some((200, body)) = get(port, "/metrics") {
            if done(&body) {
                return body;
            }
            last = body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "timed out waiting for {what}; log:\n{}\nlast scrape:\n{last}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits for the agent to exit by itself: its status and its stderr.
fn wait_exit(agent: &mut Guard, log: &Path, what: &str) -> (Option<i32>, String) {
    let start = Instant::now();
    loop {
        if let Some(st) = agent.0.try_wait().unwrap() {
            return (st.code(), std::fs::read_to_string(log).unwrap());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: the agent kept running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM, then a clean exit within the unit's TimeoutStopSec=.
fn stop(unit: &Unit, mut agent: Guard) {
    let limit = unit
        .get("TimeoutStopSec")
        .and_then(|v| v.trim_end_matches('s').parse::<u64>().ok())
        .unwrap_or(90);
    let t = Instant::now();
    // The shell exec'd setpriv, which exec'd the agent: same pid.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let st = agent.0.wait().unwrap();
    assert!(st.success(), "exit after SIGTERM: {st}");
    assert!(
        t.elapsed() < Duration::from_secs(limit),
        "TimeoutStopSec={limit}s"
    );
}

#[test]
fn the_agent_counts_under_the_units_restrictions_and_needs_each_capability() {
    common::require_root();
    let unit = Unit::load();
    let caps = unit.capabilities();
    let load = load();
    let cluster = load.cluster();
    let c = format!("cluster=\"{cluster}\"");
    let client = "backend_type=\"client backend\"";
    let _pre = StartPre::run(&unit);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");

    // All of the unit's capabilities: it attaches and counts, labels the
    // cluster by its data directory (which the private /tmp hides from it),
    // and the BPF statistics that ExecStartPre= turned on move.
    let port = free_port();
    let mut agent = start_confined(&unit, &caps, port, &log);
    let body = wait_for(
        &mut agent,
        port,
        &log,
        "client backends and BPF run time",
        |b| {
            sum(b, "pgpreempt_context_switches_total", &[&c, client]) > 0.0
                && sum(b, "pgpreempt_futex_wait_seconds_count", &[&c]) > 0.0
                && sum(b, "pgpreempt_bpf_program_run_seconds_total", &[]) > 0.0
        },
    );
    assert!(body.contains("pgpreempt_kernel_info{"), "{body}");
    // --no-uprobes: no spin metrics, and no failed attempts either.
    assert!(!body.contains("pgpreempt_spin_seconds_count{"), "{body}");
    assert_eq!(
        samples(&body, "pgpreempt_uprobe_attach_errors_total", &[]),
        vec![0.0]
    );
    stop(&unit, agent);

    // Each capability dropped in turn: a clear one-line error, or the one
    // feature it is for is lost.
    let postmaster = load.pg.postmaster_pid();
    for dropped in &caps {
        let fewer: Vec<String> = caps.iter().filter(|x| *x != dropped).cloned().collect();
        let port = free_port();
        let mut agent = start_confined(&unit, &fewer, port, &log);
        match dropped.as_str() {
            "CAP_BPF" | "CAP_PERFMON" | "CAP_DAC_READ_SEARCH" => {
                let (code, err) = wait_exit(&mut agent, &log, &format!("without {dropped}"));
                assert_eq!(code, Some(1), "without {dropped}: {err}");
                assert_eq!(
                    err.trim_end().lines().count(),
                    1,
                    "without {dropped}, one line:\n{err}"
                );
                assert!(
                    err.contains(dropped.as_str()),
                    "without {dropped}, the error names it: {err}"
                );
                eprintln!("without {dropped}: {}", err.trim_end());
            }
            "CAP_SYS_PTRACE" => {
                // It runs, but cannot read PostgreSQL's /proc/PID/cwd: the
                // backends are grouped by their parent, not by the data
                // directory.
                let by_parent = format!("cluster=\"pid:{postmaster}\"");
                let body = wait_for(&mut agent, port, &log, "backends grouped by parent", |b| {
                    sum(b, "pgpreempt_context_switches_total", &[&by_parent, client]) > 0.0
                });
                assert!(
                    !body.contains(&c),
                    "the data directory was read without CAP_SYS_PTRACE"
                );
                eprintln!("without {dropped}: runs, backends labelled {by_parent}");
                stop(&unit, agent);
            }
            other => panic!("no check for {other}: say here what the agent loses without it"),
        }
    }

    // The spinlocks drop-in: uprobes on s_lock, spin sites named from the
    // backends' memory; without its CAP_SYS_ADMIN, the attach fails, is
    // counted, and the log says what is missing.
    let spin = Unit::with_spinlocks_dropin();
    let spin_caps = spin.capabilities();
    let port = free_port();
    let mut agent = start_confined(&spin, &spin_caps, port, &log);
    let body = wait_for(&mut agent, port, &log, "spin sites", |b| {
        sum(b, "pgpreempt_spin_seconds_count", &[&c]) > 0.0
    });
    assert_eq!(
        samples(&body, "pgpreempt_uprobe_attach_errors_total", &[]),
        vec![0.0]
    );
    let named = body
        .lines()
        .filter(|l| l.starts_with("pgpreempt_spin_seconds_count{") && l.contains(&c))
        .any(|l| !l.contains("site=\"unknown\""));
    assert!(named, "no spin site named:\n{body}");
    stop(&spin, agent);
    for added in spin_caps.iter().filter(|x| !caps.contains(x)) {
        assert_eq!(added, "CAP_SYS_ADMIN", "no check for {added}");
        let fewer: Vec<String> = spin_caps.iter().filter(|x| *x != added).cloned().collect();
        let port = free_port();
        let mut agent = start_confined(&spin, &fewer, port, &log);
        let body = wait_for(&mut agent, port, &log, "a failed s_lock probe", |b| {
            sum(b, "pgpreempt_uprobe_attach_errors_total", &[]) >= 1.0
        });
        assert!(!body.contains("pgpreempt_spin_seconds_count{"), "{body}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains("need CAP_SYS_ADMIN"), "{logged}");
        eprintln!("the drop-in without {added}: no spin metrics, and the log says why");
        stop(&spin, agent);
    }
}

/// One system call from an strace log: (name, the whole line).
fn syscalls(log: &str, exe: &str) -> Vec<(String, String)> {
    let start = format!("execve(\"{exe}\"");
    let mut seen_exec = false;
    let mut out = Vec::new();
    for line in log.lines() {
        let Some((_pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if !seen_exec {
            seen_exec = rest.starts_with(&start);
            if !seen_exec {
                continue;
            }
        }
        if rest.starts_with("<...") || rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && rest[name.len()..].starts_with('(') {
            out.push((name, rest.to_string()));
        }
    }
    assert!(seen_exec, "no {start} in the strace log");
    out
}

/// The system calls a SystemCallFilter= group allows, groups expanded.
fn expand_group(sa: &Path, group: &str, into: &mut BTreeSet<String>) {
    let out = Command::new(sa)
        .args(["syscall-filter", group])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {group}"
    );
    for l in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('@') {
            expand_group(sa, l, into);
        } else {
            into.insert(l.to_string());
        }
    }
}

/// A status field of a process (`VmHWM`, `Threads`), as its first number.
fn status_field(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_other_hardening_option_matches_what_the_agent_does() {
    common::require_root();
    let Some(strace) = which("strace") else {
        panic!("strace is needed: run `cargo xtask setup`");
    };
    // The unit with the spinlocks drop-in: the most the agent does (uprobes,
    // reading spin-site names from /proc/PID/mem).
    let unit = Unit::with_spinlocks_dropin();
    let load = load();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("strace.log");
    let log = dir.path().join("agent.log");
    let port = free_port();
    let mut agent = Guard(
        Command::new(&strace)
            .args(["-f", "-qq", "-s", "128", "-o"])
            .arg(&trace)
            .arg("--")
            .arg("setpriv")
            .args(setpriv_args(&unit.capabilities()))
            .arg(BIN)
            .args(agent_args(&unit, port))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let c = format!("cluster=\"{}\"", load.cluster());
    wait_for(&mut agent, port, &log, "spin sites", |b| {
        sum(b, "pgpreempt_spin_seconds_count", &[&c]) > 0.0
    });
    // The agent itself: the child of strace that runs our binary.
    let exe = std::fs::canonicalize(BIN).unwrap();
    let pid = (0..100)
        .find_map(|_| {
            let found = std::fs::read_dir("/proc").unwrap().find_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let ppid: u32 = ppid
                    .rsplit(')')
                    .next()?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                (ppid == agent.0.id()
                    && std::fs::read_link(format!("/proc/{pid}/exe")).ok()? == exe)
                    .then_some(pid)
            });
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
        .expect("the agent under strace");
    for _ in 0..5 {
        let _ = get(port, "/metrics");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (hwm_kib, threads) = (status_field(pid, "VmHWM"), status_field(pid, "Threads"));
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let st = agent.0.wait().unwrap();
    assert!(st.success(), "strace/agent exit: {st}");
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = syscalls(&text, &BIN.replace("/./", "/"));
    assert!(
        calls.len() > 100,
        "too few system calls traced: {}",
        calls.len()
    );
    let names: BTreeSet<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "{} system calls of {} kinds; VmHWM {hwm_kib} KiB, {threads} threads",
        calls.len(),
        names.len()
    );
    let none_of = |what: &str, banned: &[&str]| {
        for b in banned {
            assert!(!names.contains(b), "{what}: the agent calls {b}");
        }
    };
    let lines_of = |n: &str| -> Vec<&str> {
        calls
            .iter()
            .filter(|(x, _)| x == n)
            .map(|(_, l)| l.as_str())
            .collect()
    };
    let opens = || {
        calls
            .iter()
            .filter(|(n, _)| matches!(n.as_str(), "open" | "openat" | "openat2" | "creat"))
            .map(|(_, l)| l.as_str())
    };

    let mut covered = BTreeSet::new();
    for s in unit.settings.iter().filter(|s| s.section == "Service") {
        let key = s.key.as_str();
        let v = s.value.as_str();
        match key {
            // Run and checked by the_agent_counts_under_the_units_restrictions_...
            "Type"
            | "EnvironmentFile"
            | "ExecStart"
            | "ExecStartPre"
            | "DynamicUser"
            | "CapabilityBoundingSet"
            | "AmbientCapabilities"
            | "NoNewPrivileges"
            | "ProtectSystem"
            | "ProtectHome"
            | "PrivateTmp"
            | "ProtectKernelTunables"
            | "ProtectControlGroups"
            | "TimeoutStopSec" => {}
            // Only systemd can show these (README "Deploying to a fleet").
            "Restart" | "RestartSec" | "SystemCallErrorNumber" => {}
            "MemoryMax" => {
                let max_mib: u64 = v.trim_end_matches('M').parse().expect("MemoryMax in M");
                assert!(
                    hwm_kib > 0 && hwm_kib / 1024 * 4 < max_mib,
                    "VmHWM {hwm_kib} KiB vs MemoryMax={v}"
                );
            }
            "TasksMax" => {
                let max: u64 = v.parse().unwrap();
                assert!(
                    threads > 0 && threads * 2 <= max,
                    "{threads} threads vs TasksMax={v}"
                );
            }
            "PrivateDevices" => {
                for l in opens().filter(|l| l.contains("\"/dev/")) {
                    assert!(
                        [
                            "/dev/null",
                            "/dev/zero",
                            "/dev/full",
                            "/dev/random",
                            "/dev/urandom"
                        ]
                        .iter()
                        .any(|d| l.contains(&format!("\"{d}\""))),
                        "PrivateDevices=: {l}"
                    );
                }
            }
            "PrivateMounts" => none_of(
                key,
                &[
                    "mount",
                    "umount2",
                    "pivot_root",
                    "move_mount",
                    "fsmount",
                    "open_tree",
                ],
            ),
            "UMask" => {
                // The agent creates no file, so no mode to mask.
                none_of(
                    key,
                    &[
                        "mkdir",
                        "mkdirat",
                        "mknod",
                        "mknodat",
                        "creat",
                        "symlink",
                        "symlinkat",
                        "link",
                        "linkat",
                        "rename",
                        "renameat",
                        "renameat2",
                        "unlink",
                        "unlinkat",
                        "truncate",
                    ],
                );
                for l in opens() {
                    assert!(
                        !(l.contains("O_CREAT")
                            || l.contains("O_WRONLY")
                            || l.contains("O_RDWR")
                            || l.contains("O_TRUNC"))
                            || l.contains("\"/dev/null\""),
                        "the agent opens a file for writing: {l}"
                    );
                }
            }
            "ProtectKernelModules" => {
                none_of(key, &["init_module", "finit_module", "delete_module"])
            }
            "ProtectKernelLogs" => {
                none_of(key, &["syslog"]);
                assert!(!opens().any(|l| l.contains("kmsg\"")), "{key}");
            }
            "ProtectClock" => none_of(
                key,
                &["clock_settime", "settimeofday", "adjtimex", "clock_adjtime"],
            ),
            "ProtectHostname" => none_of(key, &["sethostname", "setdomainname"]),
            "LockPersonality" => {
                for l in lines_of("personality") {
                    assert!(l.contains("0xffffffff"), "{key}: {l}");
                }
            }
            "MemoryDenyWriteExecute" => {
                for n in ["mmap", "mprotect", "pkey_mprotect"] {
                    for l in lines_of(n) {
                        // Writable and executable at once, or made
                        // executable later: both denied under W^X.
                        let exec = l.contains("PROT_EXEC");
                        let denied = exec && (l.contains("PROT_WRITE") || n != "mmap");
                        assert!(!denied, "{key}: {l}");
                    }
                }
            }
            "RestrictRealtime" => {
                for n in ["sched_setscheduler", "sched_setattr"] {
                    for l in lines_of(n) {
                        assert!(
                            !(l.contains("SCHED_FIFO")
                                || l.contains("SCHED_RR")
                                || l.contains("SCHED_DEADLINE")),
                            "{key}: {l}"
                        );
                    }
                }
            }
            "RestrictSUIDSGID" => none_of(key, &["chmod", "fchmod", "fchmodat", "fchmodat2"]),
            "RestrictNamespaces" => {
                none_of(key, &["unshare", "setns"]);
                assert!(!calls.iter().any(|(_, l)| l.contains("CLONE_NEW")), "{key}");
            }
            "RestrictAddressFamilies" => {
                let allowed: Vec<&str> = v.split_whitespace().collect();
                for l in lines_of("socket") {
                    let fam = l["socket(".len()..].split(',').next().unwrap();
                    assert!(allowed.contains(&fam), "{key}: {l}");
                }
            }
            "SystemCallArchitectures" => {
                assert_eq!(v, "native");
                assert!(!text.contains("32 bit mode"), "{key}");
            }
            "SystemCallFilter" => {
                let Some(sa) = which("systemd-analyze") else {
                    eprintln!("SystemCallFilter= not checked: systemd-analyze is not installed");
                    continue;
                };
                let mut allowed = BTreeSet::new();
                for entry in unit.list("SystemCallFilter") {
                    if entry.starts_with('@') {
                        expand_group(&sa, &entry, &mut allowed);
                    } else {
                        allowed.insert(entry);
                    }
                }
                let outside: Vec<&&str> = names.iter().filter(|n| !allowed.contains(**n)).collect();
                assert!(outside.is_empty(), "{key}={v} would deny {outside:?}");
            }
            other => panic!(
                "no check for {other}=: add one here, or say in README why it cannot be tested"
            ),
        }
        covered.insert(key.to_string());
    }
    eprintln!("checked: {covered:?}");
}
