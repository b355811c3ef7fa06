//! The fault-heavy microbenchmark: a process that maps fresh anonymous
//! memory, touches each 4 KiB page once (one page fault each), and unmaps
//! it, over and over. `cargo xtask fault-loop` is that process (run by
//! `bench` and `cost`, pinned to CPU 0); [`run`] starts it and reads what it
//! measured.
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The comm the loop runs under: `--comm pgp-faults` traces it.
pub const COMM: &str = "pgp-faults";

/// Pages mapped, touched and unmapped per cycle (8 MiB).
const PAGES_PER_MAP: usize = 2048;
const PAGE: usize = 4096;

const PROT_READ_WRITE: i32 = 0x1 | 0x2;
const MAP_SHARED: i32 = 0x01;
const MAP_PRIVATE: i32 = 0x02;
const MAP_ANONYMOUS: i32 = 0x20;
/// Keeps transparent huge pages off the mapping (a host with THP `always`
/// would otherwise fault 2 MiB at a time).
const MADV_NOHUGEPAGE: i32 = 15;

extern "C" {
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn madvise(addr: *mut u8, len: usize, advice: i32) -> i32;
    fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
}

/// The CPU time this process has used, ns (`CLOCK_PROCESS_CPUTIME_ID`):
/// what the faults cost it, without the time it waited for CPU 0 while
/// other work on this shared machine ran there.
fn cpu_ns() -> f64 {
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut ts = [0i64; 2];
    // SAFETY: `ts` is a `struct timespec` (two 64-bit fields on 64-bit Linux).
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts[0] as f64 * 1e9 + ts[1] as f64
}

/// Minor faults of this process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    Ok(rest.split_whitespace().nth(7).context("minflt")?.parse()?)
}

/// One cycle: map, touch every page, unmap.
fn cycle(shared: bool) -> Result<()> {
    let len = PAGES_PER_MAP * PAGE;
    let flags = MAP_ANONYMOUS | if shared { MAP_SHARED } else { MAP_PRIVATE };
    // SAFETY: a fresh anonymous mapping, written only within its length and
    // unmapped before it goes out of scope.
    unsafe {
        let p = mmap(std::ptr::null_mut(), len, PROT_READ_WRITE, flags, -1, 0);
        if p as isize == -1 {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        madvise(p, len, MADV_NOHUGEPAGE);
        for i in 0..PAGES_PER_MAP {
            p.add(i * PAGE).write_volatile(1);
        }
        if munmap(p, len) != 0 {
            bail!("munmap: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `cargo xtask fault-loop`: about `pages` page faults (whole cycles), then
/// prints `ns_per_page faults pages` (ns of CPU time, user and system, per
/// page touched, mapping and unmapping included).
pub fn fault_loop(pages: usize, shared: bool) -> Result<()> {
    std::fs::write("/proc/self/comm", COMM)?;
    cycle(shared)?; // warm up: the first cycle also maps the page tables
    let cycles = pages.div_ceil(PAGES_PER_MAP).max(1);
    let f0 = minor_faults()?;
    let t0 = cpu_ns();
    for _ in 0..cycles {
        cycle(shared)?;
    }
    let ns = cpu_ns() - t0;
    let faults = minor_faults()? - f0;
    let pages = cycles * PAGES_PER_MAP;
    println!("{:.1} {faults} {pages}", ns / pages as f64);
    Ok(())
}

/// What one run of the loop measured.
pub struct Run {
    /// CPU time per page touched (map, touch and unmap included), ns.
    pub ns_per_page: f64,
    /// Minor faults the process took, and pages it touched.
    pub faults: u64,
    pub pages: u64,
}

/// Runs the loop on CPU 0 (as the context-switch benchmark runs).
pub fn run(pages: usize, shared: bool) -> Result<Run> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new("taskset");
    c.args(["-c", "0"])
        .arg(exe)
        .args(["fault-loop", "--pages", &pages.to_string()]);
    if shared {
        c.arg("--shared");
    }
    let out = c.output().context("running the fault loop")?;
    if !out.status.success() {
        bail!(
            "the fault loop failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 3 {
        bail!("the fault loop printed {text:?}");
    }
    Ok(Run {
        ns_per_page: f[0].parse()?,
        faults: f[1].parse()?,
        pages: f[2].parse()?,
    })
}
