//! Reduction loops: one block of raw element bytes to per-column partial statistics.
//!
//! A block is `rows` rows of `width` columns whose rows start `stride` elements apart (a run
//! of one Fortran-order column is `width = stride = 1`). It is cut into leaves of a fixed
//! number of rows; each leaf is reduced in one pass (compensated sums, min, max and squared
//! deviations from a reference value in the leaf; exact sums of values and squares for small
//! integers). Leaves the one pass cannot do exactly (infinities, a reference far from the
//! mean, wide integers) take two passes over cache-resident data: sums, counts, min and max,
//! then deviations from the leaf mean. Leaves are merged in a canonical [`Tree`].
//!
//! Loops run over fixed lanes of per-lane accumulators with no per-element branches, so the
//! compiler can vectorise them; narrow contiguous rows are processed several rows at a time so
//! the lanes stay full.

/// Calls the float or integer arm with the decoder type for `dtype`.
macro_rules! dispatch {
    ($dt:expr, |$f:ident| $fe:expr, |$i:ident| $ie:expr) => {{
        use $crate::source::{ByteOrder::*, Kind::*};
        let dt: DType = $dt;
        match (dt.kind, dt.size, dt.order) {
            (Float, 8, Little) => {
                type $f = F64Le;
                $fe
            }
            (Float, 8, Big) => {
                type $f = F64Be;
                $fe
            }
            (Float, 4, Little) => {
                type $f = F32Le;
                $fe
            }
            (Float, 4, Big) => {
                type $f = F32Be;
                $fe
            }
            (Float, 2, Little) => {
                type $f = F16Le;
                $fe
            }
            (Float, 2, Big) => {
                type $f = F16Be;
                $fe
            }
            (Bool, _, _) => {
                type $i = BoolL;
                $ie
            }
            (Int, 1, _) => {
                type $i = I8L;
                $ie
            }
            (UInt, 1, _) => {
                type $i = U8L;
                $ie
            }
            (Int, 2, Little) => {
                type $i = I16Le;
                $ie
            }
            (Int, 2, Big) => {
                type $i = I16Be;
                $ie
            }
            (UInt, 2, Little) => {
                type $i = U16Le;
                $ie
            }
            (UInt, 2, Big) => {
                type $i = U16Be;
                $ie
            }
            (Int, 4, Little) => {
                type $i = I32Le;
                $ie
            }
            (Int, 4, Big) => {
                type $i = I32Be;
                $ie
            }
            (UInt, 4, Little) => {
                type $i = U32Le;
                $ie
            }
            (UInt, 4, Big) => {
                type $i = U32Be;
                $ie
            }
            (Int, 8, Little) => {
                type $i = I64Le;
                $ie
            }
            (Int, 8, Big) => {
                type $i = I64Be;
                $ie
            }
            (UInt, 8, Little) => {
                type $i = U64Le;
                $ie
            }
            (UInt, 8, Big) => {
                type $i = U64Be;
                $ie
            }
            _ => unreachable!("DType::new admits no other types"),
        }
    }};
}

mod float;
mod int;
pub mod load;
mod tile;

use crate::moments::{two_sum, Acc, Tree};
use crate::source::DType;
use float::*;
use int::*;
use load::*;
use tile::*;

/// Per-column reference values that means and M2 are accumulated relative to.
///
/// Deviations from a value near the data (the column's first value) keep variance exact
/// under large offsets, also across leaves, where Chan's merge subtracts leaf means.
#[derive(Clone, Debug, Default)]
pub struct Shift {
    /// For float dtypes: one finite value per column.
    pub float: Vec<f64>,
    /// For integer dtypes: one decoded value per column (see [`load::IntLoad::dec`]).
    pub int: Vec<i64>,
}

/// Which families of statistics a reduction must produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// Sums, means and second moments (sum, mean, var, std).
    pub moments: bool,
    /// Minimum and maximum.
    pub minmax: bool,
}

/// Elements of a leaf's column tile, so the second pass over it hits the cache.
const TILE_BYTES: usize = 512 << 10;

/// Lanes processed together: one or two vector registers' worth.
const N: usize = 8;

/// Narrow rows are grouped so lanes come in multiples of this (the widest sweep).
const LANES: usize = 16;

/// The widest single-pass sweep (six AVX-512 registers per accumulator): runs this wide read
/// three-column rows, and rows of wide tiles, as contiguous memory.
const WIDE_RUN: usize = 48;

/// Rows of a wide tile swept together before moving to the next columns.
const ROW_CHUNK: usize = 16;

/// The same for 8- and 16-bit integers, whose lane state (four i64 per lane) costs more to
/// reload than their rows do to read.
const INT_ROW_CHUNK: usize = 64;

/// The geometry of a block's elements.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Rows in the block.
    pub rows: usize,
    /// Columns in the block.
    pub width: usize,
    /// Elements from the start of one row to the start of the next (`>= width`).
    pub stride: usize,
    /// Rows per leaf of the merge tree.
    pub leaf_rows: usize,
}

/// Reduces a block of `dtype` elements laid out as `shape` in `data` (which starts at the
/// block's first element) to one partial per column.
///
/// `shift` holds one reference value per column (see [`Shift`]); means in the result are
/// relative to it.
///
/// Returns the block's node of the merge tree; when `shape.rows` is `leaf_rows * 2^k` it is
/// exactly the level-`k` node a whole-array tree would hold for these rows.
pub fn reduce(data: &[u8], dtype: DType, shape: Shape, need: Need, shift: &Shift) -> Vec<Acc> {
    let need_len = if shape.rows == 0 {
        0
    } else {
        ((shape.rows - 1) * shape.stride + shape.width) * dtype.size
    };
    assert!(data.len() >= need_len, "block data shorter than its shape");
    let simd = simd();
    // The dtype is chosen first and each (load type, instruction set) pair is its own
    // function: one function holding every dtype's kernels inlined had a frame of over
    // 2 MiB in an unoptimised build, more than a rayon worker's stack.
    dispatch!(
        dtype,
        |F| float_kernel::<F>(simd, data, shape, need, &shift.float),
        |I| int_kernel::<I>(simd, data, shape, need, &shift.int)
    )
}

/// The instruction set the kernels run with. Every choice gives the same bits (lanes and the
/// order of every operation are fixed in the source; no fused multiply-add changes a
/// rounding), so the choice is only about speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// Baseline code for the target (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// AVX2 and FMA (x86-64).
    Avx2,
    /// AVX-512 F, VL, BW, DQ with AVX2 and FMA (x86-64).
    Avx512,
}

impl Simd {
    /// The name `COLSTATS_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run it.
    pub fn supported(self) -> bool {
        match self {
            Simd::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => {
                use std::is_x86_feature_detected as has;
                has!("avx512f")
                    && has!("avx512vl")
                    && has!("avx512bw")
                    && has!("avx512dq")
                    && has!("avx2")
                    && has!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best this CPU runs.
    pub fn best() -> Simd {
        [Simd::Avx512, Simd::Avx2]
            .into_iter()
            .find(|s| s.supported())
            .unwrap_or(Simd::Portable)
    }
}

/// The environment variable that forces an instruction set (for testing).
pub const SIMD_VAR: &str = "COLSTATS_SIMD";

/// The instruction set chosen by `COLSTATS_SIMD` (`portable`, `avx2`, `avx512`; unset or
/// empty: the best the CPU runs), read once; an unknown or unsupported choice is an error,
/// never a silent fallback.
pub fn simd_choice() -> Result<Simd, String> {
    static CHOICE: std::sync::OnceLock<Result<Simd, String>> = std::sync::OnceLock::new();
    CHOICE
        .get_or_init(|| {
            let v = std::env::var(SIMD_VAR).unwrap_or_default();
            let s = match v.as_str() {
                "" => return Ok(Simd::best()),
                "portable" => Simd::Portable,
                "avx2" => Simd::Avx2,
                "avx512" => Simd::Avx512,
                other => {
                    return Err(format!(
                        "{SIMD_VAR}={other} is not an instruction set colstats knows (portable, \
                         avx2, avx512)"
                    ))
                }
            };
            if s.supported() {
                Ok(s)
            } else {
                Err(format!("{SIMD_VAR}={v}: this CPU does not support it"))
            }
        })
        .clone()
}

/// [`simd_choice`], where the choice was checked before (a run checks it first).
fn simd() -> Simd {
    simd_choice().unwrap_or(Simd::Portable)
}

/// One float load type's kernel on the chosen instruction set.
fn float_kernel<F: FloatLoad>(
    simd: Simd,
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[f64],
) -> Vec<Acc> {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` picks AVX-512 only when the CPU has the features it is compiled for.
        Simd::Avx512 => unsafe { float_avx512::<F>(data, shape, need, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, for AVX2 and FMA.
        Simd::Avx2 => unsafe { float_avx2::<F>(data, shape, need, shift) },
        _ => run_f::<F, 8, false>(data, shape, need, shift),
    }
}

/// One integer load type's kernel on the chosen instruction set.
fn int_kernel<I: IntLoad>(
    simd: Simd,
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[i64],
) -> Vec<Acc> {
    match simd {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `float_kernel`.
        Simd::Avx512 => unsafe { int_avx512::<I>(data, shape, need, shift) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `float_kernel`.
        Simd::Avx2 => unsafe { int_avx2::<I>(data, shape, need, shift) },
        _ => run_i::<I, 8, false>(data, shape, need, shift),
    }
}

/// The kernels compiled for AVX2: 4 f64 lanes per instruction instead of 2. The same bits
/// as every other build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn float_avx2<F: FloatLoad>(
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[f64],
) -> Vec<Acc> {
    run_f::<F, 8, true>(data, shape, need, shift)
}

/// [`float_avx2`] for integers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn int_avx2<I: IntLoad>(data: &[u8], shape: Shape, need: Need, shift: &[i64]) -> Vec<Acc> {
    run_i::<I, 8, true>(data, shape, need, shift)
}

/// The kernels compiled for AVX-512: the single-pass float sweep takes 16 or 48 lanes at a
/// time. Results are the same bits as the other builds: lanes and their order do not depend
/// on the instruction set, only how many are swept together.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn float_avx512<F: FloatLoad>(
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[f64],
) -> Vec<Acc> {
    run_f::<F, 16, true>(data, shape, need, shift)
}

/// [`float_avx512`] for integers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
unsafe fn int_avx512<I: IntLoad>(data: &[u8], shape: Shape, need: Need, shift: &[i64]) -> Vec<Acc> {
    run_i::<I, 16, true>(data, shape, need, shift)
}

/// Decodes `count` elements, `step` bytes apart, as shift values: floats that are not finite
/// become 0 (a shift only needs to be near the data).
pub fn decode_shift(data: &[u8], dtype: DType, count: usize, step: usize) -> Shift {
    fn floats<F: FloatLoad>(d: &[u8], count: usize, step: usize) -> Vec<f64> {
        (0..count)
            .map(|i| F::dec(&d[i * step..i * step + F::SIZE]))
            .map(|v| if v.is_finite() { v } else { 0.0 })
            .collect()
    }
    fn ints<I: IntLoad>(d: &[u8], count: usize, step: usize) -> Vec<i64> {
        (0..count)
            .map(|i| I::dec(&d[i * step..i * step + I::SIZE]))
            .collect()
    }
    dispatch!(
        dtype,
        |F| Shift {
            float: floats::<F>(data, count, step),
            int: Vec::new()
        },
        |I| Shift {
            float: Vec::new(),
            int: ints::<I>(data, count, step)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unmasked one-pass path on one leaf of `w` f64 columns: their results, or which
    /// columns it declined.
    fn one_pass_marks(vals: &[f64], w: usize) -> Result<Vec<Acc>, Vec<bool>> {
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = vals.len() / w;
        let shape = Shape {
            rows,
            width: w,
            stride: w,
            leaf_rows: rows,
        };
        let (tw, k) = tiling(shape, 8);
        assert_eq!(tw, w);
        let t = Tile {
            r0: 0,
            rows,
            c0: 0,
            w,
            k,
        };
        let mut lanes = Lanes::new(w * k, 0.0);
        let mut refs = vec![0.0; w * k];
        let mut bad = vec![false; w];
        let mut out = vec![Acc::EMPTY; w];
        let shift = vec![0.0; w];
        let m = fast_tile::<F64Le, 8, false, true, false, false>(
            &data,
            shape,
            t,
            (&mut lanes, &mut refs, &mut bad),
            &shift,
            &mut out,
        )
        .expect("only uncompensated sums are declined whole");
        assert_eq!(m.count, bad.iter().filter(|&&b| b).count());
        (m.count == 0).then_some(out).ok_or(bad)
    }

    /// The NaN-masked one-pass path on one column.
    fn masked(vals: &[f64]) -> Option<Vec<Acc>> {
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let rows = vals.len();
        let shape = Shape {
            rows,
            width: 1,
            stride: 1,
            leaf_rows: rows,
        };
        let t = Tile {
            r0: 0,
            rows,
            c0: 0,
            w: 1,
            k: LANES,
        };
        let mut lanes = Lanes::new(LANES, 0.0);
        let mut refs = vec![0.0; LANES];
        let mut out = vec![Acc::EMPTY; 1];
        let m = fast_tile::<F64Le, 8, false, true, true, false>(
            &data,
            shape,
            t,
            (&mut lanes, &mut refs, &mut [false]),
            &[0.0],
            &mut out,
        )
        .expect("only uncompensated sums are declined whole");
        (m.count == 0).then_some(out)
    }

    fn one_pass(vals: &[f64], w: usize) -> Option<Vec<Acc>> {
        one_pass_marks(vals, w).ok()
    }

    fn column(n: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
        (0..n).map(f).collect()
    }

    /// 8- and 16-bit tiles of every shape (grouped narrow rows, wide tiles swept in row
    /// chunks, strided column tiles, leftover rows) against exact integer references.
    #[test]
    fn small_integer_tiles_are_exact() {
        use crate::source::{ByteOrder, Kind};
        let mut z = 99u64;
        let raw: Vec<u8> = (0..200_000)
            .map(|_| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (z >> 56) as u8
            })
            .collect();
        for (kind, size) in [(Kind::UInt, 1), (Kind::Int, 1), (Kind::Int, 2)] {
            let dt = DType::new(kind, size, ByteOrder::Little).unwrap();
            let val = |e: usize| -> i64 {
                let b = &raw[e * size..e * size + size];
                match (kind, size) {
                    (Kind::UInt, _) => b[0] as i64,
                    (_, 1) => b[0] as i8 as i64,
                    _ => i16::from_le_bytes([b[0], b[1]]) as i64,
                }
            };
            for (rows, width, stride, leaf) in [
                (1000, 3, 3, 256),
                (999, 16, 16, 256),
                (300, 200, 200, 256),
                (200, 300, 450, 256),
                (77, 1000, 1000, 64),
            ] {
                let shape = Shape {
                    rows,
                    width,
                    stride,
                    leaf_rows: leaf,
                };
                let shift = decode_shift(&raw, dt, width, size);
                let need = Need {
                    moments: true,
                    minmax: true,
                };
                let got = reduce(&raw, dt, shape, need, &shift);
                for (c, a) in got.iter().enumerate() {
                    let col: Vec<i64> = (0..rows).map(|r| val(r * stride + c)).collect();
                    let s: i128 = col.iter().map(|&v| v as i128).sum();
                    let q: i128 = col.iter().map(|&v| (v as i128) * (v as i128)).sum();
                    let n = rows as i128;
                    let m2 = (n * q - s * s) as f64 / n as f64;
                    assert_eq!(a.isum, s, "{dt:?} {rows}x{width}/{stride} column {c}");
                    assert_eq!(a.imin, *col.iter().min().unwrap() as i128);
                    assert_eq!(a.imax, *col.iter().max().unwrap() as i128);
                    assert!((a.m2 - m2).abs() <= 1e-12 * m2, "{} vs {m2}", a.m2);
                }
            }
        }
    }

    #[test]
    fn one_pass_declines_what_it_cannot_do_exactly() {
        let noise = |i: usize| ((i * 7919) % 1000) as f64 * 0.001;
        let plain = one_pass(&column(4096, |i| 1e9 + noise(i)), 1).expect("plain data");
        let two = reduce(
            &column(4096, |i| 1e9 + noise(i))
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
            DType::new(
                crate::source::Kind::Float,
                8,
                crate::source::ByteOrder::Little,
            )
            .unwrap(),
            Shape {
                rows: 4096,
                width: 1,
                stride: 1,
                leaf_rows: 4096,
            },
            Need {
                moments: true,
                minmax: true,
            },
            &Shift {
                float: vec![0.0],
                int: vec![],
            },
        );
        assert_eq!(plain[0].n, 4096);
        assert!((plain[0].m2 - two[0].m2).abs() <= 1e-12 * two[0].m2);
        assert_eq!(plain[0].sum(), two[0].sum());
        let mut v = column(4096, noise);
        v[100] = f64::NAN;
        assert!(one_pass(&v, 1).is_none(), "NaN, unmasked");
        assert!(masked(&v).is_some_and(|o| o[0].n == 4095 && o[0].nan == 1));
        v[0] = f64::NAN;
        assert!(
            masked(&v).is_some_and(|o| o[0].n == 4094),
            "reference skips NaN"
        );
        assert!(masked(&[f64::NAN; 64]).is_some_and(|o| o[0].n == 0 && o[0].nan == 64));
        v[100] = f64::INFINITY;
        assert!(one_pass(&v, 1).is_none(), "infinity");
        v[100] = 1e300;
        v[101] = 1e300;
        assert!(one_pass(&v, 1).is_none(), "overflowing sum");
        let mut v = column(4096, noise);
        v[0] = 1e6;
        assert!(one_pass(&v, 1).is_none(), "first value far from the mean");
        v[0] = 0.5;
        assert!(one_pass(&v, 1).is_some());
        // Three columns grouped into 48 lanes: only the bad column is declined.
        let mut v = column(3 * 4096, noise);
        v[3 * 50 + 2] = f64::NAN;
        assert_eq!(one_pass_marks(&v, 3), Err(vec![false, false, true]));
    }

    #[test]
    fn instruction_sets_agree() {
        let mut z = 7u64;
        let vals: Vec<f64> = (0..3 * 5000)
            .map(|i| {
                z = z
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let v = (z >> 11) as f64 / (1u64 << 53) as f64 * 1e3 + 1e6;
                if i == 7777 {
                    f64::NAN
                } else {
                    v
                }
            })
            .collect();
        let dt = DType::new(
            crate::source::Kind::Float,
            8,
            crate::source::ByteOrder::Little,
        );
        let dt = dt.unwrap();
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let need = Need {
            moments: true,
            minmax: true,
        };
        // The last two are wide tiles (swept in row chunks, the next chunk prefetched), the
        // last one strided like a column tile of a wider array.
        for (rows, width, stride) in [
            (15000, 1, 1),
            (5000, 3, 3),
            (1000, 15, 15),
            (750, 20, 20),
            (50, 300, 300),
            (29, 300, 500),
        ] {
            let shape = Shape {
                rows,
                width,
                stride,
                leaf_rows: 256,
            };
            let shift = decode_shift(&data, dt, width, 8);
            let best = reduce(&data, dt, shape, need, &shift);
            let avx2 = run_f::<F64Le, 8, true>(&data, shape, need, &shift.float);
            let wide = run_f::<F64Le, 16, true>(&data, shape, need, &shift.float);
            let base = run_f::<F64Le, 8, false>(&data, shape, need, &shift.float);
            for (a, b) in [(&best, &avx2), (&best, &wide), (&best, &base)] {
                for (x, y) in a.iter().zip(b.iter()) {
                    assert_eq!(x.sum_hi.to_bits(), y.sum_hi.to_bits(), "{rows}x{width}");
                    assert_eq!(x.sum_lo.to_bits(), y.sum_lo.to_bits(), "{rows}x{width}");
                    assert_eq!(x.m2.to_bits(), y.m2.to_bits(), "{rows}x{width}");
                    assert_eq!(x.mean.to_bits(), y.mean.to_bits(), "{rows}x{width}");
                    assert_eq!((x.n, x.min, x.max), (y.n, y.min, y.max));
                }
            }
        }
    }
}
