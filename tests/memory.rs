//! Peak memory stays within the budget for a file many times larger than it.
//!
//! Alone in its own test binary so `RUSAGE_CHILDREN` sees only these children.

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

#[test]
fn peak_rss_within_budget_for_a_file_nine_times_larger() {
    let budget: u64 = 64 << 20;
    let dir = tmpdir();
    let (rows, cols) = ((9 * budget / 8 / 16) as usize, 16usize);
    for fortran in [false, true] {
        let p = dir.path().join(format!("big{fortran}.npy"));
        // Header, then the data streamed in pieces so the test itself stays small.
        write_npy(&p, "<f8", fortran, &[rows as u64, cols as u64], &[]);
        let mut f = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new().append(true).open(&p).unwrap(),
        );
        let mut buf = Vec::with_capacity(8 << 20);
        for i in 0..rows * cols {
            buf.extend_from_slice(&((i % 1000) as f64 * 0.5).to_le_bytes());
            if buf.len() >= 8 << 20 {
                f.write_all(&buf).unwrap();
                buf.clear();
            }
        }
        f.write_all(&buf).unwrap();
        f.flush().unwrap();
        drop(f);
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size >= 8 * budget, "file {size} is not 8x the budget");
        let out = bin()
            .args([
                "stats",
                "--format",
                "json",
                "--memory",
                "64MiB",
                "--threads",
                "2",
            ])
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j = json(&out.stdout);
        assert_eq!(j["stats"]["count"][0].as_u64().unwrap(), rows as u64);
        let rss = children_max_rss_bytes();
        eprintln!(
            "fortran={fortran}: file {} MiB, budget 64 MiB, peak RSS {:.1} MiB",
            size >> 20,
            rss as f64 / (1 << 20) as f64
        );
        assert!(
            rss <= budget + (32 << 20),
            "peak RSS {} MiB over budget 64 MiB + 32 MiB",
            rss >> 20
        );
        std::fs::remove_file(&p).unwrap();
    }
}
