//! Whether the kernel has the RSEQ time-slice extension (Linux 7.0), the
//! fix the scheduler maintainers proposed for preempted spinlock holders:
//! built in (`CONFIG_RSEQ_SLICE_EXTENSION`), known to the uapi (the
//! `PR_RSEQ_SLICE_EXTENSION` prctl), and enabled at boot (`rseq_slice_ext=`,
//! on by default when built in).
use serde::Serialize;

/// prctl option and its GET command (include/uapi/linux/prctl.h, 7.0).
pub const PR_RSEQ_SLICE_EXTENSION: libc::c_int = 79;
pub const PR_RSEQ_SLICE_EXTENSION_GET: libc::c_ulong = 1;
/// The kernel's internal ENOTSUPP ("disabled at build or boot time").
pub const ENOTSUPP: i32 = 524;

/// What `prctl(PR_RSEQ_SLICE_EXTENSION, PR_RSEQ_SLICE_EXTENSION_GET)` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Answered: the extension is available (the value is this thread's flags).
    Answered(i32),
    /// ENOTSUPP: the kernel knows the prctl, but the extension is disabled.
    Disabled,
    /// EINVAL: the kernel does not know the prctl (before Linux 7.0).
    Unknown,
    /// Any other error (errno).
    Error(i32),
}

/// Asks the running kernel, about this thread (reads only).
pub fn probe() -> Probe {
    // SAFETY: a GET with zero arguments reads the calling thread's state.
    let r = unsafe {
        libc::prctl(
            PR_RSEQ_SLICE_EXTENSION,
            PR_RSEQ_SLICE_EXTENSION_GET,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r >= 0 {
        return Probe::Answered(r);
    }
    match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
        ENOTSUPP => Probe::Disabled,
        libc::EINVAL => Probe::Unknown,
        e => Probe::Error(e),
    }
}

/// Yes, no, or not known (and why, in `source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RseqSlice {
    /// The kernel has the extension: Some(true/false), None if unknown.
    pub supported: Option<bool>,
    pub supported_source: String,
    /// It is enabled at boot: None if unknown.
    pub enabled: Option<bool>,
    pub enabled_source: String,
}

/// `rseq_slice_ext=` from the kernel command line, as the kernel's
/// kstrtobool reads it (None: absent or unreadable value).
pub fn parse_cmdline(cmdline: &str) -> Option<bool> {
    let v = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rseq_slice_ext="))?;
    match v.to_ascii_lowercase().as_str() {
        "1" | "y" | "yes" | "on" | "true" => Some(true),
        "0" | "n" | "no" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// `CONFIG_RSEQ_SLICE_EXTENSION` in a kernel config: built in or not.
pub fn parse_config(config: &str) -> bool {
    config
        .lines()
        .any(|l| l.trim() == "CONFIG_RSEQ_SLICE_EXTENSION=y")
}

/// Combines the config (with where it was read), the command line and the
/// prctl probe.
pub fn assess(config: Option<(&str, &str)>, cmdline: &str, probe: Probe) -> RseqSlice {
    let (supported, supported_source) = match (config, probe) {
        (Some((c, src)), _) if parse_config(c) => {
            (Some(true), format!("CONFIG_RSEQ_SLICE_EXTENSION=y in {src}"))
        }
        (Some((_, src)), _) => (
            Some(false),
            format!("CONFIG_RSEQ_SLICE_EXTENSION is not set in {src}"),
        ),
        (None, Probe::Answered(_)) | (None, Probe::Disabled) => (
            Some(true),
            "the PR_RSEQ_SLICE_EXTENSION prctl is known to this kernel (no kernel config to read)"
                .into(),
        ),
        (None, Probe::Unknown) => (
            Some(false),
            "the PR_RSEQ_SLICE_EXTENSION prctl is unknown to this kernel (EINVAL; no kernel config to read)"
                .into(),
        ),
        (None, Probe::Error(e)) => (
            None,
            format!("no kernel config to read, and the prctl failed with errno {e}"),
        ),
    };
    let (enabled, enabled_source) = match (supported, parse_cmdline(cmdline), probe) {
        (Some(false), _, _) => (Some(false), "not in this kernel".to_string()),
        (_, Some(on), _) => (
            Some(on),
            format!(
                "rseq_slice_ext={} on the kernel command line",
                if on { "on" } else { "off" }
            ),
        ),
        (_, None, Probe::Answered(_)) => (
            Some(true),
            "the PR_RSEQ_SLICE_EXTENSION prctl answers".to_string(),
        ),
        (_, None, Probe::Disabled) => (
            Some(false),
            "the PR_RSEQ_SLICE_EXTENSION prctl answers ENOTSUPP (disabled)".to_string(),
        ),
        (Some(true), None, _) => (
            Some(true),
            "on by default (no rseq_slice_ext= on the kernel command line)".to_string(),
        ),
        (None, None, _) => (None, "unknown".to_string()),
    };
    RseqSlice {
        supported,
        supported_source,
        enabled,
        enabled_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WITH: &str = "CONFIG_RSEQ=y\nCONFIG_RSEQ_SLICE_EXTENSION=y\n";
    const WITHOUT: &str = "CONFIG_RSEQ=y\n# CONFIG_RSEQ_SLICE_EXTENSION is not set\n";

    #[test]
    fn command_line_option() {
        assert_eq!(parse_cmdline("quiet rseq_slice_ext=0 ro"), Some(false));
        assert_eq!(parse_cmdline("rseq_slice_ext=off"), Some(false));
        assert_eq!(parse_cmdline("rseq_slice_ext=1"), Some(true));
        assert_eq!(parse_cmdline("rseq_slice_ext=Y"), Some(true));
        assert_eq!(parse_cmdline("quiet"), None);
        assert_eq!(parse_cmdline("rseq_slice_ext=maybe"), None);
    }

    #[test]
    fn built_in_and_on_by_default() {
        let r = assess(Some((WITH, "/proc/config.gz")), "quiet", Probe::Unknown);
        assert_eq!(r.supported, Some(true));
        assert_eq!(
            r.supported_source,
            "CONFIG_RSEQ_SLICE_EXTENSION=y in /proc/config.gz"
        );
        assert_eq!(r.enabled, Some(true));
        assert!(r.enabled_source.contains("on by default"));
        let r = assess(Some((WITH, "/proc/config.gz")), "quiet", Probe::Answered(0));
        assert_eq!(r.enabled, Some(true));
        assert!(r.enabled_source.contains("prctl answers"));
    }

    #[test]
    fn built_in_but_disabled_at_boot() {
        let r = assess(
            Some((WITH, "/boot/config-7.0.0")),
            "ro rseq_slice_ext=0",
            Probe::Disabled,
        );
        assert_eq!((r.supported, r.enabled), (Some(true), Some(false)));
        assert_eq!(
            r.enabled_source,
            "rseq_slice_ext=off on the kernel command line"
        );
        // Without the option, the prctl's ENOTSUPP says the same.
        let r = assess(Some((WITH, "/boot/config-7.0.0")), "ro", Probe::Disabled);
        assert_eq!(r.enabled, Some(false));
    }

    #[test]
    fn absent_from_the_config() {
        let r = assess(
            Some((WITHOUT, "/proc/config.gz")),
            "rseq_slice_ext=1",
            Probe::Unknown,
        );
        assert_eq!((r.supported, r.enabled), (Some(false), Some(false)));
        assert!(r.supported_source.contains("is not set"));
        // A config that does not mention it at all (an older kernel): absent.
        let r = assess(
            Some(("CONFIG_RSEQ=y\n", "/proc/config.gz")),
            "",
            Probe::Unknown,
        );
        assert_eq!(r.supported, Some(false));
    }

    #[test]
    fn without_a_config_the_uapi_decides() {
        let r = assess(None, "", Probe::Unknown);
        assert_eq!((r.supported, r.enabled), (Some(false), Some(false)));
        assert!(r.supported_source.contains("unknown to this kernel"));
        let r = assess(None, "", Probe::Answered(0));
        assert_eq!((r.supported, r.enabled), (Some(true), Some(true)));
        let r = assess(None, "", Probe::Error(libc::EPERM));
        assert_eq!((r.supported, r.enabled), (None, None));
    }

    #[test]
    fn kernels_before_7_0_do_not_know_the_prctl() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let major: u32 = release.split('.').next().unwrap().parse().unwrap();
        if major < 7 {
            assert_eq!(probe(), Probe::Unknown, "Linux {release}");
        } else {
            assert_ne!(probe(), Probe::Unknown, "Linux {release} has the prctl");
        }
    }
}
