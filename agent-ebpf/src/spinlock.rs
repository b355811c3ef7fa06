//! PostgreSQL's contended spinlock path: a uprobe and a uretprobe on
//! `int s_lock(volatile slock_t *lock, const char *file, int line, const char *func)`,
//! which runs only under contention and returns the number of sleeps.
use agent_common::{
    hist::bucket_index,
    stats::{counter, diag, SpinKey},
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user_str_bytes},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use aya_log_ebpf::warn;

use crate::{
    account::Sink,
    maps::{bump_diag, SPIN_SCRATCH, SPIN_SITES},
    task::{resolve_current, task},
};

#[uprobe]
pub fn s_lock_enter(ctx: ProbeContext) -> u32 {
    let Some(ts) = task(bpf_get_current_pid_tgid() as u32) else {
        return 0;
    };
    // Also picks up a group change since the task last slept.
    if !resolve_current(&ctx, ts) {
        return 0;
    }
    let func: u64 = ctx.arg(3).unwrap_or(0);
    ts.spin_site = func;
    ensure_site(
        &ctx,
        SpinKey {
            cluster: ts.cluster,
            _pad: 0,
            func,
        },
    );
    ts.spin_start_ns = unsafe { bpf_ktime_get_ns() };
    0
}

#[uretprobe]
pub fn s_lock_return(ctx: RetProbeContext) -> u32 {
    let Some(ts) = task(bpf_get_current_pid_tgid() as u32) else {
        return 0;
    };
    if ts.spin_start_ns == 0 {
        return 0;
    }
    let d = unsafe { bpf_ktime_get_ns() }.saturating_sub(ts.spin_start_ns);
    ts.spin_start_ns = 0;
    let delays = ctx.ret::<i32>().max(0) as u64;
    let sink = Sink::of(ts);
    sink.add(counter::SPINS, 1);
    sink.add(counter::SPIN_NS, d);
    sink.add(counter::SPIN_DELAYS, delays);
    let key = SpinKey {
        cluster: ts.cluster,
        _pad: 0,
        func: ts.spin_site,
    };
    if let Some(site) = SPIN_SITES.get_ptr_mut(&key) {
        let site = unsafe { &mut *site };
        site.delays += delays;
        if let Some(b) = site.hist.buckets.get_mut(bucket_index(d)) {
            *b += 1;
        }
        site.hist.sum_ns += d;
    }
    0
}

/// Adds the call site the first time it is seen, with its name. The name
/// read fails if its page is not mapped in this process yet (the probe
/// cannot fault it in), so it is retried while this CPU's copy has none; the
/// agent also reads missing names from /proc/PID/mem.
#[inline(always)]
fn ensure_site(ctx: &ProbeContext, key: SpinKey) {
    if let Some(site) = SPIN_SITES.get_ptr_mut(&key) {
        let site = unsafe { &mut *site };
        if site.name[0] == 0
            && unsafe { bpf_probe_read_user_str_bytes(key.func as *const u8, &mut site.name) }
                .is_err()
        {
            site.name[0] = 0;
        }
        return;
    }
    let Some(v) = SPIN_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let v = unsafe { &mut *v };
    v.delays = 0;
    v.hist.sum_ns = 0;
    let mut i = 0;
    while i < v.hist.buckets.len() {
        v.hist.buckets[i] = 0;
        i += 1;
    }
    if unsafe { bpf_probe_read_user_str_bytes(key.func as *const u8, &mut v.name) }.is_err() {
        v.name[0] = 0;
    }
    // BPF_NOEXIST: another CPU may have added it meanwhile; that is fine.
    if let Err(e) = SPIN_SITES.insert(&key, v, 1) {
        if e != -17 {
            bump_diag(diag::SPIN_SITES_FULL);
            warn!(
                ctx,
                "pgpreempt: spinlock site map full, a new site is not counted"
            );
        }
    }
}
