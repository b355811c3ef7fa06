//! Where `struct task_struct` keeps `pid`, `tgid` and `comm` on this kernel,
//! and `struct pt_regs` the syscall number and futex(2)'s `op`, read from
//! the kernel's BTF (`/sys/kernel/btf/vmlinux`). The scheduler
//! programs are tp_btf programs that get task pointers and load these fields
//! directly; rustc emits no CO-RE relocations, so the offsets are handed to
//! them at load time (`TASK_LAYOUT`).
use std::path::Path;

use agent_common::{
    config::{TaskLayout, COMM_LEN, NO_FIELD},
    futex::{syscall_numbers, SyscallLayout},
};
use btf_rs::{Backend, Btf, Type};

use crate::error::AgentError;

/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads the task_struct layout from the BTF file at `path`.
pub fn read(path: &Path) -> Result<TaskLayout, AgentError> {
    from_btf(&open(path)?)
}

/// Reads where `struct pt_regs` keeps the syscall number and futex(2)'s
/// `op`, and this architecture's futex syscall numbers.
pub fn read_syscalls(path: &Path) -> Result<SyscallLayout, AgentError> {
    let arch = std::env::consts::ARCH;
    let numbers = syscall_numbers(arch).ok_or_else(|| {
        AgentError::KernelUnsupported(format!("no futex syscall numbers for {arch}"))
    })?;
    syscalls_from_btf(&open(path)?, arch, numbers)
}

/// The file, mapped.
fn open(path: &Path) -> Result<Btf, AgentError> {
    if !path.exists() {
        return Err(AgentError::KernelUnsupported(format!(
            "no BTF at {} (build the kernel with CONFIG_DEBUG_INFO_BTF=y)",
            path.display()
        )));
    }
    // Mapped, not parsed up front: the agent's peak memory is part of its
    // budget (BENCHMARKS.md). Files that cannot be mapped are parsed.
    let btf = Btf::from_file_with_backend(path, Backend::Mmap)
        .or_else(|_| Btf::from_file(path))
        .map_err(|e| {
            AgentError::KernelUnsupported(format!("reading BTF from {}: {e}", path.display()))
        })?;
    Ok(btf)
}

/// The registers' offsets in parsed BTF: x86-64 `orig_ax` and `si`, arm64
/// `syscallno` (an s32) and `regs[1]`.
pub fn syscalls_from_btf(
    btf: &Btf,
    arch: &str,
    numbers: [u32; 4],
) -> Result<SyscallLayout, AgentError> {
    let unsupported = |what: String| AgentError::KernelUnsupported(what);
    let regs = struct_named(btf, "pt_regs")?;
    let member = |name: &str| -> Result<(u32, usize), AgentError> {
        let (bits, ty) = find_member(btf, &regs, name, 0)
            .ok_or_else(|| unsupported(format!("pt_regs has no `{name}` in BTF ({arch})")))?;
        let size = type_size(btf, &ty).unwrap_or(0);
        if bits % 8 != 0 {
            return Err(unsupported(format!("pt_regs.{name} is a bit field")));
        }
        Ok((bits / 8, size))
    };
    let ((nr, nr_size), op) = match arch {
        "x86_64" => (member("orig_ax")?, member("si")?.0),
        "aarch64" => (member("syscallno")?, member("regs")?.0 + 8),
        other => return Err(unsupported(format!("no pt_regs layout for {other}"))),
    };
    if nr_size != 4 && nr_size != 8 {
        return Err(unsupported(format!(
            "the syscall number in pt_regs is {nr_size} bytes"
        )));
    }
    Ok(SyscallLayout {
        nr,
        op,
        nr_size: nr_size as u32,
        _pad: 0,
        numbers,
    })
}

/// Finds the fields in parsed BTF.
pub fn from_btf(btf: &Btf) -> Result<TaskLayout, AgentError> {
    let task = |path: &[&str], size: usize| field(btf, "task_struct", path, size);
    let vma = |path: &[&str], size: usize| field(btf, "vm_area_struct", path, size);
    Ok(TaskLayout {
        pid: task(&["pid"], 4)?,
        tgid: task(&["tgid"], 4)?,
        comm: task(&["comm"], COMM_LEN)?,
        run_delay: task(&["sched_info", "run_delay"], 8)?,
        pcount: task(&["sched_info", "pcount"], std::mem::size_of::<usize>())?,
        start_time: task(&["start_time"], 8)?,
        vma_flags: vma(&["vm_flags"], std::mem::size_of::<usize>())?,
        vma_file: vma(&["vm_file"], std::mem::size_of::<usize>())?,
        real_parent: task(&["real_parent"], std::mem::size_of::<usize>())?,
        task_mm: task(&["mm"], std::mem::size_of::<usize>())?,
        // Without per-VMA locks (CONFIG_PER_VMA_LOCK), every fault outside
        // the main segment looks its mapping up.
        mm_lock_seq: field(btf, "mm_struct", &["mm_lock_seq", "sequence"], 4).unwrap_or(NO_FIELD),
        vma_start: vma(&["vm_start"], std::mem::size_of::<usize>())?,
        vma_end: vma(&["vm_end"], std::mem::size_of::<usize>())?,
        pagefault_disabled: task(&["pagefault_disabled"], 4)?,
        // u64 since Linux 6.8, u32 before: the low half either way (x86-64
        // and arm64 are little-endian).
        self_exec_id: task(&["self_exec_id"], 8).or_else(|_| task(&["self_exec_id"], 4))?,
        sum_exec_runtime: task(&["se", "sum_exec_runtime"], 8)?,
        group_leader: task(&["group_leader"], std::mem::size_of::<usize>())?,
        mm_arg_start: field(
            btf,
            "mm_struct",
            &["arg_start"],
            std::mem::size_of::<usize>(),
        )?,
        mm_arg_end: field(btf, "mm_struct", &["arg_end"], std::mem::size_of::<usize>())?,
        _pad: 0,
    })
}

/// The byte offset of the field at `path` in struct `ty` (a member, or a
/// member of a struct member), checked to be `size` bytes.
fn field(btf: &Btf, ty: &str, path: &[&str], size: usize) -> Result<u32, AgentError> {
    let unsupported = |what: String| AgentError::KernelUnsupported(what);
    let outer = struct_named(btf, ty)?;
    let dotted = path.join(".");
    let missing = || {
        let mut m = format!("{ty} has no `{dotted}` in BTF");
        if path[0] == "sched_info" {
            m.push_str(" (build the kernel with CONFIG_SCHED_INFO=y, which schedstat needs)");
        }
        unsupported(m)
    };
    let (mut bits, mut found) = find_member(btf, &outer, path[0], 0).ok_or_else(missing)?;
    for name in &path[1..] {
        // Through typedefs (`seqcount_t`) to the struct.
        for _ in 0..4 {
            match &found {
                Type::Typedef(t) => found = btf.resolve_chained_type(t).map_err(|_| missing())?,
                _ => break,
            }
        }
        let Type::Struct(inner) = &found else {
            return Err(missing());
        };
        (bits, found) = find_member(btf, inner, name, bits).ok_or_else(missing)?;
    }
    let actual = type_size(btf, &found);
    if bits % 8 != 0 || actual != Some(size) {
        return Err(unsupported(format!(
            "{ty}.{dotted} is not a {size}-byte field (bit offset {bits}, size {actual:?})"
        )));
    }
    Ok(bits / 8)
}

/// The (complete) struct called `name`.
fn struct_named(btf: &Btf, name: &str) -> Result<btf_rs::Struct, AgentError> {
    btf.resolve_types_by_name(name)
        .map_err(|e| AgentError::KernelUnsupported(format!("{name} not in BTF: {e}")))?
        .into_iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| AgentError::KernelUnsupported(format!("{name} not in BTF")))
}

/// The bit offset and type of member `name`, looking inside anonymous
/// structs and unions (where newer kernels move fields).
fn find_member(btf: &Btf, s: &btf_rs::Struct, name: &str, base_bits: u32) -> Option<(u32, Type)> {
    for m in &s.members {
        let member_name = btf.resolve_name(m).unwrap_or_default();
        let Ok(ty) = btf.resolve_chained_type(m) else {
            continue;
        };
        let bits = base_bits + m.bit_offset();
        if member_name == name {
            return Some((bits, ty));
        }
        if member_name.is_empty() {
            if let Type::Struct(inner) | Type::Union(inner) = &ty {
                if let Some(found) = find_member(btf, inner, name, bits) {
                    return Some(found);
                }
            }
        }
    }
    None
}

/// The size in bytes of a type, through typedefs and qualifiers.
fn type_size(btf: &Btf, ty: &Type) -> Option<usize> {
    let mut ty = ty.clone();
    // A fixed bound: qualifier chains are a few links long.
    for _ in 0..16 {
        ty = match &ty {
            Type::Int(i) => return Some(i.size()),
            Type::Enum(e) => return Some(e.size()),
            Type::Struct(s) | Type::Union(s) => return Some(s.size()),
            Type::Ptr(_) => return Some(std::mem::size_of::<usize>()),
            Type::Array(a) => {
                let elem = btf.resolve_chained_type(a).ok()?;
                return Some(a.len() * type_size(btf, &elem)?);
            }
            Type::Typedef(t) => btf.resolve_chained_type(t).ok()?,
            Type::Const(t) => btf.resolve_chained_type(t).ok()?,
            Type::Volatile(t) => btf.resolve_chained_type(t).ok()?,
            Type::Restrict(t) => btf.resolve_chained_type(t).ok()?,
            Type::TypeTag(t) => btf.resolve_chained_type(t).ok()?,
            _ => return None,
        };
    }
    None
}

/// One line for logs and errors.
pub fn describe(l: &TaskLayout) -> String {
    format!(
        "task_struct: pid at {}, tgid at {}, comm at {}, sched_info.run_delay at {}, \
         sched_info.pcount at {}, start_time at {}, real_parent at {}, mm at {}; mm_struct: mm_lock_seq at {}; vm_area_struct: vm_flags at {}, vm_file at {}",
        l.pid, l.tgid, l.comm, l.run_delay, l.pcount, l.start_time,
        l.real_parent,
        l.task_mm,
        if l.mm_lock_seq == NO_FIELD { "none".to_string() } else { l.mm_lock_seq.to_string() },
        l.vma_flags,
        l.vma_file
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // This kernel's BTF: every test machine has it (the agent needs it).
    #[test]
    fn reads_this_kernels_task_struct() {
        let l = read(Path::new(VMLINUX_BTF)).expect("BTF of the running kernel");
        // pid and tgid are adjacent pid_t fields; comm is a 16-byte array
        // well past them in every kernel since 2.6.
        assert_eq!(l.tgid, l.pid + 4, "{}", describe(&l));
        assert!(l.comm > l.tgid, "{}", describe(&l));
        assert!(l.pid > 0 && l.comm < 16384, "{}", describe(&l));
        // struct sched_info: pcount (unsigned long), then run_delay (u64).
        assert_eq!(l.run_delay, l.pcount + 8, "{}", describe(&l));
        assert!(l.pcount > 0 && l.run_delay < 16384, "{}", describe(&l));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reads_this_kernels_pt_regs() {
        let l = read_syscalls(Path::new(VMLINUX_BTF)).expect("BTF of the running kernel");
        // x86-64: orig_ax follows the 15 saved general registers; si is the
        // 14th of them.
        assert_eq!((l.nr, l.nr_size, l.op), (120, 8, 104), "{l:?}");
        assert_eq!(l.numbers[0], 202);
    }

    #[test]
    fn a_kernel_without_btf_is_refused_with_a_reason() {
        let e = read(Path::new("/nonexistent/vmlinux")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("CONFIG_DEBUG_INFO_BTF"), "{msg}");
    }

    #[test]
    fn garbage_is_not_btf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("vmlinux");
        std::fs::write(&p, b"not btf at all").unwrap();
        assert!(matches!(read(&p), Err(AgentError::KernelUnsupported(_))));
    }
}
