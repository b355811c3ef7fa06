//! Synthetic workloads with a known answer, as forked children. A child does
//! nothing but raw system calls (no allocation: the parent may be
//! multi-threaded) and `_exit`s.
use std::ptr;

/// Memory shared between the test and its children (MAP_SHARED before fork,
/// so every process sees it at the same address, like PostgreSQL's).
pub struct Shared<T> {
    pub ptr: *mut T,
}

impl<T> Shared<T> {
    pub fn new() -> Self {
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                std::mem::size_of::<T>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Shared { ptr: p as *mut T }
    }
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut T {
        unsafe { &mut *self.ptr }
    }
}

pub fn set_comm(name: &[u8]) {
    let mut buf = [0u8; 16];
    buf[..name.len()].copy_from_slice(name);
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

pub fn pin_to_cpu(cpu: usize) {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn spin_for(ns: u64) {
    let end = now_ns() + ns;
    while now_ns() < end {
        std::hint::spin_loop();
    }
}

pub fn sleep_ns(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    };
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
}

/// A shared (not PRIVATE) futex wait, as PostgreSQL's sem_wait makes.
pub fn futex_wait(word: *mut u32, expected: u32) -> i64 {
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            ptr::null::<libc::timespec>(),
        )
    }
}

pub fn futex_wake(word: *mut u32, n: i32) -> i64 {
    unsafe { libc::syscall(libc::SYS_futex, word, libc::FUTEX_WAKE, n) }
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks a child that runs `f` and exits. Returns its pid.
pub fn fork_child(f: impl FnOnce()) -> u32 {
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        unsafe { libc::_exit(0) };
    }
    pid as u32
}

pub fn reap(pids: &[u32]) {
    for &p in pids {
        let mut st = 0;
        unsafe { libc::waitpid(p as i32, &mut st, 0) };
    }
}

pub fn kill(pid: u32) {
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// A pipe used as a gate: children block reading one byte per round.
#[derive(Clone, Copy)]
pub struct Gate {
    pub r: i32,
    pub w: i32,
}

impl Gate {
    pub fn new() -> Gate {
        let mut fds = [0i32; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        Gate {
            r: fds[0],
            w: fds[1],
        }
    }
    /// In a child: blocks until released; false at EOF.
    pub fn pass(&self) -> bool {
        let mut b = 0u8;
        unsafe { libc::read(self.r, &mut b as *mut u8 as *mut libc::c_void, 1) == 1 }
    }
    /// In the parent: lets `n` children through.
    pub fn release(&self, n: usize) {
        let buf = vec![1u8; n];
        assert_eq!(
            unsafe { libc::write(self.w, buf.as_ptr() as *const libc::c_void, n) },
            n as isize
        );
    }
    pub fn close(&self) {
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}
