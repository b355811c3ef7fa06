//! sched/sched_switch: voluntary and involuntary switches, and the time a
//! task waits on a run queue, after a preemption or after a wakeup.
use agent_common::stats::counter;
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};

use crate::{
    account::Sink,
    lock_holder::remember_preemption,
    maps::layout,
    task::{ctx_comm_traced, ctx_u32, ctx_u64, resolve_current, task, task_or_create},
};

/// `prev_state` bits of a task that is exiting (EXIT_DEAD, EXIT_ZOMBIE).
const EXITING: u64 = 0x10 | 0x20;

#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    // The clock is read only when an interval starts or ends: a clock read
    // costs more than the rest of the untraced path (see README).
    let mut clock = Clock(0);
    if ctx_comm_traced(&ctx, layout!(switch_prev_comm)) {
        switch_out(&ctx, &mut clock);
    }
    if ctx_comm_traced(&ctx, layout!(switch_next_comm)) {
        switch_in(&ctx, &mut clock);
    }
    0
}

/// One event's timestamp, read on first use.
struct Clock(u64);

impl Clock {
    #[inline(always)]
    fn now(&mut self) -> u64 {
        if self.0 == 0 {
            self.0 = unsafe { bpf_ktime_get_ns() };
        }
        self.0
    }
}

#[inline(always)]
fn switch_out(ctx: &TracePointContext, clock: &mut Clock) {
    let state = ctx_u64(ctx, layout!(switch_prev_state));
    if state & EXITING != 0 {
        return; // the final switch of an exiting task
    }
    let pid = ctx_u32(ctx, layout!(switch_prev_pid));
    let Some(ts) = task_or_create(ctx, pid) else {
        return;
    };
    if !resolve_current(ctx, ts) {
        return;
    }
    // Involuntary: still runnable (R), or preempted inside the kernel (R+).
    // This is the kernel's own nivcsw rule (see README).
    let involuntary = state == 0 || state & layout!(task_report_max) as u64 != 0;
    let sink = Sink::of(ts);
    if involuntary {
        sink.add(counter::INVOLUNTARY_SWITCHES, 1);
        if ts.spin_start_ns != 0 {
            // Preempted while spinning in s_lock: its slice burned waiting.
            sink.add(counter::SPINNER_PREEMPTIONS, 1);
        }
        ts.offcpu_ns = clock.now();
    } else {
        sink.add(counter::VOLUNTARY_SWITCHES, 1);
        ts.offcpu_ns = 0;
    }
    ts.wake_ns = 0;
}

#[inline(always)]
fn switch_in(ctx: &TracePointContext, clock: &mut Clock) {
    let pid = ctx_u32(ctx, layout!(switch_next_pid));
    let Some(ts) = task(pid) else { return };
    if ts.offcpu_ns != 0 {
        let now = clock.now();
        let d = now.saturating_sub(ts.offcpu_ns);
        remember_preemption(ts, ts.offcpu_ns, now);
        ts.offcpu_ns = 0;
        ts.wake_ns = 0;
        Sink::of(ts).preempted(d);
    } else if ts.wake_ns != 0 {
        let d = clock.now().saturating_sub(ts.wake_ns);
        ts.wake_ns = 0;
        if ts.tgid == 0 {
            // First run of a task we only saw woken: its process is known at
            // its first switch-out, where this sample is counted.
            ts.pending_wakeup_ns += d;
        } else {
            Sink::of(ts).wakeup(d);
        }
    }
}
