//! Telling a futex wait from a futex wake by the system call a task is in.
//!
//! The scheduler programs read the syscall number and futex(2)'s `op`
//! from the task's saved user registers (`bpf_task_pt_regs`):
//! a task that switches out voluntarily inside a futex wait is a blocked
//! lock waiter, and the task that wakes it from inside a futex wake is the
//! one it waited for. No syscall tracepoint is attached, so no syscall of
//! any task is put on the kernel's slower traced path (BENCHMARKS.md).

/// Where the registers are, and this architecture's futex syscall numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallLayout {
    /// Byte offsets in `struct pt_regs` (from the kernel's BTF) of the
    /// syscall number (`orig_ax`; arm64 `syscallno`) and of the second
    /// argument, futex(2)'s `op` (`si`; arm64 `regs[1]`).
    pub nr: u32,
    pub op: u32,
    /// Size of the syscall number: 8 (x86-64 `orig_ax`) or 4 (arm64's
    /// `s32 syscallno`).
    pub nr_size: u32,
    pub _pad: u32,
    /// futex(2), futex_wait(2), futex_wake(2), futex_waitv(2).
    pub numbers: [u32; 4],
}

/// Not a futex wait or wake.
pub const CALL_NONE: u32 = 0;
/// futex(2) FUTEX_WAIT, FUTEX_WAIT_BITSET; futex_wait(2), futex_waitv(2).
pub const CALL_WAIT: u32 = 1;
/// futex(2) FUTEX_WAKE, _REQUEUE, _CMP_REQUEUE, _WAKE_OP, _WAKE_BITSET;
/// futex_wake(2).
pub const CALL_WAKE: u32 = 2;

/// `op & FUTEX_CMD_MASK` strips FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
const FUTEX_CMD_MASK: u64 = 127;

/// The kind of futex call `nr(op, ...)` is, given the futex syscall
/// `numbers` of [`SyscallLayout`]. `nr` is the saved syscall number (-1, or
/// any other value, outside a syscall).
#[inline(always)]
pub fn classify(numbers: [u32; 4], nr: u64, op: u64) -> u32 {
    if nr == numbers[0] as u64 {
        match op & FUTEX_CMD_MASK {
            0 | 9 => CALL_WAIT,
            1 | 3 | 4 | 5 | 10 => CALL_WAKE,
            _ => CALL_NONE,
        }
    } else if nr == numbers[1] as u64 || nr == numbers[3] as u64 {
        CALL_WAIT
    } else if nr == numbers[2] as u64 {
        CALL_WAKE
    } else {
        CALL_NONE
    }
}

/// This architecture's futex syscall numbers, in [`SyscallLayout::numbers`]
/// order; `None` where pgpreempt does not know them.
pub fn syscall_numbers(arch: &str) -> Option<[u32; 4]> {
    match arch {
        // arch/x86/entry/syscalls/syscall_64.tbl
        "x86_64" => Some([202, 455, 454, 449]),
        // include/uapi/asm-generic/unistd.h
        "aarch64" => Some([98, 455, 454, 449]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: [u32; 4] = [202, 455, 454, 449];

    #[test]
    fn postgres_semaphores_are_waits_and_posts_are_wakes() {
        // glibc sem_wait: FUTEX_WAIT_BITSET | FUTEX_CLOCK_REALTIME, shared
        // (no FUTEX_PRIVATE_FLAG: the semaphore is in shared memory).
        assert_eq!(classify(X86, 202, 9 | 256), CALL_WAIT);
        assert_eq!(classify(X86, 202, 128), CALL_WAIT); // FUTEX_WAIT, private
                                                        // sem_post: FUTEX_WAKE.
        assert_eq!(classify(X86, 202, 1), CALL_WAKE);
        assert_eq!(classify(X86, 202, 1 | 128), CALL_WAKE);
        assert_eq!(classify(X86, 202, 5), CALL_WAKE);
    }

    #[test]
    fn other_calls_are_neither() {
        assert_eq!(classify(X86, 202, 6), CALL_NONE); // FUTEX_LOCK_PI
        assert_eq!(classify(X86, 0, 0), CALL_NONE); // read(2)
        assert_eq!(classify(X86, u64::MAX, 0), CALL_NONE); // not in a syscall
        assert_eq!(classify(X86, 232, 0), CALL_NONE); // epoll_wait(2)
    }

    #[test]
    fn futex2_calls() {
        assert_eq!(classify(X86, 455, 0), CALL_WAIT);
        assert_eq!(classify(X86, 449, 0), CALL_WAIT);
        assert_eq!(classify(X86, 454, 0), CALL_WAKE);
    }

    #[test]
    fn numbers_per_architecture() {
        assert_eq!(syscall_numbers("x86_64"), Some(X86));
        assert_eq!(syscall_numbers("aarch64").unwrap()[0], 98);
        assert_eq!(syscall_numbers("riscv64"), None);
    }
}
