//! The result of a reduction: per-column values of each requested statistic.

use crate::*;
use ndarray::Array1;
use std::path::PathBuf;

/// Per-column values that are exact integers for integer dtypes and floats otherwise.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// Float results (NaN where undefined).
    Float(Array1<f64>),
    /// Exact integer results; `None` where undefined (min/max of an empty column).
    Int(Array1<Option<i128>>),
}

impl Values {
    /// Number of columns.
    pub fn len(&self) -> usize {
        match self {
            Values::Float(a) => a.len(),
            Values::Int(a) => a.len(),
        }
    }

    /// True when there are no columns.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` as f64 (NaN where undefined; large integers rounded).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            Values::Float(a) => a[i],
            Values::Int(a) => a[i].map_or(f64::NAN, |v| v as f64),
        }
    }
}

/// The result of a reduction: the array's metadata and one entry per selected column for
/// each requested statistic (`None` for statistics not requested).
#[derive(Clone, Debug)]
pub struct Summary {
    /// The input file, as given.
    pub path: PathBuf,
    /// The HDF5 dataset, if any.
    pub dataset: Option<String>,
    /// The array's element type.
    pub dtype: DType,
    /// The array's shape.
    pub shape: Vec<u64>,
    /// Memory order of the array.
    pub order: Order,
    /// Rows reduced (after `--rows`).
    pub rows: u64,
    /// Indices of the reported columns, in output order.
    pub columns: Vec<u64>,
    /// Delta degrees of freedom used for var and std.
    pub ddof: u64,
    /// NaN policy used.
    pub nan: NanPolicy,
    /// Statistics requested, in output order.
    pub stats: Vec<Stat>,
    /// Each requested statistic's values, in the order of `stats`.
    pub(crate) values: Vec<(Stat, Values)>,
    /// Every input, in row order (one entry, `path`, for a single input).
    pub inputs: Vec<PathBuf>,
    /// Each input's own summary, when asked for ([`crate::Request::per_input`]).
    pub per_input: Vec<Summary>,
    /// Inputs left out under [`crate::Request::keep_going`], with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// What the run noticed and worked around, one line each (`FILE: what`): a damaged
    /// state in a state directory, recomputed.
    pub warnings: Vec<String>,
}

impl Summary {
    /// One statistic's values over the reported columns, `None` when it was not requested:
    /// counts and exact integer results (sums, minima, maxima of integer dtypes) as
    /// [`Values::Int`], the rest as [`Values::Float`].
    pub fn get(&self, stat: Stat) -> Option<&Values> {
        self.values.iter().find(|(s, _)| *s == stat).map(|(_, v)| v)
    }

    /// [`Summary::get`] as `f64` per column (NaN where undefined; integers past 2^53
    /// rounded).
    pub fn get_f64(&self, stat: Stat) -> Option<Vec<f64>> {
        self.get(stat)
            .map(|v| (0..v.len()).map(|i| v.get_f64(i)).collect())
    }
}
