//! End-to-end scan throughput: `colstats` against a plain parallel read of the same file,
//! measured in the same run.
//!
//! ```text
//! cargo bench --bench scan -- FILE [REPEATS] [DATASET]
//! ```
//!
//! FILE is a `.npy` or HDF5 file (DATASET picks the HDF5 dataset).
//!
//! The "plain read" is the machine's warm limit for this job: every core sums whole 64 MiB
//! blocks of the file through per-block, populated memory maps (the fastest reader measured
//! on this machine class), with nothing else. The file should be in the page cache (the bench
//! reads it once first). Figures are GB/s of file bytes, best of REPEATS.

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::fs::File;

use support::{best, mapped_sum};

/// The warm limit: all of `threads` summing the file through per-block maps.
fn plain_read(file: &File, len: u64, threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| mapped_sum(file, len));
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(path) = args.first() else {
        eprintln!("usage: cargo bench --bench scan -- FILE.npy [REPEATS]");
        eprintln!(
            "(make one with: cargo run --release -p data-gen -- /tmp/big.npy --shape 33554432,16)"
        );
        return;
    };
    let repeats: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3);
    let dataset = args.get(2).cloned();
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Warm the page cache.
    plain_read(&file, len, threads);
    let gb = len as f64 / 1e9;
    let t_plain = best(repeats, || {
        plain_read(&file, len, threads);
    });
    let mut req = colstats::Request::new(path).threads(threads);
    if let Some(d) = &dataset {
        req = req.dataset(d.clone());
    }
    let t_all = best(repeats, || {
        req.run().unwrap();
    });
    let t_one = best(repeats, || {
        req.clone().threads(1).run().unwrap();
    });
    let t_mm = best(repeats, || {
        req.clone()
            .stats(&[colstats::Stat::Min, colstats::Stat::Max])
            .run()
            .unwrap();
    });
    println!(
        "file {path}: {:.2} GB, {threads} threads, best of {repeats}",
        gb
    );
    println!("| reader | seconds | GB/s | fraction of plain read |");
    println!("|---|---|---|---|");
    for (name, t) in [
        ("plain parallel read (per-block maps, sum)", t_plain),
        ("colstats stats (all statistics)", t_all),
        ("colstats stats, 1 thread", t_one),
        ("colstats stats --stats min,max", t_mm),
    ] {
        println!("| {name} | {t:.3} | {:.2} | {:.2} |", gb / t, t_plain / t);
    }
}
