//! The agent's map memory, for `pgpreempt check` and the benchmark: the
//! maps loaded with the daemon's (or a trace session's) configuration, as
//! the kernel accounts them here and as they would be on bigger hosts.
use std::fmt::Write;

use serde::Serialize;

use crate::{
    config::Config,
    kernel::map_memory::{self, human, MapMemoryReport, MapMemorySummary},
    kernel::probes::Probes,
};

/// The CPU counts the reports model besides this host: the 96-vCPU machine
/// of the Linux 7.0 report and a 192-vCPU one.
pub const MODELLED_CPUS: [u32; 2] = [96, 192];

/// The per-process map that only trace sessions fill.
pub const PER_PROCESS_MAP: &str = "PROC_STATS";

/// The configuration `pgpreempt run` loads with by default.
pub fn daemon_config() -> Config {
    Config {
        per_process: false,
        ..Config::default()
    }
}

/// The configuration `pgpreempt trace` loads with by default.
pub fn trace_config() -> Config {
    Config {
        per_process: true,
        keep_departed: true,
        ..Config::default()
    }
}

/// Loads the programs with `cfg` (the verifier checks them; nothing is
/// attached) and measures the maps. Also returns how many programs loaded.
pub fn load_and_measure(cfg: &Config) -> Result<(usize, MapMemoryReport), String> {
    let mut p = Probes::load(cfg).map_err(|e| e.to_string())?;
    let n = p.verify().map_err(|e| e.to_string())?;
    let r = map_memory::measure(&p.ebpf)
        .map_err(|e| format!("reading the maps' memory from /proc/self/fdinfo: {e}"))?;
    Ok((n, r))
}

/// What each process a trace session traces adds to the per-process map
/// (created without preallocation then) with `cpus` possible CPUs.
pub fn per_process_at(report: &MapMemoryReport, cpus: u32) -> Option<u64> {
    map_memory::element_cost(&report.get(PER_PROCESS_MAP)?.shape, cpus)
}

/// `check`'s map-memory facts (JSON), with the line it prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MapMemoryCheck {
    /// The line `check` prints.
    pub detail: String,
    /// `pgpreempt run` with this configuration's sizes.
    pub daemon: MapMemorySummary,
    /// What each process a trace session traces adds (its per-process
    /// counters, one per possible CPU): here and at [`MODELLED_CPUS`].
    pub trace_bytes_per_process: Vec<PerProcessAt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerProcessAt {
    pub cpus: u32,
    pub bytes: u64,
}

/// The check's entry for a report of the daemon's maps.
pub fn for_check(daemon: &MapMemoryReport) -> MapMemoryCheck {
    let here = daemon.possible_cpus;
    let mut detail = format!(
        "{} here ({here} CPU{}), {} at {} CPUs, {} at {} (pgpreempt run, default sizes)",
        human(daemon.total()),
        if here == 1 { "" } else { "s" },
        human(daemon.total_at(MODELLED_CPUS[0])),
        MODELLED_CPUS[0],
        human(daemon.total_at(MODELLED_CPUS[1])),
        MODELLED_CPUS[1],
    );
    let per_process: Vec<PerProcessAt> = std::iter::once(here)
        .chain(MODELLED_CPUS)
        .filter_map(|cpus| {
            Some(PerProcessAt {
                cpus,
                bytes: per_process_at(daemon, cpus)?,
            })
        })
        .collect();
    if let (Some(h), Some(big)) = (per_process.first(), per_process.get(1)) {
        let _ = write!(
            detail,
            "; a trace session adds {} per traced process ({} at {} CPUs)",
            human(h.bytes),
            human(big.bytes),
            big.cpus
        );
    }
    MapMemoryCheck {
        detail,
        daemon: daemon.summary(&MODELLED_CPUS),
        trace_bytes_per_process: per_process,
    }
}

fn entries_cell(m: &map_memory::MapMemory) -> String {
    let n = m.shape.max_entries;
    match m.type_name {
        "ringbuf" => format!("{} ring", human(u64::from(n))),
        _ if !m.preallocated => format!("{n} (allocated as filled)"),
        _ => n.to_string(),
    }
}

/// One mode's table: each map here and at [`MODELLED_CPUS`].
fn table(out: &mut String, r: &MapMemoryReport, trace: bool) {
    let here = r.possible_cpus;
    let [a, b] = MODELLED_CPUS;
    let _ = writeln!(
        out,
        "| map | type | entries | per CPU | value B | here ({here} CPUs) | at {a} CPUs | at {b} CPUs |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for m in &r.maps {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} |",
            m.name,
            m.type_name,
            entries_cell(m),
            if m.per_cpu { "yes" } else { "no" },
            m.shape.value_size,
            human(m.memlock),
            human(m.at(here, a)),
            human(m.at(here, b)),
        );
    }
    let label = if trace {
        "**total**, no process traced yet"
    } else {
        "**total**"
    };
    let _ = writeln!(
        out,
        "| {label} | | | | | **{}** | **{}** | **{}** |",
        human(r.total()),
        human(r.total_at(a)),
        human(r.total_at(b)),
    );
    if trace {
        if let Some(m) = r.get(PER_PROCESS_MAP).filter(|m| !m.preallocated) {
            let per = |c| per_process_at(r, c).map(human).unwrap_or_default();
            let _ = writeln!(
                out,
                "| each traced process adds (`{PER_PROCESS_MAP}`) | | | | | {} | {} | {} |",
                per(here),
                per(a),
                per(b),
            );
            let _ = writeln!(
                out,
                "| total with `{PER_PROCESS_MAP}` full ({} processes) | | | | | {} | {} | {} |",
                m.shape.max_entries,
                human(r.total_full_at(here)),
                human(r.total_full_at(a)),
                human(r.total_full_at(b)),
            );
            let cache = |c| {
                map_memory::allocator_cache(&m.shape, c)
                    .map(|(lo, hi)| format!("{} to {}", human(lo), human(hi)))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "| not in `memlock`: the kernel allocator's per-CPU cache for `{PER_PROCESS_MAP}` (model) | | | | | {} | {} | {} |",
                cache(here),
                cache(a),
                cache(b),
            );
        }
    }
}

/// The benchmark's "Map memory" section (Markdown), from the daemon's and a
/// trace session's maps measured on this host.
pub fn markdown(daemon: &MapMemoryReport, trace: &MapMemoryReport) -> String {
    let mut out = String::new();
    let [a, b] = MODELLED_CPUS;
    let _ = writeln!(
        out,
        "The kernel's own accounting of each map (`memlock` in `/proc/PID/fdinfo`, what `bpftool map show` prints) with the default sizes, on this host ({} possible CPUs), and the same maps modelled at {a} and {b} possible CPUs: a per-CPU map holds one copy of its values per possible CPU, and hash maps a few bytes of locks per CPU (README, \"Map memory\"). `pgpreempt check` prints the totals for any host.\n",
        daemon.possible_cpus
    );
    let _ = writeln!(
        out,
        "`pgpreempt run` (groups only, `PROC_STATS` not used):\n"
    );
    table(&mut out, daemon, false);
    let _ = writeln!(
        out,
        "\n`pgpreempt trace` (per-process counters on; `PROC_STATS` is not preallocated, so it holds memory only for the processes in it):\n"
    );
    table(&mut out, trace, true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::map_memory::{MapMemory, Shape, BPF_F_NO_PREALLOC};

    fn map(
        name: &str,
        map_type: u32,
        value: u32,
        entries: u32,
        flags: u32,
        memlock: u64,
    ) -> MapMemory {
        let shape = Shape {
            map_type,
            key_size: 4,
            value_size: value,
            max_entries: entries,
            flags,
        };
        let elements = (!shape.preallocated()).then_some(0);
        MapMemory::new(name, shape, memlock, elements, 2)
    }

    /// The daemon's maps (PROC_STATS preallocated, one entry) or a trace
    /// session's (PROC_STATS of 8192, not preallocated, empty).
    fn report(trace: bool) -> MapMemoryReport {
        let proc_stats = if trace {
            map(
                "PROC_STATS",
                5,
                352,
                8192,
                BPF_F_NO_PREALLOC,
                832 + 16 * 8192 + 64,
            )
        } else {
            map("PROC_STATS", 5, 352, 1, 0, 832 + 16 + 64 + 64 + 352 * 2)
        };
        MapMemoryReport {
            possible_cpus: 2,
            maps: vec![
                map("GROUP_STATS", 6, 864, 128, 0, 312 + 128 * 8 + 128 * 864 * 2),
                proc_stats,
                map("PROC_EVENTS", 27, 0, 65536, 0, 78_408),
            ],
        }
    }

    #[test]
    fn the_check_line() {
        let r = report(false);
        let c = for_check(&r);
        assert!(
            c.detail.starts_with(&format!(
                "{} here (2 CPUs), {} at 96 CPUs, {} at 192 (pgpreempt run, default sizes); a trace session adds 792 B per traced process (33.1 KiB at 96 CPUs)",
                human(r.total()),
                human(r.total_at(96)),
                human(r.total_at(192))
            )),
            "{}",
            c.detail
        );
        assert_eq!(c.daemon.at[0].cpus, 96);
        assert_eq!(c.trace_bytes_per_process[1].bytes, 88 + 352 * 96);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["daemon"]["at"][1]["cpus"], 192);
        assert_eq!(v["daemon"]["maps"][1]["preallocated"], true);
        assert_eq!(v["daemon"]["maps"][1]["max_entries"], 1);
    }

    #[test]
    fn the_benchmark_tables() {
        let md = markdown(&report(false), &report(true));
        assert!(md.contains("| map | type | entries | per CPU | value B | here (2 CPUs) | at 96 CPUs | at 192 CPUs |"), "{md}");
        assert!(
            md.contains("| `GROUP_STATS` | percpu_array | 128 | yes | 864 | "),
            "{md}"
        );
        assert!(md.contains("| `PROC_EVENTS` | ringbuf | 64.0 KiB ring | no | 0 | 76.6 KiB | 76.6 KiB | 76.6 KiB |"), "{md}");
        assert!(
            md.contains("| `PROC_STATS` | percpu_hash | 8192 (allocated as filled) | yes | 352 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| each traced process adds (`PROC_STATS`) | | | | | 792 B | 33.1 KiB | 66.1 KiB |"
            ),
            "{md}"
        );
        // At 96 CPUs a full PROC_STATS is 8192 x (88 + 352 x 96) bytes more than empty.
        let r = report(true);
        let full96 = r.total_at(96) + 8192 * (88 + 352 * 96);
        assert_eq!(r.total_full_at(96), full96);
        assert!(
            md.contains(&format!(
                "| total with `PROC_STATS` full (8192 processes) | | | | | {} | {} |",
                human(r.total_full_at(2)),
                human(full96)
            )),
            "{md}"
        );
        // And what memlock does not show: 1 to 4 values per CPU, per CPU.
        assert!(md.contains("| not in `memlock`: the kernel allocator's per-CPU cache for `PROC_STATS` (model) | | | | | 2.1 KiB to 23.5 KiB | 3.1 MiB to 13.2 MiB |"), "{md}");
        // The daemon's PROC_STATS: one preallocated entry.
        assert!(
            md.contains(
                "| `PROC_STATS` | percpu_hash | 1 | yes | 352 | 1.6 KiB | 36.9 KiB | 72.9 KiB |"
            ),
            "{md}"
        );
    }
}
