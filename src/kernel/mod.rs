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
    #[cfg(target_arch = "x86_64")]
    {
        use std::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx2") && has!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { reduce_avx512(data, dtype, shape, need, shift) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: as above.
            return unsafe { reduce_avx2(data, dtype, shape, need, shift) };
        }
    }
    reduce_any::<8, false>(data, dtype, shape, need, shift)
}

/// The kernels compiled for AVX2: 4 f64 lanes per instruction instead of 2, and fused
/// multiply-adds for squared deviations (so M2 may differ from the baseline build's in the
/// last bits; everything else is the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_avx2(
    data: &[u8],
    dtype: DType,
    shape: Shape,
    need: Need,
    shift: &Shift,
) -> Vec<Acc> {
    reduce_any::<8, true>(data, dtype, shape, need, shift)
}

/// The kernels compiled for AVX-512: the single-pass float sweep takes 16 or 48 lanes at a
/// time. Results are the same bits as the AVX2 build: lanes and their order do not depend on
/// the instruction set, only how many are swept together.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn reduce_avx512(
    data: &[u8],
    dtype: DType,
    shape: Shape,
    need: Need,
    shift: &Shift,
) -> Vec<Acc> {
    reduce_any::<16, true>(data, dtype, shape, need, shift)
}

/// `R`: lanes the single-pass float sweep keeps in registers (8 or 16); `FMA`: the CPU has
/// fused multiply-add.
#[inline(always)]
fn reduce_any<const R: usize, const FMA: bool>(
    data: &[u8],
    dtype: DType,
    shape: Shape,
    need: Need,
    shift: &Shift,
) -> Vec<Acc> {
    dispatch!(
        dtype,
        |F| run_f::<F, R, FMA>(data, shape, need, &shift.float),
        |I| run_i::<I, FMA>(data, shape, need, &shift.int)
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

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How a leaf's columns are visited: column tiles of `tw` columns and `k` rows per lane
/// group; narrow contiguous rows are grouped so the lane count is a multiple of [`LANES`].
/// The lanes (and so every rounding) are the same whatever instruction set runs them.
fn tiling(shape: Shape, size: usize) -> (usize, usize) {
    let w = shape.width.max(1);
    if shape.width == shape.stride && w < LANES {
        (w, LANES / gcd(w, LANES))
    } else {
        let tile = (TILE_BYTES / (shape.leaf_rows.max(1) * size)).clamp(2 * N, 1024);
        (tile.min(w), 1)
    }
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

/// Rows `r0..r0+rows` of columns from `c0`: where a wide tile's next chunk lies.
#[derive(Clone, Copy)]
struct Chunk {
    r0: usize,
    rows: usize,
    c0: usize,
}

impl Chunk {
    /// Bytes from element `(r0, c0)` to the chunk's first element.
    fn delta(self, shape: Shape, size: usize, (r0, c0): (usize, usize)) -> isize {
        let rows = self.r0 as isize - r0 as isize;
        let cols = self.c0 as isize - c0 as isize;
        (rows * shape.stride as isize + cols) * size as isize
    }

    /// Prefetches lanes `j..j+m` of the chunk (elements of `size` bytes).
    #[inline(always)]
    fn prefetch(self, data: &[u8], shape: Shape, size: usize, (j, m): (usize, usize)) {
        let m = m.min(shape.width.saturating_sub(self.c0 + j));
        for g in self.r0..self.r0 + self.rows {
            prefetch(data, (g * shape.stride + self.c0 + j) * size, m * size);
        }
    }
}

/// A run of lanes over row groups: first lane, lane count, byte offset, byte step, groups.
type Run = (usize, usize, usize, usize, usize);

impl Tile {
    /// Whether the tile is swept a chunk of rows at a time (one row per lane group, many
    /// columns), rather than each run going down all its rows.
    fn is_wide(&self) -> bool {
        self.k == 1 && self.w >= 128
    }

    /// Rows `r..r+chunk` of the tile, and for a wide tile the chunk to fetch while they
    /// are swept.
    fn chunk(&self, shape: Shape, r: usize, chunk: usize) -> (Tile, Option<Chunk>) {
        let sub = Tile {
            r0: self.r0 + r,
            rows: chunk.min(self.rows - r),
            ..*self
        };
        let ahead = if self.is_wide() {
            self.next_chunk(shape, r, chunk)
        } else {
            None
        };
        (sub, ahead)
    }

    /// The chunk of `chunk` rows to fetch while rows `r..r+chunk` of this (wide) tile are
    /// swept: this tile's next rows, or after its last chunk the first rows of the tile
    /// after it in the leaf's order.
    fn next_chunk(&self, shape: Shape, r: usize, chunk: usize) -> Option<Chunk> {
        let (r0, c0, rows) = if r + chunk < self.rows {
            (
                self.r0 + r + chunk,
                self.c0,
                chunk.min(self.rows - r - chunk),
            )
        } else if self.c0 + self.w < shape.width {
            (self.r0, self.c0 + self.w, chunk.min(self.rows))
        } else if self.r0 + self.rows < shape.rows {
            let r0 = self.r0 + self.rows;
            (r0, 0, chunk.min(shape.rows - r0))
        } else {
            return None;
        };
        Some(Chunk { r0, rows, c0 })
    }

    /// The runs of lanes over the lane groups (`widths[0]` lanes at a time, then the next
    /// width, ..., then single lanes), then
    /// over the leftover rows, collected into `out` (no closures: the hot loops must inline
    /// into the target-feature entry point).
    fn runs(&self, shape: Shape, size: usize, widths: &[usize], out: &mut Vec<Run>) {
        out.clear();
        let groups = self.rows / self.k;
        let l = self.w * self.k;
        let base = |r: usize| (r * shape.stride + self.c0) * size;
        let mut push = |lanes: usize, off0: usize, step: usize, count: usize| {
            let mut j = 0;
            for &width in widths.iter().chain(&[1]) {
                while j + width <= lanes {
                    out.push((j, width, off0 + j * size, step, count));
                    j += width;
                }
            }
        };
        if groups > 0 {
            push(l, base(self.r0), self.k * shape.stride * size, groups);
        }
        for r in self.r0 + groups * self.k..self.r0 + self.rows {
            push(self.w, base(r), 0, 1);
        }
    }
}

/// Pass-1 float accumulators for `M` lanes.
#[derive(Clone, Copy)]
struct F1<const M: usize> {
    n: [f64; M],
    s: [f64; M],
    c: [f64; M],
    lo: [f64; M],
    hi: [f64; M],
}

#[inline(always)]
fn f1_sweep<L: FloatLoad, const M: usize, const MO: bool, const MM: bool>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    a: &mut F1<M>,
) {
    let mut st = *a;
    for g in 0..count {
        let off = off0 + g * step;
        let e = &data[off..off + M * L::SIZE];
        for i in 0..M {
            let x = L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]);
            #[allow(clippy::eq_op)]
            let ok = x == x;
            st.n[i] += if ok { 1.0 } else { 0.0 };
            if MO {
                // Knuth's two-sum: the rounding error of each addition is kept.
                let y = if ok { x } else { 0.0 };
                let t = st.s[i] + y;
                let bb = t - st.s[i];
                st.c[i] += (st.s[i] - (t - bb)) + (y - bb);
                st.s[i] = t;
            }
            if MM {
                // NaN compares false, so it never replaces a bound.
                st.lo[i] = if x < st.lo[i] { x } else { st.lo[i] };
                st.hi[i] = if x > st.hi[i] { x } else { st.hi[i] };
            }
        }
    }
    *a = st;
}

/// Pass-2 float accumulators: deviations from the lane's centre.
#[inline(always)]
fn f2_sweep<L: FloatLoad, const M: usize>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    m: &[f64; M],
    sd: &mut [f64; M],
    sq: &mut [f64; M],
) {
    let (mut a, mut q) = (*sd, *sq);
    for g in 0..count {
        let off = off0 + g * step;
        let e = &data[off..off + M * L::SIZE];
        for i in 0..M {
            let x = L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]);
            #[allow(clippy::eq_op)]
            let d = if x == x { x - m[i] } else { 0.0 };
            a[i] += d;
            q[i] += d * d;
        }
    }
    *sd = a;
    *sq = q;
}

/// Per-lane scratch state of a tile, `l` lanes.
struct Lanes<T> {
    a: Vec<T>,
    b: Vec<T>,
    c: Vec<T>,
    d: Vec<T>,
    e: Vec<T>,
    f: Vec<T>,
}

impl<T: Copy> Lanes<T> {
    fn new(len: usize, z: T) -> Self {
        Lanes {
            a: vec![z; len],
            b: vec![z; len],
            c: vec![z; len],
            d: vec![z; len],
            e: vec![z; len],
            f: vec![z; len],
        }
    }
}

fn load<const M: usize, T: Copy + Default>(v: &[T], j: usize) -> [T; M] {
    let mut out = [T::default(); M];
    out.copy_from_slice(&v[j..j + M]);
    out
}

fn store<const M: usize, T: Copy>(v: &mut [T], j: usize, x: &[T; M]) {
    v[j..j + M].copy_from_slice(x);
}

#[inline(always)]
fn run_f<L: FloatLoad, const R: usize, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[f64],
) -> Vec<Acc> {
    assert_eq!(shift.len(), shape.width, "one shift per column");
    let (tw, k) = tiling(shape, L::SIZE);
    let mut lanes = Lanes::new(tw * k, 0.0f64);
    let mut centres = vec![0.0f64; tw * k];
    let mut sums = vec![(0.0f64, 0.0f64); tw];
    let mut bad = vec![false; tw];
    // A plain loop, not a closure: closures are compiled on their own, without the
    // caller's target features.
    let mut tree = Tree::new();
    let (mut nans, mut inexact) = (false, 0u32);
    let mut r0 = 0;
    while r0 < shape.rows {
        let rows = shape.leaf_rows.min(shape.rows - r0);
        let mut out = vec![Acc::EMPTY; shape.width];
        let mut c0 = 0;
        while c0 < shape.width {
            let w = tw.min(shape.width - c0);
            let t = Tile { r0, rows, c0, w, k };
            float_tile::<L, R, FMA>(
                data,
                shape,
                t,
                need,
                (
                    &mut lanes,
                    &mut centres,
                    &mut sums,
                    &mut bad,
                    (&mut nans, &mut inexact),
                ),
                &shift[c0..c0 + w],
                &mut out[c0..c0 + w],
            );
            c0 += w;
        }
        tree.push(0, out);
        r0 += rows;
    }
    tree.finish()
        .unwrap_or_else(|| vec![Acc::EMPTY; shape.width])
}

/// Lane state, per-lane reference values or centres, per-column sums, which columns the
/// single pass could not do, whether the last tile held NaNs, and how many more tiles skip
/// the uncompensated sum.
type FloatScratch<'a> = (
    &'a mut Lanes<f64>,
    &'a mut Vec<f64>,
    &'a mut Vec<(f64, f64)>,
    &'a mut Vec<bool>,
    (&'a mut bool, &'a mut u32),
);

#[inline(always)]
fn f1_dispatch<L: FloatLoad, const M: usize>(
    data: &[u8],
    run: (usize, usize, usize),
    a: &mut F1<M>,
    need: Need,
) {
    match (need.moments, need.minmax) {
        (true, true) => f1_sweep::<L, M, true, true>(data, run, a),
        (true, false) => f1_sweep::<L, M, true, false>(data, run, a),
        (false, true) => f1_sweep::<L, M, false, true>(data, run, a),
        (false, false) => f1_sweep::<L, M, false, false>(data, run, a),
    }
}

/// Single-pass float accumulators for `M` lanes: compensated sums, min, max and squared
/// deviations from the lane's reference value `k`.
#[derive(Clone, Copy)]
struct Fast<const M: usize> {
    key: [u32; M],
    n: [f64; M],
    s: [f64; M],
    c: [f64; M],
    lo: [f64; M],
    hi: [f64; M],
    q: [f64; M],
}

/// The single-pass sweep. Without `NANS` it has no masks or counts: a NaN poisons the sums,
/// which sends the tile on to the masked sweep; with `NANS`, NaNs are counted and skipped.
/// An infinity poisons the sums either way (the two-pass path handles it). Without `MO`
/// (moments) the plain sum only detects them. On NaN-free data both give the same bits.
/// `EXACT` (narrow types) sums without compensation and tracks the smallest magnitude, so
/// the tile can be shown afterwards to have summed exactly: then the bits are those of the
/// compensated sweep, whose compensation would have stayed zero. A nonzero `pf` prefetches
/// the lines `pf` bytes from each row read.
#[inline(always)]
fn fast_sweep<
    L: FloatLoad,
    const M: usize,
    const FMA: bool,
    const MO: bool,
    const NANS: bool,
    const EXACT: bool,
>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    k: &[f64; M],
    a: &mut Fast<M>,
    pf: isize,
) {
    let mut st = *a;
    // Opaque, so `a * one + b` stays a fused multiply-add instead of folding back to an add.
    let one = std::hint::black_box(1.0f64);
    for g in 0..count {
        let off = off0 + g * step;
        let e = &data[off..off + M * L::SIZE];
        if pf != 0 {
            let mut l = 0;
            while l < M * L::SIZE {
                prefetch_at(data.as_ptr().wrapping_offset((off + l) as isize + pf));
                l += 64;
            }
        }
        for i in 0..M {
            let x = L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]);
            #[allow(clippy::eq_op)]
            let ok = !NANS || x == x;
            if NANS {
                st.n[i] += if ok { 1.0 } else { 0.0 };
            }
            let y = if ok { x } else { 0.0 };
            let t = st.s[i] + y;
            if EXACT {
                // No compensation: the tile is checked afterwards to have needed none.
                let key = L::key(&e[i * L::SIZE..(i + 1) * L::SIZE]);
                st.key[i] = st.key[i].min(key);
            } else if MO {
                // Knuth's two-sum: the rounding error of each addition is kept.
                let bb = add::<FMA>(t, -st.s[i], one);
                let e1 = st.s[i] - (t - bb);
                let e2 = add::<FMA>(y, -bb, one);
                st.c[i] = add::<FMA>(e1, st.c[i] + e2, one);
            }
            st.s[i] = t;
            // NaN compares false, so it never replaces a bound.
            st.lo[i] = if x < st.lo[i] { x } else { st.lo[i] };
            st.hi[i] = if x > st.hi[i] { x } else { st.hi[i] };
            if MO {
                let d = if ok { x - k[i] } else { 0.0 };
                st.q[i] = if FMA {
                    d.mul_add(d, st.q[i])
                } else {
                    st.q[i] + d * d
                };
            }
        }
    }
    *a = st;
}

/// Asks for `len` bytes of `data` from `off` to be brought into the L2 cache: rows of wide
/// tiles are read in short pieces far apart, which the hardware prefetchers do not follow.
#[inline(always)]
fn prefetch(data: &[u8], off: usize, len: usize) {
    let end = (off + len).min(data.len());
    let mut o = off;
    while o < end {
        prefetch_at(data[o..].as_ptr());
        o += 64;
    }
}

/// Asks for the cache line at `p` to be brought into L2. Any address will do: a prefetch
/// never faults, so one past the end of the data (the last chunk's) costs nothing.
#[inline(always)]
fn prefetch_at(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint and never faults.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `a + b` (`one` is 1): the same bits either way, but as a fused multiply-add it runs on the
/// multiply units, which the adds of the two-sum would otherwise leave idle.
#[inline(always)]
fn add<const FMA: bool>(a: f64, b: f64, one: f64) -> f64 {
    if FMA {
        a.mul_add(one, b)
    } else {
        a + b
    }
}

/// `h + l - n * k`, rounded once (`(h, l)` a double-double sum, `n * k` formed exactly).
#[inline(always)]
fn dd_minus(h: f64, l: f64, n: f64, k: f64) -> f64 {
    let p = n * k;
    let pe = n.mul_add(k, -p);
    let (s, e) = two_sum(h, -p);
    s + ((e + l) - pe)
}

/// Largest accepted ratio of the squared deviations from the reference value to M2: beyond
/// it the single-pass M2 would lose more than a few bits to cancellation.
const MAX_CANCEL: f64 = 16.0;

/// Reduces a tile in one pass, taking each column's first non-NaN value in the tile as its
/// reference value (`MO`: moments too, else counts, min and max; `NANS`: NaNs are skipped).
/// A column the pass cannot do is marked in `bad` (its `out` left to be overwritten): it
/// holds an infinity (or, without `NANS`, a NaN), its sums overflow, or its reference value
/// is so far from its mean that the one-pass M2 would lose accuracy. The decision is the
/// column's own, so the tiling a budget or thread count chooses never changes it. Returns how many
/// columns were marked and whether any for a non-finite value, or `Inexact` when an
/// uncompensated (`EXACT`) sum cannot be shown exact.
#[inline(always)]
fn fast_tile<
    L: FloatLoad,
    const R: usize,
    const FMA: bool,
    const MO: bool,
    const NANS: bool,
    const EXACT: bool,
>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    (lanes, refs, bad): (&mut Lanes<f64>, &mut Vec<f64>, &mut [bool]),
    shift: &[f64],
    out: &mut [Acc],
) -> Result<Marked, Miss> {
    let (w, l) = (t.w, t.w * t.k);
    let mut marked = Marked::default();
    for (c, k) in refs[..w].iter_mut().enumerate() {
        let at = |r: usize| {
            let o = ((t.r0 + r) * shape.stride + t.c0 + c) * L::SIZE;
            L::dec(&data[o..o + L::SIZE])
        };
        let mut r = 0;
        while NANS && r + 1 < t.rows && at(r).is_nan() {
            r += 1;
        }
        *k = at(r);
    }
    for j in w..l {
        refs[j] = refs[j % w];
    }
    lanes.f[..l].fill(0.0);
    lanes.a[..l].fill(0.0);
    // Compensation, or with `EXACT` the smallest-magnitude keys.
    lanes.b[..l].fill(if EXACT { u32::MAX as f64 } else { 0.0 });
    lanes.c[..l].fill(0.0);
    lanes.d[..l].fill(f64::INFINITY);
    lanes.e[..l].fill(f64::NEG_INFINITY);
    let mut runs = Vec::new();
    // Six registers per accumulator need AVX-512's 32 registers; wide tiles, whose state is
    // reloaded every few rows, take four so none spills to the stack.
    let wide = t.is_wide();
    let widths: &[usize] = if R == 16 && wide {
        &[32, R, 4]
    } else if R == 16 {
        &[WIDE_RUN, R, 4]
    } else {
        &[R, 4]
    };
    // Wide tiles go a few rows at a time, so each row's segment is read in order rather than
    // every run striding down the whole leaf. Each lane still sees its rows in order: the
    // same bits.
    let chunk = if wide { ROW_CHUNK } else { t.rows };
    let mut r = 0;
    while r < t.rows {
        let (sub, ahead) = t.chunk(shape, r, chunk);
        sub.runs(shape, L::SIZE, widths, &mut runs);
        // Each row of the sweep asks for the same lanes of the next chunk: spread through
        // the arithmetic, the requests do not queue up behind each other.
        let pf = ahead.map_or(0, |n| n.delta(shape, L::SIZE, (t.r0 + r, t.c0)));
        for run in &runs {
            let &(j, m, off, step, count) = run;
            macro_rules! sweep {
                ($m:expr) => {{
                    let b: [f64; $m] = load(&lanes.b, j);
                    let mut a = Fast::<{ $m }> {
                        key: if EXACT { b.map(|v| v as u32) } else { [0; $m] },
                        n: load(&lanes.f, j),
                        s: load(&lanes.a, j),
                        c: b,
                        q: load(&lanes.c, j),
                        lo: load(&lanes.d, j),
                        hi: load(&lanes.e, j),
                    };
                    let k: [f64; $m] = load(refs, j);
                    fast_sweep::<L, { $m }, FMA, MO, NANS, EXACT>(
                        data,
                        (off, step, count),
                        &k,
                        &mut a,
                        pf,
                    );
                    store(&mut lanes.f, j, &a.n);
                    store(&mut lanes.a, j, &a.s);
                    if EXACT {
                        store(&mut lanes.b, j, &a.key.map(|v| v as f64));
                    } else {
                        store(&mut lanes.b, j, &a.c);
                    }
                    store(&mut lanes.c, j, &a.q);
                    store(&mut lanes.d, j, &a.lo);
                    store(&mut lanes.e, j, &a.hi);
                }};
            }
            if m == WIDE_RUN {
                sweep!(WIDE_RUN)
            } else if m == 32 {
                sweep!(32)
            } else if m == R {
                sweep!(R)
            } else if m == 4 {
                sweep!(4)
            } else {
                sweep!(1)
            }
        }
        r += sub.rows;
    }
    for (c, o) in out.iter_mut().enumerate() {
        let (mut h, mut lo_part, mut q) = (0.0f64, 0.0f64, 0.0f64);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut nf = if NANS { 0.0 } else { t.rows as f64 };
        for j in (c..l).step_by(w) {
            if NANS {
                nf += lanes.f[j];
            }
            let (s, e) = two_sum(h, lanes.a[j]);
            h = s;
            if EXACT {
                // Every partial sum of the lane was exact if it stayed below 2^53 units of
                // the lane's smallest magnitude (a lane holds every k-th row).
                let big = lanes.d[j].abs().max(lanes.e[j].abs());
                let unit = L::unit(lanes.b[j] as u32);
                // (Leftover rows of an incomplete group all go to the first w lanes.)
                let count = (t.rows / t.k + t.rows % t.k) as f64;
                if lanes.d[j] <= lanes.e[j] && count * big >= unit * 9007199254740992.0 {
                    return Err(Miss::Inexact);
                }
                lo_part += e;
            } else {
                lo_part += e + lanes.b[j];
            }
            q += lanes.c[j];
            lo = lo.min(lanes.d[j]);
            hi = hi.max(lanes.e[j]);
        }
        bad[c] = false;
        if !(h.is_finite() && lo_part.is_finite() && q.is_finite()) {
            bad[c] = true;
            marked.count += 1;
            marked.non_finite = true;
            continue;
        }
        let n = nf as u64;
        let nan = t.rows as u64 - n;
        if !MO || n == 0 {
            *o = Acc {
                n,
                nan,
                min: lo,
                max: hi,
                ..Acc::EMPTY
            };
            continue;
        }
        let (h, l) = two_sum(h, lo_part);
        // Sum of deviations from the reference value, from the exact-to-f64 sum.
        let d = dd_minus(h, l, nf, refs[c]);
        let m2 = q - d * (d / nf);
        if m2 * MAX_CANCEL < q {
            bad[c] = true;
            marked.count += 1;
            continue;
        }
        *o = Acc {
            n,
            nan,
            mean: dd_minus(h, l, nf, shift[c]) / nf,
            m2: m2.max(0.0),
            sum_hi: h,
            sum_lo: l,
            min: lo,
            max: hi,
            ..Acc::EMPTY
        };
    }
    Ok(marked)
}

/// Columns a single pass could not do: how many, and whether any for a non-finite value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Marked {
    count: usize,
    non_finite: bool,
}

/// Tiles that skip the uncompensated attempt after one fails: data too spread out for it
/// tends to stay so, but a few tiny values should not cost the whole block its speed.
const SKIP_EXACT: u32 = 2;

/// Why a one-pass tile was declined as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Miss {
    /// Nothing to do in one pass (only counts are needed).
    Nothing,
    /// An uncompensated sum that cannot be shown exact.
    Inexact,
}

#[inline(always)]
fn float_tile<L: FloatLoad, const R: usize, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    (lanes, centres, sums, bad, flags): FloatScratch<'_>,
    shift: &[f64],
    out: &mut [Acc],
) {
    macro_rules! one_pass {
        ($nans:literal, $exact:literal) => {
            match (need.moments, need.minmax) {
                (true, _) => fast_tile::<L, R, FMA, true, $nans, $exact>(
                    data,
                    shape,
                    t,
                    (lanes, centres, bad),
                    shift,
                    out,
                ),
                (false, true) => fast_tile::<L, R, FMA, false, $nans, false>(
                    data,
                    shape,
                    t,
                    (lanes, centres, bad),
                    shift,
                    out,
                ),
                (false, false) => Err(Miss::Nothing),
            }
        };
    }
    // Guesses from earlier tiles pick which sweep to try first: data with NaNs usually has
    // them in every tile, and data too spread out for uncompensated sums often so.
    // Every sweep that succeeds gives the same bits, so a guess cannot change a result.
    // Columns the single pass leaves to the two-pass path: all until one has run.
    let (nans, inexact) = flags;
    let w = t.w;
    let mut marked = Marked {
        count: w,
        non_finite: false,
    };
    'fast: {
        let mut masked = *nans;
        if L::NARROW && need.moments && *inexact > 0 {
            *inexact -= 1;
        } else if L::NARROW && need.moments {
            let mut r = if masked {
                one_pass!(true, true)
            } else {
                one_pass!(false, true)
            };
            if matches!(r, Ok(m) if m.non_finite) && !masked {
                masked = true;
                r = one_pass!(true, true);
            }
            match r {
                Ok(m) => {
                    marked = m;
                    *nans = out.iter().any(|o| o.nan > 0);
                    break 'fast;
                }
                Err(Miss::Inexact) => *inexact = SKIP_EXACT,
                Err(Miss::Nothing) => break 'fast,
            }
        }
        if !masked {
            match one_pass!(false, false) {
                Ok(m) if !m.non_finite => {
                    marked = m;
                    break 'fast;
                }
                Err(Miss::Nothing) => break 'fast,
                _ => {}
            }
        }
        if let Ok(m) = one_pass!(true, false) {
            marked = m;
            *nans = out.iter().any(|o| o.nan > 0);
        }
    }
    if marked.count == 0 {
        return;
    }
    // The columns done in one pass keep those bits whatever their neighbours needed.
    let keep: Vec<(usize, Acc)> = if marked.count < w {
        (0..w).filter(|&c| !bad[c]).map(|c| (c, out[c])).collect()
    } else {
        Vec::new()
    };
    two_pass_tile::<L>(data, shape, t, need, (lanes, centres, sums), shift, out);
    for (c, a) in keep {
        out[c] = a;
    }
}

/// Reduces a tile in two passes: counts, compensated sums and bounds, then squared
/// deviations from each column's mean (the tile is still in cache).
#[inline(always)]
fn two_pass_tile<L: FloatLoad>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    (lanes, centres, sums): (&mut Lanes<f64>, &mut Vec<f64>, &mut Vec<(f64, f64)>),
    shift: &[f64],
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    // Pass 1: counts, compensated sums, min, max.
    lanes.a[..l].fill(0.0); // counts
    lanes.b[..l].fill(0.0); // sums
    lanes.c[..l].fill(0.0); // compensation
    lanes.d[..l].fill(f64::INFINITY);
    lanes.e[..l].fill(f64::NEG_INFINITY);
    // Pass 1 keeps five accumulators per lane: four lanes at a time fit the registers.
    // Bounds come with the moments, as in the single pass: they tell an infinite input
    // from an overflowing sum.
    let bounds = Need {
        minmax: need.minmax || need.moments,
        ..need
    };
    let mut runs = Vec::new();
    t.runs(shape, L::SIZE, &[N / 2], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:literal) => {{
                let mut a = F1::<$m> {
                    n: load(&lanes.a, j),
                    s: load(&lanes.b, j),
                    c: load(&lanes.c, j),
                    lo: load(&lanes.d, j),
                    hi: load(&lanes.e, j),
                };
                f1_dispatch::<L, $m>(data, (off, step, count), &mut a, bounds);
                store(&mut lanes.a, j, &a.n);
                store(&mut lanes.b, j, &a.s);
                store(&mut lanes.c, j, &a.c);
                store(&mut lanes.d, j, &a.lo);
                store(&mut lanes.e, j, &a.hi);
            }};
        }
        if m == N / 2 {
            sweep!(4)
        } else {
            sweep!(1)
        }
    }
    // Fold lanes into columns (lane j holds column j % w), in a fixed order.
    for (c, o) in out.iter_mut().enumerate() {
        let mut n = 0.0f64;
        let (mut h, mut lo_part) = (0.0f64, 0.0f64);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for j in (c..l).step_by(w) {
            n += lanes.a[j];
            let (s, e) = two_sum(h, lanes.b[j]);
            h = s;
            lo_part += e + lanes.c[j];
            lo = lo.min(lanes.d[j]);
            hi = hi.max(lanes.e[j]);
        }
        sums[c] = (h, lo_part);
        let n = n as u64;
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
    for (j, m) in centres[..l].iter_mut().enumerate() {
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
    lanes.a[..l].fill(0.0);
    lanes.b[..l].fill(0.0);
    t.runs(shape, L::SIZE, &[N], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:literal) => {{
                let mut sd: [f64; $m] = load(&lanes.a, j);
                let mut sq: [f64; $m] = load(&lanes.b, j);
                let cm: [f64; $m] = load(centres, j);
                f2_sweep::<L, $m>(data, (off, step, count), &cm, &mut sd, &mut sq);
                store(&mut lanes.a, j, &sd);
                store(&mut lanes.b, j, &sq);
            }};
        }
        if m == N {
            sweep!(8)
        } else {
            sweep!(1)
        }
    }
    for (c, o) in out.iter_mut().enumerate() {
        let (mut sd, mut sq) = (0.0f64, 0.0f64);
        for j in (c..l).step_by(w) {
            sd += lanes.a[j];
            sq += lanes.b[j];
        }
        finish_float_leaf(o, sums[c], sd, sq, centres[c], shift[c]);
    }
}

/// Turns the pass sums into the leaf's compensated sum, mean (relative to the shift) and M2.
#[inline(always)]
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

/// Pass-1 integer accumulators for `M` lanes.
#[derive(Clone, Copy)]
struct I1<const M: usize> {
    h: [i64; M],
    s: [i64; M],
    lo: [i64; M],
    hi: [i64; M],
}

#[inline(always)]
fn i1_sweep<L: IntLoad, const M: usize, const MM: bool>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    a: &mut I1<M>,
) {
    let mut st = *a;
    for g in 0..count {
        let off = off0 + g * step;
        let e = &data[off..off + M * L::SIZE];
        for i in 0..M {
            let x = L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]);
            if L::SIZE == 8 {
                // 32-bit halves, so i64 lanes cannot overflow within a leaf.
                st.h[i] += x >> 32;
                st.s[i] += x & 0xffff_ffff;
            } else {
                st.s[i] += x;
            }
            if MM {
                st.lo[i] = if x < st.lo[i] { x } else { st.lo[i] };
                st.hi[i] = if x > st.hi[i] { x } else { st.hi[i] };
            }
        }
    }
    *a = st;
}

/// Most row groups summed in i32 lanes before folding into i64: 32768 × 65535 < 2^31.
const SMALL_RUN: usize = 1 << 15;

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

#[inline(always)]
fn i2_sweep<L: IntLoad, const M: usize>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    m: &[i64; M],
    sd: &mut [f64; M],
    sq: &mut [f64; M],
) {
    let (mut a, mut q) = (*sd, *sq);
    if L::SIZE == 8 {
        for g in 0..count {
            let off = off0 + g * step;
            let e = &data[off..off + M * L::SIZE];
            for i in 0..M {
                let d = diff_f64::<true>(L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]), m[i]);
                a[i] += d;
                q[i] += d * d;
            }
        }
    } else {
        // Both sides are integers below 2^33: exact in f64, and so is their difference.
        let mut mf = [0.0f64; M];
        for i in 0..M {
            mf[i] = m[i] as f64;
        }
        for g in 0..count {
            let off = off0 + g * step;
            let e = &data[off..off + M * L::SIZE];
            for i in 0..M {
                let d = L::dec_f64(&e[i * L::SIZE..(i + 1) * L::SIZE]) - mf[i];
                a[i] += d;
                q[i] += d * d;
            }
        }
    }
    *sd = a;
    *sq = q;
}

#[inline(always)]
fn run_i<L: IntLoad, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    need: Need,
    shift: &[i64],
) -> Vec<Acc> {
    assert_eq!(shift.len(), shape.width, "one shift per column");
    let (tw, k) = tiling(shape, L::SIZE);
    let mut lanes = Lanes::new(tw * k, 0i64);
    let mut fl = Lanes::new(tw * k, 0.0f64);
    let mut centres = vec![0i64; tw * k];
    let mut tree = Tree::new();
    let mut r0 = 0;
    while r0 < shape.rows {
        let rows = shape.leaf_rows.min(shape.rows - r0);
        let mut out = vec![Acc::EMPTY; shape.width];
        let mut c0 = 0;
        while c0 < shape.width {
            let w = tw.min(shape.width - c0);
            let t = Tile { r0, rows, c0, w, k };
            int_tile::<L, FMA>(
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
        tree.push(0, out);
        r0 += rows;
    }
    tree.finish()
        .unwrap_or_else(|| vec![Acc::EMPTY; shape.width])
}

type IntScratch<'a> = (&'a mut Lanes<i64>, &'a mut Lanes<f64>, &'a mut Vec<i64>);

/// One pass for integer types of at most 2 bytes: i32 sums, minima and maxima, and squares
/// summed exactly in f64 lanes (below 2^53 within a run), all folded into the i64 lane state
/// every [`SMALL_RUN`] groups.
#[inline(always)]
fn small_sweep<L: IntLoad, const M: usize, const FMA: bool>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    a: &mut I1<M>,
) {
    let mut g0 = 0;
    while g0 < count {
        let n = SMALL_RUN.min(count - g0);
        let (mut s, mut lo, mut hi) = ([0i32; M], [i32::MAX; M], [i32::MIN; M]);
        let mut q = [0.0f64; M];
        for g in g0..g0 + n {
            let off = off0 + g * step;
            let e = &data[off..off + M * L::SIZE];
            for i in 0..M {
                let b = &e[i * L::SIZE..(i + 1) * L::SIZE];
                let x = L::dec(b) as i32;
                s[i] += x;
                lo[i] = if x < lo[i] { x } else { lo[i] };
                hi[i] = if x > hi[i] { x } else { hi[i] };
                let f = L::dec_f64(b);
                q[i] = if FMA {
                    f.mul_add(f, q[i])
                } else {
                    q[i] + f * f
                };
            }
        }
        for i in 0..M {
            a.s[i] += s[i] as i64;
            a.h[i] += q[i] as i64;
            a.lo[i] = a.lo[i].min(lo[i] as i64);
            a.hi[i] = a.hi[i].max(hi[i] as i64);
        }
        g0 += n;
    }
}

/// Row groups summed in i16 lanes before widening: 128 × 255 < 2^15.
const BYTE_RUN: usize = 128;

/// [`small_sweep`] for 1-byte types: i16 lanes for sums (widened every [`BYTE_RUN`] groups),
/// minima and maxima, and 16-bit squares (exact: at most 255^2) summed in i32 lanes (folded
/// every [`SMALL_RUN`] groups), so each instruction takes 32 or 16 lanes.
#[inline(always)]
fn byte_sweep<L: IntLoad, const M: usize>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    a: &mut I1<M>,
) {
    let mut g0 = 0;
    while g0 < count {
        let n = SMALL_RUN.min(count - g0);
        let (mut s, mut q) = ([0i32; M], [0i32; M]);
        let (mut lo, mut hi) = ([i16::MAX; M], [i16::MIN; M]);
        let mut b0 = g0;
        while b0 < g0 + n {
            let bn = BYTE_RUN.min(g0 + n - b0);
            let mut s16 = [0i16; M];
            for g in b0..b0 + bn {
                let off = off0 + g * step;
                let e = &data[off..off + M];
                for i in 0..M {
                    let x = L::dec(&e[i..i + 1]) as i16;
                    s16[i] += x;
                    lo[i] = if x < lo[i] { x } else { lo[i] };
                    hi[i] = if x > hi[i] { x } else { hi[i] };
                    q[i] += x.wrapping_mul(x) as u16 as i32;
                }
            }
            for i in 0..M {
                s[i] += s16[i] as i32;
            }
            b0 += bn;
        }
        for i in 0..M {
            a.s[i] += s[i] as i64;
            a.h[i] += q[i] as i64;
            a.lo[i] = a.lo[i].min(lo[i] as i64);
            a.hi[i] = a.hi[i].max(hi[i] as i64);
        }
        g0 += n;
    }
}

/// The one-pass tile for integer types of at most 2 bytes: exact sums of values and squares,
/// so M2 is one rounding of an exact integer.
#[inline(always)]
fn small_int_tile<L: IntLoad, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    shift: &[i64],
    lanes: &mut Lanes<i64>,
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    lanes.a[..l].fill(0);
    lanes.b[..l].fill(0);
    lanes.c[..l].fill(i64::MAX);
    lanes.d[..l].fill(i64::MIN);
    let mut runs = Vec::new();
    // As for floats, wide tiles go a chunk of rows at a time with the next one prefetched.
    let chunk = if t.is_wide() { INT_ROW_CHUNK } else { t.rows };
    let mut r = 0;
    while r < t.rows {
        let (sub, ahead) = t.chunk(shape, r, chunk);
        sub.runs(shape, L::SIZE, &[4 * LANES, LANES, 4], &mut runs);
        for &(j, m, off, step, count) in &runs {
            if let Some(next) = ahead {
                next.prefetch(data, shape, L::SIZE, (j, m));
            }
            macro_rules! sweep {
                ($m:expr) => {{
                    let mut a = I1::<{ $m }> {
                        h: load(&lanes.a, j),
                        s: load(&lanes.b, j),
                        lo: load(&lanes.c, j),
                        hi: load(&lanes.d, j),
                    };
                    if L::SIZE == 1 {
                        byte_sweep::<L, { $m }>(data, (off, step, count), &mut a);
                    } else {
                        small_sweep::<L, { $m }, FMA>(data, (off, step, count), &mut a);
                    }
                    store(&mut lanes.a, j, &a.h);
                    store(&mut lanes.b, j, &a.s);
                    store(&mut lanes.c, j, &a.lo);
                    store(&mut lanes.d, j, &a.hi);
                }};
            }
            if m == 4 * LANES {
                sweep!(4 * LANES)
            } else if m == LANES {
                sweep!(LANES)
            } else if m == 4 {
                sweep!(4)
            } else {
                sweep!(1)
            }
        }
        r += sub.rows;
    }
    let n = t.rows as i128;
    for (c, o) in out.iter_mut().enumerate() {
        let (mut s, mut q) = (0i128, 0i128);
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        for j in (c..l).step_by(w) {
            q += lanes.a[j] as i128;
            s += lanes.b[j] as i128;
            lo = lo.min(lanes.c[j]);
            hi = hi.max(lanes.d[j]);
        }
        *o = Acc {
            n: n as u64,
            nan: 0,
            isum: s,
            imin: lo as i128,
            imax: hi as i128,
            mean: (s - n * shift[c] as i128) as f64 / n as f64,
            m2: (n * q - s * s) as f64 / n as f64,
            ..Acc::EMPTY
        };
    }
}

#[inline(always)]
fn int_tile<L: IntLoad, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    shift: &[i64],
    (lanes, fl, centres): IntScratch<'_>,
    out: &mut [Acc],
) {
    // Types of at most 2 bytes take one exact pass whatever is needed (its min and max are
    // as cheap as a pass of their own).
    if L::SIZE <= 2 && t.rows > 0 {
        small_int_tile::<L, FMA>(data, shape, t, shift, lanes, out);
        return;
    }
    let (w, l) = (t.w, t.w * t.k);
    lanes.a[..l].fill(0);
    lanes.b[..l].fill(0);
    lanes.c[..l].fill(i64::MAX);
    lanes.d[..l].fill(i64::MIN);
    let mut runs = Vec::new();
    t.runs(shape, L::SIZE, &[N], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:literal) => {{
                let mut a = I1::<$m> {
                    h: load(&lanes.a, j),
                    s: load(&lanes.b, j),
                    lo: load(&lanes.c, j),
                    hi: load(&lanes.d, j),
                };
                if need.minmax {
                    i1_sweep::<L, $m, true>(data, (off, step, count), &mut a)
                } else {
                    i1_sweep::<L, $m, false>(data, (off, step, count), &mut a)
                }
                store(&mut lanes.a, j, &a.h);
                store(&mut lanes.b, j, &a.s);
                store(&mut lanes.c, j, &a.lo);
                store(&mut lanes.d, j, &a.hi);
            }};
        }
        if m == N {
            sweep!(8)
        } else {
            sweep!(1)
        }
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
    fl.a[..l].fill(0.0);
    fl.b[..l].fill(0.0);
    t.runs(shape, L::SIZE, &[N], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:literal) => {{
                let mut sd: [f64; $m] = load(&fl.a, j);
                let mut sq: [f64; $m] = load(&fl.b, j);
                let cm: [i64; $m] = load(centres, j);
                i2_sweep::<L, $m>(data, (off, step, count), &cm, &mut sd, &mut sq);
                store(&mut fl.a, j, &sd);
                store(&mut fl.b, j, &sq);
            }};
        }
        if m == N {
            sweep!(8)
        } else {
            sweep!(1)
        }
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
            let avx2 = reduce_any::<8, true>(&data, dt, shape, need, &shift);
            let wide = reduce_any::<16, true>(&data, dt, shape, need, &shift);
            let base = reduce_any::<8, false>(&data, dt, shape, need, &shift);
            for (a, b, fused) in [
                (&best, &avx2, true),
                (&best, &wide, true),
                (&best, &base, false),
            ] {
                for (x, y) in a.iter().zip(b.iter()) {
                    assert_eq!(x.sum_hi.to_bits(), y.sum_hi.to_bits(), "{rows}x{width}");
                    if fused {
                        assert_eq!(x.m2.to_bits(), y.m2.to_bits(), "{rows}x{width}");
                    } else {
                        assert!((x.m2 - y.m2).abs() <= 1e-13 * x.m2, "{rows}x{width}");
                    }
                    assert_eq!(x.mean.to_bits(), y.mean.to_bits(), "{rows}x{width}");
                    assert_eq!((x.n, x.min, x.max), (y.n, y.min, y.max));
                }
            }
        }
    }
}
