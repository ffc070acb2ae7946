//! Several inputs as one array, per-input results, saved states and `merge`: shards of a
//! generated array give the bits of one run over the whole file for any split (0- and
//! 1-row shards, mixed byte order, mixed `.npy` and contiguous HDF5), thread count and
//! budget; states merge to those bits in any order and grouping; every refusal is one line,
//! exit status 1, and leaves no output file; a damaged state file is an error, never a panic.

use crate::common::*;
use colstats::{ColumnSpec, ErrorKind, Request, RowSpec, Stat, State, Summary};
use std::path::{Path, PathBuf};

/// `rows` x `cols` float64 values around 1e9 (so a wrong shift or merge shows in var's
/// last bits) with some NaNs, row-major.
fn values(rows: usize, cols: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..rows * cols)
        .map(|i| {
            if rng.next() % 97 == 0 {
                f64::NAN
            } else {
                1e9 + (rng.range(-1 << 40, 1 << 40) as f64) / (1u64 << 38) as f64 + (i % 7) as f64
            }
        })
        .collect()
}

fn f64_bytes(v: &[f64], big: bool) -> Vec<u8> {
    v.iter()
        .flat_map(|x| {
            if big {
                x.to_be_bytes()
            } else {
                x.to_le_bytes()
            }
        })
        .collect()
}

/// Writes rows `a..b` of `v` (`cols` wide) as a `.npy` shard, big-endian when `big`.
fn shard(path: &Path, v: &[f64], cols: usize, (a, b): (usize, usize), big: bool) {
    let descr = if big { ">f8" } else { "<f8" };
    let data = f64_bytes(&v[a * cols..b * cols], big);
    write_npy(path, descr, false, &[(b - a) as u64, cols as u64], &data);
}

/// Random cut points of `rows` into `n` shards (some empty, some of one row).
fn cuts(rows: usize, n: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    let mut b: Vec<usize> = (1..n)
        .map(|k| match rng.next() % 5 {
            0 if k > 1 => usize::MAX, // repeat the previous cut: an empty shard
            _ => rng.range(0, rows as i64 + 1) as usize,
        })
        .collect();
    let mut last = 0;
    for x in b.iter_mut() {
        if *x == usize::MAX {
            *x = last;
        }
        last = *x;
    }
    b.push(0);
    b.push(rows);
    b.sort_unstable();
    // One-row shards too.
    if rows > 10 && n > 3 {
        b[1] = b[2].saturating_sub(1).max(b[0]);
    }
    b.windows(2).map(|w| (w[0], w[1])).collect()
}

fn same_bits(a: &Summary, b: &Summary, what: &str) {
    assert_eq!(a.rows, b.rows, "{what}: rows");
    assert_eq!(a.columns, b.columns, "{what}: columns");
    for s in &a.stats {
        let (x, y) = (a.get_f64(*s).unwrap(), b.get_f64(*s).unwrap());
        let same = x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{what}: {s:?} differs: {x:?} vs {y:?}");
    }
}

struct Split {
    _dir: tempfile::TempDir,
    whole: PathBuf,
    shards: Vec<PathBuf>,
    bounds: Vec<(usize, usize)>,
}

fn split(rows: usize, cols: usize, n: usize, seed: u64) -> Split {
    let dir = tmpdir();
    let v = values(rows, cols, seed);
    let whole = dir.path().join("whole.npy");
    shard(&whole, &v, cols, (0, rows), false);
    let mut rng = Rng(seed ^ 0x5eed);
    let bounds = cuts(rows, n, &mut rng);
    let shards = bounds
        .iter()
        .enumerate()
        .map(|(i, &ab)| {
            let p = dir.path().join(format!("s{i:03}.npy"));
            shard(&p, &v, cols, ab, rng.next() % 3 == 0);
            p
        })
        .collect();
    Split {
        _dir: dir,
        whole,
        shards,
        bounds,
    }
}

#[test]
fn shards_give_the_bits_of_one_file_for_any_split_threads_and_budget() {
    let mut rng = Rng(11);
    for case in 0..14u64 {
        let cols = [1, 3, 4, 7, 20, 33][case as usize % 6];
        let rows = 3_000 + rng.range(0, 40_000) as usize;
        let n = 1 + rng.range(0, 50) as usize;
        let sp = split(rows, cols, n, 100 + case);
        let sel: Option<(ColumnSpec, RowSpec)> = match case % 3 {
            0 => None,
            1 => Some((
                "0:1".parse().unwrap(),
                RowSpec::new(Some(rng.range(0, 999)), None),
            )),
            _ => Some((
                format!("{}", cols - 1).parse().unwrap(),
                RowSpec::new(Some(17), Some(rows as i64 - 5)),
            )),
        };
        let with = |r: Request| match &sel {
            Some((c, rs)) => r.columns(c.clone()).rows(*rs),
            None => r,
        };
        let want = with(Request::new(&sp.whole).threads(1)).run().unwrap();
        for (threads, memory, limit) in [
            (1, 1u64 << 20, 64u64 << 10),
            (2, 64 << 20, 1 << 30),
            (2, 2 << 20, 300 << 10),
        ] {
            let got = with(Request::inputs(&sp.shards))
                .threads(threads)
                .memory(memory)
                .block_limit(limit)
                .run()
                .unwrap();
            same_bits(
                &got,
                &want,
                &format!("case {case}: {n} shards of {rows}x{cols}, {threads} threads, {memory} B"),
            );
        }
    }
}

#[test]
fn per_input_results_are_the_run_over_each_inputs_rows() {
    let sp = split(20_000, 5, 9, 7);
    let all = Request::inputs(&sp.shards)
        .per_input(true)
        .threads(2)
        .block_limit(100 << 10)
        .run()
        .unwrap();
    assert_eq!(all.per_input.len(), sp.shards.len());
    let total = Request::inputs(&sp.shards).threads(1).run().unwrap();
    same_bits(&all, &total, "the combined result with per-input results");
    for (i, (s, &(a, b))) in all.per_input.iter().zip(&sp.bounds).enumerate() {
        assert_eq!(s.path, sp.shards[i]);
        // Bit for bit the run over the concatenation restricted to the input's rows ...
        if a < b {
            let alone = Request::inputs(&sp.shards)
                .rows(RowSpec::new(Some(a as i64), Some(b as i64)))
                .threads(1)
                .run()
                .unwrap();
            same_bits(s, &alone, &format!("input {i} vs --rows {a}:{b}"));
        }
        // ... and exactly the counts and extremes of the input on its own.
        let own = Request::new(&sp.shards[i]).run().unwrap();
        for st in [Stat::Count, Stat::NanCount, Stat::Min, Stat::Max] {
            let (x, y) = (s.get_f64(st).unwrap(), own.get_f64(st).unwrap());
            assert!(
                x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
                "input {i} {st:?}"
            );
        }
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    bin().args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cli_takes_files_lists_and_globs_and_reports_per_file() {
    let sp = split(5_000, 3, 6, 3);
    let dir = sp.whole.parent().unwrap();
    let mut args = vec!["stats", "--format", "json"];
    args.extend(sp.shards.iter().map(|p| s(p)));
    let by_args = cli(&args);
    assert!(
        by_args.status.success(),
        "{}",
        String::from_utf8_lossy(&by_args.stderr)
    );
    let list = dir.join("list.txt");
    let text: String = sp
        .shards
        .iter()
        .map(|p| format!("{}\n", p.display()))
        .collect();
    std::fs::write(&list, text).unwrap();
    let by_list = cli(&["stats", "--format", "json", "--files-from", s(&list)]);
    assert_eq!(by_list.stdout, by_args.stdout);
    let pattern = format!("{}/s*.npy", dir.display());
    let by_glob = cli(&["stats", "--format", "json", &pattern]);
    assert_eq!(by_glob.stdout, by_args.stdout);
    let v = json(&by_args.stdout);
    assert_eq!(v["file"].as_array().unwrap().len(), sp.shards.len());
    assert_eq!(v["rows"], 5_000);
    // Per file: a `files` array with the same keys; CSV with a leading file column.
    let mut pf = args.clone();
    pf.push("--per-file");
    let out = json(&cli(&pf).stdout);
    let files = out["files"].as_array().unwrap();
    assert_eq!(files.len(), sp.shards.len());
    for (f, p) in files.iter().zip(&sp.shards) {
        assert_eq!(f["file"], s(p));
        for key in [
            "dataset", "dtype", "shape", "rows", "columns", "ddof", "nan", "stats",
        ] {
            assert!(f.get(key).is_some(), "per-file object lacks {key}");
        }
    }
    assert_eq!(out["stats"], v["stats"]);
    let mut csv = pf.clone();
    csv[2] = "csv";
    let text = String::from_utf8(cli(&csv).stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("file,column,count"));
    assert_eq!(text.lines().count(), 1 + 3 * (sp.shards.len() + 1));
    assert!(text.lines().last().unwrap().starts_with(",2,"));
}

#[test]
fn saved_states_merge_to_the_bits_of_one_run_in_any_order() {
    let sp = split(100_000, 4, 7, 5);
    let dir = sp.whole.parent().unwrap();
    let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
    let mut one = vec!["stats", "--format", "json"];
    one.extend(&shards);
    let want = cli(&one);
    assert!(want.status.success());
    // Leaf-aligned slices (leaves here are 4096 rows).
    let bounds = [0, 32768, 40960, 65536, 100_000];
    let mut states = Vec::new();
    for (k, w) in bounds.windows(2).enumerate() {
        let st = dir.join(format!("part-{k}.cstate"));
        let rows = format!("{}:{}", w[0], w[1]);
        let mut a = vec!["stats", "--rows", &rows, "--save-state", s(&st), "-o"];
        let sink = dir.join(format!("out-{k}.txt"));
        a.push(s(&sink));
        a.push("--threads");
        a.push(if k % 2 == 0 { "1" } else { "2" });
        a.extend(&shards);
        let out = cli(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        states.push(st);
    }
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1]] {
        let mut m = vec!["merge", "--format", "json"];
        m.extend(order.iter().map(|&i| s(&states[i])));
        let got = cli(&m);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            String::from_utf8_lossy(&want.stdout),
            "merge in order {order:?}"
        );
    }
    // Grouping: merge states pairwise through the library, then the pairs.
    let load = |i: usize| State::load(&states[i]).unwrap();
    let mut left = load(0);
    left.merge(&load(1)).unwrap();
    let mut right = load(3);
    right.merge(&load(2)).unwrap();
    right.merge(&left).unwrap();
    let whole = Request::inputs(&sp.shards).run().unwrap();
    same_bits(&right.finish(None), &whole, "pairs of pairs");
    // Per-file results travel in the states too.
    let pf: Vec<PathBuf> = bounds
        .windows(2)
        .enumerate()
        .map(|(k, w)| {
            let st = dir.join(format!("pf-{k}.cstate"));
            let rows = format!("{}:{}", w[0], w[1]);
            let mut a = vec![
                "stats",
                "--per-file",
                "--rows",
                &rows,
                "--save-state",
                s(&st),
            ];
            a.extend(["-o", "/dev/null"]);
            a.extend(&shards);
            assert!(cli(&a).status.success());
            st
        })
        .collect();
    let mut m = vec!["merge", "--format", "json"];
    m.extend(pf.iter().rev().map(|p| s(p)));
    let mut one_pf = one.clone();
    one_pf.push("--per-file");
    assert_eq!(
        cli(&m).stdout,
        cli(&one_pf).stdout,
        "per-file results through states"
    );
    // ddof is applied at the end.
    let ddof1 = cli(&[
        "merge",
        "--format",
        "json",
        "--ddof",
        "1",
        s(&states[0]),
        s(&states[1]),
        s(&states[2]),
        s(&states[3]),
    ]);
    let mut one1 = one.clone();
    one1.extend(["--ddof", "1"]);
    assert_eq!(ddof1.stdout, cli(&one1).stdout);
}

#[test]
fn merge_refuses_overlaps_gaps_and_other_arrays_naming_the_files() {
    let sp = split(50_000, 2, 3, 9);
    let dir = sp.whole.parent().unwrap();
    let save = |name: &str, extra: &[&str], inputs: &[&str]| -> PathBuf {
        let p = dir.join(name);
        let mut a = vec!["stats", "-o", "/dev/null", "--save-state", s(&p)];
        a.extend(extra);
        a.extend(inputs);
        let out = cli(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    };
    let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
    let a = save("a.cstate", &["--rows", "0:16384"], &shards);
    let b = save("b.cstate", &["--rows", "8192:32768"], &shards);
    let c = save("c.cstate", &["--rows", "32768:"], &shards);
    let d = save(
        "d.cstate",
        &["--rows", "16384:32768", "--columns", "1"],
        &shards,
    );
    let e = save("e.cstate", &["--rows", "16384:32768"], &[s(&sp.whole)]);
    let refused = |args: &[&str], want: &[&str]| {
        let out = dir.join("merged.json");
        let mut m = vec!["merge", "-o", s(&out)];
        m.extend(args);
        let r = cli(&m);
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        assert_eq!(r.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: "), "{err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: {err} lacks {w}");
        }
        assert!(!out.exists(), "no output is left behind");
    };
    refused(&[s(&a), s(&b)], &["overlap", "a.cstate", "b.cstate"]);
    refused(&[s(&a), s(&c)], &["16384:32768", "--allow-gaps"]);
    refused(&[s(&a), s(&d)], &["columns", "a.cstate", "d.cstate"]);
    refused(&[s(&a), s(&e)], &["inputs", "e.cstate"]);
    // --allow-gaps merges and says which rows are missing.
    let r = cli(&["merge", "--allow-gaps", "--format", "json", s(&a), s(&c)]);
    assert!(r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("rows 16384:32768 are missing"));
    assert_eq!(json(&r.stdout)["rows"], 50_000 - 16_384);
}

#[test]
fn damaged_state_files_are_clean_errors() {
    let sp = split(300, 2, 2, 4);
    let st = Request::inputs(&sp.shards).run_state().unwrap();
    let bytes = st.to_bytes();
    assert_eq!(State::from_bytes(&bytes).unwrap(), st);
    for n in 0..bytes.len() {
        let e = State::from_bytes(&bytes[..n]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::State, "truncated at {n}: {e}");
    }
    for i in 0..bytes.len() {
        for bit in [0, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            match State::from_bytes(&b) {
                Err(e) => assert_eq!(e.kind(), ErrorKind::State, "flip at {i}: {e}"),
                Ok(s) => panic!("a flipped bit at {i} was accepted: {s:?}"),
            }
        }
    }
    let mut future = bytes.clone();
    future[8] = 3;
    let e = State::from_bytes(&future).unwrap_err().to_string();
    assert!(e.contains("version 3"), "{e}");
    // Through the CLI: one line naming the file.
    let dir = sp.whole.parent().unwrap();
    let cut = dir.join("cut.cstate");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let r = cli(&["merge", s(&cut)]);
    assert_eq!(r.status.code(), Some(1));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with(&format!("error: {}: truncated", cut.display())),
        "{err}"
    );
}

#[test]
fn inputs_that_do_not_concatenate_are_refused_before_reading() {
    let dir = tmpdir();
    let v = values(100, 3, 1);
    let a = dir.path().join("a.npy");
    shard(&a, &v, 3, (0, 100), false);
    let f4 = dir.path().join("f4.npy");
    let data: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
    write_npy(&f4, "<f4", false, &[100, 3], &data);
    let wide = dir.path().join("wide.npy");
    write_npy(&wide, "<f8", false, &[50, 6], &f64_bytes(&v[..300], false));
    let missing = dir.path().join("missing.npy");
    let out = dir.path().join("out.json");
    for (b, want) in [
        (&f4, "dtype float32 differs from float64 of"),
        (&wide, "shape (50, 6) does not concatenate with (100, 3)"),
        (&missing, "No such file"),
    ] {
        let r = cli(&["stats", "-o", s(&out), s(&a), s(&a), s(b), s(&a)]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{err}");
        assert!(
            err.starts_with(&format!("error: {}: ", b.display())),
            "{err}"
        );
        assert!(err.contains(want), "{err}");
        assert!(!out.exists());
    }
    // An output that cannot be written is refused before any data is read.
    let r = cli(&["stats", "-o", "/nonexistent/dir/out.json", s(&a)]);
    assert_eq!(r.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&r.stderr).contains("cannot write output"));
}

#[cfg(feature = "hdf5")]
#[test]
fn npy_and_contiguous_hdf5_shards_mix_and_chunked_shards_keep_their_leaves() {
    let dir = tmpdir();
    let (rows, cols) = (30_000, 4);
    let v = values(rows, cols, 21);
    let whole = dir.path().join("whole.npy");
    shard(&whole, &v, cols, (0, rows), false);
    let bounds = [
        (0, 7_001),
        (7_001, 7_002),
        (7_002, 19_999),
        (19_999, 30_000),
    ];
    let mut contig = Vec::new();
    let mut chunked = Vec::new();
    for (i, &(a, b)) in bounds.iter().enumerate() {
        let arr =
            ndarray::Array2::from_shape_vec((b - a, cols), v[a * cols..b * cols].to_vec()).unwrap();
        let h = dir.path().join(format!("h{i}.h5"));
        let f = hdf5::File::create(&h).unwrap();
        f.new_dataset_builder().with_data(&arr).create("x").unwrap();
        f.new_dataset_builder()
            .with_data(&arr)
            .chunk((1000.min(b - a), cols))
            .deflate(1)
            .create("z")
            .unwrap();
        drop(f);
        let n = dir.path().join(format!("n{i}.npy"));
        shard(&n, &v, cols, (a, b), i == 2);
        if i % 2 == 0 {
            contig.push(h.clone());
        } else {
            contig.push(n.clone());
        }
        chunked.push(h);
    }
    let want = Request::new(&whole).run().unwrap();
    for t in [1, 2] {
        let got = Request::inputs(&contig)
            .dataset("x")
            .threads(t)
            .block_limit(128 << 10)
            .run()
            .unwrap();
        same_bits(&got, &want, &format!("npy + contiguous HDF5, {t} threads"));
    }
    let first = Request::inputs(&chunked)
        .dataset("z")
        .threads(1)
        .run()
        .unwrap();
    for (t, m) in [(2, 1u64 << 20), (2, 256 << 20)] {
        let got = Request::inputs(&chunked)
            .dataset("z")
            .threads(t)
            .memory(m)
            .run()
            .unwrap();
        same_bits(&got, &first, &format!("chunked shards, {t} threads, {m} B"));
    }
    for st in [Stat::Count, Stat::Min, Stat::Max] {
        assert_eq!(first.get_f64(st), want.get_f64(st));
    }
}

fn state_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "cstate"));
    v.sort();
    v
}

#[test]
fn a_batch_resumes_after_an_interruption_and_rereads_changed_inputs() {
    let sp = split(120_000, 3, 12, 17);
    let dir = sp.whole.parent().unwrap();
    let sd = dir.join("job.d");
    let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
    let run = |extra: &[&str]| {
        let mut a = vec!["stats", "--format", "json", "--threads", "2"];
        a.extend(extra);
        a.extend(&shards);
        let out = cli(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let want = run(&[]);
    // A killed run: start one, SIGKILL it as soon as a state appears (it may also finish).
    {
        let mut a = vec![
            "stats",
            "-o",
            "/dev/null",
            "--memory",
            "1MiB",
            "--threads",
            "1",
            "--state-dir",
            s(&sd),
        ];
        a.extend(&shards);
        let mut child = bin().args(&a).spawn().unwrap();
        let t0 = std::time::Instant::now();
        while state_files(&sd).is_empty() && t0.elapsed() < std::time::Duration::from_secs(20) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let after_kill = state_files(&sd).len();
    assert!(after_kill >= 1);
    // Whatever survived is valid; a state lost and a stray temporary file change nothing.
    let files = state_files(&sd);
    if files.len() > 2 {
        std::fs::remove_file(&files[1]).unwrap();
    }
    std::fs::write(sd.join(".tmpXYZ"), b"half a state").unwrap();
    assert_eq!(
        run(&["--state-dir", s(&sd), "--resume"]),
        want,
        "resumed after {after_kill} states"
    );
    let n_states = state_files(&sd).len();
    assert!(n_states >= sp.shards.len() - 1, "{n_states} states");
    // A resume with every state present reads nothing and reuses them all (their files are
    // not rewritten).
    let stamp = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before: Vec<_> = state_files(&sd).iter().map(|p| stamp(p)).collect();
    assert_eq!(run(&["--state-dir", s(&sd), "--resume"]), want);
    let again: Vec<_> = state_files(&sd).iter().map(|p| stamp(p)).collect();
    assert_eq!(before, again, "states were rewritten on a full resume");
    // A shard changed in place (same size, other values) is read again.
    let k = sp.bounds.iter().position(|&(a, b)| b - a > 100).unwrap();
    let mut bytes = std::fs::read(&sp.shards[k]).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 80..] {
        *b = 0x3f;
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&sp.shards[k], &bytes).unwrap();
    let fresh = run(&[]);
    assert_ne!(fresh, want);
    assert_eq!(run(&["--state-dir", s(&sd), "--resume"]), fresh);
}

#[test]
fn keep_going_skips_unreadable_inputs_with_status_3() {
    let sp = split(20_000, 2, 5, 23);
    let dir = sp.whole.parent().unwrap();
    let bad = dir.join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY garbage").unwrap();
    let mut a = vec!["stats", "--format", "json"];
    a.extend(sp.shards.iter().map(|p| s(p)));
    let want = json(&cli(&a).stdout);
    let mut b = a.clone();
    b.insert(3, s(&bad));
    // Without --keep-going: refused, nothing read.
    let r = cli(&b);
    assert_eq!(r.status.code(), Some(1));
    b.push("--keep-going");
    let r = cli(&b);
    assert_eq!(
        r.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.starts_with(&format!("warning: {}: ", bad.display())),
        "{err}"
    );
    let got = json(&r.stdout);
    assert_eq!(got["stats"], want["stats"]);
    assert_eq!(got["skipped"][0]["file"], s(&bad));
}

#[test]
fn shards_printed_by_info_merge_to_the_bits_of_one_run() {
    let sp = split(70_000, 6, 8, 29);
    let dir = sp.whole.parent().unwrap();
    let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
    let mut a = vec!["info", "--shards", "5"];
    a.extend(&shards);
    let out = cli(&a);
    assert!(out.status.success());
    let ranges: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ranges.len(), 5);
    let mut states = Vec::new();
    for (k, r) in ranges.iter().enumerate() {
        let st = dir.join(format!("j{k}.cstate"));
        let mut a = vec![
            "stats",
            "-o",
            "/dev/null",
            "--rows",
            r,
            "--save-state",
            s(&st),
        ];
        a.extend(&shards);
        assert!(cli(&a).status.success());
        states.push(st);
    }
    let mut m = vec!["merge", "--format", "csv"];
    m.extend(states.iter().rev().map(|p| s(p)));
    let mut one = vec!["stats", "--format", "csv"];
    one.extend(&shards);
    assert_eq!(cli(&m).stdout, cli(&one).stdout);
}

mod merge_properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// 9 shards of 40,000 x 3 (leaves of 4,096 rows), and the whole run over them.
    fn fixture() -> &'static (Split, Summary) {
        static F: OnceLock<(Split, Summary)> = OnceLock::new();
        F.get_or_init(|| {
            let sp = split(40_000, 3, 9, 31);
            let whole = Request::new(&sp.whole).run().unwrap();
            (sp, whole)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
        /// States of any leaf-aligned cuts, merged in any order and any grouping, give the
        /// bits of one run.
        #[test]
        fn merge_is_independent_of_order_and_grouping(
            cuts in proptest::collection::btree_set(1u64..10, 0..6),
            order in any::<u64>(),
        ) {
            let (sp, whole) = fixture();
            let mut b: Vec<u64> = vec![0];
            b.extend(cuts.iter().map(|c| c * 4096));
            b.push(40_000);
            let mut states: Vec<State> = b
                .windows(2)
                .map(|w| {
                    Request::inputs(&sp.shards)
                        .rows(RowSpec::new(Some(w[0] as i64), Some(w[1] as i64)))
                        .threads(1 + (w[0] as usize / 4096) % 2)
                        .run_state()
                        .unwrap()
                })
                .collect();
            // A random order, then random groupings: repeatedly merge two states.
            let mut rng = Rng(order);
            while states.len() > 1 {
                let i = rng.next() as usize % states.len();
                let a = states.swap_remove(i);
                let j = rng.next() as usize % states.len();
                let mut b = states.swap_remove(j);
                b.merge(&a).unwrap();
                states.push(b);
            }
            let got = states.pop().unwrap().finish(None);
            for s in &whole.stats {
                let (x, y) = (got.get_f64(*s).unwrap(), whole.get_f64(*s).unwrap());
                prop_assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{:?}", s);
            }
        }
    }
}

/// Review findings: each of these once gave a wrong number, a needless failure or a panic.
mod regressions {
    use super::*;

    /// A crafted state with a valid checksum: a node at level 63 (the tree's halving would
    /// divide by zero), a node not aligned to its level, a node past its domain.
    #[test]
    fn crafted_tree_nodes_are_refused_not_a_panic() {
        let sp = split(300, 2, 2, 4);
        let bytes = Request::inputs(&sp.shards).run_state().unwrap().to_bytes();
        // The last node's level sits 4 + 2 * 112 bytes before the end of the payload
        // (then the CRC); its first leaf 8 bytes before that.
        let n = bytes.len();
        let payload_end = n - 4;
        let level_at = payload_end - 2 * 112 - 4;
        let leaf_at = level_at - 8;
        for (at, value) in [(level_at, 63u64), (level_at, 1), (leaf_at, 1 << 40)] {
            let mut b = bytes.clone();
            if at == level_at {
                b[at..at + 4].copy_from_slice(&(value as u32).to_le_bytes());
            } else {
                b[at..at + 8].copy_from_slice(&value.to_le_bytes());
            }
            if at == level_at && value == 1 {
                // Level 1 at leaf 0 is aligned; put the node at leaf 1 to misalign it.
                b[leaf_at..leaf_at + 8].copy_from_slice(&1u64.to_le_bytes());
            }
            let crc = crc32fast::hash(&b[24..payload_end]);
            b[payload_end..].copy_from_slice(&crc.to_le_bytes());
            let e = State::from_bytes(&b).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::State, "{e}");
        }
    }

    /// A resume with another `--dataset` must not reuse the states of the first.
    #[cfg(feature = "hdf5")]
    #[test]
    fn resume_with_another_dataset_reads_again() {
        let dir = tmpdir();
        let v = values(5_000, 2, 3);
        let a = dir.path().join("a.npy");
        shard(&a, &v, 2, (0, 2_000), false);
        let h = dir.path().join("h.h5");
        {
            let f = hdf5::File::create(&h).unwrap();
            let x = ndarray::Array2::from_shape_vec((3_000, 2), v[4_000..].to_vec()).unwrap();
            let y = x.mapv(|q| q * 3.0);
            f.new_dataset_builder().with_data(&x).create("x").unwrap();
            f.new_dataset_builder().with_data(&y).create("y").unwrap();
        }
        let sd = dir.path().join("sd");
        let run = |ds: &str, resume: bool| {
            let mut r = Request::inputs([&a, &h]).dataset(ds).state_dir(&sd, resume);
            r = r.threads(1);
            r.run().unwrap()
        };
        run("x", false);
        let fresh_y = Request::inputs([&a, &h]).dataset("y").run().unwrap();
        same_bits(&run("y", true), &fresh_y, "resume with --dataset y");
    }

    /// An input rewritten in another layout changes the domains: its neighbours' states
    /// are read again, and the resume succeeds.
    #[test]
    fn resume_after_a_layout_change_recomputes() {
        let dir = tmpdir();
        let v = values(1_000, 3, 8);
        let (a, b, x) = (
            dir.path().join("a.npy"),
            dir.path().join("b.npy"),
            dir.path().join("x.npy"),
        );
        shard(&a, &v, 3, (0, 300), false);
        shard(&b, &v, 3, (300, 512), false);
        shard(&x, &v, 3, (512, 1_000), false);
        let sd = dir.path().join("sd");
        let req = |resume: bool| Request::inputs([&a, &b, &x]).state_dir(&sd, resume);
        req(false).run().unwrap();
        // x rewritten in Fortran order: the same values, its own domain now.
        let rows = 488;
        let mut f = Vec::new();
        for c in 0..3 {
            for r in 0..rows {
                f.extend_from_slice(&v[(512 + r) * 3 + c].to_le_bytes());
            }
        }
        write_npy(&x, "<f8", true, &[rows as u64, 3], &f);
        let got = req(true).run().unwrap();
        let want = Request::inputs([&a, &b, &x]).run().unwrap();
        same_bits(&got, &want, "resume after x became Fortran order");
    }

    /// Skipped inputs are listed once, however many times the job restarts.
    #[test]
    fn keep_going_lists_each_skipped_input_once() {
        let sp = split(9_000, 2, 4, 12);
        let dir = sp.whole.parent().unwrap();
        let bad = dir.join("bad.npy");
        std::fs::write(&bad, b"garbage").unwrap();
        // A shard that opens but is cut short after opening cannot be simulated without a
        // race; two bad inputs and a restart-free run check the listing.
        let mut paths = sp.shards.clone();
        paths.insert(1, bad.clone());
        paths.push(bad.clone());
        let s = Request::inputs(&paths).keep_going(true).run().unwrap();
        assert_eq!(s.skipped.len(), 2, "{:?}", s.skipped);
        assert!(s.skipped.iter().all(|(p, _)| *p == bad));
    }

    /// An empty HDF5 dataset among `.npy` shards does not split their tree.
    #[cfg(feature = "hdf5")]
    #[test]
    fn an_empty_hdf5_input_keeps_the_bits() {
        let dir = tmpdir();
        let v = values(30_000, 4, 41);
        let whole = dir.path().join("whole.npy");
        shard(&whole, &v, 4, (0, 30_000), false);
        let a = dir.path().join("a.npy");
        let b = dir.path().join("b.npy");
        shard(&a, &v, 4, (0, 10_001), false);
        shard(&b, &v, 4, (10_001, 30_000), false);
        let e = dir.path().join("e.h5");
        {
            let f = hdf5::File::create(&e).unwrap();
            f.new_dataset::<f64>().shape((0, 4)).create("x").unwrap();
        }
        let got = Request::inputs([&e, &a, &e, &b, &e])
            .dataset("x")
            .run()
            .unwrap();
        let want = Request::new(&whole).run().unwrap();
        same_bits(&got, &want, "empty HDF5 inputs among .npy shards");
    }

    #[test]
    fn huge_shard_counts_are_capped_at_the_leaves() {
        let sp = split(10_000, 2, 2, 5);
        let r = Request::inputs(&sp.shards).shards(u64::MAX).unwrap();
        assert!(r.len() <= 10_000usize.div_ceil(8192) + 1, "{r:?}");
        assert_eq!(r.first().unwrap().start, 0);
        assert_eq!(r.last().unwrap().end, 10_000);
    }
}

#[test]
fn per_file_results_in_batch_mode_are_those_of_one_pass() {
    let sp = split(60_000, 3, 9, 77);
    let dir = sp.whole.parent().unwrap();
    let sd = dir.join("pf.d");
    let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
    let run = |extra: &[&str]| {
        let mut a = vec!["stats", "--per-file", "--format", "json"];
        a.extend(extra);
        a.extend(&shards);
        let out = cli(&a);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let want = run(&[]);
    assert_eq!(run(&["--state-dir", s(&sd)]), want);
    // Half the states lost: the resumed run reads those inputs again.
    for (k, f) in state_files(&sd).iter().enumerate() {
        if k % 2 == 0 {
            std::fs::remove_file(f).unwrap();
        }
    }
    assert_eq!(run(&["--state-dir", s(&sd), "--resume"]), want);
    assert_eq!(
        run(&["--state-dir", s(&sd), "--resume", "--rows", "100:50000"]),
        run(&["--rows", "100:50000"])
    );
}

/// What a user's trial of batch mode found (issue 18): each case failed before.
mod trial {
    use super::*;

    fn ok(out: &std::process::Output) -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Writes an `f8` or `f4` shard of `rows` x 2.
    fn small(path: &Path, rows: usize, f4: bool) {
        let v: Vec<f64> = (0..rows * 2).map(|i| i as f64 * 0.5).collect();
        if f4 {
            let b: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
            write_npy(path, "<f4", false, &[rows as u64, 2], &b);
        } else {
            write_npy(path, "<f8", false, &[rows as u64, 2], &f64_bytes(&v, false));
        }
    }

    #[test]
    fn keep_going_keeps_the_array_most_inputs_agree_on_even_when_the_first_is_odd() {
        let dir = tmpdir();
        let p = |n: &str| dir.path().join(n);
        small(&p("a.npy"), 10, true);
        for n in ["b.npy", "c.npy", "d.npy"] {
            small(&p(n), 5, false);
        }
        let all = [p("a.npy"), p("b.npy"), p("c.npy"), p("d.npy")];
        let mut args = vec!["stats", "--keep-going", "--format", "json"];
        args.extend(all.iter().map(|x| s(x)));
        let r = cli(&args);
        assert_eq!(r.status.code(), Some(3));
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("warning: {}: dtype float32 differs", s(&all[0]))),
            "{err}"
        );
        assert!(err.contains("and of 2 other inputs"), "{err}");
        let got = json(&r.stdout);
        assert_eq!(got["rows"], 15);
        assert_eq!(got["dtype"], "float64");
        assert_eq!(got["skipped"][0]["file"], s(&all[0]));
        // The same through the library.
        let sum = Request::inputs(&all).keep_going(true).run().unwrap();
        assert_eq!(sum.rows, 15);
        assert_eq!(sum.skipped.len(), 1);
    }

    #[test]
    fn the_dataset_is_reported_when_the_first_input_is_npy() {
        let dir = tmpdir();
        let n = dir.path().join("a.npy");
        small(&n, 4, false);
        let h = dir.path().join("b.h5");
        let f = hdf5::File::create(&h).unwrap();
        let arr = ndarray::Array2::<f64>::from_shape_fn((3, 2), |(i, j)| (i * 2 + j) as f64);
        f.new_dataset_builder().with_data(&arr).create("x").unwrap();
        drop(f);
        let r = cli(&["stats", "--format", "json", "--dataset", "/x", s(&n), s(&h)]);
        ok(&r);
        assert_eq!(json(&r.stdout)["dataset"], "/x");
        let r = cli(&["info", "--format", "json", "--dataset", "/x", s(&n), s(&h)]);
        ok(&r);
    }

    #[test]
    fn a_dataset_option_with_only_npy_inputs_is_accepted() {
        let dir = tmpdir();
        let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
        small(&a, 4, false);
        small(&b, 3, false);
        for args in [
            vec!["stats", "--format", "json", "--dataset", "/x", s(&a), s(&b)],
            vec!["stats", "--format", "json", "--dataset", "/x", s(&a)],
        ] {
            let r = cli(&args);
            ok(&r);
            assert_eq!(json(&r.stdout)["dataset"], serde_json::Value::Null);
        }
        ok(&cli(&["info", "--dataset", "/x", s(&a)]));
    }

    #[test]
    fn output_and_state_dir_errors_say_what_is_wrong_and_nothing_else() {
        let dir = tmpdir();
        let a = dir.path().join("a.npy");
        small(&a, 4, false);
        let r = cli(&["stats", s(&a), "-o", "/nonexistent-dir/out.json"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1));
        assert_eq!(
            err.trim_end(),
            "error: /nonexistent-dir/out.json: cannot write output: No such file or directory \
             (os error 2)"
        );
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let r = cli(&["stats", s(&a), s(&a), "--state-dir", s(&file)]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1));
        assert!(err.starts_with(&format!("error: {}: ", s(&file))), "{err}");
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn merge_errors_name_a_state_file_and_merge_takes_globs_and_lists() {
        let sp = split(40_000, 2, 3, 41);
        let dir = sp.whole.parent().unwrap();
        let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
        let save = |name: &str, extra: &[&str]| -> PathBuf {
            let p = dir.join(name);
            let mut a = vec!["stats", "-o", "/dev/null", "--save-state", s(&p)];
            a.extend(extra);
            a.extend(&shards);
            ok(&cli(&a));
            p
        };
        let q0 = save("q0.cstate", &["--rows", "0:16384", "--stats", "count"]);
        let q2 = save("q2.cstate", &["--rows", "32768:", "--stats", "count"]);
        let q1 = save("q1.cstate", &["--rows", "16384:32768", "--stats", "count"]);
        // A statistic the states cannot give: named, with a state file.
        let r = cli(&["merge", s(&q0), s(&q1), s(&q2), "--stats", "mean"]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1));
        assert!(err.starts_with(&format!("error: {}: ", s(&q0))), "{err}");
        assert!(err.contains("mean"), "{err}");
        // A gap: the states on both sides named.
        let r = cli(&["merge", s(&q0), s(&q2)]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1));
        assert!(err.starts_with(&format!("error: {}: ", s(&q0))), "{err}");
        assert!(err.contains(s(&q2)) && err.contains("16384:32768"), "{err}");
        // A quoted glob and a list give what the files given one by one give.
        let want = cli(&["merge", "--format", "json", s(&q0), s(&q1), s(&q2)]);
        ok(&want);
        let pattern = format!("{}/q*.cstate", dir.display());
        let r = cli(&["merge", "--format", "json", &pattern]);
        ok(&r);
        assert_eq!(r.stdout, want.stdout);
        let list = dir.join("states.txt");
        std::fs::write(&list, format!("{}\n{}\n\n{}\n", s(&q2), s(&q0), s(&q1))).unwrap();
        let r = cli(&["merge", "--format", "json", "--files-from", s(&list)]);
        ok(&r);
        assert_eq!(r.stdout, want.stdout);
        let r = cli(&["merge", &format!("{}/nothing*.cstate", dir.display())]);
        assert_eq!(r.status.code(), Some(1));
    }

    #[test]
    fn a_damaged_state_is_read_again_with_a_warning() {
        let sp = split(30_000, 2, 6, 43);
        let dir = sp.whole.parent().unwrap();
        let sd = dir.join("dmg.d");
        let mut a = vec!["stats", "--format", "json", "--state-dir", s(&sd)];
        a.extend(sp.shards.iter().map(|p| s(p)));
        let first = cli(&a);
        ok(&first);
        let files = state_files(&sd);
        let victim = files
            .iter()
            .find(|f| std::fs::metadata(f).unwrap().len() > 200)
            .unwrap();
        let mut bytes = std::fs::read(victim).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(victim, &bytes).unwrap();
        a.push("--resume");
        let r = cli(&a);
        let err = ok(&r);
        assert_eq!(r.stdout, first.stdout);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("warning: {}: ", victim.display())),
            "{err}"
        );
        assert!(
            err.contains("checksum") && err.contains("read again"),
            "{err}"
        );
        // Repaired: the next resume is silent.
        let r = cli(&a);
        assert_eq!(ok(&r), "");
    }

    /// Chunked HDF5 shards are a merge tree each: batch mode, its resume and merges of
    /// states in any order fold them into the bits of one pass, and the merged state stays
    /// small (the domains it has passed folded into one accumulator per column).
    #[test]
    fn chunked_shards_in_batch_mode_and_merges_fold_to_one_pass() {
        let dir = tmpdir();
        let (rows, cols) = (9_000, 3);
        let v = values(rows, cols, 51);
        let mut rng = Rng(52);
        let bounds = cuts(rows, 24, &mut rng);
        let mut files = Vec::new();
        for (i, &(a, b)) in bounds.iter().enumerate() {
            let arr =
                ndarray::Array2::from_shape_vec((b - a, cols), v[a * cols..b * cols].to_vec())
                    .unwrap();
            let h = dir.path().join(format!("c{i:02}.h5"));
            let f = hdf5::File::create(&h).unwrap();
            let mut builder = f.new_dataset_builder().with_data(&arr);
            if b - a > 0 {
                builder = builder.chunk((50.min(b - a), cols)).deflate(1);
            }
            builder.create("z").unwrap();
            drop(f);
            files.push(h);
        }
        let names: Vec<&str> = files.iter().map(|p| s(p)).collect();
        let run = |extra: &[&str]| {
            let mut a = vec!["stats", "--format", "json", "--dataset", "z", "--per-file"];
            a.extend(extra);
            a.extend(&names);
            let out = cli(&a);
            ok(&out);
            out.stdout
        };
        let want = run(&[]);
        let sd = dir.path().join("c.d");
        let st = dir.path().join("all.cstate");
        assert_eq!(run(&["--state-dir", s(&sd), "--save-state", s(&st)]), want);
        assert_eq!(run(&["--state-dir", s(&sd), "--resume"]), want);
        // The batch's merged state: the folded head and at most the last domain.
        let merged = State::load(&st).unwrap();
        assert_eq!(merged.row_count(), rows as u64);
        let r = cli(&["merge", "--format", "json", s(&st)]);
        ok(&r);
        assert_eq!(r.stdout, want);
        // The per-input states, merged in a shuffled order, by the CLI and the library.
        let mut states = state_files(&sd);
        assert_eq!(states.len(), files.len());
        let mut order: Vec<usize> = (0..states.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next() as usize % (i + 1));
        }
        states = order.iter().map(|&k| states[k].clone()).collect();
        let mut m = vec!["merge", "--format", "json"];
        m.extend(states.iter().map(|p| s(p)));
        let r = cli(&m);
        ok(&r);
        assert_eq!(r.stdout, want);
        let mut lib = State::load(&states[0]).unwrap();
        for p in &states[1..] {
            lib.merge(&State::load(p).unwrap()).unwrap();
        }
        let whole = State::merge_files(&states, false).unwrap();
        same_bits(&lib.finish(None), &whole.finish(None), "merge in any order");
    }
}

/// Two JSON outputs equal but for the last bits of var and std (states of colstats 0.1 were
/// computed with fused multiply-adds for squared deviations; this version has none).
fn same_but_spread_bits(a: &[u8], b: &[u8]) {
    let (mut x, mut y) = (json(a), json(b));
    for k in ["var", "std"] {
        let (p, q) = (x["stats"][k].take(), y["stats"][k].take());
        let (p, q) = (p.as_array().unwrap(), q.as_array().unwrap());
        assert_eq!(p.len(), q.len());
        for (u, v) in p.iter().zip(q) {
            let (u, v) = (num(u), num(v));
            assert!(
                (u - v).abs() <= 1e-12 * u.abs().max(v.abs()),
                "{k}: {u} vs {v}"
            );
        }
    }
    assert_eq!(x, y);
}

/// States written by colstats 0.1 (format version 1, `tests/fixtures/states`) still merge to
/// what 0.1 printed, alone and with a state of this version over the same inputs.
#[test]
fn version_1_states_still_merge() {
    let dir = fixture("states");
    let want = std::fs::read(dir.join("v1-merged.json")).unwrap();
    let run = |args: &[&str]| {
        let out = bin().current_dir(&dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(
        run(&["merge", "v1-0.cstate", "v1-1.cstate", "--format", "json"]),
        want
    );
    let tmp = tmpdir();
    let v2 = tmp.path().join("v2-1.cstate");
    run(&[
        "stats",
        "v1a.npy",
        "v1b.npy",
        "v1c.npy",
        "--rows",
        "8192:",
        "--per-file",
        "-o",
        "/dev/null",
        "--save-state",
        s(&v2),
    ]);
    assert_eq!(
        run(&["merge", s(&v2), "v1-0.cstate", "--format", "json"]),
        want
    );
}

/// What an independent review of the batch change found: each failed before its fix.
mod review {
    use super::*;

    fn ok(out: std::process::Output) -> std::process::Output {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The payload's sections as (tag, body) and a frame around new ones (CRC included).
    fn sections(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut p = &bytes[24..bytes.len() - 4];
        let mut out = Vec::new();
        while !p.is_empty() {
            let tag: [u8; 4] = p[..4].try_into().unwrap();
            let n = u64::from_le_bytes(p[4..12].try_into().unwrap()) as usize;
            out.push((tag, p[12..12 + n].to_vec()));
            p = &p[12 + n..];
        }
        out
    }

    fn frame(secs: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (t, b) in secs {
            p.extend_from_slice(t);
            p.extend_from_slice(&(b.len() as u64).to_le_bytes());
            p.extend_from_slice(b);
        }
        let mut out = b"COLSTATE".to_vec();
        out.extend_from_slice(&2u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(&p);
        out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        out
    }

    #[test]
    fn crafted_states_are_clean_errors_never_huge_allocations_or_panics() {
        let sp = split(3000, 2, 2, 61);
        let st = Request::inputs(&sp.shards).run_state().unwrap();
        let secs = sections(&st.to_bytes());
        assert_eq!(
            State::from_bytes(&frame(&secs)).unwrap(),
            st,
            "the frame is right"
        );
        // An accumulator layout of no fields (would decode any node count into accumulators).
        let mut s2 = secs.clone();
        for (t, b) in s2.iter_mut() {
            if t == b"ACCL" {
                *b = 0u32.to_le_bytes().to_vec();
            }
        }
        let e = State::from_bytes(&frame(&s2)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::State, "{e}");
        // Statistics whose accumulators the state says it lacks.
        let mut s3 = secs.clone();
        for (t, b) in s3.iter_mut() {
            if t == b"RUNP" {
                b[9..13].copy_from_slice(&0u32.to_le_bytes());
            }
        }
        let e = State::from_bytes(&frame(&s3)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::State, "{e}");
        // An unknown critical section is refused; an unknown optional one is skipped.
        let mut s4 = secs.clone();
        s4.push((*b"ZZZZ", vec![1, 2, 3]));
        assert!(State::from_bytes(&frame(&s4))
            .unwrap_err()
            .to_string()
            .contains("newer"));
        let mut s5 = secs.clone();
        s5.push((*b"zzzz", vec![1, 2, 3]));
        assert_eq!(State::from_bytes(&frame(&s5)).unwrap(), st);
    }

    #[test]
    fn a_batch_over_later_rows_merges_after_the_rows_before_it() {
        let sp = split(20_000, 2, 5, 62);
        let dir = sp.whole.parent().unwrap();
        let shards: Vec<&str> = sp.shards.iter().map(|p| s(p)).collect();
        let (a, b) = (dir.join("a.cstate"), dir.join("b.cstate"));
        let mut x = vec![
            "stats",
            "--rows",
            "0:8192",
            "-o",
            "/dev/null",
            "--save-state",
            s(&a),
        ];
        x.extend(&shards);
        ok(cli(&x));
        let sd = dir.join("later.d");
        let mut y = vec![
            "stats",
            "--rows",
            "8192:",
            "-o",
            "/dev/null",
            "--save-state",
            s(&b),
            "--state-dir",
            s(&sd),
        ];
        y.extend(&shards);
        ok(cli(&y));
        let mut whole = vec!["stats", "--format", "json"];
        whole.extend(&shards);
        let want = ok(cli(&whole)).stdout;
        assert_eq!(
            ok(cli(&["merge", "--format", "json", s(&b), s(&a)])).stdout,
            want
        );
    }

    #[test]
    fn merging_many_states_without_rows_keeps_their_row_order() {
        // Shards shorter than a leaf: most batch states own no rows.
        let sp = split(30_000, 2, 60, 63);
        let dir = sp.whole.parent().unwrap();
        let sd = dir.join("short.d");
        let mut a = vec!["stats", "--format", "json", "--per-file"];
        a.extend(sp.shards.iter().map(|p| s(p)));
        let want = ok(cli(&a)).stdout;
        a.extend(["--state-dir", s(&sd)]);
        assert_eq!(ok(cli(&a)).stdout, want);
        let pattern = format!("{}/*.cstate", sd.display());
        let r = ok(cli(&["merge", "--format", "json", &pattern]));
        assert_eq!(r.stdout, want);
        assert!(
            r.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        // A state lost at either end: said, not silent.
        let files = state_files(&sd);
        std::fs::remove_file(&files[0]).unwrap();
        let r = ok(cli(&["merge", "--format", "json", &pattern]));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("cover rows") && err.contains("30000"), "{err}");
    }

    #[test]
    fn a_version_1_state_of_a_mixed_job_merges_with_this_versions() {
        let dir = fixture("states");
        let tmp = tmpdir();
        let b = tmp.path().join("m-1.cstate");
        let run = |args: &[&str]| ok(bin().current_dir(&dir).args(args).output().unwrap()).stdout;
        run(&[
            "stats",
            "v1m.npy",
            "v1m.h5",
            "--dataset",
            "/x",
            "--rows",
            "512:",
            "-o",
            "/dev/null",
            "--save-state",
            s(&b),
        ]);
        // The same split by this version (0:512 is not leaf-aligned: not a plain run's bits).
        let a = tmp.path().join("m-0.cstate");
        run(&[
            "stats",
            "v1m.npy",
            "v1m.h5",
            "--dataset",
            "/x",
            "--rows",
            "0:512",
            "-o",
            "/dev/null",
            "--save-state",
            s(&a),
        ]);
        let want = run(&["merge", s(&a), s(&b), "--format", "json"]);
        assert_eq!(json(&want)["dataset"], "/x");
        same_but_spread_bits(
            &run(&["merge", "v1m-0.cstate", s(&b), "--format", "json"]),
            &want,
        );
    }

    #[test]
    fn keep_going_does_not_let_empty_files_outvote_data() {
        let dir = tmpdir();
        let z = dir.path().join("z.npy");
        write_npy(&z, "<f4", false, &[0, 3], &[]);
        let b = dir.path().join("b.npy");
        write_npy(&b, "<f8", false, &[4, 3], &f64_bytes(&[1.0; 12], false));
        let r = cli(&["stats", "--keep-going", "--format", "json", s(&z), s(&b)]);
        assert_eq!(r.status.code(), Some(3));
        let j = json(&r.stdout);
        assert_eq!(j["rows"], 4);
        // The first input read names the result, not the skipped one.
        assert_eq!(j["file"], s(&b));
    }
}

/// `-o /dev/null` (and `--save-state /dev/null`) writes to the device: as root the atomic
/// rename replaced /dev/null with a regular file, and as anyone else it failed.
#[test]
fn output_to_a_device_writes_to_it_and_leaves_it_a_device() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tmpdir();
    let a = dir.path().join("a.npy");
    write_npy(&a, "<f8", false, &[3, 2], &f64_bytes(&[1.0; 6], false));
    let r = cli(&[
        "stats",
        s(&a),
        "-o",
        "/dev/null",
        "--save-state",
        "/dev/null",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = std::fs::metadata("/dev/null").unwrap();
    assert!(
        m.file_type().is_char_device(),
        "/dev/null is no longer a device"
    );
    let r = cli(&["stats", s(&a), "--format", "json", "-o", "/dev/stdout"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(json(&r.stdout)["rows"], 3);
}
