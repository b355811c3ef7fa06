//! Attaching the `s_lock` uprobe and uretprobe to every distinct PostgreSQL
//! binary that a traced process runs (a new cluster, a minor upgrade), once
//! per binary. A binary without the symbol is reported once and skipped.
use std::{collections::HashSet, os::unix::fs::MetadataExt};

use aya::{
    programs::{uprobe::UProbeScope, ProgramError, UProbe},
    Ebpf,
};

/// The function probed: PostgreSQL's contended spinlock path.
pub const SYMBOL: &str = "s_lock";
const PROGRAMS: [&str; 2] = ["s_lock_enter", "s_lock_return"];

#[derive(Default)]
pub struct Uprobes {
    /// Both programs are loaded into the kernel (once, before any attach).
    loaded: bool,
    /// Binaries tried, by (device, inode): attached or failed.
    seen: HashSet<(u64, u64)>,
    pub attached: u64,
    pub errors: u64,
}

impl Uprobes {
    /// Attaches to the executable of `pid` unless its binary was seen. A
    /// binary that cannot be probed is reported once and counted.
    pub fn ensure(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let exe = format!("/proc/{pid}/exe");
        let meta = match std::fs::metadata(&exe) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return, // exited meanwhile
            Err(e) => {
                self.errors += 1;
                log::warn!("cannot read {exe}: {e}; spin metrics for pid {pid} are missing");
                return;
            }
        };
        if !self.seen.insert((meta.dev(), meta.ino())) {
            return;
        }
        let shown = std::fs::read_link(&exe)
            .map(|p| p.display().to_string())
            .unwrap_or(exe.clone());
        match self.attach(ebpf, &exe) {
            Ok(()) => {
                self.attached += 1;
                log::info!("spinlock probes attached to {SYMBOL} in {shown}");
            }
            Err(e) => {
                self.errors += 1;
                // Since mid-2025 (commit "perf/core: Require CAP_SYS_ADMIN
                // for uprobes", also in the stable series) CAP_PERFMON is not
                // enough to create a uprobe.
                let hint = if e.contains("Permission denied") {
                    " (on this kernel uprobes need CAP_SYS_ADMIN; grant it, or run with --no-uprobes)"
                } else {
                    ""
                };
                log::warn!("cannot probe {SYMBOL} in {shown} (pid {pid}): {e}{hint}; spin metrics for it are missing");
            }
        }
    }

    fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe, String> {
        ebpf.program_mut(name)
            .ok_or_else(|| format!("program {name} missing"))?
            .try_into()
            .map_err(|e: ProgramError| e.to_string())
    }

    /// Attaches both probes, or neither: an entry probe without its return
    /// probe would leave tasks marked as spinning forever.
    fn attach(&mut self, ebpf: &mut Ebpf, target: &str) -> Result<(), String> {
        if !self.loaded {
            for name in PROGRAMS {
                Self::program(ebpf, name)?
                    .load()
                    .map_err(|e| format!("loading {name}: {e}"))?;
            }
            self.loaded = true;
        }
        // The return probe first: a task that enters `s_lock` between the
        // two attaches is then seen leaving it without having entered
        // (ignored), never entering without leaving (counted as spinning).
        let [enter, ret] = PROGRAMS;
        let link = Self::program(ebpf, ret)?
            .attach(SYMBOL, target, UProbeScope::AllProcesses)
            .map_err(|e| chain(&e))?;
        if let Err(e) =
            Self::program(ebpf, enter)?.attach(SYMBOL, target, UProbeScope::AllProcesses)
        {
            let _ = Self::program(ebpf, ret)?.detach(link);
            return Err(chain(&e));
        }
        Ok(())
    }
}

/// An error with its causes: "`perf_event_open` failed: Permission denied".
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
