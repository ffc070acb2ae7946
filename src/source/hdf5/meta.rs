//! Reading a dataset's type, shape, layout, filters and fill value with the raw libhdf5 calls.

use super::*;

/// Decodes an HDF5 datatype to a [`DType`], or says why it is not supported.
pub(super) fn dtype_of(tid: hid_t) -> std::result::Result<DType, String> {
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
pub(super) fn reduced_precision(tid: hid_t) -> bool {
    // SAFETY: queries of an open datatype id.
    unsafe {
        h5t::H5Tget_class(tid) == H5T_class_t::H5T_INTEGER
            && (h5t::H5Tget_precision(tid) != h5t::H5Tget_size(tid) * 8
                || h5t::H5Tget_offset(tid) != 0)
    }
}

/// A full-precision standard integer type matching `dt` (owned copy), for reads that need
/// libhdf5 to convert.
pub(super) fn standard_int_type(dt: DType) -> hid_t {
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
pub(super) struct Raw {
    pub(super) shape: Vec<u64>,
    pub(super) dtype: std::result::Result<DType, String>,
    pub(super) layout: Layout,
    pub(super) chunk: Option<Vec<u64>>,
    pub(super) filters: Vec<Filter>,
    pub(super) external: bool,
    pub(super) offset: Option<u64>,
    pub(super) stored: u64,
    pub(super) fill: Vec<u8>,
    pub(super) reduced: bool,
}

pub(super) fn inspect(path: &Path, ds: &hdf5::Dataset) -> Result<Raw> {
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
