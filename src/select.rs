//! Column and row selections: `0:10,42,100:`-style specs resolved against an array.

use std::fmt;
use std::str::FromStr;

/// One item of a selection: an index or a Python-style slice (negative values count from
/// the end).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
}

/// A column selection such as `0:10,42,100:` or `-3:` or `::2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnSpec {
    items: Vec<Item>,
    text: String,
}

/// A selection that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

fn parse_int(s: &str, what: &str) -> Result<Option<i64>, SpecError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<i64>()
        .map(Some)
        .map_err(|_| SpecError(format!("'{s}' is not an integer in {what}")))
}

fn parse_item(s: &str, what: &str) -> Result<Item, SpecError> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.len() {
        1 => parse_int(parts[0], what)?
            .map(Item::Index)
            .ok_or_else(|| SpecError(format!("empty item in {what}"))),
        2 | 3 => {
            let step = if parts.len() == 3 {
                parse_int(parts[2], what)?
            } else {
                None
            };
            if step == Some(0) {
                return Err(SpecError(format!("slice step cannot be zero in {what}")));
            }
            Ok(Item::Slice(
                parse_int(parts[0], what)?,
                parse_int(parts[1], what)?,
                step,
            ))
        }
        _ => Err(SpecError(format!("'{s}' has too many ':' in {what}"))),
    }
}

impl FromStr for ColumnSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let items = s
            .split(',')
            .map(|it| parse_item(it, "--columns"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ColumnSpec {
            items,
            text: s.to_string(),
        })
    }
}

/// Python's slice index clamping.
fn clamp(v: Option<i64>, n: i64, default: i64, lo: i64, hi: i64) -> i64 {
    match v {
        None => default,
        Some(x) if x < 0 => (x + n).max(lo),
        Some(x) => x.min(hi),
    }
}

/// A slice's first index, step and length over `n` items, by Python's rules.
fn slice_bounds(a: Option<i64>, b: Option<i64>, step: Option<i64>, n: i64) -> (i64, i64, u64) {
    let step = step.unwrap_or(1);
    let (from, to) = if step > 0 {
        (clamp(a, n, 0, 0, n), clamp(b, n, n, 0, n))
    } else {
        (clamp(a, n, n - 1, -1, n - 1), clamp(b, n, -1, -1, n - 1))
    };
    let span = if step > 0 { to - from } else { from - to };
    let len = if span > 0 {
        (span as u64 - 1) / step.unsigned_abs() + 1
    } else {
        0
    };
    (from, step, len)
}

fn slice_indices(a: Option<i64>, b: Option<i64>, step: Option<i64>, n: i64) -> Vec<u64> {
    let (from, step, len) = slice_bounds(a, b, step, n);
    // In i128: every index is in 0..n, but a huge step must not overflow on the way.
    (0..len)
        .map(|j| (from as i128 + j as i128 * step as i128) as u64)
        .collect()
}

impl ColumnSpec {
    /// How many columns [`ColumnSpec::resolve`] selects for an array of `n` columns (an
    /// index out of range counts as one).
    pub fn count(&self, n: u64) -> u64 {
        let ni = n as i64;
        self.items
            .iter()
            .map(|it| match *it {
                Item::Index(_) => 1,
                Item::Slice(a, b, st) => slice_bounds(a, b, st, ni).2,
            })
            .fold(0, u64::saturating_add)
    }

    /// The selected column indices, in the order given, for an array of `n` columns.
    pub fn resolve(&self, n: u64) -> Result<Vec<u64>, String> {
        let ni = n as i64;
        let mut out = Vec::new();
        for it in &self.items {
            match *it {
                Item::Index(i) => {
                    let j = if i < 0 { i + ni } else { i };
                    if j < 0 || j >= ni {
                        return Err(format!(
                            "column {i} is out of range: the array has {n} column{}",
                            if n == 1 { "" } else { "s" }
                        ));
                    }
                    out.push(j as u64);
                }
                Item::Slice(a, b, st) => out.extend(slice_indices(a, b, st, ni)),
            }
        }
        Ok(out)
    }

    /// The spec as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A half-open row range `A:B` (either end optional, negative counts from the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowSpec {
    start: Option<i64>,
    end: Option<i64>,
}

impl FromStr for RowSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        match parse_item(s, "--rows")? {
            Item::Slice(a, b, None) => Ok(RowSpec { start: a, end: b }),
            Item::Slice(_, _, Some(_)) => Err(SpecError("--rows takes A:B, without a step".into())),
            Item::Index(_) => Err(SpecError("--rows takes a range A:B".into())),
        }
    }
}

impl RowSpec {
    /// A range from `start` to `end` (either may be `None` for "from the start"/"to the end").
    pub fn new(start: Option<i64>, end: Option<i64>) -> RowSpec {
        RowSpec { start, end }
    }

    /// The row range for an array of `n` rows, clamped like a Python slice.
    pub fn resolve(&self, n: u64) -> std::ops::Range<u64> {
        let ni = n as i64;
        let a = clamp(self.start, ni, 0, 0, ni);
        let b = clamp(self.end, ni, ni, 0, ni).max(a);
        a as u64..b as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_like_python() {
        let r = |s: &str, n| s.parse::<ColumnSpec>().unwrap().resolve(n);
        assert_eq!(r("0:3,7", 10).unwrap(), vec![0, 1, 2, 7]);
        assert_eq!(r("8:", 10).unwrap(), vec![8, 9]);
        assert_eq!(r("-2:", 10).unwrap(), vec![8, 9]);
        assert_eq!(r("::4", 10).unwrap(), vec![0, 4, 8]);
        assert_eq!(r("::-4", 10).unwrap(), vec![9, 5, 1]);
        assert_eq!(r("-1", 10).unwrap(), vec![9]);
        assert_eq!(r("5:100", 7).unwrap(), vec![5, 6]);
        assert!(r("10", 10).is_err());
        assert!(r("-11", 10).is_err());
        assert!("1:2:0".parse::<ColumnSpec>().is_err());
        assert!("a".parse::<ColumnSpec>().is_err());
        assert!("1,,2".parse::<ColumnSpec>().is_err());
        assert_eq!(r("1::9223372036854775807", 10).unwrap(), vec![1]);
        assert_eq!(r("::-9223372036854775808", 10).unwrap(), vec![9]);
        let huge: ColumnSpec = ":,:,:,:".parse().unwrap();
        assert_eq!(huge.count(1 << 62), u64::MAX, "saturates");
        for spec in [
            "0:3,7", "8:", "-2:", "::4", "::-4", "5:100", "3:1:-1", "-1:-9:-3", ":", "2",
        ] {
            let c: ColumnSpec = spec.parse().unwrap();
            for n in 0..15 {
                if let Ok(v) = c.resolve(n) {
                    assert_eq!(c.count(n), v.len() as u64, "{spec} of {n}");
                }
            }
        }
    }

    #[test]
    fn rows_like_python() {
        let r = |s: &str, n| s.parse::<RowSpec>().unwrap().resolve(n);
        assert_eq!(r("2:5", 10), 2..5);
        assert_eq!(r(":", 10), 0..10);
        assert_eq!(r("-3:", 10), 7..10);
        assert_eq!(r("5:2", 10), 5..5);
        assert_eq!(r("0:100", 10), 0..10);
        assert!("5".parse::<RowSpec>().is_err());
    }
}
