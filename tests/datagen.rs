//! data-gen: deterministic for any thread count and order; its HDF5 output reads back to the
//! same statistics as its `.npy` output.

use crate::common::*;
use data_gen::{DType, Dist, Order, Spec};

fn spec(dist: Dist, dtype: &str) -> Spec {
    Spec {
        shape: vec![300_001, 5],
        dtype: dtype.parse::<DType>().unwrap(),
        dist,
        nan_frac: 0.01,
        inf_frac: 0.0,
        seed: 42,
    }
}

fn write_with_threads(path: &std::path::Path, s: &Spec, order: Order, threads: usize) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| data_gen::write_npy(path, s, order, &|_| {}).unwrap());
}

#[test]
fn output_is_identical_for_any_thread_count() {
    let dir = tmpdir();
    for (dist, dt) in [
        (Dist::Normal(1e9, 1.0), "<f8"),
        (Dist::Int(-100, 100), ">i4"),
        (Dist::Uniform(0.0, 1.0), "f2"),
    ] {
        let s = spec(dist, dt);
        let a = dir.path().join("a.npy");
        let b = dir.path().join("b.npy");
        write_with_threads(&a, &s, Order::C, 1);
        write_with_threads(&b, &s, Order::C, 3);
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{dt}"
        );
        let len = std::fs::metadata(&a).unwrap().len();
        assert_eq!(len, 128 + s.bytes(), "{dt}: header + data, nothing more");
    }
}

#[test]
fn fortran_order_holds_the_same_array() {
    let dir = tmpdir();
    let s = spec(Dist::Int(-1000, 1000), "<i8");
    let c = dir.path().join("c.npy");
    let f = dir.path().join("f.npy");
    write_with_threads(&c, &s, Order::C, 2);
    write_with_threads(&f, &s, Order::F, 2);
    let stat = |p: &std::path::Path| {
        let o = bin()
            .args(["stats", "--format", "json"])
            .arg(p)
            .output()
            .unwrap();
        assert!(o.status.success());
        json(&o.stdout)["stats"].clone()
    };
    let (jc, jf) = (stat(&c), stat(&f));
    for k in ["count", "sum", "min", "max"] {
        assert_eq!(jc[k], jf[k], "{k}");
    }
}

#[cfg(feature = "hdf5")]
#[test]
fn hdf5_output_matches_npy_output() {
    use data_gen::h5::{write_hdf5, H5Layout};
    let dir = tmpdir();
    let s = spec(Dist::Normal(5.0, 2.0), "<f8");
    let npy = dir.path().join("x.npy");
    write_with_threads(&npy, &s, Order::C, 2);
    let stat = |p: &std::path::Path, ds: Option<&str>| {
        let mut c = bin();
        c.args(["stats", "--format", "json"]).arg(p);
        if let Some(d) = ds {
            c.args(["--dataset", d]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        json(&o.stdout)["stats"].clone()
    };
    let want = stat(&npy, None);
    for (name, layout) in [
        ("contig.h5", H5Layout::default()),
        (
            "chunked.h5",
            H5Layout {
                chunks: Some(vec![4096, 5]),
                gzip: None,
                shuffle: false,
            },
        ),
        (
            "gzip.h5",
            H5Layout {
                chunks: Some(vec![1000, 3]),
                gzip: Some(4),
                shuffle: true,
            },
        ),
    ] {
        let p = dir.path().join(name);
        write_hdf5(&p, "/group/x", &s, &layout, &|_| {}).unwrap();
        let got = stat(&p, Some("/group/x"));
        for k in ["count", "nan_count", "min", "max"] {
            assert_eq!(got[k], want[k], "{name} {k}");
        }
        for (a, b) in got["mean"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["mean"].as_array().unwrap())
        {
            assert!(
                (num(a) - num(b)).abs() <= 1e-14 * num(b).abs(),
                "{name}: mean"
            );
        }
    }
}
