//! Reading bytes: the mapping policy (`IoMode`, network filesystems), per-block maps,
//! `pread` into reused buffers, readahead for blocks not yet cached, and the buffered read
//! of a block from chunked or libhdf5 storage.

use super::*;

/// How blocks of contiguous data are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IoMode {
    /// Maps on local filesystems, reads on network filesystems.
    #[default]
    Auto,
    /// Per-block memory maps, populated up front.
    Mmap,
    /// `pread` of whole blocks into reused buffers (one copy, no page-table work).
    Read,
}

impl IoMode {
    /// True when blocks of `file` should be read rather than mapped.
    pub fn resolve(self, file: &File) -> bool {
        match self {
            IoMode::Mmap => false,
            IoMode::Read => true,
            IoMode::Auto => on_network_fs(file),
        }
    }
}

/// Whether `file` lives on a network or FUSE filesystem (NFS, SMB/CIFS, Ceph, Lustre, GPFS,
/// FUSE), where faulting a map in 4 KiB pages turns into many small requests.
pub(super) fn on_network_fs(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: fstatfs fills the struct we own for an open descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    const NETWORK: [i64; 8] = [
        0x6969,     // NFS
        0x517B,     // SMB
        0xFF534D42, // CIFS
        0xFE534D42, // SMB2
        0x00C36400, // Ceph
        0x0BD00BD0, // Lustre
        0x47504653, // GPFS
        0x65735546, // FUSE
    ];
    NETWORK.contains(&(st.f_type as i64))
}

pub(super) const PAGE: u64 = 4096;

/// Asks the kernel to start reading a dense block that is not in the page cache, so the
/// disk stays busy while this block is reduced. A one-byte non-blocking read probes the
/// cache first: on cached data the advice would only cost page-cache lookups.
pub(super) fn prefetch(job: &Job<'_>, block: &Block) {
    if !matches!(job.storage, Storage::Mapped) || !block.dense {
        return;
    }
    use std::os::fd::AsRawFd;
    let fd = job.inputs[block.seg].file.as_raw_fd();
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: one valid iovec over a live byte; the descriptor is open for the whole run.
    let got = unsafe { libc::preadv2(fd, &iov, 1, block.offset as i64, libc::RWF_NOWAIT) };
    if got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
        // SAFETY: advice only; any range is valid.
        unsafe {
            libc::posix_fadvise(
                fd,
                block.offset as i64,
                block.span as i64,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
}

pub(super) fn map_block(input: &Input<'_>, block: &Block) -> Result<(GuardedMap, usize)> {
    map_span(input, block.offset, block.span, block.dense)
}

/// Maps `span` bytes at `offset` of an input's file (page-aligned around them): the map and
/// where the first byte lies in it.
fn map_span(
    input: &Input<'_>,
    offset: u64,
    span: u64,
    populate: bool,
) -> Result<(GuardedMap, usize)> {
    let path = &input.meta.path;
    let len_now = input.file.metadata().map_err(|e| Error::io(path, e))?.len();
    if offset + span > len_now {
        return Err(shrank(path, len_now));
    }
    let aligned = offset / PAGE * PAGE;
    let delta = (offset - aligned) as usize;
    let mut opts = MmapOptions::new();
    opts.offset(aligned).len(span as usize + delta);
    if populate {
        opts.populate();
    }
    // SAFETY: the map is read-only and private to this call; the file is not written by
    // colstats. Another process truncating it makes its pages past the new end raise SIGBUS,
    // which the guard turns into zeros and an error from `check_map` (see `guard`).
    let map = unsafe { opts.map(input.file) }.map_err(|e| Error::io(path, e))?;
    let _ = map.advise(Advice::Sequential);
    Ok((GuardedMap::new(map), delta))
}

/// The error of an input whose file is now `len` bytes, shorter than its data.
pub(super) fn shrank(path: &std::path::Path, len: u64) -> Error {
    Error::size(
        path,
        format!("the file shrank to {len} bytes while being read (truncated by another process?)"),
    )
}

/// After a mapped block was used: an error if any of its bytes were not the file's own
/// (see `guard`), and its results must be thrown away.
pub(super) fn check_map(input: &Input<'_>, map: &GuardedMap, needed: u64) -> Result<()> {
    map.check(input.file, needed)
        .map_err(|len| shrank(&input.meta.path, len))
}

/// Gathers a [`crate::plan::Role::Total`] block (one leaf whose rows lie in several
/// inputs) into `sc.block`, in the domain's byte order, and returns its geometry there.
///
/// The rows are packed `width + 1` elements apart, or `width` when the block spans whole
/// rows: exactly as dense, or as strided, as the same rows mapped from one file, because the
/// kernel sums narrow dense rows in another order than strided ones.
pub(super) fn gather_leaf(job: &Job<'_>, block: &Block, sc: &mut Scratch) -> Result<Shape> {
    let meta = job.meta;
    let s = meta.dtype.size;
    let c = meta.columns as usize;
    let (c0, c1) = (block.runs.start as usize, block.runs.end as usize);
    let w = c1 - c0;
    let stride = if w == c { c } else { w + 1 };
    let (r0, r1) = (block.rows.start, block.rows.end);
    let n = (r1 - r0) as usize;
    sc.block.clear();
    sc.block.resize(n * stride * s, 0);
    let mut row = r0;
    while row < r1 {
        let i = job.inputs.partition_point(|x| x.start <= row) - 1;
        let input = &job.inputs[i];
        let end = r1.min(input.start + input.meta.rows);
        let k = (end - row) as usize;
        let offset =
            input.meta.data_offset + ((row - input.start) * c as u64 + c0 as u64) * s as u64;
        let span = (((k - 1) * c + w) * s) as u64;
        let (map, delta) = map_span(input, offset, span, false)?;
        let src = &map[delta..];
        let checked = offset + span;
        let at = (row - r0) as usize * stride * s;
        if w == c {
            sc.block[at..at + k * c * s].copy_from_slice(&src[..k * c * s]);
        } else {
            for j in 0..k {
                let d = at + j * stride * s;
                sc.block[d..d + w * s].copy_from_slice(&src[j * c * s..j * c * s + w * s]);
            }
        }
        check_map(input, &map, checked)?;
        drop(map);
        if input.meta.dtype.order != meta.dtype.order && s > 1 {
            for j in 0..k {
                let d = at + j * stride * s;
                for e in sc.block[d..d + w * s].chunks_exact_mut(s) {
                    e.reverse();
                }
            }
        }
        row = end;
    }
    Ok(Shape {
        rows: n,
        width: w,
        stride,
        leaf_rows: block.shape.leaf_rows,
    })
}

/// A worker's reusable buffers: fresh allocations per block would fault in new pages.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) block: Vec<u8>,
    #[cfg(feature = "hdf5")]
    pub(super) chunks: crate::source::hdf5::ChunkScratch,
}

/// Reads a block of whole rows from storage that is not memory-mapped into `sc.block`.
#[cfg(feature = "hdf5")]
pub(super) fn read_block(job: &Job<'_>, block: &Block, sc: &mut Scratch) -> Result<()> {
    use crate::source::hdf5 as h5;
    let meta = job.meta;
    let file = job.inputs[0].file;
    let bytes = (block.rows.end - block.rows.start) * meta.columns * meta.dtype.size as u64;
    sc.block.resize(bytes as usize, 0);
    let buf = &mut sc.block;
    match job.storage {
        Storage::Mapped => unreachable!("mapped storage is not buffered"),
        Storage::Hdf5(r) => h5::read_rows(
            &meta.path,
            r,
            &meta.shape,
            block.rows.start,
            block.rows.end,
            buf,
        )?,
        Storage::Chunked(ch) => h5::read_chunk_rows(
            &meta.path,
            job.dataset.unwrap_or("?"),
            file,
            ch,
            &meta.shape,
            meta.dtype.size,
            (block.rows.start, block.rows.end),
            &mut sc.chunks,
            buf,
        )?,
    }
    Ok(())
}

#[cfg(not(feature = "hdf5"))]
pub(super) fn read_block(_job: &Job<'_>, _block: &Block, _sc: &mut Scratch) -> Result<()> {
    unreachable!("only HDF5 storage is buffered")
}

/// Reads a dense block's span into `buf` with `pread` (`--io read`).
pub(super) fn read_dense(input: &Input<'_>, block: &Block, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(block.span as usize, 0);
    input.file.read_exact_at(buf, block.offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            shrank(
                &input.meta.path,
                input.file.metadata().map_or(0, |m| m.len()),
            )
        } else {
            Error::io(&input.meta.path, e)
        }
    })
}
