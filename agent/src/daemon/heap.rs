//! The daemon's heap after start-up. Loading parses the kernel's BTF (aya
//! reads all of `/sys/kernel/btf/vmlinux` to find the tp_btf targets) and
//! copies the object file: about 20 MiB, all freed once the programs are
//! attached. glibc keeps what was freed below the last live allocation in
//! its heap, so without this the idle daemon held 22 MiB of free heap
//! (28.8 MiB RSS, 0.3 MiB of it in use; BENCHMARKS.md, "The daemon itself").
//!
//! Two settings, both glibc's (other C libraries: no-ops):
//! - [`tune`], before anything is allocated: a fixed mmap threshold, so
//!   that large buffers (the BTF's type table, a scrape's text) get their
//!   own mapping and go back to the kernel when freed. glibc otherwise
//!   raises the threshold to the largest buffer freed so far (up to 32 MiB),
//!   and such buffers then come from the heap.
//! - [`release`], after start-up and then once a minute: `malloc_trim(0)`
//!   returns the free pages inside the heap, not only at its top.

/// Buffers this large or larger get their own mapping (glibc's initial
/// default, made fixed).
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Free memory at the top of the heap beyond this goes back at once.
const TRIM_THRESHOLD: i32 = 128 * 1024;

/// One malloc arena per thread at most this many: the daemon runs on one
/// thread, trace sessions on a few.
const ARENA_MAX: i32 = 2;

/// Fixes glibc's thresholds (call first thing in `main`).
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; no memory is touched.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// Gives the heap's free pages back to the kernel. Returns whether any
/// went back. Cheap on a small heap (one walk of its free lists).
pub fn release() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0) != 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident anonymous memory of this process, in KiB.
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_heap_below_a_live_allocation_goes_back() {
        // What start-up does: many mid-sized allocations (aya's parsed
        // BTF types), one that stays, then the rest freed.
        let many: Vec<Vec<u8>> = (0..4000).map(|i| vec![i as u8; 4000]).collect();
        let kept = vec![1u8; 1000];
        let before = rss_anon_kib();
        drop(many);
        release();
        let after = rss_anon_kib();
        assert_eq!(kept[999], 1);
        // 16 MB were freed: most of it is back (other tests run on other
        // threads, in other arenas, and may allocate meanwhile).
        assert!(
            after + 8 * 1024 < before,
            "RssAnon {before} KiB before, {after} KiB after"
        );
    }
}
