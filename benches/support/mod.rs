//! Pieces the end-to-end benches share: the plain reader that defines the warm limit.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use memmap2::MmapOptions;
use rayon::prelude::*;

/// Bytes per block of the plain readers (the fastest map size measured on this machine class).
pub const BLOCK: u64 = 64 << 20;

/// A plain f64 sum of `b` over 8 lanes: the least work a reader can do with the bytes.
pub fn sum_bytes(b: &[u8]) -> f64 {
    let mut acc = [0.0f64; 8];
    for c in b.chunks_exact(64) {
        for (a, x) in acc.iter_mut().zip(c.chunks_exact(8)) {
            *a += f64::from_le_bytes(x.try_into().unwrap());
        }
    }
    acc.iter().sum()
}

/// Sums the first `len` bytes of `file` through per-block populated maps, in parallel on the
/// current rayon pool; returns a value derived from the sums so the work is not optimised out.
pub fn mapped_sum(file: &File, len: u64) -> u64 {
    let sink = AtomicU64::new(0);
    (0..len.div_ceil(BLOCK)).into_par_iter().for_each(|b| {
        let off = b * BLOCK;
        let n = BLOCK.min(len - off) as usize;
        // SAFETY: read-only map of a file nobody truncates during the benchmark.
        let m = unsafe { MmapOptions::new().offset(off).len(n).populate().map(file) }.unwrap();
        sink.fetch_add(sum_bytes(&m).to_bits() & 1, Ordering::Relaxed);
    });
    sink.load(Ordering::Relaxed)
}

/// The shortest of `repeats` timed runs of `f`, in seconds.
pub fn best(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Drops `path` from the page cache (`posix_fadvise(DONTNEED)` after a sync).
pub fn drop_cache(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let _ = f.sync_all();
    // SAFETY: advisory call on an open descriptor.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// Cold limit: sequential 16 MiB reads of the uncached file, in GB/s.
pub fn cold_limit(path: &std::path::Path) -> f64 {
    use std::io::Read;
    drop_cache(path);
    let mut f = File::open(path).unwrap();
    let mut buf = vec![0u8; 16 << 20];
    let t = Instant::now();
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    n as f64 / t.elapsed().as_secs_f64() / 1e9
}
