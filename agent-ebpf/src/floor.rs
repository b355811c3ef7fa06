//! The benchmark floor: sched_switch programs that only increment a per-CPU
//! counter, on the classic tracepoint and on tp_btf (the attach type the
//! agent uses). `cargo xtask bench` compares the agent against them; they
//! are never attached by `pgpreempt run`.
use aya_ebpf::{
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

use crate::maps::FLOOR_COUNT;

#[inline(always)]
fn count() {
    if let Some(c) = FLOOR_COUNT.get_ptr_mut(0) {
        unsafe { *c += 1 };
    }
}

#[tracepoint]
pub fn floor_sched_switch(_ctx: TracePointContext) -> u32 {
    count();
    0
}

#[btf_tracepoint(function = "sched_switch")]
pub fn floor_sched_switch_btf(_ctx: BtfTracePointContext) -> u32 {
    count();
    0
}
