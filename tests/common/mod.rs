//! Test support: writing `.npy` files and exact reference statistics.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built `colstats` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_colstats"))
}

/// Runs `cmd`, asserting success (the message names `what` and carries colstats' stderr), and
/// returns its standard output.
pub fn stdout_of(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Writes a version-1.0 `.npy` file with the given descr, order, shape and raw data bytes.
pub fn write_npy(path: &Path, descr: &str, fortran: bool, shape: &[u64], data: &[u8]) {
    let shape_s = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_s}, }}",
        if fortran { "True" } else { "False" }
    );
    let unpadded = 10 + dict.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let mut h = dict.into_bytes();
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    std::fs::write(path, out).unwrap();
}

/// A small deterministic PRNG (splitmix64), so tests need no extra crates for data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in `lo..hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

/// A float64 array whose values are all `offset + m / 2^scale_bits` with integer `m`, so
/// exact sums and variances can be computed in integer arithmetic.
pub struct Dyadic {
    pub rows: usize,
    pub cols: usize,
    /// m values, row-major.
    pub m: Vec<i64>,
    pub scale_bits: u32,
    /// Integer offset added to every value (exactly representable).
    pub offset: i64,
    /// Row-major NaN mask.
    pub nan: Vec<bool>,
}

impl Dyadic {
    pub fn value(&self, r: usize, c: usize) -> f64 {
        let i = r * self.cols + c;
        if self.nan[i] {
            f64::NAN
        } else {
            self.offset as f64 + self.m[i] as f64 / (1u64 << self.scale_bits) as f64
        }
    }

    /// Writes the values as a `<f8` (rows, cols) `.npy` file in C or Fortran order.
    pub fn write_npy(&self, path: &Path, fortran: bool) {
        let shape = [self.rows as u64, self.cols as u64];
        write_npy(path, "<f8", fortran, &shape, &self.bytes(fortran));
    }

    /// Raw little-endian f64 bytes in C or F order.
    pub fn bytes(&self, fortran: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.cols * 8);
        if fortran {
            for c in 0..self.cols {
                for r in 0..self.rows {
                    out.extend_from_slice(&self.value(r, c).to_le_bytes());
                }
            }
        } else {
            for r in 0..self.rows {
                for c in 0..self.cols {
                    out.extend_from_slice(&self.value(r, c).to_le_bytes());
                }
            }
        }
        out
    }

    /// Exact (count, sum, mean, population variance) of column `c` over `rows`, rounded once.
    pub fn exact(&self, c: usize, rows: std::ops::Range<usize>) -> (u64, f64, f64, f64) {
        let (mut n, mut s1, mut s2) = (0i128, 0i128, 0i128);
        for r in rows {
            let i = r * self.cols + c;
            if !self.nan[i] {
                let m = self.m[i] as i128;
                n += 1;
                s1 += m;
                s2 += m * m;
            }
        }
        let scale = (1u64 << self.scale_bits) as f64;
        if n == 0 {
            return (0, 0.0, f64::NAN, f64::NAN);
        }
        // sum = n*offset + s1/scale: exact as a rational; rounding via f64 of an exact i128
        // numerator over a power of two is exact division, one rounding.
        let num = n * self.offset as i128 * (1i128 << self.scale_bits) + s1;
        let sum = num as f64 / scale;
        let mean = num as f64 / (n as f64 * scale);
        // n^2 * scale^2 * var. The products may pass i128 for large offsets, but the result
        // fits, and wrapping arithmetic is exact modulo 2^128.
        let var_num = n.wrapping_mul(s2).wrapping_sub(s1.wrapping_mul(s1));
        let var = var_num as f64 / (n as f64 * n as f64 * scale * scale);
        (n as u64, sum, mean, var)
    }
}

/// A random dyadic array with the given NaN fraction (per mille).
pub fn dyadic(rows: usize, cols: usize, offset: i64, nan_permille: u64, seed: u64) -> Dyadic {
    let mut rng = Rng(seed);
    let n = rows * cols;
    let m = (0..n).map(|_| rng.range(-(1 << 30), 1 << 30)).collect();
    let nan = (0..n).map(|_| rng.next() % 1000 < nan_permille).collect();
    Dyadic {
        rows,
        cols,
        m,
        scale_bits: 20,
        offset,
        nan,
    }
}

/// Runs `colstats stats --format json PATH EXTRA...`, asserting success, and parses the output.
pub fn stats_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    let out = stdout_of(
        bin()
            .args(["stats", "--format", "json"])
            .arg(path)
            .args(extra),
        &format!("{} {extra:?}", path.display()),
    );
    json(&out)
}

/// How the stats of two JSON outputs differ: each of `exact` must be equal, each
/// `(stat, tol)` equal to `tol` relative (NaN matches NaN). Empty when they agree.
pub fn stats_mismatches(
    a: &serde_json::Value,
    b: &serde_json::Value,
    exact: &[&str],
    approx: &[(&str, f64)],
    what: &str,
) -> Vec<String> {
    let (sa, sb) = (&a["stats"], &b["stats"]);
    let mut bad = Vec::new();
    for stat in exact {
        if sa[stat] != sb[stat] {
            bad.push(format!("{what}: {stat} {} vs {}", sa[stat], sb[stat]));
        }
    }
    for &(stat, tol) in approx {
        let (xs, ys) = (sa[stat].as_array().unwrap(), sb[stat].as_array().unwrap());
        for (x, y) in xs.iter().zip(ys) {
            let (x, y) = (num(x), num(y));
            if !((x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= tol * y.abs()) {
                bad.push(format!("{what}: {stat} {x} vs {y}"));
            }
        }
    }
    bad
}

/// Parses `colstats --format json` output.
pub fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

/// A JSON stats entry as f64 (strings "nan", "inf", "-inf" included).
pub fn num(v: &serde_json::Value) -> f64 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap(),
        serde_json::Value::Number(n) => n.as_f64().unwrap(),
        other => panic!("not a number: {other}"),
    }
}

pub fn tmpdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
