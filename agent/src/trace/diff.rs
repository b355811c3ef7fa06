//! `pgpreempt diff A.json B.json`, or several reports per side:
//! `pgpreempt diff A1.json A2.json -- B1.json B2.json`. For example the same
//! pgbench before and after a kernel upgrade.
//!
//! What changed in the environment comes first (kernel, preemption model,
//! CPUs, huge pages, PostgreSQL), then the load of each side: when it
//! differs by more than LOAD_MISMATCH the sides are different workloads, a
//! warning comes first and there is no better/worse verdict. Each key
//! figure is normalised per second of session and per involuntary switch;
//! per side, the mean over its reports and their spread (min..max). A
//! change is called only when the sides differ by more than the spread
//! within each side (and by SIGNIFICANT, above a floor); with one report
//! per side there is no spread, and only large changes (ONE_REPORT_RATIO,
//! above ten times the floor) are called.
use std::{
    collections::BTreeSet,
    fmt::Write,
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    trace::report_json::{Figures, Report},
    trace::text_table::{count, per_second, plain, ratio_change, secs, Align, Table},
};

/// A ratio at least this far from 1 (either way) can be a change.
pub const SIGNIFICANT: f64 = 1.2;
/// Time figures below this many seconds per second (1 ms/s, 0.1% of one
/// CPU) on both sides are too small to judge.
pub const MIN_SECONDS_PER_SECOND: f64 = 0.001;
/// Count figures below this many per second on both sides are too small
/// to judge.
pub const MIN_COUNT_PER_SECOND: f64 = 1.0;
/// With one report on a side there is no spread to compare with: a change
/// must be this large (either way), and its figure above ten times the
/// floors. Two back-to-back 8 s sessions of the same pgbench on a 2-CPU
/// virtual machine differed by up to 3.2x in spin time (at 2 ms/s), by 25%
/// in preempted time.
pub const ONE_REPORT_RATIO: f64 = 2.0;
/// The floors' multiplier with one report on a side.
pub const ONE_REPORT_FLOOR: f64 = 10.0;
/// Sides whose load (involuntary or voluntary switches per second, on-CPU
/// time per second) differs by more than this ratio are different
/// workloads: no verdict.
pub const LOAD_MISMATCH: f64 = 1.5;
/// A cause's share of backend time must move by at least this much (two
/// percentage points) to be named in the verdict.
pub const MIN_SHARE_CHANGE: f64 = 0.02;

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
    ("on_cpu_seconds", |f| f.on_cpu_seconds),
    ("preempted_seconds", |f| f.preempted_seconds),
    ("wakeups", |f| f.wakeups as f64),
    ("wakeup_latency_seconds", |f| f.wakeup_latency_seconds),
    figure!(wakeups_timer),
    figure!(wakeups_process),
    figure!(wakeups_other),
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

/// A figure of time (seconds), as opposed to a count.
fn is_time(figure: &str) -> bool {
    figure.ends_with("_seconds")
}

/// Why the reports of `pgpreempt diff` could not be split into two sides.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SidesError {
    #[error("diff: no reports: give BEFORE.json AFTER.json, or BEFORE.json... -- AFTER.json...")]
    NoReports,
    #[error(
        "diff: no AFTER report: give BEFORE.json AFTER.json, or BEFORE.json... -- AFTER.json..."
    )]
    NoAfter,
    #[error("diff: {0} reports and no `--`: put `--` between the BEFORE and the AFTER reports")]
    NoSeparator(usize),
    #[error("diff: no BEFORE report before `--`")]
    EmptyBefore,
    #[error("diff: no AFTER report after `--`")]
    EmptyAfter,
    #[error(
        "diff: {path} is given twice on the {side} side (a report counted twice hides the spread)"
    )]
    Twice { path: String, side: &'static str },
}

/// The two sides from the command line: `before` are the paths before `--`
/// (all of them when there is none), `after` those after it. Without `--`,
/// exactly two reports: BEFORE AFTER.
pub fn sides(
    before: Vec<PathBuf>,
    after: Vec<PathBuf>,
    separator: bool,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), SidesError> {
    let (before, after) = if separator || !after.is_empty() {
        match (before.is_empty(), after.is_empty()) {
            (true, true) => return Err(SidesError::NoReports),
            (true, false) => return Err(SidesError::EmptyBefore),
            (false, true) => return Err(SidesError::EmptyAfter),
            (false, false) => (before, after),
        }
    } else {
        match before.len() {
            0 => return Err(SidesError::NoReports),
            1 => return Err(SidesError::NoAfter),
            2 => {
                let mut b = before;
                let a = b.split_off(1);
                (b, a)
            }
            n => return Err(SidesError::NoSeparator(n)),
        }
    };
    for (paths, side) in [(&before, "BEFORE"), (&after, "AFTER")] {
        let mut seen = BTreeSet::new();
        for p in paths.iter() {
            if !seen.insert(p) {
                return Err(SidesError::Twice {
                    path: p.display().to_string(),
                    side,
                });
            }
        }
    }
    Ok((before, after))
}

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

/// One side's values of a figure: the mean over its reports and their
/// range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Reports with a value (a report with no involuntary switch has none
    /// per switch).
    pub reports: usize,
}

impl Spread {
    /// None when no report has a value.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        Some(Spread {
            mean: values.iter().sum::<f64>() / n as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            reports: n,
        })
    }

    /// max - min: zero with one report.
    pub fn width(&self) -> f64 {
        self.max - self.min
    }
}

/// How changes are told from noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseRule {
    /// Both sides have several reports: a change must exceed the spread
    /// within each side, their ranges must not overlap, and the ratio be
    /// SIGNIFICANT.
    Spread,
    /// A side has one report: no spread to compare with; a change must be
    /// ONE_REPORT_RATIO either way, above ONE_REPORT_FLOOR times the floors
    /// (and exceed the spread of a side with several reports).
    OneReport,
}

impl NoiseRule {
    fn of(before_reports: usize, after_reports: usize) -> NoiseRule {
        if before_reports >= 2 && after_reports >= 2 {
            NoiseRule::Spread
        } else {
            NoiseRule::OneReport
        }
    }

    /// Whether `b` and `a` differ by more than noise (the floor aside).
    pub fn beyond_noise(self, b: &Spread, a: &Spread) -> bool {
        let delta = (a.mean - b.mean).abs();
        if delta == 0.0 || delta <= b.width() || delta <= a.width() {
            return false;
        }
        let least = match self {
            NoiseRule::Spread => SIGNIFICANT,
            NoiseRule::OneReport => ONE_REPORT_RATIO,
        };
        let ratio_ok = if b.mean > 0.0 && a.mean > 0.0 {
            let r = a.mean / b.mean;
            r >= least || r <= 1.0 / least
        } else {
            true // from or to zero
        };
        let apart = a.min > b.max || a.max < b.min;
        ratio_ok && apart
    }

    /// The floor below which a figure (per second) is too small to judge.
    pub fn floor(self, figure: &str) -> f64 {
        let floor = if is_time(figure) {
            MIN_SECONDS_PER_SECOND
        } else {
            MIN_COUNT_PER_SECOND
        };
        match self {
            NoiseRule::Spread => floor,
            NoiseRule::OneReport => floor * ONE_REPORT_FLOOR,
        }
    }
}

/// One figure under one normalisation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub figure: &'static str,
    pub per: Per,
    /// None: nothing to normalise by (no involuntary switch in any report
    /// of that side).
    pub before: Option<Spread>,
    pub after: Option<Spread>,
    /// after / before of the means. None when it is undefined: a side is
    /// missing, or before is zero (see `appeared`).
    pub ratio: Option<f64>,
    /// Zero before, non-zero after.
    pub appeared: bool,
    /// The figure is above the floor on a side (judged on its per-second
    /// values): big enough to judge.
    pub above_floor: bool,
    /// The change is beyond noise and the figure above the floor.
    pub changed: bool,
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

    fn mean(s: Option<Spread>) -> f64 {
        s.map_or(0.0, |s| s.mean)
    }
}

/// A load figure of both sides, per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadFigure {
    pub figure: &'static str,
    pub before: Spread,
    pub after: Spread,
    /// The two means are more than LOAD_MISMATCH apart.
    pub mismatch: bool,
    /// The reports of a side are more than LOAD_MISMATCH apart among
    /// themselves.
    pub uneven: bool,
}

/// The load figures: switches and on-CPU time per second.
const LOAD: &[(&str, Getter)] = &[
    ("involuntary_switches", |f| f.involuntary_switches as f64),
    ("voluntary_switches", |f| f.voluntary_switches as f64),
    ("on_cpu_seconds", |f| f.on_cpu_seconds),
];

/// Whether two loads per second are different workloads. On-CPU time zero
/// on a side is a report written before it was counted: not compared.
fn load_mismatch(figure: &str, b: f64, a: f64) -> bool {
    if figure == "on_cpu_seconds" && (b == 0.0 || a == 0.0) {
        return false;
    }
    let (lo, hi) = (b.min(a), b.max(a));
    if hi == 0.0 {
        return false;
    }
    lo == 0.0 || hi / lo > LOAD_MISMATCH
}

/// One item of the environment, on both sides: the distinct values of its
/// reports, joined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnvItem {
    pub item: &'static str,
    pub before: String,
    pub after: String,
    /// Both known and different.
    pub changed: bool,
}

const UNKNOWN: &str = "unknown";

fn per_cluster(
    r: &Report,
    value: impl Fn(&crate::trace::report_json::ClusterJson) -> String,
) -> String {
    match r.clusters.as_slice() {
        [] => "no cluster".into(),
        [c] => value(c),
        many => many
            .iter()
            .map(|c| format!("{}: {}", c.cluster, value(c)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The environment items of one report.
fn environment_of(r: &Report) -> [(&'static str, String); 5] {
    let model = match r.kernel.preempt_dynamic {
        Some(true) => format!("{} (dynamic)", r.kernel.preempt_model),
        Some(false) => format!("{} (fixed)", r.kernel.preempt_model),
        None => r.kernel.preempt_model.clone(),
    };
    let cpus = if r.online_cpus == 0 {
        UNKNOWN.into()
    } else {
        r.online_cpus.to_string()
    };
    [
        ("kernel", r.kernel.release.clone()),
        ("preemption model", model),
        ("online CPUs", cpus),
        (
            "huge pages",
            per_cluster(r, |c| {
                c.shared_memory
                    .as_ref()
                    .map_or(UNKNOWN.into(), |m| m.huge_pages.clone())
            }),
        ),
        (
            "PostgreSQL",
            per_cluster(r, |c| c.version.clone().unwrap_or(UNKNOWN.into())),
        ),
    ]
}

fn environment(before: &[&Report], after: &[&Report]) -> Vec<EnvItem> {
    let side = |reports: &[&Report], i: usize| {
        let mut values: Vec<String> = Vec::new();
        for r in reports {
            let v = environment_of(r)[i].1.clone();
            if !values.contains(&v) {
                values.push(v);
            }
        }
        values
    };
    (0..5)
        .map(|i| {
            let (b, a) = (side(before, i), side(after, i));
            let known = |v: &[String]| !v.iter().any(|s| s.contains(UNKNOWN));
            EnvItem {
                item: environment_of(before[0])[i].0,
                changed: known(&b) && known(&a) && b != a,
                before: b.join(" | "),
                after: a.join(" | "),
            }
        })
        .collect()
}

/// One report as a side lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Source {
    pub file: String,
    pub duration_seconds: f64,
}

/// A cause of lost backend time and its share (0..1) on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CauseChange {
    pub cause: String,
    pub before: Spread,
    pub after: Spread,
    /// Moved by MIN_SHARE_CHANGE or more, beyond noise.
    pub changed: bool,
}

impl CauseChange {
    /// `cpu_saturation: 8.0% -> 31% of backend time`.
    pub fn statement(&self) -> String {
        format!(
            "{}: {} -> {} of backend time",
            self.cause,
            share(self.before.mean),
            share(self.after.mean)
        )
    }
}

/// A share of backend time: `31%`, `4.5%`, `<0.1%`.
fn share(s: f64) -> String {
    let p = s * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 0.1 {
        "<0.1%".into()
    } else if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// The causes of lost time in one report, each with its share (0..1) of the
/// backend active time (`Figures::active_seconds`), named as the
/// diagnosis's `Cause` serializes: CPU saturation is run-queue time
/// (preempted plus wakeup latency), lock-holder preemption the waiters'
/// delay, spinlock contention the time in `s_lock`, memory stalls the
/// `mmap_lock` waits, reclaim and compaction. Every cause, significant or
/// not: a cause that grew from a small share must show where it started.
/// The share of the active time each cause took in one report, as the
/// diagnosis sizes it (every cause with a size, significant or not).
pub fn causes(r: &Report) -> Vec<(String, f64)> {
    crate::diagnosis::candidates(r)
        .into_iter()
        .filter_map(|f| Some((f.cause.key().to_string(), f.share?)))
        .collect()
}

/// Per cause, its share on both sides (a cause missing from a report has a
/// share of 0 there), and whether it moved beyond noise. `before` and
/// `after` hold one list of (cause, share) per report. Largest move first.
pub fn cause_changes(
    before: &[Vec<(String, f64)>],
    after: &[Vec<(String, f64)>],
) -> Vec<CauseChange> {
    let rule = NoiseRule::of(before.len(), after.len());
    let mut names: Vec<&str> = Vec::new();
    for (c, _) in before.iter().chain(after).flatten() {
        if !names.contains(&c.as_str()) {
            names.push(c);
        }
    }
    let spread = |side: &[Vec<(String, f64)>], cause: &str| {
        let values: Vec<f64> = side
            .iter()
            .map(|r| r.iter().filter(|(c, _)| c == cause).map(|(_, s)| s).sum())
            .collect();
        Spread::of(&values)
    };
    let mut out: Vec<CauseChange> = names
        .into_iter()
        .filter_map(|cause| {
            let (b, a) = (spread(before, cause)?, spread(after, cause)?);
            Some(CauseChange {
                cause: cause.to_string(),
                changed: (a.mean - b.mean).abs() >= MIN_SHARE_CHANGE && rule.beyond_noise(&b, &a),
                before: b,
                after: a,
            })
        })
        .collect();
    out.sort_by(|x, y| {
        let m = |c: &CauseChange| (c.after.mean - c.before.mean).abs();
        m(y).total_cmp(&m(x))
    });
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKind {
    Worse,
    Better,
    Mixed,
    Unchanged,
    /// The sides carry different loads: no verdict.
    DifferentLoads,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub kind: VerdictKind,
    pub text: String,
    /// The causes whose share of backend time moved beyond noise (none
    /// when the loads differ).
    pub causes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub before: Vec<Source>,
    pub after: Vec<Source>,
    pub noise_rule: NoiseRule,
    pub environment: Vec<EnvItem>,
    pub load: Vec<LoadFigure>,
    /// Some load figure differs by more than LOAD_MISMATCH between the
    /// sides: no verdict.
    pub load_mismatch: bool,
    /// Some load figure differs by more than LOAD_MISMATCH between the
    /// reports of a side: a note (their spread is wide, so fewer changes
    /// are called), not a mismatch.
    pub uneven_load: bool,
    /// Changed rows first, then those above the floor, each by the largest
    /// change.
    pub rows: Vec<Row>,
    /// Per cause, its share of backend time on both sides.
    pub causes: Vec<CauseChange>,
    pub verdict: Verdict,
}

/// `value` per `by`, None when `by` is zero.
fn per(value: f64, by: f64) -> Option<f64> {
    (by > 0.0).then(|| value / by)
}

fn normalised(reports: &[&Report], get: Getter, p: Per) -> Option<Spread> {
    let values: Vec<f64> = reports
        .iter()
        .filter_map(|r| {
            let by = match p {
                Per::Second => r.duration_seconds,
                Per::InvoluntarySwitch => r.totals.involuntary_switches as f64,
            };
            per(get(&r.totals), by)
        })
        .collect();
    Spread::of(&values)
}

/// Compares the reports of two sides (each a list of (file, report), at
/// least one).
pub fn compare(before: &[(&str, &Report)], after: &[(&str, &Report)]) -> Diff {
    assert!(
        !before.is_empty() && !after.is_empty(),
        "a side with no report"
    );
    let b: Vec<&Report> = before.iter().map(|x| x.1).collect();
    let a: Vec<&Report> = after.iter().map(|x| x.1).collect();
    let rule = NoiseRule::of(b.len(), a.len());

    let load: Vec<LoadFigure> = LOAD
        .iter()
        .filter_map(|&(figure, get)| {
            let (bs, as_) = (
                normalised(&b, get, Per::Second)?,
                normalised(&a, get, Per::Second)?,
            );
            Some(LoadFigure {
                figure,
                mismatch: load_mismatch(figure, bs.mean, as_.mean),
                uneven: load_mismatch(figure, bs.min, bs.max)
                    || load_mismatch(figure, as_.min, as_.max),
                before: bs,
                after: as_,
            })
        })
        .collect();
    let mismatch = load.iter().any(|l| l.mismatch);
    let uneven = load.iter().any(|l| l.uneven);

    let mut rows = Vec::new();
    for &(figure, get) in FIGURES {
        let floor_ok = {
            let (bs, as_) = (
                normalised(&b, get, Per::Second),
                normalised(&a, get, Per::Second),
            );
            Row::mean(bs).max(Row::mean(as_)) >= rule.floor(figure)
        };
        for p in [Per::Second, Per::InvoluntarySwitch] {
            if p == Per::InvoluntarySwitch && figure == "involuntary_switches" {
                continue;
            }
            let (bs, as_) = (normalised(&b, get, p), normalised(&a, get, p));
            let (ratio, appeared) = match (bs, as_) {
                (Some(x), Some(y)) if x.mean > 0.0 => (Some(y.mean / x.mean), false),
                (Some(_), Some(y)) => (None, y.mean > 0.0),
                _ => (None, false),
            };
            let changed = match (&bs, &as_) {
                (Some(x), Some(y)) => floor_ok && rule.beyond_noise(x, y),
                _ => false,
            };
            rows.push(Row {
                figure,
                per: p,
                before: bs,
                after: as_,
                ratio,
                appeared,
                above_floor: floor_ok,
                changed,
            });
        }
    }
    // Stable: ties (to rounding error) keep the order of FIGURES.
    let key = |r: &Row| {
        let m = r.magnitude();
        let m = if m.is_finite() {
            (m * 1e9).round() / 1e9
        } else {
            m
        };
        (r.changed, r.above_floor, m)
    };
    rows.sort_by(|x, y| {
        let (kx, ky) = (key(x), key(y));
        ky.0.cmp(&kx.0)
            .then(ky.1.cmp(&kx.1))
            .then(ky.2.total_cmp(&kx.2))
    });

    let causes = cause_changes(
        &b.iter().map(|r| causes(r)).collect::<Vec<_>>(),
        &a.iter().map(|r| causes(r)).collect::<Vec<_>>(),
    );
    let verdict = verdict(&rows, &causes, rule, mismatch);
    let sources = |side: &[(&str, &Report)]| {
        side.iter()
            .map(|(f, r)| Source {
                file: f.to_string(),
                duration_seconds: r.duration_seconds,
            })
            .collect()
    };
    Diff {
        before: sources(before),
        after: sources(after),
        noise_rule: rule,
        environment: environment(&b, &a),
        load,
        load_mismatch: mismatch,
        uneven_load: uneven,
        rows,
        causes,
        verdict,
    }
}

/// Reads the reports of both sides and compares them.
pub fn compare_files(
    before: &[PathBuf],
    after: &[PathBuf],
) -> Result<Diff, crate::trace::report_json::ReadError> {
    let read = |paths: &[PathBuf]| {
        paths
            .iter()
            .map(|p| Ok((p.display().to_string(), Report::read(Path::new(p))?)))
            .collect::<Result<Vec<(String, Report)>, crate::trace::report_json::ReadError>>()
    };
    let (b, a) = (read(before)?, read(after)?);
    Ok(compare(&refs(&b), &refs(&a)))
}

fn refs(v: &[(String, Report)]) -> Vec<(&str, &Report)> {
    v.iter().map(|(f, r)| (f.as_str(), r)).collect()
}

/// A value of a figure in its unit: time per second as `12.5 ms/s`, time
/// per switch as `56µs`, counts per second as `1,234/s`, counts per switch
/// as a plain number.
fn value(figure: &str, p: Per, v: f64) -> String {
    match (is_time(figure), p) {
        (true, Per::Second) => ms_per_second(v),
        (true, Per::InvoluntarySwitch) => secs(v),
        (false, Per::Second) => per_second(v),
        (false, Per::InvoluntarySwitch) => plain(v),
    }
}

/// Seconds per second as milliseconds per second: `12.5 ms/s`, `1,250
/// ms/s`, `0.63 ms/s`, `<0.01 ms/s`.
pub fn ms_per_second(v: f64) -> String {
    let ms = v * 1e3;
    let a = ms.abs();
    let n = if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        count(a.round() as u64)
    } else if a >= 10.0 {
        format!("{a:.1}")
    } else if a >= 0.01 {
        format!("{a:.2}")
    } else {
        "<0.01".into()
    };
    format!("{n} ms/s")
}

/// `lo..hi` in one unit when both share it: `512..548 ms/s`.
fn range(lo: &str, hi: &str) -> String {
    let unit_at = hi
        .rfind(|c: char| c.is_ascii_digit())
        .map_or(hi.len(), |i| i + 1);
    let unit = &hi[unit_at..];
    match lo.strip_suffix(unit) {
        Some(l) if !unit.is_empty() && l.ends_with(|c: char| c.is_ascii_digit()) => {
            format!("{}..{hi}", l.trim_end())
        }
        _ => format!("{lo}..{hi}"),
    }
}

fn spread_cells(figure: &str, p: Per, s: Option<Spread>) -> (String, String) {
    match s {
        None => ("-".into(), String::new()),
        Some(s) => {
            let mean = value(figure, p, s.mean);
            let r = if s.reports >= 2 {
                range(&value(figure, p, s.min), &value(figure, p, s.max))
            } else {
                String::new()
            };
            (mean, r)
        }
    }
}

fn change_cell(r: &Row) -> String {
    if r.appeared {
        "new".into()
    } else {
        r.ratio.map(ratio_change).unwrap_or_else(|| "-".into())
    }
}

/// `preempted_seconds +150% (530 -> 1,325 ms/s)`.
fn shown(r: &Row) -> String {
    let (b, a) = (Row::mean(r.before), Row::mean(r.after));
    format!(
        "{} {} ({} -> {})",
        r.figure,
        change_cell(r),
        ms_per_second(b).trim_end_matches(" ms/s"),
        ms_per_second(a)
    )
}

/// Judges the time figures per second that changed beyond noise: worse if
/// one grew, better if one shrank, mixed if both; no verdict when the
/// loads differ.
pub fn verdict(rows: &[Row], causes: &[CauseChange], rule: NoiseRule, mismatch: bool) -> Verdict {
    if mismatch {
        return Verdict {
            kind: VerdictKind::DifferentLoads,
            text: "none: the two sides carry different loads (see the warning at the top), so this compares different workloads; run the same benchmark on both sides".into(),
            causes: Vec::new(),
        };
    }
    let mut worse = Vec::new();
    let mut better = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.per == Per::Second && r.changed && HARM.contains(&r.figure))
    {
        if Row::mean(r.after) > Row::mean(r.before) {
            worse.push(shown(r));
        } else {
            better.push(shown(r));
        }
    }
    let noise = match rule {
        NoiseRule::Spread => format!(
            "by more than the spread within each side and {:.1}x",
            SIGNIFICANT
        ),
        NoiseRule::OneReport => format!(
            "by {:.1}x or more either way (one report per side)",
            ONE_REPORT_RATIO
        ),
    };
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
                "no change: no time figure of {} or more moved {noise}",
                ms_per_second(rule.floor("x_seconds"))
            ),
        ),
    };
    Verdict {
        kind,
        text,
        causes: causes
            .iter()
            .filter(|c| c.changed)
            .map(CauseChange::statement)
            .collect(),
    }
}

fn load_value(figure: &str, v: f64) -> String {
    if figure == "on_cpu_seconds" {
        if v > 0.0 && v < 0.005 {
            "<0.01 CPUs".into()
        } else {
            format!("{v:.2} CPUs")
        }
    } else {
        per_second(v)
    }
}

fn load_name(figure: &str) -> &str {
    match figure {
        "involuntary_switches" => "involuntary switches",
        "voluntary_switches" => "voluntary switches",
        "on_cpu_seconds" => "on CPU",
        other => other,
    }
}

fn files(s: &[Source]) -> String {
    let total: f64 = s.iter().map(|x| x.duration_seconds).sum();
    let names: Vec<&str> = s.iter().map(|x| x.file.as_str()).collect();
    let n = s.len();
    format!(
        "{} report{} ({:.1} s): {}",
        n,
        if n == 1 { "" } else { "s" },
        total,
        names.join(", ")
    )
}

pub fn render(d: &Diff) -> String {
    let mut out = String::new();
    if d.load_mismatch {
        let what: Vec<String> = d
            .load
            .iter()
            .filter(|l| l.mismatch)
            .map(|l| {
                format!(
                    "{} {} before, {} after",
                    load_name(l.figure),
                    load_value(l.figure, l.before.mean),
                    load_value(l.figure, l.after.mean)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "WARNING: different loads ({}; more than {:.1}x apart): this compares different workloads, no verdict.\n",
            what.join("; "),
            LOAD_MISMATCH
        );
    }
    if d.uneven_load {
        let mut what: Vec<String> = Vec::new();
        for l in d.load.iter().filter(|l| l.uneven) {
            for (side, s) in [("BEFORE", &l.before), ("AFTER", &l.after)] {
                if load_mismatch(l.figure, s.min, s.max) {
                    what.push(format!(
                        "{} {} among the {side} reports",
                        load_name(l.figure),
                        range(&load_value(l.figure, s.min), &load_value(l.figure, s.max))
                    ));
                }
            }
        }
        let _ = writeln!(
            out,
            "note: uneven load within a side ({}; more than {:.1}x apart): the spread is wide, so only large changes are called; keep the benchmark and the rest of the host the same between sessions.\n",
            what.join("; "),
            LOAD_MISMATCH
        );
    }
    let _ = writeln!(out, "before  {}", files(&d.before));
    let _ = writeln!(out, "after   {}", files(&d.after));
    out.push('\n');

    let mut t = Table::new(&[
        ("environment", Align::Left),
        ("before", Align::Left),
        ("after", Align::Left),
        ("", Align::Left),
    ]);
    for e in &d.environment {
        t.row(vec![
            e.item.to_string(),
            e.before.clone(),
            e.after.clone(),
            if e.changed {
                "changed".into()
            } else {
                String::new()
            },
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');

    let several = d.before.len() >= 2 || d.after.len() >= 2;
    let columns = |first: &'static str| {
        let mut c = vec![
            (first, Align::Left),
            ("", Align::Left),
            ("before", Align::Right),
        ];
        if several {
            c.push(("(min..max)", Align::Right));
        }
        c.push(("after", Align::Right));
        if several {
            c.push(("(min..max)", Align::Right));
        }
        c.push(("change", Align::Right));
        c
    };
    let mut t = Table::new(&[columns("load"), vec![("", Align::Left)]].concat());
    for l in &d.load {
        let cell = |s: &Spread| {
            let r = if s.reports >= 2 {
                range(&load_value(l.figure, s.min), &load_value(l.figure, s.max))
            } else {
                String::new()
            };
            (load_value(l.figure, s.mean), r)
        };
        let ((bm, br), (am, ar)) = (cell(&l.before), cell(&l.after));
        let mut row = vec![load_name(l.figure).to_string(), "per second".into(), bm];
        if several {
            row.push(br);
        }
        row.push(am);
        if several {
            row.push(ar);
        }
        row.push(if l.before.mean > 0.0 {
            ratio_change(l.after.mean / l.before.mean)
        } else {
            "-".into()
        });
        row.push(if l.mismatch {
            "MISMATCH".into()
        } else if l.uneven {
            "UNEVEN".into()
        } else {
            String::new()
        });
        t.row(row);
    }
    out.push_str(&t.render());
    out.push('\n');

    if d.noise_rule == NoiseRule::OneReport {
        let _ = writeln!(
            out,
            "one report per side: no spread to tell noise by. Changes below {} either way, or under {} (time) and {} (counts), are within run-to-run noise on this kind of machine and are not called; take 2-3 reports per side: pgpreempt diff A1.json A2.json -- B1.json B2.json\n",
            ratio_change(ONE_REPORT_RATIO),
            ms_per_second(NoiseRule::OneReport.floor("x_seconds")),
            per_second(NoiseRule::OneReport.floor("x")),
        );
    }

    let mut t = Table::new(&[columns("figure"), vec![("call", Align::Left)]].concat());
    let zero = |v: Option<Spread>| v.is_none_or(|x| x.max == 0.0 && x.min == 0.0);
    let mut hidden = 0;
    for r in &d.rows {
        if zero(r.before) && zero(r.after) {
            hidden += 1;
            continue;
        }
        let (bm, br) = spread_cells(r.figure, r.per, r.before);
        let (am, ar) = spread_cells(r.figure, r.per, r.after);
        let mut row = vec![r.figure.to_string(), r.per.text().to_string(), bm];
        if several {
            row.push(br);
        }
        row.push(am);
        if several {
            row.push(ar);
        }
        row.push(change_cell(r));
        let call = if !r.changed {
            ""
        } else if !HARM.contains(&r.figure) || d.load_mismatch {
            "changed"
        } else if Row::mean(r.after) > Row::mean(r.before) {
            "worse"
        } else {
            "better"
        };
        row.push(call.into());
        t.row(row);
    }
    out.push_str(&t.render());
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} rows zero or undefined in every report not shown; --json lists them)"
        );
    }
    let _ = writeln!(out, "\nverdict: {}", d.verdict.text);
    for c in &d.verdict.causes {
        let _ = writeln!(out, "  {c}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::tests::sample;

    fn report(duration: f64, f: Figures) -> Report {
        let mut r = sample(duration, 1.0);
        r.totals = f;
        r.backend_types[0].figures = f;
        r
    }

    fn one(b: &Report, a: &Report) -> Diff {
        compare(&[("b.json", b)], &[("a.json", a)])
    }

    fn many(b: &[Report], a: &[Report]) -> Diff {
        compare(&side(b), &side(a))
    }

    fn side(v: &[Report]) -> Vec<(&str, &Report)> {
        v.iter().map(|r| ("r.json", r)).collect()
    }

    fn row<'a>(d: &'a Diff, figure: &str, per: Per) -> &'a Row {
        d.rows
            .iter()
            .find(|r| r.figure == figure && r.per == per)
            .unwrap()
    }

    fn mean(s: Option<Spread>) -> Option<f64> {
        s.map(|s| s.mean)
    }

    /// A pgbench-like load: 2,000 involuntary and 5,000 voluntary switches
    /// per second, 1.8 CPUs busy, 10 s; `preempted` and `waiter` seconds.
    fn load(preempted: f64, waiter: f64) -> Figures {
        Figures {
            involuntary_switches: 20_000,
            voluntary_switches: 50_000,
            on_cpu_seconds: 18.0,
            preempted_seconds: preempted,
            waiter_delay_seconds: waiter,
            futex_wait_seconds: 1.0,
            ..Default::default()
        }
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
        let d = one(&before, &after);
        let w = row(&d, "waiter_delay_seconds", Per::Second);
        assert_eq!(
            (mean(w.before), mean(w.after), w.ratio),
            (Some(0.05), Some(0.2), Some(4.0))
        );
        let w = row(&d, "waiter_delay_seconds", Per::InvoluntarySwitch);
        assert_eq!(
            (mean(w.before), mean(w.after), w.ratio),
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
        assert_eq!(row(&d, "spins", Per::Second).ratio, Some(1.0));
        assert_eq!(
            row(&d, "preempted_seconds", Per::InvoluntarySwitch).ratio,
            Some(0.5)
        );
        // Figures zero on both sides have no ratio.
        let z = row(&d, "futex_waits", Per::Second);
        assert_eq!((z.ratio, z.appeared), (None, false));
    }

    #[test]
    fn spreads_are_mean_min_and_max_per_side() {
        let d = many(
            &[report(10.0, load(5.0, 0.1)), report(10.0, load(6.0, 0.1))],
            &[report(10.0, load(5.5, 0.1)), report(20.0, load(9.0, 0.2))],
        );
        let p = row(&d, "preempted_seconds", Per::Second);
        let b = p.before.unwrap();
        assert!((b.mean - 0.55).abs() < 1e-12 && b.min == 0.5 && b.max == 0.6);
        assert_eq!(b.reports, 2);
        let a = p.after.unwrap();
        assert!((a.mean - 0.5).abs() < 1e-12 && a.min == 0.45 && a.max == 0.55);
        assert_eq!(d.noise_rule, NoiseRule::Spread);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn the_same_run_twice_per_side_is_no_change() {
        // Back to back, the same pgbench: preempted time 5.0..6.5 s, spin
        // time 2..6 ms/s (3x apart, small counts): every difference
        // between the sides is within the spread of a side.
        let r = |p: f64, spin: f64, w: f64| {
            let mut f = load(p, w);
            f.spin_seconds = spin;
            f.spins = (spin * 10_000.0) as u64;
            report(10.0, f)
        };
        let d = many(
            &[r(5.0, 0.02, 0.30), r(6.5, 0.06, 0.36)],
            &[r(6.0, 0.05, 0.28), r(5.2, 0.03, 0.33)],
        );
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged, "{}", d.verdict.text);
        assert!(
            d.verdict.text.starts_with("no change"),
            "{}",
            d.verdict.text
        );
        assert!(d.rows.iter().all(|r| !r.changed), "{:?}", d.rows[0]);
        assert!(!d.load_mismatch);
        let text = render(&d);
        assert!(text.contains("verdict: no change"), "{text}");
        assert!(text.contains("(min..max)"), "{text}");
        assert!(!text.contains("one report per side"), "{text}");
    }

    #[test]
    fn a_change_beyond_the_spread_is_called() {
        let d = many(
            &[
                report(10.0, load(5.0, 0.30)),
                report(10.0, load(5.5, 0.33)),
                report(10.0, load(5.2, 0.31)),
            ],
            &[
                report(10.0, load(12.0, 0.30)),
                report(10.0, load(13.0, 0.34)),
            ],
        );
        let p = row(&d, "preempted_seconds", Per::Second);
        assert!(p.changed);
        assert!(!row(&d, "waiter_delay_seconds", Per::Second).changed);
        assert_eq!(d.verdict.kind, VerdictKind::Worse);
        assert_eq!(
            d.verdict.text,
            "AFTER is worse: preempted_seconds 2.4x (523 -> 1,250 ms/s)"
        );
        // Changed rows on top.
        assert!(d.rows[0].changed);
        // CPU saturation (run-queue) share: 5.23 / (18 + 5.23 + 1) = 22% -> 12.5 / 31.5 = 40%.
        assert_eq!(
            d.verdict.causes,
            vec!["cpu_saturation: 22% -> 40% of backend time".to_string()]
        );
        let text = render(&d);
        assert!(text.contains("verdict: AFTER is worse"), "{text}");
        assert!(
            text.contains("  cpu_saturation: 22% -> 40% of backend time"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("preempted_seconds") && l.contains("per second"))
            .unwrap();
        assert!(
            line.contains("523 ms/s") && line.contains("500..550 ms/s"),
            "{line}"
        );
        assert!(line.ends_with("worse"), "{line}");

        // The same means, but a side whose spread covers the difference.
        let d = many(
            &[report(10.0, load(5.0, 0.3)), report(10.0, load(12.0, 0.3))],
            &[report(10.0, load(12.0, 0.3)), report(10.0, load(13.0, 0.3))],
        );
        assert!(!row(&d, "preempted_seconds", Per::Second).changed);
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged);
        // And better: shrinking beyond the spread.
        let d = many(
            &[report(10.0, load(12.0, 0.3)), report(10.0, load(13.0, 0.3))],
            &[report(10.0, load(5.0, 0.3)), report(10.0, load(5.5, 0.3))],
        );
        assert_eq!(d.verdict.kind, VerdictKind::Better, "{}", d.verdict.text);
    }

    #[test]
    fn floors_and_ratio_still_hold_with_spread() {
        // Beyond the spread but below 1 ms/s: not judged.
        let d = many(
            &[
                report(10.0, load(5.0, 0.001)),
                report(10.0, load(5.0, 0.0011)),
            ],
            &[
                report(10.0, load(5.0, 0.005)),
                report(10.0, load(5.0, 0.0051)),
            ],
        );
        assert!(!row(&d, "waiter_delay_seconds", Per::Second).changed);
        // Beyond a tight spread but within 20%: not a change.
        let d = many(
            &[report(10.0, load(5.0, 0.3)), report(10.0, load(5.01, 0.3))],
            &[report(10.0, load(5.5, 0.3)), report(10.0, load(5.51, 0.3))],
        );
        assert!(!row(&d, "preempted_seconds", Per::Second).changed);
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged);
    }

    #[test]
    fn one_report_per_side_says_so_and_is_conservative() {
        // +60%: a change with spreads, noise with one report per side.
        let d = one(&report(10.0, load(5.0, 0.3)), &report(10.0, load(8.0, 0.3)));
        assert_eq!(d.noise_rule, NoiseRule::OneReport);
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged, "{}", d.verdict.text);
        let text = render(&d);
        assert!(
            text.contains("one report per side: no spread to tell noise by. Changes below 2.0x either way, or under 10.0 ms/s (time) and 10.0/s (counts), are within run-to-run noise on this kind of machine"),
            "{text}"
        );
        assert!(text.contains("take 2-3 reports per side"), "{text}");
        assert!(!text.contains("(min..max)"), "{text}");
        // 2.5x is called.
        let d = one(
            &report(10.0, load(5.0, 0.3)),
            &report(10.0, load(12.5, 0.3)),
        );
        assert_eq!(d.verdict.kind, VerdictKind::Worse);
        assert_eq!(
            d.verdict.text,
            "AFTER is worse: preempted_seconds 2.5x (500 -> 1,250 ms/s)"
        );
        // But not under 10 ms/s.
        let d = one(
            &report(10.0, load(5.0, 0.01)),
            &report(10.0, load(5.0, 0.08)),
        );
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged);
        // A time figure that appeared from zero, above 10 ms/s.
        let mut f = load(5.0, 0.3);
        f.reclaim_memcg_stall_seconds = 0.5;
        f.reclaim_memcg_stalls = 500;
        let d = one(&report(10.0, load(5.0, 0.3)), &report(10.0, f));
        assert_eq!(d.verdict.kind, VerdictKind::Worse);
        assert_eq!(
            d.verdict.text,
            "AFTER is worse: reclaim_memcg_stall_seconds new (0 -> 50.0 ms/s)"
        );
        // One report on one side, several on the other: still conservative,
        // and the other side's spread counts.
        let d = compare(
            &[
                ("b", &report(10.0, load(5.0, 0.3))),
                ("b2", &report(10.0, load(5.2, 0.3))),
            ],
            &[("a", &report(10.0, load(8.0, 0.3)))],
        );
        assert_eq!(d.noise_rule, NoiseRule::OneReport);
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged);
    }

    #[test]
    fn different_loads_warn_first_and_give_no_verdict() {
        // A loaded run against an idle one: 2,000 against 2.1 involuntary
        // switches per second.
        let idle = Figures {
            involuntary_switches: 21,
            voluntary_switches: 400,
            on_cpu_seconds: 0.02,
            preempted_seconds: 0.001,
            futex_wait_seconds: 0.0,
            ..Default::default()
        };
        let d = one(&report(10.0, load(5.0, 0.3)), &report(10.0, idle));
        assert!(d.load_mismatch);
        assert_eq!(d.verdict.kind, VerdictKind::DifferentLoads);
        assert!(d.verdict.causes.is_empty());
        let text = render(&d);
        assert!(
            text.starts_with("WARNING: different loads (involuntary switches 2,000/s before, 2.10/s after; voluntary switches 5,000/s before, 40.0/s after; on CPU 1.80 CPUs before, <0.01 CPUs after; more than 1.5x apart)"),
            "{text}"
        );
        assert!(
            text.contains("verdict: none: the two sides carry different loads"),
            "{text}"
        );
        assert!(
            !text.contains(" worse") && !text.contains(" better"),
            "{text}"
        );
        // 1.6x the switches is a mismatch too; 1.4x is not.
        let mut more = load(5.0, 0.3);
        more.involuntary_switches = 32_000;
        assert!(one(&report(10.0, load(5.0, 0.3)), &report(10.0, more)).load_mismatch);
        more.involuntary_switches = 28_000;
        assert!(!one(&report(10.0, load(5.0, 0.3)), &report(10.0, more)).load_mismatch);
        // The same mean, but the reports of a side far apart: uneven, a
        // note; their spread keeps changes from being called.
        let (mut lo, mut hi) = (load(5.0, 0.3), load(5.0, 0.3));
        lo.involuntary_switches = 12_000;
        hi.involuntary_switches = 28_000;
        let d = many(
            &[report(10.0, load(5.0, 0.3)), report(10.0, load(5.0, 0.3))],
            &[report(10.0, lo), report(10.0, hi)],
        );
        assert!(!d.load_mismatch && d.uneven_load && d.load[0].uneven);
        assert_eq!(d.verdict.kind, VerdictKind::Unchanged);
        let text = render(&d);
        assert!(
            text.starts_with("note: uneven load within a side (involuntary switches 1,200..2,800/s among the AFTER reports; more than 1.5x apart): the spread is wide"),
            "{text}"
        );
        assert!(text.contains("UNEVEN"), "{text}");
        // On-CPU time zero on a side (an older report) is not compared.
        let mut old = load(5.0, 0.3);
        old.on_cpu_seconds = 0.0;
        let d = one(&report(10.0, load(5.0, 0.3)), &report(10.0, old));
        assert!(!d.load_mismatch);
        assert!(load_mismatch("on_cpu_seconds", 1.0, 2.0));
        assert!(!load_mismatch("voluntary_switches", 0.0, 0.0));
        assert!(load_mismatch("voluntary_switches", 0.0, 3.0));
    }

    #[test]
    fn the_environment_comes_first_and_changes_are_marked() {
        let b = report(10.0, load(5.0, 0.3));
        let mut a = report(10.0, load(5.0, 0.3));
        a.kernel.release = "7.0.0".into();
        a.kernel.preempt_model = "lazy".into();
        a.kernel.preempt_dynamic = Some(true);
        a.online_cpus = 4;
        a.clusters[0].shared_memory.as_mut().unwrap().huge_pages = "on".into();
        a.clusters[0].version = Some("17".into());
        let d = one(&b, &a);
        let items: Vec<(&str, &str, &str, bool)> = d
            .environment
            .iter()
            .map(|e| (e.item, e.before.as_str(), e.after.as_str(), e.changed))
            .collect();
        assert_eq!(
            items,
            vec![
                ("kernel", "6.18.0", "7.0.0", true),
                ("preemption model", "none (fixed)", "lazy (dynamic)", true),
                ("online CPUs", "2", "4", true),
                ("huge pages", "off", "on", true),
                ("PostgreSQL", "15", "17", true),
            ]
        );
        let text = render(&d);
        let env = text.find("environment").unwrap();
        assert!(env < text.find("figure").unwrap());
        assert!(
            text.contains("kernel            6.18.0        7.0.0           changed"),
            "{text}"
        );
        // Unknown (an older report) is not a change; two values on a side
        // are both shown.
        let mut old = report(10.0, load(5.0, 0.3));
        old.online_cpus = 0;
        old.clusters[0].shared_memory = None;
        let d = compare(&[("b", &b), ("b2", &a)], &[("a", &old)]);
        let e = |name: &str| {
            d.environment
                .iter()
                .find(|e| e.item == name)
                .unwrap()
                .clone()
        };
        assert_eq!(e("online CPUs").after, "unknown");
        assert!(!e("online CPUs").changed);
        assert_eq!(e("kernel").before, "6.18.0 | 7.0.0");
        assert!(e("kernel").changed);
        assert_eq!(e("huge pages").after, "unknown");
        // Several clusters are named.
        let mut two = report(10.0, load(5.0, 0.3));
        let mut c = two.clusters[0].clone();
        c.cluster = "/other".into();
        c.version = Some("16".into());
        two.clusters.push(c);
        assert_eq!(environment_of(&two)[4].1, "/data: 15, /other: 16");
    }

    #[test]
    fn causes_are_shares_of_backend_time() {
        let mut f = load(4.0, 0.5);
        f.wakeup_latency_seconds = 1.0;
        f.spins = 10;
        f.spin_seconds = 0.25;
        f.compaction_stall_seconds = 0.25;
        // active: 18 on CPU + 5 run queue + 1 futex = 24 s.
        let c = causes(&report(10.0, f));
        let get = |n: &str| c.iter().find(|x| x.0 == n).unwrap().1;
        assert!((get("cpu_saturation") - 5.0 / 24.0).abs() < 1e-12);
        assert!((get("lock_holder_preemption") - 0.5 / 24.0).abs() < 1e-12);
        assert!((get("spinlock_contention") - 0.25 / 24.0).abs() < 1e-12);
        assert!((get("memory_stalls") - 0.25 / 24.0).abs() < 1e-12);
        assert!(causes(&report(10.0, Figures::default())).is_empty());
    }

    #[test]
    fn cause_changes_say_which_cause_grew_from_what_to_what() {
        let side = |shares: &[f64]| -> Vec<Vec<(String, f64)>> {
            shares
                .iter()
                .map(|&s| {
                    vec![
                        ("cpu_saturation".to_string(), s),
                        ("spinlock".to_string(), 0.01),
                    ]
                })
                .collect()
        };
        let c = cause_changes(&side(&[0.07, 0.09]), &side(&[0.30, 0.32]));
        assert_eq!(c[0].cause, "cpu_saturation");
        assert!(c[0].changed);
        assert_eq!(
            c[0].statement(),
            "cpu_saturation: 8.0% -> 31% of backend time"
        );
        assert!(!c[1].changed);
        // Within the spread: not a change.
        let c = cause_changes(&side(&[0.05, 0.30]), &side(&[0.28, 0.32]));
        assert!(!c[0].changed);
        // A cause only one side has counts as 0 on the other.
        let b = vec![vec![]];
        let a = vec![vec![("memory".to_string(), 0.4)]];
        let c = cause_changes(&b, &a);
        assert_eq!(c[0].before.mean, 0.0);
        assert!(c[0].changed);
        assert_eq!(c[0].statement(), "memory: 0% -> 40% of backend time");
    }

    #[test]
    fn no_scientific_notation_at_any_magnitude() {
        let sci = |s: &str| {
            let b = s.as_bytes();
            (1..b.len().saturating_sub(1)).any(|i| {
                (b[i] == b'e' || b[i] == b'E')
                    && b[i - 1].is_ascii_digit()
                    && (b[i + 1] == b'-' || b[i + 1] == b'+' || b[i + 1].is_ascii_digit())
            })
        };
        assert!(sci("9.28e-4x") && sci("1e5") && !sci("page_faults 12/s"));
        let mut scale = 1e-9;
        while scale < 1e9 {
            let f = |k: f64| {
                let mut x = sample(10.0, 1.0).totals;
                x.involuntary_switches = (2.0e4 * k).max(1.0) as u64;
                x.voluntary_switches = (5.0e4 * k) as u64;
                x.on_cpu_seconds = 18.0 * k;
                x.preempted_seconds = 5.0 * k;
                x.spin_seconds = 0.002 * k;
                x.spins = (20.0 * k) as u64;
                x.holder_preemptions = (22_620.0 * k) as u64;
                x.page_faults_main_shared = (1e7 * k) as u64;
                x
            };
            for d in [
                one(&report(10.0, f(scale)), &report(10.0, f(1.0))),
                one(&report(10.0, f(1.0)), &report(10.0, f(scale))),
                many(
                    &[report(10.0, f(scale)), report(10.0, f(scale * 1.1))],
                    &[report(10.0, f(scale * 3.7)), report(7.0, f(scale * 0.2))],
                ),
            ] {
                let text = render(&d);
                for line in text.lines() {
                    assert!(!sci(line), "scientific notation at scale {scale}: {line}");
                }
            }
            scale *= 7.3;
        }
    }

    #[test]
    fn figures_zero_everywhere_are_left_out_of_the_text() {
        let names: Vec<&str> = FIGURES.iter().map(|f| f.0).collect();
        for k in crate::trace::report_json::tests::memory_fields() {
            assert!(names.contains(&k.as_str()), "{k} is not compared");
        }
        let d = one(&report(10.0, load(5.0, 0.3)), &report(10.0, load(5.0, 0.3)));
        let text = render(&d);
        assert!(!text.contains("numa_migrations"), "{text}");
        assert!(text.contains("preempted_seconds"));
        assert!(text.contains("rows zero or undefined in every report not shown"));
    }

    #[test]
    fn sides_from_the_command_line() {
        let p = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            sides(p(&["a", "b"]), vec![], false),
            Ok((p(&["a"]), p(&["b"])))
        );
        assert_eq!(
            sides(p(&["a1", "a2"]), p(&["b1", "b2", "b3"]), true),
            Ok((p(&["a1", "a2"]), p(&["b1", "b2", "b3"])))
        );
        assert_eq!(
            sides(p(&["a"]), p(&["b"]), true),
            Ok((p(&["a"]), p(&["b"])))
        );
        assert_eq!(sides(vec![], vec![], false), Err(SidesError::NoReports));
        assert_eq!(sides(p(&["a"]), vec![], false), Err(SidesError::NoAfter));
        assert_eq!(
            sides(p(&["a", "b", "c"]), vec![], false),
            Err(SidesError::NoSeparator(3))
        );
        assert_eq!(
            sides(p(&["a", "b"]), vec![], true),
            Err(SidesError::EmptyAfter)
        );
        assert_eq!(sides(vec![], p(&["b"]), true), Err(SidesError::EmptyBefore));
        assert_eq!(
            sides(p(&["a", "a"]), p(&["b"]), true),
            Err(SidesError::Twice {
                path: "a".into(),
                side: "BEFORE"
            })
        );
        // The same report on both sides is allowed (a report against itself).
        assert!(sides(p(&["a", "a"]), vec![], false).is_ok());
        for e in [
            SidesError::NoReports,
            SidesError::NoAfter,
            SidesError::NoSeparator(3),
            SidesError::EmptyBefore,
            SidesError::EmptyAfter,
        ] {
            let s = e.to_string();
            assert!(s.starts_with("diff: ") && !s.contains('\n'), "{s}");
        }
    }

    #[test]
    fn units_of_the_rows() {
        assert_eq!(ms_per_second(0.0125), "12.5 ms/s");
        assert_eq!(ms_per_second(1.25), "1,250 ms/s");
        assert_eq!(ms_per_second(0.00063), "0.63 ms/s");
        assert_eq!(ms_per_second(1e-9), "<0.01 ms/s");
        assert_eq!(value("spins", Per::Second, 2262.4), "2,262/s");
        assert_eq!(value("spins", Per::InvoluntarySwitch, 0.000_332), "0.00033");
        assert_eq!(
            value("spin_seconds", Per::InvoluntarySwitch, 8.75e-8),
            "88ns"
        );
        assert_eq!(range("512 ms/s", "548 ms/s"), "512..548 ms/s");
        assert_eq!(range("1,200/s", "1,234/s"), "1,200..1,234/s");
        assert_eq!(range("56µs", "1.2ms"), "56µs..1.2ms");
        assert_eq!(range("0.00033", "0.0004"), "0.00033..0.0004");
        assert_eq!(share(0.08), "8.0%");
        assert_eq!(share(0.31), "31%");
        assert_eq!(share(0.0001), "<0.1%");
    }

    #[test]
    fn the_json_form_names_every_part() {
        let d = many(
            &[sample(10.0, 1.0), sample(10.0, 1.0)],
            &[sample(10.0, 2.0), sample(10.0, 2.0)],
        );
        let v: serde_json::Value = serde_json::to_value(&d).unwrap();
        assert_eq!(v["before"][0]["file"], "r.json");
        assert_eq!(v["noise_rule"], "spread");
        assert_eq!(v["rows"][0]["per"], "second");
        assert!(v["rows"][0]["ratio"].as_f64().is_some());
        assert!(v["rows"][0]["before"]["mean"].as_f64().is_some());
        assert!(v["rows"][0]["before"]["min"].as_f64().is_some());
        assert_eq!(v["rows"][0]["before"]["reports"], 2);
        assert_eq!(v["environment"][0]["item"], "kernel");
        assert_eq!(v["load"][0]["figure"], "involuntary_switches");
        // sample(.., 2.0) doubles every counter: twice the load.
        assert_eq!(v["load_mismatch"], true);
        assert_eq!(v["verdict"]["kind"], "different_loads");
        assert!(v["causes"].as_array().is_some());
    }
}
