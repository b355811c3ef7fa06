//! sched_switch (tp_btf): voluntary and involuntary switches, and the time a
//! task waits on a run queue, after a preemption or after a wakeup.
//!
//! Run-queue time needs no wakeup program and no clock: at each switch-out
//! the task's `sched_info.run_delay` (the kernel's own run-queue time,
//! schedstat) has grown by the wait before the run now ending, and the
//! switch-out before says whether that wait followed a sleep (wakeup
//! latency) or a preemption. The clock is read at involuntary switch-outs,
//! for the lock-holder intervals (`lock_holder`), at the switch-in after a
//! preemption the kernel does not count (preempted while going to sleep,
//! R+), and at the start and end of a futex wait.
//!
//! A task's state lives from its first traced switch-out to its final one
//! (`TASK_DEAD`), where the wait before its last run is counted and the
//! state is freed.
use agent_common::stats::{counter, diag, PREEMPTOR_OVERFLOW};
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use crate::{
    account::Sink,
    futex,
    lock_holder::{close_open_interval, remember_preemption},
    maps::{
        add_diag, atomic_add, bump_diag, TaskState, EMPTY, EXIT_SCRATCH, OTHERS_SPIN, PREEMPTORS,
        PREEMPTOR_KEY, QUEUED, SEEDS, SEEN_IN, SLEPT, TASKS, WAKE_PROCESS, WAKE_TIMER,
    },
    memory::{others_spinning, spinners_add},
    task::{own_state, resolve_current, task, task_or_create, KernelTask},
    wake_cause,
};

/// `TASK_DEAD` in `prev->__state`: the final switch of an exiting task.
const TASK_DEAD: u64 = 0x80;

/// `sched_switch(bool preempt, struct task_struct *prev,
/// struct task_struct *next, unsigned int prev_state)`
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> u32 {
    // The clock is read only when an interval starts or ends: a clock read
    // costs more than the rest of the untraced path (see README).
    let mut clock = Clock(0);
    let prev = KernelTask::arg(&ctx, 1);
    let state = ctx.arg::<u64>(3) & 0xffff_ffff;
    if prev.comm_traced() {
        switch_out(&ctx, prev, state, &mut clock);
    } else if state & TASK_DEAD != 0 {
        // A task that was traced and took another name (exec, prctl) still
        // has its state: freed at its end too (a lookup per exit of any task).
        forget(prev);
    }
    let next = KernelTask::arg(&ctx, 2);
    if next.comm_traced() {
        switch_in(next, &mut clock);
    }
    0
}

/// One event's timestamp, read on first use.
pub struct Clock(pub u64);

impl Clock {
    #[inline(always)]
    pub fn now(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, prev: KernelTask, state: u64, clock: &mut Clock) {
    if state & TASK_DEAD != 0 {
        final_switch_out(ctx, prev, state, clock);
        return;
    }
    let Some(ts) = task_or_create(prev) else {
        return;
    };
    if resolve_current(ts) {
        account_switch_out(ctx, prev, ts, state, clock);
    }
}

/// The task's last switch: counts the wait before its last run and frees
/// its state. A task seen for the first time here is counted from a
/// per-CPU scratch state, never inserted: its tid may already be another
/// task's (a thread that reaps itself frees its tid before this switch),
/// and under map pressure an insert would evict a live task's state.
#[inline(always)]
fn final_switch_out(ctx: &BtfTracePointContext, prev: KernelTask, state: u64, clock: &mut Clock) {
    let own = own_state(prev);
    let found = own.is_some();
    let ts = match own {
        Some(ts) => ts,
        None => {
            let Some(ts) = EXIT_SCRATCH.get_ptr_mut(0) else {
                return;
            };
            let ts = unsafe { &mut *ts };
            *ts = EMPTY;
            ts.task = prev.addr();
            ts.start_time = prev.start_time();
            ts
        }
    };
    if resolve_current(ts) {
        account_switch_out(ctx, prev, ts, state, clock);
    }
    let tid = prev.pid();
    if found {
        left_s_lock(ts);
        let _ = TASKS.remove(tid);
    }
    let _ = SEEDS.remove(tid);
}

/// A task that ends inside `s_lock` (killed, or a PANIC for a stuck
/// spinlock) never returns from it: it stops counting as a spinner here.
#[inline(always)]
fn left_s_lock(ts: &TaskState) {
    if ts.spin_start_ns != 0 {
        spinners_add(ts.spin_cluster, -1);
    }
}

/// Frees a task's state and its start-up seed at its end: the only place
/// an entry is freed (the LRU evicts only if the map overflows).
#[inline(always)]
fn forget(prev: KernelTask) {
    let tid = prev.pid();
    if let Some(ts) = own_state(prev) {
        left_s_lock(ts);
        let _ = TASKS.remove(tid);
    }
    let _ = SEEDS.remove(tid);
}

#[inline(always)]
fn account_switch_out(
    ctx: &BtfTracePointContext,
    prev: KernelTask,
    ts: &mut TaskState,
    state: u64,
    clock: &mut Clock,
) {
    let sink = Sink::of(ts);
    // The wait before the run now ending, as the kernel counted it.
    let run_delay = prev.run_delay();
    let pcount = prev.pcount();
    let waited = run_delay.saturating_sub(ts.run_delay_seen);
    // One run since the last switch-out; more means switch-outs this
    // program did not see (each run follows one), and `waited` holds
    // several waits: an open interval then gets no length of its own.
    let runs = pcount.wrapping_sub(ts.pcount_seen);
    let one_wait = if runs == 1 { waited } else { 0 };
    let exec = prev.sum_exec_runtime();
    if ts.pcount_seen != 0 && ts.flags & SEEN_IN == 0 {
        // Its switch-in was not seen. A sleep's wake-up still has its cause
        // waiting (`catch_up_missed_switch_in` counts the miss where a
        // futex wait or a preemption was open).
        if ts.futex_start_ns == 0 && ts.offcpu_ns == 0 {
            bump_diag(diag::SWITCH_IN_MISSED);
        }
        if ts.flags & SLEPT != 0 {
            wake_cause::running(ts);
        }
    }
    catch_up_missed_switch_in(ts, one_wait, clock);
    close_open_interval(ts, one_wait);
    if ts.pcount_seen != 0 {
        if runs > 1 && runs < 1 << 20 {
            add_diag(diag::SWITCH_OUT_MISSED, runs - 1);
        }
        if ts.flags & SLEPT != 0 {
            sink.wakeup(waited);
            count_cause(&sink, ts.run_cause);
        } else if ts.flags & QUEUED != 0 {
            preempted(ts, &sink, waited);
        }
        sink.add(counter::ON_CPU_NS, exec.saturating_sub(ts.exec_seen));
    } else {
        first_switch_out(prev, &sink, run_delay, pcount, exec);
    }
    ts.run_delay_seen = run_delay;
    ts.pcount_seen = pcount;
    ts.exec_seen = exec;
    ts.flags &= !(SLEPT | QUEUED | SEEN_IN);
    ts.run_cause = 0;
    if state & TASK_DEAD != 0 {
        // The kernel counts this switch in the task's nvcsw, but nobody can
        // read that count any more (wait4 may reap the task before it), and
        // it ends no wait: not counted.
        return;
    }
    // Involuntary: preempted (also inside the kernel, R+), or still
    // runnable (R). This is the kernel's own nivcsw rule (see README).
    let preempt = ctx.arg::<u64>(0) & 0xff != 0;
    if preempt || state == 0 {
        if state == 0 {
            ts.flags |= QUEUED;
        }
        sink.add(counter::INVOLUNTARY_SWITCHES, 1);
        count_preemptor(ctx, ts.cluster);
        if ts.spin_start_ns != 0 {
            // Preempted while spinning in s_lock: its slice burned waiting.
            sink.add(counter::SPINNER_PREEMPTIONS, 1);
        }
        if others_spinning(ts, ts.cluster) {
            // Maybe the holder of the lock they spin on (README).
            sink.add(counter::PREEMPTIONS_WHILE_OTHERS_SPIN, 1);
            ts.flags |= OTHERS_SPIN;
        }
        ts.offcpu_ns = clock.now();
    } else {
        ts.flags |= SLEPT;
        sink.add(counter::VOLUNTARY_SWITCHES, 1);
        ts.offcpu_ns = 0;
        futex::blocking(prev, ts, state, || clock.now());
    }
}

/// A wake-up's cause (`wake_cause`), counted with it: timer or process;
/// the rest is `WAKEUPS` less both.
#[inline(always)]
fn count_cause(sink: &Sink, cause: u8) {
    // One add whatever the cause: sched_switch's stack is nearly full.
    let idx = match cause {
        WAKE_TIMER => counter::WAKEUPS_TIMER,
        WAKE_PROCESS => counter::WAKEUPS_PROCESS,
        // No waking seen for this run (`diag::WAKING_MISSED`): other.
        0 => return bump_diag(diag::WAKING_MISSED),
        _ => return,
    };
    sink.add(idx, 1);
}

/// The first switch-out of a task since the agent started: its run_delay
/// and time on a CPU hold what came before. Where they stood at start-up
/// is in `SEEDS` (the agent read it from /proc); a task forked since then
/// has run once. A task that has run before and has no seed (it was not
/// traced then: renamed, or its seed was evicted) counts neither.
#[inline(always)]
fn first_switch_out(prev: KernelTask, sink: &Sink, run_delay: u64, pcount: u64, exec: u64) {
    let tid = prev.pid();
    if let Some(seed) = unsafe { SEEDS.get(tid) } {
        if seed.slept != 0 {
            sink.wakeup(run_delay.saturating_sub(seed.run_delay));
        }
        sink.add(counter::ON_CPU_NS, exec.saturating_sub(seed.sum_exec));
        let _ = SEEDS.remove(tid);
    } else if pcount == 1 {
        sink.wakeup(run_delay);
        sink.add(counter::ON_CPU_NS, exec);
    }
}

/// Counts who runs next at an involuntary switch-out: its command name up
/// to the first `/` (kernel threads carry their CPU after it), for the
/// switched-out task's cluster.
#[inline(always)]
fn count_preemptor(ctx: &BtfTracePointContext, cluster: u32) {
    // The key is built in a per-CPU scratch slot: sched_switch's stack is
    // nearly full.
    let Some(key) = PREEMPTOR_KEY.get_ptr_mut(0) else {
        return;
    };
    let key = unsafe { &mut *key };
    let next = KernelTask::arg(ctx, 2);
    key.cluster = cluster;
    key._pad = 0;
    let (lo, hi) = next.comm_words();
    key.comm = [0; 16];
    let mut cut = false;
    for i in 0..16 {
        let b = if i < 8 {
            (lo >> (8 * i)) as u8
        } else {
            (hi >> (8 * (i - 8))) as u8
        };
        cut |= b == b'/' || b == 0;
        if !cut {
            key.comm[i] = b;
        }
    }
    let key = &*key;
    if let Some(n) = PREEMPTORS.get_ptr_mut(key) {
        atomic_add(n, 1);
        return;
    }
    if PREEMPTORS.insert(key, &1, BPF_NOEXIST as u64).is_ok() {
        return;
    }
    // Another CPU inserted it meanwhile, or the map is full.
    let n = PREEMPTORS
        .get_ptr_mut(key)
        .or_else(|| PREEMPTORS.get_ptr_mut(&PREEMPTOR_OVERFLOW));
    if let Some(n) = n {
        atomic_add(n, 1);
    }
}

#[inline(always)]
fn switch_in(next: KernelTask, clock: &mut Clock) {
    let Some(ts) = task(next) else { return };
    ts.flags |= SEEN_IN;
    if ts.flags & SLEPT != 0 {
        wake_cause::running(ts);
    } else {
        // After a preemption: a cause stored meanwhile (a timer that fired
        // while the task, preempted on its way to sleep, waited for a CPU)
        // belongs to no sleep. No later sleep's waking can come before
        // this switch-in, so this clears nothing that counts.
        wake_cause::forget(ts);
    }
    if ts.futex_start_ns != 0 {
        futex::running_again(ts, clock.now());
    }
    if ts.offcpu_ns != 0 {
        if ts.flags & QUEUED != 0 {
            // R: the kernel counts this wait; its end is read from the
            // run-queue time later (`lock_holder`), no clock now.
            remember_preemption(ts, ts.offcpu_ns, 0);
        } else {
            // R+: the kernel keeps no count of this wait.
            let now = clock.now();
            remember_preemption(ts, ts.offcpu_ns, now);
            let (sink, ns) = (Sink::of(ts), now.saturating_sub(ts.offcpu_ns));
            preempted(ts, &sink, ns);
        }
        ts.offcpu_ns = 0;
    }
}

/// A preemption interval ends: counted, and counted apart if it began
/// while others of the cluster were inside `s_lock`.
#[inline(always)]
fn preempted(ts: &mut TaskState, sink: &Sink, ns: u64) {
    sink.preempted(ns);
    if ts.flags & OTHERS_SPIN != 0 {
        ts.flags &= !OTHERS_SPIN;
        sink.add(counter::PREEMPTED_NS_WHILE_OTHERS_SPIN, ns);
    }
}

/// At a switch-out of `ts` (it ran): if it is still in a futex wait or off
/// the CPU, this program did not see its switch-in
/// (`diag::SWITCH_IN_MISSED`; on this kind of VM, switches out of some of
/// init's threads never reach the tracepoint). A preemption while runnable
/// ends exactly: its start plus `waited`, the run-queue time the kernel
/// counted for it (`waited`; 0 when switch-outs were missed too, and the
/// growth holds several waits: then it gets the shortest length). A futex
/// wait, or an R+ preemption, ends here, one run late.
#[inline(always)]
fn catch_up_missed_switch_in(ts: &mut TaskState, waited: u64, clock: &mut Clock) {
    if ts.futex_start_ns == 0 && ts.offcpu_ns == 0 {
        return;
    }
    bump_diag(diag::SWITCH_IN_MISSED);
    if ts.futex_start_ns != 0 {
        futex::running_again(ts, clock.now());
    }
    if ts.offcpu_ns != 0 {
        if ts.flags & QUEUED != 0 {
            remember_preemption(ts, ts.offcpu_ns, ts.offcpu_ns + waited.max(1));
        } else {
            let now = clock.now();
            remember_preemption(ts, ts.offcpu_ns, now);
            let (sink, ns) = (Sink::of(ts), now.saturating_sub(ts.offcpu_ns));
            preempted(ts, &sink, ns);
        }
        ts.offcpu_ns = 0;
    }
}
