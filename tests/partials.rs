//! Partial results of runs over different rows of one array merge to the bits of one run
//! over all of them (`Request::run_partial`, `Partial::merge`,
//! `Request::summarise_partial`), in either merge order, for C and Fortran order and
//! chunked HDF5; partials of different arrays, columns or overlapping rows are refused.

use crate::common::*;
use colstats::{Partial, Request, RowSpec, Stat};
use std::path::Path;

fn whole(p: &Path, dataset: Option<&str>) -> colstats::Summary {
    let mut r = Request::new(p).threads(2).block_limit(1 << 20);
    if let Some(d) = dataset {
        r = r.dataset(d);
    }
    r.run().unwrap()
}

fn partial(p: &Path, dataset: Option<&str>, a: i64, b: i64, threads: usize) -> Partial {
    let mut r = Request::new(p)
        .threads(threads)
        .block_limit(256 << 10)
        .rows(RowSpec::new(Some(a), Some(b)));
    if let Some(d) = dataset {
        r = r.dataset(d);
    }
    r.run_partial().unwrap()
}

fn check(p: &Path, dataset: Option<&str>, rows: i64, cuts: &[i64]) {
    let want = whole(p, dataset);
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(rows);
    let parts: Vec<Partial> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| partial(p, dataset, w[0], w[1], 1 + i % 2))
        .collect();
    for reverse in [false, true] {
        let mut it: Vec<&Partial> = parts.iter().collect();
        if reverse {
            it.reverse();
        }
        let mut merged = it[0].clone();
        for q in &it[1..] {
            merged.merge(q).unwrap();
        }
        let mut req = Request::new(p);
        if let Some(d) = dataset {
            req = req.dataset(d);
        }
        let got = req.summarise_partial(&merged).unwrap();
        for s in Stat::ALL {
            let (a, b) = (got.get_f64(s).unwrap(), want.get_f64(s).unwrap());
            let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{} cuts {cuts:?} {s:?}: {a:?} vs {b:?}", p.display());
        }
        assert_eq!(got.rows, want.rows);
    }
}

#[test]
fn leaf_aligned_slices_merge_to_the_bits_of_one_run() {
    let dir = tmpdir();
    // 5 float64 columns: leaves of 2048 rows; values near 1e9 so the shift matters.
    let rows = 50_000usize;
    for fortran in [false, true] {
        let d = dyadic(rows, 5, 1_000_000_000, 20, 7);
        let p = dir.path().join(format!("a{fortran}.npy"));
        d.write_npy(&p, fortran);
        let leaf = if fortran { 16384 } else { 2048 };
        for cuts in [
            vec![leaf],
            vec![3 * leaf],
            vec![leaf, 5 * leaf, 7 * leaf],
            vec![2 * leaf, 3 * leaf],
        ] {
            let cuts: Vec<i64> = cuts.into_iter().filter(|&c| c < rows as i64).collect();
            check(&p, None, rows as i64, &cuts);
        }
    }
}

#[cfg(feature = "hdf5")]
#[test]
fn chunked_hdf5_slices_merge_to_the_bits_of_one_run() {
    let dir = tmpdir();
    let d = dyadic(30_000, 4, 1_000_000_000, 10, 8);
    let p = dir.path().join("c.h5");
    {
        let f = hdf5::File::create(&p).unwrap();
        let a = ndarray::Array2::from_shape_fn((30_000, 4), |(r, c)| d.value(r, c));
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((500, 4))
            .deflate(1)
            .create("x")
            .unwrap();
    }
    // Leaves of whole 500-row chunks: 128 KiB / (500 * 32 bytes) -> 8 chunks, 4000 rows.
    check(&p, Some("x"), 30_000, &[4000, 12_000, 16_000]);
}

#[test]
fn partials_of_other_columns_or_overlapping_rows_are_refused() {
    let dir = tmpdir();
    let p = dir.path().join("a.npy");
    dyadic(10_000, 3, 0, 0, 9).write_npy(&p, false);
    let mut a = partial(&p, None, 0, 4096, 2);
    let overlapping = partial(&p, None, 2048, 8192, 2);
    assert!(a.merge(&overlapping).is_err());
    let other_cols = Request::new(&p)
        .columns("0:2".parse::<colstats::ColumnSpec>().unwrap())
        .rows(RowSpec::new(Some(4096), None))
        .run_partial()
        .unwrap();
    assert!(a.merge(&other_cols).is_err());
    let q = dir.path().join("b.npy");
    dyadic(10_000, 3, 5, 0, 10).write_npy(&q, false);
    let other_array = partial(&q, None, 4096, 10_000, 2);
    assert!(
        a.merge(&other_array).is_err(),
        "another array's row 0 differs"
    );
}
