//! `cargo xtask setup`: installs what building and testing need, only what
//! is missing, and says the exact command where it cannot.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::sh;

/// Debian packages and a file each one provides (to test presence cheaply).
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "/usr/lib/llvm-22/bin/llvm-config"),
    ("libpolly-22-dev", "/usr/lib/llvm-22/lib/libPolly.a"),
    ("libzstd-dev", "/usr/include/zstd.h"),
    ("zlib1g-dev", "/usr/include/zlib.h"),
    ("bpftool", "/usr/sbin/bpftool"),
    // promtool for the metrics and rules tests, prometheus for the fleet proof.
    ("prometheus", "/usr/bin/promtool"),
    // The systemd unit test traces the agent's system calls.
    ("strace", "/usr/bin/strace"),
    ("tmux", "/usr/bin/tmux"),
    ("linux-perf", "/usr/bin/perf"),
];

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn run() -> Result<()> {
    apt()?;
    rust_src()?;
    bpf_linker()?;
    tracefs();
    Ok(())
}

fn apt() -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, f)| !Path::new(f).exists())
        .map(|(p, _)| *p)
        .collect();
    // Any installed major version will do (postgresql-N carries postgres,
    // pg_ctl, initdb and pgbench).
    if !postgres_installed() {
        missing.push("postgresql");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() || which("apt-get").is_none() {
        bail!("missing packages; install them with:\n  {cmd}\n(llvm-22-dev comes from bookworm-security on Debian 12)");
    }
    eprintln!("xtask setup: installing {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .map_err(|e| anyhow::anyhow!("{e}\ninstall them by hand with:\n  {cmd}"))?;
    Ok(())
}

fn postgres_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.path().join("bin/pgbench").exists() && e.path().join("bin/postgres").exists()
            })
        })
        .unwrap_or(false)
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")) {
                return Ok(());
            }
            eprintln!("xtask setup: adding rust-src to nightly");
            sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        }
        _ => bail!("the nightly toolchain is missing; run:\n  rustup toolchain install nightly --component rust-src"),
    }
}

fn bpf_linker() -> Result<()> {
    if which("bpf-linker").is_some() {
        return Ok(());
    }
    eprintln!("xtask setup: building bpf-linker against LLVM 22 (about a minute)");
    let path = format!(
        "/usr/lib/llvm-22/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    sh(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features", "llvm-22"])
        .env("PATH", path))
    .map_err(|e| anyhow::anyhow!("{e}\nrun by hand:\n  PATH=/usr/lib/llvm-22/bin:$PATH cargo install bpf-linker --locked --no-default-features --features llvm-22"))
}

/// The agent mounts tracefs itself; mounting here too keeps bpftool and
/// humans happy. Failure is not fatal (the agent explains).
fn tracefs() {
    if !Path::new("/sys/kernel/tracing/events").is_dir() && is_root() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    let home_bin = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_bin)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
