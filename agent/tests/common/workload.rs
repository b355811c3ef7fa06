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

/// Makes this process real-time (SCHED_FIFO at `priority`): it runs until
/// it sleeps, and no ordinary task gets its CPU meanwhile.
pub fn set_fifo(priority: i32) {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    assert_eq!(r, 0, "sched_setscheduler(SCHED_FIFO) needs CAP_SYS_NICE");
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn now_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Spins until `clock` has advanced by `ns`.
fn spin_on(clock: fn() -> u64, ns: u64) {
    let end = clock() + ns;
    while clock() < end {
        std::hint::spin_loop();
    }
}

/// Spins for `ns` of wall time.
pub fn spin_for(ns: u64) {
    spin_on(now_ns, ns)
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

/// `futex_wait`, and whether it blocked until a wake: it returned 0 (woken)
/// and the kernel counted a voluntary switch of this thread during the call.
/// (Returning 0 without a switch: woken before it slept. A switch without
/// 0: it slept on something else, such as a page under migration, which
/// the agent does not count as a futex wait either.) Call it once before
/// the measured part so the code it runs is faulted in.
/// Also returns the voluntary switches during the call: more than one means
/// it also slept on something else.
pub fn futex_wait_blocked(word: *mut u32, expected: u32) -> (i64, u64, u64) {
    let n0 = thread_nvcsw();
    let r = futex_wait(word, expected);
    let switched = thread_nvcsw() - n0;
    (r, u64::from(r == 0 && switched > 0), switched)
}

/// This thread's voluntary switches, from `getrusage(RUSAGE_THREAD)`: one
/// syscall that cannot block, unlike a `/proc` read.
pub fn thread_nvcsw() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(r, 0, "getrusage(RUSAGE_THREAD)");
    ru.ru_nvcsw as u64
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

/// A child killed and reaped on drop, also when the test panics (a
/// real-time ticker or an endless loop must not outlive it).
pub struct Killed(pub u32);

impl Killed {
    /// For a child the test reaps itself once it has ended: after that its
    /// pid may belong to someone else.
    pub fn disarm(self) -> u32 {
        let pid = self.0;
        std::mem::forget(self);
        pid
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        kill(self.0);
        reap(&[self.0]);
    }
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
    /// In a child: writes one byte, without allocating (a "done" to a
    /// parent blocked in [`Gate::pass`]).
    /// The byte is on the stack: a literal's read-only page may not be
    /// mapped in a forked child yet, and the kernel's read of it would be
    /// a page fault of the child's (the memory tests count those).
    pub fn signal(&self) {
        let b = std::hint::black_box(b'x');
        unsafe { libc::write(self.w, &b as *const u8 as *const libc::c_void, 1) };
    }
    pub fn close(&self) {
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

/// CPU-bound children pinned to CPU 0 that preempt each other: each round
/// they pass a gate (asleep until then), spin 150 ms, report, and sleep again.
/// A known workload for involuntary switches and run-queue time.
pub struct Spinners {
    pub kids: Vec<u32>,
    gate: Gate,
    done: Gate,
}

impl Spinners {
    pub fn start(comm: &'static [u8], n: usize) -> Spinners {
        let (gate, done) = (Gate::new(), Gate::new());
        let kids = (0..n)
            .map(|_| {
                fork_child(move || {
                    // Keep only the ends this child uses, so closing the gate is EOF.
                    unsafe {
                        libc::close(gate.w);
                        libc::close(done.r);
                    }
                    set_comm(comm);
                    pin_to_cpu(0);
                    while gate.pass() {
                        spin_for(150_000_000);
                        unsafe { libc::write(done.w, b"x".as_ptr() as *const libc::c_void, 1) };
                    }
                })
            })
            .collect();
        Spinners { kids, gate, done }
    }

    /// One round; returns when every child is asleep at the gate again.
    pub fn round(&self) {
        self.gate.release(self.kids.len());
        for _ in 0..self.kids.len() {
            let mut b = 0u8;
            assert_eq!(
                unsafe { libc::read(self.done.r, &mut b as *mut u8 as *mut libc::c_void, 1) },
                1
            );
        }
        super::wait_asleep(&self.kids);
    }

    /// Ends the children (killed: a process started meanwhile may hold the
    /// gate's pipe open) and reaps them.
    pub fn stop(self) {
        self.gate.close();
        self.done.close();
        for &k in &self.kids {
            kill(k);
        }
        reap(&self.kids);
    }
}

/// Starts a thread of this process running `f(arg)` on `stack` with raw
/// `clone` (no allocation, no mapping: safe in a forked child). The thread
/// shares the thread-local state of its creator: raw system calls only.
/// Returns its tid.
///
/// # Safety
/// `stack` must stay unused by anything else while the thread lives.
pub unsafe fn clone_thread(
    f: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    stack: *mut [u8],
    arg: *mut libc::c_void,
) -> i32 {
    // The top of the stack, 16-byte aligned as the ABI wants.
    let top = (stack as *mut u8 as usize + stack.len()) & !15;
    unsafe {
        libc::clone(
            f,
            top as *mut libc::c_void,
            libc::CLONE_VM
                | libc::CLONE_FS
                | libc::CLONE_FILES
                | libc::CLONE_SIGHAND
                | libc::CLONE_THREAD
                | libc::CLONE_SYSVSEM,
            arg,
        )
    }
}

/// Reads a small /proc file into a stack buffer (no allocation: safe in a
/// forked child). Returns the bytes read.
pub fn read_small(path: &std::ffi::CStr, buf: &mut [u8; 4096]) -> usize {
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len());
        libc::close(fd);
        n.max(0) as usize
    }
}

fn parse_u64(b: &[u8]) -> u64 {
    b.iter()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .fold(0, |a, &c| a * 10 + (c - b'0') as u64)
}

/// This thread's run-queue wait so far (schedstat, second field), in ns.
pub fn own_run_delay_ns() -> u64 {
    let mut buf = [0u8; 4096];
    let n = read_small(c"/proc/thread-self/schedstat", &mut buf);
    let s = &buf[..n];
    let sp = s.iter().position(|&c| c == b' ').unwrap_or(0);
    parse_u64(&s[sp..])
}

/// This thread's involuntary context switches so far.
pub fn own_nivcsw() -> u64 {
    own_switches(b"nonvoluntary_ctxt_switches:")
}

fn own_switches(key: &[u8]) -> u64 {
    let mut buf = [0u8; 4096];
    let n = read_small(c"/proc/thread-self/status", &mut buf);
    let s = &buf[..n];
    match s.windows(key.len()).position(|w| w == key) {
        Some(i) => parse_u64(&s[i + key.len()..]),
        None => 0,
    }
}

/// This thread's CPU time, in ns.
pub fn thread_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Burns `ns` of this thread's own CPU time (longer in wall time when
/// something else shares the CPU).
pub fn burn_cpu(ns: u64) {
    spin_on(thread_cpu_ns, ns)
}

/// `/proc/PID/FILE` as a C string in `buf`, built without allocating (safe
/// in a forked child).
pub fn proc_path<'a>(pid: u32, file: &[u8], buf: &'a mut [u8; 64]) -> &'a std::ffi::CStr {
    *buf = [0u8; 64];
    let prefix = b"/proc/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let (mut n, mut p) = (0, pid);
    loop {
        digits[n] = b'0' + (p % 10) as u8;
        n += 1;
        p /= 10;
        if p == 0 {
            break;
        }
    }
    let mut at = prefix.len();
    for i in (0..n).rev() {
        buf[at] = digits[i];
        at += 1;
    }
    buf[at] = b'/';
    at += 1;
    let len = file.len().min(buf.len() - at - 1);
    buf[at..at + len].copy_from_slice(&file[..len]);
    std::ffi::CStr::from_bytes_until_nul(&buf[..]).unwrap()
}

/// True if process `pid` is asleep (state S or D), read without allocating.
pub fn is_asleep(pid: u32) -> bool {
    let mut path = [0u8; 64];
    let path = proc_path(pid, b"stat", &mut path);
    let mut buf = [0u8; 4096];
    let len = read_small(path, &mut buf);
    match buf[..len].iter().rposition(|&c| c == b')') {
        Some(i) if i + 2 < len => {
            // A child that died (a failed assertion in it) never sleeps:
            // say so rather than let the caller wait for ever.
            assert!(
                !matches!(buf[i + 2], b'Z' | b'X'),
                "process {pid} exited early (see its panic above)"
            );
            matches!(buf[i + 2], b'S' | b'D')
        }
        _ => false,
    }
}

/// Process `pid`'s run-queue wait (schedstat, second field), in ns, read
/// without allocating. A zombie's reads too: its final figure, everything
/// up to its last run.
pub fn run_delay_of(pid: u32) -> u64 {
    let mut path = [0u8; 64];
    let path = proc_path(pid, b"schedstat", &mut path);
    let mut buf = [0u8; 4096];
    let n = read_small(path, &mut buf);
    let s = &buf[..n];
    let sp = s.iter().position(|&c| c == b' ').unwrap_or(0);
    parse_u64(&s[sp..])
}

/// Waits until child `pid` has exited, leaving it a zombie (`WNOWAIT`): its
/// /proc files still show its final figures until it is reaped.
pub fn wait_exited(pid: u32) {
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || errno() != libc::EINTR {
            return;
        }
    }
}

/// Reaps child `pid`, returning its resource usage (`wait4`): its whole
/// life, including its exit.
pub fn reap_rusage(pid: u32) -> libc::rusage {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut st = 0;
    unsafe { libc::wait4(pid as i32, &mut st, 0, &mut ru) };
    ru
}
