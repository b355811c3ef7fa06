//! The memory side: page faults by where they land, faults and preemptions
//! while other processes of the cluster spin, reclaim and compaction
//! stalls, `mmap_lock` waits, NUMA migrations. One tp_btf program per
//! tracepoint; each leaves at once for a task whose `comm` is not traced.
//!
//! These programs run in the task's own context with preemption off (a
//! tracepoint), so they cannot run inside its `sched_switch`. Nor inside
//! the task's own uprobes or another BPF program: a user-mode fault comes
//! from user code, and a fault in the kernel is counted only with page
//! faults enabled, which a program's reads of user memory never are. So
//! their writes to the task's state cannot interleave with the other
//! writers (see `TaskState`).
use agent_common::{
    config::NO_FIELD,
    stats::{counter, diag, hist_kind},
};
use aya_ebpf::{
    helpers::{bpf_find_vma, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    account::Sink,
    maps::{
        atomic_add, bump_diag, task_layout, TaskState, VmaCache, FINDING_VMA, PROC_INFO, SEGMENTS,
        SPINNERS, STALL_COMPACTION, STALL_KIND_MASK, STALL_RECLAIM_DIRECT, STALL_RECLAIM_MEMCG,
        VMA_CACHE, VMA_CACHE_ENTRIES,
    },
    task::{resolve_current, task, task_or_create, KernelTask},
};

/// `vm_flags` bits (include/linux/mm.h; the same on every architecture).
const VM_SHARED: u64 = 0x0000_0008;
const VM_HUGETLB: u64 = 0x0040_0000;

/// The running task's state if it is traced, created on its first event
/// (a new backend faults before it first switches out).
#[inline(always)]
fn traced_current() -> Option<&'static mut TaskState> {
    let t = KernelTask::current();
    if !t.comm_traced() {
        return None;
    }
    let ts = task_or_create(t)?;
    if !resolve_current(ts) {
        return None;
    }
    Some(ts)
}

/// Whether a process of `cluster` other than the task is inside `s_lock`.
/// Cluster 0 (not known) has no peers.
#[inline(always)]
pub fn others_spinning(ts: &TaskState, cluster: u32) -> bool {
    if cluster == 0 {
        return false;
    }
    let Some(n) = SPINNERS.get_ptr(cluster) else {
        return false;
    };
    let n = unsafe { core::ptr::read_volatile(n) } as i64;
    let own = i64::from(ts.spin_start_ns != 0 && ts.spin_cluster == cluster);
    n - own > 0
}

/// Adds `delta` (+1 or -1) to the spinners of `cluster`.
#[inline(always)]
pub fn spinners_add(cluster: u32, delta: i64) {
    if cluster == 0 {
        return;
    }
    if let Some(n) = SPINNERS.get_ptr_mut(cluster) {
        atomic_add(n, delta as u64);
    }
}

/// What `bpf_find_vma`'s callback found.
#[repr(C)]
struct VmaInfo {
    flags: u64,
    file: u64,
    start: u64,
    end: u64,
}

/// Called by `bpf_find_vma` with the mapping that holds the address (a BTF
/// pointer: plain loads at offsets from the kernel's BTF).
#[inline(never)]
extern "C" fn vma_found(_task: *mut u8, vma: *mut u8, out: *mut VmaInfo) -> i64 {
    unsafe {
        let flags =
            core::ptr::read_volatile(vma.add(task_layout!(vma_flags) as usize) as *const u64);
        let file = core::ptr::read_volatile(vma.add(task_layout!(vma_file) as usize) as *const u64);
        (*out).flags = flags;
        (*out).file = file;
        (*out).start =
            core::ptr::read_volatile(vma.add(task_layout!(vma_start) as usize) as *const u64);
        (*out).end =
            core::ptr::read_volatile(vma.add(task_layout!(vma_end) as usize) as *const u64);
    }
    0
}

/// `page_fault_user(unsigned long address, struct pt_regs *regs, unsigned long error_code)`:
/// a fault taken in user mode, counted once per exception (the kernel's
/// own minor and major fault counts are per completed fault; README).
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(ctx: BtfTracePointContext) -> u32 {
    fault(&ctx);
    0
}

/// The same arguments: a fault taken in kernel mode, which is the task's
/// when the address is a user one. PostgreSQL reads a block with `pread`
/// into a buffer page: the kernel's copy faults the page in (most of a
/// backend's first touches of shared_buffers come this way).
#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: BtfTracePointContext) -> u32 {
    // Kernel addresses have the top bit set (x86-64, arm64). A fault with
    // page faults disabled (`copy_*_nofault`: `bpf_probe_read_user`, the
    // s_lock probe's own name read, a profiler's stack walk from an NMI)
    // is refused, not counted by the kernel, and not the task's.
    if (ctx.arg::<u64>(0) as i64) < 0 || KernelTask::current().pagefault_disabled() != 0 {
        return 0;
    }
    fault(&ctx);
    0
}

#[inline(always)]
fn fault(ctx: &BtfTracePointContext) {
    let Some(ts) = traced_current() else {
        return;
    };
    let address = ctx.arg::<u64>(0);
    let cluster = cluster_of(ts);
    let sink = Sink::of(ts);
    ts.flags |= FINDING_VMA;
    let found = region(cluster, address);
    ts.flags &= !FINDING_VMA;
    match found {
        Region::Found(region, huge) => {
            sink.add(region, 1);
            if huge {
                sink.add(counter::FAULTS_HUGETLB, 1);
            }
        }
        Region::Unknown => {}
        // No mapping: the fault fails (SIGSEGV, or EFAULT for a system
        // call), and the kernel counts no fault.
        Region::None => return,
    }
    if ts.spin_start_ns != 0 {
        sink.add(counter::FAULTS_WHILE_SPINNING, 1);
    }
    if others_spinning(ts, cluster) {
        sink.add(counter::FAULTS_WHILE_OTHERS_SPIN, 1);
    }
}

/// The task's cluster; for a process the agent has not classified yet (a
/// new backend, which faults in shared memory from its first instructions),
/// its parent's.
#[inline(always)]
fn cluster_of(ts: &TaskState) -> u32 {
    if ts.cluster != 0 {
        return ts.cluster;
    }
    let parent = KernelTask::current().parent();
    if parent.addr() == 0 {
        return 0;
    }
    match unsafe { PROC_INFO.get(parent.tgid()) } {
        Some(info) => info.cluster,
        None => 0,
    }
}

/// Where a fault at `address` lands (see [`Region`]). The main segment is a range compare; anything else asks
/// the kernel for the mapping (`bpf_find_vma`), once per mapping: the
/// answer is kept on the CPU (`VMA_CACHE`, the last 16) and reused for the process's
/// next faults in the same mapping while its `mmap_lock` has not been taken
/// for writing since (every change of the mappings needs that).
///
/// The look-up is what costs: at this tracepoint interrupts are off, so
/// `bpf_find_vma` hands the release of its `mmap_lock` try-lock to an
/// interrupt of its own (irq_work), some microseconds on a VM.
#[inline(always)]
fn region(cluster: u32, address: u64) -> Region {
    if cluster != 0 {
        if let Some(seg) = SEGMENTS.get(cluster) {
            if address >= seg.start && address < seg.end {
                return Region::Found(counter::FAULTS_MAIN_SHARED, seg.huge != 0);
            }
        }
    }
    let me = KernelTask::current();
    let (mm, seq) = mm_and_seq(me);
    let Some(caches) = VMA_CACHE.get_ptr_mut(0) else {
        return Region::Unknown;
    };
    let caches = unsafe { &mut *caches };
    let tgid = me.tgid();
    let exec_id = me.exec_id();
    let leader_start = me.group_leader().start_time();
    if seq & 1 == 0 {
        let mut i = 0;
        while i < VMA_CACHE_ENTRIES {
            let c = &caches.e[i];
            if c.mm == mm
                && c.seq == seq
                && c.tgid == tgid
                && c.exec_id == exec_id
                && c.leader_start == leader_start
                && address >= c.start
                && address < c.end
            {
                return Region::Found(c.region as usize, c.huge != 0);
            }
            i += 1;
        }
    }
    let mut info = VmaInfo {
        flags: 0,
        file: 0,
        start: 0,
        end: 0,
    };
    let found = unsafe {
        bpf_find_vma(
            me.addr() as *mut _,
            address,
            vma_found as *mut core::ffi::c_void,
            &mut info as *mut VmaInfo as *mut core::ffi::c_void,
            0,
        )
    };
    match found {
        0 => {}
        -16 => {
            // EBUSY: the lock is held for writing.
            bump_diag(diag::FAULT_REGION_UNKNOWN);
            return Region::Unknown;
        }
        _ => return Region::None, // ENOENT: no mapping; the fault fails
    }
    let huge = info.flags & VM_HUGETLB != 0;
    let region = if info.flags & VM_SHARED != 0 {
        counter::FAULTS_OTHER_SHARED
    } else if info.file != 0 {
        counter::FAULTS_FILE
    } else {
        counter::FAULTS_PRIVATE
    };
    // Kept only if no writer held the lock meanwhile (the look-up took it
    // for reading: the sequence read before is still the mapping's).
    let (_, after) = mm_and_seq(me);
    if seq & 1 == 0 && after == seq && mm != 0 {
        let slot = caches.next as usize % VMA_CACHE_ENTRIES;
        caches.next = (slot as u32 + 1) % VMA_CACHE_ENTRIES as u32;
        if let Some(c) = caches.e.get_mut(slot) {
            *c = VmaCache {
                mm,
                leader_start,
                seq,
                tgid,
                exec_id,
                _pad: 0,
                start: info.start,
                end: info.end,
                region: region as u32,
                huge: u32::from(huge),
            };
        }
    }
    Region::Found(region, huge)
}

/// Where a fault landed.
enum Region {
    /// The region counter, and whether the mapping is on huge pages.
    Found(usize, bool),
    /// In a mapping that could not be looked up.
    Unknown,
    /// In no mapping.
    None,
}

/// The task's `mm` and its `mm_lock_seq` (odd while a writer holds the
/// lock; 1, never reusable, where the kernel has no such sequence).
#[inline(always)]
fn mm_and_seq(t: KernelTask) -> (u64, u32) {
    let mm = t.mm();
    let off = task_layout!(mm_lock_seq);
    if mm == 0 || off == NO_FIELD {
        return (mm, 1);
    }
    let seq =
        unsafe { core::ptr::read_volatile((mm as *const u8).add(off as usize) as *const u32) };
    (mm, seq)
}

/// `mmap_lock_start_locking(struct mm_struct *mm, bool write)`: the task
/// asks for an `mmap_lock` (try-locks come here too, and wait for nothing).
#[btf_tracepoint(function = "mmap_lock_start_locking")]
pub fn mmap_lock_start_locking(ctx: BtfTracePointContext) -> u32 {
    let Some(ts) = traced_current() else {
        return 0;
    };
    if ts.flags & FINDING_VMA != 0 {
        return 0; // the fault program's own look-up
    }
    let write = ctx.arg::<u64>(1) & 0xff != 0;
    let now = unsafe { bpf_ktime_get_ns() };
    // Bit 0: write; bit 1: set, so that the value is never 0.
    ts.mmap_lock_start_ns = (now & !3) | u64::from(write) | 2;
    0
}

/// `mmap_lock_acquire_returned(struct mm_struct *mm, bool write, bool success)`:
/// the wait (if this task's start was seen) ends. Counted if the lock was
/// taken: a failed try-lock, or a wait cut short by a fatal signal, is not
/// an acquisition.
#[btf_tracepoint(function = "mmap_lock_acquire_returned")]
pub fn mmap_lock_acquire_returned(ctx: BtfTracePointContext) -> u32 {
    let t = KernelTask::current();
    if !t.comm_traced() {
        return 0;
    }
    let Some(ts) = task(t) else {
        return 0;
    };
    let start = ts.mmap_lock_start_ns;
    if start == 0 || ts.flags & FINDING_VMA != 0 {
        return 0;
    }
    ts.mmap_lock_start_ns = 0;
    if ctx.arg::<u64>(2) & 0xff == 0 {
        return 0;
    }
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start & !3);
    Sink::of(ts).mmap_lock_wait(start & 1 != 0, ns);
    0
}

/// A reclaim or compaction begins in the task's own context.
#[inline(always)]
fn stall_begin(kind: u64) {
    let Some(ts) = traced_current() else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    ts.stall_start_ns = (now & !STALL_KIND_MASK) | kind;
}

/// It ends: timed if its begin was seen.
#[inline(always)]
fn stall_end(kind: u64) {
    let t = KernelTask::current();
    if !t.comm_traced() {
        return;
    }
    let Some(ts) = task(t) else {
        return;
    };
    let start = ts.stall_start_ns;
    if start == 0 {
        return;
    }
    ts.stall_start_ns = 0;
    if start & STALL_KIND_MASK != kind {
        return; // a begin of another kind, its end never seen
    }
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start & !STALL_KIND_MASK);
    let sink = Sink::of(ts);
    match kind {
        STALL_RECLAIM_DIRECT => sink.stall(
            counter::RECLAIM_DIRECT,
            counter::RECLAIM_DIRECT_NS,
            hist_kind::RECLAIM_DIRECT,
            ns,
        ),
        STALL_RECLAIM_MEMCG => sink.stall(
            counter::RECLAIM_MEMCG,
            counter::RECLAIM_MEMCG_NS,
            hist_kind::RECLAIM_MEMCG,
            ns,
        ),
        _ => sink.stall(
            counter::COMPACTIONS,
            counter::COMPACTION_NS,
            hist_kind::COMPACTION,
            ns,
        ),
    }
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_begin")]
pub fn direct_reclaim_begin(_ctx: BtfTracePointContext) -> u32 {
    stall_begin(STALL_RECLAIM_DIRECT);
    0
}

#[btf_tracepoint(function = "mm_vmscan_direct_reclaim_end")]
pub fn direct_reclaim_end(_ctx: BtfTracePointContext) -> u32 {
    stall_end(STALL_RECLAIM_DIRECT);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_begin")]
pub fn memcg_reclaim_begin(_ctx: BtfTracePointContext) -> u32 {
    stall_begin(STALL_RECLAIM_MEMCG);
    0
}

#[btf_tracepoint(function = "mm_vmscan_memcg_reclaim_end")]
pub fn memcg_reclaim_end(_ctx: BtfTracePointContext) -> u32 {
    stall_end(STALL_RECLAIM_MEMCG);
    0
}

/// Compaction of one zone; in a traced task's context it is direct
/// compaction (kcompactd is a kernel thread, never traced).
#[btf_tracepoint(function = "mm_compaction_begin")]
pub fn compaction_begin(_ctx: BtfTracePointContext) -> u32 {
    stall_begin(STALL_COMPACTION);
    0
}

#[btf_tracepoint(function = "mm_compaction_end")]
pub fn compaction_end(_ctx: BtfTracePointContext) -> u32 {
    stall_end(STALL_COMPACTION);
    0
}

/// A traced task moved to another NUMA node.
#[inline(always)]
fn numa_moved(t: KernelTask) {
    // `dst_tsk` may be NULL (a move to an idle CPU).
    if t.addr() == 0 || !t.comm_traced() {
        return;
    }
    if let Some(ts) = task(t) {
        if ts.tgid != 0 {
            Sink::of(ts).add(counter::NUMA_MIGRATIONS, 1);
        }
    }
}

/// `sched_move_numa(struct task_struct *tsk, int src_cpu, int dst_cpu)`.
#[btf_tracepoint(function = "sched_move_numa")]
pub fn sched_move_numa(ctx: BtfTracePointContext) -> u32 {
    numa_moved(KernelTask::arg(&ctx, 0));
    0
}

/// `sched_swap_numa(struct task_struct *src_tsk, int src_cpu,
/// struct task_struct *dst_tsk, int dst_cpu)`: both tasks move.
#[btf_tracepoint(function = "sched_swap_numa")]
pub fn sched_swap_numa(ctx: BtfTracePointContext) -> u32 {
    numa_moved(KernelTask::arg(&ctx, 0));
    numa_moved(KernelTask::arg(&ctx, 2));
    0
}

/// `mm_migrate_pages(unsigned long succeeded, ...)`: base pages migrated
/// in the task's context, for any reason: NUMA balancing's misplaced pages,
/// its own direct compaction, `mbind`/`move_pages`, demotion in its direct
/// reclaim. (The reason is the last argument, whose position differs
/// between kernels.)
#[btf_tracepoint(function = "mm_migrate_pages")]
pub fn mm_migrate_pages(ctx: BtfTracePointContext) -> u32 {
    let t = KernelTask::current();
    if !t.comm_traced() {
        return 0;
    }
    let Some(ts) = task(t) else {
        return 0;
    };
    if ts.tgid != 0 {
        Sink::of(ts).add(counter::PAGES_MIGRATED, ctx.arg::<u64>(0));
    }
    0
}
