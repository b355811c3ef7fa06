//! `cargo xtask test`: formatting, lints, unit tests, then the privileged
//! integration tests (one at a time: they share the kernel).
use std::process::Command;

use anyhow::Result;

use crate::{root, sh};

pub fn run(args: &[String]) -> Result<()> {
    let root = root();
    let cargo = || {
        let mut c = Command::new("cargo");
        c.current_dir(&root);
        c
    };
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "-p",
        "pgpreempt",
        "-p",
        "agent-common",
        "-p",
        "xtask",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Unit tests: parsing, bucket math, aggregation; no BPF.
    sh(cargo().args(["test", "-p", "agent-common"]))?;
    sh(cargo().args(["test", "-p", "pgpreempt", "--lib", "--bins"]))?;
    sh(cargo().args(["test", "-p", "xtask"]))?;
    // Integration tests: load the programs into this kernel.
    let mut it = cargo();
    it.args([
        "test",
        "-p",
        "pgpreempt",
        "--test",
        "*",
        "--",
        "--test-threads=1",
    ])
    .args(args);
    sh(&mut it)
}
