//! colstats: per-column statistics of on-disk arrays far larger than memory.
//!
//! One pass over a `.npy` file (HDF5 follows), on every core, within a fixed memory budget:
//! the array is cut into blocks that fit the budget ([`plan`]), each block is memory-mapped
//! on its own and reduced on a rayon worker ([`exec`], [`kernel`]), and partial results are
//! merged exactly in a fixed order ([`moments`]), so answers are identical for any thread
//! count.
//!
//! ```
//! use colstats::{Request, Stat};
//!
//! # // A 3 × 2 float64 `.npy` file, written by hand for the example.
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("big.npy");
//! # let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
//! # let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }".to_string();
//! # while (10 + header.len() + 1) % 64 != 0 { header.push(' '); }
//! # header.push('\n');
//! # bytes.extend((header.len() as u16).to_le_bytes());
//! # bytes.extend(header.as_bytes());
//! # for v in [1.0f64, 10.0, 2.0, 20.0, 3.0, 30.0] { bytes.extend(v.to_le_bytes()); }
//! # std::fs::write(&path, bytes)?;
//! let summary = Request::new(&path)
//!     .stats(&[Stat::Mean, Stat::Std, Stat::Min, Stat::Max])
//!     .memory(512 << 20)
//!     .run()?;
//! let mean = summary.get_f64(Stat::Mean).expect("asked for the mean");
//! assert_eq!(mean, vec![2.0, 20.0]);
//! println!("column 0: mean {}", mean[0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limitations
//!
//! - Files are memory-mapped: a file truncated by another process during a run ends the run
//!   with SIGBUS (see [`exec`]).
//! - The results for all selected columns must fit in half the memory budget.
//! - A column whose finite values sum past the f64 range reports an infinite mean, as numpy.

#![deny(missing_docs)]

#[cfg(feature = "mpi")]
pub mod cluster;
mod error;
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod kernel;
#[doc(hidden)]
pub mod moments;
#[doc(hidden)]
pub mod plan;
pub mod report;
mod request;
mod run;
#[doc(hidden)]
pub mod select;
#[doc(hidden)]
pub mod source;
mod state;
mod stats;
mod summary;

pub use error::{Error, ErrorKind, Result};
pub use exec::IoMode;
/// The `ndarray` colstats's results are built on ([`Values`] holds `Array1`s), re-exported
/// so that a caller's types are the same version's.
pub use ndarray;
pub use plan::MIN_BUDGET;
pub use request::{CancelToken, Info, PlanSummary, Request};
pub use run::Progress;
pub use select::{ColumnSpec, RowSpec};
pub use source::inputs::read_list;
pub use source::{
    shape_str, ArrayMeta, ByteOrder, DType, DatasetInfo, Filter, Format, Kind, Layout, Order,
};
pub use state::{InputId, Partial, State};
pub use summary::{Summary, Values};

/// One statistic colstats computes per column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stat {
    /// Non-NaN values.
    Count,
    /// NaN values (0 for integer and bool dtypes).
    NanCount,
    /// Sum of the non-NaN values.
    Sum,
    /// Mean of the non-NaN values.
    Mean,
    /// Variance with `ddof` delta degrees of freedom.
    Var,
    /// Standard deviation (square root of `Var`).
    Std,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
}

impl Stat {
    /// Every statistic, in output order.
    pub const ALL: [Stat; 8] = [
        Stat::Count,
        Stat::NanCount,
        Stat::Sum,
        Stat::Mean,
        Stat::Var,
        Stat::Std,
        Stat::Min,
        Stat::Max,
    ];

    /// The name used on the command line and in output (`count`, `nan_count`, ...).
    pub fn name(&self) -> &'static str {
        stats::def(*self).name
    }

    /// Parses a name as [`Stat::name`] writes it.
    pub fn from_name(s: &str) -> Option<Stat> {
        stats::REGISTRY.iter().find(|d| d.name == s).map(|d| d.stat)
    }
}

/// How NaN values are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NanPolicy {
    /// Ignore NaNs, like numpy's `nanmean`, `nanvar`, `nanmin`, ...
    #[default]
    Skip,
    /// One NaN makes the column's sum, mean, var, std, min and max NaN, like `mean`, `var`...
    Propagate,
}

impl NanPolicy {
    /// `"skip"` or `"propagate"`.
    pub fn name(&self) -> &'static str {
        match self {
            NanPolicy::Skip => "skip",
            NanPolicy::Propagate => "propagate",
        }
    }
}

/// The default memory budget: 1 GiB.
pub const DEFAULT_MEMORY: u64 = 1 << 30;

/// Parses a size such as `64MiB`, `2GiB`, `512M`, `1.5G` or `1000000` (bytes).
///
/// `K`/`M`/`G`/`T` and their `iB` forms are powers of 1024; `KB`/`MB`/`GB`/`TB` are powers
/// of 1000.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 512MiB, 2GiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit (use K, M, G, T, KiB, MB, ...)"
            ))
        }
    };
    let v = num * mult;
    if !v.is_finite() || v >= 1.8e19 {
        return Err(format!("'{s}' is too large"));
    }
    Ok(v as u64)
}
