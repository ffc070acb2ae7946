//! Reading whole rows out of a regular grid of chunks, whatever format stores them: the
//! format says where each chunk's stored bytes are (a [`Fetched`]), this module decodes them
//! ([`super::codec`]), fills never-written chunks with the fill value, crops edge chunks and
//! copies each chunk's part into the block.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::codec::{decode_chunk, Codec, Inflater};
use crate::error::{Error, Result};

/// A chunked array's layout: what [`read_rows`] needs besides the chunks themselves.
#[derive(Clone, Copy, Debug)]
pub struct Grid<'a> {
    /// The array's shape.
    pub shape: &'a [u64],
    /// The chunk shape.
    pub chunk: &'a [u64],
    /// Chunks along each dimension.
    pub grid: &'a [u64],
    /// Bytes per element.
    pub itemsize: usize,
    /// The pipeline chunks were written through, in write order.
    pub codecs: &'a [Codec],
    /// One element of the fill value (file byte order), for chunks never written.
    pub fill: &'a [u8],
}

/// Where one chunk's stored bytes are, as the format found them.
pub enum Fetched<'f> {
    /// Never written: every element is the fill value.
    Missing,
    /// In the scratch's `raw` buffer, with its stage-skip mask.
    Stored(u32),
    /// Unfiltered, at `offset` of `file`: the rows needed are read straight into place.
    InFile(&'f File, u64),
}

/// Locates chunk `index` (C order over the grid), whose first element is `origin`; leaves
/// its stored bytes in the buffer when it returns [`Fetched::Stored`].
pub type FetchFn<'a, 'f> = dyn FnMut(u64, &[u64], &mut Vec<u8>) -> Result<Fetched<'f>> + 'a;

/// Per-worker buffers for chunk decoding, reused across chunks.
#[derive(Default)]
pub struct ChunkScratch {
    /// A chunk's stored bytes, filled by the format's fetch.
    pub raw: Vec<u8>,
    tmp: Vec<u8>,
    out: Vec<u8>,
    inflater: Inflater,
}

/// Fills `out` with rows `r0..r1` (all columns, C order, file byte order) of a chunked
/// array. `fetch(index, origin, raw)` locates the chunk with C-order grid index `index` and
/// first element `origin`, leaving its stored bytes in `raw` when it returns
/// [`Fetched::Stored`]. `corrupt(origin, what)` words the error for a chunk that cannot be
/// decoded.
pub fn read_rows<'f>(
    g: &Grid<'_>,
    (r0, r1): (u64, u64),
    sc: &mut ChunkScratch,
    out: &mut [u8],
    fetch: &mut FetchFn<'_, 'f>,
    corrupt: &dyn Fn(&[u64], String) -> Error,
) -> Result<()> {
    let (shape, c, itemsize) = (g.shape, g.chunk, g.itemsize);
    let nd = shape.len();
    let row_elems: u64 = shape[1..].iter().product();
    let chunk_elems: usize = c.iter().product::<u64>() as usize;
    let expect = chunk_elems * itemsize;
    debug_assert_eq!(out.len() as u64, (r1 - r0) * row_elems * itemsize as u64);
    // C-order strides of the trailing dims in the output row, and of the chunk.
    let mut dst_stride = vec![1u64; nd];
    let mut src_stride = vec![1u64; nd];
    for k in (0..nd.saturating_sub(1)).rev() {
        dst_stride[k] = dst_stride[k + 1] * shape[k + 1];
        src_stride[k] = src_stride[k + 1] * c[k + 1];
    }
    // Chunks that span every trailing dimension hold whole rows, laid out as in `out`.
    let full_rows = (1..nd).all(|k| c[k] == shape[k]);
    let b0 = r0 / c[0];
    let b1 = r1.div_ceil(c[0]);
    let others: u64 = g.grid[1..].iter().product();
    let all_skipped = |m: u32| (0..g.codecs.len()).all(|i| m & (1 << i) != 0);
    for band in b0..b1 {
        for o in 0..others {
            // Grid coordinates of this chunk (dims 1..) from `o`, C order.
            let mut gc = vec![0u64; nd];
            gc[0] = band;
            let mut rem = o;
            for k in (1..nd).rev() {
                gc[k] = rem % g.grid[k];
                rem /= g.grid[k];
            }
            let origin: Vec<u64> = gc.iter().zip(c).map(|(a, b)| a * b).collect();
            let fetched = fetch(band * others + o, &origin, &mut sc.raw)?;
            let data: &[u8] = match fetched {
                Fetched::InFile(file, offset) if full_rows => {
                    // Plain chunks spanning whole rows: read the needed rows in place.
                    let first = r0.saturating_sub(origin[0]);
                    let last = c[0].min(r1 - origin[0]);
                    let row_bytes = (row_elems as usize) * itemsize;
                    let dst = ((origin[0] + first - r0) as usize) * row_bytes;
                    let len = ((last - first) as usize) * row_bytes;
                    file.read_exact_at(&mut out[dst..dst + len], offset + first * row_bytes as u64)
                        .map_err(|e| corrupt(&origin, format!("cannot be read: {e}")))?;
                    continue;
                }
                Fetched::InFile(file, offset) => {
                    sc.raw.resize(expect, 0);
                    file.read_exact_at(&mut sc.raw, offset)
                        .map_err(|e| corrupt(&origin, format!("cannot be read: {e}")))?;
                    &sc.raw
                }
                Fetched::Missing => {
                    sc.out.clear();
                    for _ in 0..chunk_elems {
                        sc.out.extend_from_slice(g.fill);
                    }
                    &sc.out
                }
                Fetched::Stored(m) if all_skipped(m) => {
                    if sc.raw.len() != expect {
                        return Err(corrupt(
                            &origin,
                            format!("{} bytes stored, {expect} expected", sc.raw.len()),
                        ));
                    }
                    &sc.raw
                }
                Fetched::Stored(m) => {
                    decode_chunk(
                        g.codecs,
                        m,
                        itemsize,
                        &sc.raw,
                        expect,
                        &mut sc.tmp,
                        &mut sc.out,
                        &mut sc.inflater,
                    )
                    .map_err(|m| corrupt(&origin, m))?;
                    &sc.out
                }
            };
            copy_chunk_part(
                data,
                out,
                &origin,
                (r0, r1),
                (shape, c),
                (&dst_stride, &src_stride),
                itemsize,
            );
        }
    }
    Ok(())
}

/// Copies the part of a decoded chunk (whose first element is at `origin`) that lies inside
/// rows `r0..r1` and the dataset's extent into `out` (rows `r0..r1`, C order), in runs along
/// the last dimension.
fn copy_chunk_part(
    data: &[u8],
    out: &mut [u8],
    origin: &[u64],
    (r0, r1): (u64, u64),
    (shape, c): (&[u64], &[u64]),
    (dst_stride, src_stride): (&[u64], &[u64]),
    itemsize: usize,
) {
    let nd = shape.len();
    let row_elems: u64 = shape[1..].iter().product();
    // Copy the chunk's part inside rows r0..r1 and the extent: runs along the last
    // dimension.
    let first = r0.saturating_sub(origin[0]);
    let valid: Vec<u64> = (0..nd)
        .map(|k| {
            let lim = if k == 0 { r1 } else { shape[k] };
            c[k].min(lim - origin[k])
        })
        .collect();
    let run = if nd == 1 {
        (valid[0] - first) as usize * itemsize
    } else {
        valid[nd - 1] as usize * itemsize
    };
    let mut idx_local = vec![0u64; nd];
    idx_local[0] = first;
    loop {
        let src: u64 = (0..nd).map(|k| idx_local[k] * src_stride[k]).sum();
        let row = origin[0] + idx_local[0] - r0;
        let mut dst = row * row_elems;
        for k in 1..nd {
            dst += (origin[k] + idx_local[k]) * dst_stride[k];
        }
        let (s0, d0) = (src as usize * itemsize, dst as usize * itemsize);
        out[d0..d0 + run].copy_from_slice(&data[s0..s0 + run]);
        // Advance over all dims but the last.
        let mut k = nd - 1;
        loop {
            if k == 0 {
                break;
            }
            k -= 1;
            idx_local[k] += 1;
            if idx_local[k] < valid[k] {
                break;
            }
            idx_local[k] = if k == 0 { first } else { 0 };
            if k == 0 {
                k = usize::MAX;
                break;
            }
        }
        if k == usize::MAX || nd == 1 {
            break;
        }
    }
}
