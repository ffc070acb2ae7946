//! Every numpy-written fixture against exact references (tests/fixtures/expected.json, made
//! by make_fixtures.py with Python fractions), for several thread counts and block sizes;
//! every malformed or unsupported fixture must fail cleanly.

use crate::common::*;
use serde_json::Value;

fn exact_int(v: &Value) -> Option<i128> {
    match v {
        Value::Number(n) => n.to_string().parse::<i128>().ok(),
        _ => None,
    }
}

fn close(got: f64, want: f64, rel: f64) -> bool {
    if want.is_nan() {
        return got.is_nan();
    }
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs().max(f64::MIN_POSITIVE)
}

fn check_one(name: &str, exp: &Value, got: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let es = &exp["stats"];
    let gs = &got["stats"];
    assert_eq!(got["dtype"], exp["dtype"], "{name}: dtype");
    assert_eq!(got["shape"], exp["shape"], "{name}: shape");
    let ncols = es["count"].as_array().unwrap().len();
    assert_eq!(got["columns"].as_u64().unwrap() as usize, ncols, "{name}");
    let is_int = !exp["dtype"].as_str().unwrap().starts_with("float");
    for stat in ["count", "nan_count", "sum", "mean", "var", "min", "max"] {
        let e = es[stat].as_array().unwrap();
        let g = gs[stat]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no {stat}"));
        assert_eq!(e.len(), g.len(), "{name}: {stat} length");
        for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
            let ok = match stat {
                "count" | "nan_count" => ev == gv,
                "sum" | "min" | "max" if is_int => match (exact_int(ev), exact_int(gv)) {
                    (Some(a), Some(b)) => a == b,
                    (None, None) => num(ev).is_nan() && num(gv).is_nan(),
                    _ => false,
                },
                // Exact for float min/max (zeros compare equal whatever their sign).
                "min" | "max" => {
                    let (a, b) = (num(ev), num(gv));
                    a == b || (a.is_nan() && b.is_nan())
                }
                "sum" | "mean" => close(num(gv), num(ev), 1e-12),
                "var" => {
                    let (a, b) = (num(ev), num(gv));
                    close(b, a, 1e-10) || (a == 0.0 && b.abs() < 1e-300)
                }
                _ => unreachable!(),
            };
            if !ok {
                bad.push(format!("{name}: {stat}[{i}] = {gv}, want {ev}"));
            }
        }
    }
    bad
}

#[test]
fn numpy_fixtures_match_exact_references() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, exp) in expected.as_object().unwrap() {
        let path = fixture("npy").join(name);
        let mut outputs = Vec::new();
        for extra in [
            &["--threads", "1"][..],
            &["--threads", "2"][..],
            &["--threads", "3", "--block-limit", "1"][..],
            &[
                "--threads",
                "2",
                "--memory",
                "1MiB",
                "--block-limit",
                "4KiB",
            ][..],
        ] {
            outputs.push(stdout_of(
                bin()
                    .args(["stats", "--format", "json", "--progress", "never"])
                    .arg(&path)
                    .args(extra),
                &format!("{name} {extra:?}"),
            ));
        }
        for o in &outputs[1..] {
            assert_eq!(
                String::from_utf8_lossy(o),
                String::from_utf8_lossy(&outputs[0]),
                "{name}: output depends on threads/block size"
            );
        }
        bad.extend(check_one(name, exp, &json(&outputs[0])));
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} fixtures");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn bad_fixtures_fail_cleanly() {
    let dir = fixture("npy_bad");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("npy") {
            continue;
        }
        for cmd in ["stats", "info"] {
            let out = bin().arg(cmd).arg(&path).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{}: {err}", path.display());
            assert!(
                out.stdout.is_empty(),
                "{}: stdout not empty",
                path.display()
            );
            let want = format!("error: {}: ", path.display());
            assert!(err.starts_with(&want), "{}: {err}", path.display());
            assert_eq!(err.lines().count(), 1, "{}: {err}", path.display());
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} bad fixtures");
}
