//! HDF5 files written by h5py (tests/fixtures/make_h5_fixtures.py): every readable dataset
//! must give the statistics of its `.npy` twin (the values h5py reads back); every bad one
//! must fail with one clear line.

use crate::common::*;
use serde_json::Value;

fn stats(args: &[&std::ffi::OsStr]) -> std::process::Output {
    bin()
        .args(["stats", "--format", "json"])
        .args(args)
        .output()
        .unwrap()
}

fn close(a: &Value, b: &Value, what: &str) -> Vec<String> {
    if a["dtype"] != b["dtype"] || a["shape"] != b["shape"] {
        return vec![format!(
            "{what}: dtype/shape {} {} vs {} {}",
            a["dtype"], a["shape"], b["dtype"], b["shape"]
        )];
    }
    let mut exact = vec!["count", "nan_count", "min", "max"];
    if !a["dtype"].as_str().unwrap().starts_with("float") {
        exact.push("sum");
    }
    let approx = [("sum", 1e-14), ("mean", 1e-14), ("var", 1e-11)];
    stats_mismatches(a, b, &exact, &approx, what)
}

#[test]
fn h5py_fixtures() {
    let dir = fixture("h5");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut bad = Vec::new();
    let (mut oks, mut errs) = (0, 0);
    for case in manifest.as_array().unwrap() {
        let file = dir.join(case["file"].as_str().unwrap());
        let mut args: Vec<&std::ffi::OsStr> = vec![file.as_os_str()];
        let ds = case["dataset"].as_str().map(|d| d.to_string());
        if let Some(d) = &ds {
            args.push("--dataset".as_ref());
            args.push(d.as_ref());
        }
        let what = format!("{} {:?}", case["file"], ds);
        let out = stats(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        match case["expect"].as_str().unwrap() {
            "ok" => {
                oks += 1;
                if !out.status.success() {
                    bad.push(format!("{what}: failed: {err}"));
                    continue;
                }
                let twin = dir.join(case["twin"].as_str().unwrap());
                let t = stats(&[twin.as_os_str()]);
                assert!(
                    t.status.success(),
                    "twin {}: {}",
                    twin.display(),
                    String::from_utf8_lossy(&t.stderr)
                );
                let (h, n) = (json(&out.stdout), json(&t.stdout));
                bad.extend(close(&h, &n, &what));
                // Thread and block-size invariance on HDF5 paths too.
                let mut more = args.clone();
                more.extend(["--threads", "1", "--block-limit", "1"].map(std::ffi::OsStr::new));
                let again = stats(&more);
                if json(&again.stdout)["stats"] != h["stats"] {
                    bad.push(format!("{what}: output depends on threads/block size"));
                }
                // Chunks fetched through libhdf5 rather than from colstats's address table:
                // the same bytes, so the same bits.
                let fetched = bin()
                    .env("COLSTATS_H5_CHUNK_TABLE_MAX", "0")
                    .args(["stats", "--format", "json"])
                    .args(&args)
                    .output()
                    .unwrap();
                if !fetched.status.success() || json(&fetched.stdout)["stats"] != h["stats"] {
                    bad.push(format!(
                        "{what}: chunks fetched through libhdf5 give other results: {}",
                        String::from_utf8_lossy(&fetched.stderr)
                    ));
                }
            }
            "error" => {
                errs += 1;
                let want = case["contains"].as_str().unwrap().to_lowercase();
                let prefix = format!("error: {}: ", file.display());
                if out.status.code() != Some(1)
                    || !out.stdout.is_empty()
                    || !err.starts_with(&prefix)
                    || err.lines().count() != 1
                    || !err.to_lowercase().contains(&want)
                {
                    bad.push(format!(
                        "{what}: want exit 1 and one line containing {want:?}; got {:?} {err:?} (stdout {} bytes)",
                        out.status.code(),
                        out.stdout.len()
                    ));
                }
            }
            other => panic!("bad manifest entry {other}"),
        }
    }
    assert!(
        oks >= 70 && errs >= 20,
        "only {oks} ok and {errs} error cases"
    );
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
