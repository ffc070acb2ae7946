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
    let fd = job.file.as_raw_fd();
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

pub(super) fn map_block(job: &Job<'_>, block: &Block) -> Result<(Mmap, usize)> {
    let path = &job.meta.path;
    let len_now = job.file.metadata().map_err(|e| Error::io(path, e))?.len();
    if block.offset + block.span > len_now {
        return Err(Error::size(
            path,
            format!("the file shrank to {len_now} bytes while being read"),
        ));
    }
    let aligned = block.offset / PAGE * PAGE;
    let delta = (block.offset - aligned) as usize;
    let mut opts = MmapOptions::new();
    opts.offset(aligned).len(block.span as usize + delta);
    if block.dense {
        opts.populate();
    }
    // SAFETY: the map is read-only and private to this call; the file is not written by
    // colstats. Another process truncating it would raise SIGBUS (see the module docs).
    let map = unsafe { opts.map(job.file) }.map_err(|e| Error::io(path, e))?;
    let _ = map.advise(Advice::Sequential);
    Ok((map, delta))
}

pub(super) fn read_at(job: &Job<'_>, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    job.file
        .read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(&job.meta.path, e))?;
    Ok(buf)
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
            job.file,
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
pub(super) fn read_dense(job: &Job<'_>, block: &Block, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(block.span as usize, 0);
    job.file
        .read_exact_at(buf, block.offset)
        .map_err(|e| Error::io(&job.meta.path, e))
}
