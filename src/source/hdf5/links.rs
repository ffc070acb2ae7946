//! Where a dataset lives: the file that holds it (behind external links), every link that
//! leads to it, and the files its external storage or virtual mappings name.

use super::*;

/// Opens dataset `name`, choosing where the relative names of its external raw-data files
/// (if any) are resolved: beside the HDF5 file holding it, else in the working directory
/// (where libhdf5 alone and h5py look); if neither holds them all, an error names the
/// missing file, rather than libhdf5's nameless "unable to open" at the first read.
/// `HDF5_EXTFILE_PREFIX`, when set, decides instead, as in libhdf5.
pub(super) fn open_resolved(path: &Path, h5: &hdf5::File, name: &str) -> Result<hdf5::Dataset> {
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
pub(super) fn external_target(file: &hdf5::File, name: &str) -> Option<(String, String)> {
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
pub(super) struct Holder {
    /// A descriptor of that file (a duplicate of libhdf5's own), `None` when libhdf5 reads
    /// it through a driver other than its POSIX one (then only libhdf5 reads its bytes).
    pub(super) file: Option<File>,
    /// Its name as libhdf5 opened it.
    pub(super) name: String,
    /// Whether it is the file named on the command line.
    pub(super) same: bool,
    /// Its user block size (chunk addresses may be relative to its end).
    pub(super) userblock: u64,
    /// Its length in bytes.
    pub(super) len: u64,
}

pub(super) fn holder(path: &Path, ds: &hdf5::Dataset, named: &File) -> Result<Holder> {
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
pub(super) struct Found {
    /// The path it is known by: its first hard link, else its first external, else soft.
    pub(super) path: String,
    pub(super) rank: u8,
    /// The other paths.
    pub(super) links: Vec<String>,
}

pub(super) fn link_rank(t: hdf5::LinkType) -> u8 {
    match t {
        hdf5::LinkType::Hard => 0,
        hdf5::LinkType::External => 1,
        hdf5::LinkType::Soft => 2,
    }
}

/// Every dataset reachable from the root, each object once however many links lead to it:
/// first over hard links (as h5py's `visititems`), then over soft and external links, whose
/// targets are new datasets only when no other path reached them.
pub(super) fn walk(file: &hdf5::File) -> Vec<Found> {
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

/// A virtual dataset whose source file or dataset is missing reads as fill values in
/// libhdf5, silently: refuse it instead, naming the source. Source files are looked for as
/// libhdf5 1.10 looks for them: an absolute name as given, else its bare file name; then
/// under each `HDF5_VDS_PREFIX` entry (`${ORIGIN}` is the virtual dataset's directory); then
/// beside the file holding the virtual dataset (`dir`); then in the working directory. The
/// first file that opens must hold the source dataset. `.` is the file holding it.
pub(super) fn check_virtual_sources(
    path: &Path,
    ds: &hdf5::Dataset,
    name: &str,
    dir: &Path,
) -> Result<()> {
    let sources = virtual_sources(path, ds)?;
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
                .find_map(|c| open_file(c).ok())
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
pub(super) fn virtual_sources(path: &Path, ds: &hdf5::Dataset) -> Result<Vec<(String, String)>> {
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
pub(super) fn external_files(path: &Path, ds: &hdf5::Dataset) -> Result<Vec<String>> {
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
