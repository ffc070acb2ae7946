//! Peak memory stays within the budget for a file many times larger than it.
//!
//! Alone in its own test binary (not a module of tests/tests.rs), as one test, so
//! `RUSAGE_CHILDREN` sees only these children: a child's peak RSS includes its parent's at
//! spawn, and the other tests' children would count too.
//! A child's `ru_maxrss` also counts its parent's resident memory at spawn (the address
//! space is shared until `exec`), so this process keeps its own footprint small: data are
//! written in small slabs and the cases run one after another.

// Shares the helpers of the integration tests, of which it uses a few.
#[allow(dead_code)]
#[path = "common/mod.rs"]
mod common;

use common::*;
use std::io::Write;

fn children_max_rss_bytes() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    assert_eq!(rc, 0);
    ru.ru_maxrss as u64 * 1024 // kilobytes on Linux
}

/// Runs colstats with `--memory 64MiB` on `path` (plus `extra`), checks it counted `rows`
/// rows, and returns the children's peak RSS so far, asserting it is within budget + 32 MiB.
fn run_and_check(path: &std::path::Path, extra: &[&str], rows: u64, label: &str) {
    let budget: u64 = 64 << 20;
    let mut args = vec!["--memory", "64MiB", "--threads", "2"];
    args.extend_from_slice(extra);
    let j = stats_json(path, &args);
    assert_eq!(j["stats"]["count"][0].as_u64().unwrap(), rows);
    let rss = children_max_rss_bytes();
    eprintln!(
        "{label}: budget 64 MiB, peak RSS so far {:.1} MiB",
        rss as f64 / (1 << 20) as f64
    );
    assert!(
        rss <= budget + (32 << 20),
        "{label}: peak RSS {} MiB over budget 64 MiB + 32 MiB",
        rss >> 20
    );
}

#[test]
fn peak_rss_within_budget() {
    npy_peak_rss_within_budget();
    many_files_peak_rss_within_budget();
    ten_thousand_shards_in_batch_mode();
    #[cfg(feature = "hdf5")]
    hdf5_peak_rss_within_budget();
}

fn npy_peak_rss_within_budget() {
    let budget: u64 = 64 << 20;
    let dir = tmpdir();
    let (rows, cols) = ((9 * budget / 8 / 16) as usize, 16usize);
    for fortran in [false, true] {
        let p = dir.path().join(format!("big{fortran}.npy"));
        // Header, then the data streamed in pieces so the test itself stays small.
        write_npy(&p, "<f8", fortran, &[rows as u64, cols as u64], &[]);
        let mut f = std::io::BufWriter::with_capacity(
            1 << 16,
            std::fs::OpenOptions::new().append(true).open(&p).unwrap(),
        );
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..rows * cols {
            buf.extend_from_slice(&((i % 1000) as f64 * 0.5).to_le_bytes());
            if buf.len() >= 1 << 20 {
                f.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        f.write_all(&buf).unwrap();
        f.flush().unwrap();
        drop(f);
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size >= 8 * budget, "file {size} is not 8x the budget");
        let label = format!("npy fortran={fortran}, {} MiB file", size >> 20);
        run_and_check(&p, &[], rows as u64, &label);
        run_and_check(
            &p,
            &["--io", "read"],
            rows as u64,
            &format!("{label}, --io read"),
        );
        std::fs::remove_file(&p).unwrap();
    }
}

/// A 200-file job (9x the budget in all) as one array, with per-file results, and in batch
/// mode with a state per file.
fn many_files_peak_rss_within_budget() {
    let budget: u64 = 64 << 20;
    let dir = tmpdir();
    let cols = 16usize;
    let total_rows = (9 * budget / 8 / cols as u64) as usize;
    let files = 200;
    let mut paths = Vec::new();
    let mut rows_left = total_rows;
    for k in 0..files {
        let n = if k + 1 == files {
            rows_left
        } else {
            (total_rows / files) + (k % 7) * 13
        };
        rows_left -= n;
        let p = dir.path().join(format!("s{k:03}.npy"));
        let data: Vec<u8> = (0..n * cols)
            .flat_map(|i| ((i % 1000) as f64 * 0.25).to_le_bytes())
            .collect();
        write_npy(&p, "<f8", false, &[n as u64, cols as u64], &data);
        paths.push(p);
    }
    let state_dir = dir.path().join("states");
    for extra in [
        vec![],
        vec!["--per-file"],
        vec!["--state-dir", state_dir.to_str().unwrap()],
    ] {
        let mut cmd = bin();
        cmd.args([
            "stats",
            "--format",
            "json",
            "--memory",
            "64MiB",
            "--threads",
            "2",
        ]);
        cmd.args(&extra).args(&paths);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out.stdout);
        assert_eq!(j["rows"].as_u64().unwrap(), total_rows as u64);
        let rss = children_max_rss_bytes();
        eprintln!(
            "{files} files {extra:?}: budget 64 MiB, peak RSS so far {:.1} MiB",
            rss as f64 / (1 << 20) as f64
        );
        assert!(
            rss <= budget + (32 << 20),
            "{files} files {extra:?}: peak RSS {} MiB over budget 64 MiB + 32 MiB",
            rss >> 20
        );
    }
}

/// The same for HDF5: a contiguous dataset (mapped), an uncompressed chunked one and a
/// gzip+shuffle one (decoded chunks count against the budget).
#[cfg(feature = "hdf5")]
fn hdf5_peak_rss_within_budget() {
    let budget: u64 = 64 << 20;
    let dir = tmpdir();
    let (rows, cols) = ((9 * budget / 8 / 16) as usize, 16usize);
    let h = dir.path().join("big.h5");
    {
        let f = hdf5::File::create(&h).unwrap();
        let mk = |name: &str, chunk: Option<(usize, bool)>| {
            let b = f.new_dataset::<f64>().shape((rows, cols));
            let b = match chunk {
                Some((c, true)) => b.chunk((c, cols)).shuffle().deflate(1),
                Some((c, false)) => b.chunk((c, cols)),
                None => b,
            };
            b.create(name).unwrap()
        };
        let dsets = [
            mk("contig", None),
            mk("chunked", Some((10_000, false))),
            mk("gzip", Some((10_000, true))),
        ];
        let slab = 1 << 16;
        for r0 in (0..rows).step_by(slab) {
            let n = slab.min(rows - r0);
            let a = ndarray::Array2::from_shape_fn((n, cols), |(r, c)| {
                (((r0 + r) * cols + c) % 1000) as f64 * 0.5
            });
            for d in &dsets {
                d.write_slice(&a, ndarray::s![r0..r0 + n, ..]).unwrap();
            }
        }
    }
    for ds in ["/contig", "/chunked", "/gzip"] {
        let label = format!("hdf5 {ds}, {} MiB logical", (rows * cols * 8) >> 20);
        run_and_check(&h, &["--dataset", ds], rows as u64, &label);
    }
}

/// Runs colstats with `args` and returns its stdout and its own peak RSS (this child's
/// alone, from `wait4`, which also reaps it).
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (Vec<u8>, u64) {
    use std::os::unix::process::ExitStatusExt;
    let out_path = std::env::temp_dir().join(format!("colstats-mem-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let child = bin()
        .args(args)
        .stdout(out)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes the status and usage we own; the child is ours.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    let st = std::process::ExitStatus::from_raw(status);
    assert!(st.success(), "{args:?}: {st}");
    let bytes = std::fs::read(&out_path).unwrap();
    let _ = std::fs::remove_file(&out_path);
    (bytes, ru.ru_maxrss as u64 * 1024)
}

fn dir_bytes(d: &std::path::Path) -> u64 {
    std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// A batch over 10,000 shards of a few rows (issue 18): its states and its peak RSS grow
/// linearly with the shards (1,000 against 10,000), the peak stays within `--memory` +
/// 32 MiB, and a resume gives the bytes of a plain run.
fn ten_thousand_shards_in_batch_mode() {
    let dir = tmpdir();
    let mut rng = Rng(18);
    let mut paths = Vec::new();
    for k in 0..10_000 {
        let n = rng.range(0, 31) as u64;
        let data: Vec<u8> = (0..n * 3)
            .flat_map(|i| (1e3 + ((i * 7 + k) % 101) as f64 * 0.125).to_le_bytes())
            .collect();
        let p = dir.path().join(format!("s{k:05}.npy"));
        write_npy(&p, "<f8", false, &[n, 3], &data);
        paths.push(p.to_str().unwrap().to_string());
    }
    let budget: u64 = 16 << 20;
    let mut sizes = Vec::new();
    for n in [1_000, 10_000] {
        let list = dir.path().join(format!("list{n}.txt"));
        std::fs::write(&list, paths[..n].join("\n")).unwrap();
        let states = dir.path().join(format!("states{n}"));
        let common = [
            "stats",
            "--files-from",
            list.to_str().unwrap(),
            "--format",
            "json",
        ];
        let with = |extra: &[&str]| {
            let mut a: Vec<&str> = common.to_vec();
            a.extend(["--memory", "16MiB"]);
            a.extend(extra);
            run_measured(&a)
        };
        let (plain, rss_plain) = with(&[]);
        let sd = states.to_str().unwrap();
        let (fresh, rss_fresh) = with(&["--state-dir", sd]);
        let (resumed, rss_resume) = with(&["--state-dir", sd, "--resume"]);
        assert_eq!(
            fresh, plain,
            "{n} shards: batch mode differs from a plain run"
        );
        assert_eq!(
            resumed, plain,
            "{n} shards: the resume differs from a plain run"
        );
        let bytes = dir_bytes(&states);
        eprintln!(
            "{n} shards: states {:.2} MiB; peak RSS plain {:.1} MiB, batch {:.1} MiB, \
             resume {:.1} MiB (budget 16 MiB)",
            bytes as f64 / (1 << 20) as f64,
            rss_plain as f64 / (1 << 20) as f64,
            rss_fresh as f64 / (1 << 20) as f64,
            rss_resume as f64 / (1 << 20) as f64
        );
        for rss in [rss_plain, rss_fresh, rss_resume] {
            assert!(
                rss <= budget + (32 << 20),
                "{n} shards: peak RSS {} MiB over 16 MiB + 32 MiB",
                rss >> 20
            );
        }
        sizes.push((bytes, rss_fresh));
    }
    let ratio = sizes[1].0 as f64 / sizes[0].0 as f64;
    assert!(ratio <= 12.0, "states grew {ratio:.1}x for 10x the shards");
    let rss_ratio = sizes[1].1 as f64 / sizes[0].1 as f64;
    assert!(
        rss_ratio <= 12.0,
        "peak RSS grew {rss_ratio:.1}x for 10x the shards"
    );
}
