//! The same bits on every instruction set: every numpy fixture, and generated arrays that
//! take every kernel path (NaNs, infinities, large offsets, narrow and wide rows, Fortran
//! order, every dtype), give byte-identical output under each `COLSTATS_SIMD` the CPU runs;
//! states saved under one merge with states saved under another to the bits of one run.

use crate::common::*;
use std::path::{Path, PathBuf};

/// The `COLSTATS_SIMD` values this CPU runs.
fn supported() -> Vec<&'static str> {
    ["portable", "avx2", "avx512"]
        .into_iter()
        .filter(|v| {
            bin()
                .env("COLSTATS_SIMD", v)
                .args([
                    "info",
                    fixture("npy").join("f8_le_c_2d.npy").to_str().unwrap(),
                ])
                .output()
                .unwrap()
                .status
                .success()
        })
        .collect()
}

fn run(simd: &str, args: &[&str]) -> Vec<u8> {
    stdout_of(
        bin().env("COLSTATS_SIMD", simd).args(args),
        &format!("{simd} {args:?}"),
    )
}

/// Arrays written for the kernel's paths: (name, descr, fortran, shape, bytes).
fn generated(dir: &Path) -> Vec<PathBuf> {
    let mut rng = Rng(19);
    let mut out = Vec::new();
    let mut push = |name: &str, descr: &str, fortran: bool, shape: &[u64], data: Vec<u8>| {
        let p = dir.join(name);
        write_npy(&p, descr, fortran, shape, &data);
        out.push(p);
    };
    let f = |rng: &mut Rng, i: usize, kind: u64| -> f64 {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        match kind {
            0 => 1e9 + u,                               // large offset
            1 => (u - 0.5) * 1e-3 * (1 + i % 5) as f64, // small, cancelling
            2 if i % 97 == 3 => f64::NAN,               // NaNs
            3 if i % 1501 == 7 => f64::INFINITY,        // infinities
            4 => ((u * 1e6) as i64) as f64 * 0.125,     // exactly summable
            _ => (u - 0.5) * 3.0,
        }
    };
    for (kind, cols, rows) in [
        (0u64, 16u64, 20_000u64),
        (1, 3, 30_000),
        (2, 16, 9_000),
        (3, 5, 8_000),
        (4, 1, 70_000),
        (5, 1000, 300),
    ] {
        let n = (cols * rows) as usize;
        let v: Vec<f64> = (0..n).map(|i| f(&mut rng, i, kind)).collect();
        let f8: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let f4: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
        let f2: Vec<u8> = v
            .iter()
            .flat_map(|x| half::f16::from_f64(*x / 1e5).to_le_bytes())
            .collect();
        push(
            &format!("k{kind}_f8.npy"),
            "<f8",
            false,
            &[rows, cols],
            f8.clone(),
        );
        push(
            &format!("k{kind}_f8_fortran.npy"),
            "<f8",
            true,
            &[rows, cols],
            f8,
        );
        push(&format!("k{kind}_f4.npy"), "<f4", false, &[rows, cols], f4);
        push(&format!("k{kind}_f2.npy"), "<f2", false, &[rows, cols], f2);
    }
    for (descr, size) in [
        ("|u1", 1),
        ("|i1", 1),
        ("<i2", 2),
        ("<u2", 2),
        ("<i4", 4),
        ("<u4", 4),
        ("<i8", 8),
        ("<u8", 8),
        ("|b1", 1),
    ] {
        for cols in [1u64, 7, 64] {
            let rows = 200_000 / cols / size as u64 + 3;
            let data: Vec<u8> = (0..rows * cols * size as u64)
                .map(|_| {
                    if descr == "|b1" {
                        (rng.next() & 1) as u8
                    } else {
                        rng.next() as u8
                    }
                })
                .collect();
            push(
                &format!("i{}_{size}_{cols}.npy", &descr[1..]),
                descr,
                false,
                &[rows, cols],
                data,
            );
        }
    }
    out
}

#[test]
fn every_instruction_set_gives_the_same_bytes() {
    let sets = supported();
    assert!(sets.contains(&"portable"));
    let dir = tmpdir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture("npy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.extend(generated(dir.path()));
    let mut compared = 0;
    for f in &files {
        let p = f.to_str().unwrap();
        for extra in [
            &["--format", "json"][..],
            &[
                "--format",
                "json",
                "--nan",
                "propagate",
                "--memory",
                "4MiB",
                "--threads",
                "1",
            ],
        ] {
            let mut args = vec!["stats", p];
            args.extend(extra);
            let want = run(sets[0], &args);
            for s in &sets[1..] {
                assert!(
                    run(s, &args) == want,
                    "{p} {extra:?}: {s} differs from {}",
                    sets[0]
                );
                compared += 1;
            }
        }
    }
    eprintln!(
        "{} files, instruction sets {sets:?}, {compared} comparisons",
        files.len()
    );
}

#[test]
fn states_saved_under_different_instruction_sets_merge_to_one_run() {
    let sets = supported();
    let dir = tmpdir();
    let files = generated(dir.path());
    let f = files.iter().find(|p| p.ends_with("k1_f8.npy")).unwrap();
    let p = f.to_str().unwrap();
    let shards = String::from_utf8(run("portable", &["info", p, "--shards", "3"])).unwrap();
    let ranges: Vec<&str> = shards.lines().collect();
    let mut states = Vec::new();
    for (k, r) in ranges.iter().enumerate() {
        let st = dir.path().join(format!("p{k}.cstate"));
        let simd = sets[k % sets.len()];
        run(
            simd,
            &[
                "stats",
                p,
                "--rows",
                r,
                "-o",
                "/dev/null",
                "--save-state",
                st.to_str().unwrap(),
            ],
        );
        states.push(st);
    }
    let mut m = vec!["merge", "--format", "json"];
    m.extend(states.iter().map(|s| s.to_str().unwrap()));
    assert_eq!(
        run("portable", &m),
        run(sets[sets.len() - 1], &["stats", p, "--format", "json"])
    );
}

#[test]
fn an_unknown_or_unsupported_instruction_set_is_an_error() {
    let p = fixture("npy").join("f8_le_c_2d.npy");
    let out = bin()
        .env("COLSTATS_SIMD", "sse9")
        .args(["stats", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: COLSTATS_SIMD=sse9"), "{err}");
    assert!(out.stdout.is_empty());
}
