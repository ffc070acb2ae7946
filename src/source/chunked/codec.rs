//! Undoing the deflate, shuffle and Fletcher-32 stages of a stored chunk: HDF5's filters,
//! and what other chunked formats (Zarr's zlib and shuffle) would need. Format-neutral:
//! a format maps its own filter ids to [`Codec`]s.

/// One stage of a chunk's write pipeline that colstats undoes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// zlib-wrapped deflate (gzip in h5py's terms).
    Deflate,
    /// Byte shuffle: every element's first byte, then every second byte, ...
    Shuffle,
    /// A Fletcher-32 checksum appended to the chunk (HDF5's variant).
    Fletcher32,
}

/// HDF5's Fletcher-32 over `data` (H5_checksum_fletcher32).
pub fn fletcher32(data: &[u8]) -> u32 {
    let (mut s1, mut s2) = (0u32, 0u32);
    let words = data.len() / 2;
    let mut i = 0;
    let mut left = words;
    while left > 0 {
        let t = left.min(360);
        left -= t;
        for _ in 0..t {
            s1 = s1.wrapping_add(((data[i] as u32) << 8) | data[i + 1] as u32);
            s2 = s2.wrapping_add(s1);
            i += 2;
        }
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    if data.len() % 2 == 1 {
        s1 = s1.wrapping_add((data[i] as u32) << 8);
        s2 = s2.wrapping_add(s1);
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
    (s2 << 16) | s1
}

/// Byte un-shuffle for `S`-byte elements: `src` holds every element's byte 0, then every
/// byte 1, ...; writes whole elements in order (sequential stores, `S` sequential streams).
#[inline(never)]
fn unshuffle<const S: usize>(src: &[u8], dst: &mut [u8], n: usize) {
    let streams: [&[u8]; S] = std::array::from_fn(|b| &src[b * n..(b + 1) * n]);
    for (j, el) in dst[..n * S].chunks_exact_mut(S).enumerate() {
        for b in 0..S {
            el[b] = streams[b][j];
        }
    }
}

/// Undoes the pipeline `codecs` (in write order) on one stored chunk; `out` receives
/// `expect` bytes. Bit i of `mask` set: stage i was skipped when this chunk was written.
/// `inflater` keeps the inflate state between chunks.
#[allow(clippy::too_many_arguments)]
pub fn decode_chunk(
    codecs: &[Codec],
    mask: u32,
    itemsize: usize,
    raw: &[u8],
    expect: usize,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    inflater: &mut Inflater,
) -> std::result::Result<(), String> {
    out.clear();
    out.extend_from_slice(raw);
    for (i, c) in codecs.iter().enumerate().rev() {
        if mask & (1 << i) != 0 {
            continue;
        }
        match c {
            Codec::Fletcher32 => {
                if out.len() < 4 {
                    return Err("fletcher32: chunk shorter than its checksum".into());
                }
                let n = out.len() - 4;
                let stored = u32::from_le_bytes(out[n..].try_into().expect("4 bytes"));
                let sum = fletcher32(&out[..n]);
                // Old libhdf5 wrote the checksum byte-swapped; it accepts both, as we do.
                if stored != sum && stored != sum.swap_bytes() {
                    return Err(format!(
                        "fletcher32 checksum mismatch (stored {stored:#010x}, computed {sum:#010x})"
                    ));
                }
                out.truncate(n);
            }
            Codec::Deflate => {
                scratch.clear();
                scratch.resize(expect, 0);
                let n = inflate(inflater, out, scratch)?;
                if n != expect {
                    return Err(format!("deflate: {n} bytes decoded, {expect} expected"));
                }
                std::mem::swap(out, scratch);
            }
            Codec::Shuffle => {
                let s = itemsize.max(1);
                if s > 1 {
                    let n = out.len() / s;
                    scratch.clear();
                    scratch.resize(out.len(), 0);
                    match s {
                        2 => unshuffle::<2>(out, scratch, n),
                        4 => unshuffle::<4>(out, scratch, n),
                        8 => unshuffle::<8>(out, scratch, n),
                        _ => {
                            for b in 0..s {
                                for j in 0..n {
                                    scratch[j * s + b] = out[b * n + j];
                                }
                            }
                        }
                    }
                    let tail = n * s;
                    scratch[tail..].copy_from_slice(&out[tail..]);
                    std::mem::swap(out, scratch);
                }
            }
        }
    }
    if out.len() != expect {
        return Err(format!(
            "{} bytes after decoding, {expect} expected",
            out.len()
        ));
    }
    Ok(())
}

/// The inflate state kept between chunks (libdeflate's decompressor, with the `deflate`
/// feature).
#[cfg(feature = "deflate")]
pub type Inflater = Option<libdeflater::Decompressor>;
/// Without the `deflate` feature there is nothing to keep.
#[cfg(not(feature = "deflate"))]
pub type Inflater = ();

#[cfg(feature = "deflate")]
fn inflate(state: &mut Inflater, src: &[u8], dst: &mut [u8]) -> std::result::Result<usize, String> {
    state
        .get_or_insert_with(libdeflater::Decompressor::new)
        .zlib_decompress(src, dst)
        .map_err(|e| format!("deflate: {e}"))
}

#[cfg(not(feature = "deflate"))]
fn inflate(_: &mut Inflater, _: &[u8], _: &mut [u8]) -> std::result::Result<usize, String> {
    Err("deflate: this colstats was built without deflate support".into())
}
