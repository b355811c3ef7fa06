//! `pgpreempt check`, `trace` and `diff` as commands: `check` on this host
//! against a scratch cluster (huge pages off), bad input: one line, a
//! non-zero exit, no panic and nothing left attached; and `diff` of the
//! real reports in `tests/fixtures/reports`.
mod common;

use std::process::{Command, Output};

use common::postgres::Cluster;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pgpreempt");

/// Runs the binary: it must fail with one line on stderr, exit `code`, and
/// leave no program loaded. Returns the line.
fn fails(args: &[&str], code: i32) -> String {
    let before = common::our_programs_settled();
    let out: Output = Command::new(BIN).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: want one line, got:\n{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    common::assert_programs_back_to(before, &format!("{args:?} left BPF programs attached"));
    err
}

#[test]
fn check_finds_a_scratch_cluster_on_this_host() {
    common::require_root();
    // huge_pages=off: the answer does not depend on this host's reservations.
    let pg = Cluster::start(&["huge_pages=off"]);
    let datadir = pg.data().canonicalize().unwrap().display().to_string();
    let before = common::our_programs_settled();
    let out = Command::new(BIN).arg("check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::assert_programs_back_to(before, "check leaves nothing loaded");
    assert!(
        text.starts_with("pgpreempt check: tracing can work on this host"),
        "{text}"
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        text.contains(&format!("kernel        {}", release.trim())),
        "{text}"
    );
    assert!(text.contains("BPF programs  ok: "), "{text}");
    // The maps' memory with the daemon's sizes, here and on bigger hosts.
    let line = text
        .lines()
        .find(|l| l.starts_with("  map memory    "))
        .unwrap_or_else(|| panic!("no map memory line: {text}"));
    assert!(
        line.contains(" MiB at 96 CPUs, ")
            && line.contains(" at 192 (pgpreempt run, default sizes)"),
        "{line}"
    );
    // The memory programs' tracepoints and the NUMA nodes.
    assert!(text.contains("\n  memory events "), "{text}");
    assert!(text.contains("\n  NUMA          "), "{text}");
    assert!(text.contains(&format!("  {datadir}\n")), "{text}");
    assert!(
        text.contains(&format!("pid {}, ", pg.postmaster_pid())),
        "{text}"
    );
    assert!(text.contains("huge pages  WARNING: off: "), "{text}");
    assert!(
        text.contains("s_lock      probe-able: s_lock is exported"),
        "{text}"
    );

    let out = Command::new(BIN)
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    assert_eq!(v["ok"], true);
    assert_eq!(v["kernel"]["release"], release.trim());
    let mm = &v["map_memory"]["daemon"];
    let (here, at96) = (mm["bytes"].as_u64().unwrap(), &mm["at"][0]);
    assert_eq!(at96["cpus"], 96);
    assert!(
        here > 0 && at96["bytes"].as_u64().unwrap() < 32 << 20,
        "{mm}"
    );
    assert!(mm["maps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "PROC_STATS" && m["max_entries"] == 1));
    assert_eq!(
        v["memory"]["programs"].as_array().unwrap().len(),
        pgpreempt::kernel::probes::MEMORY_PROGRAMS.len()
    );
    assert!(v["memory"]["numa_nodes"].as_u64().unwrap() >= 1);
    assert!(["none", "voluntary", "full", "lazy", "rt", "unknown"]
        .contains(&v["kernel"]["preempt_model"].as_str().unwrap()));
    let cl = v["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["data_directory"] == datadir.as_str())
        .expect("the scratch cluster is found");
    assert_eq!(cl["postmaster_pid"], pg.postmaster_pid());
    assert_eq!(cl["huge_pages"]["state"], "off");
    assert_eq!(cl["s_lock_probeable"], true);
    let pg_version = std::fs::read_to_string(pg.data().join("PG_VERSION")).unwrap();
    assert!(
        cl["version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}.", pg_version.trim())),
        "{cl}"
    );
    assert!(
        cl["processes"].as_u64().unwrap() >= 4,
        "postmaster and auxiliaries"
    );
}

#[test]
fn check_without_privileges_exits_non_zero() {
    common::require_root();
    let out = common::unprivileged(BIN, &["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("pgpreempt check: tracing CANNOT work"),
        "{text}"
    );
    assert!(
        text.contains("privileges    FAILED: missing CAP_BPF"),
        "{text}"
    );
}

#[test]
fn bad_trace_input_is_one_line() {
    common::require_root();
    let e = fails(&["trace", "--duration", "abc"], 2);
    assert!(e.contains("\"abc\" is not a duration"), "{e}");
    fails(&["trace", "--duration", "0s"], 2);
    let e = fails(
        &["trace", "--duration", "5s", "--cluster", "/nonexistent"],
        1,
    );
    assert_eq!(
        e.trim_end(),
        "pgpreempt: --cluster /nonexistent: no such directory"
    );
    let tmp = tempfile::tempdir().unwrap();
    let e = fails(
        &[
            "trace",
            "--duration",
            "5s",
            "--cluster",
            tmp.path().to_str().unwrap(),
        ],
        1,
    );
    assert!(e.contains("no PostgreSQL is running there"), "{e}");
    let e = fails(
        &[
            "trace",
            "--duration",
            "5s",
            "--json",
            "/nonexistent/dir/r.json",
        ],
        1,
    );
    assert!(
        e.contains("--json /nonexistent/dir/r.json: cannot write there"),
        "{e}"
    );
    let e = fails(&["trace", "--comm", "a-name-longer-than-15"], 2);
    assert!(e.contains("1 to 15 bytes"), "{e}");
    // diagnose: the same checks, said before the session starts (one line,
    // not after "tracing for ..."); its exit 3 means "found something".
    fails(&["diagnose", "--duration", "0s"], 2);
    let e = fails(&["diagnose", "--cluster", "/nonexistent"], 1);
    assert_eq!(
        e.trim_end(),
        "pgpreempt: --cluster /nonexistent: no such directory"
    );
}

#[test]
fn bad_diff_input_is_one_line() {
    common::require_root();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.json");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    let other = tmp.path().join("other.json");
    std::fs::write(&other, "{\"hello\": 1}").unwrap();
    let e = fails(
        &["diff", missing.to_str().unwrap(), bad.to_str().unwrap()],
        1,
    );
    assert!(
        e.contains("cannot read") && e.contains("missing.json"),
        "{e}"
    );
    let e = fails(&["diff", bad.to_str().unwrap(), bad.to_str().unwrap()], 1);
    assert!(
        e.contains("bad.json is not a pgpreempt trace report"),
        "{e}"
    );
    let e = fails(
        &["diff", other.to_str().unwrap(), other.to_str().unwrap()],
        1,
    );
    assert!(
        e.contains("other.json is not a pgpreempt trace report: missing field"),
        "{e}"
    );
    fails(&["diff", bad.to_str().unwrap()], 2);
}

/// Runs `pgpreempt diff` (which loads nothing): its exit code, stdout and
/// stderr.
fn diff(args: &[&str]) -> (Option<i32>, String, String) {
    let out: Output = Command::new(BIN).arg("diff").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn diff_sides_are_checked_before_reading() {
    // The files need not exist: the sides are checked first, as usage
    // errors (exit 2, one line naming what is wrong).
    for (args, want) in [
        (vec![], "diff: no reports: give BEFORE.json AFTER.json"),
        (vec!["a.json"], "diff: no AFTER report: give BEFORE.json AFTER.json, or BEFORE.json... -- AFTER.json..."),
        (vec!["a.json", "b.json", "c.json"], "diff: 3 reports and no `--`: put `--` between the BEFORE and the AFTER reports"),
        (vec!["a1.json", "a2.json", "--"], "diff: no AFTER report after `--`"),
        (vec!["--", "b.json"], "diff: no BEFORE report before `--`"),
        (vec!["a.json", "a.json", "--", "b.json"], "diff: a.json is given twice on the BEFORE side"),
        (vec!["a.json", "--", "b.json", "b.json"], "diff: b.json is given twice on the AFTER side"),
    ] {
        let (code, out, err) = diff(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with(&format!("pgpreempt: {want}")), "{args:?}: {err}");
        assert!(out.is_empty(), "{out}");
    }
    // A side's report that cannot be read: exit 1, one line, named.
    let (code, _, err) = diff(&["/nonexistent/a.json", "--", "/nonexistent/b.json"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot read /nonexistent/a.json"), "{err}");
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/reports/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A number in scientific notation: `9.28e-4`, `1e5`.
fn scientific(s: &str) -> bool {
    let b = s.as_bytes();
    (1..b.len().saturating_sub(1)).any(|i| {
        (b[i] == b'e' || b[i] == b'E')
            && b[i - 1].is_ascii_digit()
            && (b[i + 1] == b'-' || b[i + 1] == b'+' || b[i + 1].is_ascii_digit())
    })
}

#[test]
fn diff_of_real_reports() {
    // Four back-to-back 8 s sessions of one pgbench (16 clients, 2 CPUs),
    // and one of the same cluster idle (agent/tests/fixtures/reports).
    let (a1, a2, b1, b2, idle) = (
        fixture("pgbench-1.json"),
        fixture("pgbench-2.json"),
        fixture("pgbench-3.json"),
        fixture("pgbench-4.json"),
        fixture("idle.json"),
    );
    let (code, text, err) = diff(&[&a1, &a2, "--", &b1, &b2]);
    assert_eq!(code, Some(0), "{err}");
    // Other test sessions shared the VM: the load of a side was uneven.
    assert!(
        text.starts_with("note: uneven load within a side ("),
        "{text}"
    );
    assert!(text.contains("\nbefore  2 reports (16.0 s): "), "{text}");
    let env = text.find("\nenvironment ").expect("environment");
    assert!(env < text.find("\nfigure ").expect("figures"), "{text}");
    assert!(text.contains("(min..max)"), "{text}");
    assert!(text.contains("ms/s"), "{text}");
    assert!(text.contains("\nverdict: no change"), "{text}");
    assert!(!text.lines().any(scientific), "{text}");

    // One report per side: said, and still a comparison.
    let (code, text, _) = diff(&[&a1, &b1]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("one report per side: no spread to tell noise by."),
        "{text}"
    );
    assert!(!text.lines().any(scientific), "{text}");

    // Loaded against idle: the warning first, no verdict.
    let (code, text, _) = diff(&[&a1, &idle]);
    assert_eq!(code, Some(0));
    assert!(
        text.starts_with("WARNING: different loads (involuntary switches "),
        "{text}"
    );
    assert!(
        text.contains("\nverdict: none: the two sides carry different loads"),
        "{text}"
    );

    // --json keeps machine numbers.
    let (code, json, _) = diff(&["--json", &a1, &a2, "--", &b1, &b2]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&json).expect("diff --json is JSON");
    assert_eq!(v["noise_rule"], "spread");
    assert_eq!(v["verdict"]["kind"], "unchanged");
    assert_eq!(v["before"].as_array().unwrap().len(), 2);
    let row = &v["rows"][0];
    assert!(
        row["before"]["mean"].is_f64() && row["before"]["min"].is_number(),
        "{row}"
    );
}
