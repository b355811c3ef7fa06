use std::process::{Command, ExitCode};

use aya_build::{Package, Toolchain};

/// Set in the child run of this script that does the build.
const CHILD: &str = "PGPREEMPT_BUILD_EBPF_CHILD";

/// Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the
/// installed nightly and bpf-linker; `cargo xtask setup` installs both.
///
/// aya-build forwards every line of the nested cargo's output as a
/// `cargo:warning`, so a clean build would print dozens of "warning:"
/// lines. This script runs itself once more to do the build, keeps the
/// child's instructions to cargo, and shows the nested output only when the
/// build fails (as the error), so success is silent.
fn main() -> ExitCode {
    if std::env::var_os(CHILD).is_some() {
        return match build() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let out =
        match std::env::current_exe().and_then(|exe| Command::new(exe).env(CHILD, "1").output()) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("building the eBPF programs: cannot run the build script again: {e}");
                return ExitCode::FAILURE;
            }
        };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (nested, instructions): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .partition(|l| l.starts_with("cargo:warning="));
    for line in instructions {
        println!("{line}");
    }
    if out.status.success() {
        return ExitCode::SUCCESS;
    }
    for line in nested {
        eprintln!("{}", &line["cargo:warning=".len()..]);
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("building the eBPF programs failed (if a tool is missing, run `cargo xtask setup`)");
    ExitCode::FAILURE
}

fn build() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../agent-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e:#}"))
}
