//! HDF5 metadata: datasets, types, layouts, chunk addresses, filters and fill values.
//!
//! colstats asks libhdf5 (through the `hdf5` bindings, crate `hdf5-metno`) for metadata only
//! and reads element bytes itself: contiguous datasets are memory-mapped at their offset like
//! `.npy` data, and chunks are fetched raw and decoded on worker threads, because every call
//! into libhdf5 holds one global lock. What colstats does not decode (other filters, compact,
//! virtual and external storage, never-written contiguous data) is read through HDF5's own
//! hyperslab reads, under that lock.
//!
//! The bindings' convenience calls swallow errors (a failed property-list read reports a
//! contiguous layout, a filter list it cannot parse comes back empty), so layouts, filters
//! and types are read here with the raw calls and every failure is an error.

use std::ffi::{c_char, c_uint, c_void, CStr};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use hdf5_sys::h5::{haddr_t, hsize_t, HADDR_UNDEF};
use hdf5_sys::h5d::{self, H5D_layout_t};
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p;
use hdf5_sys::h5s;
use hdf5_sys::h5t::{self, H5T_class_t, H5T_order_t, H5T_sign_t};
use hdf5_sys::h5z;

pub use super::datasets::{DatasetInfo, Filter, Layout};
use super::dtype::{ByteOrder, DType, Kind};
use super::Storage;
use crate::error::{Error, Result};

mod chunks;
mod links;
mod meta;

pub use super::chunked::{decode_chunk, fletcher32, ChunkScratch};
use super::chunked::{Codec, Fetched, Grid};
use chunks::*;
pub use chunks::{read_chunk_rows, read_rows, table_max, ChunkIndex, ChunkLoc, Chunked};
use links::*;
use meta::*;

/// Filters colstats decodes itself.
pub const FILTER_DEFLATE: i32 = 1;

/// Byte shuffle.
pub const FILTER_SHUFFLE: i32 = 2;

/// Fletcher-32 checksum.
pub const FILTER_FLETCHER32: i32 = 3;

fn filter_name(id: i32, reported: &str) -> String {
    let known = match id {
        1 => "deflate",
        2 => "shuffle",
        3 => "fletcher32",
        4 => "szip",
        5 => "nbit",
        6 => "scaleoffset",
        307 => "bzip2",
        32000 => "lzf",
        32001 => "blosc",
        32004 => "lz4",
        32008 => "bitshuffle",
        32013 => "zfp",
        32015 => "zstd",
        _ => "",
    };
    if !known.is_empty() {
        known.to_string()
    } else if !reported.is_empty() {
        reported.to_string()
    } else {
        format!("filter {id}")
    }
}

/// A dataset read through libhdf5's own hyperslab reads.
pub struct Hdf5Read {
    /// The open dataset (kept open for the run).
    pub dataset: hdf5::Dataset,
    /// Chunk rows, when chunked, so reads align to chunks.
    pub chunk_rows: Option<u64>,
    /// Why colstats does not read the bytes itself (for `info`).
    pub why: String,
    /// Read into this full-precision type (n-bit integers) rather than the file's type.
    pub convert_to: Option<DType>,
}

impl std::fmt::Debug for Hdf5Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hdf5Read")
            .field("dataset", &self.dataset.name())
            .field("chunk_rows", &self.chunk_rows)
            .field("why", &self.why)
            .finish()
    }
}

/// Runs `f` holding the bindings' global lock (libhdf5 is not thread-safe).
fn locked<T>(f: impl FnOnce() -> T) -> T {
    hdf5::sync::sync(f)
}

/// A property list, datatype or dataspace id closed on drop.
struct Id(hid_t, unsafe extern "C" fn(hid_t) -> hdf5_sys::h5::herr_t);

impl Drop for Id {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: the id was returned open by libhdf5 and is closed once.
            unsafe {
                (self.1)(self.0);
            }
        }
    }
}

fn h5err(path: &Path, what: &str) -> Error {
    let detail = hdf5::Error::query()
        .map(|e| e.to_string())
        .unwrap_or_default();
    if detail.is_empty() {
        Error::format(path, what.to_string())
    } else {
        Error::format(path, format!("{what}: {detail}"))
    }
}

fn open_file(path: &Path) -> Result<hdf5::File> {
    // Read-only access needs no lock; taking one fails while a writer holds the file. Files
    // behind external links stay open while this one is (the external file cache), so each
    // keeps one identity (`fileno`) however many links lead into it.
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false).elink_file_cache_size(64))
        .open(path)
        .map_err(|e| Error::format(path, format!("cannot open as HDF5: {e}")))
}

fn cstring(path: &Path, s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s)
        .map_err(|_| Error::request(path, format!("dataset path {s:?} holds a NUL byte")))
}

/// Opens dataset `name`, resolving the names of external raw-data files (`H5Pset_external`)
/// against the HDF5 file's directory, as the file's writer meant them (libhdf5 alone would
/// use the reader's working directory; `HDF5_EXTFILE_PREFIX` still takes precedence). A "bad
/// version number" comes from a file written in a format newer than the linked library
/// reads (h5py with HDF5 2.0 and `libver='latest'` writes filtered chunked datasets so): the
/// message says so and how to rewrite the file.
fn open_dataset(path: &Path, file: &hdf5::File, name: &str) -> Result<hdf5::Dataset> {
    open_dataset_with(path, file, name, true)
}

/// [`open_dataset`], with external raw-data names resolved against the HDF5 file's directory
/// (`origin`) or, as libhdf5 does by default, against the working directory.
fn open_dataset_with(
    path: &Path,
    file: &hdf5::File,
    name: &str,
    origin: bool,
) -> Result<hdf5::Dataset> {
    let cname = cstring(path, name)?;
    let (id, e) = locked(|| {
        // SAFETY: plain calls on open ids; the access list is closed by `Id`, after the
        // error stack is read (closing it would clear the stack).
        unsafe {
            let dapl = Id(
                h5p::H5Pcreate(*hdf5::globals::H5P_DATASET_ACCESS),
                h5p::H5Pclose,
            );
            if dapl.0 >= 0 && origin {
                h5p::H5Pset_efile_prefix(dapl.0, c"${ORIGIN}".as_ptr());
            }
            let id = h5d::H5Dopen2(file.id(), cname.as_ptr(), dapl.0.max(h5p::H5P_DEFAULT));
            let e = if id < 0 {
                hdf5::Error::query()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            (id, e)
        }
    });
    if id < 0 {
        let mut msg = format!("cannot open dataset {name}: {e}");
        if msg.contains("bad version number") {
            let (a, b, c) = hdf5::library_version();
            msg.push_str(&format!(
                " (the file uses a newer HDF5 format than this build's HDF5 {a}.{b}.{c} reads; \
                 write it without h5py's libver='latest')"
            ));
        }
        return Err(Error::format(path, msg));
    }
    // SAFETY: `id` is a dataset id just opened, owned by the returned handle.
    unsafe { hdf5::from_id::<hdf5::Dataset>(id) }
        .map_err(|e| Error::format(path, format!("cannot open dataset {name}: {e}")))
}

/// Every dataset in the file, each once, with its metadata and the other links to it.
pub fn list(path: &Path) -> Result<Vec<DatasetInfo>> {
    let file = open_file(path)?;
    let named = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for found in walk(&file) {
        let ds = open_dataset(path, &file, &found.path)?;
        let raw = inspect(path, &ds)?;
        let h = holder(path, &ds, &named)?;
        let itemsize = raw.dtype.as_ref().map(|d| d.size as u64).unwrap_or(0);
        out.push(DatasetInfo {
            path: found.path,
            logical_bytes: raw.shape.iter().product::<u64>() * itemsize,
            shape: raw.shape,
            dtype: raw.dtype,
            layout: raw.layout,
            chunk: raw.chunk,
            filters: raw.filters,
            stored_bytes: raw.stored,
            links: found.links,
            holder: (!h.same).then_some(h.name),
        });
    }
    Ok(out)
}

/// The opened dataset: shape, type, storage, and its name.
pub struct Opened {
    /// Dataset path.
    pub name: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Offset of contiguous data (for `Storage::Mapped`).
    pub offset: u64,
    /// How to read it.
    pub storage: Storage,
    /// The file holding the bytes, when it is not the file named (external links).
    pub holder: Option<(File, String)>,
}

/// Resolves `--dataset NAME` (or the only dataset) to a dataset path of the file.
fn choose(path: &Path, h5: &hdf5::File, name: Option<&str>) -> Result<String> {
    let Some(n) = name else {
        let mut all = walk(h5);
        return match all.len() {
            0 => Err(Error::request(path, "the file holds no datasets")),
            1 => Ok(all.pop().expect("one").path),
            n => Err(Error::request(
                path,
                format!(
                    "the file holds {n} datasets; choose one with {}: {}",
                    crate::error::opt::DATASET,
                    list_names(&all.into_iter().map(|f| f.path).collect::<Vec<_>>())
                ),
            )),
        };
    };
    let n = if n.starts_with('/') {
        n.to_string()
    } else {
        format!("/{n}")
    };
    match h5.loc_type_by_name(&n) {
        Ok(hdf5::LocationType::Dataset) => Ok(n),
        Ok(hdf5::LocationType::Group) => Err(Error::request(
            path,
            format!("{n} is a group, not a dataset"),
        )),
        Ok(_) => Err(Error::request(path, format!("{n} is not a dataset"))),
        Err(e) => {
            // An external link on the path (the dataset itself or a group above it) whose
            // target cannot be opened: name the target.
            let mut prefix = String::new();
            for part in n.split('/').filter(|p| !p.is_empty()) {
                prefix.push('/');
                prefix.push_str(part);
                if h5.loc_type_by_name(&prefix).is_ok() {
                    continue;
                }
                if let Some((f, o)) = external_target(h5, &prefix) {
                    return Err(Error::format(
                        path,
                        format!(
                            "{prefix} is an external link to {f}:{o}, which cannot be opened: {e}"
                        ),
                    ));
                }
                break;
            }
            let all: Vec<String> = walk(h5).into_iter().map(|f| f.path).collect();
            Err(Error::request(
                path,
                format!("no dataset {n} (datasets: {})", list_names(&all)),
            ))
        }
    }
}

// Long (about 170 lines): one arm per storage layout, each deciding how the bytes are read
// and what is checked first (the README's table, in code); the arms share a dozen facts.
/// Opens dataset `name` (or the only dataset) of the HDF5 file at `path`.
pub fn open(path: &Path, file: &File, name: Option<&str>) -> Result<Opened> {
    let h5 = open_file(path)?;
    let name = choose(path, &h5, name)?;
    let ds = open_resolved(path, &h5, &name)?;
    let raw = inspect(path, &ds)?;
    if raw.shape.is_empty() {
        return Err(Error::format(
            path,
            if ds.space().is_ok_and(|sp| sp.is_null()) {
                format!("dataset {name} has a null dataspace (no elements and no shape)")
            } else {
                format!("dataset {name} is a 0-d scalar: there is no axis 0 to reduce over")
            },
        ));
    }
    let dtype = raw.dtype.clone().map_err(|why| {
        Error::unsupported(
            path,
            format!("dataset {name} has an unsupported type: {why}"),
        )
    })?;
    let bytes = raw
        .shape
        .iter()
        .try_fold(dtype.size as u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::format(
                path,
                format!("dataset {name}: its shape {:?} is too large", raw.shape),
            )
        })?;
    // libhdf5 1.10 trusts a compact dataset's shape and reads past its stored bytes.
    if raw.layout == Layout::Compact && raw.stored != bytes {
        return Err(Error::format(
            path,
            format!(
                "dataset {name} is corrupt: its compact storage holds {} bytes but its shape \
                 needs {bytes}",
                raw.stored
            ),
        ));
    }
    let hold = holder(path, &ds, file)?;
    let holder_dir = Path::new(&hold.name)
        .parent()
        .unwrap_or(Path::new(""))
        .to_path_buf();
    if raw.layout == Layout::Virtual {
        check_virtual_sources(path, &ds, &name, &holder_dir)?;
    }
    // Where colstats reads bytes itself, it reads them from the file that holds them.
    let (data_file, file_len, userblock) = match &hold.file {
        Some(f) => (Some(f), hold.len, hold.userblock),
        None => (None, 0, 0),
    };
    let in_file = if hold.same {
        String::new()
    } else {
        format!(" (in {})", hold.name)
    };
    let via_hdf5 = |why: String, chunk_rows| {
        Storage::Hdf5(Hdf5Read {
            dataset: ds.clone(),
            chunk_rows,
            why,
            convert_to: raw.reduced.then_some(dtype),
        })
    };
    let mut offset = 0;
    let storage = match raw.layout {
        _ if raw.reduced => via_hdf5(
            "reduced-precision integers, widened by libhdf5".into(),
            raw.chunk.as_ref().and_then(|c| c.first().copied()),
        ),
        Layout::Contiguous if raw.external => via_hdf5("external storage".into(), None),
        // libhdf5 1.10 reports an unallocated contiguous dataset's offset as HADDR_UNDEF plus
        // the user block (wrapping to just below it): nothing stored means never written.
        Layout::Contiguous => match (
            raw.offset
                .filter(|&o| raw.stored > 0 && o >= hold.userblock),
            data_file,
        ) {
            (Some(off), Some(f)) if off.checked_add(bytes).is_some_and(|end| end <= file_len) => {
                verify_contiguous(path, &ds, &name, f, off, &raw.shape, dtype.size, &in_file)?;
                offset = off;
                Storage::Mapped
            }
            (Some(off), Some(_)) => {
                return Err(Error::size(path, format!(
                        "dataset {name}{in_file}: data at offset {off} ({bytes} bytes) runs past the end of the file ({file_len} bytes)"
                    )))
            }
            (Some(_), None) => via_hdf5("its file is read by a libhdf5 driver".into(), None),
            (None, _) => via_hdf5("never written (fill value)".into(), None),
        },
        Layout::Compact => via_hdf5("compact storage".into(), None),
        Layout::Virtual => via_hdf5("virtual dataset".into(), None),
        Layout::Chunked => {
            let chunk = raw.chunk.clone().expect("chunked has a chunk shape");
            let native = raw
                .filters
                .iter()
                .all(|f| matches!(f.id, FILTER_DEFLATE | FILTER_SHUFFLE | FILTER_FLETCHER32));
            if native && chunk.iter().all(|&c| c > 0) {
                let grid: Vec<u64> = raw
                    .shape
                    .iter()
                    .zip(&chunk)
                    .map(|(d, c)| d.div_ceil(*c))
                    .collect();
                let n = grid.iter().try_fold(1u64, |a, &g| a.checked_mul(g));
                let table = match (n, data_file) {
                    (Some(n), Some(f)) if n <= table_max() => chunk_table(
                        path,
                        &ds,
                        &grid,
                        &chunk,
                        (f, file_len, userblock),
                        &in_file,
                    )?,
                    _ => None,
                };
                let index = match (table, n) {
                    (Some(t), _) => ChunkIndex::Table(t),
                    (None, Some(n)) if n <= 1 << 40 => ChunkIndex::Library(ds.clone()),
                    _ => {
                        return Err(Error::format(
                            path,
                            format!("dataset {name}: its chunk grid {grid:?} is too large"),
                        ))
                    }
                };
                Storage::Chunked(Chunked {
                    grid,
                    chunk,
                    index,
                    filters: raw.filters.clone(),
                    codecs: raw
                        .filters
                        .iter()
                        .map(|f| match f.id {
                            FILTER_DEFLATE => Codec::Deflate,
                            FILTER_SHUFFLE => Codec::Shuffle,
                            _ => Codec::Fletcher32,
                        })
                        .collect(),
                    fill: raw.fill.clone(),
                })
            } else {
                for f in &raw.filters {
                    // SAFETY: a pure query of the filter registry.
                    let avail = locked(|| unsafe { h5z::H5Zfilter_avail(f.id) });
                    if avail <= 0 {
                        return Err(Error::format(
                            path,
                            format!(
                                "dataset {name} uses the {} filter (id {}), which neither colstats nor this HDF5 library can decode",
                                f.name, f.id
                            ),
                        ));
                    }
                }
                let names: Vec<&str> = raw.filters.iter().map(|f| f.name.as_str()).collect();
                via_hdf5(format!("filters {}", names.join("+")), chunk.first().copied())
            }
        }
    };
    let holder = match hold.file {
        Some(f) if !hold.same => Some((f, hold.name)),
        _ => None,
    };
    Ok(Opened {
        name,
        shape: raw.shape,
        dtype,
        offset,
        storage,
        holder,
    })
}

fn list_names(all: &[String]) -> String {
    const SHOW: usize = 20;
    let mut s = all
        .iter()
        .take(SHOW)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > SHOW {
        s.push_str(&format!(", ... ({} more)", all.len() - SHOW));
    }
    if s.is_empty() {
        s = "none".into();
    }
    s
}
