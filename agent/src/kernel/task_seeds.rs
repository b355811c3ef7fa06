//! Where each traced thread's run-queue time stood when the agent started.
//!
//! The kernel programs measure wakeup latency as the growth of a thread's
//! own run-queue time (`sched_info.run_delay`) between its switch-outs. At a
//! thread's first switch-out after start-up that figure still holds every
//! wait since the thread was born; the seeds written here (from
//! `/proc/PID/task/TID/schedstat`, after the programs are attached) say
//! where it stood, so that a session started while PostgreSQL sleeps counts
//! the wakeups that end inside it.
use std::{fs, path::Path};

use agent_common::stats::TaskSeed;
use aya::maps::{HashMap as BpfHashMap, MapData};

use crate::error::AgentError;

/// The seed of one thread from its `schedstat` and `stat` files: `None` if
/// the thread is gone or the files are not what the kernel writes.
pub fn parse(schedstat: &str, stat: &str) -> Option<TaskSeed> {
    // "<on-cpu ns> <run-queue ns> <timeslices>"
    let mut fields = schedstat.split_whitespace();
    let sum_exec = fields.next()?.parse().ok()?;
    let run_delay = fields.next()?.parse().ok()?;
    // "<tid> (<comm>) <state> ...": the comm may hold spaces and ')'.
    let state = stat[stat.rfind(')')? + 1..].split_whitespace().next()?;
    Some(TaskSeed {
        run_delay,
        sum_exec,
        // R: running or queued. Its wait (if any) began before start-up.
        slept: u32::from(state != "R"),
        _pad: 0,
    })
}

/// The seeds of every thread of process `pid` under a /proc root.
pub fn of_process(proc_root: &Path, pid: u32) -> Vec<(u32, TaskSeed)> {
    let tasks = proc_root.join(pid.to_string()).join("task");
    let Ok(rd) = fs::read_dir(&tasks) else {
        return Vec::new();
    };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let schedstat = fs::read_to_string(e.path().join("schedstat")).ok()?;
        let stat = fs::read_to_string(e.path().join("stat")).ok()?;
        Some((tid, parse(&schedstat, &stat)?))
    })
    .collect()
}

/// Writes the seeds of these processes' threads into the `SEEDS` map.
/// Returns how many were written.
pub fn write(
    map: &mut BpfHashMap<MapData, u32, TaskSeed>,
    proc_root: &Path,
    pids: impl IntoIterator<Item = u32>,
) -> Result<usize, AgentError> {
    let mut n = 0;
    for pid in pids {
        for (tid, seed) in of_process(proc_root, pid) {
            // BPF_NOEXIST is not needed: a seed is only read at a thread's
            // first switch-out, and a thread that already had one never
            // looks again (the map is LRU).
            map.insert(tid, seed, 0).map_err(|e| AgentError::Map {
                map: "SEEDS",
                detail: e.to_string(),
            })?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_thread_waits_for_a_wakeup() {
        let s = parse(
            "1520038 73466 41\n",
            "4242 (postgres) S 1 4242 4242 0 -1 4194560 ...",
        )
        .unwrap();
        assert_eq!(
            s,
            TaskSeed {
                run_delay: 73466,
                sum_exec: 1520038,
                slept: 1,
                _pad: 0
            }
        );
        // D (uninterruptible) and I (idle kernel thread) sleep too.
        assert_eq!(parse("1 2 3", "7 (x) D 1").unwrap().slept, 1);
    }

    #[test]
    fn a_running_or_queued_thread_does_not() {
        let s = parse("10 20 3\n", "7 (a) b) R 1 7").unwrap();
        assert_eq!((s.run_delay, s.slept), (20, 0));
    }

    #[test]
    fn garbage_or_a_vanished_thread_gives_nothing() {
        assert!(parse("", "7 (x) S").is_none());
        assert!(parse("1 x 3", "7 (x) S").is_none());
        assert!(parse("1 2 3", "no parenthesis").is_none());
        assert!(parse("1 2 3", "7 (x)").is_none());
        let tmp = tempfile::tempdir().unwrap();
        assert!(of_process(tmp.path(), 1).is_empty());
    }

    #[test]
    fn reads_every_thread_of_a_process() {
        let tmp = tempfile::tempdir().unwrap();
        for (tid, stat) in [(10, "10 (pg) S 1"), (11, "11 (pg) R 1")] {
            let d = tmp.path().join("10/task").join(tid.to_string());
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("schedstat"), format!("5 {tid}00 2\n")).unwrap();
            fs::write(d.join("stat"), stat).unwrap();
        }
        let mut seeds = of_process(tmp.path(), 10);
        seeds.sort_by_key(|(t, _)| *t);
        assert_eq!(seeds.len(), 2);
        assert_eq!(
            (seeds[0].0, seeds[0].1.run_delay, seeds[0].1.slept),
            (10, 1000, 1)
        );
        assert_eq!(
            (seeds[1].0, seeds[1].1.run_delay, seeds[1].1.slept),
            (11, 1100, 0)
        );
    }
}
