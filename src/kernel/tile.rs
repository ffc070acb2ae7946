//! Tiling a block into column tiles and row chunks, lane arrays, prefetching, and the
//! arithmetic helpers the float and integer loops share.

use super::*;

pub(super) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// How a leaf's columns are visited: column tiles of `tw` columns and `k` rows per lane
/// group; narrow contiguous rows are grouped so the lane count is a multiple of [`LANES`].
/// The lanes (and so every rounding) are the same whatever instruction set runs them.
pub(super) fn tiling(shape: Shape, size: usize) -> (usize, usize) {
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
pub(super) struct Tile {
    pub(super) r0: usize,
    pub(super) rows: usize,
    pub(super) c0: usize,
    pub(super) w: usize,
    pub(super) k: usize,
}

/// Rows `r0..r0+rows` of columns from `c0`: where a wide tile's next chunk lies.
#[derive(Clone, Copy)]
pub(super) struct Chunk {
    pub(super) r0: usize,
    pub(super) rows: usize,
    pub(super) c0: usize,
}

impl Chunk {
    /// Bytes from element `(r0, c0)` to the chunk's first element.
    pub(super) fn delta(self, shape: Shape, size: usize, (r0, c0): (usize, usize)) -> isize {
        let rows = self.r0 as isize - r0 as isize;
        let cols = self.c0 as isize - c0 as isize;
        (rows * shape.stride as isize + cols) * size as isize
    }

    /// Prefetches lanes `j..j+m` of the chunk (elements of `size` bytes).
    #[inline(always)]
    pub(super) fn prefetch(self, data: &[u8], shape: Shape, size: usize, (j, m): (usize, usize)) {
        let m = m.min(shape.width.saturating_sub(self.c0 + j));
        for g in self.r0..self.r0 + self.rows {
            prefetch(data, (g * shape.stride + self.c0 + j) * size, m * size);
        }
    }
}

/// A run of lanes over row groups: first lane, lane count, byte offset, byte step, groups.
pub(super) type Run = (usize, usize, usize, usize, usize);

impl Tile {
    /// Whether the tile is swept a chunk of rows at a time (one row per lane group, many
    /// columns), rather than each run going down all its rows.
    pub(super) fn is_wide(&self) -> bool {
        self.k == 1 && self.w >= 128
    }

    /// Rows `r..r+chunk` of the tile, and for a wide tile the chunk to fetch while they
    /// are swept.
    pub(super) fn chunk(&self, shape: Shape, r: usize, chunk: usize) -> (Tile, Option<Chunk>) {
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
    pub(super) fn next_chunk(&self, shape: Shape, r: usize, chunk: usize) -> Option<Chunk> {
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
    pub(super) fn runs(&self, shape: Shape, size: usize, widths: &[usize], out: &mut Vec<Run>) {
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

/// Per-lane scratch state of a tile, `l` lanes.
pub(super) struct Lanes<T> {
    pub(super) a: Vec<T>,
    pub(super) b: Vec<T>,
    pub(super) c: Vec<T>,
    pub(super) d: Vec<T>,
    pub(super) e: Vec<T>,
    pub(super) f: Vec<T>,
}

impl<T: Copy> Lanes<T> {
    pub(super) fn new(len: usize, z: T) -> Self {
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

pub(super) fn load<const M: usize, T: Copy + Default>(v: &[T], j: usize) -> [T; M] {
    let mut out = [T::default(); M];
    out.copy_from_slice(&v[j..j + M]);
    out
}

pub(super) fn store<const M: usize, T: Copy>(v: &mut [T], j: usize, x: &[T; M]) {
    v[j..j + M].copy_from_slice(x);
}

/// Asks for `len` bytes of `data` from `off` to be brought into the L2 cache: rows of wide
/// tiles are read in short pieces far apart, which the hardware prefetchers do not follow.
#[inline(always)]
pub(super) fn prefetch(data: &[u8], off: usize, len: usize) {
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
pub(super) fn prefetch_at(p: *const u8) {
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
pub(super) fn add<const FMA: bool>(a: f64, b: f64, one: f64) -> f64 {
    if FMA {
        a.mul_add(one, b)
    } else {
        a + b
    }
}

/// `h + l - n * k`, rounded once (`(h, l)` a double-double sum, `n * k` formed exactly).
#[inline(always)]
pub(super) fn dd_minus(h: f64, l: f64, n: f64, k: f64) -> f64 {
    let p = n * k;
    let pe = n.mul_add(k, -p);
    let (s, e) = two_sum(h, -p);
    s + ((e + l) - pe)
}
