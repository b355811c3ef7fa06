//! The only per-event record: process lifecycle notices for the agent.

/// A traced process was seen for the first time; classify it.
pub const PROC_NEW: u32 = 1;
/// A traced process exited (its last thread); harvest and forget it.
/// Carries its title and how long it lived.
pub const PROC_EXIT: u32 = 2;
/// A process of a known cluster forked a traced process (`ppid` is the
/// parent): the kernel gave the child its parent's `child_group` already.
pub const PROC_FORK: u32 = 3;

/// How much of a process's title an exit notice carries: enough for the
/// backend type and a client's user, database and host.
pub const TITLE_LEN: usize = 128;

/// The head of every notice, and all of a `PROC_NEW` (sent from
/// `sched_switch`, whose stack has no room for a whole [`ProcEvent`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcNotice {
    pub kind: u32,
    pub tgid: u32,
}

/// A `PROC_FORK` or `PROC_EXIT` notice.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    pub tgid: u32,
    /// `PROC_FORK`: the parent's process id.
    pub ppid: u32,
    /// `PROC_EXIT`: how many bytes of `title` hold the title (0: it could
    /// not be read, e.g. the kernel had released the memory first).
    pub title_len: u32,
    /// `PROC_EXIT`: the time from the process's start (its leader's
    /// `start_time`) to its exit, in ns.
    pub lifetime_ns: u64,
    /// `PROC_EXIT`: the start of the process's argv area, which PostgreSQL
    /// overwrites with its title (`/proc/PID/cmdline`), NUL-terminated.
    pub title: [u8; TITLE_LEN],
}

impl ProcEvent {
    /// A notice with no title.
    pub const fn new(kind: u32, tgid: u32) -> Self {
        ProcEvent {
            kind,
            tgid,
            ppid: 0,
            title_len: 0,
            lifetime_ns: 0,
            title: [0; TITLE_LEN],
        }
    }

    /// The title as text (up to the first NUL), if the kernel read one.
    pub fn title(&self) -> Option<&[u8]> {
        let n = (self.title_len as usize).min(TITLE_LEN);
        if n == 0 {
            return None;
        }
        let t = &self.title[..n];
        let end = t.iter().position(|&b| b == 0).unwrap_or(n);
        (end > 0).then(|| &t[..end])
    }
}
