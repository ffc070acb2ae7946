//! data-gen: writes `.npy` arrays of any size, streaming with bounded memory.
//!
//! Every element is a pure function of (seed, row, column) — a counter-based generator
//! (splitmix64 used as a hash) rather than a stream RNG — so output is identical for any
//! thread count and for C or Fortran order, and chunks can be generated in parallel.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use rayon::prelude::*;

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Order {
    C,
    F,
}

#[derive(Parser)]
#[command(
    name = "data-gen",
    about = "Write large .npy test arrays with bounded memory"
)]
struct Args {
    /// Output .npy file.
    out: PathBuf,
    /// Shape, comma-separated, e.g. 1000000,16.
    #[arg(long, default_value = "1000000,16")]
    shape: String,
    /// numpy type string: f8, f4, f2, i1..i8, u1..u8, b1 (optionally with < or > for byte order).
    #[arg(long, default_value = "<f8")]
    dtype: String,
    /// Memory order.
    #[arg(long, value_enum, default_value_t = Order::C)]
    order: Order,
    /// Distribution: normal:MEAN,STD | uniform:LO,HI | int:LO,HI | const:V | seq.
    #[arg(long, default_value = "normal:0,1")]
    dist: String,
    /// Fraction of NaN values (float dtypes).
    #[arg(long, default_value_t = 0.0)]
    nan_frac: f64,
    /// Fraction of ±inf values (float dtypes).
    #[arg(long, default_value_t = 0.0)]
    inf_frac: f64,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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

enum Dist {
    Normal(f64, f64),
    Uniform(f64, f64),
    Int(i64, i64),
    Const(f64),
    Seq,
}

fn parse_dist(s: &str) -> Result<Dist, String> {
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
        ("uniform", [a, b]) => Ok(Dist::Uniform(*a, *b)),
        ("int", [a, b]) if a < b => Ok(Dist::Int(*a as i64, *b as i64)),
        ("const", [v]) => Ok(Dist::Const(*v)),
        ("seq", []) => Ok(Dist::Seq),
        _ => Err(format!("unknown --dist '{s}'")),
    }
}

struct Gen {
    dist: Dist,
    seed: u64,
    cols: u64,
    nan_frac: f64,
    inf_frac: f64,
}

impl Gen {
    fn value(&self, index: u64) -> f64 {
        let h = mix(self.seed ^ mix(index));
        let u = unit(h);
        if self.nan_frac > 0.0 || self.inf_frac > 0.0 {
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
                let u2 = unit(mix(h));
                m + s * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
            Dist::Uniform(a, b) => a + (b - a) * u,
            Dist::Int(a, b) => (a + (h % (b - a) as u64) as i64) as f64,
            Dist::Const(v) => v,
            Dist::Seq => (index / self.cols) as f64,
        }
    }
}

fn encode(v: f64, code: &str, little: bool, out: &mut Vec<u8>) {
    macro_rules! put {
        ($x:expr) => {{
            let x = $x;
            if little {
                out.extend_from_slice(&x.to_le_bytes())
            } else {
                out.extend_from_slice(&x.to_be_bytes())
            }
        }};
    }
    match code {
        "f8" => put!(v),
        "f4" => put!(v as f32),
        "f2" => put!(half::f16::from_f64(v).to_bits()),
        "i1" => put!(v as i8),
        "i2" => put!(v as i16),
        "i4" => put!(v as i32),
        "i8" => put!(v as i64),
        "u1" => put!(v as u8),
        "u2" => put!(v as u16),
        "u4" => put!(v as u32),
        "u8" => put!(v as u64),
        "b1" => put!((v != 0.0 && !v.is_nan()) as u8),
        _ => unreachable!(),
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), String> {
    let shape: Vec<u64> = a
        .shape
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad --shape '{}'", a.shape))
        })
        .collect::<Result<_, _>>()?;
    if shape.is_empty() {
        return Err("--shape needs at least one dimension".into());
    }
    let d = a.dtype.as_str();
    let (little, code) = match d.as_bytes().first() {
        Some(b'<') | Some(b'|') => (true, &d[1..]),
        Some(b'>') => (false, &d[1..]),
        _ => (true, d),
    };
    let size: usize = match code {
        "f8" | "i8" | "u8" => 8,
        "f4" | "i4" | "u4" => 4,
        "f2" | "i2" | "u2" => 2,
        "i1" | "u1" | "b1" => 1,
        _ => return Err(format!("unsupported --dtype '{d}'")),
    };
    let descr = if size == 1 {
        format!("|{code}")
    } else {
        format!("{}{code}", if little { '<' } else { '>' })
    };
    let rows = shape[0];
    let cols: u64 = shape[1..].iter().product();
    let gen = Gen {
        dist: parse_dist(&a.dist)?,
        seed: a.seed,
        cols,
        nan_frac: a.nan_frac,
        inf_frac: a.inf_frac,
    };
    let shape_s = if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let dict = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape_s}, }}",
        if a.order == Order::F { "True" } else { "False" }
    );
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let mut header = b"\x93NUMPY\x01\x00".to_vec();
    header.extend_from_slice(&((dict.len() + pad + 1) as u16).to_le_bytes());
    header.extend_from_slice(dict.as_bytes());
    header.extend(std::iter::repeat_n(b' ', pad));
    header.push(b'\n');
    let io = |e: std::io::Error| format!("{}: {e}", a.out.display());
    let mut f = BufWriter::with_capacity(1 << 20, File::create(&a.out).map_err(io)?);
    f.write_all(&header).map_err(io)?;
    // Elements in file order; position p maps to (row, col) by the order.
    let total = rows * cols;
    let chunk = (4u64 << 20) / size as u64;
    let batch = rayon::current_num_threads() as u64 * 2;
    let mut start = 0u64;
    while start < total {
        let chunks: Vec<u64> = (0..batch)
            .map(|i| start + i * chunk)
            .filter(|&s| s < total)
            .collect();
        let bufs: Vec<Vec<u8>> = chunks
            .par_iter()
            .map(|&s| {
                let e = (s + chunk).min(total);
                let mut buf = Vec::with_capacity(((e - s) as usize) * size);
                for p in s..e {
                    let index = if a.order == Order::F {
                        let (c, r) = (p / rows.max(1), p % rows.max(1));
                        r * cols + c
                    } else {
                        p
                    };
                    encode(gen.value(index), code, little, &mut buf);
                }
                buf
            })
            .collect();
        for b in &bufs {
            f.write_all(b).map_err(io)?;
        }
        start += batch * chunk;
    }
    f.flush().map_err(io)?;
    Ok(())
}
