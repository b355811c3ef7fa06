use aya_build::{Package, Toolchain};

/// Builds the kernel programs (agent-ebpf) for bpfel-unknown-none with the
/// installed nightly and bpf-linker; `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-changed=../agent-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "agent-ebpf",
            root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .map_err(|e| {
        anyhow::anyhow!("building the eBPF programs failed (run `cargo xtask setup`): {e:#}")
    })
}
