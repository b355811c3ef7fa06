//! The memory side against the kernel's own counts: page faults by region
//! equal the process's own `getrusage` minor-fault delta around each touch
//! loop.
mod common;

use agent_common::stats::{counter, Counters};
use common::workload::{fork_child, reap, set_comm, Gate, Shared};

const PAGE: usize = 4096;
const PAGES: usize = 3000;

#[repr(C)]
#[derive(Default)]
struct Truth {
    /// Minor faults (getrusage) around the shared and the private loop.
    shared: u64,
    private: u64,
    file: u64,
}

fn minflt() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_minflt as u64
}

fn map(flags: i32, fd: i32, len: usize) -> *mut u8 {
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p as *mut u8
}

/// Touches every page once; returns the minor faults it took.
fn touch(p: *mut u8, pages: usize, write: bool) -> u64 {
    let before = minflt();
    for i in 0..pages {
        unsafe {
            let q = p.add(i * PAGE);
            if write {
                std::ptr::write_volatile(q, 1);
            } else {
                std::ptr::read_volatile(q);
            }
        }
    }
    minflt() - before
}

fn counters(agent: &pgpreempt::agent::Agent, pid: u32) -> Counters {
    agent.process_counters(pid).expect("the child is counted")
}

#[test]
fn page_faults_by_region_match_getrusage() {
    common::require_root();
    // A regular file for the file-backed region (private mapping, read).
    let path = std::env::temp_dir().join(format!("pgpt-faults-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; PAGES * PAGE]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // Mapped by the parent before the fork, like PostgreSQL's shared memory:
    // the child has not touched it (page tables are per process).
    let shared = map(libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, PAGES * PAGE) as usize;
    let agent = common::agent_for("pgpt-faulter");
    let gate = Gate::new();
    let truth: Shared<Truth> = Shared::new();
    let t = truth.ptr as usize;
    let kid = fork_child(move || {
        set_comm(b"pgpt-faulter");
        let truth = unsafe { &mut *(t as *mut Truth) };
        // Its page faulted in now, not inside a measured window.
        truth.shared = 0;
        let private = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, PAGES * PAGE);
        let file = map(libc::MAP_PRIVATE, fd, PAGES * PAGE);
        // Faulting now would put the first loop's faults before the
        // parent's first reading: wait.
        if !gate.pass() {
            return;
        }
        truth.shared = touch(shared as *mut u8, PAGES, true);
        if !gate.pass() {
            return;
        }
        truth.private = touch(private, PAGES, true);
        if !gate.pass() {
            return;
        }
        truth.file = touch(file, PAGES, false);
        gate.pass();
    });
    let step = |what: usize| -> u64 {
        common::wait_asleep(&[kid]);
        let before = counters(&agent, kid).v[what];
        gate.release(1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        common::wait_asleep(&[kid]);
        counters(&agent, kid).v[what] - before
    };
    let shared_got = step(counter::FAULTS_OTHER_SHARED);
    let waits = |c: &Counters| pgpreempt::kernel::snapshot::mmap_lock_waits(c).0;
    let waits_before = waits(&counters(&agent, kid));
    let private_got = step(counter::FAULTS_PRIVATE);
    // Faults outside the main segment look their mapping up with a try-lock
    // of mmap_lock, which the kernel traces: not the process's own.
    let waits_in_loop = waits(&counters(&agent, kid)) - waits_before;
    let file_got = step(counter::FAULTS_FILE);
    gate.release(1);
    reap(&[kid]);
    let _ = std::fs::remove_file(&path);
    let truth = truth.get();
    eprintln!(
        "shared {shared_got} (getrusage {}), private {private_got} ({}), file {file_got} ({})",
        truth.shared, truth.private, truth.file
    );
    assert!(truth.shared >= PAGES as u64 && truth.private >= PAGES as u64);
    assert_eq!(shared_got, truth.shared, "shared");
    assert_eq!(private_got, truth.private, "private");
    assert_eq!(file_got, truth.file, "file");
    assert_eq!(
        agent.diag()[agent_common::stats::diag::FAULT_REGION_UNKNOWN],
        0
    );
}

/// PostgreSQL reads a block with `pread` into a buffer page it has never
/// touched: the kernel's copy takes the fault (a kernel-mode fault on a
/// user address), which `getrusage` counts and the agent must too.
#[test]
fn faults_the_kernel_takes_on_user_pages_are_counted() {
    common::require_root();
    let path = std::env::temp_dir().join(format!("pgpt-pread-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; PAGES * PAGE]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let shared = map(libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, PAGES * PAGE) as usize;
    let agent = common::agent_for("pgpt-preader");
    let gate = Gate::new();
    let truth: Shared<Truth> = Shared::new();
    let t = truth.ptr as usize;
    let kid = fork_child(move || {
        set_comm(b"pgpt-preader");
        let truth = unsafe { &mut *(t as *mut Truth) };
        truth.shared = 0;
        if !gate.pass() {
            return;
        }
        let before = minflt();
        for i in 0..PAGES {
            let n = unsafe {
                libc::pread(
                    fd,
                    (shared + i * PAGE) as *mut libc::c_void,
                    PAGE,
                    (i * PAGE) as libc::off_t,
                )
            };
            assert_eq!(n, PAGE as isize);
        }
        truth.shared = minflt() - before;
        gate.pass();
    });
    common::wait_asleep(&[kid]);
    let before = counters(&agent, kid).v[counter::FAULTS_OTHER_SHARED];
    gate.release(1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    common::wait_asleep(&[kid]);
    let got = counters(&agent, kid).v[counter::FAULTS_OTHER_SHARED] - before;
    gate.release(1);
    reap(&[kid]);
    let _ = std::fs::remove_file(&path);
    let want = truth.get().shared;
    eprintln!("pread into fresh shared pages: agent {got}, getrusage {want}");
    assert!(want >= PAGES as u64);
    assert_eq!(got, want);
}
