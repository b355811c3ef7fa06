//! Checking, before anything is loaded, that we may load and attach BPF.

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from the text of `/proc/self/status`.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities that are missing for loading tracing programs, by name.
pub fn missing(caps: u64) -> Vec<&'static str> {
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) {
        // CAP_SYS_ADMIN covers BPF and perf on every kernel.
        return Vec::new();
    }
    let mut m = Vec::new();
    if !has(CAP_BPF) {
        m.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        m.push("CAP_PERFMON");
    }
    m
}

/// Fails with a clear message if this process cannot load tracing programs.
pub fn check() -> Result<(), crate::error::AgentError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = effective_caps(&status).unwrap_or(0);
    let m = missing(caps);
    if m.is_empty() {
        Ok(())
    } else {
        Err(crate::error::AgentError::MissingPrivileges(format!(
            " (missing {})",
            m.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x1ffffffffff));
        assert_eq!(effective_caps("Name: x\n"), None);
    }

    #[test]
    fn root_or_bpf_plus_perfmon_is_enough() {
        assert!(missing(0x1ffffffffff).is_empty());
        assert!(missing(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing(0), vec!["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing(1 << CAP_BPF), vec!["CAP_PERFMON"]);
    }
}
