//! data-gen: writes large `.npy` or HDF5 test arrays with bounded memory, in parallel.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use data_gen::{DType, Dist, Order, Spec};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum OrderArg {
    C,
    F,
}

#[derive(Parser)]
#[command(
    name = "data-gen",
    about = "Write large .npy or HDF5 test arrays, streaming with bounded memory",
    after_help = "Examples:\n  data-gen big.npy --shape 268435456,16 --dist normal:1e9,1\n  data-gen f.npy --shape 1000000,16 --dtype '>f4' --order f --nan-frac 0.01\n  data-gen run.h5 --dataset /detector/frames --shape 8388608,16 --chunks 16384,16 --gzip 4 --shuffle"
)]
struct Args {
    /// Output file: HDF5 when it ends in .h5/.hdf5/.he5/.nc or --dataset is given, else .npy.
    out: PathBuf,
    /// Shape, comma-separated, e.g. 1000000,16.
    #[arg(long, default_value = "1000000,16")]
    shape: String,
    /// Element type: f8 f4 f2 i1..i8 u1..u8 b1, or numpy names; prefix > for big-endian.
    #[arg(long, default_value = "<f8")]
    dtype: DType,
    /// Memory order (.npy only).
    #[arg(long, value_enum, default_value_t = OrderArg::C)]
    order: OrderArg,
    /// Distribution: normal:MEAN,STD | uniform:LO,HI | int:LO,HI | const:V | seq.
    #[arg(long, default_value = "normal:0,1")]
    dist: Dist,
    /// Fraction of NaN values (float types).
    #[arg(long, default_value_t = 0.0)]
    nan_frac: f64,
    /// Fraction of +-inf values (float types).
    #[arg(long, default_value_t = 0.0)]
    inf_frac: f64,
    /// Random seed; output is identical for any thread count.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// HDF5 dataset path.
    #[arg(long)]
    dataset: Option<String>,
    /// HDF5 chunk shape, e.g. 16384,16 (default: contiguous).
    #[arg(long)]
    chunks: Option<String>,
    /// HDF5 gzip (deflate) level 1-9 (needs --chunks).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=9))]
    gzip: Option<u32>,
    /// HDF5 byte shuffle (needs --chunks).
    #[arg(long)]
    shuffle: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn dims(s: &str, what: &str) -> Result<Vec<u64>, String> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad {what} '{s}'"))
        })
        .collect()
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<(), String> {
    let spec = Spec {
        shape: dims(&a.shape, "--shape")?,
        dtype: a.dtype,
        dist: a.dist,
        nan_frac: a.nan_frac,
        inf_frac: a.inf_frac,
        seed: a.seed,
    };
    let ext = a
        .out
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let hdf5 = a.dataset.is_some() || matches!(ext.as_str(), "h5" | "hdf5" | "he5" | "nc");
    if !hdf5 && (a.chunks.is_some() || a.gzip.is_some() || a.shuffle) {
        return Err("--chunks, --gzip and --shuffle apply to HDF5 output".into());
    }
    if a.chunks.is_none() && (a.gzip.is_some() || a.shuffle) {
        return Err("--gzip and --shuffle need --chunks".into());
    }
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = ProgressBar::new(spec.bytes());
        pb.set_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("template"),
        );
        pb
    };
    let progress = |done: u64| pb.set_position(done);
    if hdf5 {
        #[cfg(feature = "hdf5")]
        {
            let layout = data_gen::h5::H5Layout {
                chunks: a
                    .chunks
                    .as_deref()
                    .map(|c| dims(c, "--chunks"))
                    .transpose()?,
                gzip: a.gzip,
                shuffle: a.shuffle,
            };
            let name = a.dataset.as_deref().unwrap_or("/data");
            data_gen::h5::write_hdf5(&a.out, name, &spec, &layout, &progress)?;
        }
        #[cfg(not(feature = "hdf5"))]
        return Err("built without HDF5 support".into());
    } else {
        let order = if a.order == OrderArg::F {
            Order::F
        } else {
            Order::C
        };
        data_gen::write_npy(&a.out, &spec, order, &progress)
            .map_err(|e| format!("{}: {e}", a.out.display()))?;
    }
    pb.finish_and_clear();
    Ok(())
}
