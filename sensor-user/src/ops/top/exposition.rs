//! The Prometheus text exposition format, read back: the samples of one
//! scrape of `--metrics-addr`.
//!
//! A small parser rather than a crate: `sensor top` needs only the sample
//! lines (name, labels, value) of the format our own endpoint writes, and a
//! malformed line must be counted and skipped, never stop the view.

use std::fmt;

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if the sample has it.
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a line is not a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    pub reason: &'static str,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// The samples of one exposition, and the lines that were not samples.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Malformed lines: counted and skipped.
    pub malformed: usize,
    /// The first malformed line, for the view's status line.
    pub first_error: Option<LineError>,
}

impl Exposition {
    /// Parses `text`; comments (`# HELP`, `# TYPE`, `# EOF`) and blank lines
    /// are skipped.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match parse_line(line) {
                Ok(s) => out.samples.push(s),
                Err(reason) => {
                    out.malformed += 1;
                    out.first_error.get_or_insert(LineError {
                        line: i + 1,
                        reason,
                    });
                }
            }
        }
        out
    }

    /// Every sample named `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of the samples named `name` (`None` when there is none).
    #[must_use]
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.all(name).map(|s| s.value).reduce(|a, b| a + b)
    }

    /// The sample named `name` whose label `key` is `value`.
    #[must_use]
    pub fn with_label(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.all(name)
            .find(|s| s.label(key) == Some(value))
            .map(|s| s.value)
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| !is_name_char(c)).unwrap_or(line.len());
    let name = &line[..name_end];
    if !name.starts_with(is_name_start) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value).ok_or("the value is not a number")?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "the timestamp is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("text after the timestamp");
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// Parses `key="value",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let key_end = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
        let key = &s[..key_end];
        if !key.starts_with(is_name_start) {
            return Err("a label has no name");
        }
        s = s[key_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or("a label has no '='")?
            .trim_start();
        s = s.strip_prefix('"').ok_or("a label value is not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("a label value is not closed"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("a label value has a bad escape"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("labels are not separated by ','");
        }
    }
}

/// A sample value: a float, or `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+' || c == '.') => {
            s.parse().ok()
        }
        _ => None,
    }
}

/// The cumulative buckets `(le, count)` of histogram `name` (samples
/// `name_bucket`) whose other labels match `filter`, summed over the
/// matching series and sorted by bound.
#[must_use]
pub fn buckets(exp: &Exposition, name: &str, filter: impl Fn(&Sample) -> bool) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for s in exp.all(&bucket).filter(|s| filter(s)) {
        let Some(le) = s.label("le").and_then(parse_value) else {
            continue;
        };
        match out.iter_mut().find(|(b, _)| b.total_cmp(&le).is_eq()) {
            Some((_, n)) => *n += s.value,
            None => out.push((le, s.value)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The upper bound of the bucket holding quantile `q` of cumulative
/// `buckets` (`None` when they count nothing): a bound, not an estimate
/// between bounds, so the view never shows more precision than it has.
#[must_use]
pub fn quantile_bound(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    buckets.iter().find(|(_, n)| *n >= rank).map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_escapes_comments_and_timestamps() {
        let text = "# HELP xdp_sensor_x A \"help\".\n\
                    # TYPE xdp_sensor_x counter\n\
                    xdp_sensor_x_total 42\n\
                    \n\
                    xdp_sensor_y{worker=\"0\",path=\"a\\\\b \\\"q\\\"\\nz\"} 1.5e3 1700000000000\n\
                    xdp_sensor_z{ a = \"1\" , } -Inf\n\
                    xdp_sensor_n NaN\n\
                    # EOF\n";
        let e = Exposition::parse(text);
        assert_eq!(e.malformed, 0, "{:?}", e.first_error);
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.sum("xdp_sensor_x_total"), Some(42.0));
        let y = &e.samples[1];
        assert_eq!(y.label("worker"), Some("0"));
        assert_eq!(y.label("path"), Some("a\\b \"q\"\nz"));
        assert!((y.value - 1500.0).abs() < f64::EPSILON);
        assert_eq!(e.samples[2].label("a"), Some("1"));
        assert_eq!(e.samples[2].value, f64::NEG_INFINITY);
        assert!(e.samples[3].value.is_nan());
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let text = "good 1\n\
                    bad{x=\"1\" 2\n\
                    9bad 1\n\
                    nolabelvalue{x=1} 1\n\
                    novalue\n\
                    notnumber abc\n\
                    badescape{x=\"\\t\"} 1\n\
                    extra 1 2 3\n\
                    unclosed{x=\"1} 1\n\
                    also_good{w=\"1\"} 2\n";
        let e = Exposition::parse(text);
        assert_eq!(e.samples.len(), 2, "{:?}", e.samples);
        assert_eq!(e.malformed, 8);
        assert_eq!(e.first_error.as_ref().map(|l| l.line), Some(2));
        assert_eq!(e.with_label("also_good", "w", "1"), Some(2.0));
    }

    #[test]
    fn histogram_buckets_sum_over_series_and_give_quantile_bounds() {
        let text = "h_seconds_bucket{worker=\"0\",le=\"0.001\"} 90\n\
                    h_seconds_bucket{worker=\"0\",le=\"0.01\"} 99\n\
                    h_seconds_bucket{worker=\"0\",le=\"+Inf\"} 100\n\
                    h_seconds_bucket{worker=\"1\",le=\"0.001\"} 0\n\
                    h_seconds_bucket{worker=\"1\",le=\"0.01\"} 0\n\
                    h_seconds_bucket{worker=\"1\",le=\"+Inf\"} 100\n\
                    h_seconds_sum{worker=\"0\"} 0.1\n\
                    h_seconds_count{worker=\"0\"} 100\n";
        let e = Exposition::parse(text);
        let w0 = buckets(&e, "h_seconds", |s| s.label("worker") == Some("0"));
        assert_eq!(
            w0,
            vec![(0.001, 90.0), (0.01, 99.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(quantile_bound(&w0, 0.5), Some(0.001));
        assert_eq!(quantile_bound(&w0, 0.99), Some(0.01));
        assert_eq!(quantile_bound(&w0, 0.999), Some(f64::INFINITY));
        let all = buckets(&e, "h_seconds", |_| true);
        assert_eq!(
            all,
            vec![(0.001, 90.0), (0.01, 99.0), (f64::INFINITY, 200.0)]
        );
        assert_eq!(quantile_bound(&all, 0.5), Some(f64::INFINITY));
        assert_eq!(quantile_bound(&[], 0.5), None);
        assert_eq!(quantile_bound(&[(1.0, 0.0)], 0.5), None);
    }
}
