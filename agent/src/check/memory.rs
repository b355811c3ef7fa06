//! The memory side in `pgpreempt check`: which of the memory programs'
//! tracepoints this kernel has (a program whose tracepoint is missing is
//! not attached, and what it measures stays zero), and how many NUMA nodes
//! the host has (on one node the NUMA figures stay zero).
use std::path::Path;

use serde::Serialize;

use super::{item, Item, Status};
use crate::kernel::{
    map_memory::parse_cpu_list,
    probes::{Hook, MEMORY_PROGRAMS},
};

/// One memory program and its tracepoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryTracepoint {
    /// The kernel program (as `pgpreempt_bpf_program_*{program}` names it).
    pub program: &'static str,
    /// `category/name`, as under tracefs `events/`.
    pub tracepoint: String,
    /// What the program measures.
    pub measures: &'static str,
    pub present: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryCheck {
    /// Which tracepoints are present, in one line.
    pub tracepoints: Item,
    /// Each memory program (empty when tracefs is not mounted).
    pub programs: Vec<MemoryTracepoint>,
    /// Online NUMA nodes (`/sys/devices/system/node/online`); None: unknown.
    pub numa_nodes: Option<u32>,
    pub numa: Item,
}

/// What the program called `program` measures.
fn measures(program: &str) -> &'static str {
    match program {
        "page_fault_user" => "page faults by region, and faults while others spin",
        "page_fault_kernel" => "faults the kernel takes on user pages (a read() into a buffer)",
        "mmap_lock_start_locking" | "mmap_lock_acquire_returned" => "mmap_lock waits",
        "direct_reclaim_begin" | "direct_reclaim_end" => "direct reclaim stalls",
        "memcg_reclaim_begin" | "memcg_reclaim_end" => "memory-cgroup reclaim stalls",
        "compaction_begin" | "compaction_end" => "compaction stalls",
        "sched_move_numa" | "sched_swap_numa" => "NUMA task migrations",
        "mm_migrate_pages" => "pages migrated",
        _ => "",
    }
}

/// The memory tracepoints under tracefs `events` (None: tracefs is not
/// mounted), and the NUMA nodes under `node_dir`
/// (`/sys/devices/system/node`).
pub fn assess(events: Option<&Path>, node_dir: &Path, numa_balancing: Option<&str>) -> MemoryCheck {
    let programs: Vec<MemoryTracepoint> = match events {
        None => Vec::new(),
        Some(events) => MEMORY_PROGRAMS
            .iter()
            .filter_map(|&(program, hook)| match hook {
                Hook::OptionalBtf(category, name) | Hook::Tracepoint(category, name, _) => {
                    Some(MemoryTracepoint {
                        program,
                        tracepoint: format!("{category}/{name}"),
                        measures: measures(program),
                        present: events.join(category).join(name).exists(),
                    })
                }
                Hook::Btf(_) => None,
            })
            .collect(),
    };
    let tracepoints = if events.is_none() {
        item(Status::Info, "not checked: tracefs is not mounted")
    } else {
        let present = programs.iter().filter(|p| p.present).count();
        let missing: Vec<&MemoryTracepoint> = programs.iter().filter(|p| !p.present).collect();
        if missing.is_empty() {
            item(
                Status::Ok,
                format!("all {present} memory tracepoints are present"),
            )
        } else {
            // What stays zero: each measure once, in the programs' order.
            let mut lost: Vec<&str> = Vec::new();
            for m in &missing {
                if !lost.contains(&m.measures) {
                    lost.push(m.measures);
                }
            }
            item(
                Status::Info,
                format!(
                    "{present} of {} memory tracepoints present; missing: {} (not attached: {} stay zero)",
                    programs.len(),
                    missing
                        .iter()
                        .map(|m| m.tracepoint.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    lost.join(", ")
                ),
            )
        }
    };
    let online = node_dir.join("online");
    let numa_nodes = std::fs::read_to_string(&online)
        .ok()
        .and_then(|s| parse_cpu_list(&s));
    let numa = match numa_nodes {
        None => item(
            Status::Info,
            format!(
                "unknown ({} unreadable: a kernel without NUMA support has one node); NUMA figures stay zero",
                online.display()
            ),
        ),
        Some(1) => item(
            Status::Info,
            "1 node: NUMA balancing never moves a task (numa_migrations stay zero; pages migrated are compaction's and mbind's only)",
        ),
        Some(n) => {
            let balancing = match numa_balancing.map(str::trim) {
                Some("0") => "; NUMA balancing off (kernel.numa_balancing=0): tasks and pages are not moved by it",
                Some(_) => "; NUMA balancing on",
                None => "",
            };
            item(Status::Info, format!("{n} nodes{balancing}"))
        }
    };
    MemoryCheck {
        tracepoints,
        programs,
        numa_nodes,
        numa,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn events_with(root: &Path, present: &[&str]) -> std::path::PathBuf {
        let events = root.join("events");
        for tp in present {
            fs::create_dir_all(events.join(tp)).unwrap();
            fs::write(events.join(tp).join("format"), "name: x\n").unwrap();
        }
        fs::create_dir_all(&events).unwrap();
        events
    }

    fn nodes(root: &Path, online: &str) -> std::path::PathBuf {
        let d = root.join("node");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("online"), online).unwrap();
        d
    }

    fn all() -> Vec<String> {
        MEMORY_PROGRAMS
            .iter()
            .map(|(_, h)| match h {
                Hook::OptionalBtf(c, n) => format!("{c}/{n}"),
                _ => unreachable!("memory programs are optional tp_btf"),
            })
            .collect()
    }

    #[test]
    fn every_memory_tracepoint_present_on_one_node() {
        let tmp = tempfile::tempdir().unwrap();
        let tps = all();
        let refs: Vec<&str> = tps.iter().map(String::as_str).collect();
        let events = events_with(tmp.path(), &refs);
        let m = assess(Some(&events), &nodes(tmp.path(), "0\n"), Some("0\n"));
        assert_eq!(m.programs.len(), 13);
        assert!(m
            .programs
            .iter()
            .all(|p| p.present && !p.measures.is_empty()));
        assert_eq!(m.programs[0].program, "page_fault_user");
        assert_eq!(m.programs[0].tracepoint, "exceptions/page_fault_user");
        assert_eq!(m.tracepoints.status, Status::Ok);
        assert_eq!(
            m.tracepoints.detail,
            "all 13 memory tracepoints are present"
        );
        assert_eq!(m.numa_nodes, Some(1));
        assert!(m
            .numa
            .detail
            .starts_with("1 node: NUMA balancing never moves a task"));
    }

    #[test]
    fn missing_tracepoints_are_named_with_what_stays_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let tps: Vec<String> = all()
            .into_iter()
            .filter(|t| !t.starts_with("vmscan/mm_vmscan_memcg") && !t.starts_with("migrate/"))
            .collect();
        let refs: Vec<&str> = tps.iter().map(String::as_str).collect();
        let events = events_with(tmp.path(), &refs);
        let m = assess(Some(&events), &nodes(tmp.path(), "0-1\n"), Some("1\n"));
        assert_eq!(m.programs.iter().filter(|p| !p.present).count(), 3);
        assert_eq!(m.tracepoints.status, Status::Info);
        assert_eq!(
            m.tracepoints.detail,
            "10 of 13 memory tracepoints present; missing: vmscan/mm_vmscan_memcg_reclaim_begin, vmscan/mm_vmscan_memcg_reclaim_end, migrate/mm_migrate_pages (not attached: memory-cgroup reclaim stalls, pages migrated stay zero)"
        );
        assert_eq!(m.numa_nodes, Some(2));
        assert_eq!(m.numa.detail, "2 nodes; NUMA balancing on");
        // Balancing off on a NUMA host; several node ranges.
        let m = assess(Some(&events), &nodes(tmp.path(), "0-1,4-5\n"), Some("0"));
        assert_eq!(m.numa_nodes, Some(4));
        assert!(m.numa.detail.starts_with("4 nodes; NUMA balancing off"));
    }

    #[test]
    fn without_tracefs_or_node_directory_nothing_is_guessed() {
        let tmp = tempfile::tempdir().unwrap();
        let m = assess(None, &tmp.path().join("absent"), None);
        assert!(m.programs.is_empty());
        assert_eq!(m.tracepoints.detail, "not checked: tracefs is not mounted");
        assert_eq!(m.numa_nodes, None);
        assert!(m.numa.detail.starts_with("unknown ("), "{}", m.numa.detail);
    }
}
