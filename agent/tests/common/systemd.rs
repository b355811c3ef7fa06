//! The systemd unit in `deploy/systemd/`, parsed, so tests run the agent
//! under exactly the unit's settings (no second copy of them).
use std::path::PathBuf;

pub fn unit_path() -> PathBuf {
    super::dashboards::repo_root().join("deploy/systemd/pgpreempt.service")
}

/// The drop-in that adds the spin metrics (CAP_SYS_ADMIN for uprobes).
pub fn spinlocks_dropin_path() -> PathBuf {
    super::dashboards::repo_root().join("deploy/systemd/pgpreempt-spinlocks.conf")
}

pub fn flags_path() -> PathBuf {
    super::dashboards::repo_root().join("deploy/systemd/pgpreempt.flags")
}

/// One `Key=value` line of the unit, with the comment lines right above it
/// (the comment block it belongs to).
#[derive(Debug, Clone)]
pub struct Setting {
    pub section: String,
    pub key: String,
    pub value: String,
    pub comment: String,
}

pub struct Unit {
    pub settings: Vec<Setting>,
    pub text: String,
}

impl Unit {
    pub fn load() -> Unit {
        let text = std::fs::read_to_string(unit_path()).expect("deploy/systemd/pgpreempt.service");
        Unit::parse(&text)
    }

    /// The unit with the spinlocks drop-in applied.
    pub fn with_spinlocks_dropin() -> Unit {
        let mut u = Unit::load();
        let text = std::fs::read_to_string(spinlocks_dropin_path())
            .expect("deploy/systemd/pgpreempt-spinlocks.conf");
        u.merge(Unit::parse(&text));
        u
    }

    /// Applies a drop-in as systemd does: list settings add to the unit's,
    /// and an empty assignment (`ExecStart=`) resets the setting.
    pub fn merge(&mut self, dropin: Unit) {
        for s in dropin.settings {
            if s.value.is_empty() {
                self.settings
                    .retain(|x| !(x.section == s.section && x.key == s.key));
            } else {
                self.settings.push(s);
            }
        }
    }

    /// ExecStart's arguments after the program, with $PGPREEMPT_FLAGS
    /// expanded to `flags`.
    pub fn exec_args(&self, flags: &[String]) -> Vec<String> {
        let exec = self.get("ExecStart").expect("ExecStart=");
        exec.split_whitespace()
            .skip(1)
            .flat_map(|a| {
                if a == "$PGPREEMPT_FLAGS" {
                    flags.to_vec()
                } else {
                    vec![a.to_string()]
                }
            })
            .collect()
    }

    pub fn parse(text: &str) -> Unit {
        let mut settings = Vec::new();
        let mut section = String::new();
        let mut comment = String::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() {
                comment.clear();
            } else if let Some(c) = l.strip_prefix('#') {
                comment.push_str(c.trim());
                comment.push('\n');
            } else if l.starts_with('[') {
                section = l.trim_matches(|c| c == '[' || c == ']').to_string();
                comment.clear();
            } else if let Some((k, v)) = l.split_once('=') {
                settings.push(Setting {
                    section: section.clone(),
                    key: k.trim().to_string(),
                    value: v.trim().to_string(),
                    comment: comment.clone(),
                });
            }
        }
        Unit {
            settings,
            text: text.to_string(),
        }
    }

    /// The values of `key` in [Service], in order.
    pub fn all(&self, key: &str) -> Vec<&Setting> {
        self.settings
            .iter()
            .filter(|s| s.section == "Service" && s.key == key)
            .collect()
    }

    /// The single value of `key` in [Service].
    pub fn get(&self, key: &str) -> Option<&str> {
        let v = self.all(key);
        assert!(v.len() <= 1, "{key} is set {} times", v.len());
        v.first().map(|s| s.value.as_str())
    }

    /// A space-separated list setting, e.g. the capability sets.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.all(key)
            .iter()
            .flat_map(|s| s.value.split_whitespace().map(String::from))
            .collect()
    }

    /// The capabilities the unit grants (CapabilityBoundingSet), e.g.
    /// `CAP_BPF`.
    pub fn capabilities(&self) -> Vec<String> {
        self.list("CapabilityBoundingSet")
    }
}

/// `CAP_SYS_PTRACE` -> `sys_ptrace`, as setpriv writes capabilities.
pub fn setpriv_name(cap: &str) -> String {
    cap.trim_start_matches("CAP_").to_ascii_lowercase()
}

/// PGPREEMPT_FLAGS from the flags file (EnvironmentFile=), split as systemd
/// splits an unbraced `$VAR` on the command line: at whitespace.
pub fn flags() -> Vec<String> {
    let text = std::fs::read_to_string(flags_path()).expect("deploy/systemd/pgpreempt.flags");
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix("PGPREEMPT_FLAGS="))
        .expect("PGPREEMPT_FLAGS= in pgpreempt.flags");
    line.trim_matches('"')
        .split_whitespace()
        .map(String::from)
        .collect()
}
