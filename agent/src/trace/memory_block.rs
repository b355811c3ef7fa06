//! The "memory" block of the trace live view and report (README, "Memory
//! stalls"): page faults per second by region, faults and preemptions
//! while other processes of the cluster spin, `mmap_lock` waits, reclaim
//! and compaction stalls with their p99, NUMA migrations, and each
//! cluster's shared memory page size.
use crate::trace::{
    report_json::{Figures, Report},
    text_table::{count, per_second, percent, secs, Align, Table},
};

/// Rates over a session of `seconds`; `-` before a second has passed.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub seconds: f64,
}

impl Rate {
    /// Events per second: `1,234/s`.
    pub fn events(self, n: f64) -> String {
        if self.seconds < 1.0 {
            "-".into()
        } else {
            per_second(n / self.seconds)
        }
    }

    /// Time per second: `12.5ms/s`.
    pub fn time(self, s: f64) -> String {
        if self.seconds < 1.0 {
            "-".into()
        } else if s == 0.0 {
            "0/s".into()
        } else {
            format!("{}/s", secs(s / self.seconds))
        }
    }
}

/// `12,345/s (main shared 10,000/s, other shared 12/s, private 2,300/s,
/// file 33/s; on huge pages 0/s)`.
pub fn faults(f: &Figures, rate: Rate) -> String {
    format!(
        "{} (main shared {}, other shared {}, private {}, file {}; on huge pages {})",
        rate.events(f.page_faults() as f64),
        rate.events(f.page_faults_main_shared as f64),
        rate.events(f.page_faults_other_shared as f64),
        rate.events(f.page_faults_private as f64),
        rate.events(f.page_faults_file as f64),
        rate.events(f.huge_page_faults as f64),
    )
}

/// Faults and preemptions while others of the cluster spin, with their
/// share of all faults and all involuntary switches, and faults while
/// spinning.
pub fn while_others_spin(f: &Figures) -> String {
    format!(
        "{} faults ({} of all faults), {} preemptions ({} of involuntary switches, {} off CPU); {} faults while spinning",
        count(f.faults_while_others_spin),
        percent(f.faults_while_others_spin as f64, f.page_faults() as f64),
        count(f.preemptions_while_others_spin),
        percent(
            f.preemptions_while_others_spin as f64,
            f.involuntary_switches as f64
        ),
        secs(f.preempted_while_others_spin_seconds),
        count(f.faults_while_spinning),
    )
}

/// One kind of stall: `none`, or `116 (1.8ms, 225µs/s, p99 64µs)`.
pub fn stall(r: &Report, n: u64, seconds: f64, histogram: &str, rate: Rate) -> String {
    if n == 0 {
        return "none".into();
    }
    let p99 = r
        .histogram(histogram)
        .and_then(|h| h.quantile_bound(0.99))
        .map_or_else(|| "-".into(), secs);
    format!(
        "{} ({}, {}, p99 {})",
        count(n),
        secs(seconds),
        rate.time(seconds),
        p99
    )
}

/// The stall kinds: (heading, [(kind, count, seconds, histogram)]).
type StallKind<'a> = (&'a str, u64, f64, &'a str);

fn stall_kinds(f: &Figures) -> [(&'static str, Vec<StallKind<'static>>); 3] {
    [
        (
            "mmap_lock waits",
            vec![
                (
                    "read",
                    f.mmap_lock_read_waits,
                    f.mmap_lock_read_wait_seconds,
                    "mmap_lock_read_wait_seconds",
                ),
                (
                    "write",
                    f.mmap_lock_write_waits,
                    f.mmap_lock_write_wait_seconds,
                    "mmap_lock_write_wait_seconds",
                ),
            ],
        ),
        (
            "reclaim stalls",
            vec![
                (
                    "direct",
                    f.reclaim_direct_stalls,
                    f.reclaim_direct_stall_seconds,
                    "reclaim_direct_stall_seconds",
                ),
                (
                    "memcg",
                    f.reclaim_memcg_stalls,
                    f.reclaim_memcg_stall_seconds,
                    "reclaim_memcg_stall_seconds",
                ),
            ],
        ),
        (
            "compaction stalls",
            vec![(
                "",
                f.compaction_stalls,
                f.compaction_stall_seconds,
                "compaction_stall_seconds",
            )],
        ),
    ]
}

fn stall_text(r: &Report, kinds: &[StallKind], rate: Rate) -> String {
    kinds
        .iter()
        .map(|&(kind, n, s, h)| {
            let v = stall(r, n, s, h, rate);
            if kind.is_empty() {
                v
            } else {
                format!("{kind} {v}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Each cluster's main shared memory: `/data: 143 MB on 4 kB pages (huge
/// pages off)`.
pub fn shared_memory(r: &Report) -> Vec<String> {
    r.clusters
        .iter()
        .filter_map(|c| {
            let m = c.shared_memory.as_ref()?;
            Some(format!(
                "{}: {:.0} MB on {} kB pages (huge pages {})",
                c.cluster,
                m.size_bytes as f64 / (1 << 20) as f64,
                m.page_size_bytes / 1024,
                m.huge_pages
            ))
        })
        .collect()
}

/// The block of the text report, its lines indented like the totals.
pub fn report_lines(r: &Report) -> Vec<String> {
    let f = &r.totals;
    let rate = Rate {
        seconds: r.duration_seconds,
    };
    let mut out = Vec::new();
    let line = |out: &mut Vec<String>, head: &str, text: String| {
        out.push(format!("  {head:<21} {text}"));
    };
    for s in shared_memory(r) {
        line(&mut out, "shared memory", s);
    }
    if !f.has_memory() {
        out.push("  none: no page fault or memory stall was recorded (pgpreempt check lists the memory tracepoints this kernel has)".into());
        return out;
    }
    line(
        &mut out,
        "page faults",
        format!("{}: {}", count(f.page_faults()), faults(f, rate)),
    );
    line(&mut out, "while others spin", while_others_spin(f));
    for (head, kinds) in stall_kinds(f) {
        line(&mut out, head, stall_text(r, &kinds, rate));
    }
    line(
        &mut out,
        "NUMA",
        format!(
            "{} moves to another node, {} pages migrated",
            count(f.numa_migrations),
            count(f.pages_migrated)
        ),
    );

    let mut types: Vec<_> = r
        .backend_types
        .iter()
        .filter(|b| b.figures.has_memory())
        .collect();
    types.sort_by(|a, b| {
        b.figures
            .page_faults()
            .cmp(&a.figures.page_faults())
            .then(a.backend_type.cmp(&b.backend_type))
    });
    let mut t = Table::new(&[
        ("cluster", Align::Left),
        ("backend type", Align::Left),
        ("faults", Align::Right),
        ("main shared", Align::Right),
        ("while others spin", Align::Right),
        ("preempt while others spin", Align::Right),
        ("mmap_lock wait", Align::Right),
        ("reclaim", Align::Right),
        ("compaction", Align::Right),
    ]);
    for b in types {
        let f = &b.figures;
        t.row(vec![
            b.cluster.clone(),
            b.backend_type.clone(),
            rate.events(f.page_faults() as f64),
            rate.events(f.page_faults_main_shared as f64),
            count(f.faults_while_others_spin),
            count(f.preemptions_while_others_spin),
            secs(f.mmap_lock_read_wait_seconds + f.mmap_lock_write_wait_seconds),
            secs(f.reclaim_direct_stall_seconds + f.reclaim_memcg_stall_seconds),
            secs(f.compaction_stall_seconds),
        ]);
    }
    out.push(String::new());
    out.push("memory by backend type".into());
    out.extend(t.lines(usize::MAX));
    out
}

/// The block of the live view: faults, the overlap with spinning, stalls.
pub fn live_lines(r: &Report, elapsed_seconds: f64) -> Vec<String> {
    let f = &r.totals;
    let rate = Rate {
        seconds: elapsed_seconds,
    };
    if !f.has_memory() {
        return vec!["memory: no page fault or memory stall so far".into()];
    }
    let mut huge = shared_memory(r)
        .into_iter()
        .map(|s| format!("  [{s}]"))
        .collect::<String>();
    if r.clusters.len() > 1 {
        // One line is too short for several clusters: the report has them.
        huge.clear();
    }
    let stalls = stall_kinds(f)
        .iter()
        .map(|(head, kinds)| {
            format!(
                "{} {}",
                head.split(' ').next().unwrap_or(head),
                stall_text(r, kinds, rate)
            )
        })
        .collect::<Vec<_>>()
        .join(" | ");
    vec![
        format!("memory: faults {}{huge}", faults(f, rate)),
        format!("        while others spin: {}", while_others_spin(f)),
        format!("        stalls: {stalls}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::report_json::{tests::sample, HistogramJson};
    use agent_common::{hist::HIST_BUCKETS, stats::Hist};

    fn memory_report() -> Report {
        let mut r = sample(10.0, 1.0);
        let f = Figures {
            involuntary_switches: 4000,
            page_faults_main_shared: 120_000,
            page_faults_other_shared: 30,
            page_faults_private: 4_000,
            page_faults_file: 5,
            faults_while_others_spin: 3_100,
            faults_while_spinning: 3,
            preemptions_while_others_spin: 12,
            preempted_while_others_spin_seconds: 0.0012,
            mmap_lock_read_waits: 90_000,
            mmap_lock_read_wait_seconds: 0.045,
            mmap_lock_write_waits: 20,
            mmap_lock_write_wait_seconds: 0.000_16,
            reclaim_memcg_stalls: 116,
            reclaim_memcg_stall_seconds: 0.0018,
            ..Figures::default()
        };
        r.totals = f;
        r.backend_types[0].figures = f;
        let hist = |bucket: usize, n: u64| {
            let mut h = Hist {
                buckets: [0; HIST_BUCKETS],
                sum_ns: 0,
            };
            h.buckets[bucket] = n;
            h
        };
        r.histograms = vec![
            HistogramJson::from_hist("mmap_lock_read_wait_seconds", &hist(0, 90_000)),
            HistogramJson::from_hist("mmap_lock_write_wait_seconds", &hist(3, 20)),
            HistogramJson::from_hist("reclaim_memcg_stall_seconds", &hist(6, 116)),
        ];
        r
    }

    #[test]
    fn the_report_block_reads_in_human_units() {
        let text = report_lines(&memory_report()).join("\n");
        for want in [
            "  shared memory         /data: 143 MB on 4 kB pages (huge pages off)",
            "  page faults           124,035: 12,404/s (main shared 12,000/s, other shared 3.00/s, private 400/s, file 0.50/s; on huge pages 0/s)",
            "  while others spin     3,100 faults (2.5% of all faults), 12 preemptions (0.3% of involuntary switches, 1.2ms off CPU); 3 faults while spinning",
            "  mmap_lock waits       read 90,000 (45.0ms, 4.5ms/s, p99 1µs); write 20 (160µs, 16µs/s, p99 8µs)",
            "  reclaim stalls        direct none; memcg 116 (1.8ms, 180µs/s, p99 64µs)",
            "  compaction stalls     none",
            "  NUMA                  0 moves to another node, 0 pages migrated",
            "memory by backend type",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("e-"), "scientific notation in\n{text}");
        let table = text.split("memory by backend type\n").nth(1).unwrap();
        assert!(
            table.lines().nth(1).unwrap().contains("12,404/s"),
            "{table}"
        );
    }

    #[test]
    fn nothing_to_show_says_so_in_one_line() {
        let mut r = sample(10.0, 1.0);
        r.totals = Figures::default();
        r.clusters[0].shared_memory = None;
        let lines = report_lines(&r);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("  none: no page fault"), "{lines:?}");
        assert_eq!(
            live_lines(&r, 5.0),
            vec!["memory: no page fault or memory stall so far".to_string()]
        );
    }

    #[test]
    fn the_live_block_has_rates_after_a_second() {
        let r = memory_report();
        let lines = live_lines(&r, 10.0);
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("memory: faults 12,404/s (main shared 12,000/s")
                && lines[0].ends_with("[/data: 143 MB on 4 kB pages (huge pages off)]"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("3,100 faults (2.5% of all faults)"));
        assert_eq!(
            lines[2],
            "        stalls: mmap_lock read 90,000 (45.0ms, 4.5ms/s, p99 1µs); write 20 (160µs, 16µs/s, p99 8µs) | reclaim direct none; memcg 116 (1.8ms, 180µs/s, p99 64µs) | compaction none"
        );
        let early = live_lines(&r, 0.5);
        assert!(
            early[0].starts_with("memory: faults - (main shared -"),
            "{}",
            early[0]
        );
    }
}
