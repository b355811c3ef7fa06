//! Finding tracefs and reading tracepoint record layouts from its `format`
//! files, so that no field offset is hard-coded.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use agent_common::config::TracepointLayout;

use crate::error::AgentError;

/// Where tracefs is normally mounted.
pub const DEFAULT_TRACEFS: &str = "/sys/kernel/tracing";

/// Returns the tracefs root. With no explicit path, mounts tracefs at the
/// default place when it is missing (as root can); an explicit path must
/// already hold tracefs.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, AgentError> {
    if let Some(p) = explicit {
        return if p.join("events").is_dir() {
            Ok(p.to_path_buf())
        } else {
            Err(missing_or_denied(p))
        };
    }
    let root = PathBuf::from(DEFAULT_TRACEFS);
    if root.join("events").is_dir() {
        return Ok(root);
    }
    if denied(&root) {
        // Mounted, but mode 0700 and we are neither root nor hold
        // CAP_DAC_READ_SEARCH: mounting again would not help.
        return Err(AgentError::TracefsDenied(root));
    }
    // Not mounted: try what `mount -t tracefs nodev /sys/kernel/tracing` does.
    let _ = mount_tracefs(&root);
    if root.join("events").is_dir() {
        log::info!("mounted tracefs at {}", root.display());
        Ok(root)
    } else {
        Err(missing_or_denied(&root))
    }
}

/// True if `root/events` exists but this process may not look into `root`.
fn denied(root: &Path) -> bool {
    matches!(
        fs::metadata(root.join("events")),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied
    )
}

fn missing_or_denied(root: &Path) -> AgentError {
    if denied(root) {
        AgentError::TracefsDenied(root.to_path_buf())
    } else {
        AgentError::TracefsMissing(root.to_path_buf())
    }
}

fn mount_tracefs(root: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let target = CString::new(root.as_os_str().as_encoded_bytes())?;
    let src = CString::new("nodev")?;
    let fstype = CString::new("tracefs")?;
    // SAFETY: all pointers are valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One tracepoint's record layout: field name -> (offset, size).
#[derive(Debug, Clone, Default)]
pub struct Format {
    pub fields: HashMap<String, (u32, u32)>,
    pub print_fmt: String,
}

impl Format {
    /// Parses the text of a tracefs `format` file.
    pub fn parse(text: &str) -> Format {
        let mut f = Format::default();
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("print fmt:") {
                f.print_fmt = rest.trim().to_string();
                continue;
            }
            let Some(rest) = line.strip_prefix("field:") else {
                continue;
            };
            let mut decl = None;
            let (mut offset, mut size) = (None, None);
            for part in rest.split(';') {
                let part = part.trim();
                if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.trim().parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.trim().parse().ok();
                } else if decl.is_none() && !part.is_empty() && !part.contains(':') {
                    decl = Some(part);
                }
            }
            let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
                continue;
            };
            // "char prev_comm[16]" -> "prev_comm"; "pid_t pid" -> "pid".
            let name = decl.rsplit(' ').next().unwrap_or(decl);
            let name = name
                .split('[')
                .next()
                .unwrap_or(name)
                .trim_start_matches('*');
            f.fields.insert(name.to_string(), (offset, size));
        }
        f
    }

    /// The offset of `field`, checking its size.
    pub fn offset(&self, event: &str, field: &str, size: u32) -> Result<u32, AgentError> {
        match self.fields.get(field) {
            Some(&(off, sz)) if sz == size => Ok(off),
            Some(&(_, sz)) => Err(AgentError::KernelUnsupported(format!(
                "tracepoint {event} field {field} is {sz} bytes, expected {size}"
            ))),
            None => Err(AgentError::KernelUnsupported(format!(
                "tracepoint {event} has no field {field}"
            ))),
        }
    }
}

/// Reads `events/<category>/<name>/format`, or `None` if the tracepoint
/// does not exist on this kernel.
pub fn read_format(root: &Path, category: &str, name: &str) -> Result<Option<Format>, AgentError> {
    let dir = root.join("events").join(category).join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let text = fs::read_to_string(dir.join("format")).map_err(|e| AgentError::Io {
        what: format!("reading {}", dir.join("format").display()),
        source: e,
    })?;
    Ok(Some(Format::parse(&text)))
}

/// Builds the layout the kernel programs use, from the live tracefs.
pub fn layout(root: &Path) -> Result<TracepointLayout, AgentError> {
    let need = |cat: &str, name: &str| -> Result<Format, AgentError> {
        read_format(root, cat, name)?.ok_or_else(|| {
            AgentError::KernelUnsupported(format!(
                "tracepoint {cat}/{name} not found under {}/events",
                root.display()
            ))
        })
    };
    let ex = need("sched", "sched_process_exit")?;
    Ok(TracepointLayout {
        // group_dead is recent (Linux 6.16); 0: the program uses "the
        // leader exited" instead.
        exit_group_dead: ex.fields.get("group_dead").map_or(0, |&(off, _)| off),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_SWITCH: &str = r#"name: sched_switch
ID: 372
format:
	field:unsigned short common_type;	offset:0;	size:2;	signed:0;
	field:unsigned char common_flags;	offset:2;	size:1;	signed:0;
	field:unsigned char common_preempt_count;	offset:3;	size:1;	signed:0;
	field:int common_pid;	offset:4;	size:4;	signed:1;

	field:char prev_comm[16];	offset:8;	size:16;	signed:0;
	field:pid_t prev_pid;	offset:24;	size:4;	signed:1;
	field:int prev_prio;	offset:28;	size:4;	signed:1;
	field:long prev_state;	offset:32;	size:8;	signed:1;
	field:char next_comm[16];	offset:40;	size:16;	signed:0;
	field:pid_t next_pid;	offset:56;	size:4;	signed:1;
	field:int next_prio;	offset:60;	size:4;	signed:1;

print fmt: "prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s next_pid=%d next_prio=%d", REC->prev_comm, REC->prev_pid, REC->prev_prio, (REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1)) ? __print_flags(REC->prev_state & ((((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) - 1), "|", { 0x00000001, "S" }) : "R", REC->prev_state & (((0x00000000 | 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) ? "+" : "", REC->next_comm, REC->next_pid, REC->next_prio
"#;

    #[test]
    fn parses_field_offsets_and_sizes() {
        let f = Format::parse(SCHED_SWITCH);
        assert_eq!(f.fields["prev_comm"], (8, 16));
        assert_eq!(f.fields["prev_pid"], (24, 4));
        assert_eq!(f.fields["prev_state"], (32, 8));
        assert_eq!(f.fields["next_comm"], (40, 16));
        assert_eq!(f.fields["next_pid"], (56, 4));
        assert_eq!(f.offset("sched_switch", "next_pid", 4).unwrap(), 56);
        assert!(f.offset("sched_switch", "next_pid", 8).is_err());
        assert!(f.offset("sched_switch", "nope", 4).is_err());
    }

    #[test]
    fn pointer_fields_lose_their_star() {
        let f = Format::parse("\tfield:u32 * uaddr;\toffset:16;\tsize:8;\tsigned:0;\n");
        assert_eq!(f.fields["uaddr"], (16, 8));
    }

    #[test]
    fn explicit_tracefs_path_must_hold_events() {
        let err = locate(Some(Path::new("/nonexistent/tracefs"))).unwrap_err();
        assert!(err.to_string().contains("mount -t tracefs"), "{err}");
    }
}
