//! The only per-event record: process lifecycle notices for the agent.

/// A traced process was seen for the first time; classify it.
pub const PROC_NEW: u32 = 1;
/// A traced process exited (its last thread); harvest and forget it.
pub const PROC_EXIT: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    pub kind: u32,
    pub tgid: u32,
}
