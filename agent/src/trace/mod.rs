//! `pgpreempt trace`: an on-demand session for incidents. It loads its own
//! programs (per-process counters on, nothing pinned or shared, so a daemon
//! on the same host is undisturbed), shows a live view every second, and at
//! the end prints a report and optionally writes it as JSON.
pub mod collect;
pub mod diff;
pub mod live_view;
pub mod memory_block;
pub mod report;
pub mod report_json;
pub mod text_histogram;
pub mod text_table;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    agent::Agent,
    config::Config,
    postgres::backend_type::parse_title,
    postgres::processes::ProcFs,
    trace::report_json::{Report, Selection},
};

/// What `pgpreempt trace` was asked to do.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// The agent's settings (comms, pids, uprobes...). Trace sessions count
    /// per process and keep exited processes' counters whatever is set here.
    pub config: Config,
    /// None: until Ctrl-C (SIGINT) or SIGTERM.
    pub duration: Option<Duration>,
    /// Only this cluster (`--cluster DATADIR`).
    pub cluster: Option<PathBuf>,
    /// Where to write the JSON report (`-`: standard output, instead of the
    /// text report).
    pub json: Option<PathBuf>,
    /// The log2 histograms in the text report.
    pub verbose: bool,
}

/// Bad `trace` input, found before anything is loaded.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("--cluster {0}: no such directory")]
    NoSuchDir(String),
    #[error("--cluster {0}: no PostgreSQL is running there (no postmaster.pid)")]
    NotRunning(String),
    #[error("--cluster {dir}: postmaster.pid names pid {pid}, which is not running")]
    Stale { dir: String, pid: u32 },
}

/// A session length: `30s`, `2m`, `1h`, `1m30s`, `500ms` (not zero).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like 30s, 2m or 1h"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: the duration must be more than zero"));
    }
    Ok(d)
}

/// The cluster label of a data directory: its canonical path, as
/// `/proc/<postmaster>/cwd` shows it. The cluster must be running.
pub fn resolve_cluster(dir: &Path, procfs: &ProcFs) -> Result<String, TraceError> {
    let shown = dir.display().to_string();
    let canon = dir
        .canonicalize()
        .ok()
        .filter(|p| p.is_dir())
        .ok_or_else(|| TraceError::NoSuchDir(shown.clone()))?;
    let pid_file = std::fs::read_to_string(canon.join("postmaster.pid"))
        .map_err(|_| TraceError::NotRunning(shown.clone()))?;
    let pid: u32 = pid_file
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| TraceError::NotRunning(shown.clone()))?;
    if !procfs.exists(pid) {
        return Err(TraceError::Stale { dir: shown, pid });
    }
    Ok(canon.display().to_string())
}

/// Runs a session to its end and prints (and writes) the report.
pub fn run(opts: TraceOptions) -> anyhow::Result<()> {
    // The report file must be writable before anything is loaded.
    let json_out = match opts.json.as_deref() {
        Some(p) if p != Path::new("-") => Some(JsonFile::open(p)?),
        _ => None,
    };
    let json_stdout = opts.json.as_deref() == Some(Path::new("-"));
    // JSON on standard output replaces the view and the text report.
    let report = record(&opts, !json_stdout)?;
    if json_stdout {
        println!("{}", report.to_json());
        return Ok(());
    }
    print!("{}", report::render(&report, opts.verbose));
    if let Some(f) = json_out {
        let shown = f.path.display().to_string();
        f.write(&report.to_json())?;
        println!("\nreport written to {shown}");
    }
    Ok(())
}

/// Runs a session to its end (showing the live view if `live`) and
/// returns its report, with everything detached.
pub fn record(opts: &TraceOptions, live: bool) -> anyhow::Result<Report> {
    let procfs = ProcFs::default();
    let cluster = opts
        .cluster
        .as_deref()
        .map(|d| resolve_cluster(d, &procfs))
        .transpose()?;

    let cfg = Config {
        per_process: true,
        keep_departed: true,
        ..opts.config.clone()
    };
    let mut agent = Agent::start(&cfg)?;
    // The session (and its duration) starts when the programs attached.
    let started = agent.attached_at;
    let started_at =
        humantime::format_rfc3339_seconds(SystemTime::now() - started.elapsed()).to_string();
    let initial: HashSet<u32> = agent.tracker.procs.keys().copied().collect();
    let selection_text = match &cluster {
        Some(c) => format!("cluster {c}"),
        None => format!("comm {}", cfg.comms.join(",")),
    };
    log::info!(
        "trace session: {} programs attached, {} processes now, {}, {}",
        agent.attached_programs().len(),
        initial.len(),
        selection_text,
        opts.duration
            .map_or("until Ctrl-C".to_string(), |d| format!(
                "for {}",
                humantime::format_duration(d)
            ))
    );
    let info = collect::SessionInfo {
        started_at,
        duration_seconds: 0.0,
        selection: Selection {
            comms: cfg.comms.clone(),
            pids: cfg.pids.clone(),
            cluster: cluster.clone(),
        },
        filter: collect::Filter {
            cluster: cluster.clone(),
        },
    };

    let mut view = live.then(live_view::Output::detect);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let draw = |agent: &Agent, view: &mut Option<live_view::Output>| {
        let Some(out) = view.as_mut() else { return };
        let elapsed = started.elapsed();
        let mut i = info.clone();
        i.duration_seconds = elapsed.as_secs_f64();
        let r = collect::build(&collect::sample(agent, &initial), &i);
        let (w, h) = out.size();
        let frame = live_view::lines(
            &r,
            &live_view::FrameInfo {
                elapsed,
                duration: opts.duration,
                selection: &selection_text,
                max_process_rows: out.max_process_rows(),
            },
            w,
            h,
            &|pid| current_activity(&procfs, pid),
        );
        if let Err(e) = out.draw(&frame) {
            log::debug!("live view: {e}");
        }
    };
    rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let deadline = opts.duration.map(|d| started + d);
        let mut ticks = 0u64;
        draw(&agent, &mut view);
        loop {
            let until_end = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(10) {
                        agent.refresh();
                        draw(&agent, &mut view);
                    } else {
                        agent.poll();
                    }
                }
                _ = tokio::time::sleep(until_end.unwrap_or(Duration::MAX)), if until_end.is_some() => break,
                _ = sigint.recv() => { log::info!("SIGINT: ending the session"); break; }
                _ = sigterm.recv() => { log::info!("SIGTERM: ending the session"); break; }
            }
        }
        anyhow::Ok(())
    })?;

    agent.refresh();
    let mut i = info;
    i.duration_seconds = started.elapsed().as_secs_f64();
    let report = collect::build(&collect::sample(&agent, &initial), &i);
    // Detach everything before printing.
    drop(agent);
    drop(view);
    Ok(report)
}

/// The activity in a process's title now.
fn current_activity(procfs: &ProcFs, pid: u32) -> Option<String> {
    let title = procfs.title(pid)?;
    Some(parse_title(&title, false).activity)
}

/// The `--json` file, opened before the session so that a bad path fails
/// early; removed again if the session fails before writing it.
struct JsonFile {
    path: PathBuf,
    created: bool,
    written: bool,
}

impl JsonFile {
    fn open(path: &Path) -> anyhow::Result<JsonFile> {
        let created = !path.exists();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("--json {}: cannot write there", path.display()))?;
        Ok(JsonFile {
            path: path.to_path_buf(),
            created,
            written: false,
        })
    }

    fn write(mut self, text: &str) -> anyhow::Result<()> {
        std::fs::write(&self.path, format!("{text}\n"))
            .with_context(|| format!("writing the report to {}", self.path.display()))?;
        self.written = true;
        Ok(())
    }
}

impl Drop for JsonFile {
    fn drop(&mut self) {
        if self.created && !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        let e = parse_duration("abc").unwrap_err();
        assert!(
            e.contains("\"abc\" is not a duration") && e.contains("30s"),
            "{e}"
        );
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn clusters_resolve_to_their_canonical_running_datadir() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        std::fs::create_dir_all(proc_root.join("4242")).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let procfs = ProcFs::at(&proc_root);

        let e = resolve_cluster(&tmp.path().join("nope"), &procfs).unwrap_err();
        assert!(e.to_string().ends_with("nope: no such directory"), "{e}");
        let e = resolve_cluster(&data, &procfs).unwrap_err();
        assert!(e.to_string().contains("no PostgreSQL is running"), "{e}");
        std::fs::write(data.join("postmaster.pid"), "999\n").unwrap();
        let e = resolve_cluster(&data, &procfs).unwrap_err();
        assert!(
            e.to_string().contains("pid 999, which is not running"),
            "{e}"
        );
        std::fs::write(data.join("postmaster.pid"), "4242\n/data\n").unwrap();
        // A path with `..` and a symlink resolves to the canonical directory.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        let got = resolve_cluster(&link.join("..").join("data"), &procfs).unwrap();
        assert_eq!(got, data.canonicalize().unwrap().display().to_string());
        assert_eq!(
            resolve_cluster(&link, &procfs).unwrap(),
            data.canonicalize().unwrap().display().to_string()
        );
    }
}
