//! pgpreempt's kernel programs: one program per tracepoint, a few lines each.
//! The shared pieces are in `task` (per-task state and filters) and
//! `account` (per-process and per-group aggregation).
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Inline asm: the atomic add of the uprobes (account.rs).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod account;
#[cfg(target_arch = "bpf")]
mod floor;
#[cfg(target_arch = "bpf")]
mod futex;
#[cfg(target_arch = "bpf")]
mod lock_holder;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod memory;
#[cfg(target_arch = "bpf")]
mod process_exit;
#[cfg(target_arch = "bpf")]
mod process_fork;
#[cfg(target_arch = "bpf")]
mod sched_switch;
#[cfg(target_arch = "bpf")]
mod spinlock;
#[cfg(target_arch = "bpf")]
mod task;
#[cfg(target_arch = "bpf")]
mod wake_cause;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}
