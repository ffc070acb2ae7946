//! End-to-end benchmark: colstats against the machine's limits and against numpy, dask and
//! h5py, every figure measured in the same run.
//!
//! ```text
//! cargo bench --bench e2e -- --quick     # tens of MiB per case, under a minute
//! cargo bench --bench e2e                # several GiB per case (about 15 minutes)
//! ```
//!
//! For each case the input is generated with data-gen, then measured: the warm limit (best of
//! a parallel sum over per-block memory maps and a parallel `pread` into reused buffers plus a
//! sum, all cores), colstats warm (best of several runs), the cold limit (sequential 16 MiB
//! reads after dropping the file from the page cache) and colstats cold, colstats's peak RSS,
//! and — when `$COLSTATS_BENCH_PYTHON` (default `python3`) can import them — numpy
//! (`np.load(mmap_mode='r')` + mean/std/min/max over axis 0), dask.array (`from_array` on that
//! memmap, ~128 MiB chunks, threaded scheduler) and h5py (64 MiB slabs + numpy) with their
//! peak RSS. One more case runs under a hard memory cap (a cgroup, page cache included) on a
//! file larger than the cap. Results: a markdown table on stdout and in
//! `target/e2e/results.md`, every figure in `target/e2e/results.json`.
//!
//! Peak RSS comes from `wait4` in a small shim process (this binary re-executed with
//! `--shim`), so the benchmark's own memory does not leak into the child's figure.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use data_gen::{DType, Dist, Order, Spec};
use rayon::prelude::*;

#[path = "support/mod.rs"]
mod support;
use support::{best, cold_limit, drop_cache, mapped_sum, sum_bytes, BLOCK};

// ---------------------------------------------------------------- the measuring shim

/// `--shim [--cgroup DIR] [--timeout SECS] -- CMD ARGS...`: runs CMD, prints
/// `status secs maxrss_kib` and CMD's last stderr line.
fn shim(args: &[String]) -> ! {
    let mut i = 0;
    let (mut cgroup, mut timeout) = (None, 3600u64);
    while i < args.len() && args[i] != "--" {
        match args[i].as_str() {
            "--cgroup" => {
                cgroup = Some(args[i + 1].clone());
                i += 1;
            }
            "--timeout" => {
                timeout = args[i + 1].parse().unwrap();
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    let cmd = &args[i + 1..];
    if let Some(cg) = cgroup {
        std::fs::write(
            Path::new(&cg).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .expect("join the cgroup");
    }
    let t = Instant::now();
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as i32;
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let (mut status, mut ru): (i32, libc::rusage) = (0, unsafe { std::mem::zeroed() });
    loop {
        // SAFETY: waits for our own child; `ru` is ours to fill.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = t.elapsed().as_secs_f64();
    let st = std::process::ExitStatus::from_raw(status);
    let code = match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit{c}"),
        (_, Some(s)) => format!("signal{s}"),
        _ => "unknown".into(),
    };
    let stderr = reader.join().unwrap_or_default();
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    println!("{code} {secs} {}", ru.ru_maxrss);
    println!("{}", last.chars().take(200).collect::<String>());
    std::process::exit(0)
}

#[derive(Clone, Debug, Default)]
struct Run {
    ok: bool,
    status: String,
    secs: f64,
    rss_mib: f64,
    note: String,
}

fn measured(cmd: &[String], cgroup: Option<&Path>, timeout: u64) -> Run {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.arg("--shim").args(["--timeout", &timeout.to_string()]);
    if let Some(cg) = cgroup {
        c.arg("--cgroup").arg(cg);
    }
    let out = c.arg("--").args(cmd).output().expect("shim");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let note = lines.next().unwrap_or("").to_string();
    let status = head.first().copied().unwrap_or("?").to_string();
    Run {
        ok: status == "exit0",
        secs: head.get(1).and_then(|s| s.parse().ok()).unwrap_or(f64::NAN),
        rss_mib: head
            .get(2)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0,
        status,
        note,
    }
}

// ---------------------------------------------------------------- machine limits

/// Warm limit: best of per-block populated maps + sum, and pread into reused buffers + sum.
fn warm_limit(path: &Path, repeats: usize) -> f64 {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let sink = AtomicU64::new(0);
    let blocks: Vec<u64> = (0..len.div_ceil(BLOCK)).collect();
    let mapped = || {
        sink.fetch_add(mapped_sum(&f, len), Ordering::Relaxed);
    };
    let pread = || {
        blocks.par_iter().for_each_init(
            || vec![0u8; BLOCK as usize],
            |buf, &b| {
                let off = b * BLOCK;
                let n = BLOCK.min(len - off) as usize;
                f.read_exact_at(&mut buf[..n], off).unwrap();
                sink.fetch_add(sum_bytes(&buf[..n]).to_bits() & 1, Ordering::Relaxed);
            },
        )
    };
    mapped(); // warm the cache
    let t = best(repeats, mapped).min(best(repeats, pread));
    len as f64 / t / 1e9
}

/// Rows of a wide C-order tile the kernel sweeps together, and the bytes of one row it reads
/// at a time (32 f64 lanes); its column tiles are 512 KiB per leaf. (Mirrors
/// `src/kernel/mod.rs`: the order, not the arithmetic, is what this limit measures.)
const ORDER_CHUNK: usize = 16;
const ORDER_PIECE: usize = 256;
const ORDER_TILE_BYTES: usize = 512 << 10;

/// For arrays whose rows are too wide to reduce row by row: the warm limit of a plain sum
/// that reads the bytes in the order colstats must (its own plan's blocks and maps, column
/// tiles, 16 rows at a time in 256-byte pieces), so the cost of that order is measured apart
/// from the arithmetic. `None` for other arrays.
fn order_limit(path: &Path, repeats: usize) -> Option<f64> {
    let info = colstats::Request::new(path).info().ok()?;
    let (meta, summary) = info.array?;
    let size = meta.dtype.size;
    if meta.order != colstats::source::Order::C || meta.columns as usize * size < 64 << 10 {
        return None;
    }
    // The blocks themselves (the public summary has only their count and shape).
    let sel: Vec<u64> = (0..meta.columns).collect();
    let plan = colstats::plan::plan(
        &meta,
        &sel,
        0..meta.rows,
        summary.budget,
        info.threads,
        u64::MAX,
    )
    .ok()?;
    let f = File::open(path).unwrap();
    let sink = AtomicU64::new(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(info.threads)
        .build()
        .unwrap();
    let run = || {
        pool.install(|| {
            plan.blocks.par_iter().for_each(|b| {
                let start = b.offset & !4095;
                let len = (b.offset - start + b.span) as usize;
                let mut o = memmap2::MmapOptions::new();
                o.offset(start).len(len);
                if b.dense {
                    o.populate();
                }
                // SAFETY: read-only map of a file nobody truncates during the benchmark.
                let m = unsafe { o.map(&f) }.unwrap();
                let d = &m[(b.offset - start) as usize..];
                let sh = b.shape;
                let tile = (ORDER_TILE_BYTES / (sh.leaf_rows.max(1) * size)).clamp(16, 1024) * size;
                let (row, stride) = (sh.width * size, sh.stride * size);
                let mut acc = 0.0;
                for c0 in (0..row).step_by(tile) {
                    let w = tile.min(row - c0);
                    for r0 in (0..sh.rows).step_by(ORDER_CHUNK) {
                        for p in (0..w).step_by(ORDER_PIECE) {
                            for r in r0..(r0 + ORDER_CHUNK).min(sh.rows) {
                                let o = r * stride + c0 + p;
                                acc += sum_bytes(&d[o..o + ORDER_PIECE.min(w - p)]);
                            }
                        }
                    }
                }
                sink.fetch_add(acc.to_bits() & 1, Ordering::Relaxed);
            })
        })
    };
    run();
    let t = best(repeats, run);
    Some(meta.rows as f64 * meta.columns as f64 * size as f64 / t / 1e9)
}

/// Drops `path` from the page cache (no root needed).

// ---------------------------------------------------------------- cases

#[derive(Clone)]
enum Input {
    Npy(Order),
    H5 {
        chunks: Option<Vec<u64>>,
        gzip: bool,
    },
}

#[derive(Clone)]
struct Case {
    name: &'static str,
    dtype: &'static str,
    cols: u64,
    input: Input,
    dist: Dist,
}

fn cases() -> Vec<Case> {
    let n = Dist::Normal(0.0, 1.0);
    vec![
        Case {
            name: "f64 C 16 cols",
            dtype: "<f8",
            cols: 16,
            input: Input::Npy(Order::C),
            dist: n,
        },
        Case {
            name: "f32 C 16 cols",
            dtype: "<f4",
            cols: 16,
            input: Input::Npy(Order::C),
            dist: n,
        },
        Case {
            name: "f64 1 col",
            dtype: "<f8",
            cols: 1,
            input: Input::Npy(Order::C),
            dist: n,
        },
        Case {
            name: "f64 C 3 cols",
            dtype: "<f8",
            cols: 3,
            input: Input::Npy(Order::C),
            dist: n,
        },
        Case {
            name: "f64 C 100000 cols",
            dtype: "<f8",
            cols: 100_000,
            input: Input::Npy(Order::C),
            dist: n,
        },
        Case {
            name: "f64 F 16 cols",
            dtype: "<f8",
            cols: 16,
            input: Input::Npy(Order::F),
            dist: n,
        },
        Case {
            name: "uint8 C 64 cols",
            dtype: "|u1",
            cols: 64,
            input: Input::Npy(Order::C),
            dist: Dist::Int(0, 256),
        },
        Case {
            name: "HDF5 contiguous f64",
            dtype: "<f8",
            cols: 16,
            input: Input::H5 {
                chunks: None,
                gzip: false,
            },
            dist: n,
        },
        Case {
            name: "HDF5 chunked gzip+shuffle f64",
            dtype: "<f8",
            cols: 16,
            input: Input::H5 {
                chunks: Some(vec![16384, 16]),
                gzip: true,
            },
            dist: Dist::Int(-1000, 1000),
        },
    ]
}

fn generate(case: &Case, path: &Path, bytes: u64) -> u64 {
    let dt: DType = case.dtype.parse().unwrap();
    let rows = (bytes / (case.cols * dt.size as u64)).max(1);
    let spec = Spec {
        shape: vec![rows, case.cols],
        dtype: dt,
        dist: case.dist,
        nan_frac: 0.0,
        inf_frac: 0.0,
        seed: 1,
    };
    match &case.input {
        Input::Npy(order) => data_gen::write_npy(path, &spec, *order, &|_| {}).unwrap(),
        Input::H5 { chunks, gzip } => {
            let layout = data_gen::h5::H5Layout {
                chunks: chunks.clone(),
                gzip: gzip.then_some(4),
                shuffle: *gzip,
            };
            data_gen::h5::write_hdf5(path, "/x", &spec, &layout, &|_| {}).unwrap()
        }
    }
    spec.bytes()
}

const PY_NUMPY: &str = r#"
import sys, numpy as np
a = np.load(sys.argv[1], mmap_mode='r')
r = (a.mean(axis=0), a.std(axis=0), a.min(axis=0), a.max(axis=0))
"#;
const PY_DASK: &str = r#"
import sys, numpy as np, dask, dask.array as da
a = np.load(sys.argv[1], mmap_mode='r')
rows = max(1, (128 << 20) // max(1, a.itemsize * (a.size // max(1, a.shape[0]))))
x = da.from_array(a, chunks=(rows,) + a.shape[1:])
with dask.config.set(scheduler='threads'):
    r = dask.compute(x.mean(axis=0), x.std(axis=0), x.min(axis=0), x.max(axis=0))
"#;
const PY_H5PY: &str = r#"
import sys, numpy as np, h5py
with h5py.File(sys.argv[1], 'r') as f:
    d = f[sys.argv[2]]
    step = max(1, (64 << 20) // (d.dtype.itemsize * int(np.prod(d.shape[1:]))))
    n = s = s2 = 0; mn = mx = None
    for r in range(0, d.shape[0], step):
        a = d[r:r + step].astype(np.float64)
        n += a.shape[0]; s = s + a.sum(axis=0); s2 = s2 + (a * a).sum(axis=0)
        mn = a.min(axis=0) if mn is None else np.minimum(mn, a.min(axis=0))
        mx = a.max(axis=0) if mx is None else np.maximum(mx, a.max(axis=0))
    mean = s / n; std = np.sqrt(np.maximum(s2 / n - mean * mean, 0))
"#;

fn python() -> String {
    std::env::var("COLSTATS_BENCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn py_has(module: &str) -> bool {
    Command::new(python())
        .args(["-c", &format!("import {module}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn py_run(script: &str, args: &[&str], cgroup: Option<&Path>, timeout: u64) -> Run {
    let mut cmd = vec![python(), "-c".into(), script.into()];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let mut r = measured(&cmd, cgroup, timeout);
    if !r.ok {
        r.note = describe_failure(&r);
    }
    r
}

fn describe_failure(r: &Run) -> String {
    if r.status == "signal9" {
        "killed (out of memory)".into()
    } else if r.note.contains("MemoryError") {
        "MemoryError".into()
    } else {
        format!("{}: {}", r.status, r.note)
    }
}

// ---------------------------------------------------------------- report

#[derive(Default)]
struct Row {
    case: String,
    bytes: u64,
    warm_limit: f64,
    /// Plain sum in colstats's access order (very wide rows only).
    order_limit: Option<f64>,
    cold_limit: f64,
    warm: Run,
    cold: Run,
    numpy: Option<Run>,
    dask: Option<Run>,
    h5py: Option<Run>,
}

fn gbs(bytes: u64, r: &Run) -> f64 {
    bytes as f64 / r.secs / 1e9
}

fn tool(bytes: u64, r: &Option<Run>) -> String {
    match r {
        None => "—".into(),
        Some(r) if r.ok => format!("{:.2} GB/s, {:.0} MiB", gbs(bytes, r), r.rss_mib),
        Some(r) => format!("failed: {} ({:.0} MiB)", r.note, r.rss_mib),
    }
}

fn json_run(r: &Run) -> String {
    format!(
        "{{\"ok\": {}, \"status\": {:?}, \"seconds\": {}, \"peak_rss_mib\": {}, \"note\": {:?}}}",
        r.ok,
        r.status,
        num(r.secs),
        num(r.rss_mib),
        r.note
    )
}

fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--shim") {
        shim(&args[1..]);
    }
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo test --all-targets` runs bench binaries too, without `--bench`: do nothing there
    // (CI runs the quick mode explicitly with `cargo bench`).
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("e2e: not run under cargo test; use `cargo bench --bench e2e [-- --quick]`");
        return;
    }
    let keep = args.iter().any(|a| a == "--keep");
    let colstats = env!("CARGO_BIN_EXE_colstats");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("e2e");
    let data = std::env::var("COLSTATS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("data"));
    std::fs::create_dir_all(&data).unwrap();
    let size: u64 = if quick { 32 << 20 } else { 4 << 30 };
    let repeats = if quick { 1 } else { 3 };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let have = |m: &str| py_has(m);
    let (has_np, has_dask, has_h5py) = (have("numpy"), have("dask.array"), have("h5py"));
    eprintln!(
        "e2e: {} mode, {} per case, {threads} threads; python {}: numpy {has_np}, dask {has_dask}, h5py {has_h5py}",
        if quick { "quick" } else { "full" },
        human(size),
        python()
    );
    let mut rows = Vec::new();
    for case in cases() {
        let h5 = matches!(case.input, Input::H5 { .. });
        let path = data.join(format!(
            "{}.{}",
            case.name.replace([' ', '+'], "_"),
            if h5 { "h5" } else { "npy" }
        ));
        eprintln!("e2e: {} ...", case.name);
        let bytes = generate(&case, &path, size);
        let mut cmd = vec![
            colstats.to_string(),
            "stats".into(),
            path.display().to_string(),
        ];
        cmd.extend(["--format", "json", "--progress", "never"].map(String::from));
        if h5 {
            cmd.extend(["--dataset".to_string(), "/x".to_string()]);
        }
        let mut row = Row {
            case: case.name.into(),
            bytes,
            ..Row::default()
        };
        row.warm_limit = warm_limit(&path, repeats);
        row.order_limit = order_limit(&path, repeats);
        row.warm = (0..repeats)
            .map(|_| measured(&cmd, None, 3600))
            .min_by(|a, b| a.secs.total_cmp(&b.secs))
            .unwrap();
        // On a VM the "disk" has caches of its own: take the best of a sequential read just
        // before and just after colstats's cold run, each after dropping the page cache.
        let before = cold_limit(&path);
        drop_cache(&path);
        row.cold = measured(&cmd, None, 3600);
        row.cold_limit = before.max(cold_limit(&path));
        let p = path.display().to_string();
        if h5 {
            if has_h5py {
                row.h5py = Some(py_run(PY_H5PY, &[&p, "/x"], None, 3600));
            }
        } else {
            if has_np {
                row.numpy = Some(py_run(PY_NUMPY, &[&p], None, 3600));
            }
            if has_dask {
                row.dask = Some(py_run(PY_DASK, &[&p], None, 3600));
            }
        }
        if !keep {
            let _ = std::fs::remove_file(&path);
        }
        rows.push(row);
    }
    // Larger than the memory it may use: a file several times a hard cgroup cap.
    let capped = capped_case(&data, colstats, quick, has_np, has_dask, keep);

    let mut md = String::new();
    md.push_str(&format!(
        "Machine: {threads} cores, {}; {} mode ({} per case). GB/s of array bytes; fractions are of the limit measured on the same file in the same run.\n\n",
        mem_total(),
        if quick { "quick" } else { "full" },
        human(size)
    ));
    md.push_str("| case | warm limit | colstats warm | fraction | cold limit | colstats cold | fraction | colstats RSS | numpy | dask | h5py |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        let ok = |run: &Run| {
            if run.ok {
                format!("{:.2}", gbs(r.bytes, run))
            } else {
                format!("failed ({})", run.status)
            }
        };
        md.push_str(&format!(
            "| {} | {:.2} | {} | {:.2} | {:.2} | {} | {:.2} | {:.0} MiB | {} | {} | {} |\n",
            r.case,
            r.warm_limit,
            ok(&r.warm),
            gbs(r.bytes, &r.warm) / r.warm_limit,
            r.cold_limit,
            ok(&r.cold),
            gbs(r.bytes, &r.cold) / r.cold_limit,
            r.warm.rss_mib.max(r.cold.rss_mib),
            tool(r.bytes, &r.numpy),
            tool(r.bytes, &r.dask),
            tool(r.bytes, &r.h5py),
        ));
    }
    for r in &rows {
        if let Some(o) = r.order_limit {
            md.push_str(&format!(
                "\n{}: a plain sum reading the bytes in colstats's order (its blocks, column tiles, 16 rows at a time in 256-byte pieces) runs at {:.2} GB/s, {:.2} of the warm limit; colstats warm is {:.2} of that.\n",
                r.case,
                o,
                o / r.warm_limit,
                gbs(r.bytes, &r.warm) / o
            ));
        }
    }
    if let Some(c) = &capped {
        md.push_str(&format!(
            "\nUnder a hard memory cap of {} (cgroup v1, page cache included), {} f64 file, cold:\n\n| tool | result |\n|---|---|\n| colstats --memory {} | {} |\n| numpy | {} |\n| dask | {} |\n",
            human(c.cap),
            human(c.bytes),
            human(c.budget),
            if c.colstats.ok {
                format!(
                    "{:.2} GB/s ({:.2} of the cold limit {:.2} GB/s), peak RSS {:.0} MiB",
                    gbs(c.bytes, &c.colstats),
                    gbs(c.bytes, &c.colstats) / c.cold_limit,
                    c.cold_limit,
                    c.colstats.rss_mib
                )
            } else {
                format!("failed: {}", describe_failure(&c.colstats))
            },
            tool(c.bytes, &c.numpy),
            tool(c.bytes, &c.dask),
        ));
    } else {
        md.push_str("\n(capped case skipped: no writable cgroup v1 memory controller)\n");
    }
    println!("{md}");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("results.md"), &md).unwrap();
    let mut js = String::from("{\"cases\": [\n");
    for (i, r) in rows.iter().enumerate() {
        js.push_str(&format!(
            "{{\"case\": {:?}, \"bytes\": {}, \"warm_limit_gbs\": {}, \"order_limit_gbs\": {}, \"cold_limit_gbs\": {}, \"colstats_warm\": {}, \"colstats_cold\": {}, \"numpy\": {}, \"dask\": {}, \"h5py\": {}}}{}\n",
            r.case,
            r.bytes,
            num(r.warm_limit),
            r.order_limit.map_or("null".into(), num),
            num(r.cold_limit),
            json_run(&r.warm),
            json_run(&r.cold),
            r.numpy.as_ref().map_or("null".into(), json_run),
            r.dask.as_ref().map_or("null".into(), json_run),
            r.h5py.as_ref().map_or("null".into(), json_run),
            if i + 1 < rows.len() { "," } else { "" }
        ));
    }
    js.push_str("],\n\"capped\": ");
    js.push_str(&match &capped {
        Some(c) => format!(
            "{{\"cap_bytes\": {}, \"bytes\": {}, \"budget\": {}, \"cold_limit_gbs\": {}, \"colstats\": {}, \"numpy\": {}, \"dask\": {}}}",
            c.cap,
            c.bytes,
            c.budget,
            num(c.cold_limit),
            json_run(&c.colstats),
            c.numpy.as_ref().map_or("null".into(), json_run),
            c.dask.as_ref().map_or("null".into(), json_run)
        ),
        None => "null".into(),
    });
    js.push_str("}\n");
    std::fs::write(root.join("results.json"), js).unwrap();
    eprintln!("e2e: wrote {}", root.join("results.md").display());
}

struct Capped {
    cap: u64,
    bytes: u64,
    budget: u64,
    cold_limit: f64,
    colstats: Run,
    numpy: Option<Run>,
    dask: Option<Run>,
}

fn capped_case(
    data: &Path,
    colstats: &str,
    quick: bool,
    np: bool,
    dask: bool,
    keep: bool,
) -> Option<Capped> {
    let cg = Path::new("/sys/fs/cgroup/memory/colstats_e2e");
    let _ = std::fs::create_dir(cg);
    let (cap, size, budget): (u64, u64, u64) = if quick {
        (128 << 20, 256 << 20, 32 << 20)
    } else {
        (1 << 30, 8 << 30, 512 << 20)
    };
    if std::fs::write(cg.join("memory.limit_in_bytes"), cap.to_string()).is_err() {
        return None;
    }
    let _ = std::fs::write(cg.join("memory.memsw.limit_in_bytes"), cap.to_string());
    eprintln!(
        "e2e: capped case ({} file, {} cap) ...",
        human(size),
        human(cap)
    );
    let case = Case {
        name: "capped",
        dtype: "<f8",
        cols: 16,
        input: Input::Npy(Order::C),
        dist: Dist::Normal(0.0, 1.0),
    };
    let path = data.join("capped.npy");
    let bytes = generate(&case, &path, size);
    let before = cold_limit(&path);
    drop_cache(&path);
    let cmd: Vec<String> = vec![
        colstats.into(),
        "stats".into(),
        path.display().to_string(),
        "--format".into(),
        "json".into(),
        "--memory".into(),
        human_arg(budget),
    ];
    let colstats = measured(&cmd, Some(cg), 3600);
    let cold_limit = before.max(cold_limit(&path));
    let p = path.display().to_string();
    let numpy = np.then(|| {
        drop_cache(&path);
        py_run(PY_NUMPY, &[&p], Some(cg), 1800)
    });
    let dask = dask.then(|| {
        drop_cache(&path);
        py_run(PY_DASK, &[&p], Some(cg), 1800)
    });
    if !keep {
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir(cg);
    Some(Capped {
        cap,
        bytes,
        budget,
        cold_limit,
        colstats,
        numpy,
        dask,
    })
}

fn human(b: u64) -> String {
    if b >= 1 << 30 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

fn human_arg(b: u64) -> String {
    format!("{}MiB", b >> 20)
}

fn mem_total() -> String {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{:.0} GiB RAM", kb as f64 / (1 << 20) as f64)
}
