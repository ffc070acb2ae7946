//! HDF5 output: contiguous datasets written in row slabs, chunked ones compressed in
//! parallel (shuffle and deflate done here) and stored with direct chunk writes, so
//! libhdf5's single-threaded filter pipeline is not the bottleneck.

use std::ffi::{c_void, CString};
use std::path::Path;

use hdf5_sys::h5::hsize_t;
use hdf5_sys::h5d;
use hdf5_sys::h5i::hid_t;
use hdf5_sys::h5p;
use hdf5_sys::h5s;
use rayon::prelude::*;

use crate::{DType, Spec, PIECE};

/// Chunking and compression of an HDF5 dataset.
#[derive(Clone, Debug, Default)]
pub struct H5Layout {
    /// Chunk shape; `None` for a contiguous dataset.
    pub chunks: Option<Vec<u64>>,
    /// Deflate (gzip) level 1-9.
    pub gzip: Option<u32>,
    /// Byte shuffle before compression.
    pub shuffle: bool,
}

struct Id(hid_t, unsafe extern "C" fn(hid_t) -> hdf5_sys::h5::herr_t);

impl Drop for Id {
    fn drop(&mut self) {
        if self.0 >= 0 {
            // SAFETY: an id returned open by libhdf5, closed once.
            unsafe {
                (self.1)(self.0);
            }
        }
    }
}

fn check(rc: i64, what: &str) -> Result<(), String> {
    if rc < 0 {
        let detail = hdf5::Error::query()
            .map(|e| e.to_string())
            .unwrap_or_default();
        Err(format!("{what} failed: {detail}"))
    } else {
        Ok(())
    }
}

/// The HDF5 file type for `dt` (h5py's conventions for float16 and bool).
fn file_type(dt: DType) -> Result<Id, String> {
    use hdf5_sys::h5t::*;
    // SAFETY: predefined ids are valid once the library is open; created ids are owned.
    unsafe {
        let t = match (dt.kind, dt.size, dt.big) {
            ('f', 8, false) => H5Tcopy(*H5T_IEEE_F64LE),
            ('f', 8, true) => H5Tcopy(*H5T_IEEE_F64BE),
            ('f', 4, false) => H5Tcopy(*H5T_IEEE_F32LE),
            ('f', 4, true) => H5Tcopy(*H5T_IEEE_F32BE),
            ('f', _, big) => {
                let t = H5Tcopy(if big {
                    *H5T_IEEE_F32BE
                } else {
                    *H5T_IEEE_F32LE
                });
                H5Tset_fields(t, 15, 10, 5, 0, 10);
                H5Tset_size(t, 2);
                H5Tset_ebias(t, 15);
                t
            }
            ('i', 1, _) => H5Tcopy(*H5T_STD_I8LE),
            ('u', 1, _) => H5Tcopy(*H5T_STD_U8LE),
            ('i', 2, b) => H5Tcopy(if b { *H5T_STD_I16BE } else { *H5T_STD_I16LE }),
            ('u', 2, b) => H5Tcopy(if b { *H5T_STD_U16BE } else { *H5T_STD_U16LE }),
            ('i', 4, b) => H5Tcopy(if b { *H5T_STD_I32BE } else { *H5T_STD_I32LE }),
            ('u', 4, b) => H5Tcopy(if b { *H5T_STD_U32BE } else { *H5T_STD_U32LE }),
            ('i', _, b) => H5Tcopy(if b { *H5T_STD_I64BE } else { *H5T_STD_I64LE }),
            ('u', _, b) => H5Tcopy(if b { *H5T_STD_U64BE } else { *H5T_STD_U64LE }),
            _ => {
                let t = H5Tenum_create(*H5T_NATIVE_INT8);
                for (name, v) in [("FALSE", 0i8), ("TRUE", 1i8)] {
                    let n = CString::new(name).expect("no NUL");
                    H5Tenum_insert(t, n.as_ptr(), &v as *const i8 as *const c_void);
                }
                t
            }
        };
        if t < 0 {
            return Err("cannot create the datatype".into());
        }
        Ok(Id(t, H5Tclose))
    }
}

/// Writes `spec` as dataset `name` (groups created as needed) of a new HDF5 file.
pub fn write_hdf5(
    path: &Path,
    name: &str,
    spec: &Spec,
    layout: &H5Layout,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let file = hdf5::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let nd = spec.shape.len();
    if let Some(c) = &layout.chunks {
        if c.len() != nd || c.contains(&0) {
            return Err(format!("--chunks needs {nd} positive sizes"));
        }
    }
    let cname = CString::new(name).map_err(|_| "bad dataset name".to_string())?;
    let dims: Vec<hsize_t> = spec.shape.clone();
    let dset = hdf5::sync::sync(|| -> Result<Id, String> {
        // SAFETY: plain libhdf5 object creation with ids owned by `Id`.
        unsafe {
            let space = Id(
                h5s::H5Screate_simple(nd as i32, dims.as_ptr(), std::ptr::null()),
                h5s::H5Sclose,
            );
            let tid = file_type(spec.dtype)?;
            let dcpl = Id(h5p::H5Pcreate(*h5p::H5P_CLS_DATASET_CREATE), h5p::H5Pclose);
            let lcpl = Id(h5p::H5Pcreate(*h5p::H5P_CLS_LINK_CREATE), h5p::H5Pclose);
            check(
                h5p::H5Pset_create_intermediate_group(lcpl.0, 1) as i64,
                "lcpl",
            )?;
            check(
                h5p::H5Pset_fill_time(dcpl.0, h5d::H5D_fill_time_t::H5D_FILL_TIME_NEVER) as i64,
                "fill time",
            )?;
            match &layout.chunks {
                Some(c) => {
                    check(
                        h5p::H5Pset_chunk(dcpl.0, nd as i32, c.as_ptr()) as i64,
                        "chunk",
                    )?;
                    if layout.shuffle {
                        check(h5p::H5Pset_shuffle(dcpl.0) as i64, "shuffle")?;
                    }
                    if let Some(l) = layout.gzip {
                        check(h5p::H5Pset_deflate(dcpl.0, l) as i64, "deflate")?;
                    }
                }
                None => {
                    check(
                        h5p::H5Pset_layout(dcpl.0, h5d::H5D_layout_t::H5D_CONTIGUOUS) as i64,
                        "layout",
                    )?;
                    check(
                        h5p::H5Pset_alloc_time(dcpl.0, h5d::H5D_alloc_time_t::H5D_ALLOC_TIME_EARLY)
                            as i64,
                        "alloc time",
                    )?;
                }
            }
            let d = h5d::H5Dcreate2(
                file.id(),
                cname.as_ptr(),
                tid.0,
                space.0,
                lcpl.0,
                dcpl.0,
                h5p::H5P_DEFAULT,
            );
            check(d, "creating the dataset")?;
            Ok(Id(d, h5d::H5Dclose))
        }
    })?;
    match &layout.chunks {
        None => write_contiguous(&dset, spec, progress)?,
        Some(c) => write_chunks(&dset, spec, c, layout, progress)?,
    }
    drop(dset);
    file.flush().map_err(|e| e.to_string())?;
    Ok(())
}

fn write_contiguous(dset: &Id, spec: &Spec, progress: &(dyn Fn(u64) + Sync)) -> Result<(), String> {
    let rows = spec.shape[0];
    let cols = spec.columns();
    let row_bytes = (cols * spec.dtype.size as u64).max(1);
    let slab = (PIECE / row_bytes).max(1);
    let batch = rayon::current_num_threads() as u64 * 2;
    let mut r = 0u64;
    let mut done = 0u64;
    let tid = hdf5::sync::sync(|| file_type(spec.dtype))?;
    while r < rows {
        let starts: Vec<u64> = (0..batch)
            .map(|i| r + i * slab)
            .filter(|&s| s < rows)
            .collect();
        let bufs: Vec<(u64, u64, Vec<u8>)> = starts
            .par_iter()
            .map(|&s| {
                let e = (s + slab).min(rows);
                let mut buf = Vec::with_capacity(((e - s) * row_bytes) as usize);
                spec.fill_range(s * cols..e * cols, &mut buf);
                (s, e, buf)
            })
            .collect();
        for (s, e, buf) in &bufs {
            hdf5::sync::sync(|| -> Result<(), String> {
                // SAFETY: the selection covers exactly `buf`'s rows; memory type = file type.
                unsafe {
                    let fspace = Id(h5d::H5Dget_space(dset.0), h5s::H5Sclose);
                    let mut start = vec![0 as hsize_t; spec.shape.len()];
                    let mut count: Vec<hsize_t> = spec.shape.clone();
                    start[0] = *s;
                    count[0] = e - s;
                    check(
                        h5s::H5Sselect_hyperslab(
                            fspace.0,
                            h5s::H5S_seloper_t::H5S_SELECT_SET,
                            start.as_ptr(),
                            std::ptr::null(),
                            count.as_ptr(),
                            std::ptr::null(),
                        ) as i64,
                        "select",
                    )?;
                    let mspace = Id(
                        h5s::H5Screate_simple(count.len() as i32, count.as_ptr(), std::ptr::null()),
                        h5s::H5Sclose,
                    );
                    check(
                        h5d::H5Dwrite(
                            dset.0,
                            tid.0,
                            mspace.0,
                            fspace.0,
                            h5p::H5P_DEFAULT,
                            buf.as_ptr() as *const c_void,
                        ) as i64,
                        "writing rows",
                    )
                }
            })?;
            done += buf.len() as u64;
        }
        progress(done);
        r += batch * slab;
    }
    Ok(())
}

fn write_chunks(
    dset: &Id,
    spec: &Spec,
    chunk: &[u64],
    layout: &H5Layout,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    let nd = chunk.len();
    let grid: Vec<u64> = spec
        .shape
        .iter()
        .zip(chunk)
        .map(|(d, c)| d.div_ceil(*c))
        .collect();
    let n: u64 = grid.iter().product();
    let s = spec.dtype.size;
    let chunk_elems: u64 = chunk.iter().product();
    let per_batch = ((PIECE / (chunk_elems * s as u64).max(1)).max(1)
        * rayon::current_num_threads() as u64
        * 2)
    .max(1);
    // Row-major strides of the dataset.
    let mut stride = vec![1u64; nd];
    for k in (0..nd.saturating_sub(1)).rev() {
        stride[k] = stride[k + 1] * spec.shape[k + 1];
    }
    let mut done = 0u64;
    let mut i0 = 0u64;
    while i0 < n {
        let ids: Vec<u64> = (i0..(i0 + per_batch).min(n)).collect();
        let chunks: Vec<(Vec<u64>, Vec<u8>)> = ids
            .par_iter()
            .map(|&ci| {
                let mut g = vec![0u64; nd];
                let mut rem = ci;
                for k in (0..nd).rev() {
                    g[k] = rem % grid[k];
                    rem /= grid[k];
                }
                let origin: Vec<u64> = g.iter().zip(chunk).map(|(a, b)| a * b).collect();
                // Elements of the chunk in its own C order; outside the extent: zero.
                let mut buf = Vec::with_capacity(chunk_elems as usize * s);
                let mut local = vec![0u64; nd];
                for _ in 0..chunk_elems {
                    let inside = (0..nd).all(|k| origin[k] + local[k] < spec.shape[k]);
                    if inside {
                        let idx: u64 = (0..nd).map(|k| (origin[k] + local[k]) * stride[k]).sum();
                        spec.dtype.encode(spec.value(idx), &mut buf);
                    } else {
                        buf.extend(std::iter::repeat_n(0u8, s));
                    }
                    for k in (0..nd).rev() {
                        local[k] += 1;
                        if local[k] < chunk[k] {
                            break;
                        }
                        local[k] = 0;
                    }
                }
                if layout.shuffle && s > 1 {
                    let m = buf.len() / s;
                    let mut sh = vec![0u8; buf.len()];
                    for (j, e) in buf.chunks_exact(s).enumerate() {
                        for b in 0..s {
                            sh[b * m + j] = e[b];
                        }
                    }
                    buf = sh;
                }
                if let Some(level) = layout.gzip {
                    let mut c = libdeflater::Compressor::new(
                        libdeflater::CompressionLvl::new(level as i32).unwrap_or_default(),
                    );
                    let mut out = vec![0u8; c.zlib_compress_bound(buf.len())];
                    let k = c.zlib_compress(&buf, &mut out).expect("bound is enough");
                    out.truncate(k);
                    buf = out;
                }
                (origin, buf)
            })
            .collect();
        for (origin, buf) in &chunks {
            hdf5::sync::sync(|| {
                // SAFETY: `origin` has one entry per dimension; the bytes are the filtered
                // chunk for the dataset's declared pipeline.
                let rc = unsafe {
                    h5d::H5Dwrite_chunk(
                        dset.0,
                        h5p::H5P_DEFAULT,
                        0,
                        origin.as_ptr(),
                        buf.len(),
                        buf.as_ptr() as *const c_void,
                    )
                };
                check(rc as i64, "writing a chunk")
            })?;
            done += chunk_elems * s as u64;
        }
        progress(done.min(spec.bytes()));
        i0 += per_batch;
    }
    Ok(())
}
