//! Writes `.npy` and HDF5 arrays of any size — far larger than memory — streaming in
//! bounded memory and generating in parallel.
//!
//! Every element is a pure function of (seed, row-major element index): a counter-based
//! generator (splitmix64 as a hash) rather than a stream RNG, so output is identical for any
//! thread count and memory order, and any piece can be generated on its own.

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
            format!(
                "{}{}{}",
                if self.big { '>' } else { '<' },
                self.kind,
                self.size
            )
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

    /// Whether element `index` is replaced by NaN or an infinity.
    #[inline]
    fn special(&self, index: u64) -> Option<f64> {
        if self.dtype.kind != 'f' || (self.nan_frac <= 0.0 && self.inf_frac <= 0.0) {
            return None;
        }
        let h = mix(self.seed ^ 0x5151 ^ mix(index));
        let v = unit(h);
        if v < self.nan_frac {
            Some(f64::NAN)
        } else if v < self.nan_frac + self.inf_frac {
            Some(if h & 1 == 0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            })
        } else {
            None
        }
    }

    /// The value of the element with row-major index `index`.
    #[inline]
    pub fn value(&self, index: u64) -> f64 {
        if let Some(v) = self.special(index) {
            return v;
        }
        match self.dist {
            Dist::Normal(m, s) => {
                // Box-Muller: elements 2k and 2k+1 share one pair of uniforms.
                let h = mix(self.seed ^ mix(index / 2));
                let r = (-2.0 * unit(h).ln()).sqrt();
                let (sin, cos) = (std::f64::consts::TAU * unit(mix(h))).sin_cos();
                m + s * r * if index.is_multiple_of(2) { cos } else { sin }
            }
            Dist::Uniform(a, b) => a + (b - a) * unit(mix(self.seed ^ mix(index))),
            Dist::Int(a, b) => (a + (mix(self.seed ^ mix(index)) % (b - a) as u64) as i64) as f64,
            Dist::Const(v) => v,
            Dist::Seq => (index / self.columns().max(1)) as f64,
        }
    }

    /// Encodes the elements with row-major indices `indices` into `out`.
    pub fn fill(&self, indices: impl Iterator<Item = u64>, out: &mut Vec<u8>) {
        let dt = self.dtype;
        macro_rules! go {
            ($conv:expr) => {{
                for i in indices {
                    let b = $conv(self.value(i));
                    if dt.big {
                        out.extend_from_slice(&b.to_be_bytes())
                    } else {
                        out.extend_from_slice(&b.to_le_bytes())
                    }
                }
            }};
        }
        match (dt.kind, dt.size) {
            ('f', 8) => go!(|v: f64| v),
            ('f', 4) => go!(|v: f64| v as f32),
            ('f', _) => go!(|v: f64| half::f16::from_f64(v).to_bits()),
            ('i', 1) => go!(|v: f64| v as i8),
            ('i', 2) => go!(|v: f64| v as i16),
            ('i', 4) => go!(|v: f64| v as i32),
            ('i', _) => go!(|v: f64| v as i64),
            ('u', 1) => go!(|v: f64| v as u8),
            ('u', 2) => go!(|v: f64| v as u16),
            ('u', 4) => go!(|v: f64| v as u32),
            ('u', _) => go!(|v: f64| v as u64),
            _ => go!(|v: f64| (v != 0.0 && !v.is_nan()) as u8),
        }
    }

    /// Encodes the elements `range` (row-major indices) into `out`; equal to [`Spec::fill`],
    /// faster for normal data (one Box-Muller pair per two elements).
    pub fn fill_range(&self, range: std::ops::Range<u64>, out: &mut Vec<u8>) {
        let Dist::Normal(m, sd) = self.dist else {
            return self.fill(range, out);
        };
        let mut i = range.start;
        while i < range.end {
            if i % 2 == 1 || i + 1 == range.end {
                self.dtype.encode(self.value(i), out);
                i += 1;
                continue;
            }
            let h = mix(self.seed ^ mix(i / 2));
            let r = (-2.0 * unit(h).ln()).sqrt();
            let (sin, cos) = (std::f64::consts::TAU * unit(mix(h))).sin_cos();
            let a = self.special(i).unwrap_or(m + sd * r * cos);
            let b = self.special(i + 1).unwrap_or(m + sd * r * sin);
            self.dtype.encode(a, out);
            self.dtype.encode(b, out);
            i += 2;
        }
    }
}

/// Bytes generated per parallel piece.
pub const PIECE: u64 = 4 << 20;

/// A heap buffer aligned for `O_DIRECT` I/O.
struct Aligned {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: a uniquely owned heap allocation.
unsafe impl Send for Aligned {}

const ALIGN: usize = 4096;

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len.max(ALIGN), ALIGN).expect("layout");
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        Aligned {
            ptr: std::ptr::NonNull::new(ptr).expect("allocation"),
            len: len.max(ALIGN),
        }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes owned by this buffer.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    fn as_ref(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, ALIGN).expect("layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

/// The `.npy` header for `spec` in `order`.
pub fn npy_header(spec: &Spec, order: Order) -> Vec<u8> {
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
    header
}

/// Writes `spec` as a `.npy` file in `order`, calling `progress(bytes_done)`.
///
/// The file is written in 4 MiB pieces generated in parallel while the previous batch is
/// written, with `O_DIRECT` where the filesystem allows it: buffered writes cost a page-cache
/// copy that on this machine class is slower than the disk. Memory: a few pieces per thread.
pub fn write_npy(
    path: &Path,
    spec: &Spec,
    order: Order,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let header = npy_header(spec, order);
    let hlen = header.len() as u64;
    let rows = spec.shape[0];
    let cols = spec.columns();
    let size = spec.dtype.size as u64;
    let data = spec.bytes();
    let file_len = hlen + data;
    let open = |direct: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        if direct {
            o.custom_flags(libc_o_direct());
        }
        o.open(path)
    };
    let (file, direct) = match open(true) {
        Ok(f) => (f, true),
        Err(_) => (open(false)?, false),
    };
    let piece = PIECE;
    let npieces = file_len.div_ceil(piece);
    let batch = rayon::current_num_threads() as u64 * 2;
    let mk = || -> Vec<(u64, Aligned, usize)> {
        (0..batch)
            .map(|_| (0, Aligned::new(piece as usize), 0))
            .collect()
    };
    let (to_writer, from_main) = std::sync::mpsc::sync_channel::<Vec<(u64, Aligned, usize)>>(1);
    let (to_main, from_writer) = std::sync::mpsc::sync_channel::<Vec<(u64, Aligned, usize)>>(2);
    to_main.send(mk()).expect("capacity");
    to_main.send(mk()).expect("capacity");
    std::thread::scope(|scope| -> std::io::Result<()> {
        let file = &file;
        let writer = scope.spawn(move || -> std::io::Result<()> {
            let mut done = 0u64;
            for bufs in from_main {
                for (off, buf, len) in &bufs {
                    if *len == 0 {
                        continue;
                    }
                    // O_DIRECT needs whole blocks: the last piece is padded, then truncated.
                    let n = if direct {
                        len.div_ceil(ALIGN) * ALIGN
                    } else {
                        *len
                    };
                    file.write_all_at(&buf.as_ref()[..n], *off)?;
                    done += *len as u64;
                }
                progress(done.saturating_sub(hlen).min(data));
                if to_main.send(bufs).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut j0 = 0u64;
        while j0 < npieces {
            let Ok(mut bufs) = from_writer.recv() else {
                break;
            };
            bufs.par_iter_mut()
                .enumerate()
                .for_each(|(i, (off, buf, len))| {
                    let j = j0 + i as u64;
                    *len = 0;
                    if j >= npieces {
                        return;
                    }
                    let (b0, b1) = (j * piece, ((j + 1) * piece).min(file_len));
                    *off = b0;
                    *len = (b1 - b0) as usize;
                    let out = buf.as_mut();
                    let mut at = 0usize;
                    if b0 < hlen {
                        let n = (hlen - b0).min(b1 - b0) as usize;
                        out[..n].copy_from_slice(&header[b0 as usize..b0 as usize + n]);
                        at = n;
                    }
                    // Data bytes [d0, d1) of this piece, from whole elements [e0, e1).
                    let d0 = b0.max(hlen) - hlen;
                    let d1 = b1.max(hlen) - hlen;
                    if d1 <= d0 {
                        return;
                    }
                    let (e0, e1) = (d0 / size, d1.div_ceil(size));
                    let mut tmp = Vec::with_capacity(((e1 - e0) * size) as usize);
                    match order {
                        Order::C => spec.fill_range(e0..e1, &mut tmp),
                        Order::F => spec.fill(
                            (e0..e1).map(|p| (p % rows.max(1)) * cols + p / rows.max(1)),
                            &mut tmp,
                        ),
                    }
                    let skip = (d0 - e0 * size) as usize;
                    let n = (d1 - d0) as usize;
                    out[at..at + n].copy_from_slice(&tmp[skip..skip + n]);
                });
            if to_writer.send(bufs).is_err() {
                break;
            }
            j0 += batch;
        }
        drop(to_writer);
        writer.join().expect("writer thread")
    })?;
    file.set_len(file_len)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn libc_o_direct() -> i32 {
    0o40000
}

#[cfg(not(target_os = "linux"))]
fn libc_o_direct() -> i32 {
    0
}
