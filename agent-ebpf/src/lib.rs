#![no_std]
// The kernel programs live in the `pgpreempt` binary (src/main.rs); this
// library target only exists so that the crate builds on the host too.
