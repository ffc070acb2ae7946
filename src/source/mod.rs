//! Where bytes come from: array metadata and the file formats that carry it.

pub mod chunked;
pub mod datasets;
pub mod dtype;
#[cfg(feature = "hdf5")]
pub mod hdf5;
pub mod inputs;
pub mod npy;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use datasets::{DatasetInfo, Filter, Layout};
pub use dtype::{ByteOrder, DType, Kind};
pub use inputs::{Domain, Inputs};

use crate::error::{Error, ErrorKind, Result};

/// Memory order of an array's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Row-major: the last index varies fastest; a row is contiguous.
    C,
    /// Column-major: the first index varies fastest; a column is contiguous.
    F,
}

impl Order {
    /// `"C"` or `"F"`.
    pub fn name(&self) -> &'static str {
        match self {
            Order::C => "C",
            Order::F => "F",
        }
    }
}

/// The file format an array came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A NumPy `.npy` file.
    Npy,
    /// An HDF5 file.
    Hdf5,
}

/// What an array is and where its elements live in the file.
#[derive(Clone, Debug)]
pub struct ArrayMeta {
    /// The file.
    pub path: PathBuf,
    /// Element type.
    pub dtype: DType,
    /// Shape as stored.
    pub shape: Vec<u64>,
    /// Memory order of the elements.
    pub order: Order,
    /// Byte offset of the first element in the file.
    pub data_offset: u64,
    /// Number of rows (the length of axis 0).
    pub rows: u64,
    /// Number of columns (the trailing dimensions' product).
    pub columns: u64,
    /// Bytes of element data (`rows * columns * itemsize`).
    pub data_bytes: u64,
    /// True when the elements lie contiguously in the file at `data_offset` and can be
    /// memory-mapped; false when they must be read or decoded into buffers.
    pub mapped: bool,
    /// Rows per merge-tree leaf imposed by the storage (an HDF5 chunk's rows), if any.
    pub chunk_rows: Option<u64>,
    /// Scratch bytes each worker needs besides its block (chunk decoding buffers).
    pub scratch_per_thread: u64,
}

impl ArrayMeta {
    /// Builds and validates metadata for elements stored contiguously at `data_offset`, up
    /// to the end of the file.
    pub fn new(
        path: &Path,
        dtype: DType,
        shape: Vec<u64>,
        order: Order,
        data_offset: u64,
        file_len: u64,
    ) -> Result<ArrayMeta> {
        Self::build(
            path,
            dtype,
            shape,
            order,
            data_offset,
            Some((file_len, true)),
        )
    }

    /// Builds metadata; `extent` is `(file_len, exact)` for data stored at `data_offset`
    /// (`exact`: nothing may follow it), or `None` for data read by other means.
    pub fn build(
        path: &Path,
        dtype: DType,
        shape: Vec<u64>,
        order: Order,
        data_offset: u64,
        extent: Option<(u64, bool)>,
    ) -> Result<ArrayMeta> {
        if shape.is_empty() {
            return Err(Error::format(
                path,
                "0-d array (a single scalar): there is no axis 0 to reduce over",
            ));
        }
        if shape.len() > 64 {
            return Err(Error::format(
                path,
                format!("{} dimensions is too many", shape.len()),
            ));
        }
        let overflow = || Error::format(path, format!("shape {shape:?} is too large"));
        let rows = shape[0];
        let columns = shape[1..]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(overflow)?;
        let data_bytes = rows
            .checked_mul(columns)
            .and_then(|n| n.checked_mul(dtype.size as u64))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(overflow)?;
        let (file_len, exact) = extent.unwrap_or((u64::MAX, false));
        let have = file_len.saturating_sub(data_offset);
        if have < data_bytes {
            return Err(Error::size(path, format!(
                    "truncated data: shape {} of {} needs {data_bytes} bytes but the file has {have}",
                    shape_str(&shape),
                    dtype.name()
                )));
        }
        if exact && have > data_bytes {
            return Err(Error::size(
                path,
                format!(
                    "{} unexpected bytes after the data (shape {} of {} needs {data_bytes} bytes)",
                    have - data_bytes,
                    shape_str(&shape),
                    dtype.name()
                ),
            ));
        }
        // For one row or one column both orders describe the same bytes; call it C so the
        // planner has fewer cases.
        let order = if rows <= 1 || columns <= 1 {
            Order::C
        } else {
            order
        };
        Ok(ArrayMeta {
            path: path.to_path_buf(),
            dtype,
            shape,
            order,
            data_offset,
            rows,
            columns,
            data_bytes,
            mapped: extent.is_some(),
            chunk_rows: None,
            scratch_per_thread: 0,
        })
    }

    /// In Fortran order, the position in memory of the contiguous run holding `column`.
    ///
    /// Columns are the trailing dimensions flattened in C order, while Fortran order lays the
    /// runs out with the second index fastest, so for three or more dimensions the two differ.
    pub fn run_of_column(&self, column: u64) -> u64 {
        let dims = &self.shape[1..];
        let (mut rem, mut run, mut stride) = (column, 0u64, 1u64);
        // Decompose `column` in C order (last dim fastest) and recompose in F order.
        let mut digits = vec![0u64; dims.len()];
        for (k, &d) in dims.iter().enumerate().rev() {
            digits[k] = rem % d.max(1);
            rem /= d.max(1);
        }
        for (k, &d) in dims.iter().enumerate() {
            run += digits[k] * stride;
            stride *= d;
        }
        run
    }
}

/// `(3, 4)`-style rendering of a shape, as numpy prints it.
pub fn shape_str(shape: &[u64]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// HDF5's signature; it sits at offset 0, 512, 1024, 2048, ... (after a user block).
const HDF5_MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// How an input's elements are reached.
#[derive(Debug)]
pub enum Storage {
    /// Contiguous in the file at the metadata's `data_offset`: memory-mapped per block.
    Mapped,
    /// HDF5 chunks fetched raw and decoded by colstats.
    #[cfg(feature = "hdf5")]
    Chunked(hdf5::Chunked),
    /// Hyperslab reads through libhdf5.
    #[cfg(feature = "hdf5")]
    Hdf5(hdf5::Hdf5Read),
}

/// An opened input: its metadata and the open file.
#[derive(Debug)]
pub struct Source {
    /// What the array is and where it lives.
    pub meta: ArrayMeta,
    /// The format it came from.
    pub format: Format,
    /// The HDF5 dataset's path, for HDF5 input.
    pub dataset: Option<String>,
    /// How elements are reached.
    pub storage: Storage,
    /// The open file, for mapping blocks.
    pub file: File,
}

/// Opens `path`, recognising the format by its first bytes, and reads the array's metadata.
///
/// The dataset applies to HDF5 files only: a `.npy` file ignores it, so that a job script
/// that always names one works whatever its pattern matches.
pub fn open(path: &Path, dataset: Option<&str>) -> Result<Source> {
    use std::os::unix::fs::FileExt;
    let (file, len, format) = recognise(path)?;
    if format == Format::Hdf5 {
        return open_hdf5(path, file, len, dataset);
    }
    let mut head = vec![0u8; len.min(4096) as usize];
    file.read_exact_at(&mut head, 0)
        .map_err(|e| Error::io(path, e))?;
    let need = header_extent(&head);
    if need > head.len() && (need as u64) <= len {
        head.resize(need, 0);
        file.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(path, e))?;
    }
    let meta = npy::parse(path, &head, len)?;
    Ok(Source {
        meta,
        format: Format::Npy,
        dataset: None,
        storage: Storage::Mapped,
        file,
    })
}

#[cfg(feature = "hdf5")]
fn open_hdf5(path: &Path, file: File, len: u64, dataset: Option<&str>) -> Result<Source> {
    let o = hdf5::open(path, &file, dataset)?;
    // Bytes are read from the file that holds them (another file behind an external link).
    let (file, len) = match o.holder {
        Some((f, _)) => {
            let n = f.metadata().map_err(|e| Error::io(path, e))?.len();
            (f, n)
        }
        None => (file, len),
    };
    let (extent, chunk_rows, scratch) = match &o.storage {
        Storage::Mapped => (Some((len, false)), None, 0),
        Storage::Chunked(c) => (
            None,
            c.chunk.first().copied(),
            3 * c.chunk_bytes(o.dtype.size) as u64,
        ),
        Storage::Hdf5(r) => (None, r.chunk_rows, 0),
    };
    let mut meta = ArrayMeta::build(path, o.dtype, o.shape, Order::C, o.offset, extent)?;
    meta.chunk_rows = chunk_rows.filter(|&r| r > 0);
    meta.scratch_per_thread = scratch;
    Ok(Source {
        meta,
        format: Format::Hdf5,
        dataset: Some(o.name),
        storage: o.storage,
        file,
    })
}

#[cfg(not(feature = "hdf5"))]
fn open_hdf5(path: &Path, _file: File, _len: u64, _dataset: Option<&str>) -> Result<Source> {
    Err(Error::format(
        path,
        "is an HDF5 file, but this colstats was built without HDF5 support",
    ))
}

/// Recognises a file's format by its signature, without parsing it.
pub fn sniff(path: &Path) -> Result<Format> {
    recognise(path).map(|(_, _, format)| format)
}

/// Opens a regular file and recognises its format: the open file, its length, the format.
fn recognise(path: &Path) -> Result<(File, u64, Format)> {
    use std::os::unix::fs::FileExt;
    // Look before opening: opening a FIFO with no writer would block forever.
    let md = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if md.is_dir() {
        return Err(Error::new(ErrorKind::Io, Some(path), "is a directory"));
    }
    if !md.is_file() {
        return Err(Error::new(
            ErrorKind::Io,
            Some(path),
            "not a regular file (colstats memory-maps its input)",
        ));
    }
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; 8];
    let n = file.read_at(&mut head, 0).map_err(|e| Error::io(path, e))?;
    let format = if head[..n].starts_with(npy::MAGIC) {
        Format::Npy
    } else if &head[..n] == HDF5_MAGIC || is_hdf5_after_userblock(&file, len) {
        Format::Hdf5
    } else if let Some(kind) = netcdf3_kind(&head[..n]) {
        return Err(Error::format(
            path,
            format!(
                "a netCDF-3 file ({kind}), not HDF5: colstats reads netCDF-4 files; convert it \
                 with `nccopy -k netCDF-4 IN OUT`"
            ),
        ));
    } else if len == 0 {
        return Err(Error::format(path, "empty file"));
    } else {
        return Err(Error::format(
            path,
            "not a .npy or HDF5 file (unrecognised signature)",
        ));
    };
    Ok((file, len, format))
}

/// The netCDF-3 variant a file's signature names ("CDF" and a version byte), if any.
fn netcdf3_kind(head: &[u8]) -> Option<&'static str> {
    match head.get(..4)? {
        b"CDF\x01" => Some("classic format"),
        b"CDF\x02" => Some("64-bit offset format"),
        b"CDF\x05" => Some("64-bit data format, CDF-5"),
        _ => None,
    }
}

/// The number of bytes the `.npy` header claims (preamble included), or 0 if unknown.
fn header_extent(head: &[u8]) -> usize {
    match head.get(6..8) {
        Some([1, _]) if head.len() >= 10 => 10 + u16::from_le_bytes([head[8], head[9]]) as usize,
        Some([2 | 3, _]) if head.len() >= 12 => {
            let n = u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize;
            12 + n.min(1 << 21)
        }
        _ => 0,
    }
}

fn is_hdf5_after_userblock(file: &File, len: u64) -> bool {
    use std::os::unix::fs::FileExt;
    let mut off = 512u64;
    let mut sig = [0u8; 8];
    while off + 8 <= len && off <= (1 << 40) {
        if file.read_exact_at(&mut sig, off).is_err() {
            return false;
        }
        if &sig == HDF5_MAGIC {
            return true;
        }
        off *= 2;
    }
    false
}

impl ArrayMeta {
    /// In Fortran order, the column held by the `run`-th contiguous run (inverse of
    /// [`ArrayMeta::run_of_column`]).
    pub fn column_of_run(&self, run: u64) -> u64 {
        let dims = &self.shape[1..];
        let mut digits = vec![0u64; dims.len()];
        let mut rem = run;
        for (k, &d) in dims.iter().enumerate() {
            digits[k] = rem % d.max(1);
            rem /= d.max(1);
        }
        let mut col = 0u64;
        for (k, &d) in dims.iter().enumerate() {
            col = col * d + digits[k];
        }
        col
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fortran_runs_for_3d() {
        let dt = DType::new(Kind::Float, 8, ByteOrder::Little).unwrap();
        let m = ArrayMeta::new(Path::new("x"), dt, vec![2, 3, 4], Order::F, 0, 2 * 12 * 8).unwrap();
        // column c = j*4 + k lives in run j + 3*k.
        assert_eq!(m.run_of_column(0), 0);
        assert_eq!(m.run_of_column(1), 3);
        assert_eq!(m.run_of_column(4), 1);
        assert_eq!(m.run_of_column(11), 2 + 3 * 3);
    }
}
