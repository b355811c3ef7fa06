//! sched_switch (tp_btf): voluntary and involuntary switches, and the time a
//! task waits on a run queue, after a preemption or after a wakeup.
use agent_common::stats::counter;
use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    account::Sink,
    futex,
    lock_holder::remember_preemption,
    task::{resolve_current, task, task_or_create, KernelTask, FUTEX_WAIT},
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
    if prev.comm_traced() {
        switch_out(&ctx, prev, &mut clock);
    }
    let next = KernelTask::arg(&ctx, 2);
    if next.comm_traced() {
        switch_in(next, &mut clock);
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
fn switch_out(ctx: &BtfTracePointContext, prev: KernelTask, clock: &mut Clock) {
    let state = ctx.arg::<u64>(3) & 0xffff_ffff;
    if state & TASK_DEAD != 0 {
        return;
    }
    let Some(ts) = task_or_create(ctx, prev.pid()) else {
        return;
    };
    if !resolve_current(ctx, ts) {
        return;
    }
    // Involuntary: preempted (also inside the kernel, R+), or still
    // runnable (R). This is the kernel's own nivcsw rule (see README).
    let preempt = ctx.arg::<u64>(0) & 0xff != 0;
    let involuntary = preempt || state == 0;
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
        futex::blocking(prev, ts, || clock.now());
    }
    ts.wake_ns = 0;
}

#[inline(always)]
fn switch_in(next: KernelTask, clock: &mut Clock) {
    let Some(ts) = task(next.pid()) else { return };
    if ts.futex_kind == FUTEX_WAIT {
        futex::running_again(ts, clock.now());
    }
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
