//! Files that shrink during a run, and runs on threads the caller made: the host process
//! survives both. A file truncated by another thread mid-run gives that input an error of
//! kind `Size` (mapped or read), never a SIGBUS; the kernels fit a default 2 MiB stack.

use crate::common::*;
use colstats::{ErrorKind, IoMode, Request, Stat};
use std::sync::mpsc;

/// A float64 file of `rows` × 8 and its full-run means.
fn big_file(dir: &std::path::Path, name: &str, rows: usize) -> std::path::PathBuf {
    let p = dir.join(name);
    dyadic(rows, 8, 3, 0, 7).write_npy(&p, false);
    p
}

/// Runs `req` with a progress callback that, at the first block done, has another thread
/// truncate `path` to `keep` bytes and waits until it has.
fn run_truncating(
    req: Request,
    path: &std::path::Path,
    keep: u64,
) -> colstats::Result<colstats::Summary> {
    let (go, got) = mpsc::channel::<()>();
    let (done, wait) = mpsc::channel::<()>();
    let victim = path.to_path_buf();
    let cutter = std::thread::spawn(move || {
        if got.recv().is_ok() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&victim)
                .unwrap();
            f.set_len(keep).unwrap();
            done.send(()).unwrap();
        }
    });
    let go = std::sync::Mutex::new(Some(go));
    let wait = std::sync::Mutex::new(wait);
    let r = req.run_with_progress(|_, _| {
        if let Some(go) = go.lock().unwrap().take() {
            go.send(()).unwrap();
            wait.lock().unwrap().recv().unwrap();
        }
    });
    drop(go);
    cutter.join().unwrap();
    r
}

#[test]
fn a_file_truncated_mid_run_is_an_error_not_a_signal() {
    let dir = tmpdir();
    // 400,000 × 8 f64 = 25.6 MB in blocks of 256 KiB: ~100 blocks.
    for (mode, keep) in [
        (IoMode::Auto, 4096 * 100 + 128),
        (IoMode::Mmap, 10 << 20),
        (IoMode::Read, 1000),
        // Inside the last page: those bytes read as zeros without any fault.
        (IoMode::Mmap, 400_000 * 64 + 128 - 24),
    ] {
        let p = big_file(dir.path(), "a.npy", 400_000);
        let req = Request::new(&p).io(mode).threads(2).block_limit(256 << 10);
        let e = run_truncating(req, &p, keep).expect_err("a truncated file must fail");
        assert_eq!(e.kind(), ErrorKind::Size, "{mode:?}: {e}");
        assert!(e.to_string().contains("shrank"), "{e}");
        assert_eq!(e.path(), Some(p.as_path()));
    }
}

#[test]
fn keep_going_leaves_out_a_file_truncated_mid_run() {
    let dir = tmpdir();
    let a = big_file(dir.path(), "a.npy", 200_000);
    let b = big_file(dir.path(), "b.npy", 200_000);
    let c = dir.path().join("c.npy");
    std::fs::copy(&a, &c).unwrap();
    let alone = Request::inputs([&a, &c]).run().unwrap();
    let req = Request::inputs([&a, &b, &c])
        .threads(1)
        .block_limit(256 << 10)
        .keep_going(true);
    // The first block done is one of a's; b is cut while the run goes on.
    let s = run_truncating(req, &b, 5000).unwrap();
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert_eq!(s.skipped[0].0, b);
    assert_eq!(s.get_f64(Stat::Mean), alone.get_f64(Stat::Mean));
}

#[test]
fn the_cli_survives_a_file_truncated_mid_run() {
    // The binary cannot be paused at a block, so the file is cut after a fraction of a full
    // run's time, until one attempt lands mid-run. A run that finished first must have the
    // full file's answer; a run that was cut must fail with one line; none may die by signal.
    use std::os::unix::process::ExitStatusExt;
    let dir = tmpdir();
    let rows = 4_000_000; // 256 MB
    let p = big_file(dir.path(), "a.npy", rows);
    let args = [
        "stats",
        "--threads",
        "1",
        "--memory",
        "8MiB",
        "--stats",
        "mean",
    ];
    let t0 = std::time::Instant::now();
    let full = stdout_of(bin().args(args).arg(&p), "full run");
    let took = t0.elapsed();
    let bytes = std::fs::read(&p).unwrap();
    let mut cut = 0;
    for attempt in 1..=9 {
        std::fs::write(&p, &bytes).unwrap();
        let child = bin()
            .args(args)
            .arg(&p)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(took * attempt / 10);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.signal(),
            None,
            "killed by a signal: {:?}",
            out.status
        );
        if out.status.success() {
            assert_eq!(out.stdout, full, "a run that finished has the full answer");
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(out.stdout.is_empty(), "no partial output");
        assert_eq!(err.lines().count(), 1, "{err}");
        if err.contains("truncated data") {
            continue; // cut before it was opened
        }
        assert!(err.contains("shrank"), "{err}");
        cut += 1;
        if cut == 2 {
            break;
        }
    }
    assert!(
        cut > 0,
        "no attempt truncated the file mid-run (a full run took {took:?})"
    );
}

#[test]
fn runs_from_threads_with_default_stacks() {
    // `files.par_iter().map(|f| Request::new(f).run())` in a pool the caller built, with
    // rayon's default stack size, and a run on a plain `std::thread`.
    use rayon::prelude::*;
    let dir = tmpdir();
    let dtypes = ["<f8", ">f4", "<f2", "<i8", ">u4", "|i1", "|b1", "<u2"];
    let files: Vec<_> = dtypes
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = dir.path().join(format!("{i}.npy"));
            let size: usize = d[2..].parse().unwrap();
            let data: Vec<u8> = (0..77 * 3 * size)
                .map(|k| (k % 7) as u8 * (d != &"|b1") as u8)
                .collect();
            write_npy(&p, d, false, &[77, 3], &data);
            p
        })
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let inside: Vec<_> = pool.install(|| {
        files
            .par_iter()
            .map(|f| Request::new(f).run().map(|s| s.get_f64(Stat::Var)))
            .collect()
    });
    let alone: Vec<_> = files
        .iter()
        .map(|f| {
            Request::new(f)
                .threads(1)
                .run()
                .map(|s| s.get_f64(Stat::Var))
        })
        .collect();
    for (a, b) in inside.iter().zip(&alone) {
        assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    }
    let f = files[0].clone();
    let small = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            Request::new(&f)
                .threads(1)
                .run()
                .map(|s| s.get_f64(Stat::Var))
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(&small, alone[0].as_ref().unwrap());
}
