//! Generated arrays against exact integer-arithmetic references, across layouts, thread
//! counts, budgets, selections and output formats; and the CLI's error paths.

use crate::common::*;
use std::path::Path;

fn run_json(path: &Path, extra: &[&str]) -> serde_json::Value {
    stats_json(path, extra)
}

fn check_exact(d: &Dyadic, j: &serde_json::Value, cols: &[usize], rows: std::ops::Range<usize>) {
    let pairs: Vec<(usize, usize)> = cols.iter().copied().enumerate().collect();
    check_exact_at(d, j, &pairs, rows)
}

/// Checks JSON position `k` against column `c` for each `(k, c)`.
fn check_exact_at(
    d: &Dyadic,
    j: &serde_json::Value,
    pairs: &[(usize, usize)],
    rows: std::ops::Range<usize>,
) {
    let st = &j["stats"];
    for &(k, c) in pairs {
        let (n, sum, mean, var) = d.exact(c, rows.clone());
        assert_eq!(st["count"][k].as_u64().unwrap(), n, "count col {c}");
        let xs: Vec<f64> = rows
            .clone()
            .map(|r| d.value(r, c))
            .filter(|x| !x.is_nan())
            .collect();
        // Sums are compensated: allow a few ulps of the result plus eps^2-scale of sum |x|.
        let abs: f64 = xs.iter().map(|x| x.abs()).sum();
        let close = |got: f64, want: f64, tol: f64, scale: f64, what: &str| {
            assert!(
                (got - want).abs() <= tol * want.abs() + scale || (got.is_nan() && want.is_nan()),
                "{what} col {c}: got {got:e} want {want:e}"
            );
        };
        let n = xs.len().max(1) as f64;
        close(num(&st["sum"][k]), sum, 4e-16, 1e-28 * abs, "sum");
        close(num(&st["mean"][k]), mean, 8e-16, 1e-28 * abs / n, "mean");
        close(num(&st["var"][k]), var, 1e-10, 0.0, "var");
        let mn = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let mx = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !xs.is_empty() {
            assert_eq!(num(&st["min"][k]), mn, "min col {c}");
            assert_eq!(num(&st["max"][k]), mx, "max col {c}");
        }
    }
}

#[test]
fn c_and_fortran_order_many_blocks_exact_and_thread_invariant() {
    let dir = tmpdir();
    // Large offset: var must stay exact relative to a spread ~ 1e3 on top of 1e9.
    let d = dyadic(50_003, 3, 1_000_000_000, 20, 7);
    for fortran in [false, true] {
        let p = dir.path().join(format!("a{fortran}.npy"));
        d.write_npy(&p, fortran);
        let base = run_json(&p, &["--threads", "1"]);
        check_exact(&d, &base, &[0, 1, 2], 0..50_003);
        for extra in [
            &["--threads", "2"][..],
            &["--threads", "4", "--block-limit", "1"][..],
            &["--threads", "3", "--block-limit", "100KiB"][..],
            &["--threads", "2", "--memory", "1MiB"][..],
            &["--threads", "2", "--io", "read"][..],
            &["--threads", "1", "--io", "read", "--block-limit", "1"][..],
        ] {
            assert_eq!(run_json(&p, extra), base, "fortran={fortran} {extra:?}");
        }
    }
}

#[test]
fn c_and_fortran_give_the_same_exact_answers() {
    let dir = tmpdir();
    let d = dyadic(3001, 7, -5, 100, 11);
    let pc = dir.path().join("c.npy");
    let pf = dir.path().join("f.npy");
    d.write_npy(&pc, false);
    d.write_npy(&pf, true);
    let all: Vec<usize> = (0..7).collect();
    check_exact(&d, &run_json(&pc, &[]), &all, 0..3001);
    check_exact(&d, &run_json(&pf, &[]), &all, 0..3001);
}

#[test]
fn columns_and_rows_selections() {
    let dir = tmpdir();
    let d = dyadic(20_000, 9, 3, 50, 3);
    for fortran in [false, true] {
        let p = dir.path().join(format!("s{fortran}.npy"));
        d.write_npy(&p, fortran);
        let j = run_json(&p, &["--columns", "7,0:2,-1", "--rows", "123:17000"]);
        assert_eq!(j["columns"], 4);
        assert_eq!(j["rows"], 17000 - 123);
        assert_eq!(
            j["column_index"],
            serde_json::json!([7, 0, 1, 8]),
            "column order as given"
        );
        check_exact(&d, &j, &[7, 0, 1, 8], 123..17000);
        let j2 = run_json(
            &p,
            &[
                "--columns",
                "7,0:2,-1",
                "--rows",
                "123:17000",
                "--threads",
                "1",
                "--block-limit",
                "1",
            ],
        );
        assert_eq!(j, j2);
    }
}

#[test]
fn wide_rows_are_tiled_within_a_small_budget_with_identical_results() {
    let dir = tmpdir();
    let (rows, cols) = (70, 20_000);
    let d = dyadic(rows, cols, 0, 10, 5);
    let p = dir.path().join("wide.npy");
    d.write_npy(&p, false);
    let big = run_json(&p, &[]);
    let small = run_json(&p, &["--memory", "8MiB"]);
    assert_eq!(big, small);
    let info = bin()
        .args(["info", "--memory", "8MiB"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("groups:"), "{text}");
    let groups: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("groups:"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(groups > 1, "expected column tiles: {text}");
    check_exact_at(
        &d,
        &small,
        &[(0, 0), (1, 1), (9999, 9999), (19_999, 19_999)],
        0..rows,
    );
}

#[test]
fn three_d_fortran_equals_three_d_c() {
    let dir = tmpdir();
    // shape (n0, 3, 4): columns are (j, k) flattened in C order whatever the memory order.
    let (n0, a, b) = (5000usize, 3usize, 4usize);
    let mut rng = Rng(9);
    let vals: Vec<f64> = (0..n0 * a * b)
        .map(|_| rng.range(-1000, 1000) as f64 / 8.0)
        .collect();
    let at = |i: usize, j: usize, k: usize| vals[(i * a + j) * b + k];
    let mut cbytes = Vec::new();
    for i in 0..n0 {
        for j in 0..a {
            for k in 0..b {
                cbytes.extend_from_slice(&at(i, j, k).to_le_bytes());
            }
        }
    }
    let mut fbytes = Vec::new();
    for k in 0..b {
        for j in 0..a {
            for i in 0..n0 {
                fbytes.extend_from_slice(&at(i, j, k).to_le_bytes());
            }
        }
    }
    let pc = dir.path().join("c3.npy");
    let pf = dir.path().join("f3.npy");
    write_npy(&pc, "<f8", false, &[n0 as u64, a as u64, b as u64], &cbytes);
    write_npy(&pf, "<f8", true, &[n0 as u64, a as u64, b as u64], &fbytes);
    let jc = run_json(&pc, &["--stats", "count,sum,min,max"]);
    let jf = run_json(&pf, &["--stats", "count,sum,min,max"]);
    // Sums of multiples of 1/8 are exact in any order.
    assert_eq!(jc["stats"], jf["stats"]);
    for j in 0..a {
        for k in 0..b {
            let col = j * b + k;
            let s: f64 = (0..n0).map(|i| at(i, j, k)).sum();
            assert_eq!(num(&jc["stats"]["sum"][col]), s);
        }
    }
}

#[test]
fn nan_policies_ddof_and_stat_subsets() {
    let dir = tmpdir();
    let p = dir.path().join("n.npy");
    let n = f64::NAN;
    let vals = [1.0, n, n, 2.0, n, n, 3.0, 5.0, n, 4.0, f64::INFINITY, n];
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&p, "<f8", false, &[4, 3], &bytes);
    let skip = run_json(&p, &["--ddof", "1"]);
    let st = &skip["stats"];
    assert_eq!(st["count"], serde_json::json!([4, 2, 0]));
    assert_eq!(st["nan_count"], serde_json::json!([0, 2, 4]));
    assert_eq!(num(&st["mean"][0]), 2.5);
    assert_eq!(num(&st["var"][0]), 5.0 / 3.0);
    assert!(num(&st["var"][1]).is_nan(), "count - ddof <= 0 gives NaN");
    assert_eq!(num(&st["sum"][1]), f64::INFINITY);
    assert_eq!(num(&st["mean"][1]), f64::INFINITY);
    assert_eq!(st["sum"][2], 0.0);
    for s in ["mean", "var", "std", "min", "max"] {
        assert_eq!(st[s][2], "nan", "{s} of an all-NaN column");
    }
    let prop = run_json(&p, &["--nan", "propagate", "--stats", "count,sum,max"]);
    let st = &prop["stats"];
    let mut keys: Vec<_> = st.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["count", "max", "sum"], "only requested stats appear");
    assert_eq!(st["sum"], serde_json::json!([10.0, "nan", "nan"]));
    assert_eq!(st["max"], serde_json::json!([4.0, "nan", "nan"]));
    assert_eq!(prop["nan"], "propagate");
}

/// Finite values whose sums leave the f64 range give infinities where numpy does (mean, var,
/// std), never NaN; an infinite input still makes var NaN, as in numpy.
#[test]
fn sums_past_the_f64_range_give_infinities_as_numpy() {
    let dir = tmpdir();
    let p = dir.path().join("h.npy");
    let rows: [[f64; 4]; 4] = [
        [1.7e308, 1e308, 1e200, f64::INFINITY],
        [1.7e308, 1e308, -1e200, 1.0],
        [-1.0, 1e308, 1e200, 2.0],
        [1e308, 1e308, -1e200, 3.0],
    ];
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    write_npy(&p, "<f8", false, &[4, 4], &bytes);
    for extra in [
        &[][..],
        &["--ddof", "1"][..],
        &["--nan", "propagate"][..],
        &["--stats", "mean,var,std"][..],
    ] {
        let j = run_json(&p, extra);
        let st = &j["stats"];
        let inf = serde_json::json!("inf");
        assert_eq!(st["mean"][0], inf, "{extra:?}");
        assert_eq!(st["mean"][1], inf, "{extra:?}");
        assert_eq!(num(&st["mean"][2]), 0.0, "{extra:?}");
        for c in 0..3 {
            assert_eq!(st["var"][c], inf, "var col {c} {extra:?}");
            assert_eq!(st["std"][c], inf, "std col {c} {extra:?}");
        }
        assert_eq!(st["var"][3], "nan", "{extra:?}");
    }
    // An infinity in the first of several leaves: its leaf takes two passes, the others
    // one; var is NaN however few statistics are asked for.
    let q = dir.path().join("inf.npy");
    let mut rng = Rng(3);
    let mut col: Vec<f64> = (0..40_000).map(|_| rng.range(-1000, 1000) as f64).collect();
    col[5] = f64::INFINITY;
    let bytes: Vec<u8> = col.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&q, "<f8", false, &[40_000], &bytes);
    for extra in [&[][..], &["--stats", "var"][..], &["--stats", "std"][..]] {
        let st = &run_json(&q, extra)["stats"];
        let v = st.get("var").or(st.get("std")).unwrap();
        assert_eq!(v[0], "nan", "{extra:?}");
    }
}

#[test]
fn output_formats_and_atomic_file() {
    let dir = tmpdir();
    let p = dir.path().join("o.npy");
    let d = dyadic(100, 2, 0, 0, 1);
    d.write_npy(&p, false);
    let csv = bin()
        .args(["stats", "--format", "csv"])
        .arg(&p)
        .output()
        .unwrap();
    let text = String::from_utf8(csv.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "column,count,nan_count,sum,mean,var,std,min,max"
    );
    assert_eq!(lines.clone().count(), 2);
    assert!(lines.next().unwrap().starts_with("0,100,0,"));
    let table = bin().args(["stats"]).arg(&p).output().unwrap();
    let t = String::from_utf8(table.stdout).unwrap();
    assert!(
        t.contains("column") && t.contains("mean") && t.lines().count() == 4,
        "{t}"
    );

    let out = dir.path().join("res.json");
    let r = bin()
        .args(["stats", "--format", "json", "-o"])
        .arg(&out)
        .arg(&p)
        .output()
        .unwrap();
    assert!(r.status.success() && r.stdout.is_empty());
    let j = json(&std::fs::read(&out).unwrap());
    assert_eq!(j["columns"], 2);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let npz = dir.path().join("res.npz");
    let r = bin()
        .args(["stats", "--format", "npz", "-o"])
        .arg(&npz)
        .arg(&p)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let bytes = std::fs::read(&npz).unwrap();
    assert_eq!(&bytes[..4], b"PK\x03\x04");
    for name in ["count.npy", "mean.npy", "max.npy", "column_index.npy"] {
        assert!(
            bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} missing"
        );
    }
    let r = bin()
        .args(["stats", "--format", "npz"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "npz without -o is a usage error");
}

#[test]
fn integer_dtypes_exact() {
    let dir = tmpdir();
    let mut rng = Rng(21);
    let rows = 40_000usize;
    let vals: Vec<i64> = (0..rows * 2)
        .map(|i| {
            if i % 2 == 0 {
                i64::MAX - rng.range(0, 4)
            } else {
                rng.range(i64::MIN / 2, i64::MAX / 2)
            }
        })
        .collect();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_be_bytes()).collect();
    let p = dir.path().join("i.npy");
    write_npy(&p, ">i8", false, &[rows as u64, 2], &bytes);
    let j = run_json(&p, &["--block-limit", "1"]);
    for c in 0..2 {
        let col: Vec<i128> = (0..rows).map(|r| vals[r * 2 + c] as i128).collect();
        let s: i128 = col.iter().sum();
        assert_eq!(j["stats"]["sum"][c].to_string(), s.to_string());
        assert_eq!(
            j["stats"]["min"][c].to_string(),
            col.iter().min().unwrap().to_string()
        );
        if c == 0 {
            // values in [MAX-3, MAX]: variance must be ~1.25, not 0 or garbage.
            let m = col
                .iter()
                .map(|x| (x - (i64::MAX as i128 - 3)) as f64)
                .collect::<Vec<_>>();
            let mean = m.iter().sum::<f64>() / rows as f64;
            let var = m.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / rows as f64;
            let got = num(&j["stats"]["var"][0]);
            assert!((got - var).abs() <= 1e-12 * var, "var {got} want {var}");
        }
    }
}

#[test]
fn error_paths() {
    let dir = tmpdir();
    let missing = dir.path().join("nope.npy");
    let out_file = dir.path().join("out.json");
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (missing.clone(), "No such file"),
        (dir.path().to_path_buf(), "directory"),
        (
            {
                let p = dir.path().join("empty.npy");
                std::fs::write(&p, b"").unwrap();
                p
            },
            "empty",
        ),
        (
            {
                let p = dir.path().join("garbage.bin");
                std::fs::write(&p, b"hello world, not an array").unwrap();
                p
            },
            "not a .npy or HDF5",
        ),
    ];
    for (path, what) in cases {
        let r = bin()
            .args(["stats", "--format", "json", "-o"])
            .arg(&out_file)
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(r.stdout.is_empty());
        assert!(
            err.starts_with(&format!("error: {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains(what), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out_file.exists(), "no output file on error");
    }
    // A FIFO nobody writes to must be refused, not waited on.
    let fifo = dir.path().join("fifo.npy");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let r = bin().arg("stats").arg(&fifo).output().unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("not a regular file"));

    let p = dir.path().join("ok.npy");
    write_npy(&p, "<f4", false, &[3, 2], &[0u8; 24]);
    let r = bin()
        .args(["stats", "--columns", "5"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("out of range"));
    for bad in [
        &["--columns", "x"][..],
        &["--rows", "1"],
        &["--memory", "lots"],
        &["--stats", "median"],
        &["--threads", "0"],
    ] {
        let r = bin().arg("stats").arg(&p).args(bad).output().unwrap();
        assert_eq!(r.status.code(), Some(2), "{bad:?}");
        assert!(r.stdout.is_empty());
    }
}

#[test]
fn progress_always_draws_on_stderr() {
    let dir = tmpdir();
    let p = dir.path().join("p.npy");
    let d = dyadic(200_000, 4, 0, 0, 2);
    d.write_npy(&p, false);
    let r = bin()
        .args([
            "stats",
            "--progress",
            "always",
            "--format",
            "csv",
            "--block-limit",
            "1",
        ])
        .arg(&p)
        .output()
        .unwrap();
    assert!(r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("MiB") || err.contains("KiB"),
        "no progress drawn: {err:?}"
    );
    let r = bin()
        .args(["stats", "--format", "csv"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        r.stderr.is_empty(),
        "auto hides the bar when stderr is not a terminal"
    );
}

#[test]
fn small_integer_lanes_do_not_overflow() {
    // 16-bit extremes over whole leaves (up to 32768 rows): the kernel sums them in i32 lanes.
    let dir = tmpdir();
    for (descr, val, cols) in [
        ("<u2", 65535i64, 1usize),
        ("<i2", -32768, 1),
        (">u2", 65535, 3),
        ("|u1", 255, 64),
        ("|i1", -128, 3),
    ] {
        let rows = 100_003usize;
        let mut bytes = Vec::new();
        for _ in 0..rows * cols {
            match descr {
                "<u2" => bytes.extend_from_slice(&(val as u16).to_le_bytes()),
                ">u2" => bytes.extend_from_slice(&(val as u16).to_be_bytes()),
                "<i2" => bytes.extend_from_slice(&(val as i16).to_le_bytes()),
                _ => bytes.push(val as i8 as u8),
            }
        }
        let p = dir.path().join("s.npy");
        write_npy(&p, descr, false, &[rows as u64, cols as u64], &bytes);
        let j = run_json(&p, &[]);
        for c in 0..cols {
            assert_eq!(
                j["stats"]["sum"][c].to_string(),
                (val as i128 * rows as i128).to_string(),
                "{descr}"
            );
            assert_eq!(num(&j["stats"]["var"][c]), 0.0, "{descr}");
            assert_eq!(num(&j["stats"]["mean"][c]), val as f64, "{descr}");
        }
    }
    // Bytes 0 and 255 alternating: squares reach 255^2 in 16-bit lanes; var is 127.5^2.
    let rows = 200_000usize;
    let bytes: Vec<u8> = (0..rows)
        .map(|r| if r % 2 == 0 { 0 } else { 255 })
        .collect();
    let p = dir.path().join("b.npy");
    write_npy(&p, "|u1", false, &[rows as u64], &bytes);
    let j = run_json(&p, &[]);
    assert_eq!(num(&j["stats"]["var"][0]), 127.5 * 127.5);
    assert_eq!(
        j["stats"]["sum"][0].to_string(),
        (255 * rows / 2).to_string()
    );
}

#[test]
fn one_pass_tiles_and_every_fallback_are_exact() {
    // Each column drives the kernel's one-pass tile path or one of its fallbacks to the
    // two-pass path, in some leaves and not others; all must give the exact answers, in both
    // orders, for any thread count and block size, and min/max alone must agree.
    let (rows, cols) = (20_011, 6);
    let mut rng = Rng(99);
    let mut m = vec![0i64; rows * cols];
    let mut nan = vec![false; rows * cols];
    for r in 0..rows {
        let noise = rng.range(-(1 << 20), 1 << 20);
        let row = &mut m[r * cols..(r + 1) * cols];
        row[0] = rng.range(-(1 << 30), 1 << 30); // plain: one pass
        row[1] = (1 << 50) + noise; // ~1e9 + U(-1, 1): one pass, shifted exactly
                                    // An outlier opening every leaf: M2 from the first row would cancel; two passes.
        row[2] = if r % 256 == 0 { 1 << 45 } else { noise };
        row[3] = noise; // one NaN: that leaf takes two passes, the others one
        row[4] = 12_345; // constant: M2 exactly 0
                         // Huge values that cancel: the sum needs its compensation.
        row[5] = if r % 2 == 0 {
            1 << 46
        } else {
            -(1 << 46) + noise
        };
    }
    nan[5_000 * cols + 3] = true;
    let d = Dyadic {
        rows,
        cols,
        m,
        scale_bits: 20,
        offset: 0,
        nan,
    };
    let dir = tmpdir();
    let all: Vec<usize> = (0..cols).collect();
    for fortran in [false, true] {
        let p = dir.path().join(format!("p{fortran}.npy"));
        d.write_npy(&p, fortran);
        let base = run_json(&p, &["--threads", "1"]);
        check_exact(&d, &base, &all, 0..rows);
        assert_eq!(base["stats"]["var"][4], 0.0);
        for extra in [
            &["--threads", "2"][..],
            &["--threads", "2", "--block-limit", "1"][..],
            &["--threads", "2", "--io", "read", "--block-limit", "100KiB"][..],
        ] {
            assert_eq!(run_json(&p, extra), base, "fortran={fortran} {extra:?}");
        }
        let mm = run_json(&p, &["--stats", "count,min,max"]);
        for s in ["count", "min", "max"] {
            assert_eq!(mm["stats"][s], base["stats"][s], "fortran={fortran} {s}");
        }
    }
}

#[test]
fn narrow_floats_sum_exactly_with_and_without_compensation() {
    // float32: 2^60, 1, -2^60, 2, ... needs the compensated sum (the proof of an exact plain
    // sum must fail); 0.5 * r sums exactly either way. float16: 1024 and multiples of 2^-14
    // pass that proof. Every sum is checked exactly.
    let rows = 40_000usize;
    let dir = tmpdir();
    let big = (1u64 << 60) as f32;
    let mut b32 = Vec::new();
    let mut b16 = Vec::new();
    for r in 0..rows {
        // Two columns run in lanes eight rows apart: (r / 8) % 4 puts the pattern in one lane.
        let a = [big, 1.0, -big, 2.0][(r / 8) % 4];
        b32.extend_from_slice(&a.to_le_bytes());
        b32.extend_from_slice(&((r % 1000) as f32 * 0.5).to_le_bytes());
        let h = [1024.0, 2f64.powi(-14), -1024.0, 3.0 * 2f64.powi(-14)][r % 4];
        b16.extend_from_slice(&half::f16::from_f64(h).to_le_bytes());
    }
    let p32 = dir.path().join("f4.npy");
    write_npy(&p32, "<f4", false, &[rows as u64, 2], &b32);
    let p16 = dir.path().join("f2.npy");
    write_npy(&p16, "<f2", false, &[rows as u64], &b16);
    for extra in [
        &["--threads", "1"][..],
        &["--threads", "2", "--block-limit", "1"][..],
    ] {
        let j = run_json(&p32, extra);
        let st = &j["stats"];
        assert_eq!(num(&st["sum"][0]), 3.0 * (rows / 4) as f64, "{extra:?}");
        assert_eq!(num(&st["mean"][0]), 0.75);
        assert_eq!(num(&st["max"][0]), big as f64);
        let s1: u64 = (0..rows as u64).map(|r| r % 1000).sum();
        assert_eq!(num(&st["sum"][1]), s1 as f64 * 0.5);
        let j = run_json(&p16, extra);
        let want = (rows / 4) as f64 * 4.0 * 2f64.powi(-14);
        assert_eq!(num(&j["stats"]["sum"][0]), want, "{extra:?}");
    }
}

/// Column and row selections of narrow rows, of every item size, plan within small budgets
/// and give the exact answers: a leaf of short strided rows touches the pages of its span
/// once (they were once counted per row, and a leaf of 16384 one-byte rows was refused even
/// at the default budget).
#[test]
fn selections_of_narrow_rows_fit_small_budgets() {
    let dir = tmpdir();
    let mut rng = Rng(5);
    for (descr, size) in [("|u1", 1usize), ("<i2", 2), ("<f4", 4), (">f8", 8)] {
        for cols in [3usize, 7, 12] {
            let rows = 70_001usize;
            let vals: Vec<i64> = (0..rows * cols).map(|_| rng.range(0, 120)).collect();
            let bytes: Vec<u8> = vals
                .iter()
                .flat_map(|&v| match size {
                    1 => vec![v as u8],
                    2 => (v as i16 - 60).to_le_bytes().to_vec(),
                    4 => (v as f32 * 0.5).to_le_bytes().to_vec(),
                    _ => (v as f64 * 0.25).to_be_bytes().to_vec(),
                })
                .collect();
            let value = |r: usize, c: usize| -> i64 {
                let v = vals[r * cols + c];
                if size == 2 {
                    v - 60
                } else {
                    v
                }
            };
            let p = dir.path().join(format!("n{size}_{cols}.npy"));
            write_npy(&p, descr, false, &[rows as u64, cols as u64], &bytes);
            let sel = [cols - 1, 1, 2];
            let spec = format!("{},1:3", cols - 1);
            for extra in [
                &[][..],
                &["--memory", "1MiB"][..],
                &["--memory", "1MiB", "--threads", "1", "--rows", "5:70000"][..],
            ] {
                let mut args = vec!["--columns", spec.as_str()];
                args.extend_from_slice(extra);
                let j = run_json(&p, &args);
                let r = if extra.contains(&"--rows") {
                    5..70_000
                } else {
                    0..rows
                };
                for (k, &c) in sel.iter().enumerate() {
                    let sum: i64 = r.clone().map(|i| value(i, c)).sum();
                    let scale = match size {
                        4 => 0.5,
                        8 => 0.25,
                        _ => 1.0,
                    };
                    assert_eq!(
                        num(&j["stats"]["sum"][k]),
                        sum as f64 * scale,
                        "{descr} {cols} cols {extra:?} col {c}"
                    );
                    let mx = r.clone().map(|i| value(i, c)).max().unwrap();
                    assert_eq!(num(&j["stats"]["max"][k]), mx as f64 * scale);
                }
            }
        }
    }
}

/// The smallest budget runs every small array on any number of threads, with the same
/// results: a plan falls back to fewer threads rather than refusing, Fortran-order blocks
/// leave room for the partials, and a leaf longer than the array counts only its rows.
#[test]
fn the_smallest_budget_fits_on_any_thread_count() {
    let dir = tmpdir();
    for (rows, cols, fortran) in [
        (50, 1000, false),
        (300, 150, false),
        (20_000, 100, false),
        (2000, 50, true),
        (2000, 1000, true),
    ] {
        let d = dyadic(rows, cols, 7, 0, 4);
        let p = dir.path().join(format!("m{rows}_{cols}_{fortran}.npy"));
        d.write_npy(&p, fortran);
        let base = run_json(&p, &["--memory", "1MiB", "--threads", "1"]);
        let at = [(0, 0), (cols / 2, cols / 2), (cols - 1, cols - 1)];
        check_exact_at(&d, &base, &at, 0..rows);
        for t in ["2", "3", "64"] {
            let j = run_json(&p, &["--memory", "1MiB", "--threads", t]);
            assert_eq!(j, base, "({rows}, {cols}) fortran={fortran} threads {t}");
        }
    }
}

/// A column's bits do not depend on the columns that share its tile: one column whose leaves
/// start far from their mean (so its single pass would cancel), one with an infinity and one
/// with NaNs must not move their neighbours to the two-pass path. Each column read alone, and
/// the whole array cut into column tiles by a small budget, match the whole-array run.
#[test]
fn a_columns_bits_do_not_depend_on_its_neighbours() {
    let dir = tmpdir();
    let (rows, cols) = (600usize, 2048usize);
    let mut rng = Rng(17);
    let mut vals: Vec<f64> = (0..rows * cols)
        .map(|_| (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 1.3 + 0.1)
        .collect();
    for r in (0..rows).step_by(256) {
        vals[r * cols + 3] = 1e6;
    }
    vals[100 * cols + 7] = f64::INFINITY;
    for r in (5..rows).step_by(37) {
        vals[r * cols + 11] = f64::NAN;
    }
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let p = dir.path().join("nb.npy");
    write_npy(&p, "<f8", false, &[rows as u64, cols as u64], &bytes);
    let full = run_json(&p, &[]);
    let small = ["--memory", "4MiB"];
    let info = bin().arg("info").arg(&p).args(small).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    let groups: usize = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("groups:"))
        .and_then(|g| g.trim().parse().ok())
        .expect("info shows the groups");
    assert!(groups > 1, "the small budget must cut column tiles: {info}");
    let tiled = run_json(&p, &small);
    assert_eq!(
        tiled["stats"], full["stats"],
        "column tiles of a small budget"
    );
    for c in (0..24).chain((24..cols).step_by(97)) {
        let one = run_json(&p, &["--columns", &c.to_string()]);
        for (k, v) in one["stats"].as_object().unwrap() {
            assert_eq!(v[0], full["stats"][k][c], "{k} of column {c} read alone");
        }
    }
}

/// An error quoting bytes of a corrupt header stays one line: control characters in them
/// (here a newline and a carriage return inside a key) are escaped.
#[test]
fn errors_quoting_control_characters_stay_one_line() {
    let dir = tmpdir();
    let p = dir.path().join("ctl.npy");
    let mut hdr = "{'descr': '<f8', 'fortran_order': False, 'sh\n\rape': (2,), }".to_string();
    while (10 + hdr.len() + 1) % 64 != 0 {
        hdr.push(' ');
    }
    hdr.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
    bytes.extend_from_slice(hdr.as_bytes());
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&p, &bytes).unwrap();
    let out = bin().arg("stats").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.ends_with('\n') && !err.contains('\r'), "{err:?}");
    assert!(err.contains("sh\\n\\rape"), "{err:?}");
}
