//! `aya::Pod` for the map value types, for the agent only.
use crate::{
    config::CommFilter,
    event::ProcEvent,
    stats::{Counters, GroupStats, ProcInfo, TaskSeed},
};

// SAFETY: all are #[repr(C)], made of integers only, without padding.
unsafe impl aya::Pod for Counters {}
unsafe impl aya::Pod for GroupStats {}
unsafe impl aya::Pod for crate::stats::SharedGroupStats {}
unsafe impl aya::Pod for crate::stats::Segment {}
unsafe impl aya::Pod for ProcInfo {}
unsafe impl aya::Pod for TaskSeed {}
unsafe impl aya::Pod for ProcEvent {}
unsafe impl aya::Pod for CommFilter {}
unsafe impl aya::Pod for crate::config::TracepointLayout {}
unsafe impl aya::Pod for crate::config::TaskLayout {}
unsafe impl aya::Pod for crate::futex::SyscallLayout {}
unsafe impl aya::Pod for crate::stats::SpinKey {}
unsafe impl aya::Pod for crate::stats::SpinStats {}
unsafe impl aya::Pod for crate::stats::PreemptorKey {}
