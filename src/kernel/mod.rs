//! Reduction loops: one block of raw element bytes to per-column partial statistics.
//!
//! A block is `rows` rows of `width` columns whose rows start `stride` elements apart (a run
//! of one Fortran-order column is `width = stride = 1`). It is cut into leaves of a fixed
//! number of rows; each leaf is reduced with two passes over cache-resident data (sums,
//! counts, min and max; then deviations from the leaf mean), which keeps the variance exact
//! under large offsets, and leaves are merged in a canonical [`Tree`].
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

pub mod load;

use crate::moments::{two_sum, Acc, Tree};
use crate::source::DType;
use load::*;

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

/// Columns processed together inside a leaf, so both passes stay in cache for wide rows.
const TILE: usize = 1024;
/// Narrow contiguous rows are grouped until a lane group holds at least this many elements.
const MIN_LANES: usize = 16;

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
    dispatch!(
        dtype,
        |F| run_f::<F>(data, shape, need, &shift.float),
        |I| run_i::<I>(data, shape, need, &shift.int)
    )
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

/// Runs `leaf` over every leaf of the block and merges the results in the canonical tree.
fn over_leaves(shape: Shape, mut leaf: impl FnMut(usize, usize, &mut [Acc])) -> Vec<Acc> {
    let mut tree = Tree::new();
    let mut r = 0;
    while r < shape.rows {
        let n = shape.leaf_rows.min(shape.rows - r);
        let mut out = vec![Acc::EMPTY; shape.width];
        leaf(r, n, &mut out);
        tree.push(0, out);
        r += n;
    }
    tree.finish()
        .unwrap_or_else(|| vec![Acc::EMPTY; shape.width])
}

/// How a leaf's columns are visited: column tiles of `tw` columns, `k` rows per lane group.
fn tiling(shape: Shape) -> (usize, usize) {
    if shape.width == shape.stride && shape.width < MIN_LANES {
        (shape.width, MIN_LANES.div_ceil(shape.width.max(1)))
    } else {
        (TILE.min(shape.width.max(1)), 1)
    }
}

/// Per-lane scratch accumulators.
struct Lanes<T> {
    a: Vec<T>,
    b: Vec<T>,
    c: Vec<T>,
    d: Vec<T>,
    n: Vec<u64>,
}

impl<T: Copy> Lanes<T> {
    fn new(len: usize, z: T) -> Self {
        Lanes {
            a: vec![z; len],
            b: vec![z; len],
            c: vec![z; len],
            d: vec![z; len],
            n: vec![0; len],
        }
    }
}

fn run_f<L: FloatLoad>(data: &[u8], shape: Shape, need: Need, shift: &[f64]) -> Vec<Acc> {
    assert_eq!(shift.len(), shape.width, "one shift per column");
    let (tw, k) = tiling(shape);
    let mut lanes = Lanes::new(tw * k, 0.0f64);
    let mut ks = vec![0.0f64; tw * k];
    over_leaves(shape, |r0, rows, out| {
        let mut c0 = 0;
        while c0 < shape.width {
            let w = tw.min(shape.width - c0);
            for (j, v) in ks[..w * k].iter_mut().enumerate() {
                *v = shift[c0 + j % w];
            }
            let t = Tile { r0, rows, c0, w, k };
            float_tile::<L>(
                data,
                shape,
                t,
                need,
                &mut lanes,
                &mut ks,
                &mut out[c0..c0 + w],
            );
            c0 += w;
        }
    })
}

/// One leaf's column tile: rows `r0..r0+rows`, columns `c0..c0+w`, `k` rows per lane group.
#[derive(Clone, Copy)]
struct Tile {
    r0: usize,
    rows: usize,
    c0: usize,
    w: usize,
    k: usize,
}

impl Tile {
    /// Calls `f(bytes, lanes)` for each lane group, then for each leftover row.
    #[inline(always)]
    fn visit<'a>(
        &self,
        data: &'a [u8],
        shape: Shape,
        size: usize,
        mut f: impl FnMut(&'a [u8], usize),
    ) {
        let groups = self.rows / self.k;
        let l = self.w * self.k;
        let span = |r: usize, len: usize| {
            let start = (r * shape.stride + self.c0) * size;
            &data[start..start + len * size]
        };
        for g in 0..groups {
            f(span(self.r0 + g * self.k, l), l);
        }
        for r in self.r0 + groups * self.k..self.r0 + self.rows {
            f(span(r, self.w), self.w);
        }
    }
}

/// `ks[..l]` holds each lane's column shift on entry and is used as scratch for centres.
fn float_tile<L: FloatLoad>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    lanes: &mut Lanes<f64>,
    ks: &mut [f64],
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    // Pass 1: counts, compensated sums (Knuth's branch-free two-sum per lane), min, max.
    {
        let cnt = &mut lanes.n[..l];
        let sum = &mut lanes.a[..l];
        let mn = &mut lanes.b[..l];
        let mx = &mut lanes.c[..l];
        let comp = &mut lanes.d[..l];
        cnt.fill(0);
        sum.fill(0.0);
        comp.fill(0.0);
        mn.fill(f64::INFINITY);
        mx.fill(f64::NEG_INFINITY);
        let moments = need.moments;
        t.visit(data, shape, L::SIZE, |bytes, used| {
            for (((((e, c), s), cp), lo), hi) in bytes
                .chunks_exact(L::SIZE)
                .zip(cnt[..used].iter_mut())
                .zip(sum[..used].iter_mut())
                .zip(comp[..used].iter_mut())
                .zip(mn[..used].iter_mut())
                .zip(mx[..used].iter_mut())
            {
                let x = L::dec(e);
                let ok = !x.is_nan();
                *c += ok as u64;
                if moments {
                    let y = if ok { x } else { 0.0 };
                    let t = *s + y;
                    let bb = t - *s;
                    *cp += (*s - (t - bb)) + (y - bb);
                    *s = t;
                }
                if need.minmax {
                    *lo = lo.min(x);
                    *hi = hi.max(x);
                }
            }
        });
    }
    // Fold lanes into columns (lane j holds column j % w), in a fixed order.
    let mut sums = vec![(0.0f64, 0.0f64); w];
    for (c, o) in out.iter_mut().enumerate() {
        let mut n = 0u64;
        let (mut h, mut lo_part) = (0.0f64, 0.0f64);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for j in (c..l).step_by(w) {
            n += lanes.n[j];
            let (s, e) = two_sum(h, lanes.a[j]);
            h = s;
            lo_part += e + lanes.d[j];
            lo = lo.min(lanes.b[j]);
            hi = hi.max(lanes.c[j]);
        }
        sums[c] = (h, lo_part);
        *o = Acc {
            n,
            nan: t.rows as u64 - n,
            min: lo,
            max: hi,
            ..Acc::EMPTY
        };
    }
    if !need.moments {
        return;
    }
    // Centres: the leaf means.
    let shifts: Vec<f64> = ks[..w].to_vec();
    for (j, m) in ks[..l].iter_mut().enumerate() {
        let c = j % w;
        let n = out[c].n;
        let (h, lo) = sums[c];
        *m = if n > 0 && h.is_finite() {
            (h + lo) / n as f64
        } else {
            0.0
        };
    }
    // Pass 2: deviations from each column's centre (the leaf is still in cache).
    {
        let sd = &mut lanes.a[..l];
        let sq = &mut lanes.d[..l];
        sd.fill(0.0);
        sq.fill(0.0);
        let centres = &ks[..l];
        t.visit(data, shape, L::SIZE, |bytes, used| {
            for (((e, m), a), q) in bytes
                .chunks_exact(L::SIZE)
                .zip(centres[..used].iter())
                .zip(sd[..used].iter_mut())
                .zip(sq[..used].iter_mut())
            {
                let x = L::dec(e);
                let d = if x.is_nan() { 0.0 } else { x - m };
                *a += d;
                *q += d * d;
            }
        });
    }
    for (c, o) in out.iter_mut().enumerate() {
        let (mut sd, mut sq) = (0.0f64, 0.0f64);
        for j in (c..l).step_by(w) {
            sd += lanes.a[j];
            sq += lanes.d[j];
        }
        finish_float_leaf(o, sums[c], sd, sq, ks[c], shifts[c]);
    }
}

/// Turns the pass sums into the leaf's compensated sum, mean (relative to the shift) and M2.
fn finish_float_leaf(o: &mut Acc, (h, lo): (f64, f64), sd: f64, sq: f64, centre: f64, shift: f64) {
    if o.n == 0 {
        return;
    }
    let n = o.n as f64;
    if !h.is_finite() {
        // An infinity (or overflow) in the column: the mean is that; the spread is undefined.
        o.sum_hi = h;
        o.mean = h / n;
        o.m2 = f64::NAN;
        return;
    }
    let (hi, l) = two_sum(h, lo);
    o.sum_hi = hi;
    o.sum_lo = l;
    o.mean = (centre - shift) + sd / n;
    o.m2 = (sq - sd * (sd / n)).max(0.0);
}

fn run_i<L: IntLoad>(data: &[u8], shape: Shape, need: Need, shift: &[i64]) -> Vec<Acc> {
    assert_eq!(shift.len(), shape.width, "one shift per column");
    let (tw, k) = tiling(shape);
    let mut lanes = Lanes::new(tw * k, 0i64);
    let mut fl = Lanes::new(tw * k, 0.0f64);
    let mut centres = vec![0i64; tw * k];
    over_leaves(shape, |r0, rows, out| {
        let mut c0 = 0;
        while c0 < shape.width {
            let w = tw.min(shape.width - c0);
            let t = Tile { r0, rows, c0, w, k };
            int_tile::<L>(
                data,
                shape,
                t,
                need,
                &shift[c0..c0 + w],
                (&mut lanes, &mut fl, &mut centres),
                &mut out[c0..c0 + w],
            );
            c0 += w;
        }
    })
}

/// `x - c` rounded once to f64, for any two i64 values.
#[inline(always)]
fn diff_f64<const WIDE: bool>(x: i64, c: i64) -> f64 {
    if WIDE {
        let hi = (x >> 32) - (c >> 32);
        let lo = (x & 0xffff_ffff) - (c & 0xffff_ffff);
        hi as f64 * 4294967296.0 + lo as f64
    } else {
        (x - c) as f64
    }
}

type IntScratch<'a> = (&'a mut Lanes<i64>, &'a mut Lanes<f64>, &'a mut Vec<i64>);

fn int_tile<L: IntLoad>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    shift: &[i64],
    (lanes, fl, centres): IntScratch<'_>,
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    // Pass 1: exact sums (8-byte values split in 32-bit halves so i64 lanes cannot overflow
    // within a leaf), min, max.
    {
        let shi = &mut lanes.a[..l];
        let slo = &mut lanes.b[..l];
        let mn = &mut lanes.c[..l];
        let mx = &mut lanes.d[..l];
        shi.fill(0);
        slo.fill(0);
        mn.fill(i64::MAX);
        mx.fill(i64::MIN);
        t.visit(data, shape, L::SIZE, |bytes, used| {
            for ((((e, h), s), lo), hi) in bytes
                .chunks_exact(L::SIZE)
                .zip(shi[..used].iter_mut())
                .zip(slo[..used].iter_mut())
                .zip(mn[..used].iter_mut())
                .zip(mx[..used].iter_mut())
            {
                let x = L::dec(e);
                if L::SIZE == 8 {
                    *h += x >> 32;
                    *s += x & 0xffff_ffff;
                } else {
                    *s += x;
                }
                if need.minmax {
                    *lo = (*lo).min(x);
                    *hi = (*hi).max(x);
                }
            }
        });
    }
    let n = t.rows as u64;
    for (c, o) in out.iter_mut().enumerate() {
        let mut s: i128 = 0;
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for j in (c..l).step_by(w) {
            s += ((lanes.a[j] as i128) << 32) + lanes.b[j] as i128;
            lo = lo.min(lanes.c[j]);
            hi = hi.max(lanes.d[j]);
        }
        // The centre: the leaf mean of the decoded values, rounded down to an integer.
        centres[c] = if n > 0 {
            s.div_euclid(n as i128) as i64
        } else {
            0
        };
        *o = Acc {
            n,
            nan: 0,
            isum: s + L::OFFSET * n as i128,
            imin: if n > 0 {
                lo as i128 + L::OFFSET
            } else {
                i128::MAX
            },
            imax: if n > 0 {
                hi as i128 + L::OFFSET
            } else {
                i128::MIN
            },
            ..Acc::EMPTY
        };
    }
    if !need.moments || n == 0 {
        return;
    }
    for j in w..l {
        centres[j] = centres[j % w];
    }
    // Pass 2: exact integer deviations from the centre, accumulated in f64.
    {
        let sd = &mut fl.a[..l];
        let sq = &mut fl.b[..l];
        sd.fill(0.0);
        sq.fill(0.0);
        let cs = &centres[..l];
        t.visit(data, shape, L::SIZE, |bytes, used| {
            for (((e, m), a), q) in bytes
                .chunks_exact(L::SIZE)
                .zip(cs[..used].iter())
                .zip(sd[..used].iter_mut())
                .zip(sq[..used].iter_mut())
            {
                let d = if L::SIZE == 8 {
                    diff_f64::<true>(L::dec(e), *m)
                } else {
                    diff_f64::<false>(L::dec(e), *m)
                };
                *a += d;
                *q += d * d;
            }
        });
    }
    let nf = n as f64;
    for (c, o) in out.iter_mut().enumerate() {
        let (mut sd, mut sq) = (0.0f64, 0.0f64);
        for j in (c..l).step_by(w) {
            sd += fl.a[j];
            sq += fl.b[j];
        }
        let rel = (centres[c] as i128 - shift[c] as i128) as f64;
        o.mean = rel + sd / nf;
        o.m2 = (sq - sd * (sd / nf)).max(0.0);
    }
}
