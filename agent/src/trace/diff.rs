//! `pgpreempt diff BEFORE.json AFTER.json`: two trace reports compared, for
//! example the same pgbench before and after a kernel upgrade. Each key
//! figure is normalised per second of session and per involuntary switch,
//! shown before, after and as a ratio, largest change first, and summed up
//! in a one-line verdict.
use std::fmt::Write;

use serde::Serialize;

use crate::{
    trace::report_json::{Figures, Report},
    trace::text_table::{num, Align, Table},
};

/// A ratio at least this far from 1 (either way) is a change.
pub const SIGNIFICANT: f64 = 1.2;
/// Time figures below this many seconds per second (0.1% of one CPU) on
/// both sides are too small to judge.
pub const MIN_SECONDS_PER_SECOND: f64 = 0.001;

/// Reads one figure of a report's totals.
pub type Getter = fn(&Figures) -> f64;

/// A field of the figures by its name, as a number.
macro_rules! figure {
    ($field:ident) => {
        (stringify!($field), |f: &Figures| f.$field as f64)
    };
}

/// The figures compared, in the order ties are shown.
pub const FIGURES: &[(&str, Getter)] = &[
    ("waiter_delay_seconds", |f| f.waiter_delay_seconds),
    ("holder_preemptions", |f| f.holder_preemptions as f64),
    ("holder_preempted_seconds", |f| f.holder_preempted_seconds),
    ("involuntary_switches", |f| f.involuntary_switches as f64),
    ("voluntary_switches", |f| f.voluntary_switches as f64),
    ("preempted_seconds", |f| f.preempted_seconds),
    ("wakeups", |f| f.wakeups as f64),
    ("wakeup_latency_seconds", |f| f.wakeup_latency_seconds),
    ("futex_waits", |f| f.futex_waits as f64),
    ("futex_wait_seconds", |f| f.futex_wait_seconds),
    ("spins", |f| f.spins as f64),
    ("spin_seconds", |f| f.spin_seconds),
    // Memory: `page_faults` is the four regions together.
    ("page_faults", |f| f.page_faults() as f64),
    figure!(page_faults_main_shared),
    figure!(page_faults_other_shared),
    figure!(page_faults_private),
    figure!(page_faults_file),
    figure!(huge_page_faults),
    figure!(faults_while_others_spin),
    figure!(faults_while_spinning),
    figure!(preemptions_while_others_spin),
    figure!(preempted_while_others_spin_seconds),
    figure!(mmap_lock_read_waits),
    figure!(mmap_lock_read_wait_seconds),
    figure!(mmap_lock_write_waits),
    figure!(mmap_lock_write_wait_seconds),
    figure!(reclaim_direct_stalls),
    figure!(reclaim_direct_stall_seconds),
    figure!(reclaim_memcg_stalls),
    figure!(reclaim_memcg_stall_seconds),
    figure!(compaction_stalls),
    figure!(compaction_stall_seconds),
    figure!(numa_migrations),
    figure!(pages_migrated),
];

/// The figures whose growth is harm: time lost to the scheduler or to locks.
pub const HARM: &[&str] = &[
    "waiter_delay_seconds",
    "holder_preempted_seconds",
    "preempted_seconds",
    "wakeup_latency_seconds",
    "futex_wait_seconds",
    "spin_seconds",
    "preempted_while_others_spin_seconds",
    "mmap_lock_read_wait_seconds",
    "mmap_lock_write_wait_seconds",
    "reclaim_direct_stall_seconds",
    "reclaim_memcg_stall_seconds",
    "compaction_stall_seconds",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Second,
    InvoluntarySwitch,
}

impl Per {
    fn text(self) -> &'static str {
        match self {
            Per::Second => "per second",
            Per::InvoluntarySwitch => "per invol switch",
        }
    }
}

/// One figure under one normalisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub per: Per,
    /// None: nothing to normalise by (no involuntary switch in that report).
    pub before: Option<f64>,
    pub after: Option<f64>,
    /// after / before. None when it is undefined: a side is missing, or
    /// before is zero (see `appeared`).
    pub ratio: Option<f64>,
    /// Zero before, non-zero after.
    pub appeared: bool,
}

impl Row {
    /// How big the change is, for ordering: |ln ratio|; a figure that
    /// appeared from zero is the biggest; no change at all the smallest.
    pub fn magnitude(&self) -> f64 {
        if self.appeared {
            return f64::INFINITY;
        }
        match self.ratio {
            Some(r) if r > 0.0 => r.ln().abs(),
            Some(_) => f64::INFINITY, // dropped to zero
            None => -1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Worse,
    Better,
    Mixed,
    Unchanged,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub file: String,
    pub kernel_release: String,
    pub preempt_model: String,
    pub duration_seconds: f64,
    pub involuntary_switches: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub before: Side,
    pub after: Side,
    /// Largest change first.
    pub rows: Vec<Row>,
    pub verdict: Verdict,
}

fn side(file: &str, r: &Report) -> Side {
    Side {
        file: file.to_string(),
        kernel_release: r.kernel.release.clone(),
        preempt_model: r.kernel.preempt_model.clone(),
        duration_seconds: r.duration_seconds,
        involuntary_switches: r.totals.involuntary_switches,
    }
}

/// `value` per `by`, None when `by` is zero.
fn per(value: f64, by: f64) -> Option<f64> {
    (by > 0.0).then(|| value / by)
}

pub fn compare(before_file: &str, before: &Report, after_file: &str, after: &Report) -> Diff {
    let mut rows = Vec::new();
    for &(figure, get) in FIGURES {
        for p in [Per::Second, Per::InvoluntarySwitch] {
            if p == Per::InvoluntarySwitch && figure == "involuntary_switches" {
                continue;
            }
            let norm = |r: &Report| {
                let by = match p {
                    Per::Second => r.duration_seconds,
                    Per::InvoluntarySwitch => r.totals.involuntary_switches as f64,
                };
                per(get(&r.totals), by)
            };
            let (b, a) = (norm(before), norm(after));
            let (ratio, appeared) = match (b, a) {
                (Some(b), Some(a)) if b > 0.0 => (Some(a / b), false),
                (Some(_), Some(a)) => (None, a > 0.0),
                _ => (None, false),
            };
            rows.push(Row {
                figure,
                per: p,
                before: b,
                after: a,
                ratio,
                appeared,
            });
        }
    }
    // Stable: ties (to rounding error) keep the order of FIGURES.
    let key = |r: &Row| {
        let m = r.magnitude();
        if m.is_finite() {
            (m * 1e9).round() / 1e9
        } else {
            m
        }
    };
    rows.sort_by(|x, y| key(y).total_cmp(&key(x)));
    let verdict = verdict(&rows);
    Diff {
        before: side(before_file, before),
        after: side(after_file, after),
        rows,
        verdict,
    }
}

/// Judges the time figures per second: worse if one grew by SIGNIFICANT or
/// more, better if one shrank as much, mixed if both, ignoring figures
/// below MIN_SECONDS_PER_SECOND on both sides.
pub fn verdict(rows: &[Row]) -> Verdict {
    let mut worse = Vec::new();
    let mut better = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.per == Per::Second && HARM.contains(&r.figure))
    {
        let (Some(b), Some(a)) = (r.before, r.after) else {
            continue;
        };
        if b.max(a) < MIN_SECONDS_PER_SECOND {
            continue;
        }
        let shown = if r.appeared {
            format!(
                "{} per second appeared (0 before, {} after)",
                r.figure,
                num(a)
            )
        } else {
            let ratio = r.ratio.unwrap_or(0.0);
            format!("{} per second {}x", r.figure, num(ratio))
        };
        if r.appeared || r.ratio.is_some_and(|x| x >= SIGNIFICANT) {
            worse.push(shown);
        } else if r.ratio.is_some_and(|x| x <= 1.0 / SIGNIFICANT) {
            better.push(shown);
        }
    }
    // `rows` is sorted largest change first, so the lists are too.
    let (kind, text) = match (worse.is_empty(), better.is_empty()) {
        (false, true) => (
            VerdictKind::Worse,
            format!("AFTER is worse: {}", worse.join(", ")),
        ),
        (true, false) => (
            VerdictKind::Better,
            format!("AFTER is better: {}", better.join(", ")),
        ),
        (false, false) => (
            VerdictKind::Mixed,
            format!(
                "mixed: worse {}; better {}",
                worse.join(", "),
                better.join(", ")
            ),
        ),
        (true, true) => (
            VerdictKind::Unchanged,
            format!(
                "no significant change: every time figure per second is within {:.0}% or below {} s/s",
                (SIGNIFICANT - 1.0) * 100.0,
                MIN_SECONDS_PER_SECOND
            ),
        ),
    };
    Verdict { kind, text }
}

fn cell(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    for (name, s) in [("before", &d.before), ("after", &d.after)] {
        let _ = writeln!(
            out,
            "{name:<7} {}: Linux {} (preemption model {}), {:.1} s, {} involuntary switches",
            s.file, s.kernel_release, s.preempt_model, s.duration_seconds, s.involuntary_switches
        );
    }
    out.push('\n');
    let mut t = Table::new(&[
        ("figure", Align::Left),
        ("", Align::Left),
        ("before", Align::Right),
        ("after", Align::Right),
        ("ratio", Align::Right),
    ]);
    let zero = |v: Option<f64>| v.is_none_or(|x| x == 0.0);
    let mut hidden = 0;
    for r in &d.rows {
        if zero(r.before) && zero(r.after) {
            hidden += 1;
            continue;
        }
        let ratio = if r.appeared {
            "new".to_string()
        } else {
            r.ratio
                .map(|x| format!("{}x", num(x)))
                .unwrap_or_else(|| "-".into())
        };
        t.row(vec![
            r.figure.to_string(),
            r.per.text().to_string(),
            cell(r.before),
            cell(r.after),
            ratio,
        ]);
    }
    out.push_str(&t.render());
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} rows zero or undefined in both reports not shown; --json lists them)"
        );
    }
    let _ = writeln!(out, "\nverdict: {}", d.verdict.text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::tests::sample;

    fn report(duration: f64, f: Figures) -> Report {
        let mut r = sample(duration, 1.0);
        r.totals = f;
        r
    }

    fn row<'a>(d: &'a Diff, figure: &str, per: Per) -> &'a Row {
        d.rows
            .iter()
            .find(|r| r.figure == figure && r.per == per)
            .unwrap()
    }

    #[test]
    fn normalises_per_second_and_per_involuntary_switch() {
        let before = report(
            10.0,
            Figures {
                involuntary_switches: 1000,
                waiter_delay_seconds: 0.5,
                preempted_seconds: 2.0,
                spins: 40,
                ..Default::default()
            },
        );
        // Twice as long, twice the switches: per second the switches double
        // too; waiter delay grows 8x in total, so 4x per second and 2x per switch.
        let after = report(
            20.0,
            Figures {
                involuntary_switches: 4000,
                waiter_delay_seconds: 4.0,
                preempted_seconds: 4.0,
                spins: 80,
                ..Default::default()
            },
        );
        let d = compare("b.json", &before, "a.json", &after);
        let w = row(&d, "waiter_delay_seconds", Per::Second);
        assert_eq!(
            (w.before, w.after, w.ratio),
            (Some(0.05), Some(0.2), Some(4.0))
        );
        let w = row(&d, "waiter_delay_seconds", Per::InvoluntarySwitch);
        assert_eq!(
            (w.before, w.after, w.ratio),
            (Some(0.0005), Some(0.001), Some(2.0))
        );
        let i = row(&d, "involuntary_switches", Per::Second);
        assert_eq!(i.ratio, Some(2.0));
        assert!(
            !d.rows
                .iter()
                .any(|r| r.figure == "involuntary_switches" && r.per == Per::InvoluntarySwitch),
            "switches per switch is always 1"
        );
        let s = row(&d, "spins", Per::Second);
        assert_eq!(s.ratio, Some(1.0));
        let p = row(&d, "preempted_seconds", Per::InvoluntarySwitch);
        assert_eq!(p.ratio, Some(0.5));
        // Figures zero on both sides have no ratio.
        let z = row(&d, "futex_waits", Per::Second);
        assert_eq!((z.ratio, z.appeared), (None, false));
    }

    #[test]
    fn largest_change_first_with_new_figures_on_top() {
        let before = report(
            10.0,
            Figures {
                involuntary_switches: 100,
                preempted_seconds: 1.0,
                spin_seconds: 0.0,
                waiter_delay_seconds: 1.0,
                ..Default::default()
            },
        );
        let after = report(
            10.0,
            Figures {
                involuntary_switches: 100,
                preempted_seconds: 1.5,
                spin_seconds: 0.2,
                waiter_delay_seconds: 0.1,
                ..Default::default()
            },
        );
        let d = compare("b", &before, "a", &after);
        let order: Vec<(&str, Per)> = d.rows.iter().map(|r| (r.figure, r.per)).take(6).collect();
        assert_eq!(
            order,
            vec![
                ("spin_seconds", Per::Second),
                ("spin_seconds", Per::InvoluntarySwitch),
                ("waiter_delay_seconds", Per::Second),
                ("waiter_delay_seconds", Per::InvoluntarySwitch),
                ("preempted_seconds", Per::Second),
                ("preempted_seconds", Per::InvoluntarySwitch),
            ]
        );
        assert!(d.rows[0].appeared);
        let mags: Vec<f64> = d.rows.iter().map(Row::magnitude).collect();
        assert!(mags.windows(2).all(|w| w[0] >= w[1] - 1e-9), "{mags:?}");
        // Spinning appeared, preempted time grew: worse; waiter delay shrank.
        assert_eq!(d.verdict.kind, VerdictKind::Mixed);
        assert!(
            d.verdict
                .text
                .starts_with("mixed: worse spin_seconds per second appeared"),
            "{}",
            d.verdict.text
        );
        assert!(d
            .verdict
            .text
            .contains("better waiter_delay_seconds per second 0.10x"));
        let text = render(&d);
        assert!(text.contains("spin_seconds") && text.contains("new"));
        assert!(text.lines().last().unwrap().starts_with("verdict: mixed"));
    }

    #[test]
    fn verdicts() {
        let f = |preempted: f64, waiter: f64| Figures {
            involuntary_switches: 1000,
            preempted_seconds: preempted,
            waiter_delay_seconds: waiter,
            ..Default::default()
        };
        let v =
            |b: Figures, a: Figures| compare("b", &report(10.0, b), "a", &report(10.0, a)).verdict;
        let worse = v(f(1.0, 0.1), f(2.5, 0.1));
        assert_eq!(worse.kind, VerdictKind::Worse);
        assert_eq!(
            worse.text,
            "AFTER is worse: preempted_seconds per second 2.50x"
        );
        let better = v(f(1.0, 0.1), f(1.0, 0.05));
        assert_eq!(better.kind, VerdictKind::Better);
        // Within 20%: unchanged.
        assert_eq!(v(f(1.0, 0.1), f(1.15, 0.09)).kind, VerdictKind::Unchanged);
        // Large ratios of negligible figures (below 1 ms/s) do not count.
        assert_eq!(
            v(f(1.0, 0.0001), f(1.0, 0.005)).kind,
            VerdictKind::Unchanged
        );
        // Counts alone never make a verdict: only time lost does.
        let mut more_switches = f(1.0, 0.1);
        more_switches.involuntary_switches = 5000;
        assert_eq!(v(f(1.0, 0.1), more_switches).kind, VerdictKind::Unchanged);
    }

    #[test]
    fn memory_figures_are_compared_and_stalls_judged() {
        // Every memory field of the report is a figure here.
        let names: Vec<&str> = FIGURES.iter().map(|f| f.0).collect();
        for k in crate::trace::report_json::tests::memory_fields() {
            assert!(names.contains(&k.as_str()), "{k} is not compared");
        }
        let f = |faults: u64, memcg: f64| Figures {
            involuntary_switches: 1000,
            preempted_seconds: 1.0,
            page_faults_main_shared: faults,
            page_faults_private: 100,
            reclaim_memcg_stalls: (memcg * 1000.0) as u64,
            reclaim_memcg_stall_seconds: memcg,
            ..Default::default()
        };
        // 4 kB pages after, huge pages before: 500x the shared-memory
        // faults; memcg reclaim appears at 0.05 s/s.
        let d = compare(
            "b",
            &report(10.0, f(100, 0.0)),
            "a",
            &report(10.0, f(50_000, 0.5)),
        );
        let pf = row(&d, "page_faults_main_shared", Per::Second);
        assert_eq!(
            (pf.before, pf.after, pf.ratio),
            (Some(10.0), Some(5000.0), Some(500.0))
        );
        let all = row(&d, "page_faults", Per::Second);
        assert_eq!((all.before, all.after), (Some(20.0), Some(5010.0)));
        assert_eq!(d.verdict.kind, VerdictKind::Worse);
        assert_eq!(
            d.verdict.text,
            "AFTER is worse: reclaim_memcg_stall_seconds per second appeared (0 before, 0.05 after)"
        );
        // Rows zero on both sides are left out of the text, and counted.
        let text = render(&d);
        assert!(!text.contains("numa_migrations"), "{text}");
        assert!(text.contains("page_faults_main_shared"));
        assert!(text.contains("rows zero or undefined in both reports not shown"));
    }

    #[test]
    fn the_json_form_names_every_part() {
        let d = compare("b", &sample(10.0, 1.0), "a", &sample(10.0, 2.0));
        let v: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert_eq!(v["before"]["file"], "b");
        assert_eq!(v["rows"][0]["per"], "second");
        assert!(v["rows"][0]["ratio"].as_f64().is_some());
        assert_eq!(v["verdict"]["kind"], "worse");
    }
}
