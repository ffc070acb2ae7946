//! Chunked datasets: where each chunk is (an address table, or libhdf5's own index), reading
//! the rows of a block out of its chunks, and libhdf5 hyperslab reads for everything else.

use super::*;

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
    /// The same pipeline as the stages colstats undoes itself.
    pub codecs: Vec<Codec>,
    /// The fill value's bytes (one element, file byte order).
    pub fill: Vec<u8>,
}

impl Chunked {
    /// Bytes of one decoded chunk.
    pub fn chunk_bytes(&self, itemsize: usize) -> usize {
        self.chunk.iter().product::<u64>() as usize * itemsize
    }
}

/// Compares a few elements spread over a contiguous dataset, as libhdf5 reads them, with the
/// bytes at the offset libhdf5 reported in the file colstats maps: a wrong file or offset is
/// an error, never a wrong number.
#[allow(clippy::too_many_arguments)]
pub(super) fn verify_contiguous(
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

/// Every chunk's address and size, walking the regular chunk grid by coordinate. Each lookup
/// walks the chunk index in libhdf5 1.10, so this is quadratic in the number of chunks: it is
/// used only up to [`table_max`] chunks.
pub(super) fn chunk_table(
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
            return Err(Error::size(
                path,
                format!(
                    "a chunk at offset {} runs past the end of the file{in_file}",
                    c.addr
                ),
            ));
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

/// The most bytes a stored chunk of `expect` decoded bytes may take: deflate can grow
/// incompressible data a little, and a checksum adds 4 bytes.
pub(super) fn max_stored(expect: usize) -> u64 {
    2 * expect as u64 + 4096
}

/// Why a chunk could not be fetched through libhdf5.
pub(super) enum FetchError {
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
pub(super) fn innermost_error() -> String {
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
pub(super) fn fetch_chunk(
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

/// Fills `out` with rows `r0..r1` (all columns, C order, file byte order) of a chunked
/// dataset: each chunk located through the address table (read with `pread`) or fetched
/// through libhdf5, then decoded and copied by the format-neutral chunk reader.
#[allow(clippy::too_many_arguments)]
pub fn read_chunk_rows(
    path: &Path,
    name: &str,
    file: &File,
    ch: &Chunked,
    shape: &[u64],
    itemsize: usize,
    rows: (u64, u64),
    sc: &mut ChunkScratch,
    out: &mut [u8],
) -> Result<()> {
    let grid = Grid {
        shape,
        chunk: &ch.chunk,
        grid: &ch.grid,
        itemsize,
        codecs: &ch.codecs,
        fill: &ch.fill,
    };
    let expect = ch.chunk_bytes(itemsize);
    let corrupt = |origin: &[u64], m: String| {
        Error::format(
            path,
            format!("dataset {name}: chunk at {origin:?} is corrupt: {m}"),
        )
    };
    let mut fetch = |idx: u64, origin: &[u64], raw: &mut Vec<u8>| -> Result<Fetched<'_>> {
        match &ch.index {
            ChunkIndex::Table(t) => {
                let loc = t[idx as usize];
                let unfiltered = (0..ch.codecs.len()).all(|i| loc.mask & (1 << i) != 0);
                if loc.addr == u64::MAX {
                    Ok(Fetched::Missing)
                } else if unfiltered {
                    if loc.size as usize != expect {
                        return Err(corrupt(
                            origin,
                            format!("{} bytes stored, {expect} expected", loc.size),
                        ));
                    }
                    Ok(Fetched::InFile(file, loc.addr))
                } else {
                    if loc.size > max_stored(expect) {
                        return Err(corrupt(
                            origin,
                            format!("{} bytes stored for {expect} bytes of data", loc.size),
                        ));
                    }
                    raw.resize(loc.size as usize, 0);
                    file.read_exact_at(raw, loc.addr)
                        .map_err(|e| Error::io(path, e))?;
                    Ok(Fetched::Stored(loc.mask))
                }
            }
            ChunkIndex::Library(ds) => match fetch_chunk(path, ds, origin, expect, raw) {
                Ok(Some(mask)) => Ok(Fetched::Stored(mask)),
                Ok(None) => Ok(Fetched::Missing),
                Err(FetchError::Corrupt(m)) => Err(corrupt(origin, m)),
                Err(FetchError::Other(e)) => Err(e),
            },
        }
    };
    crate::source::chunked::read_rows(&grid, rows, sc, out, &mut fetch, &corrupt)
}
