//! What `info` reports of an HDF5 file's datasets (plain data, present with or without the
//! HDF5 feature, which alone fills it).

use super::DType;

/// How a dataset's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Inside the object header.
    Compact,
    /// One contiguous range of the file.
    Contiguous,
    /// Fixed-shape chunks, each stored (and maybe filtered) on its own.
    Chunked,
    /// Mapped from other datasets.
    Virtual,
}

impl Layout {
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::Compact => "compact",
            Layout::Contiguous => "contiguous",
            Layout::Chunked => "chunked",
            Layout::Virtual => "virtual",
        }
    }
}

/// One filter of a chunked dataset's pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    /// HDF5 filter id (1 deflate, 2 shuffle, 3 fletcher32, 4 szip, ...).
    pub id: i32,
    /// Readable name.
    pub name: String,
    /// Client data values.
    pub params: Vec<u32>,
}

/// What `colstats info` lists for each dataset.
#[derive(Clone, Debug)]
pub struct DatasetInfo {
    /// Absolute path in the file, e.g. `/detector/frames`.
    pub path: String,
    /// Shape (empty for a scalar).
    pub shape: Vec<u64>,
    /// Element type, or why it is not supported.
    pub dtype: std::result::Result<DType, String>,
    /// Storage layout.
    pub layout: Layout,
    /// Chunk shape, for chunked datasets.
    pub chunk: Option<Vec<u64>>,
    /// Filter pipeline, in write order.
    pub filters: Vec<Filter>,
    /// Bytes allocated in the file.
    pub stored_bytes: u64,
    /// Bytes of the elements (shape × itemsize).
    pub logical_bytes: u64,
    /// Other paths (soft, external or extra hard links) that lead to the same dataset.
    pub links: Vec<String>,
    /// The file holding the dataset, when it is not the file named (reached through an
    /// external link).
    pub holder: Option<String>,
}
