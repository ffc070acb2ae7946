//! MPI runs (feature `mpi`): `mpirun -n {1,2,3,4}` of the built binary on generated `.npy`
//! and HDF5 inputs (contiguous, chunked gzip), single files and batches, must print exactly
//! the bytes of a single-process run, for 1 and 2 threads per rank; a failure on any rank
//! (a missing input, an unwritable output, one rank failing or panicking while planning or
//! reducing, one rank killed) ends every rank with a non-zero status within a bounded time,
//! with one error line from rank 0. Every mpirun is wrapped in `timeout -k 5`.
//!
//! Its own test binary: it needs `mpirun` (Debian: openmpi-bin), which the default test
//! command installs with `scripts/setup.sh --mpi`.
#![cfg(feature = "mpi")]

#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Open MPI settings for root, 2 cores and more ranks than cores (see the README).
const ENV: [(&str, &str); 5] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ("OMPI_MCA_rmaps_base_oversubscribe", "1"),
    ("OMPI_MCA_hwloc_base_binding_policy", "none"),
    ("OMPI_MCA_pml", "ob1"),
];

fn mpirun(n: usize, args: &[String], env: &[(&str, &str)], limit: u64) -> (Output, Duration) {
    let t = Instant::now();
    let out = Command::new("timeout")
        .args([
            "-k",
            "5",
            &limit.to_string(),
            "mpirun",
            "-n",
            &n.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_colstats"))
        .args(args)
        .envs(ENV)
        .envs(env.iter().copied())
        .output()
        .expect("timeout and mpirun");
    (out, t.elapsed())
}

fn single(args: &[String]) -> Output {
    bin().args(args).output().unwrap()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn p(x: &Path) -> String {
    x.display().to_string()
}

/// Float64 rows around 1e9 with NaNs, `cols` wide.
fn values(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..rows * cols)
        .map(|_| {
            if rng.next() % 101 == 0 {
                f64::NAN
            } else {
                1e9 + rng.range(-1 << 40, 1 << 40) as f64 / (1u64 << 37) as f64
            }
        })
        .collect()
}

fn npy(path: &Path, v: &[f64], cols: usize, (a, b): (usize, usize)) {
    let data: Vec<u8> = v[a * cols..b * cols]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_npy(path, "<f8", false, &[(b - a) as u64, cols as u64], &data);
}

struct Inputs {
    _dir: tempfile::TempDir,
    whole: PathBuf,
    shards: Vec<PathBuf>,
    h5: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tmpdir();
    let (rows, cols) = (120_001, 5);
    let v = values(rows, cols, 1);
    let whole = dir.path().join("whole.npy");
    npy(&whole, &v, cols, (0, rows));
    let cuts = [0, 1, 7_000, 7_001, 50_000, 50_000, 99_999, rows];
    let shards = cuts
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let s = dir.path().join(format!("s{i}.npy"));
            npy(&s, &v, cols, (w[0], w[1]));
            s
        })
        .collect();
    let h5 = dir.path().join("data.h5");
    {
        let f = hdf5::File::create(&h5).unwrap();
        let a = ndarray::Array2::from_shape_vec((rows, cols), v.clone()).unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .create("contig")
            .unwrap();
        f.new_dataset_builder()
            .with_data(&a)
            .chunk((1000, cols))
            .deflate(4)
            .create("gzip")
            .unwrap();
    }
    Inputs {
        _dir: dir,
        whole,
        shards,
        h5,
    }
}

#[test]
fn every_rank_count_prints_the_bytes_of_one_process() {
    let inp = inputs();
    let mut shard_args: Vec<String> = inp.shards.iter().map(|s| p(s)).collect();
    shard_args.extend(strs(&["--format", "json"]));
    #[rustfmt::skip]
    let cases: Vec<Vec<String>> = vec![
        strs(&["stats", &p(&inp.whole), "--format", "json"]),
        strs(&[
            "stats",
            &p(&inp.whole),
            "--format",
            "csv",
            "--rows",
            "333:",
            "--columns",
            "4,1",
        ]),
        [strs(&["stats"]), shard_args].concat(),
        strs(&[
            "stats",
            &p(&inp.h5),
            "--dataset",
            "/contig",
            "--format",
            "json",
        ]),
        strs(&[
            "stats",
            &p(&inp.h5),
            "--dataset",
            "/gzip",
            "--format",
            "json",
            "--memory",
            "4MiB",
        ]),
        strs(&[
            "stats",
            &p(&inp.whole),
            &p(&inp.h5),
            "--dataset",
            "/contig",
            "--format",
            "table",
        ]),
    ];
    // Up to 8 ranks (more ranks than leaves in places) on the batch of shards.
    let want = single(&cases[2]);
    for n in 5..=8 {
        let (got, _) = mpirun(n, &cases[2], &[], 120);
        assert!(got.status.success());
        assert_eq!(got.stdout, want.stdout, "n={n}");
    }
    for case in &cases {
        let want = single(case);
        assert!(want.status.success());
        for n in 1..=4 {
            for threads in ["1", "2"] {
                let mut args = case.clone();
                args.extend(strs(&["--threads", threads]));
                let (got, _) = mpirun(n, &args, &[], 120);
                assert!(
                    got.status.success(),
                    "n={n} {args:?}: {}",
                    String::from_utf8_lossy(&got.stderr)
                );
                assert_eq!(
                    String::from_utf8_lossy(&got.stdout),
                    String::from_utf8_lossy(&want.stdout),
                    "n={n} threads={threads} {case:?}"
                );
                assert!(
                    got.stderr.is_empty(),
                    "{}",
                    String::from_utf8_lossy(&got.stderr)
                );
            }
        }
    }
}

#[test]
fn the_input_list_comes_from_rank_0_even_on_stdin() {
    let inp = inputs();
    let list: String = inp.shards.iter().map(|s| format!("{}\n", p(s))).collect();
    let mut args = strs(&["stats", "--files-from", "-", "--format", "json"]);
    let want = {
        let mut c = bin()
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    assert!(want.status.success());
    args.extend(strs(&["--threads", "1"]));
    let mut c = Command::new("timeout")
        .args(["-k", "5", "60", "mpirun", "-n", "3"])
        .arg(env!("CARGO_BIN_EXE_colstats"))
        .args(&args)
        .envs(ENV)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    }
    let got = c.wait_with_output().unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, want.stdout);
}

#[test]
fn save_state_under_mpi_merges_like_one_process() {
    let inp = inputs();
    let dir = inp.whole.parent().unwrap();
    let st = dir.join("mpi.cstate");
    let (got, _) = mpirun(
        3,
        &strs(&[
            "stats",
            &p(&inp.whole),
            "-o",
            "/dev/null",
            "--save-state",
            &p(&st),
        ]),
        &[],
        120,
    );
    assert!(got.status.success());
    let merged = single(&strs(&["merge", &p(&st), "--format", "json"]));
    let want = single(&strs(&["stats", &p(&inp.whole), "--format", "json"]));
    assert_eq!(merged.stdout, want.stdout);
}

/// Runs a failing case at n = 4 and checks: non-zero on every rank (mpirun's status), within
/// the time limit, nothing on stdout, and (unless a rank was killed) our one error line.
fn fails(args: &[String], env: &[(&str, &str)], want: &str) {
    let limit = 40;
    let (out, took) = mpirun(4, args, env, limit);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} {env:?} succeeded");
    assert!(
        took < Duration::from_secs(limit + 6),
        "{args:?} {env:?}: took {took:?}"
    );
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    if !want.is_empty() {
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(ours.len(), 1, "{args:?} {env:?}: {err}");
        assert!(ours[0].contains(want), "{args:?} {env:?}: {err}");
    }
}

#[test]
fn a_failure_on_any_rank_ends_every_rank() {
    let inp = inputs();
    let w = p(&inp.whole);
    let missing = p(&inp.whole.with_file_name("missing.npy"));
    fails(&strs(&["stats", &w, &missing]), &[], "missing.npy");
    fails(
        &strs(&["stats", &w, "-o", "/nonexistent/out.json"]),
        &[],
        "cannot write output",
    );
    fails(
        &strs(&["stats", &w, "--keep-going"]),
        &[],
        "not available across MPI ranks",
    );
    for (spec, want) in [
        ("2:plan", "injected failure on rank 2 (plan)"),
        ("3:reduce", "injected failure on rank 3 (reduce)"),
        (
            "1:panic",
            "internal error (a panic): injected panic on rank 1",
        ),
        ("0:reduce", "injected failure on rank 0 (reduce)"),
    ] {
        fails(
            &strs(&["stats", &w]),
            &[("COLSTATS_MPI_TEST_FAIL", spec)],
            want,
        );
    }
    // One rank's state never reaches rank 0: its own error is the job's.
    fails(
        &strs(&["stats", &w]),
        &[("COLSTATS_MPI_TEST_FAIL", "2:gather")],
        "injected failure on rank 2 (gather)",
    );
    fails(
        &strs(&["stats", &w]),
        &[("COLSTATS_MPI_TEST_FAIL", "3:gather")],
        "injected failure on rank 3 (gather)",
    );
    // Single-process modes are refused on every rank, not ignored.
    let sd = inp.whole.with_file_name("states");
    fails(
        &strs(&["stats", &w, "--state-dir", &p(&sd)]),
        &[],
        "not available across MPI ranks",
    );
    assert!(!sd.exists());
    // Errors found before the data (no file matches, a bad option) are printed once.
    let pattern = p(&inp.whole.with_file_name("nomatch*.npy"));
    fails(&strs(&["stats", &pattern]), &[], "no file matches");
    let (out, _) = mpirun(4, &strs(&["stats", &w, "--bogus"]), &[], 40);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("unexpected argument").count(), 1, "{err}");
    // A rank killed mid-run: mpirun ends the job (or the timeout does); never success.
    fails(
        &strs(&["stats", &w]),
        &[("COLSTATS_MPI_TEST_FAIL", "2:kill")],
        "",
    );
}
