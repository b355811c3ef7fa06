//! Plain-text tables and number formats shared by the trace view, the
//! trace report, `diff` and `check`.

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table with a header row; columns are two spaces apart, widths fit the
/// widest cell. Character counts, not bytes, so `µs` lines up.
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|c| c.0.to_string()).collect(),
            align: columns.iter().map(|c| c.1).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The lines, each at most `max_width` characters (cut at the end).
    pub fn lines(&self, max_width: usize) -> Vec<String> {
        let n = self.headers.len();
        let mut w = vec![0usize; n];
        for r in std::iter::once(&self.headers).chain(self.rows.iter()) {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let fmt = |r: &Vec<String>| {
            let mut s = String::new();
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                let pad = w[i] - c.chars().count();
                let last = i + 1 == n;
                match self.align[i] {
                    Align::Right => {
                        s.push_str(&" ".repeat(pad));
                        s.push_str(c);
                    }
                    Align::Left => {
                        s.push_str(c);
                        if !last {
                            s.push_str(&" ".repeat(pad));
                        }
                    }
                }
            }
            cut(s.trim_end(), max_width)
        };
        std::iter::once(&self.headers)
            .chain(self.rows.iter())
            .map(fmt)
            .collect()
    }

    pub fn render(&self) -> String {
        let mut s = self.lines(usize::MAX).join("\n");
        s.push('\n');
        s
    }
}

/// The first `max` characters of `s`.
pub fn cut(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A duration in seconds, in the unit that reads best: `812ns`, `56µs`,
/// `12.3ms`, `4.56s`.
pub fn secs(s: f64) -> String {
    if s.is_infinite() {
        return ">8.4s".into();
    }
    let a = s.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 5e-10 {
        "<1ns".into()
    } else if a < 1e-6 {
        format!("{:.0}ns", s * 1e9)
    } else if a < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if a < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// A rate or count with at most three significant decimals.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        // Two significant digits, never scientific notation.
        let decimals = ((-a.log10()).ceil() as usize + 1).min(12);
        format!("{v:.decimals$}")
    }
}

/// A number in fixed notation with thousands separators: `1,234`, `12.3`,
/// `0.25`, `0.00033`.
pub fn plain(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        let n = count(a.round() as u64);
        if v < 0.0 {
            format!("-{n}")
        } else {
            n
        }
    } else {
        num(v)
    }
}

/// A ratio after/before as a change: `+35%`, `-40%`, `0%`, `4.0x` (2x and
/// more), `1,234x`, `-100%` (to zero); never scientific notation.
pub fn ratio_change(r: f64) -> String {
    if !r.is_finite() {
        return "-".into();
    }
    if r >= 10.0 {
        format!("{}x", count(r.round() as u64))
    } else if r >= 2.0 {
        format!("{r:.1}x")
    } else {
        let p = (r - 1.0) * 100.0;
        if p.abs() < 0.5 {
            "0%".into()
        } else if p > -99.5 {
            format!("{p:+.0}%")
        } else if r == 0.0 {
            "-100%".into()
        } else if r >= 0.001 {
            format!("{p:+.1}%")
        } else {
            "<-99.9%".into()
        }
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Events per second, never in scientific notation: `1,234/s`, `12.5/s`,
/// `0.25/s`, `<0.01/s`, `0/s`.
pub fn per_second(v: f64) -> String {
    let a = v.abs();
    let n = if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        count(v.round() as u64)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        "<0.01".into()
    };
    format!("{n}/s")
}

/// `part` as a share of `whole`: `2.1%`, `<0.1%`, or `-` when `whole` is 0.
pub fn percent(part: f64, whole: f64) -> String {
    if whole <= 0.0 {
        return "-".into();
    }
    let p = 100.0 * part / whole;
    if p > 0.0 && p < 0.1 {
        "<0.1%".into()
    } else {
        format!("{p:.1}%")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&[("name", Align::Left), ("µs", Align::Right)]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["longer".into(), "1234".into()]);
        assert_eq!(t.render(), "name      µs\na          1\nlonger  1234\n");
        assert_eq!(t.lines(6)[2], "longer");
    }

    #[test]
    fn units() {
        assert_eq!(secs(0.0), "0");
        assert_eq!(secs(5e-7), "500ns");
        assert_eq!(secs(5.6e-5), "56µs");
        assert_eq!(secs(0.0123), "12.3ms");
        assert_eq!(secs(4.561), "4.56s");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(0.5), "0.50");
        assert_eq!(num(0.001), "0.0010");
        assert_eq!(num(0.000_928), "0.00093");
        assert_eq!(num(-0.005), "-0.0050");
        assert_eq!(secs(1e-11), "<1ns");
        assert_eq!(plain(1234.4), "1,234");
        assert_eq!(plain(-2262.0), "-2,262");
        assert_eq!(plain(0.25), "0.25");
        assert_eq!(ratio_change(4.12), "4.1x");
        assert_eq!(ratio_change(2.0), "2.0x");
        assert_eq!(ratio_change(1234.0), "1,234x");
        assert_eq!(ratio_change(1.35), "+35%");
        assert_eq!(ratio_change(1.0), "0%");
        assert_eq!(ratio_change(0.6), "-40%");
        assert_eq!(ratio_change(0.0), "-100%");
        assert_eq!(ratio_change(0.004), "-99.6%");
        assert_eq!(ratio_change(9.28e-4), "<-99.9%");
        assert_eq!(ratio_change(f64::INFINITY), "-");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(262_144_000), "262,144,000");
        assert_eq!(per_second(0.0), "0/s");
        assert_eq!(per_second(1234.4), "1,234/s");
        assert_eq!(per_second(12.46), "12.5/s");
        assert_eq!(per_second(0.25), "0.25/s");
        assert_eq!(per_second(0.001), "<0.01/s");
        assert_eq!(percent(21.0, 1000.0), "2.1%");
        assert_eq!(percent(0.0, 1000.0), "0.0%");
        assert_eq!(percent(1.0, 10_000.0), "<0.1%");
        assert_eq!(percent(1.0, 0.0), "-");
    }
}
