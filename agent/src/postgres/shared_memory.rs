//! Where a PostgreSQL cluster's main shared memory segment lies and
//! whether it is on huge pages, from `/proc/<postmaster>/smaps`: the kernel
//! programs count the faults that land in it (README, "Memory stalls"), and
//! `check` judges its page size. The Linux 7.0 slowdown was
//! largely minor page faults taken while holding a spinlock, with shared
//! buffers on 4 kB pages; `huge_pages=on` removed most of it.
//!
//! The main segment is the postmaster's largest shared mapping of shared
//! memory: `/dev/zero (deleted)` (anonymous, `shared_memory_type=mmap`, 4 kB
//! pages), `/anon_hugepage (deleted)` (the same with `MAP_HUGETLB`), or
//! `/SYSV<key> (deleted)` (`shared_memory_type=sysv`; PostgreSQL's small
//! interlock segment is one too, but never the largest). Dynamic shared
//! memory under `/dev/shm` is not the main segment.
use agent_common::stats::Segment;
use serde::Serialize;

/// One mapping of an smaps file: its header and the `kB` fields we read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    /// `[start, end)` in the process.
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub path: String,
    pub size_kb: u64,
    pub kernel_page_size_kb: u64,
    pub anon_huge_kb: u64,
    pub shmem_pmd_kb: u64,
    pub hugetlb_kb: u64,
}

/// Parses smaps text into mappings.
pub fn parse(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if is_range(first) {
            let (start, end) = first.split_once('-').unwrap_or_default();
            let start = u64::from_str_radix(start, 16).unwrap_or(0);
            let end = u64::from_str_radix(end, 16).unwrap_or(0);
            let perms = words.next().unwrap_or("").to_string();
            // offset, device, inode, then the path (which may hold spaces).
            let path = line
                .split_whitespace()
                .skip(5)
                .collect::<Vec<_>>()
                .join(" ");
            out.push(Mapping {
                start,
                end,
                perms,
                path,
                ..Mapping::default()
            });
            continue;
        }
        let Some(m) = out.last_mut() else { continue };
        let kb = || {
            words
                .clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" => m.size_kb = kb(),
            "KernelPageSize:" => m.kernel_page_size_kb = kb(),
            "AnonHugePages:" => m.anon_huge_kb = kb(),
            "ShmemPmdMapped:" => m.shmem_pmd_kb = kb(),
            "Shared_Hugetlb:" | "Private_Hugetlb:" => m.hugetlb_kb += kb(),
            _ => {}
        }
    }
    out
}

fn is_range(w: &str) -> bool {
    w.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_hexdigit())
            && b.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// A shared mapping of System V or anonymous shared memory.
fn is_shared_memory(m: &Mapping) -> bool {
    m.perms.as_bytes().get(3) == Some(&b's')
        && (m.path == "/dev/zero (deleted)"
            || m.path.starts_with("/anon_hugepage")
            || (m.path.starts_with("/SYSV") && m.path.ends_with("(deleted)")))
}

/// The main shared memory segment: the largest shared-memory mapping.
pub fn main_segment(maps: &[Mapping]) -> Option<&Mapping> {
    maps.iter()
        .filter(|m| is_shared_memory(m))
        .max_by_key(|m| m.size_kb)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// hugetlb pages (`huge_pages=on`, or `try` that succeeded).
    On,
    /// 4 kB pages, partly backed by transparent huge pages.
    Partial,
    /// 4 kB pages only.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HugePages {
    pub state: State,
    /// The mapping's name in smaps.
    pub segment: String,
    pub size_kb: u64,
    pub page_size_kb: u64,
    /// kB of the segment on transparent huge pages.
    pub thp_kb: u64,
    /// One line for people.
    pub summary: String,
}

/// Judges the main segment of a postmaster's smaps (None: no segment found).
pub fn assess(smaps: &str) -> Option<HugePages> {
    assess_mapping(main_segment(&parse(smaps))?)
}

/// A cluster's main segment as the kernel programs use it, and its page
/// size as people read it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSegment {
    pub segment: Segment,
    pub huge_pages: HugePages,
}

/// The main segment of process `pid` (any process of the cluster: children
/// inherit the postmaster's mapping at the same address), from its smaps.
pub fn of_process(proc_root: &std::path::Path, pid: u32) -> Option<ClusterSegment> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("smaps")).ok()?;
    from_smaps(&text)
}

/// The same, from smaps text.
pub fn from_smaps(text: &str) -> Option<ClusterSegment> {
    let maps = parse(text);
    let m = main_segment(&maps)?;
    let huge_pages = assess_mapping(m)?;
    Some(ClusterSegment {
        segment: Segment {
            start: m.start,
            end: m.end,
            huge: u32::from(huge_pages.state == State::On),
            _pad: 0,
        },
        huge_pages,
    })
}

fn assess_mapping(m: &Mapping) -> Option<HugePages> {
    let thp_kb = m.anon_huge_kb + m.shmem_pmd_kb;
    let state =
        if m.kernel_page_size_kb > 4 || m.hugetlb_kb > 0 || m.path.starts_with("/anon_hugepage") {
            State::On
        } else if thp_kb > 0 {
            State::Partial
        } else {
            State::Off
        };
    let mb = m.size_kb as f64 / 1024.0;
    let summary = match state {
        State::On => format!(
            "on: the main shared memory ({}, {mb:.0} MB) uses {} kB pages",
            m.path, m.kernel_page_size_kb
        ),
        State::Partial => format!(
            "partly: the main shared memory ({}, {mb:.0} MB) is on 4 kB pages, {} kB of it on transparent huge pages; set huge_pages=on (and reserve vm.nr_hugepages)",
            m.path, thp_kb
        ),
        State::Off => format!(
            "off: the main shared memory ({}, {mb:.0} MB) is on {} kB pages; page faults under spinlocks were most of the Linux 7.0 slowdown: set huge_pages=on (and reserve vm.nr_hugepages)",
            m.path,
            m.kernel_page_size_kb.max(4)
        ),
    };
    Some(HugePages {
        state,
        segment: m.path.clone(),
        size_kb: m.size_kb,
        page_size_kb: m.kernel_page_size_kb,
        thp_kb,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/smaps")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_mappings_and_their_page_fields() {
        let maps = parse(&fixture("postmaster-4k-pages.smaps"));
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].path, "/usr/lib/postgresql/15/bin/postgres");
        assert_eq!(maps[1].path, "[heap]");
        let zero = &maps[2];
        assert_eq!(
            (zero.perms.as_str(), zero.path.as_str()),
            ("rw-s", "/dev/zero (deleted)")
        );
        assert_eq!(zero.size_kb, 146016);
        assert_eq!(zero.kernel_page_size_kb, 4);
        assert!(maps[3].path.starts_with("/dev/shm/PostgreSQL."));
        assert!(maps[4].path.starts_with("/SYSV"));
        assert_eq!(maps[4].size_kb, 4);
    }

    #[test]
    fn four_kb_pages_are_off() {
        let h = assess(&fixture("postmaster-4k-pages.smaps")).unwrap();
        assert_eq!(h.state, State::Off);
        assert_eq!(
            h.segment, "/dev/zero (deleted)",
            "not the SYSV interlock, not DSM"
        );
        assert_eq!(h.page_size_kb, 4);
        assert!(h.summary.starts_with(
            "off: the main shared memory (/dev/zero (deleted), 143 MB) is on 4 kB pages"
        ));
        assert!(h.summary.contains("huge_pages=on"));
    }

    #[test]
    fn the_segment_range_is_the_mapping_s() {
        let c = from_smaps(&fixture("postmaster-4k-pages.smaps")).unwrap();
        assert_eq!(
            c.segment,
            Segment {
                start: 0x7f06_51a2_7000,
                end: 0x7f06_5a8b_f000,
                huge: 0,
                _pad: 0
            }
        );
        assert_eq!(c.huge_pages.state, State::Off);
        let h = from_smaps(&fixture("postmaster-hugetlb.smaps")).unwrap();
        assert_eq!((h.segment.start, h.segment.huge), (0x7f06_51a2_7000, 1));
        assert!(from_smaps("").is_none());
    }

    #[test]
    fn hugetlb_is_on() {
        let h = assess(&fixture("postmaster-hugetlb.smaps")).unwrap();
        assert_eq!(h.state, State::On);
        assert_eq!(h.segment, "/anon_hugepage (deleted)");
        assert_eq!(h.page_size_kb, 2048);
        assert_eq!(
            h.summary,
            "on: the main shared memory (/anon_hugepage (deleted), 144 MB) uses 2048 kB pages"
        );
        let h = assess(&fixture("postmaster-sysv-hugetlb.smaps")).unwrap();
        assert_eq!(
            (h.state, h.segment.as_str()),
            (State::On, "/SYSV00000000 (deleted)")
        );
    }

    #[test]
    fn transparent_huge_pages_are_partial() {
        let h = assess(&fixture("postmaster-shmem-thp.smaps")).unwrap();
        assert_eq!(h.state, State::Partial);
        assert_eq!(h.thp_kb, 8192);
        assert!(h
            .summary
            .contains("8192 kB of it on transparent huge pages"));
    }

    #[test]
    fn no_shared_memory_no_answer() {
        assert_eq!(assess(""), None);
        let only_private =
            "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/x\nSize: 328 kB\n";
        assert_eq!(assess(only_private), None);
        // A shared mapping of an ordinary file is not shared memory.
        let file =
            "7f00-7f10 rw-s 00000000 08:02 1 /var/lib/x.db\nSize: 4096 kB\nKernelPageSize: 4 kB\n";
        assert_eq!(assess(file), None);
    }
}
