//! The library API as a Rust caller uses it: error kinds that do not depend on the format,
//! messages in the library's terms (the CLI's flags only in `cli_message`), cancellation,
//! runs on the caller's rayon pool, and refused values.

use crate::common::*;
use colstats::{CancelToken, ErrorKind, Request, Stat};

fn kind_of(r: Request) -> ErrorKind {
    r.run().expect_err("must fail").kind()
}

#[test]
fn one_kind_per_failure_whatever_the_format() {
    let npy_str = fixture("npy_bad").join("bytes_S3.npy");
    assert_eq!(kind_of(Request::new(&npy_str)), ErrorKind::UnsupportedType);
    #[cfg(feature = "hdf5")]
    {
        let h5 = fixture("h5").join("errors.h5");
        assert_eq!(
            kind_of(Request::new(&h5).dataset("/str_fixed")),
            ErrorKind::UnsupportedType,
            "a string dataset in HDF5 is the same kind as in .npy"
        );
        assert_eq!(
            kind_of(Request::new(&h5).dataset("/no/such")),
            ErrorKind::Request
        );
    }
    let dir = tmpdir();
    assert_eq!(kind_of(Request::new(dir.path())), ErrorKind::Io);
    assert_eq!(
        kind_of(Request::new(dir.path().join("missing.npy"))),
        ErrorKind::Io
    );
    let d = dyadic(1000, 3, 0, 0, 1);
    let p = dir.path().join("a.npy");
    d.write_npy(&p, false);
    assert_eq!(kind_of(Request::new(&p).memory(1000)), ErrorKind::Budget);
    assert_eq!(kind_of(Request::new(&p).threads(0)), ErrorKind::Request);
    assert_eq!(kind_of(Request::new(&p).stats(&[])), ErrorKind::Request);
    assert_eq!(
        Request::new(&p).memory(1000).info().unwrap_err().kind(),
        ErrorKind::Budget,
        "checked before planning, for info too"
    );
    // A dataset path applies to HDF5 inputs only: a .npy file ignores it (job scripts pass
    // it whatever their pattern matches).
    let s = Request::new(&p).dataset("/x").run().unwrap();
    assert_eq!(s.dataset, None);
}

#[test]
fn library_messages_speak_of_the_library_and_the_cli_adds_flags() {
    let dir = tmpdir();
    let p = dir.path().join("a.npy");
    dyadic(100, 2, 0, 0, 2).write_npy(&p, false);
    let e = Request::new(&p).memory(1000).run().unwrap_err();
    assert_eq!(e.path(), Some(p.as_path()));
    assert!(!e.to_string().contains("--memory"), "{e}");
    assert!(e.cli_message().contains("--memory"), "{}", e.cli_message());
    assert_eq!(e.to_string().lines().count(), 1);
}

#[test]
fn a_cancelled_run_stops_within_a_block() {
    let dir = tmpdir();
    let p = dir.path().join("a.npy");
    dyadic(200_000, 4, 0, 0, 3).write_npy(&p, false);
    let token = CancelToken::new();
    token.cancel();
    let e = Request::new(&p).cancel_token(&token).run().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    // Cancelled from the progress callback after the first block: the other blocks of a
    // many-block plan are not all reduced.
    let token = CancelToken::new();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let e = Request::new(&p)
        .block_limit(64 << 10)
        .threads(2)
        .cancel_token(&token)
        .run_with_progress(|_, _| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            token.cancel();
        })
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    let n = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n <= 3, "{n} blocks finished after the cancel");
}

#[test]
fn runs_on_the_callers_pool() {
    let dir = tmpdir();
    let p = dir.path().join("a.npy");
    dyadic(100_000, 5, 1 << 30, 10, 4).write_npy(&p, false);
    let alone = Request::new(&p)
        .threads(3)
        .block_limit(256 << 10)
        .run()
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .stack_size(64 << 20)
        .thread_name(|i| format!("caller-{i}"))
        .build()
        .unwrap();
    let names = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let inside = pool
        .install(|| {
            Request::new(&p)
                .block_limit(256 << 10)
                .run_with_progress(|_, _| {
                    let n = std::thread::current().name().unwrap_or("").to_string();
                    names.lock().unwrap().insert(n);
                })
        })
        .unwrap();
    for s in [Stat::Mean, Stat::Var, Stat::Min, Stat::Sum] {
        assert_eq!(inside.get_f64(s), alone.get_f64(s), "{s:?}");
    }
    let names = names.into_inner().unwrap();
    assert!(
        names.iter().all(|n| n.starts_with("caller-")),
        "workers outside the caller's pool: {names:?}"
    );
}
