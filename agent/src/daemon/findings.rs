//! `GET /findings`: the diagnosis (README, "Diagnosing an incident") of
//! the last five minutes, as JSON. The daemon keeps a snapshot of its
//! cumulative totals every ten seconds, at most five minutes' worth plus
//! one, and diagnoses what happened between the oldest of them and now.
use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;

use crate::{
    agent::Snapshot,
    diagnosis::Diagnosis,
    kernel::snapshot,
    trace::{
        collect::{self, Filter, SessionInfo},
        report_json::Selection,
    },
};

/// How far back `/findings` looks.
pub const WINDOW: Duration = Duration::from_secs(300);
/// How often a snapshot is kept.
pub const EVERY: Duration = Duration::from_secs(10);
/// The most snapshots kept: the window's worth, plus the one at its start.
pub const MAX_KEPT: usize = (WINDOW.as_secs() / EVERY.as_secs()) as usize + 1;

/// Snapshots of the agent's cumulative totals, oldest first.
#[derive(Default)]
pub struct Window {
    kept: VecDeque<(Instant, Snapshot)>,
}

impl Window {
    /// Whether a snapshot is due at `now` (none kept yet, or the newest is
    /// [`EVERY`] old).
    pub fn due(&self, now: Instant) -> bool {
        self.kept
            .back()
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= EVERY)
    }

    /// Keeps `s`, taken at `at`, and forgets what has left the window.
    pub fn push(&mut self, at: Instant, mut s: Snapshot) {
        // Program statistics are not diagnosed: not kept.
        s.programs.clear();
        self.kept.push_back((at, s));
        while self
            .kept
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > WINDOW)
        {
            self.kept.pop_front();
        }
        while self.kept.len() > MAX_KEPT {
            self.kept.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.kept.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// The oldest snapshot at most [`WINDOW`] before `now`.
    pub fn oldest_within(&self, now: Instant) -> Option<&(Instant, Snapshot)> {
        self.kept
            .iter()
            .find(|(t, _)| now.saturating_duration_since(*t) <= WINDOW)
    }
}

/// The `/findings` body: the diagnosis of the window, and the window.
#[derive(Debug, Serialize)]
pub struct Findings {
    /// Seconds between the oldest snapshot used and now: 300 once the
    /// agent has run five minutes, less before.
    pub window_seconds: f64,
    /// The same, for people, with why it is short.
    pub window: String,
    #[serde(flatten)]
    pub diagnosis: Diagnosis,
}

/// "5 min", or "12 s (pgpreempt started 12 s ago; the window is 5 min)".
fn window_text(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let shown = if secs >= 60.0 {
        format!("{:.1} min", secs / 60.0).replace(".0 min", " min")
    } else {
        format!("{secs:.0} s")
    };
    if d + EVERY < WINDOW {
        format!(
            "{shown} (pgpreempt started {shown} ago; the window is {} min)",
            WINDOW.as_secs() / 60
        )
    } else {
        shown
    }
}

/// The diagnosis of what happened between the oldest kept snapshot within
/// the window and `newest`, taken at `now`. With nothing kept yet the
/// window is empty and nothing is significant.
pub fn findings(window: &Window, now: Instant, newest: &Snapshot) -> Findings {
    let (since, older) = match window.oldest_within(now) {
        Some((at, s)) => (now.saturating_duration_since(*at), s),
        None => (Duration::ZERO, newest),
    };
    let d = snapshot::delta(newest, older);
    let info = SessionInfo {
        started_at: humantime::format_rfc3339_seconds(SystemTime::now() - since).to_string(),
        duration_seconds: since.as_secs_f64(),
        selection: Selection::default(),
        filter: Filter::default(),
    };
    let report = collect::build_totals(&d, &info);
    Findings {
        window_seconds: (since.as_secs_f64() * 10.0).round() / 10.0,
        window: window_text(since),
        diagnosis: crate::diagnosis::diagnose(&report),
    }
}

/// The `/findings` body as JSON text.
pub fn render(window: &Window, now: Instant, newest: &Snapshot) -> String {
    let f = findings(window, now, newest);
    let mut s = serde_json::to_string_pretty(&f)
        .unwrap_or_else(|e| format!("{{\"error\": \"encoding failed: {e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::Preemptor,
        diagnosis::Cause,
        kernel::kernel_info::{KernelInfo, PreemptModel},
        postgres::groups::Labels,
    };
    use agent_common::stats::{counter, hist_kind};

    /// Cumulative totals after `secs` seconds of a load where client
    /// backends each second run `cpu` s, wait `rq` s in run queues and are
    /// preempted by pgbench 100 times.
    fn at(secs: u64, cpu: f64, rq: f64) -> Snapshot {
        let mut g = snapshot::zero_group();
        let ns = |v: f64| (v * secs as f64 * 1e9) as u64;
        g.counters.v[counter::ON_CPU_NS] = ns(cpu);
        g.counters.v[counter::PREEMPTED_NS] = ns(rq);
        g.counters.v[counter::INVOLUNTARY_SWITCHES] = 100 * secs;
        g.hists[hist_kind::PREEMPTED].buckets[10] = 100 * secs;
        g.hists[hist_kind::PREEMPTED].sum_ns = ns(rq);
        Snapshot {
            groups: vec![(
                Labels {
                    cluster: "/pg".into(),
                    backend_type: "client backend".into(),
                },
                g,
            )],
            tracked: vec![],
            kernel: KernelInfo {
                release: "6.18.0".into(),
                preempt: PreemptModel {
                    model: "voluntary".into(),
                    source: "test".into(),
                    dynamic: None,
                },
                rseq_slice: None,
            },
            programs: vec![crate::kernel::snapshot::ProgramStats {
                name: "sched_switch".into(),
                runs: secs,
                run_ns: secs,
            }],
            diag: [0; agent_common::stats::diag::NUM],
            spin_sites: vec![],
            uprobe_errors: 0,
            shared_memory: vec![],
            preemptors: vec![Preemptor {
                cluster: "/pg".into(),
                comm: "pgbench".into(),
                count: 100 * secs,
            }],
            online_cpus: 2,
            starts: Default::default(),
        }
    }

    #[test]
    fn the_window_keeps_five_minutes_and_one_more_at_most() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert!(w.due(t0) && w.is_empty());
        for i in 0..100u64 {
            let t = t0 + EVERY * i as u32;
            assert!(w.due(t));
            w.push(t, at(i * 10, 1.0, 0.5));
            assert!(!w.due(t + Duration::from_secs(9)));
            assert!(w.len() <= MAX_KEPT, "{} kept", w.len());
        }
        assert_eq!(w.len(), MAX_KEPT);
        assert!(w.kept.iter().all(|(_, s)| s.programs.is_empty()));
        let now = t0 + EVERY * 99;
        let (oldest, _) = w.oldest_within(now).unwrap();
        assert_eq!(now - *oldest, WINDOW);
        // Between two snapshots, the oldest still within five minutes.
        let later = now + Duration::from_secs(4);
        let (oldest, _) = w.oldest_within(later).unwrap();
        assert_eq!(later - *oldest, Duration::from_secs(294));
    }

    #[test]
    fn a_saturated_window_finds_cpu_saturation_with_who_took_the_cpu() {
        let t0 = Instant::now();
        let mut w = Window::default();
        // A quiet first minute, then saturation: only the window counts.
        w.push(t0, at(0, 0.0, 0.0));
        let mut before = at(600, 0.01, 0.0);
        before.preemptors[0].count = 0;
        let t1 = t0 + Duration::from_secs(600);
        w.push(t1, before.clone());
        let mut now_snap = before;
        let g = &mut now_snap.groups[0].1;
        g.counters.v[counter::ON_CPU_NS] += 60_000_000_000; // 2 CPUs, 30 s
        g.counters.v[counter::PREEMPTED_NS] += 30_000_000_000;
        now_snap.preemptors[0].count += 3_000;
        now_snap.preemptors.push(Preemptor {
            cluster: "/pg".into(),
            comm: "kworker".into(),
            count: 1_000,
        });
        let f = findings(&w, t1 + Duration::from_secs(30), &now_snap);
        assert_eq!(f.window_seconds, 30.0);
        let top = f.diagnosis.top().expect("significant");
        assert_eq!(top.cause, Cause::CpuSaturation);
        assert!((top.share.unwrap() - 1.0 / 3.0).abs() < 1e-6, "{top:?}");
        assert!(top.statement.contains("pgbench 75%"), "{}", top.statement);
        assert!(f.diagnosis.significant);
        let json: serde_json::Value =
            serde_json::from_str(&render(&w, t1 + Duration::from_secs(30), &now_snap)).unwrap();
        assert_eq!(json["window_seconds"], 30.0);
        assert_eq!(json["significant"], true);
        assert_eq!(json["findings"][0]["cause"], "cpu_saturation");
        assert_eq!(json["findings"][0]["readme"], "README.md#cpu-saturation");
        assert!(json["headline"][0]
            .as_str()
            .unwrap()
            .starts_with("CPU saturation"));
    }

    #[test]
    fn an_idle_window_is_nothing_significant_and_a_short_one_says_so() {
        let t0 = Instant::now();
        let mut w = Window::default();
        w.push(t0, at(0, 0.0, 0.0));
        // 20 s of a nearly idle cluster: 1 ms/s on a CPU.
        let f = findings(&w, t0 + Duration::from_secs(20), &at(20, 0.001, 0.001));
        assert!(!f.diagnosis.significant);
        assert_eq!(f.diagnosis.findings[0].cause, Cause::NothingSignificant);
        assert_eq!(f.window_seconds, 20.0);
        assert_eq!(
            f.window,
            "20 s (pgpreempt started 20 s ago; the window is 5 min)"
        );
        // With nothing kept, an empty window: nothing to diagnose.
        let f = findings(&Window::default(), t0, &at(20, 1.0, 1.0));
        assert_eq!(f.window_seconds, 0.0);
        assert!(!f.diagnosis.significant);
        assert_eq!(window_text(WINDOW), "5 min");
        assert_eq!(window_text(Duration::from_secs(294)), "4.9 min");
    }
}
