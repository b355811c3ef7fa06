//! The diagnosis as text: the headline, then each finding with its
//! statement, what it was measured against, and what to try.
use std::fmt::Write;

use super::{thresholds as t, units::pct, Cause, Diagnosis, Finding, Sizing};

/// The headline lines, one per line.
pub fn headline(d: &Diagnosis) -> String {
    let mut out = String::new();
    for h in &d.headline {
        let _ = writeln!(out, "{h}");
    }
    out
}

/// The findings, numbered, with their evidence line and what to try.
pub fn findings(d: &Diagnosis) -> String {
    let mut out = String::new();
    let mut n = 0;
    for f in &d.findings {
        match f.cause {
            // Said by the headline, which comes first wherever findings are
            // printed.
            Cause::NothingSignificant => {}
            Cause::PreemptionModel => {
                // "Nothing significant: ..." names itself.
                if f.statement.starts_with(f.cause.name()) {
                    let _ = writeln!(out, "{}", f.statement);
                } else {
                    let _ = writeln!(out, "{}: {}", f.cause.name(), f.statement);
                }
                for t in &f.try_ {
                    let _ = writeln!(out, "  try: {t}");
                }
            }
            _ => {
                n += 1;
                finding(&mut out, n, f);
            }
        }
    }
    out
}

fn finding(out: &mut String, n: usize, f: &Finding) {
    let size = match (f.share, f.sizing) {
        (Some(s), Sizing::Estimated) => {
            let p = pct(s);
            let about = if p.starts_with('<') { "" } else { "~" };
            format!("{about}{p} of active time, estimated")
        }
        (Some(s), _) => format!("{} of active time", pct(s)),
        (None, _) => String::new(),
    };
    let alert = if f.above_alert_level {
        ", above its alert level"
    } else {
        ""
    };
    let paren = format!("{size}{alert}");
    if paren.is_empty() {
        let _ = writeln!(out, "{n}. {}", f.cause.name());
    } else {
        let _ = writeln!(out, "{n}. {} ({paren})", f.cause.name());
    }
    let _ = writeln!(out, "   {}", f.statement);
    let _ = writeln!(out, "   measured against: {}", against(f.cause));
    for t in &f.try_ {
        let _ = writeln!(out, "   try: {t}");
    }
    let _ = writeln!(out, "   more: {}", f.readme);
}

/// The thresholds a cause is judged by, in words.
fn against(c: Cause) -> String {
    match c {
        Cause::CpuSaturation => format!(
            "a finding from {} of active time in run queues, alert from {}",
            pct(t::CPU_SATURATION_SHARE),
            pct(t::CPU_SATURATION_ALERT_SHARE)
        ),
        Cause::LockHolderPreemption => format!(
            "a finding from {} of lock waiting and {}, alert from {} and {}",
            pct(t::HOLDER_PREEMPTION_SHARE_OF_LOCK_WAIT),
            super::units::per_sec_time(t::HOLDER_PREEMPTION_MIN_SECONDS_PER_SECOND),
            pct(t::HOLDER_PREEMPTION_ALERT_SHARE_OF_LOCK_WAIT),
            super::units::per_sec_time(t::HOLDER_PREEMPTION_ALERT_SECONDS_PER_SECOND)
        ),
        Cause::SpinlockContention => format!(
            "a finding from {} of active time in s_lock, alert from {} at one site",
            pct(t::SPIN_SHARE),
            super::units::per_sec_time(t::SPIN_SITE_ALERT_SECONDS_PER_SECOND)
        ),
        Cause::SharedMemory4kPages => format!(
            "a finding and alert from {} faults on shared memory without huge pages; sized at {} µs a fault",
            crate::trace::text_table::per_second(t::MAIN_SHARED_FAULTS_PER_SECOND),
            t::MINOR_FAULT_SECONDS * 1e6,
        ),
        Cause::MemoryStalls => format!(
            "a finding from {} of active time and {}, alert from {}",
            pct(t::MEMORY_STALL_SHARE),
            super::units::per_sec_time(t::MEMORY_STALL_MIN_SECONDS_PER_SECOND),
            pct(t::MEMORY_STALL_ALERT_SHARE)
        ),
        Cause::ConnectionChurn => format!(
            "a finding from {} client-backend starts a second living at most {} on average (no share: the cost is inside the other figures)",
            t::CONNECTION_CHURN_STARTS_PER_SECOND,
            crate::trace::text_table::secs(t::CONNECTION_CHURN_MEAN_LIFETIME_SECONDS)
        ),
        Cause::PreemptionModel | Cause::NothingSignificant => String::new(),
    }
}

/// Everything `pgpreempt diagnose` prints: a line on what was looked at,
/// the headline, and the findings.
pub fn full(d: &Diagnosis, what: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{what}: {:.0} s on {} CPUs; PostgreSQL processes active {} (on a CPU, waiting for one, or for a lock)",
        d.duration_seconds,
        d.online_cpus,
        super::units::per_sec_time(d.active_seconds_per_second)
    );
    let _ = writeln!(out);
    out.push_str(&headline(d));
    let _ = writeln!(out);
    out.push_str(&findings(d));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::tests::sample;

    #[test]
    fn nothing_significant_is_said_once() {
        let d = super::super::diagnose(&sample(10.0, 1.0));
        let text = full(&d, "test");
        assert_eq!(
            text.matches("Nothing significant").count(),
            1,
            "the headline says it, the findings do not repeat it: {text}"
        );
        assert!(
            !text.contains("Nothing significant: Nothing significant"),
            "{text}"
        );
        assert!(text.contains("Preemption model: The kernel"), "{text}");
    }
}
