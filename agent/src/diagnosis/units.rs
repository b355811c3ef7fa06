//! Human units for the diagnosis and every text output that speaks in it:
//! shares as `31%`, time per second as `12.5 ms/s` (changes, as `+312%`
//! or `4.0x`, are `trace::text_table::ratio_change`). Never scientific
//! notation.

/// A share (0..1) as a percentage: `31%`, `3%`, `0.5%`, `<0.1%`, `0%`.
pub fn pct(share: f64) -> String {
    let p = 100.0 * share;
    if !p.is_finite() {
        "-".into()
    } else if p == 0.0 {
        "0%".into()
    } else if p.abs() < 0.1 {
        "<0.1%".into()
    } else if p.abs() < 0.95 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// Seconds per second: `1.25 s/s`, `590 ms/s`, `12.5 ms/s`, `40 µs/s`,
/// `<1 µs/s`, `0 s/s`.
pub fn per_sec_time(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        "0 s/s".into()
    } else if a >= 1.0 {
        format!("{v:.2} s/s")
    } else if a >= 0.1 {
        format!("{:.0} ms/s", v * 1e3)
    } else if a >= 0.001 {
        format!("{:.1} ms/s", v * 1e3)
    } else if a >= 1e-6 {
        format!("{:.0} µs/s", v * 1e6)
    } else {
        "<1 µs/s".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_scientific_notation_at_any_magnitude() {
        let mut v = 1e-12;
        while v < 1e12 {
            for s in [pct(v), per_sec_time(v)] {
                assert!(!s.contains("e-") && !s.contains("e+"), "{s}");
            }
            v *= 3.7;
        }
    }

    #[test]
    fn units() {
        assert_eq!(pct(0.31), "31%");
        assert_eq!(pct(0.026), "3%");
        assert_eq!(pct(0.005), "0.5%");
        assert_eq!(pct(0.0004), "<0.1%");
        assert_eq!(pct(0.0), "0%");
        assert_eq!(per_sec_time(0.59), "590 ms/s");
        assert_eq!(per_sec_time(0.0125), "12.5 ms/s");
        assert_eq!(per_sec_time(1.5), "1.50 s/s");
        assert_eq!(per_sec_time(4e-5), "40 µs/s");
        assert_eq!(per_sec_time(1e-9), "<1 µs/s");
    }
}
