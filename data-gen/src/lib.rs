//! Writes `.npy` and HDF5 arrays of any size — far larger than memory — streaming in
//! bounded memory and generating in parallel.
//!
//! Every element is a pure function of (seed, row-major element index): a counter-based
//! generator (splitmix64 as a hash) rather than a stream RNG, so output is identical for any
//! thread count and memory order, and any piece can be generated on its own.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rayon::prelude::*;

#[cfg(feature = "hdf5")]
pub mod h5;

/// A value distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Dist {
    /// Normal(mean, std).
    Normal(f64, f64),
    /// Uniform on [lo, hi).
    Uniform(f64, f64),
    /// Integers uniform on [lo, hi).
    Int(i64, i64),
    /// One value.
    Const(f64),
    /// The row index.
    Seq,
}

impl std::str::FromStr for Dist {
    type Err = String;
    fn from_str(s: &str) -> Result<Dist, String> {
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        let nums: Vec<f64> = if args.is_empty() {
            vec![]
        } else {
            args.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("bad number '{x}' in --dist"))
                })
                .collect::<Result<_, _>>()?
        };
        match (name, nums.as_slice()) {
            ("normal", [m, s]) => Ok(Dist::Normal(*m, *s)),
            ("uniform", [a, b]) if a < b => Ok(Dist::Uniform(*a, *b)),
            ("int", [a, b]) if a < b => Ok(Dist::Int(*a as i64, *b as i64)),
            ("const", [v]) => Ok(Dist::Const(*v)),
            ("seq", []) => Ok(Dist::Seq),
            _ => Err(format!(
                "unknown --dist '{s}' (normal:MEAN,STD | uniform:LO,HI | int:LO,HI | const:V | seq)"
            )),
        }
    }
}

/// Element type: numpy type code, width and byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DType {
    /// 'f', 'i', 'u' or 'b'.
    pub kind: char,
    /// Bytes per element.
    pub size: usize,
    /// Big-endian.
    pub big: bool,
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(d: &str) -> Result<DType, String> {
        let (big, code) = match d.as_bytes().first() {
            Some(b'<') | Some(b'|') | Some(b'=') => (false, &d[1..]),
            Some(b'>') => (true, &d[1..]),
            _ => (false, d),
        };
        let code = match code {
            "float64" | "double" => "f8",
            "float32" => "f4",
            "float16" => "f2",
            "int64" => "i8",
            "int32" => "i4",
            "int16" => "i2",
            "int8" => "i1",
            "uint64" => "u8",
            "uint32" => "u4",
            "uint16" => "u2",
            "uint8" => "u1",
            "bool" => "b1",
            c => c,
        };
        let ok = matches!(
            code,
            "f8" | "f4" | "f2" | "i8" | "i4" | "i2" | "i1" | "u8" | "u4" | "u2" | "u1" | "b1"
        );
        if !ok {
            return Err(format!("unsupported --dtype '{d}'"));
        }
        let kind = code.chars().next().expect("non-empty");
        let size: usize = code[1..].parse().expect("digit");
        Ok(DType {
            kind,
            size,
            big: big && size > 1,
        })
    }
}

impl DType {
    /// numpy's type string, e.g. `<f8`.
    pub fn descr(&self) -> String {
        if self.size == 1 {
            format!("|{}1", self.kind)
        } else {
            format!("{}{}{}", if self.big { '>' } else { '<' }, self.kind, self.size)
        }
    }

    /// Appends `v` converted to this type (saturating for integers).
    #[inline]
    pub fn encode(&self, v: f64, out: &mut Vec<u8>) {
        macro_rules! put {
            ($x:expr) => {{
                let x = $x;
                if self.big {
                    out.extend_from_slice(&x.to_be_bytes())
                } else {
                    out.extend_from_slice(&x.to_le_bytes())
                }
            }};
        }
        match (self.kind, self.size) {
            ('f', 8) => put!(v),
            ('f', 4) => put!(v as f32),
            ('f', _) => put!(half::f16::from_f64(v).to_bits()),
            ('i', 1) => put!(v as i8),
            ('i', 2) => put!(v as i16),
            ('i', 4) => put!(v as i32),
            ('i', _) => put!(v as i64),
            ('u', 1) => put!(v as u8),
            ('u', 2) => put!(v as u16),
            ('u', 4) => put!(v as u32),
            ('u', _) => put!(v as u64),
            _ => put!((v != 0.0 && !v.is_nan()) as u8),
        }
    }
}

/// Memory order of a `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row-major.
    C,
    /// Column-major.
    F,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Shape; axis 0 is rows.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Distribution of values.
    pub dist: Dist,
    /// Fraction of NaNs (float types).
    pub nan_frac: f64,
    /// Fraction of ±inf (float types).
    pub inf_frac: f64,
    /// Seed.
    pub seed: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl Spec {
    /// Number of columns (trailing dimensions' product).
    pub fn columns(&self) -> u64 {
        self.shape[1..].iter().product()
    }

    /// Total bytes of element data.
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.size as u64
    }

    /// The value of the element with row-major index `index`.
    #[inline]
    pub fn value(&self, index: u64) -> f64 {
        let h = mix(self.seed ^ mix(index));
        if self.dtype.kind == 'f' && (self.nan_frac > 0.0 || self.inf_frac > 0.0) {
            let v = unit(mix(h ^ 0x5151));
            if v < self.nan_frac {
                return f64::NAN;
            }
            if v < self.nan_frac + self.inf_frac {
                return if h & 1 == 0 {
                    f64::INFINITY
                } else {
                    f64::NEG_INFINITY
                };
            }
        }
        match self.dist {
            Dist::Normal(m, s) => {
                let u1 = unit(h);
                let u2 = unit(mix(h));
                m + s * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
            Dist::Uniform(a, b) => a + (b - a) * unit(h),
            Dist::Int(a, b) => (a + (h % (b - a) as u64) as i64) as f64,
            Dist::Const(v) => v,
            Dist::Seq => (index / self.columns().max(1)) as f64,
        }
    }

    /// Encodes the elements with row-major indices `indices` into `out`.
    pub fn fill(&self, indices: impl Iterator<Item = u64>, out: &mut Vec<u8>) {
        for i in indices {
            self.dtype.encode(self.value(i), out);
        }
    }
}

/// Bytes generated per parallel piece.
pub const PIECE: u64 = 4 << 20;

/// Writes `spec` as a `.npy` file in `order`, calling `progress(bytes_done)`.
///
/// Memory: about two pieces per thread, whatever the size.
pub fn write_npy(
    path: &Path,
    spec: &Spec,
    order: Order,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    let shape_s = match spec.shape.as_slice() {
        [one] => format!("({one},)"),
        s => format!(
            "({})",
            s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': {}, 'shape': {shape_s}, }}",
        spec.dtype.descr(),
        if order == Order::F { "True" } else { "False" }
    );
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let mut f = BufWriter::with_capacity(1 << 20, File::create(path)?);
    f.write_all(&header)?;
    let rows = spec.shape[0];
    let cols = spec.columns();
    let total = rows * cols;
    let piece = (PIECE / spec.dtype.size as u64).max(1);
    let batch = rayon::current_num_threads() as u64 * 2;
    let mut start = 0u64;
    let mut done = 0u64;
    while start < total {
        let starts: Vec<u64> = (0..batch)
            .map(|i| start + i * piece)
            .filter(|&s| s < total)
            .collect();
        let bufs: Vec<Vec<u8>> = starts
            .par_iter()
            .map(|&s| {
                let e = (s + piece).min(total);
                let mut buf = Vec::with_capacity(((e - s) as usize) * spec.dtype.size);
                // File position p -> row-major index.
                match order {
                    Order::C => spec.fill(s..e, &mut buf),
                    Order::F => spec.fill(
                        (s..e).map(|p| (p % rows.max(1)) * cols + p / rows.max(1)),
                        &mut buf,
                    ),
                }
                buf
            })
            .collect();
        for b in &bufs {
            f.write_all(b)?;
            done += b.len() as u64;
        }
        progress(done);
        start += batch * piece;
    }
    f.flush()?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}
