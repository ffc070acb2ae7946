//! Batch benchmark: many shards as one array, and saved states merged, every figure measured
//! in the same run.
//!
//! ```text
//! cargo bench --bench batch -- --quick    # 200 shards of 256 KiB, seconds
//! cargo bench --bench batch               # 2,000 shards of 2 MiB (4 GiB), minutes
//! ```
//!
//! 1. Shards: `.npy` files of (rows, 16) float64. Warm limit: the best of a plain sum over
//!    every file mapped (populated) and over every file read with `pread`, files spread over
//!    all cores. colstats warm: `colstats stats --files-from LIST` (best of 3), with its peak
//!    RSS; its time to first byte: `colstats info --files-from LIST` (every header read and
//!    checked, every domain planned, nothing else). numpy: a loop over the files
//!    (`np.load(mmap_mode='r')`, per-file sums, sums of squares, minima, maxima); dask:
//!    `da.concatenate` of `da.from_array(np.load(f, mmap_mode='r'))` per file, then mean, std,
//!    min, max — with their peak RSS, when `$COLSTATS_BENCH_PYTHON` can import them.
//! 2. Batch mode: 10,000 tiny shards (1,000 in quick mode) of up to 30 rows of 3 float64,
//!    `--state-dir` fresh and resumed against the plain run, each with its peak RSS under
//!    `--memory 16MiB`, the states' total size, and `merge` of all the states.
//! 3. States: one file of the same bytes cut by `colstats info --shards 4` into leaf-aligned
//!    slices, each run with `--save-state`, then `colstats merge`: the total against one run,
//!    and the merge alone; then the merge of 4 states of 100,000 columns.
//!
//! Results: a markdown table on stdout and in `target/batch/results.md`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{best, sum_bytes};

/// Runs `cmd`, waits with `wait4`: (success, seconds, peak RSS in MiB of that child alone).
// The child is reaped by `wait4` (which also gives its own peak RSS), not `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measured(cmd: &[String]) -> (bool, f64, f64) {
    let t = Instant::now();
    let child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn");
    let mut status = 0i32;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, filling structs we own.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    let ok = pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, secs, ru.ru_maxrss as f64 / 1024.0)
}

fn best_of(n: usize, cmd: &[String]) -> (bool, f64, f64) {
    (0..n)
        .map(|_| measured(cmd))
        .fold((true, f64::INFINITY, 0.0), |a, b| {
            (a.0 && b.0, a.1.min(b.1), a.2.max(b.2))
        })
}

fn write_npy(path: &Path, rows: usize, cols: usize, seed: u64) {
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let mut h = dict.into_bytes();
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    out.reserve(rows * cols * 8);
    for _ in 0..rows * cols {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = 1e9 + (x >> 11) as f64 / (1u64 << 53) as f64;
        out.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// The warm limit over many files: a plain sum of each file's bytes, mapped or read.
fn warm_limit(files: &[PathBuf]) -> (f64, u64) {
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let sink = AtomicU64::new(0);
    let mapped = || {
        files.par_iter().for_each(|p| {
            let f = File::open(p).unwrap();
            // SAFETY: read-only map of a file nobody truncates during the benchmark.
            let m = unsafe { memmap2::MmapOptions::new().populate().map(&f) }.unwrap();
            sink.fetch_add(sum_bytes(&m).to_bits() & 1, Ordering::Relaxed);
        })
    };
    let pread = || {
        files
            .par_iter()
            .for_each_init(Vec::new, |buf: &mut Vec<u8>, p| {
                let f = File::open(p).unwrap();
                let n = f.metadata().unwrap().len() as usize;
                buf.resize(n, 0);
                f.read_exact_at(buf, 0).unwrap();
                sink.fetch_add(sum_bytes(buf).to_bits() & 1, Ordering::Relaxed);
            })
    };
    mapped();
    let t = best(3, mapped).min(best(3, pread));
    (bytes as f64 / t / 1e9, bytes)
}

const PY_NUMPY_LOOP: &str = r#"
import sys, numpy as np
files = open(sys.argv[1]).read().split()
n = s = s2 = 0; mn = mx = None
for f in files:
    a = np.load(f, mmap_mode='r')
    n += a.shape[0]; s = s + a.sum(axis=0); s2 = s2 + (a * a).sum(axis=0)
    mn = a.min(axis=0) if mn is None else np.minimum(mn, a.min(axis=0))
    mx = a.max(axis=0) if mx is None else np.maximum(mx, a.max(axis=0))
mean = s / n; std = np.sqrt(np.maximum(s2 / n - mean * mean, 0))
"#;
const PY_DASK: &str = r#"
import sys, numpy as np, dask, dask.array as da
files = open(sys.argv[1]).read().split()
x = da.concatenate([da.from_array(np.load(f, mmap_mode='r')) for f in files], axis=0)
with dask.config.set(scheduler='threads'):
    r = dask.compute(x.mean(axis=0), x.std(axis=0), x.min(axis=0), x.max(axis=0))
"#;

fn python() -> String {
    std::env::var("COLSTATS_BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn py_has(m: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {m}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn fmt_run(bytes: u64, r: (bool, f64, f64)) -> String {
    if r.0 {
        format!(
            "{:.2} GB/s ({:.2} s), RSS {:.0} MiB",
            bytes as f64 / r.1 / 1e9,
            r.1,
            r.2
        )
    } else {
        "failed".into()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("batch: not run under cargo test; use `cargo bench --bench batch [-- --quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let colstats = env!("CARGO_BIN_EXE_colstats").to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("batch");
    let data = root.join("data");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).unwrap();
    let (files, rows_per) = if quick { (200, 2048) } else { (2000, 16384) };
    let cols = 16;
    let mut paths = Vec::with_capacity(files);
    for k in 0..files {
        let p = data.join(format!("shard-{k:05}.npy"));
        write_npy(&p, rows_per, cols, k as u64 + 1);
        paths.push(p);
    }
    let list = data.join("list.txt");
    std::fs::write(
        &list,
        paths
            .iter()
            .map(|p| format!("{}\n", p.display()))
            .collect::<String>(),
    )
    .unwrap();
    let (limit, bytes) = warm_limit(&paths);
    let run = [
        colstats.clone(),
        "stats".into(),
        "--files-from".into(),
        s(&list),
        "--format".into(),
        "json".into(),
        "--progress".into(),
        "never".into(),
    ];
    let warm = best_of(3, &run);
    let first_byte = best_of(
        3,
        &[
            colstats.clone(),
            "info".into(),
            "--files-from".into(),
            s(&list),
        ],
    );
    let numpy =
        py_has("numpy").then(|| measured(&[python(), "-c".into(), PY_NUMPY_LOOP.into(), s(&list)]));
    let dask =
        py_has("dask.array").then(|| measured(&[python(), "-c".into(), PY_DASK.into(), s(&list)]));

    // Batch mode over many tiny shards.
    let tiny_n = if quick { 1_000 } else { 10_000 };
    let tiny_dir = data.join("tiny");
    std::fs::create_dir_all(&tiny_dir).unwrap();
    let mut tiny = String::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for k in 0..tiny_n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = tiny_dir.join(format!("t{k:05}.npy"));
        write_npy(&p, (x % 31) as usize, 3, k as u64 + 11);
        tiny.push_str(&format!("{}\n", p.display()));
    }
    let tiny_list = data.join("tiny.txt");
    std::fs::write(&tiny_list, tiny).unwrap();
    let tiny_states = data.join("tiny-states");
    let tiny_run = |extra: &[&str]| {
        let mut c = vec![
            colstats.clone(),
            "stats".into(),
            "--files-from".into(),
            s(&tiny_list),
            "--memory".into(),
            "16MiB".into(),
            "-o".into(),
            "/dev/null".into(),
        ];
        c.extend(extra.iter().map(|a| a.to_string()));
        c
    };
    let td = s(&tiny_states);
    let tiny_plain = best_of(3, &tiny_run(&[]));
    let tiny_fresh = measured(&tiny_run(&["--state-dir", &td]));
    let tiny_resume = best_of(3, &tiny_run(&["--state-dir", &td, "--resume"]));
    let tiny_bytes: u64 = std::fs::read_dir(&tiny_states)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let state_list = data.join("tiny-states.txt");
    let mut names: Vec<String> = std::fs::read_dir(&tiny_states)
        .unwrap()
        .map(|e| s(&e.unwrap().path()))
        .collect();
    names.sort();
    std::fs::write(&state_list, names.join("\n")).unwrap();
    let tiny_merge = best_of(
        3,
        &[
            colstats.clone(),
            "merge".into(),
            "--files-from".into(),
            s(&state_list),
            "-o".into(),
            "/dev/null".into(),
        ],
    );
    let _ = std::fs::remove_dir_all(&tiny_dir);
    let _ = std::fs::remove_dir_all(&tiny_states);

    // States: one file of the same bytes in 4 leaf-aligned slices.
    let whole = data.join("whole.npy");
    write_npy(&whole, rows_per * files, cols, 7);
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    let one = best_of(
        3,
        &[
            colstats.clone(),
            "stats".into(),
            s(&whole),
            "-o".into(),
            "/dev/null".into(),
        ],
    );
    let out = Command::new(&colstats)
        .args(["info", "--shards", "4"])
        .arg(&whole)
        .output()
        .unwrap();
    let ranges: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let t = Instant::now();
    let mut states = Vec::new();
    for (k, r) in ranges.iter().enumerate() {
        let st = data.join(format!("part-{k}.cstate"));
        let c = measured(&[
            colstats.clone(),
            "stats".into(),
            s(&whole),
            "--rows".into(),
            r.clone(),
            "--save-state".into(),
            s(&st),
            "-o".into(),
            "/dev/null".into(),
        ]);
        assert!(c.0, "slice {r}");
        states.push(s(&st));
    }
    let slices = t.elapsed().as_secs_f64();
    let mut m = vec![
        colstats.clone(),
        "merge".into(),
        "-o".into(),
        "/dev/null".into(),
    ];
    m.extend(states.iter().cloned());
    let merge = best_of(3, &m);
    // The merge of 4 states of 100,000 columns.
    let wide = data.join("wide.npy");
    write_npy(&wide, 64, 100_000, 3);
    let mut wide_states = Vec::new();
    for k in 0..4 {
        let st = data.join(format!("wide-{k}.cstate"));
        let r = format!("{}:{}", k * 16, (k + 1) * 16);
        let c = measured(&[
            colstats.clone(),
            "stats".into(),
            s(&wide),
            "--rows".into(),
            r,
            "--save-state".into(),
            s(&st),
            "-o".into(),
            "/dev/null".into(),
        ]);
        assert!(c.0);
        wide_states.push(s(&st));
    }
    let state_bytes = std::fs::metadata(&wide_states[0]).unwrap().len();
    let mut wm = vec![
        colstats.clone(),
        "merge".into(),
        "--allow-gaps".into(),
        "-o".into(),
        "/dev/null".into(),
    ];
    wm.extend(wide_states.iter().cloned());
    let wide_merge = best_of(3, &wm);

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut md = format!(
        "Machine: {threads} cores; {} mode. {files} `.npy` shards of {} KiB ({:.2} GB), float64, 16 columns, warm.\n\n",
        if quick { "quick" } else { "full" },
        rows_per * cols * 8 / 1024,
        bytes as f64 / 1e9
    );
    md.push_str("| what | result |\n|---|---|\n");
    md.push_str(&format!(
        "| warm limit (plain sum of every file, mapped or read, all cores) | {limit:.2} GB/s |\n"
    ));
    md.push_str(&format!(
        "| colstats `--files-from` | {}; {:.2} of the limit |\n",
        fmt_run(bytes, warm),
        bytes as f64 / warm.1 / 1e9 / limit
    ));
    md.push_str(&format!(
        "| time to first byte (`colstats info --files-from`: every header read and checked, plan made) | {:.3} s ({:.0} µs a file) |\n",
        first_byte.1,
        first_byte.1 * 1e6 / files as f64
    ));
    md.push_str(&format!(
        "| numpy loop over the files | {} |\n",
        numpy.map_or("not installed".into(), |r| fmt_run(bytes, r))
    ));
    md.push_str(&format!(
        "| dask `concatenate` of per-file memmaps | {} |\n",
        dask.map_or("not installed".into(), |r| fmt_run(bytes, r))
    ));
    let secs = |r: (bool, f64, f64)| {
        if r.0 {
            format!("{:.3} s, peak RSS {:.1} MiB", r.1, r.2)
        } else {
            "failed".into()
        }
    };
    md.push_str(&format!(
        "\nBatch mode, {tiny_n} shards of 0 to 30 rows x 3 float64, `--memory 16MiB`:\n\n\
         | run | time, peak RSS |\n|---|---|\n\
         | plain (`stats --files-from`) | {} |\n\
         | `--state-dir`, fresh | {} |\n\
         | `--state-dir --resume`, every state reused | {} |\n\
         | `merge --files-from` of the {tiny_n} states | {} |\n\
         | the states, in all | {:.2} MiB ({:.0} bytes a state) |\n",
        secs(tiny_plain),
        secs(tiny_fresh),
        secs(tiny_resume),
        secs(tiny_merge),
        tiny_bytes as f64 / (1 << 20) as f64,
        tiny_bytes as f64 / tiny_n as f64
    ));
    md.push_str(&format!(
        "\nOne file of the same bytes: one run {:.2} s; 4 leaf-aligned `--rows` slices with `--save-state`, one after another, {:.2} s ({:.2}x), then `merge` {:.3} s. Merging 4 states of 100,000 columns ({:.1} MiB each): {:.3} s.\n",
        one.1,
        slices,
        slices / one.1,
        merge.1,
        state_bytes as f64 / (1 << 20) as f64,
        wide_merge.1
    ));
    println!("{md}");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("results.md"), &md).unwrap();
    let _ = std::fs::remove_dir_all(&data);
}
