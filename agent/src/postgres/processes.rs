//! Finding traced processes in /proc and working out their labels:
//! `cluster` (the postmaster's data directory, or `pid:<parent>`) and
//! `backend_type` (from the process title).
use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::postgres::backend_type::{parse_title, FORKED_CHILD};

/// A process's labels and what its title says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub cluster: String,
    pub backend_type: &'static str,
    pub activity: String,
    pub settled: bool,
}

impl Classified {
    /// A process that was gone before its title could be read: counted in
    /// the unassigned group (see `groups`).
    pub fn unclassified() -> Self {
        Self {
            cluster: crate::postgres::groups::UNASSIGNED_CLUSTER.to_string(),
            backend_type: "other",
            activity: String::new(),
            settled: true,
        }
    }
}

/// Reads /proc under a root (`/proc`, or a fixture in tests).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/proc"),
        }
    }
}

impl ProcFs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    pub fn comm(&self, pid: u32) -> Option<String> {
        fs::read_to_string(self.path(pid, "comm"))
            .ok()
            .map(|s| s.trim_end().to_string())
    }

    /// The title: cmdline with NULs as spaces.
    pub fn title(&self, pid: u32) -> Option<String> {
        let raw = fs::read(self.path(pid, "cmdline")).ok()?;
        let s = String::from_utf8_lossy(&raw).replace('\0', " ");
        Some(s.trim_end().to_string())
    }

    /// The parent pid, from `stat` (field 4, after the parenthesised comm).
    pub fn ppid(&self, pid: u32) -> Option<u32> {
        let stat = fs::read_to_string(self.path(pid, "stat")).ok()?;
        let after = &stat[stat.rfind(')')? + 1..];
        after.split_whitespace().nth(1)?.parse().ok()
    }

    pub fn cwd(&self, pid: u32) -> Option<PathBuf> {
        fs::read_link(self.path(pid, "cwd")).ok()
    }

    pub fn exists(&self, pid: u32) -> bool {
        self.root.join(pid.to_string()).exists()
    }

    /// Every pid in /proc.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(rd) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// The data directory if `pid` is a postmaster: its cwd holds a
    /// `postmaster.pid` whose first line is `pid`. The file is read through
    /// the `/proc/PID/cwd` link, not by its path, so this works where the
    /// agent sees another file system than PostgreSQL (a container, or a
    /// systemd unit with PrivateTmp= or ProtectHome=).
    pub fn postmaster_datadir(&self, pid: u32) -> Option<PathBuf> {
        let cwd = self.cwd(pid)?;
        let first = read_first_line(&self.path(pid, "cwd").join("postmaster.pid"))?;
        (first.trim().parse::<u32>().ok()? == pid).then_some(cwd)
    }

    /// Classifies a traced process. `None` if it is gone.
    pub fn classify(&self, pid: u32) -> Option<Classified> {
        let title = self.title(pid)?;
        if let Some(dir) = self.postmaster_datadir(pid) {
            let t = parse_title(&title, true);
            return Some(Classified {
                cluster: dir.display().to_string(),
                backend_type: t.backend_type,
                activity: t.activity,
                settled: true,
            });
        }
        let ppid = self.ppid(pid)?;
        let t = parse_title(&title, false);
        let (cluster, backend_type) = match self.postmaster_datadir(ppid) {
            // A fresh child of a postmaster: what the kernel counts it as
            // from its fork (see `FORKED_CHILD`).
            Some(dir) if !t.settled => (dir.display().to_string(), FORKED_CHILD),
            Some(dir) => (dir.display().to_string(), t.backend_type),
            None => (format!("pid:{ppid}"), t.backend_type),
        };
        Some(Classified {
            cluster,
            backend_type,
            activity: t.activity,
            settled: t.settled,
        })
    }
}

fn read_first_line(p: &Path) -> Option<String> {
    fs::read_to_string(p)
        .ok()?
        .lines()
        .next()
        .map(str::to_string)
}

/// The major version in a data directory's `PG_VERSION` (None for a cluster
/// label that is not a directory, or an unreadable file).
pub fn pg_version(datadir: &str) -> Option<String> {
    let v = std::fs::read_to_string(std::path::Path::new(datadir).join("PG_VERSION")).ok()?;
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn proc_entry(root: &Path, pid: u32, ppid: u32, comm: &str, cmdline: &str, cwd: &Path) {
        let d = root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("cmdline"), cmdline.replace(' ', "\0")).unwrap();
        fs::write(d.join("stat"), format!("{pid} ({comm}) S {ppid} 1 1 0 -1")).unwrap();
        symlink(cwd, d.join("cwd")).unwrap();
    }

    #[test]
    fn classifies_a_cluster_from_fixture_proc() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let data = tmp.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("postmaster.pid"), "100\n/data\n").unwrap();
        proc_entry(
            &proc_root,
            100,
            1,
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres -D /data",
            &data,
        );
        proc_entry(
            &proc_root,
            101,
            100,
            "postgres",
            "postgres: checkpointer ",
            &data,
        );
        proc_entry(
            &proc_root,
            102,
            100,
            "postgres",
            "postgres: u db [local] idle",
            &data,
        );
        proc_entry(
            &proc_root,
            103,
            100,
            "postgres",
            "/usr/lib/postgresql/15/bin/postgres -D /data",
            &data,
        );
        proc_entry(&proc_root, 200, 50, "worker", "worker --spin", tmp.path());
        let p = ProcFs::at(&proc_root);
        let dir = data.display().to_string();

        let pm = p.classify(100).unwrap();
        assert_eq!(
            (pm.cluster.as_str(), pm.backend_type),
            (dir.as_str(), "postmaster")
        );
        let ck = p.classify(101).unwrap();
        assert_eq!(
            (ck.cluster.as_str(), ck.backend_type),
            (dir.as_str(), "checkpointer")
        );
        let cb = p.classify(102).unwrap();
        assert_eq!(
            (cb.backend_type, cb.activity.as_str()),
            ("client backend", "idle")
        );
        let fresh = p.classify(103).unwrap();
        assert_eq!(
            (fresh.cluster.as_str(), fresh.backend_type, fresh.settled),
            (dir.as_str(), "client backend", false),
            "a fresh child of a postmaster is counted as a client backend until its title says otherwise"
        );
        let lone = p.classify(200).unwrap();
        assert_eq!(
            (lone.cluster.as_str(), lone.backend_type),
            ("pid:50", "other")
        );
        assert!(p.classify(999).is_none());
        assert_eq!(p.ppid(102), Some(100));
        assert_eq!(p.comm(200).as_deref(), Some("worker"));
        let mut pids = p.pids();
        pids.sort();
        assert_eq!(pids, vec![100, 101, 102, 103, 200]);
    }

    #[test]
    fn a_stale_postmaster_pid_file_is_not_a_postmaster() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let data = tmp.path().join("data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("postmaster.pid"), "4242\n").unwrap();
        proc_entry(&proc_root, 100, 7, "postgres", "postgres -D x", &data);
        let c = ProcFs::at(&proc_root).classify(100).unwrap();
        assert_eq!(c.cluster, "pid:7");
    }
}
