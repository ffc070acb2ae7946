//! Integer and bool leaves: exact small-integer tiles (8- and 16-bit, `small_int_tile`), one
//! pass for 4- and 8-byte integers (`one_pass_int_tile`, `w_sweep`), and their two-pass
//! fallback (`two_pass_int_tile`, `i1_sweep`, `i2_sweep`).

use super::*;

/// Pass-1 integer accumulators for `M` lanes.
#[derive(Clone, Copy)]
pub(super) struct I1<const M: usize> {
    pub(super) h: [i64; M],
    pub(super) s: [i64; M],
    pub(super) lo: [i64; M],
    pub(super) hi: [i64; M],
}

impl<const M: usize> I1<M> {
    /// Lanes `j..j + M` of the integer lane state (`a` high sums or exact squares, `b` sums,
    /// `c` minima, `d` maxima).
    #[inline(always)]
    fn load(lanes: &Lanes<i64>, j: usize) -> Self {
        I1 {
            h: load(&lanes.a, j),
            s: load(&lanes.b, j),
            lo: load(&lanes.c, j),
            hi: load(&lanes.d, j),
        }
    }

    #[inline(always)]
    fn store(&self, lanes: &mut Lanes<i64>, j: usize) {
        store(&mut lanes.a, j, &self.h);
        store(&mut lanes.b, j, &self.s);
        store(&mut lanes.c, j, &self.lo);
        store(&mut lanes.d, j, &self.hi);
    }

    /// Adds `x` to lane `i`'s exact sum: 8-byte values in 32-bit halves, so i64 lanes cannot
    /// overflow within a leaf.
    #[inline(always)]
    fn add(&mut self, i: usize, x: i64, wide: bool) {
        if wide {
            self.h[i] += x >> 32;
            self.s[i] += x & 0xffff_ffff;
        } else {
            self.s[i] += x;
        }
    }

    #[inline(always)]
    fn bound(&mut self, i: usize, x: i64) {
        self.lo[i] = if x < self.lo[i] { x } else { self.lo[i] };
        self.hi[i] = if x > self.hi[i] { x } else { self.hi[i] };
    }
}

/// Empties the first `l` lanes of the integer lane state (see [`I1::load`]).
#[inline(always)]
fn reset_lanes(lanes: &mut Lanes<i64>, l: usize) {
    lanes.a[..l].fill(0);
    lanes.b[..l].fill(0);
    lanes.c[..l].fill(i64::MAX);
    lanes.d[..l].fill(i64::MIN);
}

/// Column `c`'s exact sum (from 32-bit halves), minimum and maximum over its lanes `c, c + w,
/// ...` below `l`.
#[inline(always)]
fn fold_wide(lanes: &Lanes<i64>, c: usize, w: usize, l: usize) -> (i128, i64, i64) {
    let mut s = 0i128;
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for j in (c..l).step_by(w) {
        s += ((lanes.a[j] as i128) << 32) + lanes.b[j] as i128;
        lo = lo.min(lanes.c[j]);
        hi = hi.max(lanes.d[j]);
    }
    (s, lo, hi)
}

#[inline(always)]
pub(super) fn i1_sweep<L: IntLoad, const M: usize, const MM: bool>(
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
            st.add(i, x, L::SIZE == 8);
            if MM {
                st.bound(i, x);
            }
        }
    }
    *a = st;
}

/// Most row groups summed in i32 lanes before folding into i64: 32768 × 65535 < 2^31.
pub(super) const SMALL_RUN: usize = 1 << 15;

/// `x - c` rounded once to f64, for any two i64 values.
#[inline(always)]
pub(super) fn diff_f64<const WIDE: bool>(x: i64, c: i64) -> f64 {
    if WIDE {
        let hi = (x >> 32) - (c >> 32);
        let lo = (x & 0xffff_ffff) - (c & 0xffff_ffff);
        hi as f64 * 4294967296.0 + lo as f64
    } else {
        (x - c) as f64
    }
}

#[inline(always)]
pub(super) fn i2_sweep<L: IntLoad, const M: usize>(
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
pub(super) fn run_i<L: IntLoad, const R: usize, const FMA: bool>(
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
            int_tile::<L, R, FMA>(
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

pub(super) type IntScratch<'a> = (&'a mut Lanes<i64>, &'a mut Lanes<f64>, &'a mut Vec<i64>);

/// One pass for integer types of at most 2 bytes: i32 sums, minima and maxima, and squares
/// summed exactly in f64 lanes (below 2^53 within a run), all folded into the i64 lane state
/// every [`SMALL_RUN`] groups.
#[inline(always)]
pub(super) fn small_sweep<L: IntLoad, const M: usize, const FMA: bool>(
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
pub(super) const BYTE_RUN: usize = 128;

/// [`small_sweep`] for 1-byte types: i16 lanes for sums (widened every [`BYTE_RUN`] groups),
/// minima and maxima, and 16-bit squares (exact: at most 255^2) summed in i32 lanes (folded
/// every [`SMALL_RUN`] groups), so each instruction takes 32 or 16 lanes.
#[inline(always)]
pub(super) fn byte_sweep<L: IntLoad, const M: usize>(
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
pub(super) fn small_int_tile<L: IntLoad, const FMA: bool>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    shift: &[i64],
    lanes: &mut Lanes<i64>,
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    reset_lanes(lanes, l);
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
                    let mut a = I1::<{ $m }>::load(lanes, j);
                    if L::SIZE == 1 {
                        byte_sweep::<L, { $m }>(data, (off, step, count), &mut a);
                    } else {
                        small_sweep::<L, { $m }, FMA>(data, (off, step, count), &mut a);
                    }
                    a.store(lanes, j);
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
pub(super) fn int_tile<L: IntLoad, const R: usize, const FMA: bool>(
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
    let n = t.rows as u64;
    if !need.moments && !need.minmax {
        // Counts only: every element is a value.
        for o in out.iter_mut() {
            *o = Acc { n, ..Acc::EMPTY };
        }
        return;
    }
    if t.rows == 0 {
        two_pass_int_tile::<L>(data, shape, t, need, shift, (lanes, fl, centres), out);
        return;
    }
    let mut bad = vec![false; t.w];
    let declined = one_pass_int_tile::<L, R>(
        data,
        shape,
        t,
        need,
        shift,
        (lanes, fl, centres),
        &mut bad,
        out,
    );
    if declined == 0 {
        return;
    }
    // The columns done in one pass keep those bits whatever their neighbours needed.
    let keep: Vec<(usize, Acc)> = (0..t.w).filter(|&c| !bad[c]).map(|c| (c, out[c])).collect();
    two_pass_int_tile::<L>(data, shape, t, need, shift, (lanes, fl, centres), out);
    for (c, a) in keep {
        out[c] = a;
    }
}

/// One-pass accumulators for 4- and 8-byte integers, `M` lanes: the exact sum in 32-bit
/// halves, min, max, and squared deviations from the lane's reference value in f64.
#[derive(Clone, Copy)]
pub(super) struct W<const M: usize> {
    pub(super) i: I1<M>,
    pub(super) q: [f64; M],
}

#[inline(always)]
pub(super) fn w_sweep<L: IntLoad, const M: usize, const MO: bool>(
    data: &[u8],
    (off0, step, count): (usize, usize, usize),
    k: &[i64; M],
    a: &mut W<M>,
) {
    let mut st = *a;
    // 4-byte values and their references are exact in f64, and so is their difference.
    let kf = k.map(|v| v as f64);
    for g in 0..count {
        let off = off0 + g * step;
        let e = &data[off..off + M * L::SIZE];
        for i in 0..M {
            let x = L::dec(&e[i * L::SIZE..(i + 1) * L::SIZE]);
            if MO {
                st.i.add(i, x, L::SIZE == 8);
                // Exact below 2^63 (checked from the bounds afterwards), then rounded once.
                let d = if L::SIZE == 8 {
                    x.wrapping_sub(k[i]) as f64
                } else {
                    L::dec_f64(&e[i * L::SIZE..(i + 1) * L::SIZE]) - kf[i]
                };
                st.q[i] += d * d;
            }
            st.i.bound(i, x);
        }
    }
    *a = st;
}

/// Reduces a tile of 4- or 8-byte integers in one pass: exact sums, minima and maxima, and
/// M2 as the squared deviations from each column's first value less the exact correction.
/// A column whose deviations cancel too much (its first value far from its mean, as for
/// floats) or could overflow is marked in `bad` for the two-pass path; returns how many.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn one_pass_int_tile<L: IntLoad, const R: usize>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    shift: &[i64],
    (lanes, fl, refs): IntScratch<'_>,
    bad: &mut [bool],
    out: &mut [Acc],
) -> usize {
    let (w, l) = (t.w, t.w * t.k);
    for (c, k) in refs[..w].iter_mut().enumerate() {
        let o = (t.r0 * shape.stride + t.c0 + c) * L::SIZE;
        *k = L::dec(&data[o..o + L::SIZE]);
    }
    for j in w..l {
        refs[j] = refs[j % w];
    }
    reset_lanes(lanes, l);
    fl.a[..l].fill(0.0);
    let mut runs = Vec::new();
    t.runs(shape, L::SIZE, &[R, 4], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:expr) => {{
                let mut a = W::<{ $m }> {
                    i: I1::load(lanes, j),
                    q: load(&fl.a, j),
                };
                let k: [i64; $m] = load(refs, j);
                if need.moments {
                    w_sweep::<L, { $m }, true>(data, (off, step, count), &k, &mut a);
                } else {
                    w_sweep::<L, { $m }, false>(data, (off, step, count), &k, &mut a);
                }
                a.i.store(lanes, j);
                store(&mut fl.a, j, &a.q);
            }};
        }
        if m == R {
            sweep!(R)
        } else if m == 4 {
            sweep!(4)
        } else {
            sweep!(1)
        }
    }
    let n = t.rows as i128;
    let nf = t.rows as f64;
    let mut declined = 0;
    for (c, o) in out.iter_mut().enumerate() {
        let (s, lo, hi) = fold_wide(lanes, c, w, l);
        let q = (c..l).step_by(w).fold(0.0f64, |q, j| q + fl.a[j]);
        *o = Acc {
            n: n as u64,
            nan: 0,
            isum: s + L::OFFSET * n,
            imin: lo as i128 + L::OFFSET,
            imax: hi as i128 + L::OFFSET,
            ..Acc::EMPTY
        };
        bad[c] = false;
        if !need.moments {
            continue;
        }
        let k = refs[c] as i128;
        let fits = hi as i128 - k <= i64::MAX as i128 && k - lo as i128 <= i64::MAX as i128;
        let d = (s - n * k) as f64;
        let m2 = q - d * (d / nf);
        if !fits || m2 * MAX_CANCEL < q {
            bad[c] = true;
            declined += 1;
            continue;
        }
        o.mean = (s - n * shift[c] as i128) as f64 / nf;
        o.m2 = m2.max(0.0);
    }
    declined
}

/// The two-pass tile for 4- and 8-byte integers: sums and bounds, then deviations from each
/// column's leaf mean.
#[inline(always)]
pub(super) fn two_pass_int_tile<L: IntLoad>(
    data: &[u8],
    shape: Shape,
    t: Tile,
    need: Need,
    shift: &[i64],
    (lanes, fl, centres): IntScratch<'_>,
    out: &mut [Acc],
) {
    let (w, l) = (t.w, t.w * t.k);
    reset_lanes(lanes, l);
    let mut runs = Vec::new();
    t.runs(shape, L::SIZE, &[N], &mut runs);
    for &(j, m, off, step, count) in &runs {
        macro_rules! sweep {
            ($m:literal) => {{
                let mut a = I1::<$m>::load(lanes, j);
                if need.minmax {
                    i1_sweep::<L, $m, true>(data, (off, step, count), &mut a)
                } else {
                    i1_sweep::<L, $m, false>(data, (off, step, count), &mut a)
                }
                a.store(lanes, j);
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
        let (s, lo, hi) = fold_wide(lanes, c, w, l);
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
