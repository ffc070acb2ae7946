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
    /// Other paths (soft, external or extra hard links) that lead to the same dataset.
    pub links: Vec<String>,
    /// The file holding the dataset, when it is not the file named (reached through an
    /// external link).
    pub holder: Option<String>,
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

/// How a chunked dataset's stored chunks are found.
#[derive(Clone)]
pub enum ChunkIndex {
    /// Every chunk's location in the file holding the dataset, in C order over the grid:
    /// chunks are read with `pread` on worker threads. Built for datasets of at most
    /// [`table_max`] chunks (libhdf5 1.10 looks each chunk up by a walk over its index).
    Table(Vec<ChunkLoc>),
    /// libhdf5 fetches each stored chunk (`H5Dread_chunk`, its own index lookup) under the
    /// lock; colstats decodes it on the worker. Linear in the number of chunks whatever the
    /// index type or library version, and always from the file libhdf5 reads.
    Library(hdf5::Dataset),
}

impl std::fmt::Debug for ChunkIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkIndex::Table(t) => write!(f, "Table({} chunks)", t.len()),
            ChunkIndex::Library(d) => write!(f, "Library({})", d.name()),
        }
    }
}

/// The most chunks for which colstats builds an address table (`ChunkIndex::Table`); more
/// are fetched through libhdf5. `COLSTATS_H5_CHUNK_TABLE_MAX` overrides it (tests use it to
/// run both paths on the same files).
pub fn table_max() -> u64 {
    std::env::var("COLSTATS_H5_CHUNK_TABLE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// A chunked dataset colstats reads and decodes itself.
#[derive(Clone, Debug)]
pub struct Chunked {
    /// Chunk shape.
    pub chunk: Vec<u64>,
    /// Chunks along each dimension.
    pub grid: Vec<u64>,
    /// Where the chunks are found.
    pub index: ChunkIndex,
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

/// Opens dataset `name`, choosing where the relative names of its external raw-data files
/// (if any) are resolved: beside the HDF5 file holding it, else in the working directory
/// (where libhdf5 alone and h5py look); if neither holds them all, an error names the
/// missing file, rather than libhdf5's nameless "unable to open" at the first read.
/// `HDF5_EXTFILE_PREFIX`, when set, decides instead, as in libhdf5.
fn open_resolved(path: &Path, h5: &hdf5::File, name: &str) -> Result<hdf5::Dataset> {
    let ds = open_dataset(path, h5, name)?;
    let names = external_files(path, &ds)?;
    if names.is_empty() || std::env::var_os("HDF5_EXTFILE_PREFIX").is_some() {
        return Ok(ds);
    }
    let holder = ds.filename();
    let dir = Path::new(&holder).parent().unwrap_or(Path::new(""));
    let found = |base: &Path| {
        names
            .iter()
            .all(|n| Path::new(n).is_absolute() || base.join(n).is_file())
    };
    if found(dir) {
        return Ok(ds);
    }
    if !found(Path::new("")) {
        let missing = names
            .iter()
            .find(|n| !dir.join(n).is_file() && !Path::new(n.as_str()).is_file())
            .cloned()
            .unwrap_or_default();
        return Err(Error::format(
            path,
            format!(
                "dataset {name} keeps its data in the external file {missing}, which is \
                 neither beside the HDF5 file nor in the working directory"
            ),
        ));
    }
    // libhdf5 refuses to open a dataset again with another prefix while it is open.
    drop(ds);
    open_dataset_with(path, h5, name, false)
}

/// The file and path an external link at `name` points to, if it is one.
fn external_target(file: &hdf5::File, name: &str) -> Option<(String, String)> {
    let cname = std::ffi::CString::new(name).ok()?;
    locked(|| {
        // SAFETY: `buf` outlives the unpacked pointers, which point into it.
        unsafe {
            let mut info = hdf5_sys::h5l::H5L_info1_t::default();
            if hdf5_sys::h5l::H5Lget_info1(file.id(), cname.as_ptr(), &mut info, h5p::H5P_DEFAULT)
                < 0
                || info.type_ != hdf5_sys::h5l::H5L_type_t::H5L_TYPE_EXTERNAL
            {
                return None;
            }
            let size = *info.u.val_size();
            let mut buf = vec![0u8; size.max(1)];
            if hdf5_sys::h5l::H5Lget_val(
                file.id(),
                cname.as_ptr(),
                buf.as_mut_ptr() as *mut c_void,
                size,
                h5p::H5P_DEFAULT,
            ) < 0
            {
                return None;
            }
            let (mut f, mut o): (*const c_char, *const c_char) =
                (std::ptr::null(), std::ptr::null());
            let mut flags: c_uint = 0;
            if hdf5_sys::h5l::H5Lunpack_elink_val(
                buf.as_ptr() as *const c_void,
                size,
                &mut flags,
                &mut f,
                &mut o,
            ) < 0
                || f.is_null()
                || o.is_null()
            {
                return None;
            }
            Some((
                CStr::from_ptr(f).to_string_lossy().into_owned(),
                CStr::from_ptr(o).to_string_lossy().into_owned(),
            ))
        }
    })
}

/// The file that holds a dataset's bytes: the one libhdf5 itself reads the dataset from,
/// which differs from the file named when the dataset is reached through an external link
/// (anywhere on its path) or a mounted file.
struct Holder {
    /// A descriptor of that file (a duplicate of libhdf5's own), `None` when libhdf5 reads
    /// it through a driver other than its POSIX one (then only libhdf5 reads its bytes).
    file: Option<File>,
    /// Its name as libhdf5 opened it.
    name: String,
    /// Whether it is the file named on the command line.
    same: bool,
    /// Its user block size (chunk addresses may be relative to its end).
    userblock: u64,
    /// Its length in bytes.
    len: u64,
}

fn holder(path: &Path, ds: &hdf5::Dataset, named: &File) -> Result<Holder> {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::MetadataExt;
    let (fd, name, userblock) = locked(|| {
        // SAFETY: ids are closed by `Id`; the VFD handle points at libhdf5's `int` descriptor
        // (POSIX driver only, checked first), which is duplicated, never closed here.
        unsafe {
            let fid = Id(
                hdf5_sys::h5i::H5Iget_file_id(ds.id()),
                hdf5_sys::h5f::H5Fclose,
            );
            if fid.0 < 0 {
                return Err(h5err(path, "cannot find the file holding the dataset"));
            }
            let mut name = vec![0 as c_char; 4096];
            let n = hdf5_sys::h5f::H5Fget_name(fid.0, name.as_mut_ptr(), name.len());
            let name = if n > 0 {
                CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned()
            } else {
                String::new()
            };
            let fcpl = Id(hdf5_sys::h5f::H5Fget_create_plist(fid.0), h5p::H5Pclose);
            let mut ub: hsize_t = 0;
            if fcpl.0 < 0 || h5p::H5Pget_userblock(fcpl.0, &mut ub) < 0 {
                return Err(h5err(path, "cannot read the user block size"));
            }
            let fapl = Id(hdf5_sys::h5f::H5Fget_access_plist(fid.0), h5p::H5Pclose);
            if fapl.0 < 0 || h5p::H5Pget_driver(fapl.0) != *hdf5::globals::H5FD_SEC2 {
                return Ok((None, name, ub));
            }
            let mut handle: *mut c_void = std::ptr::null_mut();
            if hdf5_sys::h5f::H5Fget_vfd_handle(fid.0, fapl.0, &mut handle) < 0 || handle.is_null()
            {
                return Ok((None, name, ub));
            }
            let raw = *(handle as *const libc::c_int);
            let dup = libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0);
            if dup < 0 {
                return Err(Error::io(path, std::io::Error::last_os_error()));
            }
            Ok((Some(File::from_raw_fd(dup)), name, ub))
        }
    })?;
    let named_md = named.metadata().map_err(|e| Error::io(path, e))?;
    let (same, len) = match &fd {
        Some(f) => {
            let md = f.metadata().map_err(|e| Error::io(path, e))?;
            (
                md.dev() == named_md.dev() && md.ino() == named_md.ino(),
                md.len(),
            )
        }
        // Read through another driver: compare the names libhdf5 and the caller used.
        None => {
            let canon = |p: &Path| std::fs::canonicalize(p).ok();
            (
                canon(Path::new(&name)).is_some_and(|a| Some(a) == canon(path)),
                0,
            )
        }
    };
    Ok(Holder {
        file: fd,
        name,
        same,
        userblock,
        len,
    })
}

/// One dataset object of a file and every link path that leads to it.
#[derive(Clone, Debug)]
struct Found {
    /// The path it is known by: its first hard link, else its first external, else soft.
    path: String,
    rank: u8,
    /// The other paths.
    links: Vec<String>,
}

fn link_rank(t: hdf5::LinkType) -> u8 {
    match t {
        hdf5::LinkType::Hard => 0,
        hdf5::LinkType::External => 1,
        hdf5::LinkType::Soft => 2,
    }
}

/// Every dataset reachable from the root, each object once however many links lead to it:
/// first over hard links (as h5py's `visititems`), then over soft and external links, whose
/// targets are new datasets only when no other path reached them.
fn walk(file: &hdf5::File) -> Vec<Found> {
    use std::collections::{HashMap, HashSet};
    struct W {
        seen: HashMap<String, Option<usize>>,
        visited: HashSet<String>,
        found: Vec<Found>,
    }
    fn key(i: &hdf5::LocationInfo) -> String {
        format!("{}:{:?}", i.fileno, i.token)
    }
    fn pass(w: &mut W, g: &hdf5::Group, prefix: &str, hard_only: bool, depth: usize) {
        if depth > 64 {
            return;
        }
        let mut members = Vec::new();
        let _ = g.iter_visit_default(|name, info| {
            members.push((name.to_string(), info.link_type));
            Ok(())
        });
        for (m, lt) in members {
            if hard_only && lt != hdf5::LinkType::Hard {
                continue;
            }
            let full = format!("{prefix}/{m}");
            let Ok(info) = g.loc_info_by_name(&m) else {
                continue; // a dangling soft or external link
            };
            let k = key(&info);
            match info.loc_type {
                hdf5::LocationType::Dataset => match w.seen.get(&k).copied().flatten() {
                    Some(i) => {
                        let f = &mut w.found[i];
                        if f.path != full && !f.links.contains(&full) {
                            if link_rank(lt) < f.rank {
                                let old = std::mem::replace(&mut f.path, full);
                                f.links.push(old);
                                f.rank = link_rank(lt);
                            } else {
                                f.links.push(full);
                            }
                        }
                    }
                    None => {
                        w.seen.insert(k, Some(w.found.len()));
                        w.found.push(Found {
                            path: full,
                            rank: link_rank(lt),
                            links: Vec::new(),
                        });
                    }
                },
                hdf5::LocationType::Group => {
                    let new = if hard_only {
                        w.seen.insert(k, None).is_none()
                    } else {
                        w.visited.insert(k)
                    };
                    if new {
                        if let Ok(sub) = g.group(&m) {
                            pass(w, &sub, &full, hard_only, depth + 1);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut w = W {
        seen: HashMap::new(),
        visited: HashSet::new(),
        found: Vec::new(),
    };
    if let Ok(root) = file.loc_info() {
        w.seen.insert(key(&root), None);
        w.visited.insert(key(&root));
    }
    pass(&mut w, file, "", true, 0);
    pass(&mut w, file, "", false, 0);
    w.found
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
                    "the file holds {n} datasets; choose one with --dataset: {}",
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
        Error::format(
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
                return Err(Error::Size {
                    path: path.to_path_buf(),
                    msg: format!(
                        "dataset {name}{in_file}: data at offset {off} ({bytes} bytes) runs past the end of the file ({file_len} bytes)"
                    ),
                })
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

/// Compares a few elements spread over a contiguous dataset, as libhdf5 reads them, with the
/// bytes at the offset libhdf5 reported in the file colstats maps: a wrong file or offset is
/// an error, never a wrong number.
#[allow(clippy::too_many_arguments)]
fn verify_contiguous(
    path: &Path,
    ds: &hdf5::Dataset,
    name: &str,
    file: &File,
    offset: u64,
    shape: &[u64],
    itemsize: usize,
    in_file: &str,
) -> Result<()> {
    let total: u64 = shape.iter().product();
    if total == 0 {
        return Ok(());
    }
    let n = total.min(16);
    let mut flats = Vec::with_capacity(n as usize);
    let mut coords: Vec<hsize_t> = Vec::with_capacity(n as usize * shape.len());
    for k in 0..n {
        let flat = if n == 1 { 0 } else { k * (total - 1) / (n - 1) };
        flats.push(flat);
        let mut c = vec![0u64; shape.len()];
        let mut rem = flat;
        for d in (0..shape.len()).rev() {
            c[d] = rem % shape[d];
            rem /= shape[d];
        }
        coords.extend(c);
    }
    let mut via = vec![0u8; n as usize * itemsize];
    let id = ds.id();
    locked(|| {
        // SAFETY: the point list has `n` points of `shape.len()` coordinates; `via` holds `n`
        // elements of the file type, which is also the memory type (no conversion).
        unsafe {
            let tid = Id(h5d::H5Dget_type(id), h5t::H5Tclose);
            let fspace = Id(h5d::H5Dget_space(id), h5s::H5Sclose);
            let count = [n as hsize_t];
            let mspace = Id(
                h5s::H5Screate_simple(1, count.as_ptr(), std::ptr::null()),
                h5s::H5Sclose,
            );
            if tid.0 < 0
                || fspace.0 < 0
                || mspace.0 < 0
                || h5s::H5Sselect_elements(
                    fspace.0,
                    h5s::H5S_seloper_t::H5S_SELECT_SET,
                    n as usize,
                    coords.as_ptr(),
                ) < 0
                || h5d::H5Dread(
                    id,
                    tid.0,
                    mspace.0,
                    fspace.0,
                    h5p::H5P_DEFAULT,
                    via.as_mut_ptr() as *mut c_void,
                ) < 0
            {
                return Err(h5err(path, &format!("cannot read dataset {name}")));
            }
            Ok(())
        }
    })?;
    let mut direct = vec![0u8; itemsize];
    for (k, flat) in flats.iter().enumerate() {
        let at = offset + flat * itemsize as u64;
        file.read_exact_at(&mut direct, at)
            .map_err(|e| Error::io(path, e))?;
        if direct != via[k * itemsize..(k + 1) * itemsize] {
            return Err(Error::format(
                path,
                format!(
                    "dataset {name}{in_file}: the bytes at offset {at} differ from what libhdf5 \
                     reads for element {flat}; refusing to read at that offset"
                ),
            ));
        }
    }
    Ok(())
}

/// A virtual dataset whose source file or dataset is missing reads as fill values in
/// libhdf5, silently: refuse it instead, naming the source. Source files are looked for as
/// libhdf5 1.10 looks for them: an absolute name as given, else its bare file name; then
/// under each `HDF5_VDS_PREFIX` entry (`${ORIGIN}` is the virtual dataset's directory); then
/// beside the file holding the virtual dataset (`dir`); then in the working directory. The
/// first file that opens must hold the source dataset. `.` is the file holding it.
fn check_virtual_sources(path: &Path, ds: &hdf5::Dataset, name: &str, dir: &Path) -> Result<()> {
    let sources = virtual_sources(path, ds)?;
    let open_h5 = |p: &Path| {
        hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .open(p)
            .ok()
    };
    let mut checked = std::collections::HashSet::new();
    for (f, d) in sources {
        // printf-style patterns (unlimited mappings) name many files: not checked here.
        if f.contains('%') || d.contains('%') || !checked.insert((f.clone(), d.clone())) {
            continue;
        }
        let has = |file: &hdf5::File| {
            file.loc_type_by_name(&d)
                .is_ok_and(|t| t == hdf5::LocationType::Dataset)
        };
        let ok = if f == "." {
            ds.file().is_ok_and(|file| has(&file))
        } else {
            let given = Path::new(&f);
            let mut cands = Vec::new();
            let bare = if given.is_absolute() {
                cands.push(given.to_path_buf());
                given
                    .file_name()
                    .map(Path::new)
                    .unwrap_or(given)
                    .to_path_buf()
            } else {
                given.to_path_buf()
            };
            if let Some(env) = std::env::var_os("HDF5_VDS_PREFIX") {
                for entry in env.to_string_lossy().split(':').filter(|e| !e.is_empty()) {
                    let e = entry.replace("${ORIGIN}", &dir.to_string_lossy());
                    cands.push(Path::new(&e).join(&bare));
                }
            }
            cands.push(dir.join(&bare));
            cands.push(bare.clone());
            cands
                .iter()
                .filter(|c| c.is_file())
                .find_map(|c| open_h5(c))
                .is_some_and(|file| has(&file))
        };
        if !ok {
            return Err(Error::format(
                path,
                format!(
                    "virtual dataset {name} maps source {f}:{d}, which cannot be opened \
                     (libhdf5 would read its fill value there instead)"
                ),
            ));
        }
    }
    Ok(())
}

/// The (file, dataset) names of a virtual dataset's mappings.
fn virtual_sources(path: &Path, ds: &hdf5::Dataset) -> Result<Vec<(String, String)>> {
    locked(|| {
        // SAFETY: the creation list is closed by `Id`; names are read into buffers of the
        // size libhdf5 reports, plus the terminator.
        unsafe {
            let dcpl = Id(h5d::H5Dget_create_plist(ds.id()), h5p::H5Pclose);
            let mut count: usize = 0;
            if dcpl.0 < 0 || h5p::H5Pget_virtual_count(dcpl.0, &mut count) < 0 {
                return Err(h5err(path, "cannot read the virtual dataset's mappings"));
            }
            let get =
                |i: usize, f: unsafe extern "C" fn(hid_t, usize, *mut c_char, usize) -> isize| {
                    let len = f(dcpl.0, i, std::ptr::null_mut(), 0);
                    if len < 0 {
                        return None;
                    }
                    let mut buf = vec![0 as c_char; len as usize + 1];
                    f(dcpl.0, i, buf.as_mut_ptr(), buf.len());
                    Some(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned())
                };
            let mut out = Vec::new();
            for i in 0..count {
                match (
                    get(i, h5p::H5Pget_virtual_filename),
                    get(i, h5p::H5Pget_virtual_dsetname),
                ) {
                    (Some(f), Some(d)) => out.push((f, d)),
                    _ => return Err(h5err(path, "cannot read the virtual dataset's mappings")),
                }
            }
            Ok(out)
        }
    })
}

/// The names of a dataset's external raw-data files (`H5Pset_external`), in order.
fn external_files(path: &Path, ds: &hdf5::Dataset) -> Result<Vec<String>> {
    locked(|| {
        // SAFETY: the creation list is closed by `Id`; each name is read into a 4 KiB buffer,
        // terminated by libhdf5 (truncated names are still terminated).
        unsafe {
            let dcpl = Id(h5d::H5Dget_create_plist(ds.id()), h5p::H5Pclose);
            let n = if dcpl.0 < 0 {
                -1
            } else {
                h5p::H5Pget_external_count(dcpl.0)
            };
            if n < 0 {
                return Err(h5err(path, "cannot read the external storage list"));
            }
            let mut out = Vec::new();
            for i in 0..n as c_uint {
                let mut buf = vec![0 as c_char; 4096];
                let (mut off, mut size): (libc::off_t, hsize_t) = (0, 0);
                if h5p::H5Pget_external(dcpl.0, i, buf.len(), buf.as_mut_ptr(), &mut off, &mut size)
                    < 0
                {
                    return Err(h5err(path, "cannot read the external storage list"));
                }
                *buf.last_mut().expect("4096 bytes") = 0;
                out.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            }
            Ok(out)
        }
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

/// Every chunk's address and size, walking the regular chunk grid by coordinate. Each lookup
/// walks the chunk index in libhdf5 1.10, so this is quadratic in the number of chunks: it is
/// used only up to [`table_max`] chunks.
fn chunk_table(
    path: &Path,
    ds: &hdf5::Dataset,
    grid: &[u64],
    chunk: &[u64],
    (file, file_len, userblock): (&File, u64, u64),
    in_file: &str,
) -> Result<Option<Vec<ChunkLoc>>> {
    let n: u64 = grid.iter().product();
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
    // #3003): find out which base is right by comparing the first stored chunk with a direct
    // chunk read, then check the last one too, so that a wrong file or base is an error.
    let stored: Vec<usize> = table
        .iter()
        .enumerate()
        .filter(|(_, c)| c.addr != u64::MAX)
        .map(|(i, _)| i)
        .collect();
    let Some(&first) = stored.first() else {
        return Ok(Some(table));
    };
    let direct = |i: usize| -> Result<Vec<u8>> {
        let mut rem = i as u64;
        let mut offs = vec![0 as hsize_t; grid.len()];
        for k in (0..grid.len()).rev() {
            offs[k] = rem % grid[k] * chunk[k];
            rem /= grid[k];
        }
        let mut buf = vec![0u8; table[i].size as usize];
        let mut filters: u32 = 0;
        // SAFETY: `buf` holds exactly the chunk's stored size.
        let rc = locked(|| unsafe {
            h5d::H5Dread_chunk(
                id,
                h5p::H5P_DEFAULT,
                offs.as_ptr(),
                &mut filters,
                buf.as_mut_ptr() as *mut c_void,
            )
        });
        if rc < 0 {
            return Err(h5err(path, &format!("cannot read the chunk at {offs:?}")));
        }
        Ok(buf)
    };
    let matches = |i: usize, want: &[u8], base: u64| {
        let c = table[i];
        let at = c.addr + base;
        if at.checked_add(c.size).is_none_or(|e| e > file_len) {
            return false;
        }
        let mut buf = vec![0u8; c.size as usize];
        file.read_exact_at(&mut buf, at).is_ok() && buf == want
    };
    // Every base under which both the first and the last stored chunk match. Two can match
    // when those chunks and the bytes before them are all zeros: then the table is not
    // trusted, and libhdf5 fetches the chunks instead (`None`).
    let last = *stored.last().expect("one stored chunk");
    let (want_first, want_last) = (direct(first)?, direct(last)?);
    let bases: Vec<u64> = [0, userblock]
        .into_iter()
        .take(if userblock > 0 { 2 } else { 1 })
        .filter(|&b| matches(first, &want_first, b) && matches(last, &want_last, b))
        .collect();
    let base = match bases[..] {
        [b] => b,
        [] => {
            return Err(Error::format(
                path,
                format!("chunk addresses reported by libhdf5 do not match the chunk data{in_file}"),
            ))
        }
        _ => return Ok(None),
    };
    for c in table.iter_mut().filter(|c| c.addr != u64::MAX) {
        c.addr += base;
        if c.addr.checked_add(c.size).is_none_or(|e| e > file_len) {
            return Err(Error::Size {
                path: path.to_path_buf(),
                msg: format!(
                    "a chunk at offset {} runs past the end of the file{in_file}",
                    c.addr
                ),
            });
        }
    }
    Ok(Some(table))
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

/// The most bytes a stored chunk of `expect` decoded bytes may take: deflate can grow
/// incompressible data a little, and a checksum adds 4 bytes.
fn max_stored(expect: usize) -> u64 {
    2 * expect as u64 + 4096
}

/// Why a chunk could not be fetched through libhdf5.
enum FetchError {
    /// Its stored size cannot be right.
    Corrupt(String),
    /// libhdf5 failed.
    Other(Error),
}

unsafe extern "C" {
    // In libhdf5 since 1.10.2; the bindings do not declare it.
    fn H5Dget_chunk_storage_size(
        dset_id: hid_t,
        offset: *const hsize_t,
        chunk_bytes: *mut hsize_t,
    ) -> hdf5_sys::h5::herr_t;
}

/// The description of the innermost frame of libhdf5's error stack (call under the lock).
fn innermost_error() -> String {
    use hdf5_sys::h5e;
    unsafe extern "C" fn first(n: c_uint, e: *const h5e::H5E_error2_t, out: *mut c_void) -> i32 {
        // SAFETY: libhdf5 passes a valid frame; `out` is the `String` below.
        unsafe {
            if n == 0 && !(*e).desc.is_null() {
                *(out as *mut String) = CStr::from_ptr((*e).desc).to_string_lossy().into_owned();
            }
        }
        1 // stop after the first frame
    }
    let mut s = String::new();
    // SAFETY: the callback only writes `s`, which outlives the walk.
    unsafe {
        h5e::H5Ewalk2(
            h5e::H5E_DEFAULT,
            h5e::H5E_direction_t::H5E_WALK_UPWARD,
            Some(first),
            &mut s as *mut String as *mut c_void,
        );
    }
    s
}

/// Fetches the stored bytes of the chunk at `origin` through libhdf5 (its own index lookup,
/// from the file that holds them) into `raw`; its filter mask, or `None` for a chunk never
/// written.
fn fetch_chunk(
    path: &Path,
    ds: &hdf5::Dataset,
    origin: &[u64],
    expect: usize,
    raw: &mut Vec<u8>,
) -> std::result::Result<Option<u32>, FetchError> {
    let id = ds.id();
    locked(|| {
        let mut size: hsize_t = 0;
        // SAFETY: `origin` has one entry per dimension; `raw` is sized to the stored size
        // before libhdf5 writes it.
        unsafe {
            if H5Dget_chunk_storage_size(id, origin.as_ptr(), &mut size) < 0 {
                // libhdf5 1.10 fails on a chunk never written, rather than report size 0.
                // Only the innermost message is read here: formatting the whole stack would
                // cost more than the lookup, once per unwritten chunk.
                if innermost_error().contains("chunk storage is not allocated") {
                    return Ok(None);
                }
                return Err(FetchError::Other(h5err(
                    path,
                    &format!("cannot locate the chunk at {origin:?}"),
                )));
            }
            if size == 0 {
                return Ok(None);
            }
            if size > max_stored(expect) {
                return Err(FetchError::Corrupt(format!(
                    "{size} bytes stored for {expect} bytes of data"
                )));
            }
            raw.resize(size as usize, 0);
            let mut mask: u32 = 0;
            if h5d::H5Dread_chunk(
                id,
                h5p::H5P_DEFAULT,
                origin.as_ptr(),
                &mut mask,
                raw.as_mut_ptr() as *mut c_void,
            ) < 0
            {
                return Err(FetchError::Other(h5err(
                    path,
                    &format!("cannot read the chunk at {origin:?}"),
                )));
            }
            Ok(Some(mask))
        }
    })
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
            let origin: Vec<u64> = g.iter().zip(c).map(|(a, b)| a * b).collect();
            let corrupt = |m: String| {
                Error::format(
                    path,
                    format!("dataset {name}: chunk at {origin:?} is corrupt: {m}"),
                )
            };
            // The chunk's stored bytes land in `sc.raw`; `None`: never written.
            let mask = match &ch.index {
                ChunkIndex::Table(t) => {
                    let loc = t[idx as usize];
                    let unfiltered = (0..ch.filters.len()).all(|i| loc.mask & (1 << i) != 0);
                    if loc.addr == u64::MAX {
                        None
                    } else if unfiltered && full_rows {
                        // Plain chunks spanning whole rows: read the needed rows in place.
                        if loc.size as usize != expect {
                            return Err(corrupt(format!(
                                "{} bytes stored, {expect} expected",
                                loc.size
                            )));
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
                    } else {
                        if loc.size > max_stored(expect) {
                            return Err(corrupt(format!(
                                "{} bytes stored for {expect} bytes of data",
                                loc.size
                            )));
                        }
                        sc.raw.resize(loc.size as usize, 0);
                        file.read_exact_at(&mut sc.raw, loc.addr)
                            .map_err(|e| Error::io(path, e))?;
                        Some(loc.mask)
                    }
                }
                ChunkIndex::Library(ds) => fetch_chunk(path, ds, &origin, expect, &mut sc.raw)
                    .map_err(|e| match e {
                        FetchError::Corrupt(m) => corrupt(m),
                        FetchError::Other(e) => e,
                    })?,
            };
            let data: &[u8] = match mask {
                None => {
                    sc.out.clear();
                    for _ in 0..chunk_elems {
                        sc.out.extend_from_slice(&ch.fill);
                    }
                    &sc.out
                }
                Some(m) if (0..ch.filters.len()).all(|i| m & (1 << i) != 0) => {
                    if sc.raw.len() != expect {
                        return Err(corrupt(format!(
                            "{} bytes stored, {expect} expected",
                            sc.raw.len()
                        )));
                    }
                    &sc.raw
                }
                Some(m) => {
                    decode_chunk(
                        &ch.filters,
                        m,
                        itemsize,
                        &sc.raw,
                        expect,
                        &mut sc.tmp,
                        &mut sc.out,
                        &mut sc.inflater,
                    )
                    .map_err(corrupt)?;
                    &sc.out
                }
            };
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
                out[d0..d0 + run].copy_from_slice(&data[s0..s0 + run]);
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
