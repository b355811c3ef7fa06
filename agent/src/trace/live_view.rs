//! The live view of a trace session, refreshed every second: a header
//! (kernel, preemption model, selection), a progress bar, then backend-type
//! and process rows ranked by the harm they show. On a terminal it redraws
//! in place with some emphasis; otherwise (or with `NO_COLOR`) each frame is
//! plain text, without escape codes, appended to the output.
use std::{cmp::Ordering, io::Write, time::Duration};

use crate::{
    trace::report_json::{Figures, Report},
    trace::text_table::{cut, num, secs, Align, Table},
};

/// Processes shown in a plain-text frame.
pub const PLAIN_PROCESS_ROWS: usize = 10;

/// Orders two rows by the harm they show, smallest first: waiter delay,
/// then holder preemptions, involuntary switches, preempted time, wakeup
/// latency (p99 for backend types, mean for processes) and spin time.
pub fn rank(a: &Figures, b: &Figures, wake_a: Option<f64>, wake_b: Option<f64>) -> Ordering {
    a.waiter_delay_seconds
        .total_cmp(&b.waiter_delay_seconds)
        .then(a.holder_preemptions.cmp(&b.holder_preemptions))
        .then(a.involuntary_switches.cmp(&b.involuntary_switches))
        .then(a.preempted_seconds.total_cmp(&b.preempted_seconds))
        .then(wake_a.unwrap_or(0.0).total_cmp(&wake_b.unwrap_or(0.0)))
        .then(a.spin_seconds.total_cmp(&b.spin_seconds))
}

/// How a line is shown on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Title,
    ColumnHeads,
    Plain,
}

/// What a frame shows besides the report so far.
pub struct FrameInfo<'a> {
    pub elapsed: Duration,
    pub duration: Option<Duration>,
    /// `--cluster`, or a description of the selection.
    pub selection: &'a str,
    /// At most this many process rows (also limited by the height).
    pub max_process_rows: usize,
}

/// A progress bar `[#####.....]` of `width` cells for `elapsed` of `total`.
pub fn progress_bar(elapsed: Duration, total: Duration, width: usize) -> String {
    let frac = if total.is_zero() {
        1.0
    } else {
        (elapsed.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    };
    let done = ((frac * width as f64).round() as usize).min(width);
    format!("[{}{}]", "#".repeat(done), ".".repeat(width - done))
}

/// `5s of 15s, 10s left`, or `12s (until Ctrl-C)`.
pub fn countdown(elapsed: Duration, duration: Option<Duration>) -> String {
    let e = elapsed.as_secs();
    match duration {
        Some(d) => {
            let left = d.saturating_sub(elapsed);
            // Round the remaining time up: "1s left" until it is over.
            let left = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            format!(
                "{} {e}s of {}s, {left}s left",
                progress_bar(elapsed, d, 30),
                d.as_secs()
            )
        }
        None => format!("{e}s elapsed (until Ctrl-C)"),
    }
}

/// The lines of one frame. `activity` reads a process's current activity
/// from its title (None: keep the one in the report). At most `height`
/// lines (process rows are dropped first), each cut to `width` characters.
pub fn lines(
    r: &Report,
    info: &FrameInfo,
    width: usize,
    height: usize,
    activity: &dyn Fn(u32) -> Option<String>,
) -> Vec<(Style, String)> {
    let d = info.elapsed.as_secs_f64();
    // Rates need some time to mean anything: none in the first second.
    let rate = |v: f64| if d < 1.0 { "-".to_string() } else { num(v / d) };
    let mut out = vec![
        (
            Style::Title,
            format!(
                "pgpreempt trace  Linux {}  preemption model: {} ({})  {}",
                r.kernel.release,
                r.kernel.preempt_model,
                r.kernel.preempt_model_source,
                info.selection
            ),
        ),
        (
            Style::Plain,
            format!("{}  Ctrl-C stops", countdown(info.elapsed, info.duration)),
        ),
        (
            Style::Title,
            match r.findings.first().filter(|f| f.significant) {
                Some(f) => format!("top finding: {}", f.headline),
                None => "no significant finding so far".to_string(),
            },
        ),
    ];
    let t = &r.totals;
    out.push((
        Style::Plain,
        format!(
            "totals since start: {} processes, {} invol/s, preempted {}% of a CPU, waiter delay {}, {} holder preemptions, spinning {}",
            r.processes.iter().filter(|p| !p.exited_during_session).count(),
            rate(t.involuntary_switches as f64),
            rate(100.0 * t.preempted_seconds),
            secs(t.waiter_delay_seconds),
            t.holder_preemptions,
            secs(t.spin_seconds)
        ),
    ));
    for l in crate::trace::memory_block::live_lines(r, d) {
        out.push((Style::Plain, l));
    }
    out.push((Style::Plain, String::new()));

    let mut types: Vec<_> = r.backend_types.iter().collect();
    let wake99 = |b: &crate::trace::report_json::BackendTypeJson| {
        b.histogram("wakeup_latency_seconds")
            .and_then(|h| h.quantile_bound(0.99))
    };
    types.sort_by(|a, b| {
        rank(&b.figures, &a.figures, wake99(b), wake99(a)).then(a.backend_type.cmp(&b.backend_type))
    });
    let mut bt = Table::new(&[
        ("BACKEND TYPE", Align::Left),
        ("PROCS", Align::Right),
        ("WAITER DELAY", Align::Right),
        ("HOLDER PREEMPT", Align::Right),
        ("INVOL/s", Align::Right),
        ("WAKEUPS/s", Align::Right),
        ("PREEMPTED", Align::Right),
        ("WAKE p99", Align::Right),
        ("SPIN", Align::Right),
    ]);
    for b in &types {
        let f = &b.figures;
        bt.row(vec![
            b.backend_type.clone(),
            b.processes.to_string(),
            secs(f.waiter_delay_seconds),
            f.holder_preemptions.to_string(),
            rate(f.involuntary_switches as f64),
            rate(f.wakeups as f64),
            secs(f.preempted_seconds),
            wake99(b).map(secs).unwrap_or_else(|| "-".into()),
            secs(f.spin_seconds),
        ]);
    }
    for (i, l) in bt.lines(width).into_iter().enumerate() {
        out.push((
            if i == 0 {
                Style::ColumnHeads
            } else {
                Style::Plain
            },
            l,
        ));
    }
    out.push((Style::Plain, String::new()));

    let mean_wake =
        |f: &Figures| (f.wakeups > 0).then(|| f.wakeup_latency_seconds / f.wakeups as f64);
    let mut procs: Vec<_> = r
        .processes
        .iter()
        .filter(|p| !p.exited_during_session)
        .collect();
    procs.sort_by(|a, b| {
        rank(
            &b.figures,
            &a.figures,
            mean_wake(&b.figures),
            mean_wake(&a.figures),
        )
        .then(a.pid.cmp(&b.pid))
    });
    // Room left: a column-heads line plus one line per process.
    let room = height
        .saturating_sub(out.len() + 1)
        .min(info.max_process_rows);
    procs.truncate(room);
    let mut pt = Table::new(&[
        ("PID", Align::Right),
        ("BACKEND TYPE", Align::Left),
        ("WAITER DELAY", Align::Right),
        ("HOLDER PREEMPT", Align::Right),
        ("INVOL", Align::Right),
        ("WAKEUPS/s", Align::Right),
        ("PREEMPTED", Align::Right),
        ("WAKE avg", Align::Right),
        ("SPIN", Align::Right),
        ("ACTIVITY", Align::Left),
    ]);
    for p in &procs {
        let f = &p.figures;
        pt.row(vec![
            p.pid.to_string(),
            p.backend_type.clone(),
            secs(f.waiter_delay_seconds),
            f.holder_preemptions.to_string(),
            f.involuntary_switches.to_string(),
            rate(f.wakeups as f64),
            secs(f.preempted_seconds),
            mean_wake(f).map(secs).unwrap_or_else(|| "-".into()),
            secs(f.spin_seconds),
            activity(p.pid).unwrap_or_else(|| p.activity.clone()),
        ]);
    }
    if room > 0 {
        for (i, l) in pt.lines(width).into_iter().enumerate() {
            out.push((
                if i == 0 {
                    Style::ColumnHeads
                } else {
                    Style::Plain
                },
                l,
            ));
        }
    }
    out.truncate(height);
    for l in &mut out {
        l.1 = cut(&l.1, width);
    }
    out
}

/// Where frames go.
pub enum Output {
    /// Redrawn in place on the alternate screen; restored on drop.
    Terminal(std::io::Stdout),
    /// Appended as plain text.
    Plain(std::io::Stdout),
}

impl Output {
    /// A terminal view when stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Output {
        use std::io::IsTerminal;
        let out = std::io::stdout();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if out.is_terminal() && !no_color {
            let mut o = std::io::stdout();
            let _ = crossterm::execute!(
                o,
                crossterm::terminal::EnterAlternateScreen,
                crossterm::cursor::Hide
            );
            Output::Terminal(out)
        } else {
            Output::Plain(out)
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, Output::Terminal(_))
    }

    /// Process rows a frame shows at most.
    pub fn max_process_rows(&self) -> usize {
        match self {
            Output::Terminal(_) => usize::MAX,
            Output::Plain(_) => PLAIN_PROCESS_ROWS,
        }
    }

    /// (width, height) to draw in.
    pub fn size(&self) -> (usize, usize) {
        match self {
            Output::Terminal(_) => crossterm::terminal::size()
                .map(|(w, h)| (w as usize, h as usize))
                .unwrap_or((120, 40)),
            // Plain frames: wide lines; rows are capped by max_process_rows.
            Output::Plain(_) => (200, usize::MAX),
        }
    }

    pub fn draw(&mut self, frame: &[(Style, String)]) -> std::io::Result<()> {
        use crossterm::{
            cursor::MoveTo,
            queue,
            style::{Attribute, Print, SetAttribute},
            terminal::{Clear, ClearType},
        };
        match self {
            Output::Terminal(o) => {
                queue!(o, MoveTo(0, 0), Clear(ClearType::All))?;
                for (i, (style, text)) in frame.iter().enumerate() {
                    queue!(o, MoveTo(0, i as u16))?;
                    match style {
                        Style::Title => queue!(
                            o,
                            SetAttribute(Attribute::Bold),
                            Print(text),
                            SetAttribute(Attribute::Reset)
                        )?,
                        Style::ColumnHeads => queue!(
                            o,
                            SetAttribute(Attribute::Reverse),
                            Print(text),
                            SetAttribute(Attribute::Reset)
                        )?,
                        Style::Plain => queue!(o, Print(text))?,
                    }
                }
                o.flush()
            }
            Output::Plain(o) => {
                let mut s = String::new();
                for (_, text) in frame {
                    s.push_str(text);
                    s.push('\n');
                }
                s.push('\n');
                o.write_all(s.as_bytes())?;
                o.flush()
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Output::Terminal(o) = self {
            let _ = crossterm::execute!(
                o,
                crossterm::cursor::Show,
                crossterm::terminal::LeaveAlternateScreen
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::tests::sample;

    #[test]
    fn progress_and_countdown() {
        let s = Duration::from_secs;
        assert_eq!(progress_bar(s(5), s(10), 10), "[#####.....]");
        assert_eq!(progress_bar(s(0), s(10), 4), "[....]");
        assert_eq!(progress_bar(s(11), s(10), 4), "[####]");
        assert_eq!(
            countdown(Duration::from_millis(4500), Some(s(15))),
            format!(
                "{} 4s of 15s, 11s left",
                progress_bar(Duration::from_millis(4500), s(15), 30)
            )
        );
        assert_eq!(countdown(s(7), None), "7s elapsed (until Ctrl-C)");
    }

    #[test]
    fn rows_are_ranked_by_harm() {
        let mut r = sample(5.0, 1.0);
        let base = r.processes[0].clone();
        let mk = |pid: u32, delay: f64, holder: u64, invol: u64| {
            let mut p = base.clone();
            p.pid = pid;
            p.figures = Figures {
                waiter_delay_seconds: delay,
                holder_preemptions: holder,
                involuntary_switches: invol,
                ..Figures::default()
            };
            p
        };
        r.processes = vec![
            mk(1, 0.0, 0, 500),
            mk(2, 0.5, 0, 1),
            mk(3, 0.0, 9, 1),
            mk(4, 0.0, 9, 2),
        ];
        let mut gone = mk(5, 9.0, 0, 0);
        gone.exited_during_session = true;
        r.processes.push(gone);
        let info = FrameInfo {
            elapsed: Duration::from_secs(5),
            duration: Some(Duration::from_secs(10)),
            selection: "cluster /data",
            max_process_rows: usize::MAX,
        };
        let title = |pid: u32| Some(format!("activity of {pid}"));
        let frame = lines(&r, &info, 300, 100, &title);
        let text: Vec<&str> = frame.iter().map(|l| l.1.as_str()).collect();
        assert!(text[0].starts_with("pgpreempt trace  Linux 6.18.0  preemption model: none"));
        assert!(text[1].contains("5s of 10s, 5s left"));
        let heads = frame
            .iter()
            .position(|l| l.0 == Style::ColumnHeads && l.1.trim_start().starts_with("PID"))
            .unwrap();
        let pids: Vec<u32> = text[heads + 1..]
            .iter()
            .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            pids,
            vec![2, 4, 3, 1],
            "exited processes are not shown live"
        );
        assert!(text[heads + 1].ends_with("activity of 2"));
        // A short terminal drops process rows, never the header.
        let short = lines(&r, &info, 300, 9, &title);
        assert_eq!(short.len(), 9);
        assert!(short[0].1.starts_with("pgpreempt trace"));
        // No rates before a second has passed.
        let early = FrameInfo {
            elapsed: Duration::from_millis(300),
            ..info
        };
        let first = lines(&r, &early, 300, 100, &title);
        assert_eq!(first[2].1, "no significant finding so far");
        assert!(
            first[3].1.contains("- invol/s, preempted -% of a CPU"),
            "{}",
            first[3].1
        );
        let capped = FrameInfo {
            max_process_rows: 2,
            ..info
        };
        let two = lines(&r, &capped, 300, 100, &title);
        assert_eq!(two.len(), heads + 1 + 2);
        // A narrow one cuts lines.
        assert!(lines(&r, &info, 20, 100, &title)
            .iter()
            .all(|l| l.1.chars().count() <= 20));
    }
}
