//! The diagnosis: from a session's figures to named causes, ranked by the
//! time they take from PostgreSQL processes, each with its evidence and
//! what to try. `pgpreempt diagnose`, the trace report and the daemon's
//! `/findings` all speak through it.
//!
//! One currency: the share of the processes' *active* time (on a CPU,
//! waiting for one, or waiting for a lock; `Figures::active_seconds`) that
//! a cause took. Counts (faults per second, holder preemptions per second)
//! are evidence, not size. A cause with no time of its own (faults on 4 KB
//! shared memory) is sized by an estimate, and says so.
//!
//! It reads a session report (`trace::report_json::Report`): the daemon
//! builds one for its last five minutes.
pub mod render;
pub mod thresholds;
pub mod units;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::trace::report_json::{Figures, Report};
use thresholds as t;
use units::{pct, per_sec_time};

use crate::trace::text_table::{num, secs};

/// Where each cause is explained: a section of the repository's README.
pub const README: &str = "README.md";

/// The causes the diagnosis knows, in the order ties are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    CpuSaturation,
    LockHolderPreemption,
    SpinlockContention,
    SharedMemory4kPages,
    MemoryStalls,
    ConnectionChurn,
    PreemptionModel,
    NothingSignificant,
}

impl Cause {
    /// Its name in JSON: `cpu_saturation`.
    pub fn key(self) -> &'static str {
        match self {
            Cause::CpuSaturation => "cpu_saturation",
            Cause::LockHolderPreemption => "lock_holder_preemption",
            Cause::SpinlockContention => "spinlock_contention",
            Cause::SharedMemory4kPages => "shared_memory4k_pages",
            Cause::MemoryStalls => "memory_stalls",
            Cause::ConnectionChurn => "connection_churn",
            Cause::PreemptionModel => "preemption_model",
            Cause::NothingSignificant => "nothing_significant",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Cause::CpuSaturation => "CPU saturation",
            Cause::LockHolderPreemption => "Lock-holder preemption",
            Cause::SpinlockContention => "Spinlock contention",
            Cause::SharedMemory4kPages => "Shared memory on 4 KB pages",
            Cause::MemoryStalls => "Memory stalls",
            Cause::ConnectionChurn => "Connection churn",
            Cause::PreemptionModel => "Preemption model",
            Cause::NothingSignificant => "Nothing significant",
        }
    }

    /// The README section that explains it.
    pub fn anchor(self) -> &'static str {
        match self {
            Cause::CpuSaturation => "#cpu-saturation",
            Cause::LockHolderPreemption => "#lock-holder-preemption",
            Cause::SpinlockContention => "#spinlock-contention",
            Cause::SharedMemory4kPages => "#shared-memory-on-4-kb-pages",
            Cause::MemoryStalls => "#memory-stalls",
            Cause::ConnectionChurn => "#connection-churn",
            Cause::PreemptionModel => "#preemption-model",
            Cause::NothingSignificant => "#diagnosing-an-incident",
        }
    }
}

/// How a finding's share was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sizing {
    /// Time the kernel programs measured.
    Measured,
    /// Counts times an assumed cost (said in the statement).
    Estimated,
    /// Context, with no size of its own.
    None,
}

/// One named cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub cause: Cause,
    /// The share of the processes' active time it took (0..1); null for
    /// context (the preemption model) and for "nothing significant".
    pub share: Option<f64>,
    pub sizing: Sizing,
    /// It passed its threshold.
    pub significant: bool,
    /// It passed its alert level (the alert rule's threshold).
    pub above_alert_level: bool,
    /// One line for the top of a report: what and how it compares with
    /// the alert level.
    pub headline: String,
    /// One sentence with the numbers.
    pub statement: String,
    /// The figures and thresholds used, by name.
    pub evidence: BTreeMap<String, Value>,
    /// What to try, most promising first.
    #[serde(rename = "try")]
    pub try_: Vec<String>,
    /// The README section for this cause.
    pub readme: String,
}

/// A session's diagnosis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// At most three lines: what matters, against the alert levels.
    pub headline: Vec<String>,
    /// Significant findings by share, largest first; then context (the
    /// preemption model); or "nothing significant" alone with context.
    pub findings: Vec<Finding>,
    /// Some finding passed its threshold (`diagnose` exits 3).
    pub significant: bool,
    /// Active time of the selected processes per second of session, and
    /// the CPUs it ran on.
    pub active_seconds_per_second: f64,
    pub online_cpus: u32,
    pub duration_seconds: f64,
}

impl Diagnosis {
    pub fn top(&self) -> Option<&Finding> {
        self.findings.first().filter(|f| f.significant)
    }
}

/// Rates of one session: per second of wall time.
struct Rates<'a> {
    r: &'a Report,
    f: &'a Figures,
    secs: f64,
    active: f64,
}

impl Rates<'_> {
    fn per_s(&self, v: f64) -> f64 {
        v / self.secs
    }
    fn share(&self, seconds: f64) -> f64 {
        if self.active > 0.0 {
            (seconds / self.active).min(1.0)
        } else {
            0.0
        }
    }
}

/// Diagnoses a session report.
pub fn diagnose(r: &Report) -> Diagnosis {
    let f = &r.totals;
    let secs = r.duration_seconds.max(1e-3);
    let rates = Rates {
        r,
        f,
        secs,
        active: f.active_seconds(),
    };
    let busy_enough = rates.per_s(rates.active) >= t::MIN_ACTIVE_SECONDS_PER_SECOND;
    let mut found = candidates_of(&rates);
    if !busy_enough {
        for x in &mut found {
            x.significant = false;
            x.above_alert_level = false;
        }
    }
    found.retain(|x| x.significant);
    found.sort_by(|a, b| {
        b.share
            .unwrap_or(0.0)
            .total_cmp(&a.share.unwrap_or(0.0))
            .then(a.cause.cmp(&b.cause))
    });
    let significant = !found.is_empty();
    let mut headline: Vec<String> = found.iter().take(3).map(|x| x.headline.clone()).collect();
    if !significant {
        let n = nothing_significant(&rates, busy_enough);
        headline.push(n.headline.clone());
        found.push(n);
    }
    found.push(preemption_model(&rates, &found));
    Diagnosis {
        headline,
        findings: found,
        significant,
        active_seconds_per_second: rates.per_s(rates.active),
        online_cpus: r.online_cpus,
        duration_seconds: r.duration_seconds,
    }
}

/// Every cause the figures give a size to, significant or not (for
/// comparisons: `diff` follows a cause's share from one session to the
/// next, also below its threshold).
pub fn candidates(r: &Report) -> Vec<Finding> {
    let f = &r.totals;
    candidates_of(&Rates {
        r,
        f,
        secs: r.duration_seconds.max(1e-3),
        active: f.active_seconds(),
    })
}

fn candidates_of(rates: &Rates) -> Vec<Finding> {
    if rates.active <= 0.0 {
        // Nothing ran: nothing to size.
        return Vec::new();
    }
    [
        cpu_saturation(rates),
        lock_holder_preemption(rates),
        spinlock_contention(rates),
        shared_memory_4k_pages(rates),
        memory_stalls(rates),
        connection_churn(rates),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn finding(cause: Cause, share: Option<f64>, sizing: Sizing) -> Finding {
    Finding {
        cause,
        share,
        sizing,
        significant: false,
        above_alert_level: false,
        headline: String::new(),
        statement: String::new(),
        evidence: BTreeMap::new(),
        try_: Vec::new(),
        readme: format!("{README}{}", cause.anchor()),
    }
}

/// "above the 25% alert level" / "below ...".
fn against(value: f64, level: f64, shown: String) -> String {
    if value >= level {
        format!("above the {shown} alert level")
    } else {
        format!("below the {shown} alert level")
    }
}

/// Who took the CPU, as "pgbench 60%, postgres 35%, kworker 5%" (the top
/// four names), and the share of the top name that is not PostgreSQL.
fn preempted_by(r: &Report) -> (String, Vec<Value>, Option<(String, f64)>) {
    let total: u64 = r.preempted_by.iter().map(|p| p.preemptions).sum();
    if total == 0 {
        return ("nobody recorded".into(), vec![], None);
    }
    let share = |n: u64| n as f64 / total as f64;
    let text = r
        .preempted_by
        .iter()
        .take(4)
        .map(|p| format!("{} {}", p.comm, pct(share(p.preemptions))))
        .collect::<Vec<_>>()
        .join(", ");
    let list = r
        .preempted_by
        .iter()
        .take(8)
        .map(|p| json!({"comm": p.comm, "share": share(p.preemptions), "preemptions": p.preemptions}))
        .collect();
    let neighbour = r
        .preempted_by
        .iter()
        .find(|p| !is_postgres(&p.comm) && p.comm != "(others)")
        .map(|p| (p.comm.clone(), share(p.preemptions)));
    (text, list, neighbour)
}

fn is_postgres(comm: &str) -> bool {
    comm == "postgres" || comm == "postmaster"
}

fn cpu_saturation(x: &Rates) -> Option<Finding> {
    let f = x.f;
    let rq = f.run_queue_seconds();
    let share = x.share(rq);
    let mut o = finding(Cause::CpuSaturation, Some(share), Sizing::Measured);
    // Processes that were running or wanted to, on average.
    let wanting = x.per_s(f.on_cpu_seconds + rq);
    let cpus = x.r.online_cpus;
    let (by, by_list, neighbour) = preempted_by(x.r);
    o.significant = share >= t::CPU_SATURATION_SHARE;
    o.above_alert_level = share >= t::CPU_SATURATION_ALERT_SHARE;
    o.headline = format!(
        "CPU saturation: PostgreSQL processes waited for a CPU {} of their active time, {}",
        pct(share),
        against(
            share,
            t::CPU_SATURATION_ALERT_SHARE,
            pct(t::CPU_SATURATION_ALERT_SHARE)
        )
    );
    o.statement = format!(
        "PostgreSQL processes spent {} of their active time waiting for a CPU ({}: {} after being preempted, {} after waking up); {:.1} of them wanted a CPU on average, on {} CPUs; preempted by {}.",
        pct(share),
        per_sec_time(x.per_s(rq)),
        per_sec_time(x.per_s(f.preempted_seconds)),
        per_sec_time(x.per_s(f.wakeup_latency_seconds)),
        wanting,
        cpus,
        by
    );
    o.evidence = BTreeMap::from([
        ("run_queue_seconds_per_second".into(), json!(x.per_s(rq))),
        (
            "after_preemption_seconds_per_second".into(),
            json!(x.per_s(f.preempted_seconds)),
        ),
        (
            "after_wakeup_seconds_per_second".into(),
            json!(x.per_s(f.wakeup_latency_seconds)),
        ),
        ("processes_wanting_a_cpu".into(), json!(wanting)),
        ("online_cpus".into(), json!(cpus)),
        (
            "involuntary_switches_per_second".into(),
            json!(x.per_s(f.involuntary_switches as f64)),
        ),
        ("preempted_by".into(), Value::Array(by_list)),
        ("threshold_share".into(), json!(t::CPU_SATURATION_SHARE)),
        ("alert_share".into(), json!(t::CPU_SATURATION_ALERT_SHARE)),
    ]);
    if cpus > 0 && wanting > f64::from(cpus) {
        o.try_.push(format!(
            "Fewer PostgreSQL processes running at once than the {cpus} CPUs: put a connection pooler (PgBouncer in transaction mode) in front, or lower the application's pool size and max_connections."
        ));
    } else {
        o.try_.push(
            "Fewer active connections: a connection pooler (PgBouncer in transaction mode), or a smaller application pool."
                .into(),
        );
    }
    if let Some((comm, s)) = neighbour.filter(|(_, s)| *s >= 0.2) {
        o.try_.push(format!(
            "Move the neighbour: {comm} took the CPU in {} of the preemptions; give it other CPUs (cpuset, CPU quota) or another host.",
            pct(s)
        ));
    }
    o.try_
        .push("More CPUs, if the load is what it should be.".into());
    Some(o)
}

fn lock_holder_preemption(x: &Rates) -> Option<Finding> {
    let f = x.f;
    if f.futex_wait_seconds <= 0.0 {
        return None;
    }
    let delay = f.waiter_delay_seconds;
    let of_wait = delay / f.futex_wait_seconds;
    let share = x.share(delay);
    let mut o = finding(Cause::LockHolderPreemption, Some(share), Sizing::Measured);
    o.significant = of_wait >= t::HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT
        && x.per_s(delay) >= t::HOLDER_PREEMPTION_MIN_SECONDS_PER_SECOND;
    o.above_alert_level = of_wait >= t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT
        && x.per_s(delay) >= t::HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND;
    let holders = top_types(x.r, |f| f.holder_preempted_seconds);
    let waiters = top_types(x.r, |f| f.waiter_delay_seconds);
    o.headline = format!(
        "Lock-holder preemption caused {} of lock waiting ({} of active time), {}",
        pct(of_wait),
        pct(share),
        against(
            if x.per_s(delay) >= t::HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND {
                of_wait
            } else {
                0.0
            },
            t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT,
            pct(t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT)
        )
    );
    o.statement = format!(
        "Lock holders were preempted {} while others waited for them, which made the waiters wait {} ({} of all lock waiting, {} of active time); holders: {}; waiters: {}.",
        units_count_per_s(x.per_s(f.holder_preemptions as f64)),
        per_sec_time(x.per_s(delay)),
        pct(of_wait),
        pct(share),
        holders,
        waiters
    );
    o.evidence = BTreeMap::from([
        (
            "waiter_delay_seconds_per_second".into(),
            json!(x.per_s(delay)),
        ),
        (
            "lock_wait_seconds_per_second".into(),
            json!(x.per_s(f.futex_wait_seconds)),
        ),
        ("share_of_lock_waiting".into(), json!(of_wait)),
        (
            "holder_preemptions_per_second".into(),
            json!(x.per_s(f.holder_preemptions as f64)),
        ),
        (
            "holder_preempted_seconds_per_second".into(),
            json!(x.per_s(f.holder_preempted_seconds)),
        ),
        ("holders".into(), json!(holders)),
        ("waiters".into(), json!(waiters)),
        (
            "threshold_share_of_lock_waiting".into(),
            json!(t::HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT),
        ),
        (
            "alert_share_of_lock_waiting".into(),
            json!(t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT),
        ),
    ]);
    o.try_.push(
        "Keep fewer runnable PostgreSQL processes than CPUs (a connection pooler): a holder is preempted only when something else wants its CPU."
            .into(),
    );
    let k = &x.r.kernel;
    if matches!(k.preempt_model.as_str(), "full" | "lazy") {
        if k.preempt_dynamic == Some(true) {
            o.try_.push(format!(
                "As an experiment, boot with preempt=voluntary or preempt=none (this kernel runs `{}` and is PREEMPT_DYNAMIC), then compare sessions with pgpreempt diff.",
                k.preempt_model
            ));
        } else {
            o.try_.push(format!(
                "This kernel runs the `{}` preemption model and cannot change it at boot; a kernel built with PREEMPT_DYNAMIC (or PREEMPT_VOLUNTARY) lets you try preempt=voluntary.",
                k.preempt_model
            ));
        }
    }
    o.try_.push(match k.rseq_slice_extension {
        Some(true) => "The RSEQ time-slice extension is enabled in this kernel: a PostgreSQL built to use it can ask for a short extension while it holds a lock.".into(),
        Some(false) => "The RSEQ time-slice extension (Linux 7.0, CONFIG_RSEQ_SLICE_EXTENSION, rseq_slice_ext=on) is not available here; it lets a lock holder finish before being preempted, once PostgreSQL uses it.".into(),
        None => "Whether this kernel has the RSEQ time-slice extension is not known (pgpreempt check says why).".into(),
    });
    Some(o)
}

/// "client backend 80%, walwriter 20%": the backend types with the most of
/// a figure.
fn top_types(r: &Report, get: fn(&Figures) -> f64) -> String {
    let mut by: BTreeMap<&str, f64> = BTreeMap::new();
    for b in &r.backend_types {
        *by.entry(b.backend_type.as_str()).or_default() += get(&b.figures);
    }
    let total: f64 = by.values().sum();
    if total <= 0.0 {
        return "none recorded".into();
    }
    let mut v: Vec<(&str, f64)> = by.into_iter().filter(|(_, s)| *s > 0.0).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.iter()
        .take(3)
        .map(|(t, s)| format!("{t} {}", pct(s / total)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn units_count_per_s(v: f64) -> String {
    crate::trace::text_table::per_second(v)
}

fn spinlock_contention(x: &Rates) -> Option<Finding> {
    let f = x.f;
    if f.spins == 0 {
        return None;
    }
    let share = x.share(f.spin_seconds);
    let mut o = finding(Cause::SpinlockContention, Some(share), Sizing::Measured);
    // Sites of the selected clusters, merged by name.
    let mut sites: BTreeMap<&str, (f64, u64)> = BTreeMap::new();
    for s in &x.r.spin_sites {
        let e = sites.entry(s.site.as_str()).or_default();
        e.0 += s.seconds;
        e.1 += s.count;
    }
    let mut sites: Vec<(&str, f64, u64)> = sites.into_iter().map(|(k, (s, n))| (k, s, n)).collect();
    sites.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top_site_rate = sites.first().map_or(0.0, |s| x.per_s(s.1));
    o.significant = share >= t::SPIN_SHARE;
    o.above_alert_level = top_site_rate >= t::SPIN_SITE_ALERT_SECONDS_PER_SECOND;
    let site_total: f64 = sites.iter().map(|s| s.1).sum();
    let top = sites.first().map(|(name, s, _)| {
        let m = crate::postgres::spin_sites::meaning(name);
        (name.to_string(), *s, m)
    });
    let where_ = match &top {
        Some((name, s, m)) => format!(
            ", {} of it at {name} ({})",
            pct(if site_total > 0.0 {
                s / site_total
            } else {
                0.0
            }),
            m.protects
        ),
        None => String::new(),
    };
    o.headline = format!(
        "Spinlock contention: {} of active time in s_lock, top site {}, {}",
        pct(share),
        top.as_ref().map_or("unknown", |t| t.0.as_str()),
        against(
            top_site_rate,
            t::SPIN_SITE_ALERT_SECONDS_PER_SECOND,
            format!(
                "{} per site",
                per_sec_time(t::SPIN_SITE_ALERT_SECONDS_PER_SECOND)
            )
        )
    );
    o.statement = format!(
        "Backends spent {} in contended spinlocks ({} of active time, {} acquisitions){where_}; spinners were preempted while spinning {}.",
        per_sec_time(x.per_s(f.spin_seconds)),
        pct(share),
        units_count_per_s(x.per_s(f.spins as f64)),
        units_count_per_s(x.per_s(f.spinner_preemptions as f64)),
    );
    o.evidence = BTreeMap::from([
        (
            "spin_seconds_per_second".into(),
            json!(x.per_s(f.spin_seconds)),
        ),
        ("spins_per_second".into(), json!(x.per_s(f.spins as f64))),
        (
            "spinner_preemptions_per_second".into(),
            json!(x.per_s(f.spinner_preemptions as f64)),
        ),
        (
            "sites".into(),
            Value::Array(
                sites
                    .iter()
                    .take(5)
                    .map(|(n, s, c)| {
                        json!({"site": n, "seconds_per_second": x.per_s(*s), "acquisitions_per_second": x.per_s(*c as f64), "protects": crate::postgres::spin_sites::meaning(n).protects})
                    })
                    .collect(),
            ),
        ),
        ("threshold_share".into(), json!(t::SPIN_SHARE)),
        (
            "alert_seconds_per_second_per_site".into(),
            json!(t::SPIN_SITE_ALERT_SECONDS_PER_SECOND),
        ),
    ]);
    if let Some((_, _, m)) = &top {
        o.try_.push(m.try_.to_string());
    }
    if f.spinner_preemptions > 0 {
        o.try_.push(
            "Spinners preempted while spinning point at more runnable processes than CPUs: a connection pooler helps here too."
                .into(),
        );
    }
    if f.faults_while_others_spin > 0 {
        o.try_.push(format!(
            "Page faults were taken while others spun ({}): a holder that faults keeps the lock longer; see the 4 KB pages finding (huge_pages=on).",
            units_count_per_s(x.per_s(f.faults_while_others_spin as f64))
        ));
    }
    Some(o)
}

fn shared_memory_4k_pages(x: &Rates) -> Option<Finding> {
    // Clusters whose main segment is not on huge pages, with their faults.
    let mut worst: Option<(String, String, u64, u64, u64)> = None;
    let mut faults_small = 0u64;
    for c in &x.r.clusters {
        let Some(sm) = &c.shared_memory else { continue };
        if sm.huge_pages == "on" {
            continue;
        }
        let n: u64 =
            x.r.backend_types
                .iter()
                .filter(|b| b.cluster == c.cluster)
                .map(|b| b.figures.page_faults_main_shared)
                .sum();
        faults_small += n;
        if worst.as_ref().is_none_or(|w| n > w.2) {
            worst = Some((
                c.cluster.clone(),
                sm.huge_pages.clone(),
                n,
                sm.size_bytes,
                sm.page_size_bytes,
            ));
        }
    }
    let (cluster, state, _, size, page) = worst?;
    if faults_small == 0 {
        return None;
    }
    let f = x.f;
    let rate = x.per_s(faults_small as f64);
    let est = faults_small as f64 * t::MINOR_FAULT_SECONDS;
    let share = x.share(est);
    let mut o = finding(Cause::SharedMemory4kPages, Some(share), Sizing::Estimated);
    o.significant = rate >= t::MAIN_SHARED_FAULTS_PER_SECOND;
    o.above_alert_level = rate >= t::MAIN_SHARED_FAULTS_PER_SECOND;
    let huge_needed = size.div_ceil(2 << 20);
    o.headline = format!(
        "Shared memory on 4 KB pages: page faults on it at {} with huge pages {state}, {}",
        units_count_per_s(rate),
        against(
            rate,
            t::MAIN_SHARED_FAULTS_PER_SECOND,
            units_count_per_s(t::MAIN_SHARED_FAULTS_PER_SECOND)
        )
    );
    o.statement = format!(
        "Huge pages are {state} for {cluster} ({} MB of shared memory on {} KB pages) and backends took page faults on it at {} ({} while another backend spun on a spinlock); at about {} µs a fault that is an estimated {} of active time.",
        size >> 20,
        page / 1024,
        units_count_per_s(rate),
        units_count_per_s(x.per_s(f.faults_while_others_spin as f64)),
        t::MINOR_FAULT_SECONDS * 1e6,
        pct(share)
    );
    o.evidence = BTreeMap::from([
        ("cluster".into(), json!(cluster)),
        ("huge_pages".into(), json!(state)),
        ("segment_bytes".into(), json!(size)),
        ("page_size_bytes".into(), json!(page)),
        ("main_shared_faults_per_second".into(), json!(rate)),
        (
            "faults_while_others_spin_per_second".into(),
            json!(x.per_s(f.faults_while_others_spin as f64)),
        ),
        (
            "faults_while_spinning_per_second".into(),
            json!(x.per_s(f.faults_while_spinning as f64)),
        ),
        (
            "estimated_seconds_per_fault".into(),
            json!(t::MINOR_FAULT_SECONDS),
        ),
        (
            "threshold_faults_per_second".into(),
            json!(t::MAIN_SHARED_FAULTS_PER_SECOND),
        ),
    ]);
    o.try_.push(format!(
        "Set huge_pages = on in postgresql.conf and reserve vm.nr_hugepages = {} or more (the segment is {} MB: {huge_needed} pages of 2 MB, plus a margin), then restart PostgreSQL; pgpreempt check shows the page size afterwards.",
        huge_needed + huge_needed / 20 + 1,
        size >> 20,
    ));
    o.try_.push(
        "With many short connections, a connection pooler also helps: each new backend faults in every page it touches once."
            .into(),
    );
    Some(o)
}

fn memory_stalls(x: &Rates) -> Option<Finding> {
    let f = x.f;
    let kinds = [
        (
            "memory cgroup reclaim",
            f.reclaim_memcg_stall_seconds,
            "The processes' memory cgroup is at its limit (memory.max or memory.high): raise it, or make PostgreSQL fit (shared_buffers, work_mem, max_connections).",
        ),
        (
            "direct reclaim",
            f.reclaim_direct_stall_seconds,
            "The host is short of free memory and backends reclaim it themselves: find what uses the memory, lower PostgreSQL's (work_mem, shared_buffers) or add RAM.",
        ),
        (
            "compaction",
            f.compaction_stall_seconds,
            "Compaction for transparent huge pages: set /sys/kernel/mm/transparent_hugepage/defrag to defer or madvise, and use huge_pages=on (hugetlb, reserved) for shared memory rather than THP.",
        ),
        (
            "mmap_lock waits",
            f.mmap_lock_read_wait_seconds + f.mmap_lock_write_wait_seconds,
            "Backends wait for their address space's lock (mmap_lock): something maps and unmaps memory while they fault; look at dynamic shared memory (parallel queries), huge allocations and tools reading /proc/PID/maps.",
        ),
    ];
    let total: f64 = kinds.iter().map(|k| k.1).sum();
    let numa = x.per_s(f.numa_migrations as f64);
    if total <= 0.0 && numa < t::NUMA_MIGRATIONS_PER_SECOND {
        return None;
    }
    let share = x.share(total);
    let mut o = finding(Cause::MemoryStalls, Some(share), Sizing::Measured);
    o.significant =
        share >= t::MEMORY_STALL_SHARE && x.per_s(total) >= t::MEMORY_STALL_MIN_SECONDS_PER_SECOND;
    o.above_alert_level = o.significant && share >= t::MEMORY_STALL_ALERT_SHARE;
    let mut sorted: Vec<_> = kinds.iter().filter(|k| k.1 > 0.0).collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts = sorted
        .iter()
        .map(|k| format!("{} {}", k.0, per_sec_time(x.per_s(k.1))))
        .collect::<Vec<_>>()
        .join(", ");
    o.headline = format!(
        "Memory stalls: {} of active time ({}), {}",
        pct(share),
        sorted.first().map_or("none", |k| k.0),
        against(
            share,
            t::MEMORY_STALL_ALERT_SHARE,
            pct(t::MEMORY_STALL_ALERT_SHARE)
        )
    );
    o.statement = format!(
        "Backends stalled on memory {} ({} of active time): {}; NUMA balancing moved them {} and migrated {} pages.",
        per_sec_time(x.per_s(total)),
        pct(share),
        if parts.is_empty() { "no reclaim, compaction or mmap_lock wait".to_string() } else { parts },
        units_count_per_s(numa),
        units_count_per_s(x.per_s(f.pages_migrated as f64)),
    );
    o.evidence = BTreeMap::from([
        (
            "memcg_reclaim_seconds_per_second".into(),
            json!(x.per_s(f.reclaim_memcg_stall_seconds)),
        ),
        (
            "direct_reclaim_seconds_per_second".into(),
            json!(x.per_s(f.reclaim_direct_stall_seconds)),
        ),
        (
            "compaction_seconds_per_second".into(),
            json!(x.per_s(f.compaction_stall_seconds)),
        ),
        (
            "mmap_lock_wait_seconds_per_second".into(),
            json!(x.per_s(f.mmap_lock_read_wait_seconds + f.mmap_lock_write_wait_seconds)),
        ),
        ("numa_migrations_per_second".into(), json!(numa)),
        (
            "pages_migrated_per_second".into(),
            json!(x.per_s(f.pages_migrated as f64)),
        ),
        ("threshold_share".into(), json!(t::MEMORY_STALL_SHARE)),
        ("alert_share".into(), json!(t::MEMORY_STALL_ALERT_SHARE)),
    ]);
    for k in sorted {
        o.try_.push(k.2.to_string());
    }
    if numa >= t::NUMA_MIGRATIONS_PER_SECOND {
        o.try_.push(
            "NUMA balancing moves backends between nodes: bind PostgreSQL to one node (numactl, cpuset) or set kernel.numa_balancing=0 as an experiment."
                .into(),
        );
    }
    Some(o)
}

/// Connection churn: client backends started (forked) at a high rate and
/// living briefly. Each connection pays for a process start (fork, the
/// backend's initialisation, its page faults, cold caches) that a pooler
/// would not; that time is in the other figures, not apart, so this
/// finding has no share: it is significant from the rate alone.
fn connection_churn(x: &Rates) -> Option<Finding> {
    let clients: Vec<_> =
        x.r.backend_types
            .iter()
            .filter(|b| b.backend_type == "client backend")
            .collect();
    let starts: u64 = clients.iter().map(|b| b.process_starts).sum();
    if starts == 0 {
        return None;
    }
    let exits: u64 = clients.iter().map(|b| b.process_exits).sum();
    let lived: f64 = clients
        .iter()
        .map(|b| b.mean_lifetime_seconds * b.process_exits as f64)
        .sum::<f64>()
        / exits.max(1) as f64;
    let rate = x.per_s(starts as f64);
    let mut o = finding(Cause::ConnectionChurn, None, Sizing::None);
    o.significant = rate >= t::CONNECTION_CHURN_STARTS_PER_SECOND
        && exits > 0
        && lived <= t::CONNECTION_CHURN_MEAN_LIFETIME_SECONDS;
    let life = if exits > 0 {
        format!(", living {} on average", secs(lived))
    } else {
        String::new()
    };
    o.headline = format!(
        "Connection churn: {} new client backends a second{life}; each pays for a process start that a pooler avoids",
        num(rate)
    );
    o.statement = format!(
        "{starts} client backends were started in {:.0} s ({}/s){life}: every connection forks a backend, which initialises, faults in its memory and warms its caches before the first query; that time is in the figures above (on a CPU, run queues, page faults), not counted apart.",
        x.secs,
        num(rate)
    );
    o.evidence = BTreeMap::from([
        ("client_backend_starts".into(), json!(starts)),
        ("starts_per_second".into(), json!(rate)),
        ("exits".into(), json!(exits)),
        ("mean_lifetime_seconds".into(), json!(lived)),
        (
            "threshold_starts_per_second".into(),
            json!(t::CONNECTION_CHURN_STARTS_PER_SECOND),
        ),
        (
            "threshold_mean_lifetime_seconds".into(),
            json!(t::CONNECTION_CHURN_MEAN_LIFETIME_SECONDS),
        ),
    ]);
    o.try_ = vec![
        "Put a connection pooler in front (PgBouncer in transaction mode, or the application's own pool), so that a connection reuses a backend instead of forking one.".into(),
        "Where clients cannot change, look for what reconnects: health checks, serverless functions, a pool with a very short idle timeout.".into(),
    ];
    Some(o)
}

fn preemption_model(x: &Rates, found: &[Finding]) -> Finding {
    let k = &x.r.kernel;
    let mut o = finding(Cause::PreemptionModel, None, Sizing::None);
    let changes = |c: Cause| {
        matches!(
            c,
            Cause::CpuSaturation | Cause::LockHolderPreemption | Cause::SpinlockContention
        )
    };
    let related: Vec<&str> = found
        .iter()
        .filter(|f| f.significant && changes(f.cause))
        .map(|f| f.cause.name())
        .collect();
    let dynamic = match k.preempt_dynamic {
        Some(true) => " (PREEMPT_DYNAMIC: preempt= on the kernel command line changes it)",
        Some(false) => " (fixed when the kernel was built)",
        None => "",
    };
    let preempted = x.share(x.f.preempted_seconds);
    o.statement = if related.is_empty() {
        format!(
            "The kernel ({}) runs the `{}` preemption model{dynamic}; none of the findings is of the kind it changes (time after preemption is {} of active time).",
            k.release, k.preempt_model, pct(preempted)
        )
    } else {
        format!(
            "The kernel ({}) runs the `{}` preemption model{dynamic}; {} {} the kind it changes: how often a running backend (or a lock holder) is preempted. Time after preemption is {} of active time.",
            k.release,
            k.preempt_model,
            related.join(" and "),
            if related.len() == 1 { "is" } else { "are" },
            pct(preempted)
        )
    };
    o.headline = o.statement.clone();
    o.evidence = BTreeMap::from([
        ("release".into(), json!(k.release)),
        ("preempt_model".into(), json!(k.preempt_model)),
        ("preempt_model_source".into(), json!(k.preempt_model_source)),
        ("preempt_dynamic".into(), json!(k.preempt_dynamic)),
        ("rseq_slice_extension".into(), json!(k.rseq_slice_extension)),
        ("preempted_share".into(), json!(preempted)),
    ]);
    if !related.is_empty() && matches!(k.preempt_model.as_str(), "full" | "lazy") {
        o.try_.push(
            "Compare a session under preempt=voluntary (or none) with this one, same load, using pgpreempt diff."
                .into(),
        );
    }
    o
}

fn nothing_significant(x: &Rates, busy_enough: bool) -> Finding {
    let f = x.f;
    let mut o = finding(Cause::NothingSignificant, None, Sizing::None);
    let active = x.per_s(x.active);
    o.statement = if !busy_enough {
        format!(
            "Nothing significant: PostgreSQL processes were active {} (on a CPU, waiting for one or for a lock), under the {} below which shares are noise.",
            per_sec_time(active),
            per_sec_time(t::MIN_ACTIVE_SECONDS_PER_SECOND)
        )
    } else {
        format!(
            "Nothing significant: PostgreSQL processes were active {} on {} CPUs; waiting for a CPU {} (threshold {}), preempted lock holders {} of lock waiting (threshold {}), spinning {} (threshold {}), memory stalls {} (threshold {}).",
            per_sec_time(active),
            x.r.online_cpus,
            pct(x.share(f.run_queue_seconds())),
            pct(t::CPU_SATURATION_SHARE),
            pct(if f.futex_wait_seconds > 0.0 { f.waiter_delay_seconds / f.futex_wait_seconds } else { 0.0 }),
            pct(t::HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT),
            pct(x.share(f.spin_seconds)),
            pct(t::SPIN_SHARE),
            pct(x.share(memory_stall_seconds(f))),
            pct(t::MEMORY_STALL_SHARE),
        )
    };
    o.headline = o.statement.clone();
    o.evidence = BTreeMap::from([
        ("active_seconds_per_second".into(), json!(active)),
        (
            "on_cpu_seconds_per_second".into(),
            json!(x.per_s(f.on_cpu_seconds)),
        ),
        (
            "run_queue_share".into(),
            json!(x.share(f.run_queue_seconds())),
        ),
        (
            "lock_wait_seconds_per_second".into(),
            json!(x.per_s(f.futex_wait_seconds)),
        ),
        ("online_cpus".into(), json!(x.r.online_cpus)),
    ]);
    o
}

/// Reclaim, compaction and `mmap_lock` waits together.
pub fn memory_stall_seconds(f: &Figures) -> f64 {
    f.reclaim_memcg_stall_seconds
        + f.reclaim_direct_stall_seconds
        + f.compaction_stall_seconds
        + f.mmap_lock_read_wait_seconds
        + f.mmap_lock_write_wait_seconds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::{tests::sample, PreemptorJson, SpinSiteJson};

    /// A 10 s session of one cluster with these totals (also its one
    /// backend type), huge pages off, preempted by pgbench.
    fn session(f: Figures) -> Report {
        let mut r = sample(10.0, 1.0);
        r.totals = f;
        r.backend_types[0].figures = f;
        r.processes.clear();
        r.spin_sites.clear();
        r.online_cpus = 2;
        r.preempted_by = vec![
            PreemptorJson {
                comm: "pgbench".into(),
                preemptions: 60,
            },
            PreemptorJson {
                comm: "postgres".into(),
                preemptions: 35,
            },
            PreemptorJson {
                comm: "kworker".into(),
                preemptions: 5,
            },
        ];
        r
    }

    /// Busy and healthy: 1 CPU-second per second on CPU, a little waiting.
    fn healthy() -> Figures {
        Figures {
            on_cpu_seconds: 10.0,
            preempted_seconds: 0.2,
            wakeup_latency_seconds: 0.1,
            futex_wait_seconds: 0.5,
            waiter_delay_seconds: 0.01,
            involuntary_switches: 1000,
            voluntary_switches: 50_000,
            ..Figures::default()
        }
    }

    fn causes(d: &Diagnosis) -> Vec<Cause> {
        d.findings.iter().map(|f| f.cause).collect()
    }

    #[test]
    fn connection_churn_is_named_from_the_start_rate_and_lifetimes() {
        let mut f = healthy();
        f.preempted_seconds = 3.0;
        let mut r = session(f);
        r.backend_types[0].process_starts = 3400;
        r.backend_types[0].process_exits = 3398;
        r.backend_types[0].mean_lifetime_seconds = 0.006;
        let d = diagnose(&r);
        assert_eq!(
            causes(&d),
            vec![
                Cause::CpuSaturation,
                Cause::ConnectionChurn,
                Cause::PreemptionModel
            ],
            "sized causes first, then churn, which has no share"
        );
        let c = &d.findings[1];
        assert!(c.significant && c.share.is_none());
        assert!(
            c.headline.starts_with(
                "Connection churn: 340 new client backends a second, living 6.0ms on average"
            ),
            "{}",
            c.headline
        );
        assert!(c.try_[0].contains("pooler"));
        let text = render::findings(&d);
        assert!(text.contains("2. Connection churn\n"), "{text}");
        // Long-lived connections arriving often are not churn, nor are a
        // few starts a second.
        r.backend_types[0].mean_lifetime_seconds = 60.0;
        assert!(!causes(&diagnose(&r)).contains(&Cause::ConnectionChurn));
        r.backend_types[0].mean_lifetime_seconds = 0.006;
        r.backend_types[0].process_starts = 50;
        assert!(!causes(&diagnose(&r)).contains(&Cause::ConnectionChurn));
    }

    #[test]
    fn a_healthy_database_gets_nothing_significant() {
        let d = diagnose(&session(healthy()));
        assert!(!d.significant);
        assert_eq!(
            causes(&d),
            vec![Cause::NothingSignificant, Cause::PreemptionModel]
        );
        assert_eq!(d.headline.len(), 1);
        assert!(
            d.headline[0].starts_with("Nothing significant"),
            "{:?}",
            d.headline
        );
        // With the figures, not a list of small numbers.
        assert!(
            d.headline[0].contains("waiting for a CPU 3%"),
            "{}",
            d.headline[0]
        );
    }

    #[test]
    fn an_idle_database_is_never_significant() {
        // Nearly idle: 10 ms/s of activity, all of it waiting for a CPU.
        let f = Figures {
            on_cpu_seconds: 0.0,
            preempted_seconds: 0.1,
            ..Figures::default()
        };
        let d = diagnose(&session(f));
        assert!(!d.significant);
        assert!(
            d.headline[0].contains("shares are noise"),
            "{:?}",
            d.headline
        );
    }

    #[test]
    fn cpu_saturation_names_who_took_the_cpu() {
        let f = Figures {
            preempted_seconds: 4.0,
            wakeup_latency_seconds: 1.0,
            ..healthy()
        };
        let d = diagnose(&session(f));
        assert!(d.significant);
        let top = d.top().unwrap();
        assert_eq!(top.cause, Cause::CpuSaturation);
        // 5.0 of 15.5 s active.
        assert!((top.share.unwrap() - 5.0 / 15.5).abs() < 1e-9);
        assert!(top.above_alert_level);
        assert!(
            top.statement
                .contains("preempted by pgbench 60%, postgres 35%, kworker 5%"),
            "{}",
            top.statement
        );
        assert!(top.statement.contains("on 2 CPUs"), "{}", top.statement);
        assert!(
            top.headline.contains("above the 25% alert level"),
            "{}",
            top.headline
        );
        assert!(top
            .try_
            .iter()
            .any(|t| t.contains("pgbench took the CPU in 60%")));
        // 1.5 processes wanted a CPU on 2: no "fewer than the CPUs" advice.
        assert!(
            top.try_[0].starts_with("Fewer active connections"),
            "{:?}",
            top.try_
        );
        // The preemption model says this is its kind.
        let m = d.findings.last().unwrap();
        assert_eq!(m.cause, Cause::PreemptionModel);
        assert!(
            m.statement
                .contains("CPU saturation is the kind it changes"),
            "{}",
            m.statement
        );
    }

    #[test]
    fn lock_holder_preemption_against_its_alert_level() {
        // 12% of lock waiting: a finding, below the 20% alert level.
        let f = Figures {
            futex_wait_seconds: 5.0,
            waiter_delay_seconds: 0.6,
            holder_preemptions: 2000,
            holder_preempted_seconds: 0.3,
            ..healthy()
        };
        let mut r = session(f);
        r.kernel.preempt_model = "full".into();
        r.kernel.preempt_dynamic = Some(true);
        r.kernel.rseq_slice_extension = Some(false);
        let d = diagnose(&r);
        let lhp = d
            .findings
            .iter()
            .find(|x| x.cause == Cause::LockHolderPreemption)
            .expect("a finding");
        assert!(lhp.significant && !lhp.above_alert_level);
        assert!(
            lhp.headline
                .starts_with("Lock-holder preemption caused 12% of lock waiting")
                && lhp.headline.ends_with("below the 20% alert level"),
            "{}",
            lhp.headline
        );
        assert!(lhp.try_.iter().any(|t| t.contains("preempt=voluntary")));
        assert!(lhp
            .try_
            .iter()
            .any(|t| t.contains("RSEQ time-slice extension")));
        assert!(
            lhp.statement.contains("holders: client backend 100%"),
            "{}",
            lhp.statement
        );
        // Under 10% of lock waiting: no finding.
        let f = Figures {
            futex_wait_seconds: 5.0,
            waiter_delay_seconds: 0.4,
            ..healthy()
        };
        assert!(!diagnose(&session(f)).significant);
    }

    #[test]
    fn spinlock_contention_names_the_site_and_what_it_means() {
        let f = Figures {
            spins: 5000,
            spin_seconds: 2.0,
            spinner_preemptions: 30,
            ..healthy()
        };
        let mut r = session(f);
        for (site, secs) in [("StrategyGetBuffer", 1.6), ("get_hash_entry", 0.4)] {
            r.spin_sites.push(SpinSiteJson {
                cluster: "/data".into(),
                site: site.into(),
                count: 2500,
                seconds: secs,
                delays: 0,
            });
        }
        let d = diagnose(&r);
        let top = d.top().unwrap();
        assert_eq!(top.cause, Cause::SpinlockContention);
        assert!(
            top.statement
                .contains("80% of it at StrategyGetBuffer (the buffer replacement strategy lock)"),
            "{}",
            top.statement
        );
        assert!(top.try_[0].contains("shared_buffers is too small"));
        // 0.16 s/s at the top site: above the 0.1 CPU alert level.
        assert!(top.above_alert_level);
        assert_eq!(top.evidence["sites"][0]["site"], "StrategyGetBuffer");
    }

    #[test]
    fn four_kb_pages_only_without_huge_pages_and_sized_as_an_estimate() {
        let f = Figures {
            page_faults_main_shared: 400_000,
            faults_while_others_spin: 300,
            ..healthy()
        };
        let d = diagnose(&session(f));
        let x = d
            .findings
            .iter()
            .find(|x| x.cause == Cause::SharedMemory4kPages)
            .expect("a finding");
        assert_eq!(x.sizing, Sizing::Estimated);
        // 40,000/s x 1 µs = 0.04 s/s of 1.08 s/s active.
        assert!((x.share.unwrap() - 0.4 / 10.8).abs() < 1e-9);
        assert!(
            x.statement.contains("page faults on it at 40,000/s"),
            "{}",
            x.statement
        );
        assert!(
            x.try_[0].contains("huge_pages = on") && x.try_[0].contains("vm.nr_hugepages = 76")
        );
        let text = render::findings(&d);
        assert!(text.contains("estimated"), "{text}");
        // Called on the count: 1,500/s is a finding however small its
        // estimated time (0.15%), below 1,000/s none is.
        let few = |n: u64| {
            diagnose(&session(Figures {
                page_faults_main_shared: n,
                ..healthy()
            }))
        };
        assert_eq!(few(15_000).top().unwrap().cause, Cause::SharedMemory4kPages);
        assert!(!few(9_000).significant);
        // The same faults on huge pages are no finding.
        let mut r = session(f);
        r.clusters[0].shared_memory.as_mut().unwrap().huge_pages = "on".into();
        assert!(!diagnose(&r).significant);
    }

    #[test]
    fn memory_stalls_say_which_kind() {
        let f = Figures {
            reclaim_memcg_stalls: 100,
            reclaim_memcg_stall_seconds: 0.9,
            compaction_stall_seconds: 0.1,
            ..healthy()
        };
        let d = diagnose(&session(f));
        let top = d.top().unwrap();
        assert_eq!(top.cause, Cause::MemoryStalls);
        assert!(
            top.headline.contains("memory cgroup reclaim"),
            "{}",
            top.headline
        );
        assert!(top.try_[0].contains("memory.max"));
        assert!(top.above_alert_level);
    }

    #[test]
    fn findings_are_ranked_by_share_with_at_most_three_headlines() {
        let f = Figures {
            preempted_seconds: 3.0,
            futex_wait_seconds: 5.0,
            waiter_delay_seconds: 2.0,
            spins: 10,
            spin_seconds: 1.0,
            reclaim_direct_stall_seconds: 0.5,
            page_faults_main_shared: 1_000_000,
            ..healthy()
        };
        let d = diagnose(&session(f));
        let shares: Vec<f64> = d
            .findings
            .iter()
            .filter(|f| f.significant)
            .map(|f| f.share.unwrap())
            .collect();
        assert_eq!(shares.len(), 5, "{:?}", causes(&d));
        assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
        assert_eq!(d.headline.len(), 3);
        assert_eq!(d.top().unwrap().cause, Cause::CpuSaturation);
    }

    #[test]
    fn findings_round_trip_through_json_with_the_documented_names() {
        let f = Figures {
            preempted_seconds: 4.0,
            ..healthy()
        };
        let d = diagnose(&session(f));
        let v = serde_json::to_value(&d.findings[0]).unwrap();
        for k in ["cause", "share", "statement", "evidence", "try"] {
            assert!(!v[k].is_null(), "{k}");
        }
        assert_eq!(v["cause"], "cpu_saturation");
        let back: Finding = serde_json::from_value(v).unwrap();
        assert_eq!(back, d.findings[0]);
    }

    #[test]
    fn rendered_text_has_no_scientific_notation() {
        for scale in [1e-6, 1e-3, 1.0, 1e3] {
            let f = Figures {
                on_cpu_seconds: 10.0 * scale,
                preempted_seconds: 4.0 * scale,
                futex_wait_seconds: 5.0 * scale,
                waiter_delay_seconds: 2.0 * scale,
                spins: 10,
                spin_seconds: 1.0 * scale,
                reclaim_direct_stall_seconds: 0.5 * scale,
                page_faults_main_shared: 1_000_000,
                ..Figures::default()
            };
            let text = render::full(&diagnose(&session(f)), "test");
            let sci = regex_lite_sci(&text);
            assert!(!sci, "{text}");
        }
    }

    /// A number in scientific notation (`9.28e-4`, `1e6`).
    fn regex_lite_sci(s: &str) -> bool {
        let b = s.as_bytes();
        (1..b.len().saturating_sub(1)).any(|i| {
            (b[i] == b'e' || b[i] == b'E')
                && b[i - 1].is_ascii_digit()
                && (b[i + 1].is_ascii_digit() || b[i + 1] == b'-' || b[i + 1] == b'+')
        })
    }

    #[test]
    fn every_threshold_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for (name, value) in thresholds::ALL {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}`")))
                .unwrap_or_else(|| panic!("README has no row for {name}"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let shown: f64 = cells[2]
                .trim_matches('`')
                .parse()
                .unwrap_or_else(|_| panic!("{name}: value cell {:?}", cells[2]));
            assert_eq!(shown, *value, "README row for {name}");
            assert!(cells[3].len() > 20, "{name} needs a reason in the README");
        }
    }
}
