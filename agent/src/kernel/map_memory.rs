//! How much kernel memory the loaded maps hold, as the kernel itself counts
//! it (the `memlock:` line of a map's `/proc/self/fdinfo`, which `bpftool map
//! show` prints), and what the same maps would hold on a host with more CPUs.
//!
//! A per-CPU map has one copy of each value per *possible* CPU
//! (`/sys/devices/system/cpu/possible`), so its memory grows with the host;
//! hash maps also keep a few bytes of locks per CPU. [`model`] is the
//! kernel's own arithmetic (`htab_map_mem_usage`, `array_map_mem_usage`,
//! `ringbuf_map_mem_usage`, Linux 6.1 and later) with the sizes of its
//! internal structs on 64-bit kernels; a map's memory at N CPUs is what the
//! kernel reports here plus the modelled difference, so only the part that
//! grows per CPU is modelled, and it is checked against the measurement by
//! the tests (`agent/tests/map_memory.rs`).
use std::{
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use aya::{maps::Map, Ebpf};
use serde::Serialize;

/// `enum bpf_map_type` values the model knows.
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const PERCPU_CGROUP_STORAGE: u32 = 21;
    pub const RINGBUF: u32 = 27;
}

/// `BPF_F_NO_PREALLOC`: a hash map allocates elements as they are inserted.
pub const BPF_F_NO_PREALLOC: u32 = 1;
/// `BPF_F_MMAPABLE`: an array whose values user space can map.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Sizes of the kernel's own structs (x86-64 and arm64, without lock
/// debugging), as `*_map_mem_usage` adds them up.
mod kernel_sizes {
    /// `struct bpf_htab` (measured on 6.18: the fixed part only, never
    /// multiplied).
    pub const HTAB: u64 = 832;
    /// `struct bpf_array` (6.18).
    pub const ARRAY: u64 = 312;
    /// `struct bpf_ringbuf_map` (6.18).
    pub const RINGBUF_MAP: u64 = 304;
    /// `struct bucket`: a list head and a spinlock.
    pub const BUCKET: u64 = 16;
    /// `struct htab_elem` up to its key.
    pub const HTAB_ELEM: u64 = 48;
    /// `HASHTAB_MAP_LOCK_COUNT` ints per possible CPU (`map_locked`).
    pub const HTAB_LOCKS_PER_CPU: u64 = 8 * 4;
    /// `struct llist_node`.
    pub const LLIST_NODE: u64 = 8;
    /// A pointer.
    pub const PTR: u64 = 8;
    /// `RINGBUF_NR_META_PAGES`: the consumer and producer pages.
    pub const RINGBUF_META_PAGES: u64 = 3;
}

/// What the kernel was told when the map was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl Shape {
    pub fn per_cpu(&self) -> bool {
        matches!(
            self.map_type,
            map_type::PERCPU_HASH
                | map_type::PERCPU_ARRAY
                | map_type::LRU_PERCPU_HASH
                | map_type::PERCPU_CGROUP_STORAGE
        )
    }

    fn is_hash(&self) -> bool {
        matches!(
            self.map_type,
            map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH
        )
    }

    /// False for a hash map created with `BPF_F_NO_PREALLOC` (its memory
    /// follows the elements it holds; LRU maps are always preallocated).
    pub fn preallocated(&self) -> bool {
        !(self.is_hash()
            && !matches!(
                self.map_type,
                map_type::LRU_HASH | map_type::LRU_PERCPU_HASH
            )
            && self.flags & BPF_F_NO_PREALLOC != 0)
    }

    pub fn type_name(&self) -> &'static str {
        match self.map_type {
            map_type::HASH => "hash",
            map_type::ARRAY => "array",
            map_type::PERCPU_HASH => "percpu_hash",
            map_type::PERCPU_ARRAY => "percpu_array",
            map_type::LRU_HASH => "lru_hash",
            map_type::LRU_PERCPU_HASH => "lru_percpu_hash",
            map_type::PERCPU_CGROUP_STORAGE => "percpu_cgroup_storage",
            map_type::RINGBUF => "ringbuf",
            _ => "other",
        }
    }
}

fn round8(v: u32) -> u64 {
    (u64::from(v) + 7) & !7
}

fn page_align(v: u64, page: u64) -> u64 {
    v.div_ceil(page) * page
}

/// The kernel's accounting of a map of this shape with `cpus` possible CPUs
/// and, for a hash map that is not preallocated, `elements` in it (`None`
/// for a map type the model does not cover).
pub fn model(s: &Shape, cpus: u64, elements: u64, page: u64) -> Option<u64> {
    use kernel_sizes::*;
    let value8 = round8(s.value_size);
    let entries = u64::from(s.max_entries);
    match s.map_type {
        map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH => {
            let per_cpu = s.per_cpu();
            let lru = matches!(s.map_type, map_type::LRU_HASH | map_type::LRU_PERCPU_HASH);
            let elem = HTAB_ELEM + round8(s.key_size) + if per_cpu { PTR } else { value8 };
            let mut usage = HTAB + BUCKET * entries.next_power_of_two() + HTAB_LOCKS_PER_CPU * cpus;
            if s.preallocated() {
                // A plain hash keeps one spare element per CPU for updates.
                let extra = !per_cpu && !lru;
                let n = entries + if extra { cpus } else { 0 };
                usage += elem * n;
                if per_cpu {
                    usage += value8 * cpus * n;
                } else if !lru {
                    usage += PTR * cpus;
                }
            } else {
                usage += (elem + LLIST_NODE) * elements;
                if per_cpu {
                    usage += (LLIST_NODE + PTR) * elements + value8 * cpus * elements;
                }
            }
            Some(usage)
        }
        map_type::ARRAY | map_type::PERCPU_ARRAY => {
            let mut usage = ARRAY;
            if s.map_type == map_type::PERCPU_ARRAY {
                usage += entries * PTR + entries * value8 * cpus;
            } else if s.flags & BPF_F_MMAPABLE != 0 {
                usage = page_align(usage, page) + page_align(entries * value8, page);
            } else {
                usage += entries * value8;
            }
            Some(usage)
        }
        map_type::RINGBUF => {
            let data_pages = entries / page;
            Some(
                RINGBUF_MAP
                    + (RINGBUF_META_PAGES + data_pages) * page
                    + (RINGBUF_META_PAGES + 2 * data_pages) * PTR,
            )
        }
        _ => None,
    }
}

/// What each element of this hash map costs with `cpus` possible CPUs when
/// it is created with `BPF_F_NO_PREALLOC` (whatever its flags are now).
pub fn element_cost(shape: &Shape, cpus: u32) -> Option<u64> {
    let s = Shape {
        flags: shape.flags | BPF_F_NO_PREALLOC,
        ..*shape
    };
    if s.preallocated() {
        return None; // not a hash map that can skip preallocation
    }
    let (c, p) = (u64::from(cpus), page_size());
    Some(model(&s, c, 1, p)? - model(&s, c, 0, p)?)
}

/// Memory that `memlock` does not count, for a hash map created with
/// `BPF_F_NO_PREALLOC`: the kernel's BPF allocator (`kernel/bpf/memalloc.c`,
/// Linux 6.8 and later) keeps a cache of free objects on every possible CPU.
/// For a per-CPU map each cached value has a copy per CPU, so the cache
/// grows with the square of the CPUs: one value per CPU from creation, at
/// most about four in use (watermarks 1 and 3), plus 4 to 96 elements per
/// CPU. (min, max) bytes with `cpus` possible CPUs; None for a preallocated
/// map.
pub fn allocator_cache(shape: &Shape, cpus: u32) -> Option<(u64, u64)> {
    if shape.preallocated() || !shape.is_hash() {
        return None;
    }
    let c = u64::from(cpus);
    let elem = (kernel_sizes::HTAB_ELEM
        + round8(shape.key_size)
        + if shape.per_cpu() {
            kernel_sizes::PTR
        } else {
            round8(shape.value_size)
        }
        + kernel_sizes::LLIST_NODE)
        .next_multiple_of(32);
    let values = if shape.per_cpu() {
        round8(shape.value_size) * c
    } else {
        0
    };
    Some((c * (values + 4 * elem), c * (4 * values + 96 * elem)))
}

/// One loaded map.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapMemory {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: &'static str,
    #[serde(flatten)]
    pub shape: Shape,
    pub per_cpu: bool,
    pub preallocated: bool,
    /// Elements it holds now: counted for a hash map that is not
    /// preallocated (its memory follows them), else `None`.
    pub elements: Option<u64>,
    /// The kernel's accounting (`memlock` in fdinfo), bytes.
    pub memlock: u64,
    /// What [`model`] gives for this host (to compare with `memlock`).
    pub modelled: Option<u64>,
    /// Bytes it grows by per possible CPU, as it is now.
    pub per_cpu_bytes: u64,
    /// The same when full (differs for a map that is not preallocated).
    pub per_cpu_bytes_full: u64,
    /// Bytes it would hold here when full (`memlock` unless not preallocated).
    pub full: u64,
}

impl MapMemory {
    /// From the kernel's figures for one map on a host with `cpus` possible
    /// CPUs.
    pub fn new(
        name: &str,
        shape: Shape,
        memlock: u64,
        elements: Option<u64>,
        cpus: u32,
    ) -> MapMemory {
        let page = page_size();
        let cpus = u64::from(cpus);
        let now = elements.unwrap_or(0);
        let full_n = u64::from(shape.max_entries);
        let m = |c: u64, n: u64| model(&shape, c, n, page);
        let modelled = m(cpus, now);
        let grow = |n: u64| match (m(cpus + 1, n), m(cpus, n)) {
            (Some(a), Some(b)) => a - b,
            // A type the model does not know: its values, if per CPU.
            _ if shape.per_cpu() => u64::from(shape.max_entries) * round8(shape.value_size),
            _ => 0,
        };
        let full = match (m(cpus, full_n), modelled) {
            (Some(f), Some(h)) if !shape.preallocated() => (memlock + f).saturating_sub(h),
            _ => memlock,
        };
        MapMemory {
            name: name.to_string(),
            type_name: shape.type_name(),
            shape,
            per_cpu: shape.per_cpu(),
            preallocated: shape.preallocated(),
            elements,
            memlock,
            modelled,
            per_cpu_bytes: grow(now),
            per_cpu_bytes_full: if shape.preallocated() {
                grow(now)
            } else {
                grow(full_n)
            },
            full,
        }
    }

    /// What one more element costs with `cpus` possible CPUs, for a hash
    /// map that is not preallocated (None otherwise).
    pub fn per_element_at(&self, cpus: u32) -> Option<u64> {
        if self.preallocated {
            return None;
        }
        element_cost(&self.shape, cpus)
    }

    /// Its memory with `cpus` possible CPUs, as it is now.
    pub fn at(&self, here: u32, cpus: u32) -> u64 {
        scale(self.memlock, self.per_cpu_bytes, here, cpus)
    }

    /// Its memory with `cpus` possible CPUs when full.
    pub fn full_at(&self, here: u32, cpus: u32) -> u64 {
        scale(self.full, self.per_cpu_bytes_full, here, cpus)
    }
}

fn scale(bytes: u64, per_cpu: u64, here: u32, cpus: u32) -> u64 {
    let d = i128::from(cpus) - i128::from(here);
    (i128::from(bytes) + d * i128::from(per_cpu)).max(0) as u64
}

/// Every map of one loaded object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapMemoryReport {
    /// This host's possible CPUs: what the kernel sizes per-CPU maps by.
    pub possible_cpus: u32,
    /// By name.
    pub maps: Vec<MapMemory>,
}

impl MapMemoryReport {
    /// Total here, as the kernel counts it now.
    pub fn total(&self) -> u64 {
        self.maps.iter().map(|m| m.memlock).sum()
    }

    /// Total with `cpus` possible CPUs, as the maps are now.
    pub fn total_at(&self, cpus: u32) -> u64 {
        self.maps
            .iter()
            .map(|m| m.at(self.possible_cpus, cpus))
            .sum()
    }

    /// Total with `cpus` possible CPUs and every map full.
    pub fn total_full_at(&self, cpus: u32) -> u64 {
        self.maps
            .iter()
            .map(|m| m.full_at(self.possible_cpus, cpus))
            .sum()
    }

    pub fn get(&self, name: &str) -> Option<&MapMemory> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The totals here and at each of `at` CPUs (for `check --json`).
    pub fn summary(&self, at: &[u32]) -> MapMemorySummary {
        MapMemorySummary {
            possible_cpus: self.possible_cpus,
            bytes: self.total(),
            bytes_full: self.total_full_at(self.possible_cpus),
            at: at
                .iter()
                .map(|&cpus| MemoryAt {
                    cpus,
                    bytes: self.total_at(cpus),
                    bytes_full: self.total_full_at(cpus),
                })
                .collect(),
            maps: self.maps.clone(),
        }
    }
}

/// [`MapMemoryReport`] with its totals worked out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapMemorySummary {
    pub possible_cpus: u32,
    /// Here, now.
    pub bytes: u64,
    /// Here, every map full.
    pub bytes_full: u64,
    pub at: Vec<MemoryAt>,
    pub maps: Vec<MapMemory>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryAt {
    pub cpus: u32,
    pub bytes: u64,
    pub bytes_full: u64,
}

/// The fields of a map's fdinfo that matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdInfo {
    pub shape: Shape,
    pub memlock: u64,
}

/// Parses `/proc/PID/fdinfo/FD` of a BPF map.
pub fn parse_fdinfo(text: &str) -> Option<FdInfo> {
    let field = |key: &str| -> Option<u64> {
        let v = text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim())
        })?;
        match v.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => v.parse().ok(),
        }
    };
    let u32_of = |key: &str| field(key).and_then(|v| u32::try_from(v).ok());
    Some(FdInfo {
        shape: Shape {
            map_type: u32_of("map_type")?,
            key_size: u32_of("key_size")?,
            value_size: u32_of("value_size")?,
            max_entries: u32_of("max_entries")?,
            flags: u32_of("map_flags").unwrap_or(0),
        },
        memlock: field("memlock")?,
    })
}

/// Parses a CPU list such as `0-1` or `0-3,8-11` (how many CPUs it names).
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut n = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?),
            None => {
                let c = part.trim().parse::<u32>().ok()?;
                (c, c)
            }
        };
        if hi < lo {
            return None;
        }
        n += hi - lo + 1;
    }
    (n > 0).then_some(n)
}

/// This host's possible CPUs, which per-CPU maps are sized by (more than the
/// online ones where CPUs can be hot-added).
pub fn possible_cpus() -> std::io::Result<u32> {
    possible_cpus_at(Path::new("/sys/devices/system/cpu/possible"))
}

pub fn possible_cpus_at(path: &Path) -> std::io::Result<u32> {
    let text = std::fs::read_to_string(path)?;
    parse_cpu_list(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: not a CPU list: {text:?}", path.display()),
        )
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

fn map_fd(map: &Map) -> BorrowedFd<'_> {
    let data = match map {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    data.fd().as_fd()
}

/// Counts a map's keys (BPF_MAP_GET_NEXT_KEY walked to the end, keys of
/// any size, whatever the value type: aya's typed maps need the value type,
/// which for the per-task map only the kernel crate has).
pub fn count_keys(fd: BorrowedFd<'_>, key_size: u32) -> u64 {
    #[repr(C)]
    struct NextKey {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    const MAX_WALK: u64 = 1 << 22;
    let mut key = vec![0u8; key_size.max(1) as usize];
    let mut next = key.clone();
    let mut n = 0u64;
    loop {
        let attr = NextKey {
            map_fd: fd.as_raw_fd() as u32,
            _pad: 0,
            key: if n == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: both buffers hold a key of the map's key size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKey,
                std::mem::size_of::<NextKey>() as u32,
            )
        };
        if r != 0 || n >= MAX_WALK {
            return n;
        }
        n += 1;
        std::mem::swap(&mut key, &mut next);
    }
}

/// Reads one map's kernel figures from this process's fdinfo.
fn read_one(name: &str, map: &Map, cpus: u32) -> std::io::Result<MapMemory> {
    let fd = map_fd(map);
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path)?;
    let info = parse_fdinfo(&text).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{path}: no map fields"),
        )
    })?;
    let elements = (!info.shape.preallocated()).then(|| count_keys(fd, info.shape.key_size));
    Ok(MapMemory::new(
        name,
        info.shape,
        info.memlock,
        elements,
        cpus,
    ))
}

/// Every map of a loaded object that is still in it (maps taken out with
/// `take_map` are not), by name.
pub fn measure(ebpf: &Ebpf) -> std::io::Result<MapMemoryReport> {
    let cpus = possible_cpus()?;
    let mut maps = ebpf
        .maps()
        .map(|(name, map)| read_one(name, map, cpus))
        .collect::<std::io::Result<Vec<_>>>()?;
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(MapMemoryReport {
        possible_cpus: cpus,
        maps,
    })
}

/// Bytes in binary units: `320 B`, `12.5 KiB`, `29.9 MiB`.
pub fn human(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K {
        format!("{bytes} B")
    } else if b < K * K {
        format!("{:.1} KiB", b / K)
    } else if b < K * K * K {
        format!("{:.1} MiB", b / K / K)
    } else {
        format!("{:.2} GiB", b / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fdinfo of `PROC_STATS` as the daemon created it before issue 11
    /// (Linux 6.18, 2 possible CPUs).
    const PROC_STATS_FDINFO: &str = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2087\nmap_type:\t5\nkey_size:\t4\nvalue_size:\t192\nmax_entries:\t8192\nmap_flags:\t0x0\nmap_extra:\t0x0\nmemlock:\t3801984\nmap_id:\t1071\nfrozen:\t0\n";

    fn shape(map_type: u32, key: u32, value: u32, entries: u32, flags: u32) -> Shape {
        Shape {
            map_type,
            key_size: key,
            value_size: value,
            max_entries: entries,
            flags,
        }
    }

    #[test]
    fn fdinfo_fields() {
        let i = parse_fdinfo(PROC_STATS_FDINFO).unwrap();
        assert_eq!(i.shape, shape(5, 4, 192, 8192, 0));
        assert_eq!(i.memlock, 3_801_984);
        let flagged = PROC_STATS_FDINFO.replace("map_flags:\t0x0", "map_flags:\t0x401");
        assert_eq!(parse_fdinfo(&flagged).unwrap().shape.flags, 0x401);
        // Not a map (a program's fdinfo has no map_type).
        assert_eq!(
            parse_fdinfo("pos:\t0\nprog_type:\t26\nmemlock:\t4096\n"),
            None
        );
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list("0-95"), Some(96));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    /// The model against what Linux 6.18 reported for every map of the
    /// daemon before issue 11 (2 possible CPUs, 4 KiB pages).
    #[test]
    fn the_model_matches_the_kernel_on_this_vm() {
        let cases = [
            ("PROC_STATS", shape(5, 4, 192, 8192, 0), 3_801_984),
            ("GROUP_STATS", shape(6, 4, 816, 256, 0), 420_152),
            ("SPIN_SITES", shape(5, 16, 280, 1024, 0), 664_448),
            ("TASKS", shape(9, 4, 352, 32768, 0), 13_894_528),
            ("PROC_INFO", shape(1, 4, 8, 8192, 0), 656_400),
            ("PIDS", shape(1, 4, 4, 1024, 0), 82_960),
            ("DIAG", shape(6, 4, 8, 7, 0), 480),
            ("SPIN_SCRATCH", shape(6, 4, 280, 1, 0), 880),
            ("FLOOR_COUNT", shape(6, 4, 8, 1, 0), 336),
            ("GENERATION", shape(2, 4, 8, 1, 0), 320),
            (".rodata", shape(2, 4, 1153, 1, 0x80), 1_472),
            ("PROC_EVENTS", shape(27, 0, 0, 65536, 0), 78_408),
            ("AYA_LOGS", shape(27, 0, 0, 131072, 0), 144_200),
        ];
        for (name, s, memlock) in cases {
            assert_eq!(model(&s, 2, 0, 4096), Some(memlock), "{name}");
        }
    }

    #[test]
    fn only_the_per_cpu_part_grows() {
        // PROC_STATS before: 192 B x 8192 per CPU, plus the hash's locks.
        let m = MapMemory::new("PROC_STATS", shape(5, 4, 192, 8192, 0), 3_801_984, None, 2);
        assert_eq!(m.per_cpu_bytes, 192 * 8192 + 32);
        assert_eq!(m.at(2, 2), 3_801_984);
        assert_eq!(m.at(2, 96), 3_801_984 + 94 * (192 * 8192 + 32));
        assert_eq!(m.at(2, 1), 3_801_984 - (192 * 8192 + 32));
        assert_eq!(m.full_at(2, 96), m.at(2, 96));
        // A per-CPU array: its values only.
        let g = MapMemory::new("GROUP_STATS", shape(6, 4, 816, 256, 0), 420_152, None, 2);
        assert_eq!(g.per_cpu_bytes, 816 * 256);
        assert_eq!(g.at(2, 96) - g.at(2, 2), 94 * 816 * 256);
        // A ring buffer does not grow; an LRU hash only by its locks; a
        // plain preallocated hash also by a spare element per CPU.
        let r = MapMemory::new("PROC_EVENTS", shape(27, 0, 0, 65536, 0), 78_408, None, 2);
        assert_eq!((r.per_cpu_bytes, r.at(2, 192)), (0, 78_408));
        let t = MapMemory::new("TASKS", shape(9, 4, 352, 32768, 0), 13_894_528, None, 2);
        assert_eq!(t.per_cpu_bytes, 32);
        let p = MapMemory::new("PROC_INFO", shape(1, 4, 8, 8192, 0), 656_400, None, 2);
        assert_eq!(p.per_cpu_bytes, 32 + 64 + 8);
        // With more possible CPUs than here the model still starts from the
        // kernel's figure: a different fixed part is carried, not modelled.
        let off = MapMemory::new("GROUP_STATS", shape(6, 4, 816, 256, 0), 420_000, None, 2);
        assert_eq!(off.at(2, 96), 420_000 + 94 * 816 * 256);
    }

    #[test]
    fn a_map_that_is_not_preallocated_grows_with_its_elements() {
        let s = shape(5, 4, 192, 8192, BPF_F_NO_PREALLOC);
        assert!(!s.preallocated());
        let empty = model(&s, 2, 0, 4096).unwrap();
        assert_eq!(empty, 832 + 16 * 8192 + 32 * 2);
        // Each element: the element (key, a per-CPU pointer), list nodes,
        // and the value once per CPU.
        let per_elem = 48 + 8 + 8 + 8 + 8 + 8 + 192 * 2;
        assert_eq!(model(&s, 2, 10, 4096).unwrap(), empty + 10 * per_elem);
        let m = MapMemory::new("PROC_STATS", s, empty + 10 * per_elem, Some(10), 2);
        assert_eq!(m.per_cpu_bytes, 32 + 10 * 192);
        assert_eq!(m.per_cpu_bytes_full, 32 + 8192 * 192);
        assert_eq!(m.per_element_at(2), Some(per_elem));
        assert_eq!(m.per_element_at(96), Some(88 + 192 * 96));
        assert_eq!(m.full, empty + 8192 * per_elem);
        assert_eq!(
            m.full_at(2, 96),
            832 + 16 * 8192 + 32 * 96 + 8192 * (88 + 192 * 96)
        );
        // The allocator's cache, not in memlock: a value per CPU per CPU
        // from creation (what this VM showed: 16 KiB more per empty map of
        // 4 KiB values on 2 CPUs than the values alone).
        let (lo, hi) = allocator_cache(&s, 96).unwrap();
        assert_eq!(lo, 96 * (192 * 96 + 4 * 96));
        assert_eq!(hi, 96 * (4 * 192 * 96 + 96 * 96));
        assert_eq!(allocator_cache(&shape(5, 4, 192, 8192, 0), 96), None);
        let big = shape(5, 4, 4096, 1, BPF_F_NO_PREALLOC);
        assert_eq!(
            allocator_cache(&big, 2).unwrap().0 - 2 * 4 * 96,
            2 * 4096 * 2
        );
        // The cost of an element, also for a map created preallocated.
        assert_eq!(
            element_cost(&shape(5, 4, 192, 1, 0), 96),
            Some(88 + 192 * 96)
        );
        assert_eq!(element_cost(&shape(6, 4, 192, 1, 0), 96), None);
        // LRU maps are preallocated whatever the flag says.
        assert!(shape(9, 4, 8, 16, BPF_F_NO_PREALLOC).preallocated());
        assert!(shape(6, 4, 8, 16, BPF_F_NO_PREALLOC).preallocated());
    }

    #[test]
    fn totals_and_units() {
        let r = MapMemoryReport {
            possible_cpus: 2,
            maps: vec![
                MapMemory::new("GROUP_STATS", shape(6, 4, 816, 256, 0), 420_152, None, 2),
                MapMemory::new("PROC_EVENTS", shape(27, 0, 0, 65536, 0), 78_408, None, 2),
            ],
        };
        assert_eq!(r.total(), 498_560);
        assert_eq!(r.total_at(2), r.total());
        assert_eq!(r.total_at(96), 498_560 + 94 * 816 * 256);
        let s = r.summary(&[96, 192]);
        assert_eq!(s.at[1].cpus, 192);
        assert_eq!(s.at[1].bytes, 498_560 + 190 * 816 * 256);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["maps"][0]["type"], "percpu_array");
        assert_eq!(v["maps"][0]["max_entries"], 256);
        assert_eq!(human(320), "320 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(31_400_000), "29.9 MiB");
    }
}
