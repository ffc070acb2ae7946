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

use super::dtype::{ByteOrder, DType, Kind};
use super::Storage;
use crate::error::{Error, Result};

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
}

/// Where one chunk is stored.
#[derive(Clone, Copy, Debug)]
pub struct ChunkLoc {
    /// Absolute file offset, or `u64::MAX` for a chunk never written (fill value).
    pub addr: u64,
    /// Stored (filtered) size in bytes.
    pub size: u64,
    /// Bit i set: filter i was skipped for this chunk.
    pub mask: u32,
}

/// A chunked dataset colstats reads and decodes itself.
#[derive(Clone, Debug)]
pub struct Chunked {
    /// Chunk shape.
    pub chunk: Vec<u64>,
    /// Chunks along each dimension.
    pub grid: Vec<u64>,
    /// Every chunk's location, in C order over the grid.
    pub table: Vec<ChunkLoc>,
    /// The filter pipeline, in write order.
    pub filters: Vec<Filter>,
    /// The fill value's bytes (one element, file byte order).
    pub fill: Vec<u8>,
}

impl Chunked {
    /// Bytes of one decoded chunk.
    pub fn chunk_bytes(&self, itemsize: usize) -> usize {
        self.chunk.iter().product::<u64>() as usize * itemsize
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

/// Decodes an HDF5 datatype to a [`DType`], or says why it is not supported.
fn dtype_of(tid: hid_t) -> std::result::Result<DType, String> {
    // SAFETY: `tid` is an open datatype id; all calls only read from it.
    unsafe {
        let class = h5t::H5Tget_class(tid);
        let size = h5t::H5Tget_size(tid);
        let order = match h5t::H5Tget_order(tid) {
            H5T_order_t::H5T_ORDER_BE => ByteOrder::Big,
            _ => ByteOrder::Little,
        };
        match class {
            H5T_class_t::H5T_INTEGER => {
                let kind = if h5t::H5Tget_sign(tid) == H5T_sign_t::H5T_SGN_NONE {
                    Kind::UInt
                } else {
                    Kind::Int
                };
                // Reduced-precision integers (n-bit data) are widened by libhdf5 on read
                // (see `reduced_precision`); the dtype is the container's.
                DType::new(kind, size, order)
                    .ok_or_else(|| format!("{size}-byte integers are not supported"))
            }
            H5T_class_t::H5T_FLOAT => {
                let (mut spos, mut epos, mut esize, mut mpos, mut msize) = (0, 0, 0, 0, 0);
                h5t::H5Tget_fields(tid, &mut spos, &mut epos, &mut esize, &mut mpos, &mut msize);
                let ieee = matches!(
                    (size, spos, epos, esize, mpos, msize),
                    (2, 15, 10, 5, 0, 10) | (4, 31, 23, 8, 0, 23) | (8, 63, 52, 11, 0, 52)
                );
                if !ieee {
                    return Err(format!(
                        "{size}-byte float that is not IEEE half, single or double is not supported"
                    ));
                }
                DType::new(Kind::Float, size, order).ok_or_else(|| "unsupported float".into())
            }
            H5T_class_t::H5T_ENUM => {
                // h5py stores numpy bool as an int8 enum {FALSE: 0, TRUE: 1}.
                let base = Id(h5t::H5Tget_super(tid), h5t::H5Tclose);
                let n = h5t::H5Tget_nmembers(tid);
                if size == 1 && base.0 >= 0 && n == 2 {
                    let mut names = Vec::new();
                    for i in 0..2u32 {
                        let p = h5t::H5Tget_member_name(tid, i);
                        if p.is_null() {
                            break;
                        }
                        let mut v: i8 = -1;
                        h5t::H5Tget_member_value(tid, i, &mut v as *mut i8 as *mut c_void);
                        names.push((CStr::from_ptr(p).to_string_lossy().into_owned(), v));
                        hdf5_sys::h5::H5free_memory(p as *mut c_void);
                    }
                    names.sort_by_key(|x| x.1);
                    if names == [("FALSE".to_string(), 0), ("TRUE".to_string(), 1)] {
                        return DType::new(Kind::Bool, 1, ByteOrder::NATIVE)
                            .ok_or_else(|| "bool".into());
                    }
                }
                Err("enum types are not supported (only h5py's bool enum)".into())
            }
            H5T_class_t::H5T_STRING => Err("string types are not supported".into()),
            H5T_class_t::H5T_COMPOUND => Err("compound types are not supported".into()),
            H5T_class_t::H5T_REFERENCE => Err("reference types are not supported".into()),
            H5T_class_t::H5T_VLEN => Err("variable-length types are not supported".into()),
            H5T_class_t::H5T_ARRAY => Err("array types are not supported".into()),
            H5T_class_t::H5T_BITFIELD => Err("bitfield types are not supported".into()),
            H5T_class_t::H5T_OPAQUE => Err("opaque types are not supported".into()),
            _ => Err("this datatype class is not supported".into()),
        }
    }
}

/// True for an integer type whose value bits do not fill its bytes (n-bit data): its raw
/// bytes are not plain integers, so libhdf5 must convert them.
fn reduced_precision(tid: hid_t) -> bool {
    // SAFETY: queries of an open datatype id.
    unsafe {
        h5t::H5Tget_class(tid) == H5T_class_t::H5T_INTEGER
            && (h5t::H5Tget_precision(tid) != h5t::H5Tget_size(tid) * 8
                || h5t::H5Tget_offset(tid) != 0)
    }
}

/// A full-precision standard integer type matching `dt` (owned copy), for reads that need
/// libhdf5 to convert.
fn standard_int_type(dt: DType) -> hid_t {
    use hdf5_sys::h5t::*;
    let big = dt.order == ByteOrder::Big;
    let signed = dt.kind == Kind::Int;
    // SAFETY: the predefined type ids are valid once libhdf5 is open (the bindings open it).
    unsafe {
        let base = match (dt.size, signed, big) {
            (1, true, _) => *H5T_STD_I8LE,
            (1, false, _) => *H5T_STD_U8LE,
            (2, true, false) => *H5T_STD_I16LE,
            (2, true, true) => *H5T_STD_I16BE,
            (2, false, false) => *H5T_STD_U16LE,
            (2, false, true) => *H5T_STD_U16BE,
            (4, true, false) => *H5T_STD_I32LE,
            (4, true, true) => *H5T_STD_I32BE,
            (4, false, false) => *H5T_STD_U32LE,
            (4, false, true) => *H5T_STD_U32BE,
            (8, true, false) => *H5T_STD_I64LE,
            (8, true, true) => *H5T_STD_I64BE,
            (8, false, false) => *H5T_STD_U64LE,
            _ => *H5T_STD_U64BE,
        };
        H5Tcopy(base)
    }
}

/// Raw facts about one dataset, read under the lock.
struct Raw {
    shape: Vec<u64>,
    dtype: std::result::Result<DType, String>,
    layout: Layout,
    chunk: Option<Vec<u64>>,
    filters: Vec<Filter>,
    external: bool,
    offset: Option<u64>,
    stored: u64,
    fill: Vec<u8>,
    reduced: bool,
}

fn inspect(path: &Path, ds: &hdf5::Dataset) -> Result<Raw> {
    let id = ds.id();
    locked(|| {
        // SAFETY: `id` is an open dataset; ids created here are closed by `Id`.
        unsafe {
            let space = Id(h5d::H5Dget_space(id), h5s::H5Sclose);
            if space.0 < 0 {
                return Err(h5err(path, "cannot read the dataset's dataspace"));
            }
            let nd = h5s::H5Sget_simple_extent_ndims(space.0);
            if nd < 0 {
                return Err(h5err(path, "cannot read the dataset's rank"));
            }
            let mut dims = vec![0 as hsize_t; nd as usize];
            if nd > 0
                && h5s::H5Sget_simple_extent_dims(space.0, dims.as_mut_ptr(), std::ptr::null_mut())
                    < 0
            {
                return Err(h5err(path, "cannot read the dataset's shape"));
            }
            let tid = Id(h5d::H5Dget_type(id), h5t::H5Tclose);
            if tid.0 < 0 {
                return Err(h5err(path, "cannot read the dataset's type"));
            }
            let dtype = dtype_of(tid.0);
            let reduced = reduced_precision(tid.0);
            let dcpl = Id(h5d::H5Dget_create_plist(id), h5p::H5Pclose);
            if dcpl.0 < 0 {
                return Err(h5err(path, "cannot read the dataset's creation properties"));
            }
            let layout = match h5p::H5Pget_layout(dcpl.0) {
                H5D_layout_t::H5D_COMPACT => Layout::Compact,
                H5D_layout_t::H5D_CONTIGUOUS => Layout::Contiguous,
                H5D_layout_t::H5D_CHUNKED => Layout::Chunked,
                H5D_layout_t::H5D_VIRTUAL => Layout::Virtual,
                _ => return Err(h5err(path, "cannot read the dataset's layout")),
            };
            let chunk = if layout == Layout::Chunked {
                let mut c = vec![0 as hsize_t; nd.max(1) as usize];
                if h5p::H5Pget_chunk(dcpl.0, nd.max(1), c.as_mut_ptr()) < 0 {
                    return Err(h5err(path, "cannot read the chunk shape"));
                }
                c.truncate(nd as usize);
                Some(c)
            } else {
                None
            };
            let nf = h5p::H5Pget_nfilters(dcpl.0);
            if nf < 0 {
                return Err(h5err(path, "cannot read the filter pipeline"));
            }
            let mut filters = Vec::new();
            for i in 0..nf as c_uint {
                let mut flags: c_uint = 0;
                let mut nparams: usize = 32;
                let mut params = [0 as c_uint; 32];
                let mut name = [0 as c_char; 128];
                let mut config: c_uint = 0;
                let fid = h5p::H5Pget_filter2(
                    dcpl.0,
                    i,
                    &mut flags,
                    &mut nparams,
                    params.as_mut_ptr(),
                    name.len(),
                    name.as_mut_ptr(),
                    &mut config,
                );
                if fid < 0 {
                    return Err(h5err(path, "cannot read the filter pipeline"));
                }
                let reported = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
                filters.push(Filter {
                    id: fid,
                    name: filter_name(fid, &reported),
                    params: params[..nparams.min(32)].to_vec(),
                });
            }
            let external = h5p::H5Pget_external_count(dcpl.0) > 0;
            let off: haddr_t = h5d::H5Dget_offset(id);
            let offset = (off != HADDR_UNDEF).then_some(off);
            let stored = h5d::H5Dget_storage_size(id);
            let mut fill = Vec::new();
            if let Ok(dt) = &dtype {
                let mut status = h5d::H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED;
                fill = vec![0u8; dt.size];
                if h5p::H5Pfill_value_defined(dcpl.0, &mut status) >= 0
                    && status != h5d::H5D_fill_value_t::H5D_FILL_VALUE_UNDEFINED
                    && h5p::H5Pget_fill_value(dcpl.0, tid.0, fill.as_mut_ptr() as *mut c_void) < 0
                {
                    return Err(h5err(path, "cannot read the fill value"));
                }
            }
            Ok(Raw {
                shape: dims,
                dtype,
                layout,
                chunk,
                filters,
                external,
                offset,
                stored,
                fill,
                reduced,
            })
        }
    })
}

fn open_file(path: &Path) -> Result<hdf5::File> {
    // Read-only access needs no lock; taking one fails while a writer holds the file.
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
        .map_err(|e| Error::format(path, format!("cannot open as HDF5: {e}")))
}

/// Opens dataset `name`. A "bad version number" comes from a file written in a format
/// newer than the linked library reads (h5py with HDF5 2.0 and `libver='latest'` writes
/// filtered chunked datasets so): the message says so and how to rewrite the file.
fn open_dataset(path: &Path, file: &hdf5::File, name: &str) -> Result<hdf5::Dataset> {
    file.dataset(name).map_err(|e| {
        let mut msg = format!("cannot open dataset {name}: {e}");
        if msg.contains("bad version number") {
            let (a, b, c) = hdf5::library_version();
            msg.push_str(&format!(
                " (the file uses a newer HDF5 format than this build's HDF5 {a}.{b}.{c} reads; \
                 write it without h5py's libver='latest')"
            ));
        }
        Error::format(path, msg)
    })
}

/// Every dataset in the file, depth first, with its metadata.
pub fn list(path: &Path) -> Result<Vec<DatasetInfo>> {
    let file = open_file(path)?;
    let mut names = Vec::new();
    walk(&file, "", 0, &mut names);
    let mut out = Vec::new();
    for name in names {
        let ds = open_dataset(path, &file, &name)?;
        let raw = inspect(path, &ds)?;
        let itemsize = raw.dtype.as_ref().map(|d| d.size as u64).unwrap_or(0);
        out.push(DatasetInfo {
            path: name,
            logical_bytes: raw.shape.iter().product::<u64>() * itemsize,
            shape: raw.shape,
            dtype: raw.dtype,
            layout: raw.layout,
            chunk: raw.chunk,
            filters: raw.filters,
            stored_bytes: raw.stored,
        });
    }
    Ok(out)
}

fn walk(g: &hdf5::Group, prefix: &str, depth: usize, out: &mut Vec<String>) {
    if depth > 64 {
        return;
    }
    let Ok(members) = g.member_names() else {
        return;
    };
    for m in members {
        let full = format!("{prefix}/{m}");
        match g.loc_type_by_name(&m) {
            Ok(hdf5::LocationType::Dataset) => out.push(full),
            Ok(hdf5::LocationType::Group) => {
                if let Ok(sub) = g.group(&m) {
                    walk(&sub, &full, depth + 1, out);
                }
            }
            _ => {}
        }
    }
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
}

/// Opens dataset `name` (or the only dataset) of the HDF5 file at `path`.
pub fn open(path: &Path, file: &File, name: Option<&str>) -> Result<Opened> {
    let h5 = open_file(path)?;
    let name = match name {
        Some(n) => {
            let n = if n.starts_with('/') {
                n.to_string()
            } else {
                format!("/{n}")
            };
            match h5.loc_type_by_name(&n) {
                Ok(hdf5::LocationType::Dataset) => n,
                Ok(hdf5::LocationType::Group) => {
                    return Err(Error::request(
                        path,
                        format!("{n} is a group, not a dataset"),
                    ))
                }
                Ok(_) => return Err(Error::request(path, format!("{n} is not a dataset"))),
                Err(_) => {
                    let mut all = Vec::new();
                    walk(&h5, "", 0, &mut all);
                    return Err(Error::request(
                        path,
                        format!("no dataset {n} (datasets: {})", list_names(&all)),
                    ));
                }
            }
        }
        None => {
            let mut all = Vec::new();
            walk(&h5, "", 0, &mut all);
            match all.len() {
                0 => return Err(Error::request(path, "the file holds no datasets")),
                1 => all.pop().expect("one"),
                n => {
                    return Err(Error::request(
                        path,
                        format!(
                            "the file holds {n} datasets; choose one with --dataset: {}",
                            list_names(&all)
                        ),
                    ))
                }
            }
        }
    };
    let ds = open_dataset(path, &h5, &name)?;
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
        Error::format(
            path,
            format!("dataset {name} has an unsupported type: {why}"),
        )
    })?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
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
        Layout::Contiguous => match raw.offset {
            Some(off) if off.checked_add(bytes).is_some_and(|end| end <= file_len) => {
                offset = off;
                Storage::Mapped
            }
            Some(off) => {
                return Err(Error::Size {
                    path: path.to_path_buf(),
                    msg: format!(
                        "dataset {name}: data at offset {off} ({bytes} bytes) runs past the end of the file ({file_len} bytes)"
                    ),
                })
            }
            None => via_hdf5("never written (fill value)".into(), None),
        },
        Layout::Compact => via_hdf5("compact storage".into(), None),
        Layout::Virtual => via_hdf5("virtual dataset".into(), None),
        Layout::Chunked => {
            let chunk = raw.chunk.clone().expect("chunked has a chunk shape");
            let native = raw
                .filters
                .iter()
                .all(|f| matches!(f.id, FILTER_DEFLATE | FILTER_SHUFFLE | FILTER_FLETCHER32));
            if native && !raw.shape.is_empty() {
                let table = chunk_table(path, &ds, &raw.shape, &chunk, file, h5.userblock())?;
                Storage::Chunked(Chunked {
                    grid: raw
                        .shape
                        .iter()
                        .zip(&chunk)
                        .map(|(d, c)| d.div_ceil((*c).max(1)))
                        .collect(),
                    chunk,
                    table,
                    filters: raw.filters.clone(),
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
    Ok(Opened {
        name,
        shape: raw.shape,
        dtype,
        offset,
        storage,
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

/// Every chunk's address and size, walking the regular chunk grid by coordinate (listing by
/// index is quadratic in libhdf5 1.10).
fn chunk_table(
    path: &Path,
    ds: &hdf5::Dataset,
    shape: &[u64],
    chunk: &[u64],
    file: &File,
    userblock: u64,
) -> Result<Vec<ChunkLoc>> {
    let grid: Vec<u64> = shape
        .iter()
        .zip(chunk)
        .map(|(d, c)| d.div_ceil((*c).max(1)))
        .collect();
    let n: u64 = grid.iter().product();
    if n > (1 << 28) {
        return Err(Error::format(
            path,
            format!("{n} chunks is more than colstats handles"),
        ));
    }
    let id = ds.id();
    let mut table = Vec::with_capacity(n as usize);
    locked(|| -> Result<()> {
        let mut coord = vec![0u64; grid.len()];
        for _ in 0..n {
            let offs: Vec<hsize_t> = coord.iter().zip(chunk).map(|(g, c)| g * c).collect();
            let (mut mask, mut addr, mut size): (c_uint, haddr_t, hsize_t) = (0, 0, 0);
            // SAFETY: `offs` has one entry per dimension; outputs are plain integers.
            let rc = unsafe {
                h5d::H5Dget_chunk_info_by_coord(id, offs.as_ptr(), &mut mask, &mut addr, &mut size)
            };
            if rc < 0 {
                return Err(h5err(path, &format!("cannot locate the chunk at {offs:?}")));
            }
            table.push(ChunkLoc {
                addr: if addr == HADDR_UNDEF { u64::MAX } else { addr },
                size,
                mask,
            });
            for k in (0..coord.len()).rev() {
                coord[k] += 1;
                if coord[k] < grid[k] {
                    break;
                }
                coord[k] = 0;
            }
        }
        Ok(())
    })?;
    // libhdf5 before 1.14.2 reports chunk addresses without the user block (HDF5 issue
    // #3003): find out which base is right by comparing with a direct chunk read.
    if let Some((i, first)) = table.iter().enumerate().find(|(_, c)| c.addr != u64::MAX) {
        let mut coord = vec![0u64; grid.len()];
        let mut rem = i as u64;
        for k in (0..grid.len()).rev() {
            coord[k] = rem % grid[k];
            rem /= grid[k];
        }
        let offs: Vec<hsize_t> = coord.iter().zip(chunk).map(|(g, c)| g * c).collect();
        let mut direct = vec![0u8; first.size as usize];
        let mut filters: u32 = 0;
        // SAFETY: `direct` holds exactly the chunk's stored size.
        let rc = locked(|| unsafe {
            h5d::H5Dread_chunk(
                id,
                h5p::H5P_DEFAULT,
                offs.as_ptr(),
                &mut filters,
                direct.as_mut_ptr() as *mut c_void,
            )
        });
        if rc < 0 {
            return Err(h5err(path, "cannot read the first chunk"));
        }
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let matches = |base: u64| {
            let at = first.addr + base;
            if at + first.size > file_len {
                return false;
            }
            let mut buf = vec![0u8; first.size as usize];
            file.read_exact_at(&mut buf, at).is_ok() && buf == direct
        };
        let base = if matches(0) {
            0
        } else if userblock > 0 && matches(userblock) {
            userblock
        } else {
            return Err(Error::format(
                path,
                "chunk addresses reported by libhdf5 do not match the chunk data",
            ));
        };
        for c in table.iter_mut().filter(|c| c.addr != u64::MAX) {
            c.addr += base;
            if c.addr.checked_add(c.size).is_none_or(|e| e > file_len) {
                return Err(Error::Size {
                    path: path.to_path_buf(),
                    msg: format!("a chunk at offset {} runs past the end of the file", c.addr),
                });
            }
        }
    }
    Ok(table)
}

/// Reads rows `r0..r1` (all columns) as raw file-order bytes through libhdf5.
pub fn read_rows(
    path: &Path,
    r: &Hdf5Read,
    shape: &[u64],
    r0: u64,
    r1: u64,
    out: &mut [u8],
) -> Result<()> {
    let id = r.dataset.id();
    locked(|| {
        // SAFETY: selections match `out`, which holds (r1-r0) × the row size in bytes; the
        // memory type is the file type, so libhdf5 copies bytes without conversion.
        unsafe {
            let tid = match r.convert_to {
                Some(dt) => Id(standard_int_type(dt), h5t::H5Tclose),
                None => Id(h5d::H5Dget_type(id), h5t::H5Tclose),
            };
            let fspace = Id(h5d::H5Dget_space(id), h5s::H5Sclose);
            if tid.0 < 0 || fspace.0 < 0 {
                return Err(h5err(path, "cannot read the dataset"));
            }
            let mut start = vec![0 as hsize_t; shape.len()];
            let mut count: Vec<hsize_t> = shape.to_vec();
            start[0] = r0;
            count[0] = r1 - r0;
            let sel = h5s::H5Sselect_hyperslab(
                fspace.0,
                h5s::H5S_seloper_t::H5S_SELECT_SET,
                start.as_ptr(),
                std::ptr::null(),
                count.as_ptr(),
                std::ptr::null(),
            );
            let mspace = Id(
                h5s::H5Screate_simple(count.len() as i32, count.as_ptr(), std::ptr::null()),
                h5s::H5Sclose,
            );
            if sel < 0 || mspace.0 < 0 {
                return Err(h5err(path, "cannot select rows"));
            }
            let rc = h5d::H5Dread(
                id,
                tid.0,
                mspace.0,
                fspace.0,
                h5p::H5P_DEFAULT,
                out.as_mut_ptr() as *mut c_void,
            );
            if rc < 0 {
                return Err(h5err(
                    path,
                    &format!("libhdf5 failed to read rows {r0}..{r1}"),
                ));
            }
            Ok(())
        }
    })
}

/// HDF5's Fletcher-32 over `data` (H5_checksum_fletcher32).
pub fn fletcher32(data: &[u8]) -> u32 {
    let (mut s1, mut s2) = (0u32, 0u32);
    let words = data.len() / 2;
    let mut i = 0;
    let mut left = words;
    while left > 0 {
        let t = left.min(360);
        left -= t;
        for _ in 0..t {
            s1 = s1.wrapping_add(((data[i] as u32) << 8) | data[i + 1] as u32);
            s2 = s2.wrapping_add(s1);
            i += 2;
        }
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    if data.len() % 2 == 1 {
        s1 = s1.wrapping_add((data[i] as u32) << 8);
        s2 = s2.wrapping_add(s1);
        s1 = (s1 & 0xffff) + (s1 >> 16);
        s2 = (s2 & 0xffff) + (s2 >> 16);
    }
    s1 = (s1 & 0xffff) + (s1 >> 16);
    s2 = (s2 & 0xffff) + (s2 >> 16);
    (s2 << 16) | s1
}

/// Byte un-shuffle for `S`-byte elements: `src` holds every element's byte 0, then every
/// byte 1, ...; writes whole elements in order (sequential stores, `S` sequential streams).
#[inline(never)]
fn unshuffle<const S: usize>(src: &[u8], dst: &mut [u8], n: usize) {
    let streams: [&[u8]; S] = std::array::from_fn(|b| &src[b * n..(b + 1) * n]);
    for (j, el) in dst[..n * S].chunks_exact_mut(S).enumerate() {
        for b in 0..S {
            el[b] = streams[b][j];
        }
    }
}

/// Undoes the filter pipeline on one stored chunk; `out` receives `expect` bytes.
/// `inflater` keeps the inflate state between chunks.
#[allow(clippy::too_many_arguments)]
pub fn decode_chunk(
    filters: &[Filter],
    mask: u32,
    itemsize: usize,
    raw: &[u8],
    expect: usize,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
    inflater: &mut Option<libdeflater::Decompressor>,
) -> std::result::Result<(), String> {
    out.clear();
    out.extend_from_slice(raw);
    for (i, f) in filters.iter().enumerate().rev() {
        if mask & (1 << i) != 0 {
            continue;
        }
        match f.id {
            FILTER_FLETCHER32 => {
                if out.len() < 4 {
                    return Err("fletcher32: chunk shorter than its checksum".into());
                }
                let n = out.len() - 4;
                let stored = u32::from_le_bytes(out[n..].try_into().expect("4 bytes"));
                let sum = fletcher32(&out[..n]);
                // Old libhdf5 wrote the checksum byte-swapped; it accepts both, as we do.
                if stored != sum && stored != sum.swap_bytes() {
                    return Err(format!(
                        "fletcher32 checksum mismatch (stored {stored:#010x}, computed {sum:#010x})"
                    ));
                }
                out.truncate(n);
            }
            FILTER_DEFLATE => {
                scratch.clear();
                scratch.resize(expect, 0);
                let d = inflater.get_or_insert_with(libdeflater::Decompressor::new);
                let n = d
                    .zlib_decompress(out, scratch)
                    .map_err(|e| format!("deflate: {e}"))?;
                if n != expect {
                    return Err(format!("deflate: {n} bytes decoded, {expect} expected"));
                }
                std::mem::swap(out, scratch);
            }
            FILTER_SHUFFLE => {
                let s = itemsize.max(1);
                if s > 1 {
                    let n = out.len() / s;
                    scratch.clear();
                    scratch.resize(out.len(), 0);
                    match s {
                        2 => unshuffle::<2>(out, scratch, n),
                        4 => unshuffle::<4>(out, scratch, n),
                        8 => unshuffle::<8>(out, scratch, n),
                        _ => {
                            for b in 0..s {
                                for j in 0..n {
                                    scratch[j * s + b] = out[b * n + j];
                                }
                            }
                        }
                    }
                    let tail = n * s;
                    scratch[tail..].copy_from_slice(&out[tail..]);
                    std::mem::swap(out, scratch);
                }
            }
            other => return Err(format!("filter {other} cannot be decoded here")),
        }
    }
    if out.len() != expect {
        return Err(format!(
            "{} bytes after decoding, {expect} expected",
            out.len()
        ));
    }
    Ok(())
}

/// Per-worker buffers for chunk decoding, reused across chunks.
#[derive(Default)]
pub struct ChunkScratch {
    raw: Vec<u8>,
    tmp: Vec<u8>,
    out: Vec<u8>,
    inflater: Option<libdeflater::Decompressor>,
}

/// Fills `out` with rows `r0..r1` (all columns, C order, file byte order) of a chunked
/// dataset, fetching and decoding the chunks that hold them. Never-written chunks take the
/// fill value; edge chunks are cropped.
#[allow(clippy::too_many_arguments)]
pub fn read_chunk_rows(
    path: &Path,
    name: &str,
    file: &File,
    ch: &Chunked,
    shape: &[u64],
    itemsize: usize,
    (r0, r1): (u64, u64),
    sc: &mut ChunkScratch,
    out: &mut [u8],
) -> Result<()> {
    let nd = shape.len();
    let c = &ch.chunk;
    let row_elems: u64 = shape[1..].iter().product();
    let chunk_elems: usize = c.iter().product::<u64>() as usize;
    let expect = chunk_elems * itemsize;
    debug_assert_eq!(out.len() as u64, (r1 - r0) * row_elems * itemsize as u64);
    // C-order strides of the trailing dims in the output row, and of the chunk.
    let mut dst_stride = vec![1u64; nd];
    let mut src_stride = vec![1u64; nd];
    for k in (0..nd.saturating_sub(1)).rev() {
        dst_stride[k] = dst_stride[k + 1] * shape[k + 1];
        src_stride[k] = src_stride[k + 1] * c[k + 1];
    }
    // Chunks that span every trailing dimension hold whole rows, laid out as in `out`.
    let full_rows = (1..nd).all(|k| c[k] == shape[k]);
    let b0 = r0 / c[0];
    let b1 = r1.div_ceil(c[0]);
    let others: u64 = ch.grid[1..].iter().product();
    for band in b0..b1 {
        for o in 0..others {
            // Grid coordinates of this chunk (dims 1..) from `o`, C order.
            let mut g = vec![0u64; nd];
            g[0] = band;
            let mut rem = o;
            for k in (1..nd).rev() {
                g[k] = rem % ch.grid[k];
                rem /= ch.grid[k];
            }
            let idx = band * others + o;
            let loc = ch.table[idx as usize];
            let origin: Vec<u64> = g.iter().zip(c).map(|(a, b)| a * b).collect();
            let unfiltered = ch
                .filters
                .iter()
                .enumerate()
                .all(|(i, _)| loc.mask & (1 << i) != 0);
            if loc.addr != u64::MAX && unfiltered && full_rows {
                // Plain chunks spanning whole rows: read the needed rows straight into place.
                if loc.size as usize != expect {
                    return Err(Error::format(
                        path,
                        format!("dataset {name}: chunk at {origin:?} is corrupt: {} bytes stored, {expect} expected", loc.size),
                    ));
                }
                let first = r0.saturating_sub(origin[0]);
                let last = c[0].min(r1 - origin[0]);
                let row_bytes = (row_elems as usize) * itemsize;
                let dst = ((origin[0] + first - r0) as usize) * row_bytes;
                let len = ((last - first) as usize) * row_bytes;
                file.read_exact_at(
                    &mut out[dst..dst + len],
                    loc.addr + first * row_bytes as u64,
                )
                .map_err(|e| Error::io(path, e))?;
                continue;
            }
            if loc.addr == u64::MAX {
                sc.out.clear();
                for _ in 0..chunk_elems {
                    sc.out.extend_from_slice(&ch.fill);
                }
            } else {
                sc.raw.resize(loc.size as usize, 0);
                file.read_exact_at(&mut sc.raw, loc.addr)
                    .map_err(|e| Error::io(path, e))?;
                decode_chunk(
                    &ch.filters,
                    loc.mask,
                    itemsize,
                    &sc.raw,
                    expect,
                    &mut sc.tmp,
                    &mut sc.out,
                    &mut sc.inflater,
                )
                .map_err(|m| {
                    Error::format(
                        path,
                        format!("dataset {name}: chunk at {origin:?} is corrupt: {m}"),
                    )
                })?;
            }
            // Copy the chunk's part inside rows r0..r1 and the extent: runs along the last
            // dimension.
            let first = r0.saturating_sub(origin[0]);
            let valid: Vec<u64> = (0..nd)
                .map(|k| {
                    let lim = if k == 0 { r1 } else { shape[k] };
                    c[k].min(lim - origin[k])
                })
                .collect();
            let run = if nd == 1 {
                (valid[0] - first) as usize * itemsize
            } else {
                valid[nd - 1] as usize * itemsize
            };
            let mut idx_local = vec![0u64; nd];
            idx_local[0] = first;
            loop {
                let src: u64 = (0..nd).map(|k| idx_local[k] * src_stride[k]).sum();
                let row = origin[0] + idx_local[0] - r0;
                let mut dst = row * row_elems;
                for k in 1..nd {
                    dst += (origin[k] + idx_local[k]) * dst_stride[k];
                }
                let (s0, d0) = (src as usize * itemsize, dst as usize * itemsize);
                out[d0..d0 + run].copy_from_slice(&sc.out[s0..s0 + run]);
                // Advance over all dims but the last.
                let mut k = nd - 1;
                loop {
                    if k == 0 {
                        break;
                    }
                    k -= 1;
                    idx_local[k] += 1;
                    if idx_local[k] < valid[k] {
                        break;
                    }
                    idx_local[k] = if k == 0 { first } else { 0 };
                    if k == 0 {
                        k = usize::MAX;
                        break;
                    }
                }
                if k == usize::MAX || nd == 1 {
                    break;
                }
            }
        }
    }
    Ok(())
}
