//! Types shared by the kernel programs (`agent-ebpf`) and the agent.
//!
//! Everything here is `#[repr(C)]`, has no `bool` and no implicit padding, so
//! both sides agree on the layout. With the `user` feature the types also
//! implement `aya::Pod`, so the agent can read them out of maps.
#![no_std]

pub mod config;
pub mod event;
pub mod futex;
pub mod hist;
pub mod stats;

#[cfg(feature = "user")]
mod user;
