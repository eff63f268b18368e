//! Result reporting: latency percentiles, number formatting and aligned tables that read
//! well as plain text and are valid Markdown.

use std::fmt;
use std::time::Duration;

/// Latency percentiles of a set of samples (nearest-rank method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Percentiles {
    /// Computes the percentiles of `samples` (sorted in place); `None` when empty.
    pub fn of(samples: &mut [Duration]) -> Option<Percentiles> {
        samples.sort_unstable();
        Some(Percentiles {
            p50: nearest_rank(samples, 0.5)?,
            p99: nearest_rank(samples, 0.99)?,
            p999: nearest_rank(samples, 0.999)?,
            max: *samples.last()?,
        })
    }
}

/// A latency histogram with buckets about 1.6% wide (log-linear over nanoseconds: exact
/// below 128 ns, then 64 buckets per power of two): millions of samples (the in-process
/// benchmarks make several per microsecond) summarized in a few KiB, without sorting.
/// Percentiles are read at the lower edge of their bucket.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: Duration,
}

/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 6;

impl Histogram {
    /// Records `n` samples of `latency`.
    pub fn record_n(&mut self, latency: Duration, n: u64) {
        let i = bucket(latency);
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
        self.total += n;
        self.max = self.max.max(latency);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The percentiles (nearest rank, at bucket precision); `None` when empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let at = |q: f64| {
            let rank = ((q * self.total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            self.counts.iter().enumerate().find_map(|(i, &c)| {
                seen += c;
                (seen >= rank).then(|| lower_edge(i).min(self.max))
            })
        };
        Some(Percentiles {
            p50: at(0.5)?,
            p99: at(0.99)?,
            p999: at(0.999)?,
            max: self.max,
        })
    }
}

/// The bucket of `latency`.
fn bucket(latency: Duration) -> usize {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    if ns < 2 << SUB_BITS {
        return ns as usize;
    }
    let shift = 63 - ns.leading_zeros() - SUB_BITS;
    ((shift as u64) << SUB_BITS) as usize + (ns >> shift) as usize
}

/// The smallest latency in bucket `i`.
fn lower_edge(i: usize) -> Duration {
    let i = i as u64;
    if i < 2 << SUB_BITS {
        return Duration::from_nanos(i);
    }
    let shift = (i >> SUB_BITS) - 1;
    let mantissa = i - (shift << SUB_BITS);
    Duration::from_nanos(mantissa << shift)
}

/// The smallest sample such that at least `q` of all samples are at or below it.
/// `sorted` must be sorted ascending.
fn nearest_rank(sorted: &[Duration], q: f64) -> Option<Duration> {
    // ceil(q * n) is within 1..=n for 0 < q <= 1 and n >= 1; the float round trip is exact
    // for any sample count that fits in memory.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// A latency for a table cell: `85 µs`, `1.25 ms`, `2.10 s`.
pub fn duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// A short duration in microseconds with about three significant digits, for costs per
/// operation: `0.85 µs`, `12.3 µs`, `1,250 µs`.
pub fn micros(d: Duration) -> String {
    format!("{} µs", decimal(d.as_secs_f64() * 1e6))
}

/// A rate or count with thousands separators and no decimals: `12,345`.
pub fn count(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < -0.5 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value with about three significant digits: `0.123`, `12.3`, `123`.
pub fn decimal(value: f64) -> String {
    if !value.is_finite() {
        "-".to_string()
    } else if value.abs() < 10.0 {
        format!("{value:.2}")
    } else if value.abs() < 100.0 {
        format!("{value:.1}")
    } else {
        count(value)
    }
}

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Numeric columns.
    Right,
}

/// A table printed with aligned columns; the output is also a valid Markdown table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column headers and alignment.
    columns: Vec<(String, Align)>,
    /// Cells, one `Vec` per row, as many as columns.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with the given columns and no rows.
    pub fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            columns: columns
                .iter()
                .map(|(name, align)| ((*name).to_string(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.columns.len(), String::new());
        self.rows.push(cells);
    }

    /// Width of each column in characters.
    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain(std::iter::once(name.chars().count()))
                    .max()
                    .unwrap_or(0)
                    // Markdown needs at least three dashes (plus a colon) in the separator.
                    .max(4)
            })
            .collect()
    }
}

/// Writes one cell padded to `width`.
fn cell(f: &mut fmt::Formatter<'_>, text: &str, width: usize, align: Align) -> fmt::Result {
    let pad = width.saturating_sub(text.chars().count());
    match align {
        Align::Left => write!(f, " {text}{} |", " ".repeat(pad)),
        Align::Right => write!(f, " {}{text} |", " ".repeat(pad)),
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        f.write_str("|")?;
        for ((name, align), w) in self.columns.iter().zip(&widths) {
            cell(f, name, *w, *align)?;
        }
        f.write_str("\n|")?;
        for ((_, align), w) in self.columns.iter().zip(&widths) {
            match align {
                Align::Left => write!(f, " {} |", "-".repeat(*w))?,
                Align::Right => write!(f, " {}: |", "-".repeat(w - 1))?,
            }
        }
        f.write_str("\n")?;
        for row in &self.rows {
            f.write_str("|")?;
            for ((text, (_, align)), w) in row.iter().zip(&self.columns).zip(&widths) {
                cell(f, text, *w, *align)?;
            }
            f.write_str("\n")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=1000).rev().map(us).collect();
        let p = Percentiles::of(&mut samples).unwrap();
        assert_eq!(p.p50, us(500));
        assert_eq!(p.p99, us(990));
        assert_eq!(p.p999, us(999));
        assert_eq!(p.max, us(1000));

        let p = Percentiles::of(&mut [us(7)]).unwrap();
        assert_eq!((p.p50, p.p999), (us(7), us(7)));
        assert!(Percentiles::of(&mut []).is_none());
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.4), "999");
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(decimal(1.234), "1.23");
        assert_eq!(decimal(12.34), "12.3");
        assert_eq!(decimal(12345.0), "12,345");
        assert_eq!(duration(us(85)), "85 µs");
        assert_eq!(duration(us(1250)), "1.25 ms");
        assert_eq!(duration(Duration::from_millis(2100)), "2.10 s");
        assert_eq!(micros(Duration::from_nanos(850)), "0.85 µs");
        assert_eq!(micros(Duration::from_nanos(12_340)), "12.3 µs");
    }

    #[test]
    fn table_is_aligned_markdown() {
        let mut t = Table::new(&[("scenario", Align::Left), ("p50", Align::Right)]);
        t.row(vec!["FileStorage".into(), duration(us(85))]);
        t.row(vec!["raw".into(), duration(us(1250))]);
        let text = t.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1], "| ----------- | ------: |");
        assert_eq!(lines[2], "| FileStorage |   85 µs |");
        assert_eq!(lines[3], "| raw         | 1.25 ms |");
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{text}");
    }

    #[test]
    fn histogram_buckets_are_contiguous_and_percentiles_within_two_percent() {
        // Every bucket's lower edge maps back to the bucket, and buckets follow each other.
        for i in 0..3000 {
            assert_eq!(bucket(lower_edge(i)), i, "bucket {i}");
        }
        let mut h = Histogram::default();
        let mut exact = Vec::new();
        for n in 1..=10_000u64 {
            let d = Duration::from_nanos(n * n * 37 % 5_000_000 + 100);
            h.record_n(d, 1);
            exact.push(d);
        }
        let (got, want) = (
            h.percentiles().unwrap(),
            Percentiles::of(&mut exact).unwrap(),
        );
        for (g, w) in [
            (got.p50, want.p50),
            (got.p99, want.p99),
            (got.p999, want.p999),
        ] {
            assert!(
                g <= w && w.as_secs_f64() <= g.as_secs_f64() * 1.02,
                "{g:?} vs {w:?}"
            );
        }
        assert_eq!(got.max, want.max);
        h.record_n(us(1), 5);
        assert_eq!(h.count(), 10_005);
        assert!(Histogram::default().percentiles().is_none());
    }
}
