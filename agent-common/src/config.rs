//! Load-time settings and limits shared by both sides.

/// Length of a task's `comm`, including the terminating NUL.
pub const COMM_LEN: usize = 16;
/// At most this many `--comm` names.
pub const MAX_COMMS: usize = 8;
/// Group ids are below this (label sets of `cluster` x `backend_type`).
pub const MAX_GROUPS: u32 = 256;
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
    pub _pad: u32,
}

/// Where the classic tracepoint programs (process exit, futex syscalls) find
/// each field: byte offsets read from tracefs `format` files at start-up
/// (never hard-coded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub exit_group_dead: u32,
    pub futex_uaddr: u32,
    pub futex_op: u32,
    pub futex_wait_uaddr: u32,
    pub futex_wake_uaddr: u32,
    pub futex_waitv_uaddr: u32,
    pub sys_exit_ret: u32,
    pub _pad: u32,
}

/// The kernel programs load fields at aligned offsets below this, and
/// one-byte fields at offsets 24 to 40 (see `ctx_load!` in
/// agent-ebpf/src/task.rs).
pub const MAX_FIELD_END: usize = 64;

impl TracepointLayout {
    /// Checks that every field is at an offset the kernel programs can load.
    pub fn fits(&self) -> Result<(), (&'static str, u32)> {
        let checks: [(&'static str, u32, usize); 7] = [
            ("sched_process_exit group_dead", self.exit_group_dead, 1),
            ("sys_enter_futex uaddr", self.futex_uaddr, 8),
            ("sys_enter_futex op", self.futex_op, 4),
            ("sys_enter_futex_wait uaddr", self.futex_wait_uaddr, 8),
            ("sys_enter_futex_wake uaddr", self.futex_wake_uaddr, 8),
            ("sys_enter_futex_waitv waiters", self.futex_waitv_uaddr, 8),
            ("sys_exit_futex ret", self.sys_exit_ret, 8),
        ];
        for (name, off, size) in checks {
            let off_us = off as usize;
            let align = if size == 1 { 1 } else { size.min(8) };
            if size == 1 && off_us == 0 {
                continue; // an optional one-byte field this kernel lacks
            }
            let bytes_ok = size != 1 || (24..=40).contains(&off_us);
            if off_us < 8
                || off_us + size > MAX_FIELD_END
                || !off_us.is_multiple_of(align)
                || !bytes_ok
            {
                return Err((name, off));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    fn standard() -> TracepointLayout {
        TracepointLayout {
            exit_group_dead: 32,
            futex_uaddr: 16,
            futex_op: 24,
            futex_wait_uaddr: 16,
            futex_wake_uaddr: 16,
            futex_waitv_uaddr: 16,
            sys_exit_ret: 16,
            _pad: 0,
        }
    }

    #[test]
    fn the_6_x_layout_fits() {
        assert_eq!(standard().fits(), Ok(()));
    }

    #[test]
    fn a_kernel_without_group_dead_fits() {
        let mut l = standard();
        l.exit_group_dead = 0;
        assert_eq!(l.fits(), Ok(()));
    }

    #[test]
    fn misplaced_fields_are_refused() {
        let mut l = standard();
        l.sys_exit_ret = 60; // crosses the end
        assert_eq!(l.fits(), Err(("sys_exit_futex ret", 60)));
        let mut l = standard();
        l.futex_uaddr = 20; // misaligned u64
        assert!(l.fits().is_err());
        let mut l = standard();
        l.futex_uaddr = 4; // inside the common header
        assert!(l.fits().is_err());
    }
}
