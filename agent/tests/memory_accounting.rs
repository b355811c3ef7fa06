//! The memory side against the kernel's own counts: page faults by region
//! equal the process's own `getrusage` minor-fault delta around each touch
//! loop; faults and preemptions while another process of the cluster spins
//! in `s_lock` (the synthetic one this binary exports) equal the faulting
//! process's own counts; memory-cgroup reclaim, `mmap_lock` waits and
//! compaction of known workloads, zero where the workload cannot cause them.
mod common;

use std::{
    ffi::{c_char, c_int, c_void},
    os::fd::AsRawFd,
    path::PathBuf,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use agent_common::stats::{counter, diag, hist_kind, Counters, GroupTotals};
use common::memcg::MemCgroup;
use common::workload::{
    burn_cpu, clone_thread, fork_child, now_ns, pin_to_cpu, reap, set_comm, spin_for, Gate, Killed,
    Shared,
};
use pgpreempt::{
    agent::Agent,
    kernel::{
        probes::{Hook, MEMORY_PROGRAMS},
        snapshot::{mmap_lock_waits, page_faults},
    },
};

#[path = "common/s_lock.rs"]
mod s_lock;
use s_lock::s_lock;

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

/// Before a child's first measured window: its rusage buffer and the stack
/// below it are written now, in user mode. Otherwise the kernel's first
/// write there (the byte a gate's `read` delivers, the figures `getrusage`
/// writes out after reading them) is a copy-on-write fault after the fork,
/// taken in the kernel inside the agent's window but outside getrusage's.
fn warm_up() {
    minflt();
    let mut stack = [0u8; 64 * 1024];
    for i in (0..stack.len()).step_by(PAGE) {
        unsafe { std::ptr::write_volatile(&mut stack[i], 1) };
    }
    std::hint::black_box(&stack);
}

/// The process's minor faults. The kernel writes the figures out after
/// reading them: on a page the child has not written since the fork, that
/// write faults (in the kernel, counted by the agent) after the reading.
/// So every call writes to one static buffer, which the first call (before
/// any measured window) has faulted in.
fn minflt() -> u64 {
    static mut RU: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe {
        let ru = std::ptr::addr_of_mut!(RU);
        libc::getrusage(libc::RUSAGE_SELF, ru);
        (*ru).ru_minflt as u64
    }
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

fn counters(agent: &Agent, pid: u32) -> Counters {
    agent.process_counters(pid).expect("the child is counted")
}

/// Counter `what` of process `kid` across one round: read while it sleeps
/// at `gate` before and after (it is let through once).
fn step(agent: &Agent, kid: u32, gate: &Gate, what: usize) -> u64 {
    common::wait_asleep(&[kid]);
    let before = counters(agent, kid).v[what];
    gate.release(1);
    std::thread::sleep(std::time::Duration::from_millis(50));
    common::wait_asleep(&[kid]);
    counters(agent, kid).v[what] - before
}

/// A regular file of `len` bytes on disk (not tmpfs: its page cache can be
/// dropped), removed on drop.
struct ScratchFile {
    path: PathBuf,
    file: std::fs::File,
}

impl ScratchFile {
    fn new(name: &str, len: usize) -> ScratchFile {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("pgpt-{name}-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            f.write_all(&chunk[..n]).unwrap();
            left -= n;
        }
        f.sync_all().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        ScratchFile { path, file }
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Drops its pages from the page cache: the next read comes from disk
    /// and charges new pages to the reader's memory cgroup.
    fn drop_cache(&self) {
        let r = unsafe { libc::posix_fadvise(self.fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "posix_fadvise(DONTNEED)");
    }
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A file of `PAGES` pages, a shared region of as many, and an agent
/// tracing `pgpt-faulter`. The region is mapped by the test before the fork,
/// like PostgreSQL's shared memory: the child has not touched it (page
/// tables are per process).
fn faulter_setup(name: &str) -> (ScratchFile, usize, Agent) {
    common::require_root();
    let file = ScratchFile::new(name, PAGES * PAGE);
    let shared = map(libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, PAGES * PAGE) as usize;
    (file, shared, common::agent_for("pgpt-faulter"))
}

/// In a `pgpt-faulter` child: named, warmed up, its truth (at `t`) with
/// its page faulted in now, not inside a measured window.
fn faulter_begins(t: usize) -> &'static mut Truth {
    set_comm(b"pgpt-faulter");
    warm_up();
    let truth = unsafe { &mut *(t as *mut Truth) };
    truth.shared = 0;
    truth
}

#[test]
fn page_faults_by_region_match_getrusage() {
    let (file, shared, agent) = faulter_setup("faults");
    let fd = file.fd();
    let gate = Gate::new();
    let truth: Shared<Truth> = Shared::new();
    let t = truth.ptr as usize;
    let kid = fork_child(move || {
        let truth = faulter_begins(t);
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
    let shared_got = step(&agent, kid, &gate, counter::FAULTS_OTHER_SHARED);
    let private_got = step(&agent, kid, &gate, counter::FAULTS_PRIVATE);
    let file_got = step(&agent, kid, &gate, counter::FAULTS_FILE);
    gate.release(1);
    reap(&[kid]);
    drop(file);
    let truth = truth.get();
    eprintln!(
        "shared {shared_got} (getrusage {}), private {private_got} ({}), file {file_got} ({})",
        truth.shared, truth.private, truth.file
    );
    assert!(truth.shared >= PAGES as u64 && truth.private >= PAGES as u64);
    assert_eq!(shared_got, truth.shared, "shared");
    assert_eq!(private_got, truth.private, "private");
    assert_eq!(file_got, truth.file, "file");
    assert_eq!(agent.diag()[diag::FAULT_REGION_UNKNOWN], 0);
}

/// The fault program keeps the last mapping it looked up, per CPU, while
/// the process's `mmap_lock` is not taken for writing: a mapping replaced
/// at the same address (munmap, then a shared mapping with MAP_FIXED) must
/// be looked up again, not taken for the old one.
#[test]
fn a_mapping_replaced_at_the_same_address_is_looked_up_again() {
    let (file, _shared, agent) = faulter_setup("remap");
    drop(file);
    let gate = Gate::new();
    let truth: Shared<Truth> = Shared::new();
    let t = truth.ptr as usize;
    let kid = fork_child(move || {
        let truth = faulter_begins(t);
        let at = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, PAGES * PAGE);
        if !gate.pass() {
            return;
        }
        truth.private = touch(at, PAGES, true);
        if !gate.pass() {
            return;
        }
        let before = minflt();
        unsafe { libc::munmap(at as *mut c_void, PAGES * PAGE) };
        let again = unsafe {
            libc::mmap(
                at as *mut c_void,
                PAGES * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        assert_eq!(again as usize, at as usize);
        let touched = touch(at, PAGES, true);
        truth.shared = minflt() - before;
        assert!(touched <= truth.shared);
        gate.pass();
    });
    let private_got = step(&agent, kid, &gate, counter::FAULTS_PRIVATE);
    let shared_got = step(&agent, kid, &gate, counter::FAULTS_OTHER_SHARED);
    gate.release(1);
    reap(&[kid]);
    let truth = truth.get();
    eprintln!(
        "private {private_got} (getrusage {}), then shared at the same address {shared_got} ({})",
        truth.private, truth.shared
    );
    assert_eq!(private_got, truth.private);
    assert!(truth.shared >= PAGES as u64);
    assert_eq!(shared_got, truth.shared);
}

/// A process that reuses a dead one's pid can get its freed `mm` back at
/// the same address, and with the same `mmap_lock` sequence if it took the
/// lock for writing as often: the dead one's cached mapping must not be
/// taken for its own. Each round, A maps private memory at a fixed address
/// and faults it; B, forked at A's pid (`ns_last_pid`, on A's CPU, so that
/// the slab hands A's `mm` back), maps shared memory there and faults it.
#[test]
fn a_reused_pid_does_not_inherit_a_dead_process_cached_mapping() {
    common::require_root();
    const AT: usize = 0x5a5a_0000_0000;
    const N: usize = 32;
    let agent = common::agent_for("pgpt-reuse");
    // The test thread forks on CPU 0 and its children fault there.
    pin_to_cpu(0);
    let kid = |shared: bool| {
        fork_child(move || {
            set_comm(b"pgpt-reuse");
            let kind = if shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            let flags = kind | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
            let p = unsafe {
                libc::mmap(
                    AT as *mut c_void,
                    N * PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags,
                    -1,
                    0,
                )
            };
            if p as usize != AT {
                unsafe { libc::_exit(3) };
            }
            touch(p as *mut u8, N, true);
        })
    };
    let ended = |pid: u32| {
        reap(&[pid]);
        // Its final switch-out.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let c = counters(&agent, pid);
        (
            c.v[counter::FAULTS_PRIVATE],
            c.v[counter::FAULTS_OTHER_SHARED],
        )
    };
    let mut reused = 0;
    for round in 0..5 {
        let a = kid(false);
        let (pa, sa) = ended(a);
        // (Its own stack's first touch may add a private fault.)
        assert!(
            pa >= N as u64 && sa == 0,
            "A's faults: {pa} private, {sa} shared"
        );
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", a - 1)).unwrap();
        let b = kid(true);
        let (pb, sb) = ended(b);
        // The same pid: the same per-process counters, A's included.
        let (pb, sb) = if b == a { (pb - pa, sb - sa) } else { (pb, sb) };
        eprintln!("round {round}: A {a}, B {b}: B's private {pb}, shared {sb}");
        reused += u32::from(b == a);
        assert_eq!(
            (pb, sb),
            (pa - N as u64, N as u64),
            "B's faults, private and shared (pid {b}, A's {a})"
        );
    }
    // Another process may take the pid now and then, not every time.
    assert!(reused > 0, "no round reused A's pid");
}

/// Counters of process `kid` before and after one round: read while it
/// sleeps at `gate`, then it is let through, and read again once it has
/// said `done` and sleeps at the gate again.
fn round(agent: &Agent, kid: u32, gate: &Gate, done: &Gate) -> (Counters, Counters) {
    common::wait_asleep(&[kid]);
    let before = counters(agent, kid);
    gate.release(1);
    assert!(done.pass(), "process {kid} ended its round early");
    common::wait_asleep(&[kid]);
    (before, counters(agent, kid))
}

/// Counters of a child across its second round: the first one maps what
/// the child's calls need (the uprobes' trampoline page), and the agent
/// has classified the child by then.
fn second_round(agent: &mut Agent, kid: u32, gate: &Gate, done: &Gate) -> (Counters, Counters) {
    common::wait_asleep(&[kid]);
    agent.refresh();
    round(agent, kid, gate, done);
    round(agent, kid, gate, done)
}

/// The child's side of [`second_round`]: `first` in the first round,
/// `measured` in the second, with the child's own minor-fault count over
/// `measured` stored in `truth` (an `AtomicU64`).
fn child_rounds(
    gate: &Gate,
    done: &Gate,
    truth: usize,
    first: impl FnOnce(),
    measured: impl FnOnce(),
) {
    if !gate.pass() {
        return;
    }
    first();
    done.signal();
    if !gate.pass() {
        return;
    }
    let before = minflt();
    measured();
    unsafe { &*(truth as *const AtomicU64) }.store(minflt() - before, Ordering::SeqCst);
    done.signal();
    gate.pass();
}

fn delta(c: &(Counters, Counters), what: usize) -> u64 {
    c.1.v[what] - c.0.v[what]
}

/// The group process `kid` is counted in, as the outputs show it.
fn group_of(agent: &Agent, kid: u32) -> GroupTotals {
    let labels = agent.labels_of(kid).expect("the child is classified");
    agent
        .snapshot()
        .groups
        .into_iter()
        .find(|(l, _)| *l == labels)
        .unwrap_or_else(|| panic!("no group {labels:?}"))
        .1
}

#[repr(C)]
#[derive(Default)]
struct ReadTruth {
    minflt: u64,
    bytes: u64,
    wall_ns: u64,
}

/// A fault the kernel takes on the process's behalf inside a system call
/// (`pread` copying into pages not yet mapped, as a backend reads a block
/// into an empty shared buffer) is the process's fault: `getrusage` counts
/// it, and after a restart it is most of what PostgreSQL's backends take on
/// the main segment (`memory_postgres`).
#[test]
fn faults_taken_inside_system_calls_count_too() {
    let (file, shared, agent) = faulter_setup("read-faults");
    let fd = file.fd();
    let (gate, done) = (Gate::new(), Gate::new());
    let truth: Shared<ReadTruth> = Shared::new();
    let t = truth.ptr as usize;
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-faulter");
        warm_up();
        let truth = unsafe { &mut *(t as *mut ReadTruth) };
        // What the round runs besides the copy is faulted in now.
        truth.minflt = minflt();
        unsafe { libc::pread(fd, shared as *mut c_void, 0, 0) };
        if !gate.pass() {
            return;
        }
        let before = minflt();
        let n = unsafe { libc::pread(fd, shared as *mut c_void, PAGES * PAGE, 0) };
        truth.minflt = minflt() - before;
        truth.bytes = n.max(0) as u64;
        done.signal();
        gate.pass();
    }));
    let c = round(&agent, kid.0, &gate, &done);
    drop(kid);
    let truth = truth.get();
    let (shared_got, got) = (
        delta(&c, counter::FAULTS_OTHER_SHARED),
        page_faults(&c.1) - page_faults(&c.0),
    );
    eprintln!(
        "pread into {PAGES} fresh shared pages: agent {got} faults ({shared_got} shared), \
         getrusage {}",
        truth.minflt
    );
    assert_eq!(truth.bytes, (PAGES * PAGE) as u64);
    assert!(truth.minflt >= PAGES as u64, "{}", truth.minflt);
    assert_eq!(
        got, truth.minflt,
        "faults around pread: the agent counted {got}, the kernel {}",
        truth.minflt
    );
    assert!(
        shared_got >= PAGES as u64,
        "{shared_got} on the shared pages"
    );
}

/// What a reclaim test reads, and the memory cgroup limit it reads under.
const READ_BYTES: usize = 256 << 20;
const MEMCG_LIMIT: u64 = 64 << 20;

/// One reader's read, as the agent and the reader saw it.
struct Read {
    /// Its counters across the read, and over its whole life.
    window: Counters,
    life: Counters,
    group: pgpreempt::postgres::groups::Labels,
    truth: ReadTruth,
}

/// A process in `cgroup` reads `file` from disk (its page cache dropped
/// first).
fn read_in(agent: &mut Agent, cgroup: &MemCgroup, file: &ScratchFile) -> Read {
    let (gate, done) = (Gate::new(), Gate::new());
    let truth: Shared<ReadTruth> = Shared::new();
    let t = truth.ptr as usize;
    let fd = file.fd();
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-reader");
        let truth = unsafe { &mut *(t as *mut ReadTruth) };
        let mut buf = [0u8; 1 << 16];
        truth.bytes = 0;
        if !gate.pass() {
            return;
        }
        let t0 = now_ns();
        loop {
            let n = unsafe {
                libc::pread(
                    fd,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len(),
                    truth.bytes as i64,
                )
            };
            if n <= 0 {
                break;
            }
            truth.bytes += n as u64;
        }
        truth.wall_ns = now_ns() - t0;
        done.signal();
        gate.pass();
    }));
    cgroup.add(kid.0);
    file.drop_cache();
    common::wait_asleep(&[kid.0]);
    agent.refresh();
    let c = round(agent, kid.0, &gate, &done);
    let got = Read {
        window: Counters {
            v: std::array::from_fn(|i| delta(&c, i)),
        },
        life: c.1,
        group: agent.labels_of(kid.0).expect("the reader is classified"),
        truth: std::mem::take(truth.get()),
    };
    drop(kid);
    gate.close();
    done.close();
    got
}

/// Reading more than its memory cgroup may hold makes the reader reclaim
/// in its own context (`mm_vmscan_memcg_reclaim_begin/end`): counted and
/// timed for it, within its wall time, and in its group's histogram; the
/// same read without the limit reclaims nothing.
#[test]
fn memcg_reclaim_is_timed_for_the_reader_and_absent_without_a_limit() {
    common::require_root();
    let file = ScratchFile::new("reclaim", READ_BYTES);
    let limited = MemCgroup::create("limited", Some(MEMCG_LIMIT));
    let unlimited = MemCgroup::create("unlimited", None);
    let mut agent = common::agent_for("pgpt-reader");
    let free = read_in(&mut agent, &unlimited, &file);
    let tight = read_in(&mut agent, &limited, &file);
    // Both readers are in one group (same name, same parent): its totals
    // are theirs.
    assert_eq!(free.group, tight.group);
    let group = agent
        .snapshot()
        .groups
        .into_iter()
        .find(|(l, _)| *l == tight.group)
        .expect("the readers' group")
        .1;
    let (tight_truth, free_truth) = (&tight.truth, &free.truth);
    let (free, free_life, tight, tight_life) = (free.window, free.life, tight.window, tight.life);
    let memcg = |c: &Counters| (c.v[counter::RECLAIM_MEMCG], c.v[counter::RECLAIM_MEMCG_NS]);
    eprintln!(
        "{} MB read under a {} MB limit: {} memcg reclaims, {:.3} ms, in {:.3} s; \
         without a limit: {:?} (direct reclaim {} and {})",
        tight_truth.bytes >> 20,
        MEMCG_LIMIT >> 20,
        memcg(&tight).0,
        memcg(&tight).1 as f64 / 1e6,
        tight_truth.wall_ns as f64 / 1e9,
        memcg(&free),
        tight.v[counter::RECLAIM_DIRECT],
        free.v[counter::RECLAIM_DIRECT]
    );
    assert_eq!(tight_truth.bytes, READ_BYTES as u64);
    assert_eq!(free_truth.bytes, READ_BYTES as u64);
    let (n, ns) = memcg(&tight);
    assert!(
        n > 0 && ns > 0,
        "no memcg reclaim under the limit: {n}, {ns} ns"
    );
    assert!(
        ns <= tight_truth.wall_ns,
        "{ns} ns of reclaim in a read of {} ns",
        tight_truth.wall_ns
    );
    assert_eq!(memcg(&free), (0, 0), "memcg reclaim without a limit");
    // The group: the same counts and time, as a histogram.
    let (n, ns) = (
        memcg(&tight_life).0 + memcg(&free_life).0,
        memcg(&tight_life).1 + memcg(&free_life).1,
    );
    let h = &group.hists[hist_kind::RECLAIM_MEMCG];
    assert_eq!(group.counters.v[counter::RECLAIM_MEMCG], n);
    assert_eq!(h.buckets.iter().sum::<u64>(), n, "histogram count");
    assert_eq!(h.sum_ns, ns, "histogram sum");
}

/// One thread's pages to fault, per round.
const MMAP_PAGES: usize = 20_000;

#[repr(C)]
struct MmapBoard {
    tid: AtomicU32,
    /// Rounds the faulter has finished.
    faulted: AtomicU32,
    /// mmap + munmap pairs the mapper made, and the threads' wall times.
    maps: AtomicU64,
    mapper_ns: AtomicU64,
    faulter_ns: [AtomicU64; 2],
}

/// What the faulting thread gets (on its creator's stack).
struct FaulterArgs {
    gate: Gate,
    done: Gate,
    board: usize,
    regions: [usize; 2],
}

/// The faulting thread's stack (each forked child has its own copy): a
/// thread made with `clone` maps nothing, so the window sees only the
/// mapper's `mmap_lock` writes.
static mut FAULTER_STACK: [u8; 64 * 1024] = [0; 64 * 1024];

/// Faults every page of its region in each round. Raw system calls only
/// (it shares the thread-local state of the thread that made it).
extern "C" fn faulter(arg: *mut c_void) -> c_int {
    let a = unsafe { &*(arg as *const FaulterArgs) };
    let board = unsafe { &*(a.board as *const MmapBoard) };
    set_comm(b"pgpt-mmap");
    for (round, &region) in a.regions.iter().enumerate() {
        if !a.gate.pass() {
            return 0;
        }
        let t0 = now_ns();
        touch(region as *mut u8, MMAP_PAGES, true);
        board.faulter_ns[round].store(now_ns() - t0, Ordering::SeqCst);
        board.faulted.store(round as u32 + 1, Ordering::SeqCst);
        a.done.signal();
    }
    // Asleep until the process ends (an exited thread leaves /proc).
    a.gate.pass();
    0
}

/// `mmap_lock` waits of a known workload. A process maps and unmaps in one
/// thread while another thread faults in pages: every `mmap` and every
/// `munmap` takes the lock for writing once (`mmap_write_lock_killable`,
/// traced), so the write waits equal twice the mapper's loops; the faulter
/// takes it for reading only when its per-VMA lock fails (its mapping is
/// being changed: a neighbour merged into it or split off). With the mapper
/// idle, faults need no `mmap_lock` at all (per-VMA locks): zero waits. The
/// time of the waits is within each thread's wall time. (The agent's own
/// mapping lookup in the fault program, `bpf_find_vma`, is a try-lock on
/// the faulter's `mmap_lock`: not the faulter's wait.)
#[test]
fn mmap_lock_waits_of_a_mapping_thread_and_a_faulting_one() {
    common::require_root();
    let agent = common::agent_for("pgpt-mmap");
    let (gate_m, gate_f, done) = (Gate::new(), Gate::new(), Gate::new());
    let board: Shared<MmapBoard> = Shared::new();
    let b = board.ptr as usize;
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-mmap");
        let board = unsafe { &*(b as *const MmapBoard) };
        let regions = [0, 1].map(|_| {
            let p = map(
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                MMAP_PAGES * PAGE,
            );
            // Its first fault sets up the region's anon_vma: done here.
            unsafe { std::ptr::write_volatile(p, 1) };
            p as usize
        });
        let args = FaulterArgs {
            gate: gate_f,
            done,
            board: b,
            regions,
        };
        let tid = unsafe {
            clone_thread(
                faulter,
                std::ptr::addr_of_mut!(FAULTER_STACK),
                &args as *const FaulterArgs as *mut c_void,
            )
        };
        assert!(tid > 0, "clone");
        board.tid.store(tid as u32, Ordering::SeqCst);
        if !gate_m.pass() {
            return;
        }
        let (t0, mut n) = (now_ns(), 0);
        while board.faulted.load(Ordering::SeqCst) == 0 {
            let p = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 16 * PAGE);
            unsafe { libc::munmap(p as *mut c_void, 16 * PAGE) };
            n += 1;
        }
        board.mapper_ns.store(now_ns() - t0, Ordering::SeqCst);
        board.maps.store(n, Ordering::SeqCst);
        done.signal();
        gate_m.pass();
    }));
    let board = board.get();
    while board.tid.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let tasks = [kid.0, board.tid.load(Ordering::SeqCst)];
    common::wait_asleep(&tasks);
    let c0 = counters(&agent, kid.0);
    // Both threads at once.
    gate_m.release(1);
    gate_f.release(1);
    assert!(done.pass() && done.pass());
    common::wait_asleep(&tasks);
    let c1 = counters(&agent, kid.0);
    // The faulter alone.
    gate_f.release(1);
    assert!(done.pass());
    common::wait_asleep(&tasks);
    let c2 = counters(&agent, kid.0);
    drop(kid);

    let maps = board.maps.load(Ordering::SeqCst);
    let (mapper_ns, faulter_ns) = (
        board.mapper_ns.load(Ordering::SeqCst),
        board
            .faulter_ns
            .each_ref()
            .map(|t| t.load(Ordering::SeqCst)),
    );
    let waits = |a: &Counters, b: &Counters| {
        let (r0, w0) = mmap_lock_waits(a);
        let (r1, w1) = mmap_lock_waits(b);
        (r1 - r0, w1 - w0)
    };
    let ns = |a: &Counters, b: &Counters, what: usize| b.v[what] - a.v[what];
    let (busy, alone) = (waits(&c0, &c1), waits(&c1, &c2));
    let busy_ns = (
        ns(&c0, &c1, counter::MMAP_LOCK_READ_WAIT_NS),
        ns(&c0, &c1, counter::MMAP_LOCK_WRITE_WAIT_NS),
    );
    eprintln!(
        "mapping {maps} times beside {MMAP_PAGES} faults: {} read waits ({} over 1 us, \
         {:.3} ms; the faulter ran {:.3} ms), {} write waits ({} over 1 us, {:.3} ms; the \
         mapper ran {:.3} ms); the faulter alone: {alone:?}",
        busy.0,
        ns(&c0, &c1, counter::MMAP_LOCK_READ_SLOW),
        busy_ns.0 as f64 / 1e6,
        faulter_ns[0] as f64 / 1e6,
        busy.1,
        ns(&c0, &c1, counter::MMAP_LOCK_WRITE_SLOW),
        busy_ns.1 as f64 / 1e6,
        mapper_ns as f64 / 1e6
    );
    assert!(maps > 0, "the mapper never ran beside the faulter");
    assert_eq!(
        busy.1,
        2 * maps,
        "write waits: one per mmap and one per munmap"
    );
    assert!(
        busy_ns.1 <= mapper_ns,
        "write wait time beyond the mapper's wall time"
    );
    assert!(
        busy_ns.0 <= faulter_ns[0],
        "read wait time beyond the faulter's wall time"
    );
    assert_eq!(alone, (0, 0), "waits with nobody mapping");
    assert_eq!(
        ns(&c1, &c2, counter::MMAP_LOCK_READ_WAIT_NS)
            + ns(&c1, &c2, counter::MMAP_LOCK_WRITE_WAIT_NS),
        0
    );
    assert!(
        ns(&c1, &c2, counter::FAULTS_PRIVATE) >= MMAP_PAGES as u64 - 1,
        "the faulter alone faulted"
    );
}

/// How long the spinner spins in `s_lock` while the other process works.
const SPIN_NS: u64 = 1_500_000_000;
/// Fresh pages the other process faults in per round.
const OVERLAP_PAGES: usize = 2_000;

#[repr(C)]
struct OverlapBoard {
    /// When the spinner called `s_lock` (0 before).
    spin_from: AtomicU64,
    /// The worker's own minor faults in each round.
    minflt: [AtomicU64; 2],
}

/// Process A spins in `s_lock` (on CPU 0) while process B of the same
/// cluster (children of the test share one) faults in fresh pages and
/// computes on the last CPU beside a CPU hog that preempts it: every fault
/// of B is one taken while another spins (its own `getrusage` count), and
/// every preemption too (its involuntary switches), with their off-CPU time
/// (at most B's run-queue time, schedstat). The same round with A not
/// spinning: none. A, alone in `s_lock`, is not "another" to itself.
#[test]
fn faults_and_preemptions_while_another_process_spins() {
    common::require_root();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "needs two CPUs: the spinner's and the worker's");
    let cpu = cpus - 1;
    let mut agent = common::agent_for("pgpt-overlap");
    let (gate_a, done_a, gate_b, done_b) = (Gate::new(), Gate::new(), Gate::new(), Gate::new());
    let board: Shared<OverlapBoard> = Shared::new();
    let bp = board.ptr as usize;
    let hog = Killed(fork_child(move || {
        set_comm(b"pgpt-hog");
        pin_to_cpu(cpu);
        spin_for(60_000_000_000);
    }));
    let a = Killed(fork_child(move || {
        set_comm(b"pgpt-overlap");
        pin_to_cpu(0);
        let board = unsafe { &*(bp as *const OverlapBoard) };
        while gate_a.pass() {
            let mut d = SPIN_NS;
            board.spin_from.store(now_ns(), Ordering::SeqCst);
            unsafe { s_lock(&mut d, c"s_lock.c".as_ptr(), 0, c"overlap".as_ptr()) };
            done_a.signal();
        }
    }));
    let b = Killed(fork_child(move || {
        set_comm(b"pgpt-overlap");
        warm_up();
        pin_to_cpu(cpu);
        let board = unsafe { &*(bp as *const OverlapBoard) };
        let regions = [0, 1].map(|_| {
            map(
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                OVERLAP_PAGES * PAGE,
            ) as usize
        });
        // What a round runs besides its faults is faulted in now (the
        // board, code, stack), so that the agent's window (gate to gate)
        // holds the faults of B's own count and no others.
        board.minflt[0].store(minflt(), Ordering::SeqCst);
        burn_cpu(1_000_000);
        for (round, &region) in regions.iter().enumerate() {
            if !gate_b.pass() {
                return;
            }
            let before = minflt();
            touch(region as *mut u8, OVERLAP_PAGES, true);
            burn_cpu(100_000_000);
            board.minflt[round].store(minflt() - before, Ordering::SeqCst);
            done_b.signal();
        }
        gate_b.pass();
    }));
    common::wait_asleep(&[a.0, b.0]);
    // Classified (one cluster) and this binary's s_lock probed.
    agent.refresh();
    let board = board.get();

    // Round 1: A spins; once it is inside s_lock, B works.
    let (a0, k0) = (counters(&agent, a.0), common::truth(b.0));
    gate_a.release(1);
    while board.spin_from.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let spinning = round(&agent, b.0, &gate_b, &done_b);
    let k1 = common::truth(b.0);
    let late = now_ns() as i64 - (board.spin_from.load(Ordering::SeqCst) + SPIN_NS) as i64;
    assert!(
        late < 0,
        "B's round ended {} ms after A's spin: the machine is too loaded for this test",
        late / 1_000_000
    );
    assert!(done_a.pass());
    common::wait_asleep(&[a.0]);
    let a1 = counters(&agent, a.0);
    // Round 2: A sleeps, B works.
    let alone = round(&agent, b.0, &gate_b, &done_b);
    let k2 = common::truth(b.0);
    drop((b, a, hog));

    let minflt = board.minflt.each_ref().map(|m| m.load(Ordering::SeqCst));
    let faults = |c: &(Counters, Counters)| page_faults(&c.1) - page_faults(&c.0);
    let kernel_invol = [
        k1.nonvoluntary - k0.nonvoluntary,
        k2.nonvoluntary - k1.nonvoluntary,
    ];
    let run_delay = k1.run_delay_ns - k0.run_delay_ns;
    for (what, c) in [("A spinning", &spinning), ("A asleep", &alone)] {
        eprintln!(
            "{what}: B took {} faults ({} while others spin), {} involuntary switches ({} \
             while others spin, {:.3} ms of {:.3} ms preempted)",
            faults(c),
            delta(c, counter::FAULTS_WHILE_OTHERS_SPIN),
            delta(c, counter::INVOLUNTARY_SWITCHES),
            delta(c, counter::PREEMPTIONS_WHILE_OTHERS_SPIN),
            delta(c, counter::PREEMPTED_NS_WHILE_OTHERS_SPIN) as f64 / 1e6,
            delta(c, counter::PREEMPTED_NS) as f64 / 1e6,
        );
    }
    eprintln!(
        "B's own counts: faults {minflt:?}, involuntary switches {kernel_invol:?}; \
         run-queue time while A spun {:.3} ms",
        run_delay as f64 / 1e6
    );
    // While A spins: all of B's faults and preemptions.
    assert!(minflt[0] >= OVERLAP_PAGES as u64);
    assert_eq!(faults(&spinning), minflt[0], "B's faults");
    assert_eq!(
        delta(&spinning, counter::FAULTS_WHILE_OTHERS_SPIN),
        minflt[0],
        "B's faults while A spins"
    );
    assert!(kernel_invol[0] > 0, "the hog never preempted B: no test");
    let invol = delta(&spinning, counter::INVOLUNTARY_SWITCHES);
    common::assert_close(
        "B's involuntary switches",
        invol as f64,
        kernel_invol[0] as f64,
        1.0,
        1.0,
    );
    assert_eq!(
        delta(&spinning, counter::PREEMPTIONS_WHILE_OTHERS_SPIN),
        invol,
        "B's preemptions while A spins"
    );
    let preempted = delta(&spinning, counter::PREEMPTED_NS_WHILE_OTHERS_SPIN);
    assert_eq!(preempted, delta(&spinning, counter::PREEMPTED_NS));
    assert!(
        preempted > 0 && preempted <= run_delay,
        "B preempted {preempted} ns while A spun, run-queue time {run_delay} ns"
    );
    assert_eq!(delta(&spinning, counter::FAULTS_WHILE_SPINNING), 0);
    // A's own spin is not "another's".
    for what in [
        counter::FAULTS_WHILE_OTHERS_SPIN,
        counter::PREEMPTIONS_WHILE_OTHERS_SPIN,
    ] {
        assert_eq!(delta(&(a0, a1), what), 0, "A, counter {what}");
    }
    assert_eq!(delta(&(a0, a1), counter::SPINS), 1);
    // Nobody spins: none, though B faulted and was preempted as much.
    assert!(minflt[1] >= OVERLAP_PAGES as u64);
    assert_eq!(faults(&alone), minflt[1]);
    assert!(kernel_invol[1] > 0, "the hog never preempted B: no test");
    for what in [
        counter::FAULTS_WHILE_OTHERS_SPIN,
        counter::PREEMPTIONS_WHILE_OTHERS_SPIN,
        counter::PREEMPTED_NS_WHILE_OTHERS_SPIN,
    ] {
        assert_eq!(
            delta(&alone, what),
            0,
            "counter {what} with nobody spinning"
        );
    }
}

/// An agent tracing `comm`; a gate and a "done" pipe for one child, and a
/// word for its own measurement.
fn one_child(comm: &str) -> (Agent, Gate, Gate, Shared<AtomicU64>) {
    common::require_root();
    (
        common::agent_for(comm),
        Gate::new(),
        Gate::new(),
        Shared::new(),
    )
}

/// A process that faults inside its own `s_lock`: the synthetic one reads
/// `*lock` (its spin time) inside the call, so a `lock` on a page never
/// touched faults there once (a zero page: a 0 ns spin). Counted as faults
/// while spinning, exactly its own `getrusage` count, and not as faults
/// while others spin.
#[test]
fn faults_inside_its_own_s_lock_are_counted() {
    const CALLS: usize = 1_000;
    let (mut agent, gate, done, truth) = one_child("pgpt-inside");
    let t = truth.ptr as usize;
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-inside");
        warm_up();
        let fresh = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, CALLS * PAGE);
        let call = |lock: *mut u64| unsafe {
            s_lock(lock, c"s_lock.c".as_ptr(), 0, c"inside".as_ptr());
        };
        // First round: one call, which maps the uprobes' trampoline page.
        let mut zero = 0u64;
        child_rounds(
            &gate,
            &done,
            t,
            || call(&mut zero),
            || {
                for i in 0..CALLS {
                    call(unsafe { fresh.add(i * PAGE) } as *mut u64);
                }
            },
        );
    }));
    let c = second_round(&mut agent, kid.0, &gate, &done);
    drop(kid);
    let own = truth.get().load(Ordering::SeqCst);
    let got = delta(&c, counter::FAULTS_WHILE_SPINNING);
    eprintln!("{CALLS} calls of s_lock faulting inside: agent {got}, getrusage {own}");
    assert_eq!(delta(&c, counter::SPINS), CALLS as u64);
    assert_eq!(own, CALLS as u64);
    assert_eq!(got, own, "faults inside its own s_lock");
    assert_eq!(delta(&c, counter::FAULTS_WHILE_OTHERS_SPIN), 0);
}

/// A fault taken with page faults disabled is refused (EFAULT) and not
/// counted by the kernel: the `s_lock` probe's own read of a call site's
/// name from a page the process never touched is one, at every call until
/// a read succeeds. Not the process's faults.
#[test]
fn faults_the_kernel_refuses_are_not_counted() {
    const CALLS: u64 = 200;
    let (mut agent, gate, done, truth) = one_child("pgpt-nofault");
    let t = truth.ptr as usize;
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-nofault");
        warm_up();
        unsafe { &*(t as *const AtomicU64) }.store(0, Ordering::SeqCst);
        // The name lies in a page never touched: the probe cannot read it.
        let name = map(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, PAGE) as *const c_char;
        let mut zero = 0u64;
        let call = |lock: *mut u64| unsafe {
            s_lock(lock, c"s_lock.c".as_ptr(), 0, name);
        };
        child_rounds(
            &gate,
            &done,
            t,
            || call(&mut 0u64),
            || {
                for _ in 0..CALLS {
                    call(&mut zero);
                }
            },
        );
    }));
    let c = second_round(&mut agent, kid.0, &gate, &done);
    drop(kid);
    let own = truth.get().load(Ordering::SeqCst);
    let got = page_faults(&c.1) - page_faults(&c.0);
    eprintln!(
        "{CALLS} calls whose site name the probe cannot read: agent {got} faults, getrusage {own}"
    );
    assert_eq!(delta(&c, counter::SPINS), CALLS);
    assert_eq!(got, own, "faults the kernel refused were counted");
}

/// Every memory program whose tracepoint this kernel has is attached (and
/// loaded, as the kernel lists its programs), and none other. NUMA
/// migrations cannot be induced on a one-node machine: this is their test.
#[test]
fn memory_programs_attach_where_the_kernel_has_their_tracepoints() {
    common::require_root();
    let agent = common::agent_for("pgpt-nobody");
    let root = pgpreempt::kernel::tracefs::locate(None).unwrap();
    let loaded = common::loaded_tracing_programs();
    let mut present = 0;
    for (name, hook) in MEMORY_PROGRAMS {
        let Hook::OptionalBtf(category, tp) = hook else {
            panic!("{name}: a memory program's tracepoint is optional");
        };
        let exists = root.join("events").join(category).join(tp).exists();
        present += usize::from(exists);
        assert_eq!(
            agent.attached_programs().contains(&name),
            exists,
            "{name}: events/{category}/{tp} exists: {exists}"
        );
        // The kernel keeps 15 characters of a program's name.
        let short = &name[..name.len().min(15)];
        assert!(
            !exists || loaded.iter().any(|l| l == short),
            "{name} is not loaded: {loaded:?}"
        );
    }
    eprintln!(
        "{present} of {} memory programs attached",
        MEMORY_PROGRAMS.len()
    );
}

/// Zones with pages (`/proc/zoneinfo`): `compact_memory` compacts each.
fn populated_zones() -> u64 {
    std::fs::read_to_string("/proc/zoneinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("present"))
        .filter(|v| v.trim().parse::<u64>().is_ok_and(|n| n > 0))
        .count() as u64
}

fn vmstat(key: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing from /proc/vmstat"))
}

/// Writing `vm.compact_memory` compacts every populated zone in the
/// writer's own context: a traced writer's compactions number the zones,
/// their time is within its write's, its group's histogram holds them, and
/// the pages it migrated are at most what the kernel migrated meanwhile.
#[test]
fn compaction_run_by_a_traced_process_is_counted_per_zone() {
    let zones = populated_zones();
    let (mut agent, gate, done, truth) = one_child("pgpt-compact");
    let t = truth.ptr as usize;
    let kid = Killed(fork_child(move || {
        set_comm(b"pgpt-compact");
        if !gate.pass() {
            return;
        }
        let t0 = now_ns();
        unsafe {
            let fd = libc::open(c"/proc/sys/vm/compact_memory".as_ptr(), libc::O_WRONLY);
            libc::write(fd, b"1".as_ptr() as *const c_void, 1);
            libc::close(fd);
        }
        unsafe { &*(t as *const AtomicU64) }.store(now_ns() - t0, Ordering::SeqCst);
        done.signal();
        gate.pass();
    }));
    common::wait_asleep(&[kid.0]);
    agent.refresh();
    let migrated = vmstat("pgmigrate_success");
    let c = round(&agent, kid.0, &gate, &done);
    let migrated = vmstat("pgmigrate_success") - migrated;
    let group = group_of(&agent, kid.0);
    drop(kid);
    let wall = truth.get().load(Ordering::SeqCst);
    let (n, ns) = (
        delta(&c, counter::COMPACTIONS),
        delta(&c, counter::COMPACTION_NS),
    );
    let moved = delta(&c, counter::PAGES_MIGRATED);
    eprintln!(
        "compact_memory: {n} compactions ({zones} zones), {:.3} ms of a {:.3} ms write; \
         {moved} pages migrated ({migrated} on the whole machine)",
        ns as f64 / 1e6,
        wall as f64 / 1e6
    );
    assert_eq!(n, zones, "one compaction per populated zone");
    assert!(ns > 0 && ns <= wall, "{ns} ns of compaction in {wall} ns");
    assert!(moved <= migrated);
    // Its group (it alone): the same, as a histogram.
    let (n, ns) = (c.1.v[counter::COMPACTIONS], c.1.v[counter::COMPACTION_NS]);
    let h = &group.hists[hist_kind::COMPACTION];
    assert_eq!(group.counters.v[counter::COMPACTIONS], n);
    assert_eq!(h.buckets.iter().sum::<u64>(), n, "histogram count");
    assert_eq!(h.sum_ns, ns, "histogram sum");
}
