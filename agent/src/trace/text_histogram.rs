//! Log2 histograms drawn in text, as bcc's tools print them: one line per
//! bucket from the first to the last non-empty one, with a bar scaled to
//! the largest bucket.
use crate::trace::report_json::HistogramJson;

/// Width of the widest bar, in characters.
pub const BAR_WIDTH: usize = 40;

/// The bucket ranges in microseconds, each `(low, high]`: bucket 0 is
/// `0 -> 1`, bucket i is `2^(i-1) -> 2^i`, the last `2^23 -> +Inf`.
fn range_us(h: &HistogramJson, i: usize) -> (String, String) {
    let us = |b: Option<f64>| match b {
        Some(s) => format!("{}", (s * 1e6).round() as u64),
        None => "+Inf".to_string(),
    };
    let low = if i == 0 {
        "0".to_string()
    } else {
        us(h.upper_bounds_seconds[i - 1])
    };
    (low, us(h.upper_bounds_seconds[i]))
}

/// Draws `h`. An empty histogram is one line saying so.
pub fn draw(h: &HistogramJson) -> String {
    let total = h.count();
    let mut out = format!("{}: {} observations", h.name, total);
    if total == 0 {
        out.push('\n');
        return out;
    }
    out.push_str(&format!(
        ", sum {:.6} s, mean {:.1} µs\n",
        h.sum_seconds,
        h.sum_seconds * 1e6 / total as f64
    ));
    let first = h.counts.iter().position(|&c| c > 0).unwrap_or(0);
    let last = h.counts.iter().rposition(|&c| c > 0).unwrap_or(0);
    let max = *h.counts.iter().max().unwrap_or(&1);
    out.push_str(&format!(
        "{:>21} : {:<9} distribution\n",
        "µs (low, high]", "count"
    ));
    for i in first..=last {
        let c = h.counts[i];
        let (lo, hi) = range_us(h, i);
        // Round up so that any non-empty bucket shows at least one star.
        let stars = ((c as u128 * BAR_WIDTH as u128).div_ceil(max as u128)) as usize;
        out.push_str(&format!(
            "{:>9} -> {:<8} : {:<9} |{:<width$}|\n",
            lo,
            hi,
            c,
            "*".repeat(stars),
            width = BAR_WIDTH
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{hist::HIST_BUCKETS, stats::Hist};

    fn hist(buckets: &[(usize, u64)], sum_ns: u64) -> HistogramJson {
        let mut h = Hist {
            buckets: [0; HIST_BUCKETS],
            sum_ns,
        };
        for &(i, c) in buckets {
            h.buckets[i] = c;
        }
        HistogramJson::from_hist("wakeup_latency_seconds", &h)
    }

    #[test]
    fn draws_the_non_empty_range_with_scaled_bars() {
        let h = hist(&[(2, 10), (3, 40), (5, 1)], 1_000_000);
        let text = draw(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "wakeup_latency_seconds: 51 observations, sum 0.001000 s, mean 19.6 µs"
        );
        assert!(lines[1].contains("count") && lines[1].contains("distribution"));
        // Buckets 2..=5: (2, 4], (4, 8], (8, 16], (16, 32] µs.
        assert_eq!(lines.len(), 2 + 4);
        assert_eq!(
            lines[2],
            format!(
                "{:>9} -> {:<8} : {:<9} |{:<40}|",
                "2",
                "4",
                10,
                "*".repeat(10)
            )
        );
        assert_eq!(
            lines[3],
            format!("{:>9} -> {:<8} : {:<9} |{}|", "4", "8", 40, "*".repeat(40))
        );
        assert!(lines[4].contains(" 8 -> 16 ") && lines[4].contains("|        "));
        assert!(lines[4].contains(&format!("|{}|", " ".repeat(40))));
        // One observation of 40 still shows one star.
        assert!(lines[5].contains("16 -> 32") && lines[5].contains("|*  "));
    }

    #[test]
    fn first_and_overflow_buckets_are_labelled() {
        let text = draw(&hist(&[(0, 1), (HIST_BUCKETS - 1, 2)], 10_000_000_000));
        assert!(text.contains("        0 -> 1        : 1 "), "{text}");
        assert!(text.contains("  8388608 -> +Inf     : 2 "), "{text}");
    }

    #[test]
    fn an_empty_histogram_says_so() {
        assert_eq!(
            draw(&hist(&[], 0)),
            "wakeup_latency_seconds: 0 observations\n"
        );
    }
}
