//! MPI benchmark (feature `mpi`): `mpirun -n 2` × 1 thread against one process × 2 threads on
//! the same 4 GiB `.npy` file, warm and cold, and the gather's cost for the README's cluster
//! model: rank 0's time to receive and merge the states of 1 to 4 ranks, for 16 and 100,000
//! columns (from `COLSTATS_MPI_TIMING`).
//!
//! ```text
//! cargo bench --features mpi --bench mpi -- --quick   # 256 MiB
//! cargo bench --features mpi --bench mpi              # 4 GiB, a few minutes
//! ```
//!
//! Open MPI is run with the settings of the README (root allowed, oversubscription, no core
//! binding, the ob1 PML). Results: `target/mpi/results.md`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "support/mod.rs"]
#[allow(dead_code)]
mod support;
use support::{cold_limit, drop_cache};

const ENV: [(&str, &str); 5] = [
    ("OMPI_ALLOW_RUN_AS_ROOT", "1"),
    ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
    ("OMPI_MCA_rmaps_base_oversubscribe", "1"),
    ("OMPI_MCA_hwloc_base_binding_policy", "none"),
    ("OMPI_MCA_pml", "ob1"),
];

fn write_npy(path: &Path, rows: usize, cols: usize) {
    use std::io::Write;
    let dict = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let pad = (64 - (10 + dict.len() + 1) % 64) % 64;
    let mut h = dict.into_bytes();
    h.extend(std::iter::repeat_n(b' ', pad));
    h.push(b'\n');
    let mut f = std::io::BufWriter::with_capacity(1 << 22, File::create(path).unwrap());
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(h.len() as u16).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = Vec::with_capacity(1 << 22);
    for _ in 0..rows * cols {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&(1e9 + (x >> 11) as f64 / (1u64 << 53) as f64).to_le_bytes());
        if buf.len() >= 1 << 22 {
            f.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    f.write_all(&buf).unwrap();
}

/// Seconds of one run of `cmd` (with the MPI settings), and its stderr.
fn timed(cmd: &[String]) -> (f64, String) {
    let t = Instant::now();
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .envs(ENV)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn best(n: usize, cmd: &[String]) -> f64 {
    (0..n).map(|_| timed(cmd).0).fold(f64::INFINITY, f64::min)
}

fn cold(cmd: &[String], path: &Path) -> f64 {
    drop_cache(path);
    timed(cmd).0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("mpi: not run under cargo test; use `cargo bench --features mpi --bench mpi`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let bin = env!("CARGO_BIN_EXE_colstats").to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("mpi");
    std::fs::create_dir_all(&root).unwrap();
    let file = root.join("big.npy");
    let bytes: u64 = if quick { 256 << 20 } else { 4 << 30 };
    let cols = 16;
    write_npy(&file, (bytes / 8 / cols) as usize, cols as usize);
    let f = file.display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let one = [
        vec![bin.clone()],
        s(&["stats", &f, "-o", "/dev/null", "--threads", "2"]),
    ]
    .concat();
    let two = [
        s(&["mpirun", "-n", "2"]),
        vec![bin.clone()],
        s(&["stats", &f, "-o", "/dev/null", "--threads", "1"]),
    ]
    .concat();
    let reps = if quick { 2 } else { 3 };
    let _ = timed(&one); // warm the cache
    let (w1, w2) = (best(reps, &one), best(reps, &two));
    let climit = cold_limit(&file);
    let (c1, c2) = (cold(&one, &file), cold(&two, &file));
    let start = timed(&[s(&["mpirun", "-n", "2", "true"])].concat()).0;
    // The fixed cost of an MPI run (start-up, MPI_Init, shutdown): a run on a tiny file.
    let tiny = root.join("tiny.npy");
    write_npy(&tiny, 16, 16);
    let t = tiny.display().to_string();
    let fixed = best(
        reps,
        &[
            s(&["mpirun", "-n", "2"]),
            vec![bin.clone()],
            s(&["stats", &t, "-o", "/dev/null"]),
        ]
        .concat(),
    ) - best(
        reps,
        &[vec![bin.clone()], s(&["stats", &t, "-o", "/dev/null"])].concat(),
    );
    let _ = std::fs::remove_file(&tiny);
    let gb = bytes as f64 / 1e9;
    let mut md = format!(
        "{} GiB float64 file, 16 columns; `mpirun -n 2 ... --threads 1` against one process `--threads 2`.\n\n| | one process, 2 threads | mpirun -n 2, 1 thread each | ratio |\n|---|---|---|---|\n",
        bytes >> 30
    );
    md.push_str(&format!(
        "| warm | {w1:.3} s ({:.2} GB/s) | {w2:.3} s ({:.2} GB/s) | {:.2} |\n",
        gb / w1,
        gb / w2,
        w1 / w2
    ));
    md.push_str(&format!(
        "| cold (limit {climit:.2} GB/s) | {c1:.3} s ({:.2} GB/s) | {c2:.3} s ({:.2} GB/s) | {:.2} |\n",
        gb / c1,
        gb / c2,
        c1 / c2
    ));
    md.push_str(&format!(
        "\nEvery MPI run pays a fixed {fixed:.3} s over one process (a run on a 2 KiB file under `mpirun -n 2` against one without; `mpirun -n 2 true` alone takes {start:.3} s): mostly `MPI_Init`. Without it the ratios are {:.2} warm and {:.2} cold.\n",
        w1 / (w2 - fixed),
        c1 / (c2 - fixed)
    ));
    let _ = std::fs::remove_file(&file);
    // Gather cost: rank 0's receive + merge + finish, per rank count and width.
    md.push_str("\n| columns | ranks | state bytes gathered | rank 0: gather + merge |\n|---|---|---|---|\n");
    for (cols, rows) in [(16usize, 1 << 20), (100_000usize, 2048)] {
        let w = root.join(format!("w{cols}.npy"));
        write_npy(&w, rows, cols);
        for n in 1..=4 {
            let cmd = [
                s(&[
                    "mpirun",
                    "-x",
                    "COLSTATS_MPI_TIMING=1",
                    "-n",
                    &n.to_string(),
                ]),
                vec![bin.clone()],
                s(&[
                    "stats",
                    &w.display().to_string(),
                    "-o",
                    "/dev/null",
                    "--threads",
                    "1",
                ]),
            ]
            .concat();
            let mut best_t = f64::INFINITY;
            let mut state = 0u64;
            for _ in 0..reps {
                let (_, err) = timed(&cmd);
                let line = err
                    .lines()
                    .find(|l| l.starts_with("mpi timing:"))
                    .unwrap_or("");
                let field = |k: &str| {
                    let ws: Vec<&str> = line.split_whitespace().collect();
                    ws.iter()
                        .position(|x| *x == k)
                        .and_then(|i| ws.get(i + 1))
                        .and_then(|v| v.parse::<f64>().ok())
                };
                best_t = best_t.min(field("gather+merge").unwrap_or(f64::NAN));
                state = field("bytes").unwrap_or(0.0) as u64;
            }
            md.push_str(&format!(
                "| {cols} | {n} | {:.2} MiB | {:.4} s |\n",
                state as f64 / (1 << 20) as f64,
                best_t
            ));
        }
        let _ = std::fs::remove_file(&w);
    }
    println!("{md}");
    std::fs::write(root.join("results.md"), &md).unwrap();
}
