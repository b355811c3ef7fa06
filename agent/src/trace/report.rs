//! The report printed when a trace session ends: totals, memory, backend
//! types, log2 histograms, the top lock holders and the top spin sites.
use std::fmt::Write;

use crate::{
    diagnosis::{
        self,
        units::{pct, per_sec_time},
    },
    trace::report_json::{Figures, ProcessJson, Report},
    trace::text_histogram,
    trace::text_table::{num, per_second, secs, Align, Table},
};

/// Rows in the "top" tables.
pub const TOP: usize = 10;

/// The lock holders whose preemption held waiters up the longest: by
/// holder-preempted time, then holder preemptions, then the waiting they
/// caused as waiters themselves.
pub fn top_lock_holders(r: &Report, n: usize) -> Vec<&ProcessJson> {
    let mut v: Vec<&ProcessJson> = r
        .processes
        .iter()
        .filter(|p| p.figures.holder_preemptions > 0)
        .collect();
    v.sort_by(|a, b| {
        let (fa, fb) = (&a.figures, &b.figures);
        fb.holder_preempted_seconds
            .total_cmp(&fa.holder_preempted_seconds)
            .then(fb.holder_preemptions.cmp(&fa.holder_preemptions))
            .then(a.pid.cmp(&b.pid))
    });
    v.truncate(n);
    v
}

/// The processes that woke most often (powertop's view): by wake-ups,
/// then pid.
pub fn top_wakers(r: &Report, n: usize) -> Vec<&ProcessJson> {
    let mut v: Vec<&ProcessJson> = r
        .processes
        .iter()
        .filter(|p| p.figures.wakeups > 0)
        .collect();
    v.sort_by(|a, b| {
        b.figures
            .wakeups
            .cmp(&a.figures.wakeups)
            .then(a.pid.cmp(&b.pid))
    });
    v.truncate(n);
    v
}

/// The "idle wake-ups" section: per process, wake-ups per second of the
/// session in total and by cause, most first (README, "Idle wake-ups").
fn wakeups_section(r: &Report, d: f64, out: &mut String) {
    out.push_str(
        "\nidle wake-ups (runs after a sleep, per second of session, by cause; most first)\n",
    );
    let top = top_wakers(r, TOP);
    if top.is_empty() {
        out.push_str("  none: no traced process woke up\n");
        return;
    }
    let mut t = Table::new(&[
        ("pid", Align::Right),
        ("backend type", Align::Left),
        ("wake/s", Align::Right),
        ("timer/s", Align::Right),
        ("process/s", Align::Right),
        ("other/s", Align::Right),
        ("exited", Align::Left),
    ]);
    let rate = |v: u64| num(v as f64 / d);
    for p in top {
        let f = &p.figures;
        t.row(vec![
            p.pid.to_string(),
            p.backend_type.clone(),
            rate(f.wakeups),
            rate(f.wakeups_timer),
            rate(f.wakeups_process),
            rate(f.wakeups_other),
            if p.exited_during_session { "yes" } else { "" }.into(),
        ]);
    }
    out.push_str(&t.render());
}

/// The session's figures in one set of terms: time per second of session
/// (a share of one CPU, `12.5 ms/s`) with its share of the processes'
/// active time, and counts per second.
fn totals_lines(f: &Figures, d: f64, cpus: u32, out: &mut String) {
    let rate = |v: f64| per_sec_time(v / d);
    let count = |v: u64| per_second(v as f64 / d);
    let active = f.active_seconds();
    let of_active = |v: f64| {
        if active > 0.0 {
            pct(v / active)
        } else {
            "-".into()
        }
    };
    let _ = writeln!(
        out,
        "  active                {} on {cpus} CPUs: on a CPU, waiting for one, or waiting for a lock (the shares below are of it)",
        rate(active)
    );
    let _ = writeln!(
        out,
        "  on a CPU              {} ({})",
        rate(f.on_cpu_seconds),
        of_active(f.on_cpu_seconds)
    );
    let _ = writeln!(
        out,
        "  waiting for a CPU     {} ({}): {} after {} preemptions, {} after {} wakeups (mean {})",
        rate(f.run_queue_seconds()),
        of_active(f.run_queue_seconds()),
        rate(f.preempted_seconds),
        count(f.preemptions),
        rate(f.wakeup_latency_seconds),
        count(f.wakeups),
        mean(f.wakeup_latency_seconds, f.wakeups)
    );
    let _ = writeln!(
        out,
        "  waiting for locks     {} ({}) in {} futex waits; {} wakes",
        rate(f.futex_wait_seconds),
        of_active(f.futex_wait_seconds),
        count(f.futex_waits),
        count(f.futex_wakes)
    );
    let share = if f.futex_wait_seconds > 0.0 {
        format!(
            " ({} of lock waiting)",
            pct(f.waiter_delay_seconds / f.futex_wait_seconds)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "  lock holders          {} preempted while others waited, {} off the CPU; waiting they caused {}{}",
        count(f.holder_preemptions),
        rate(f.holder_preempted_seconds),
        rate(f.waiter_delay_seconds),
        share
    );
    let _ = writeln!(
        out,
        "  spinlocks (s_lock)    {} ({}) in {} contended acquisitions, {} sleeps, {} spinner preemptions",
        rate(f.spin_seconds),
        of_active(f.spin_seconds),
        count(f.spins),
        count(f.spin_delays),
        count(f.spinner_preemptions)
    );
    let _ = writeln!(
        out,
        "  context switches      {} involuntary, {} voluntary",
        count(f.involuntary_switches),
        count(f.voluntary_switches)
    );
    let _ = writeln!(
        out,
        "  wake-ups              {}: {} timer, {} process, {} other",
        count(f.wakeups),
        count(f.wakeups_timer),
        count(f.wakeups_process),
        count(f.wakeups_other)
    );
}

fn mean(total: f64, n: u64) -> String {
    if n == 0 {
        "-".into()
    } else {
        secs(total / n as f64)
    }
}

fn p99(h: Option<&crate::trace::report_json::HistogramJson>) -> String {
    h.and_then(|h| h.quantile_bound(0.99))
        .map(secs)
        .unwrap_or_else(|| "-".into())
}

/// The whole report as text: the diagnosis first, then the figures; the
/// log2 histograms with `verbose` only.
/// The processes forked during the session, per backend type, with their
/// rate and mean lifetime: a connection storm reads "client backend 340/s,
/// lived 6 ms".
fn starts_line(r: &Report, d: f64) -> Option<String> {
    let mut types: Vec<_> = r
        .backend_types
        .iter()
        .filter(|b| b.process_starts > 0)
        .collect();
    if types.is_empty() {
        return None;
    }
    types.sort_by_key(|b| std::cmp::Reverse(b.process_starts));
    let parts: Vec<String> = types
        .iter()
        .map(|b| {
            let lived = if b.process_exits > 0 {
                format!(", lived {} on average", secs(b.mean_lifetime_seconds))
            } else {
                String::new()
            };
            format!(
                "{} {} ({}/s{lived})",
                b.backend_type,
                b.process_starts,
                num(b.process_starts as f64 / d)
            )
        })
        .collect();
    Some(format!("process starts: {}", parts.join("; ")))
}

pub fn render(r: &Report, verbose: bool) -> String {
    let d = r.duration_seconds.max(1e-9);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgpreempt trace: {:.1} s from {}, Linux {} (preemption model {}, from {})",
        r.duration_seconds,
        r.started_at,
        r.kernel.release,
        r.kernel.preempt_model,
        r.kernel.preempt_model_source
    );
    if r.clusters.is_empty() {
        let _ = writeln!(out, "no PostgreSQL process was traced");
    }
    for c in &r.clusters {
        let _ = writeln!(
            out,
            "cluster {}: PostgreSQL {}, postmaster {}, {} processes traced",
            c.cluster,
            c.version.as_deref().unwrap_or("(version unknown)"),
            c.postmaster_pid
                .map_or("not seen".to_string(), |p| p.to_string()),
            c.processes
        );
    }
    let exited = r
        .processes
        .iter()
        .filter(|p| p.exited_during_session)
        .count();
    let started = r
        .processes
        .iter()
        .filter(|p| p.started_during_session)
        .count();
    let _ = writeln!(
        out,
        "{} processes ({} started and {} exited during the session)",
        r.processes.len(),
        started,
        exited
    );
    if let Some(line) = starts_line(r, d) {
        let _ = writeln!(out, "{line}");
    }
    // The diagnosis: the headline, then the findings.
    let diag = diagnosis::diagnose(r);
    out.push('\n');
    out.push_str(&diagnosis::render::headline(&diag));
    out.push_str("\nfindings\n");
    out.push_str(&diagnosis::render::findings(&diag));
    let _ = writeln!(
        out,
        "\nfigures (per second of session; shares of the active time)"
    );
    totals_lines(&r.totals, d, r.online_cpus, &mut out);
    if !r.preempted_by.is_empty() {
        let total: u64 = r.preempted_by.iter().map(|p| p.preemptions).sum();
        let names: Vec<String> = r
            .preempted_by
            .iter()
            .take(6)
            .map(|p| {
                format!(
                    "{} {}",
                    p.comm,
                    pct(p.preemptions as f64 / total.max(1) as f64)
                )
            })
            .collect();
        let _ = writeln!(out, "  preempted by          {}", names.join(", "));
    }
    out.push_str("\nmemory\n");
    for l in crate::trace::memory_block::report_lines(r) {
        out.push_str(&l);
        out.push('\n');
    }

    let mut t = Table::new(&[
        ("cluster", Align::Left),
        ("backend type", Align::Left),
        ("procs", Align::Right),
        ("waiter delay", Align::Right),
        ("holder preempt", Align::Right),
        ("invol/s", Align::Right),
        ("wake/s", Align::Right),
        ("preempted", Align::Right),
        ("preempt p99", Align::Right),
        ("wake p99", Align::Right),
        ("futex wait", Align::Right),
        ("spin", Align::Right),
    ]);
    let mut types: Vec<_> = r.backend_types.iter().collect();
    types.sort_by(|a, b| {
        crate::trace::live_view::rank(&b.figures, &a.figures, None, None)
            .then(a.backend_type.cmp(&b.backend_type))
    });
    for b in types {
        let f = &b.figures;
        t.row(vec![
            b.cluster.clone(),
            b.backend_type.clone(),
            b.processes.to_string(),
            secs(f.waiter_delay_seconds),
            f.holder_preemptions.to_string(),
            num(f.involuntary_switches as f64 / d),
            num(f.wakeups as f64 / d),
            secs(f.preempted_seconds),
            p99(b.histogram("preempted_seconds")),
            p99(b.histogram("wakeup_latency_seconds")),
            secs(f.futex_wait_seconds),
            secs(f.spin_seconds),
        ]);
    }
    let _ = write!(out, "\nby backend type\n{}", t.render());

    if verbose {
        out.push_str("\nhistograms (log2 buckets, over the session)\n");
        for h in &r.histograms {
            out.push('\n');
            out.push_str(&text_histogram::draw(h));
        }
    } else if !r.histograms.is_empty() {
        out.push_str("\n(log2 histograms of each wait: --verbose)\n");
    }

    wakeups_section(r, d, &mut out);

    let holders = top_lock_holders(r, TOP);
    out.push_str("\ntop lock holders (preempted while others waited on them; longest first)\n");
    if holders.is_empty() {
        out.push_str("  none: no lock holder was preempted while another process waited for it\n");
    } else {
        let mut t = Table::new(&[
            ("pid", Align::Right),
            ("backend type", Align::Left),
            ("holder preemptions", Align::Right),
            ("holder preempted", Align::Right),
            ("invol", Align::Right),
            ("exited", Align::Left),
            ("activity", Align::Left),
        ]);
        for p in holders {
            t.row(vec![
                p.pid.to_string(),
                p.backend_type.clone(),
                p.figures.holder_preemptions.to_string(),
                secs(p.figures.holder_preempted_seconds),
                p.figures.involuntary_switches.to_string(),
                if p.exited_during_session { "yes" } else { "" }.into(),
                p.activity.clone(),
            ]);
        }
        out.push_str(&t.render());
    }

    out.push_str("\ntop spin sites (contended s_lock calls; most time first)\n");
    let mut sites: Vec<_> = r.spin_sites.iter().collect();
    sites.sort_by(|a, b| {
        b.seconds
            .total_cmp(&a.seconds)
            .then(b.count.cmp(&a.count))
            .then(a.site.cmp(&b.site))
    });
    sites.truncate(TOP);
    if sites.is_empty() {
        let why = if r.uprobe_errors > 0 {
            "none recorded, and s_lock could not be probed in some binaries (see the log)"
        } else {
            "none: no contended spinlock"
        };
        let _ = writeln!(out, "  {why}");
    } else {
        let mut t = Table::new(&[
            ("cluster", Align::Left),
            ("site", Align::Left),
            ("count", Align::Right),
            ("time", Align::Right),
            ("mean", Align::Right),
            ("sleeps", Align::Right),
        ]);
        for s in sites {
            t.row(vec![
                s.cluster.clone(),
                s.site.clone(),
                s.count.to_string(),
                secs(s.seconds),
                mean(s.seconds, s.count),
                s.delays.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }

    // Scheduler events the kernel did not run the programs for are told
    // apart: no setting changes them, and a missed switch-in is made good.
    let skipped = |k: &str| crate::kernel::snapshot::KERNEL_SKIPPED.contains(&k);
    let listed = |want_skipped: bool| -> Vec<String> {
        r.dropped_events
            .iter()
            .filter(|(k, &v)| v > 0 && skipped(k) == want_skipped)
            .map(|(k, v)| format!("{k} {v}"))
            .collect()
    };
    let dropped = listed(false);
    if !dropped.is_empty() {
        let _ = writeln!(
            out,
            "\nwarning: events the kernel programs could not record: {} (figures are undercounted)",
            dropped.join(", ")
        );
    }
    let missed = listed(true);
    if !missed.is_empty() {
        let _ = writeln!(
            out,
            "\nnote: scheduler events the kernel did not run the programs for: {} (a missed switch-in is made good one run late; a missed switch-out loses the wait or preemption it started)",
            missed.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::tests::sample;

    #[test]
    fn renders_every_section() {
        let mut r = sample(10.0, 1.0);
        let mut other = r.processes[0].clone();
        other.pid = 99;
        other.figures.holder_preempted_seconds = 100.0;
        other.exited_during_session = true;
        r.processes.push(other);
        let text = render(&r, true);
        for want in [
            "pgpreempt trace: 10.0 s from 2026-11-24T05:00:00Z, Linux 6.18.0 (preemption model none",
            "cluster /data: PostgreSQL 15, postmaster 10, 1 processes traced",
            "2 processes (2 started and 1 exited during the session)",
            "process starts: client backend 1 (0.10/s, lived 4.0ms on average)",
            "by backend type",
            "preempted_seconds: 11 observations",
            "top lock holders",
            "StrategyGetBuffer",
            "idle wake-ups (runs after a sleep",
            "  wake-ups              ",
            "\nmemory\n  shared memory         /data: 143 MB on 4 kB pages (huge pages off)\n  page faults ",
            "memory by backend type",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // The exited process held waiters up longest: it comes first.
        let holders = top_lock_holders(&r, 10);
        assert_eq!(holders[0].pid, 99);
        assert_eq!(holders[1].pid, 11);
        assert!(!text.contains("warning: events"));
        r.dropped_events.insert("switch_in_missed".into(), 2);
        let text = render(&r, false);
        assert!(!text.contains("warning: events"), "{text}");
        assert!(
            !text.contains("observations"),
            "histograms only with --verbose"
        );
        assert!(text.contains("did not run the programs for: switch_in_missed 2"));
        r.dropped_events.insert("task_map_full".into(), 3);
        let text = render(&r, false);
        assert!(
            text.contains("could not record: task_map_full 3 (figures"),
            "{text}"
        );
    }
}
