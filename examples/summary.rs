//! Library usage: mean, standard deviation and range of every column of an array file.
//!
//! ```text
//! cargo run --release --example summary -- data.npy
//! ```

use colstats::{NanPolicy, Request, Stat};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: summary FILE.npy")?;
    let summary = Request::new(&path)
        .stats(&[Stat::Count, Stat::Mean, Stat::Std, Stat::Min, Stat::Max])
        .nan(NanPolicy::Skip)
        .ddof(1)
        .memory(256 << 20)
        .run_with_progress(|done, total| eprint!("\r{done}/{total} bytes"))?;
    eprintln!();
    println!(
        "{}: {} {:?}, {} rows",
        path,
        summary.dtype.name(),
        summary.shape,
        summary.rows
    );
    let (mean, std) = (
        summary.get_f64(Stat::Mean).unwrap(),
        summary.get_f64(Stat::Std).unwrap(),
    );
    let (min, max) = (
        summary.get(Stat::Min).unwrap(),
        summary.get(Stat::Max).unwrap(),
    );
    for (i, col) in summary.columns.iter().enumerate() {
        println!(
            "column {col}: mean {:.6} ± {:.6}, range [{}, {}]",
            mean[i],
            std[i],
            min.get_f64(i),
            max.get_f64(i)
        );
    }
    Ok(())
}
