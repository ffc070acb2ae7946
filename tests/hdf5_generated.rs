//! HDF5 datasets written by the tests themselves (through the hdf5 crate) against the same
//! values as `.npy`: contiguous, chunked, gzip, gzip+shuffle, fletcher32, fill values,
//! edge chunks, a user block; bit-identical across thread counts and block sizes.

use crate::common::*;
use ndarray::{Array2, Array3};
use std::path::Path;

fn run(path: &Path, extra: &[&str]) -> serde_json::Value {
    stats_json(path, extra)
}

/// Asserts two stats objects agree: counts, min, max exactly; sums and means to a few ulps;
/// variances to 1e-12 relative (leaf sizes differ between layouts).
fn assert_close(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    let bad = stats_mismatches(
        a,
        b,
        &["count", "nan_count", "min", "max"],
        &[
            ("sum", 1e-15),
            ("mean", 1e-15),
            ("var", 1e-12),
            ("std", 1e-12),
        ],
        what,
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn data2(rows: usize, cols: usize, seed: u64) -> Array2<f64> {
    let mut rng = Rng(seed);
    Array2::from_shape_fn((rows, cols), |(r, c)| {
        if (r * 7 + c) % 53 == 0 {
            f64::NAN
        } else {
            1e6 + rng.range(-1 << 40, 1 << 40) as f64 / (1u64 << 30) as f64
        }
    })
}

fn npy_twin(dir: &Path, a: &Array2<f64>) -> std::path::PathBuf {
    let p = dir.join("twin.npy");
    let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(
        &p,
        "<f8",
        false,
        &[a.nrows() as u64, a.ncols() as u64],
        &bytes,
    );
    p
}

#[test]
fn layouts_and_filters_match_npy_and_are_thread_invariant() {
    let dir = tmpdir();
    let a = data2(50_003, 7, 3);
    let twin = run(&npy_twin(dir.path(), &a), &[]);
    let h = dir.path().join("many.h5");
    {
        let f = hdf5::File::create(&h).unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .create("contig")
            .unwrap();
        let g = f.create_group("g").unwrap().create_group("deep").unwrap();
        g.new_dataset_builder()
            .with_data(&a)
            .chunk((1000, 3))
            .create("chunked")
            .unwrap();
        g.new_dataset_builder()
            .with_data(&a)
            .chunk((4096, 7))
            .deflate(6)
            .create("gzip")
            .unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((777, 5))
            .shuffle()
            .deflate(9)
            .create("gzip_shuffle")
            .unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((2048, 2))
            .shuffle()
            .deflate(1)
            .fletcher32()
            .create("all_three")
            .unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((1000, 7))
            .fletcher32()
            .create("fletcher")
            .unwrap();
    }
    for ds in [
        "/contig",
        "/g/deep/chunked",
        "g/deep/gzip",
        "/gzip_shuffle",
        "/all_three",
        "/fletcher",
    ] {
        let base = run(&h, &["--dataset", ds, "--threads", "1"]);
        assert_eq!(
            base["dataset"],
            if ds.starts_with('/') {
                ds.to_string()
            } else {
                format!("/{ds}")
            }
        );
        assert_close(&base, &twin, ds);
        for extra in [
            &["--threads", "2"][..],
            &["--threads", "3", "--block-limit", "1"][..],
            &["--threads", "2", "--memory", "4MiB"][..],
        ] {
            let mut args = vec!["--dataset", ds];
            args.extend_from_slice(extra);
            assert_eq!(run(&h, &args)["stats"], base["stats"], "{ds} {extra:?}");
        }
        // Subsets and row ranges read the same data.
        let sub = run(
            &h,
            &["--dataset", ds, "--columns", "6,1", "--rows", "17:40000"],
        );
        let tsub = run(
            &dir.path().join("twin.npy"),
            &["--columns", "6,1", "--rows", "17:40000"],
        );
        assert_close(&sub, &tsub, ds);
    }
}

#[test]
fn fill_values_edge_chunks_and_three_d() {
    let dir = tmpdir();
    let h = dir.path().join("fill.h5");
    let mut rng = Rng(5);
    let cube = Array3::from_shape_fn((301, 3, 5), |_| rng.range(-1000, 1000) as i32);
    {
        let f = hdf5::File::create(&h).unwrap();
        let d = f
            .new_dataset::<f64>()
            .shape((10_000, 4))
            .chunk((1000, 3))
            .fill_value(7.5)
            .create("partial")
            .unwrap();
        let part = Array2::from_elem((2500, 4), 1.0);
        d.write_slice(&part, ndarray::s![0..2500, ..]).unwrap();
        f.new_dataset_builder()
            .with_data(&cube)
            .chunk((64, 2, 3))
            .deflate(4)
            .create("cube")
            .unwrap();
    }
    let p = run(&h, &["--dataset", "/partial"]);
    // Rows 0..2500 are 1.0; the rest is the fill value, written or not.
    let sum = 2500.0 + 7500.0 * 7.5;
    for c in 0..4 {
        assert_eq!(num(&p["stats"]["sum"][c]), sum);
        assert_eq!(num(&p["stats"]["min"][c]), 1.0);
        assert_eq!(num(&p["stats"]["max"][c]), 7.5);
    }
    let j = run(&h, &["--dataset", "/cube"]);
    assert_eq!(j["shape"], serde_json::json!([301, 3, 5]));
    assert_eq!(j["dtype"], "int32");
    for jj in 0..3 {
        for k in 0..5 {
            let col = jj * 5 + k;
            let s: i64 = (0..301).map(|i| cube[[i, jj, k]] as i64).sum();
            let mn = (0..301).map(|i| cube[[i, jj, k]]).min().unwrap();
            assert_eq!(
                j["stats"]["sum"][col].to_string(),
                s.to_string(),
                "col {col}"
            );
            assert_eq!(j["stats"]["min"][col].to_string(), mn.to_string());
        }
    }
}

#[test]
fn user_block_shifts_chunk_addresses() {
    let dir = tmpdir();
    let h = dir.path().join("ub.h5");
    let a = data2(9001, 3, 8);
    {
        let f = hdf5::File::with_options()
            .with_fcpl(|p| p.userblock(1024))
            .create(&h)
            .unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((500, 3))
            .shuffle()
            .deflate(5)
            .create("z")
            .unwrap();
        f.new_dataset_builder().with_data(&a).create("c").unwrap();
    }
    let twin = run(&npy_twin(dir.path(), &a), &[]);
    assert_close(
        &run(&h, &["--dataset", "z"]),
        &twin,
        "chunked with user block",
    );
    assert_close(
        &run(&h, &["--dataset", "c"]),
        &twin,
        "contiguous with user block",
    );
}

#[test]
fn info_lists_datasets_and_plans() {
    let dir = tmpdir();
    let h = dir.path().join("info.h5");
    let a = data2(1000, 2, 1);
    {
        let f = hdf5::File::create(&h).unwrap();
        f.new_dataset_builder().with_data(&a).create("x").unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((100, 2))
            .deflate(3)
            .create("y")
            .unwrap();
    }
    let out = bin().arg("info").arg(&h).output().unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("/x") && t.contains("/y") && t.contains("deflate"),
        "{t}"
    );
    assert!(t.contains("--dataset"), "{t}");
    let out = bin()
        .args(["info", "--dataset", "/y"])
        .arg(&h)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("blocks:") && t.contains("decoded in parallel"),
        "{t}"
    );
    // Several datasets and no --dataset: a clear error that lists them.
    let out = bin().arg("stats").arg(&h).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        e.contains("/x") && e.contains("/y") && e.contains("--dataset"),
        "{e}"
    );
}

#[test]
fn big_chunks_of_small_integers_do_not_overflow() {
    // One chunk (= one merge-tree leaf) of 40,000 rows × 16 columns of u16 at its maximum:
    // 40,000 × 65535 overflows the kernel's i32 lanes unless they fold into i64 in time.
    let dir = tmpdir();
    let h = dir.path().join("u16.h5");
    let rows = 40_000usize;
    let a = ndarray::Array2::<u16>::from_elem((rows, 16), u16::MAX);
    {
        let f = hdf5::File::create(&h).unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((rows, 16))
            .deflate(1)
            .create("x")
            .unwrap();
    }
    let j = run(&h, &[]);
    assert_eq!(
        j["stats"]["sum"][0].to_string(),
        (65535u64 * rows as u64).to_string()
    );
    assert_eq!(num(&j["stats"]["var"][0]), 0.0);
}

/// A never-written contiguous dataset may claim any shape: 2^40 columns must be refused as
/// too many for the budget before anything is sized by them (the column list once aborted
/// the process allocating 8 TiB), for `stats`, a `--columns` slice, and `info`.
#[test]
fn absurd_column_counts_are_refused_before_allocation() {
    let dir = tmpdir();
    let h = dir.path().join("huge.h5");
    {
        let f = hdf5::File::create(&h).unwrap();
        f.new_dataset::<f64>()
            .shape((2, 1usize << 40))
            .create("x")
            .unwrap();
    }
    for args in [
        &["stats", "--format", "json"][..],
        &["stats", "--columns", "5:"][..],
        &["info"][..],
    ] {
        let out = bin()
            .arg(args[0])
            .arg(&h)
            .args(&args[1..])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.lines().count() == 1 && err.contains("the results for 109951162777"),
            "{args:?}: {err}"
        );
    }
}

/// A netCDF-4 record variable as the netCDF library chunks it, one record a chunk: 100,000
/// chunks (libhdf5 1.10's by-coordinate lookup made this quadratic, minutes long), plain,
/// gzip, and never written. colstats fetches such chunks through libhdf5; the results must
/// be those of the `.npy` holding the same rows, bit for bit, for any thread count and budget.
#[test]
fn record_variable_of_100000_one_row_chunks() {
    let dir = tmpdir();
    let a = data2(100_000, 3, 11);
    let twin = run(&npy_twin(dir.path(), &a), &[]);
    let h = dir.path().join("records.h5");
    {
        let f = hdf5::File::create(&h).unwrap();
        for (name, gzip) in [("plain", false), ("gzip", true)] {
            let b = f
                .new_dataset::<f64>()
                .shape((hdf5::Extent::resizable(100_000), hdf5::Extent::fixed(3)))
                .chunk((1, 3));
            let b = if gzip { b.deflate(1) } else { b };
            b.create(name).unwrap().write(&a).unwrap();
        }
        // Never written: every chunk reads as the fill value.
        f.new_dataset::<f64>()
            .shape((hdf5::Extent::resizable(100_000), hdf5::Extent::fixed(3)))
            .chunk((1, 3))
            .fill_value(2.5)
            .create("unwritten")
            .unwrap();
    }
    for name in ["plain", "gzip"] {
        let what = format!("records.h5:/{name}");
        let base = run(&h, &["--dataset", name]);
        assert_eq!(base["stats"], twin["stats"], "{what} vs its .npy twin");
        for extra in [
            &["--threads", "1"][..],
            &["--threads", "2", "--memory", "1MiB"],
            &["--threads", "2", "--block-limit", "1"],
        ] {
            let mut args = vec!["--dataset", name];
            args.extend_from_slice(extra);
            assert_eq!(run(&h, &args)["stats"], base["stats"], "{what} {extra:?}");
        }
    }
    let u = run(&h, &["--dataset", "unwritten"]);
    assert_eq!(u["stats"]["count"][0], 100_000);
    assert_eq!(u["stats"]["sum"][0], 250_000.0);
    assert_eq!(u["stats"]["min"][2], 2.5);
}
