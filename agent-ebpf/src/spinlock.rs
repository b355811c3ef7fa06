//! PostgreSQL's contended spinlock path: a uprobe and a uretprobe on
//! `int s_lock(volatile slock_t *lock, const char *file, int line, const char *func)`,
//! which runs only under contention and returns the number of sleeps.
//!
//! Uprobe programs run preemptible on full and lazy kernels: another task's
//! program, or this task's own switch-out, can run between any two of their
//! instructions. So they write only their own fields of the task's state
//! (`spin_start_ns`, `spin_site`, `spin_cluster`; nothing else writes them),
//! read its labels without storing them, and add to the shared per-CPU maps
//! (and the health counters) with atomic adds (see `account`).
use agent_common::{
    hist::bucket_index,
    hist::HIST_BUCKETS,
    stats::{counter, diag, Hist, SiteName, SpinKey, SpinStats, SITE_NAME_LEN},
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;

use crate::{
    account::Sink,
    maps::{atomic_add, bump_diag, SPIN_SITES, SPIN_SITE_NAMES},
    memory::spinners_add,
    task::{current_labels, task, KernelTask},
};

/// A new site's first value (its name goes to `SPIN_SITE_NAMES`).
static NEW_SITE: SpinStats = SpinStats {
    delays: 0,
    hist: Hist {
        buckets: [0; HIST_BUCKETS],
        sum_ns: 0,
    },
};

#[uprobe]
pub fn s_lock_enter(ctx: ProbeContext) -> u32 {
    let Some(ts) = task(KernelTask::current()) else {
        return 0;
    };
    if ts.tgid == 0 {
        return 0;
    }
    let (_, cluster) = current_labels(ts);
    let func: u64 = ctx.arg(3).unwrap_or(0);
    if ts.spin_start_ns != 0 {
        // A return never seen (the uretprobe attached after the entry ran?):
        // the task stops counting as a spinner of that cluster.
        spinners_add(ts.spin_cluster, -1);
    }
    ts.spin_site = func;
    ts.spin_cluster = cluster;
    ensure_site(
        &ctx,
        SpinKey {
            cluster,
            _pad: 0,
            func,
        },
    );
    ts.spin_start_ns = unsafe { bpf_ktime_get_ns() };
    // After the start is stored: a switch-out in between undercounts
    // the others (it takes this task for one of them only once it is).
    spinners_add(cluster, 1);
    0
}

#[uretprobe]
pub fn s_lock_return(ctx: RetProbeContext) -> u32 {
    let Some(ts) = task(KernelTask::current()) else {
        return 0;
    };
    let start = ts.spin_start_ns;
    if start == 0 {
        return 0;
    }
    let d = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    spinners_add(ts.spin_cluster, -1);
    ts.spin_start_ns = 0;
    let delays = ctx.ret::<i32>().max(0) as u64;
    let (group, _) = current_labels(ts);
    let sink = Sink::new(ts.tgid, group);
    sink.add_atomic(counter::SPINS, 1);
    sink.add_atomic(counter::SPIN_NS, d);
    sink.add_atomic(counter::SPIN_DELAYS, delays);
    // The site entered, even if the agent relabelled the task meanwhile.
    let key = SpinKey {
        cluster: ts.spin_cluster,
        _pad: 0,
        func: ts.spin_site,
    };
    if let Some(site) = SPIN_SITES.get_ptr_mut(&key) {
        unsafe {
            atomic_add(core::ptr::addr_of_mut!((*site).delays), delays);
            let b = bucket_index(d);
            if b < HIST_BUCKETS {
                atomic_add(core::ptr::addr_of_mut!((*site).hist.buckets[b]), 1);
            }
            atomic_add(core::ptr::addr_of_mut!((*site).hist.sum_ns), d);
        }
    }
    0
}

/// Adds the call site the first time it is seen, then its name. The read
/// fails if the name's page is not mapped in this process yet (the probe
/// cannot fault it in), so it is retried while `SPIN_SITE_NAMES` has no
/// entry for the site; the agent also reads missing names from
/// /proc/PID/mem. The name is read onto the stack and added only if the read
/// gave one (`BPF_NOEXIST`: an element is filled before it is linked in, so
/// the map never holds an empty or half-written name; of two programs
/// racing here, one adds it, with the same bytes).
#[inline(always)]
fn ensure_site(ctx: &ProbeContext, key: SpinKey) {
    if SPIN_SITES.get_ptr_mut(&key).is_none() {
        // BPF_NOEXIST: another program may have added it meanwhile; fine.
        if let Err(e) = SPIN_SITES.insert(&key, &NEW_SITE, 1) {
            if e != -17 {
                bump_diag(diag::SPIN_SITES_FULL);
                warn!(
                    ctx,
                    "pgpreempt: spinlock site map full, a new site is not counted"
                );
                return;
            }
        }
    }
    if SPIN_SITE_NAMES.get_ptr(&key).is_some() {
        return;
    }
    let mut name: SiteName = [0; SITE_NAME_LEN];
    let read = unsafe { bpf_probe_read_user_str_bytes(key.func as *const u8, &mut name) };
    if matches!(read, Ok(s) if !s.is_empty()) {
        let _ = SPIN_SITE_NAMES.insert(&key, &name, 1);
    }
}
