//! Float leaves: the one-pass path (`float_tile` → `fast_tile` → `fast_sweep`), the
//! NaN-masked sweep (`f1_sweep`), and the two-pass fallback (`two_pass_tile`, `f2_sweep`).

use super::*;

/// Pass-1 float accumulators for `M` lanes.
#[derive(Clone, Copy)]
pub(super) struct F1<const M: usize> {
    pub(super) n: [f64; M],
    pub(super) s: [f64; M],
    pub(super) c: [f64; M],
    pub(super) lo: [f64; M],
    pub(super) hi: [f64; M],
}

#[inline(always)]
pub(super) fn f1_sweep<L: FloatLoad, const M: usize, const MO: bool, const MM: bool>(
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
pub(super) fn f2_sweep<L: FloatLoad, const M: usize>(
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

#[inline(always)]
pub(super) fn run_f<L: FloatLoad, const R: usize, const FMA: bool>(
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
pub(super) type FloatScratch<'a> = (
    &'a mut Lanes<f64>,
    &'a mut Vec<f64>,
    &'a mut Vec<(f64, f64)>,
    &'a mut Vec<bool>,
    (&'a mut bool, &'a mut u32),
);

#[inline(always)]
pub(super) fn f1_dispatch<L: FloatLoad, const M: usize>(
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
pub(super) struct Fast<const M: usize> {
    pub(super) key: [u32; M],
    pub(super) n: [f64; M],
    pub(super) s: [f64; M],
    pub(super) c: [f64; M],
    pub(super) lo: [f64; M],
    pub(super) hi: [f64; M],
    pub(super) q: [f64; M],
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
pub(super) fn fast_sweep<
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
                // No compensation: the tile is checked afterwards to have needed none (from
                // the smallest magnitude seen, unless the type has a unit of its own).
                if L::UNIT.is_none() {
                    let key = L::key(&e[i * L::SIZE..(i + 1) * L::SIZE]);
                    st.key[i] = st.key[i].min(key);
                }
            } else if MO {
                // Knuth's two-sum: the rounding error of each addition is kept.
                let bb = add::<FMA>(t, -st.s[i], one);
                let e1 = st.s[i] - (t - bb);
                let e2 = add::<FMA>(y, -bb, one);
                // The error joins the compensation in one addition: the loop-carried chain
                // through `c` is one add long, not two.
                st.c[i] += add::<FMA>(e1, e2, one);
            }
            st.s[i] = t;
            // NaN compares false, so it never replaces a bound.
            st.lo[i] = if x < st.lo[i] { x } else { st.lo[i] };
            st.hi[i] = if x > st.hi[i] { x } else { st.hi[i] };
            if MO {
                let d = if ok { x - k[i] } else { 0.0 };
                // The square rounded, then added: no fused multiply-add, so every build gives
                // the same bits.
                st.q[i] += d * d;
            }
        }
    }
    *a = st;
}

/// Largest accepted ratio of the squared deviations from the reference value to M2: beyond
/// it the single-pass M2 would lose more than a few bits to cancellation.
pub(super) const MAX_CANCEL: f64 = 16.0;

// Long (about 180 lines) on purpose: one loop nest whose lane arrays must stay in
// registers across the row chunks; cut into functions, the compiler spills them.
/// Reduces a tile in one pass, taking each column's first non-NaN value in the tile as its
/// reference value (`MO`: moments too, else counts, min and max; `NANS`: NaNs are skipped).
/// A column the pass cannot do is marked in `bad` (its `out` left to be overwritten): it
/// holds an infinity (or, without `NANS`, a NaN), its sums overflow, or its reference value
/// is so far from its mean that the one-pass M2 would lose accuracy. The decision is the
/// column's own, so the tiling a budget or thread count chooses never changes it. Returns how many
/// columns were marked and whether any for a non-finite value, or `Inexact` when an
/// uncompensated (`EXACT`) sum cannot be shown exact.
#[inline(always)]
pub(super) fn fast_tile<
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
                let unit = L::UNIT.unwrap_or_else(|| L::unit(lanes.b[j] as u32));
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
pub(super) struct Marked {
    pub(super) count: usize,
    pub(super) non_finite: bool,
}

/// Tiles that skip the uncompensated attempt after one fails: data too spread out for it
/// tends to stay so, but a few tiny values should not cost the whole block its speed.
pub(super) const SKIP_EXACT: u32 = 2;

/// Why a one-pass tile was declined as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Miss {
    /// Nothing to do in one pass (only counts are needed).
    Nothing,
    /// An uncompensated sum that cannot be shown exact.
    Inexact,
}

#[inline(always)]
pub(super) fn float_tile<L: FloatLoad, const R: usize, const FMA: bool>(
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
pub(super) fn two_pass_tile<L: FloatLoad>(
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
    // Counts alone (`--stats count,nan_count`) keep one accumulator a lane: 16 at a time.
    let counts_only = !bounds.moments && !bounds.minmax;
    t.runs(
        shape,
        L::SIZE,
        if counts_only {
            &[2 * N, N / 2]
        } else {
            &[N / 2]
        },
        &mut runs,
    );
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
        if m == 2 * N {
            sweep!(16)
        } else if m == N / 2 {
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
pub(super) fn finish_float_leaf(
    o: &mut Acc,
    (h, lo): (f64, f64),
    sd: f64,
    sq: f64,
    centre: f64,
    shift: f64,
) {
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
