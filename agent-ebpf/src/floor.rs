//! The benchmark floor: a sched_switch program that only increments a
//! per-CPU counter. `cargo xtask bench` compares the agent against it; it is
//! never attached by `pgpreempt run`.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::maps::FLOOR_COUNT;

#[tracepoint]
pub fn floor_sched_switch(_ctx: TracePointContext) -> u32 {
    if let Some(c) = FLOOR_COUNT.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
    0
}
