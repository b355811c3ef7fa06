//! Load-time settings and limits shared by both sides.

/// Length of a task's `comm`, including the terminating NUL.
pub const COMM_LEN: usize = 16;
/// At most this many `--comm` names.
pub const MAX_COMMS: usize = 8;
/// Group ids are below this (label sets of `cluster` x `backend_type`): the
/// most `--max-groups` allows.
pub const MAX_GROUPS: u32 = 256;
/// Default number of groups (`--max-groups`): the per-group statistics are a
/// per-CPU array of `GroupStats` (864 bytes, 108 KiB per CPU at 128) and one
/// shared array of `SharedGroupStats` (1,152 bytes, 144 KiB at 128).
pub const DEFAULT_MAX_GROUPS: u32 = 128;
/// Default capacity of the spinlock call-site map (`--max-spin-sites`), a
/// per-CPU hash of `SpinStats` (216 bytes, 27 KiB per CPU at 128), with the
/// sites' names in a hash of one 64-byte copy each.
pub const DEFAULT_MAX_SPIN_SITES: u32 = 128;
/// Command names (per cluster) of the tasks that took the CPU from traced
/// ones, counted apart; the rest are counted under `PREEMPTOR_OVERFLOW`.
pub const MAX_PREEMPTORS: u32 = 1024;
/// Default capacity of the per-process map (`--max-processes`).
pub const DEFAULT_MAX_PROCESSES: u32 = 8192;
/// Capacity of the per-task (thread) map, an LRU.
pub const DEFAULT_MAX_TASKS: u32 = 32768;

/// The comm filter, as the kernel compares it: each name NUL-padded to
/// 16 bytes and read as two little-endian u64 words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommFilter {
    pub words: [[u64; 2]; MAX_COMMS],
    pub len: u32,
    pub _pad: u32,
}

impl CommFilter {
    /// Builds the filter; `None` if there are too many names or one is longer
    /// than the kernel keeps (15 bytes).
    pub fn new<'a>(names: impl IntoIterator<Item = &'a [u8]>) -> Option<Self> {
        let mut f = Self::default();
        for name in names {
            if name.is_empty() || name.len() >= COMM_LEN || f.len as usize >= MAX_COMMS {
                return None;
            }
            let mut buf = [0u8; COMM_LEN];
            buf[..name.len()].copy_from_slice(name);
            let lo = u64::from_le_bytes([
                buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7],
            ]);
            let hi = u64::from_le_bytes([
                buf[8], buf[9], buf[10], buf[11], buf[12], buf[13], buf[14], buf[15],
            ]);
            f.words[f.len as usize] = [lo, hi];
            f.len += 1;
        }
        Some(f)
    }

    /// True if the comm words (as read from the kernel) match one of the names.
    #[inline(always)]
    pub fn matches(&self, lo: u64, hi: u64) -> bool {
        Self::matches_with(self.len, |i| self.words[i], lo, hi)
    }

    /// The matching loop, over names read through `word` (the kernel
    /// programs read them with volatile loads from a load-time global), so
    /// that the kernel runs the code these tests check.
    #[inline(always)]
    pub fn matches_with(len: u32, word: impl Fn(usize) -> [u64; 2], lo: u64, hi: u64) -> bool {
        let mut i = 0;
        while i < MAX_COMMS {
            if i as u32 >= len {
                return false;
            }
            let w = word(i);
            if w[0] == lo && w[1] == hi {
                return true;
            }
            i += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[u8]) -> (u64, u64) {
        let mut b = [0u8; 16];
        b[..s.len()].copy_from_slice(s);
        (
            u64::from_le_bytes(b[..8].try_into().unwrap()),
            u64::from_le_bytes(b[8..].try_into().unwrap()),
        )
    }

    #[test]
    fn matches_exact_names_only() {
        let f = CommFilter::new([&b"postgres"[..], b"postmaster"]).unwrap();
        let (lo, hi) = words(b"postgres");
        assert!(f.matches(lo, hi));
        let (lo, hi) = words(b"postmaster");
        assert!(f.matches(lo, hi));
        let (lo, hi) = words(b"postgre");
        assert!(!f.matches(lo, hi));
        let (lo, hi) = words(b"postgres2");
        assert!(!f.matches(lo, hi));
    }

    #[test]
    fn rejects_names_the_kernel_cannot_hold() {
        assert!(CommFilter::new([&b"0123456789abcdef"[..]]).is_none());
        assert!(CommFilter::new([&b""[..]]).is_none());
        let many: [&[u8]; 9] = [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i"];
        assert!(CommFilter::new(many).is_none());
        let fifteen = CommFilter::new([&b"0123456789abcde"[..]]).unwrap();
        let (lo, hi) = words(b"0123456789abcde");
        assert!(fifteen.matches(lo, hi));
    }
}

/// Where the scheduler programs (`tp_btf`, which get `struct task_struct *`
/// arguments) find the task's fields: byte offsets read from the kernel's
/// BTF at start-up, since rustc emits no CO-RE relocations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskLayout {
    /// `pid` (the thread id).
    pub pid: u32,
    /// `tgid` (the process id).
    pub tgid: u32,
    /// `comm` (16 bytes).
    pub comm: u32,
    /// `sched_info.run_delay` (u64): the kernel's run-queue time of the task
    /// (schedstat's second field), used for wakeup latency.
    pub run_delay: u32,
    /// `sched_info.pcount` (unsigned long): how many times it has run.
    pub pcount: u32,
    /// `start_time` (u64, ns since boot): with the task's address, who the
    /// task is (a tid and a freed task_struct are both reused).
    pub start_time: u32,
    /// `struct vm_area_struct`'s `vm_flags` (unsigned long) and `vm_file`
    /// (a pointer): where a page fault lands.
    pub vma_flags: u32,
    pub vma_file: u32,
    /// `task_struct.real_parent` (a pointer): a new backend's cluster is its
    /// parent's until the agent has classified it.
    pub real_parent: u32,
    /// `task_struct.mm`, `mm_struct.mm_lock_seq.sequence` (u32; bumped when
    /// `mmap_lock` is taken and released for writing, which every change of
    /// the mappings needs) and `vm_area_struct.vm_start`/`vm_end`: a fault's
    /// mapping, once looked up, is reused while the sequence holds.
    /// `mm_lock_seq` is `NO_FIELD` where the kernel has no per-VMA locks.
    pub task_mm: u32,
    pub mm_lock_seq: u32,
    pub vma_start: u32,
    pub vma_end: u32,
    /// `task_struct.pagefault_disabled` (int): a fault taken with page
    /// faults disabled (`copy_*_nofault`, `bpf_probe_read_user`, a
    /// profiler's stack walk) is refused by the kernel and not the task's.
    pub pagefault_disabled: u32,
    /// `task_struct.self_exec_id` (u32 or u64, bumped by every exec; its
    /// low 32 bits are read): part of the key of a cached mapping (an `mm`
    /// address can be reused by a later exec of the same process).
    pub self_exec_id: u32,
    /// `task_struct.se.sum_exec_runtime` (u64): the task's time on a CPU
    /// (schedstat's first field), brought up to date before `sched_switch`.
    pub sum_exec_runtime: u32,
    /// `task_struct.group_leader` (a pointer): the process's leader, whose
    /// `start_time` tells a process from an earlier one with the same pid
    /// (part of the key of a cached mapping: a reused pid can also get the
    /// freed `mm` back, with the same lock sequence).
    pub group_leader: u32,
    /// `mm_struct.arg_start` and `arg_end` (unsigned long): where the
    /// process's argv lies, which PostgreSQL overwrites with its title;
    /// read at `sched_process_exit` for a process that exits before the
    /// agent read its title.
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub _pad: u32,
}

/// A `TaskLayout` offset this kernel does not have.
pub const NO_FIELD: u32 = u32::MAX;

/// What the tracefs `format` files say about this kernel's tracepoints.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    /// Non-zero if `sched_process_exit` has `group_dead` (Linux 6.16+): its
    /// offset in the classic record. The tp_btf program then reads its
    /// second argument; without it, a process is gone when its leader exits.
    pub exit_group_dead: u32,
    pub _pad: u32,
}
