//! The PostgreSQL clusters running on a host, as `pgpreempt check` shows
//! them: data directory, version, postmaster, backends, whether `s_lock`
//! can be probed in the binary, and whether shared memory is on huge pages.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::postgres::shared_memory::{self, HugePages};
use crate::{
    kernel::uprobes::SYMBOL, postgres::backend_type::parse_title, postgres::processes::ProcFs,
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cluster {
    pub data_directory: String,
    pub postmaster_pid: u32,
    /// The postmaster's binary (`/proc/PID/exe`).
    pub binary: Option<String>,
    /// e.g. `15.14`, None if neither source answered.
    pub version: Option<String>,
    /// Where the version came from.
    pub version_source: String,
    /// The postmaster and its children.
    pub processes: u64,
    pub client_backends: u64,
    /// `s_lock` found in the binary's symbol tables: the spin probes attach.
    pub s_lock_probeable: bool,
    pub s_lock_detail: String,
    /// None when smaps could not be read (`huge_pages_detail` says why).
    pub huge_pages: Option<HugePages>,
    pub huge_pages_detail: String,
}

/// Runs `<binary> --version` (at most 5 s) and returns its first line.
pub fn run_version(binary: &Path) -> Option<String> {
    let mut child = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().map(|l| l.trim().to_string())
}

/// The version in `postgres --version` output: `postgres (PostgreSQL)
/// 15.14 (Debian 15.14-0+deb12u1)` gives `15.14`.
pub fn parse_version(line: &str) -> Option<String> {
    let rest = line.split_once("(PostgreSQL)")?.1;
    rest.split_whitespace().next().map(str::to_string)
}

/// Looks `symbol` up in an ELF file's dynamic and static symbol tables, as
/// the uprobe attach does.
pub fn find_symbol(binary: &Path, symbol: &str) -> Result<String, String> {
    use object::{Object, ObjectSymbol};
    let data =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let file = object::File::parse(&*data).map_err(|e| {
        format!(
            "{} is not an ELF file the probes can use ({e})",
            binary.display()
        )
    })?;
    let defined = |s: &object::Symbol| s.name() == Ok(symbol) && s.is_definition();
    if file.dynamic_symbols().any(|s| defined(&s)) {
        return Ok(format!(
            "{symbol} is exported (.dynsym) by {}",
            binary.display()
        ));
    }
    if file.symbols().any(|s| defined(&s)) {
        return Ok(format!(
            "{symbol} is in the symbol table of {}",
            binary.display()
        ));
    }
    Err(format!(
        "{} has no {symbol} symbol: no spin metrics for this cluster",
        binary.display()
    ))
}

/// Finds every running cluster: a traced-comm process whose cwd holds a
/// `postmaster.pid` naming it. `version_of` runs a binary's `--version`.
pub fn find(proc_root: &Path, version_of: &dyn Fn(&Path) -> Option<String>) -> Vec<Cluster> {
    let procfs = ProcFs::at(proc_root);
    let pids = procfs.pids();
    let mut out = Vec::new();
    for &pid in &pids {
        if !matches!(procfs.comm(pid).as_deref(), Some("postgres" | "postmaster")) {
            continue;
        }
        let Some(dir) = procfs.postmaster_datadir(pid) else {
            continue;
        };
        let mut processes = 1;
        let mut client_backends = 0;
        for &c in &pids {
            if procfs.ppid(c) == Some(pid) {
                processes += 1;
                if procfs
                    .title(c)
                    .is_some_and(|t| parse_title(&t, false).backend_type == "client backend")
                {
                    client_backends += 1;
                }
            }
        }
        let exe_link = proc_root.join(pid.to_string()).join("exe");
        let binary: Option<PathBuf> = std::fs::read_link(&exe_link).ok();
        // A binary replaced since start reads "(deleted)": use the link itself.
        let runnable = match &binary {
            Some(b) if b.exists() => b.clone(),
            _ => exe_link.clone(),
        };
        let (version, version_source) = match version_of(&runnable).and_then(|l| {
            let v = parse_version(&l)?;
            Some((v, l))
        }) {
            Some((v, line)) => (
                Some(v),
                format!("`{} --version`: {line}", runnable.display()),
            ),
            None => match crate::postgres::processes::pg_version(&dir.display().to_string()) {
                Some(major) => (
                    Some(major),
                    format!(
                        "{}/PG_VERSION (major version only; `--version` of the binary did not answer)",
                        dir.display()
                    ),
                ),
                None => (None, "neither `--version` nor PG_VERSION could be read".into()),
            },
        };
        let (s_lock_probeable, s_lock_detail) = match find_symbol(&runnable, SYMBOL) {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        let smaps_path = proc_root.join(pid.to_string()).join("smaps");
        let (huge_pages, huge_pages_detail) = match std::fs::read_to_string(&smaps_path) {
            Ok(text) => match shared_memory::assess(&text) {
                Some(h) => {
                    let s = h.summary.clone();
                    (Some(h), s)
                }
                None => (
                    None,
                    format!("no shared memory segment found in {}", smaps_path.display()),
                ),
            },
            Err(e) => (None, format!("cannot read {}: {e}", smaps_path.display())),
        };
        out.push(Cluster {
            data_directory: dir.display().to_string(),
            postmaster_pid: pid,
            binary: binary.map(|b| b.display().to_string()),
            version,
            version_source,
            processes,
            client_backends,
            s_lock_probeable,
            s_lock_detail,
            huge_pages,
            huge_pages_detail,
        });
    }
    out.sort_by(|a, b| a.data_directory.cmp(&b.data_directory));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_binary() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)").as_deref(),
            Some("15.14")
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18.1").as_deref(),
            Some("18.1")
        );
        assert_eq!(parse_version("bash, version 5"), None);
    }

    #[test]
    fn symbols_are_found_in_elf_files() {
        let me = std::env::current_exe().unwrap();
        let found = find_symbol(&me, "main").unwrap();
        assert!(found.contains("main"), "{found}");
        let e = find_symbol(&me, "s_lock").unwrap_err();
        assert!(e.contains("has no s_lock symbol"), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("x.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(find_symbol(&script, "s_lock")
            .unwrap_err()
            .contains("not an ELF file"));
        assert!(find_symbol(&tmp.path().join("none"), "s_lock")
            .unwrap_err()
            .starts_with("cannot read"));
    }
}
