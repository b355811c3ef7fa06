//! The kernel release and its preemption model, for `pgpreempt_kernel_info`.
use std::{fs, io::Read, path::Path};

/// The preemption model, and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreemptModel {
    /// none, voluntary, full, lazy, rt or unknown.
    pub model: String,
    pub source: String,
    /// The model can be chosen at boot (`preempt=`, PREEMPT_DYNAMIC):
    /// None if neither debugfs nor a kernel config says.
    pub dynamic: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub release: String,
    pub preempt: PreemptModel,
    /// The RSEQ time-slice extension is in this kernel and enabled (None:
    /// not known). Read by `read` only (it asks the running kernel).
    pub rseq_slice: Option<bool>,
}

impl KernelInfo {
    pub fn read() -> KernelInfo {
        let mut k = KernelInfo::read_at(Path::new("/"));
        let config = read_config_at(Path::new("/"), &k.release);
        let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let r = super::rseq::assess(
            config.as_ref().map(|(c, s)| (c.as_str(), s.as_str())),
            &cmdline,
            super::rseq::probe(),
        );
        k.rseq_slice = match (r.supported, r.enabled) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        };
        k
    }

    /// The same, from a host tree under `root` (`/`, or a fixture in tests).
    pub fn read_at(root: &Path) -> KernelInfo {
        let release = fs::read_to_string(root.join("proc/sys/kernel/osrelease"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let preempt = detect_preempt_at(root, &release);
        KernelInfo {
            release,
            preempt,
            rseq_slice: None,
        }
    }
}

/// The model from `/sys/kernel/debug/sched/preempt`: the one in parentheses,
/// e.g. `none voluntary full (lazy)`.
pub fn parse_debugfs_preempt(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with('(') && w.ends_with(')'))
        .map(|w| w.trim_matches(|c| c == '(' || c == ')').to_string())
}

/// `preempt=` from the kernel command line (only meaningful with
/// CONFIG_PREEMPT_DYNAMIC).
pub fn parse_cmdline_preempt(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("preempt="))
        .map(|m| m.to_string())
        .filter(|m| ["none", "voluntary", "full", "lazy"].contains(&m.as_str()))
}

/// The model a kernel config selects (its "Preemption Model" choice), and
/// whether the mode can be changed at boot (PREEMPT_DYNAMIC).
pub fn parse_config_preempt(config: &str) -> (Option<String>, bool) {
    let set = |k: &str| config.lines().any(|l| l.trim() == format!("{k}=y"));
    let dynamic = set("CONFIG_PREEMPT_DYNAMIC");
    let model = if set("CONFIG_PREEMPT_RT") {
        Some("rt")
    } else if set("CONFIG_PREEMPT_LAZY") && !set("CONFIG_PREEMPT") && !set("CONFIG_PREEMPT_NONE") {
        Some("lazy")
    } else if set("CONFIG_PREEMPT_NONE") {
        Some("none")
    } else if set("CONFIG_PREEMPT_VOLUNTARY") {
        Some("voluntary")
    } else if set("CONFIG_PREEMPT") {
        Some("full")
    } else {
        None
    };
    (model.map(String::from), dynamic)
}

/// The kernel config and where it was read: `/proc/config.gz`, else
/// `/boot/config-<release>` (under `root`).
pub fn read_config_at(root: &Path, release: &str) -> Option<(String, String)> {
    if let Ok(f) = fs::File::open(root.join("proc/config.gz")) {
        let mut s = String::new();
        if flate2::read::GzDecoder::new(f)
            .read_to_string(&mut s)
            .is_ok()
        {
            return Some((s, "/proc/config.gz".into()));
        }
    }
    let boot = format!("/boot/config-{release}");
    fs::read_to_string(root.join(boot.trim_start_matches('/')))
        .ok()
        .map(|s| (s, boot))
}

/// Tries, in order: debugfs (the live mode), `preempt=` on the command line
/// of a PREEMPT_DYNAMIC kernel, the kernel config's choice.
pub fn detect_preempt(release: &str) -> PreemptModel {
    detect_preempt_at(Path::new("/"), release)
}

/// [`detect_preempt`] on a host tree under `root`.
pub fn detect_preempt_at(root: &Path, release: &str) -> PreemptModel {
    if let Some(m) = fs::read_to_string(root.join("sys/kernel/debug/sched/preempt"))
        .ok()
        .and_then(|t| parse_debugfs_preempt(&t))
    {
        // The file exists only on PREEMPT_DYNAMIC kernels.
        return PreemptModel {
            model: m,
            source: "/sys/kernel/debug/sched/preempt".into(),
            dynamic: Some(true),
        };
    }
    let config = read_config_at(root, release);
    let (model, dynamic) = config
        .as_ref()
        .map(|(c, _)| parse_config_preempt(c))
        .unwrap_or((None, false));
    if dynamic || config.is_none() {
        if let Some(m) = fs::read_to_string(root.join("proc/cmdline"))
            .ok()
            .and_then(|c| parse_cmdline_preempt(&c))
        {
            return PreemptModel {
                model: m,
                source: "/proc/cmdline preempt=".into(),
                dynamic: config.as_ref().map(|_| dynamic),
            };
        }
    }
    let known_dynamic = config.as_ref().map(|_| dynamic);
    match (model, config) {
        (Some(m), Some((_, src))) => PreemptModel {
            dynamic: known_dynamic,
            model: m,
            source: if dynamic {
                format!("{src} (PREEMPT_DYNAMIC default)")
            } else {
                src
            },
        },
        _ => PreemptModel {
            model: "unknown".into(),
            source: "not found".into(),
            dynamic: known_dynamic,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debugfs_marks_the_live_model() {
        assert_eq!(
            parse_debugfs_preempt("none voluntary full (lazy)\n").as_deref(),
            Some("lazy")
        );
        assert_eq!(
            parse_debugfs_preempt("(none) voluntary full").as_deref(),
            Some("none")
        );
        assert_eq!(parse_debugfs_preempt("none voluntary full"), None);
    }

    #[test]
    fn cmdline_preempt() {
        assert_eq!(
            parse_cmdline_preempt("quiet preempt=full ro").as_deref(),
            Some("full")
        );
        assert_eq!(parse_cmdline_preempt("quiet ro"), None);
        assert_eq!(parse_cmdline_preempt("preempt=bogus"), None);
    }

    #[test]
    fn config_choice() {
        let c = "CONFIG_PREEMPT_BUILD=y\nCONFIG_PREEMPT_NONE=y\n# CONFIG_PREEMPT is not set\nCONFIG_PREEMPT_DYNAMIC=y\n";
        assert_eq!(parse_config_preempt(c), (Some("none".into()), true));
        assert_eq!(
            parse_config_preempt("CONFIG_PREEMPT=y\n"),
            (Some("full".into()), false)
        );
        assert_eq!(
            parse_config_preempt("CONFIG_PREEMPT_VOLUNTARY=y\n"),
            (Some("voluntary".into()), false)
        );
        assert_eq!(
            parse_config_preempt("CONFIG_PREEMPT_LAZY=y\n"),
            (Some("lazy".into()), false)
        );
        assert_eq!(
            parse_config_preempt("CONFIG_PREEMPT_RT=y\nCONFIG_PREEMPT=y\n")
                .0
                .as_deref(),
            Some("rt")
        );
        assert_eq!(parse_config_preempt("").0, None);
    }
}
