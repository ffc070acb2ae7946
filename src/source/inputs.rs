//! Several inputs read as one array: their rows concatenated in the order given, as
//! `numpy.concatenate(axis=0)` would, and the domains their merge trees are built over.
//!
//! A *domain* is a run of rows reduced under one canonical merge tree, anchored at its first
//! row. Consecutive inputs whose elements lie contiguously in C order in their files (`.npy`
//! in C order, contiguous HDF5) form one domain: its leaves are counted over the rows of all
//! of them, so a leaf may straddle two files, and the result is the one a single file holding
//! the same rows gives. Any other input (HDF5 chunks, libhdf5 reads, Fortran order) is a
//! domain of its own with its own leaves. Domain results are folded left to right.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{open, ArrayMeta, Order, Source, Storage};
use crate::error::{Error, ErrorKind, Result};

/// The opened inputs of one run and how their rows line up.
#[derive(Debug)]
pub struct Inputs {
    /// The inputs, in the order given.
    pub sources: Vec<Source>,
    /// The global row of each input's first row, and the total row count last
    /// (`sources.len() + 1` entries).
    pub starts: Vec<u64>,
    /// The concatenated array: the first input's dtype, the total rows and the common
    /// trailing shape.
    pub meta: ArrayMeta,
    /// The domains, in row order.
    pub domains: Vec<Domain>,
}

/// A run of inputs reduced under one merge tree (see the module docs).
#[derive(Debug)]
pub struct Domain {
    /// The inputs it covers.
    pub inputs: Range<usize>,
    /// Its global rows.
    pub rows: Range<u64>,
    /// The domain as one array: for one input its own metadata, for several the
    /// concatenation of theirs (C order, mapped; `data_offset` is meaningless).
    pub meta: ArrayMeta,
}

impl Inputs {
    /// Opens every input and checks that they can be concatenated; nothing is read but
    /// headers. A mismatch names the first offending input and what differs.
    pub fn open(paths: &[PathBuf], dataset: Option<&str>) -> Result<Inputs> {
        if paths.is_empty() {
            return Err(Error::new(ErrorKind::Request, None, "no input files"));
        }
        let mut sources = Vec::with_capacity(paths.len());
        for p in paths {
            sources.push(open(p, dataset)?);
        }
        Inputs::from_sources(sources)
    }

    /// [`Inputs::open`] that leaves out the inputs that fail to open or do not concatenate
    /// with the others, and returns them with their errors. The array is the one most inputs
    /// with rows agree on (dtype and shape after the first axis; on a tie, that of the
    /// earliest of them), so one odd file, first or not, is the one left out.
    pub fn open_lenient(
        paths: &[PathBuf],
        dataset: Option<&str>,
    ) -> (Result<Inputs>, Vec<(PathBuf, Error)>) {
        let mut bad = Vec::new();
        let mut opened: Vec<(usize, Source)> = Vec::new();
        for (k, p) in paths.iter().enumerate() {
            match open(p, dataset) {
                Ok(s) => opened.push((k, s)),
                Err(e) => bad.push((k, p.clone(), e)),
            }
        }
        // The kinds of array, by how many inputs with rows hold each (empty placeholders do
        // not vote unless every input is one), in order of first appearance.
        let key = |m: &ArrayMeta| (m.dtype.kind, m.dtype.size, m.shape[1..].to_vec());
        let any_rows = opened.iter().any(|(_, s)| s.meta.rows > 0);
        let mut kinds: Vec<(_, usize, usize)> = Vec::new(); // (key, votes, first input)
        for (j, (_, s)) in opened.iter().enumerate() {
            let k = key(&s.meta);
            let vote = usize::from(s.meta.rows > 0 || !any_rows);
            match kinds.iter_mut().find(|x| x.0 == k) {
                Some(x) => x.1 += vote,
                None => kinds.push((k, vote, j)),
            }
        }
        let best = kinds
            .iter()
            .enumerate()
            .max_by_key(|(i, x)| (x.1, std::cmp::Reverse(*i)))
            .map(|(_, x)| (x.0.clone(), x.1, x.2));
        let mut sources = Vec::with_capacity(opened.len());
        if let Some((k, _, first)) = best {
            let model = opened[first].1.meta.clone();
            let others = opened.iter().filter(|(_, s)| key(&s.meta) == k).count() - 1;
            for (i, s) in opened {
                if key(&s.meta) == k {
                    sources.push(s);
                } else {
                    let e = check_compatible(&model, &s.meta).expect_err("another kind");
                    let why = match others {
                        0 => e.message(),
                        1 => format!("{} and of 1 other input", e.message()),
                        n => format!("{} and of {n} other inputs", e.message()),
                    };
                    bad.push((
                        i,
                        s.meta.path.clone(),
                        Error::new(e.kind(), Some(&s.meta.path), why),
                    ));
                }
            }
        }
        bad.sort_by_key(|(i, _, _)| *i);
        let bad = bad.into_iter().map(|(_, p, e)| (p, e)).collect();
        if sources.is_empty() {
            let e = Error::new(ErrorKind::Request, None, "no input could be read");
            return (Err(e), bad);
        }
        (Inputs::from_sources(sources), bad)
    }

    /// Lines up opened sources (see [`Inputs::open`]).
    pub fn from_sources(sources: Vec<Source>) -> Result<Inputs> {
        let first = &sources[0].meta;
        for s in &sources[1..] {
            check_compatible(first, &s.meta)?;
        }
        let mut starts = Vec::with_capacity(sources.len() + 1);
        let mut total = 0u64;
        for s in &sources {
            starts.push(total);
            total = total.checked_add(s.meta.rows).ok_or_else(|| {
                Error::new(
                    ErrorKind::Size,
                    Some(&s.meta.path),
                    "the inputs hold more than 2^64 rows",
                )
            })?;
        }
        starts.push(total);
        let meta = if sources.len() == 1 {
            first.clone()
        } else {
            concat_meta(first, total)?
        };
        let domains = domains(&sources, &starts);
        Ok(Inputs {
            sources,
            starts,
            meta,
            domains,
        })
    }

    /// Bytes of bookkeeping the inputs hold for a run (see [`crate::plan::NPY_INPUT_BYTES`]).
    pub fn bookkeeping(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        self.sources
            .iter()
            .map(|s| {
                let each = match s.format {
                    super::Format::Hdf5 => crate::plan::HDF5_INPUT_BYTES,
                    super::Format::Npy => crate::plan::NPY_INPUT_BYTES,
                };
                each + 2 * s.meta.path.as_os_str().as_bytes().len() as u64
            })
            .sum()
    }

    /// The input holding global row `row` (the last input for the total row count).
    pub fn input_of(&self, row: u64) -> usize {
        self.starts[1..]
            .partition_point(|&s| s <= row)
            .min(self.sources.len() - 1)
    }
}

/// Whether `b` can follow `a` in one array: the same element type (byte order may differ)
/// and the same trailing shape.
fn check_compatible(a: &ArrayMeta, b: &ArrayMeta) -> Result<()> {
    if a.dtype.kind != b.dtype.kind || a.dtype.size != b.dtype.size {
        return Err(Error::new(
            ErrorKind::Mismatch,
            Some(&b.path),
            format!(
                "dtype {} differs from {} of {}",
                b.dtype.name(),
                a.dtype.name(),
                a.path.display()
            ),
        ));
    }
    if a.shape[1..] != b.shape[1..] {
        return Err(Error::new(
            ErrorKind::Mismatch,
            Some(&b.path),
            format!(
                "shape {} does not concatenate with {} of {} (the shapes after the first axis \
                 must be equal)",
                super::shape_str(&b.shape),
                super::shape_str(&a.shape),
                a.path.display()
            ),
        ));
    }
    Ok(())
}

fn concat_meta(first: &ArrayMeta, rows: u64) -> Result<ArrayMeta> {
    let mut shape = first.shape.clone();
    shape[0] = rows;
    let mut m = ArrayMeta::build(&first.path, first.dtype, shape, Order::C, 0, None)?;
    m.mapped = true;
    Ok(m)
}

/// Whether an input's rows can share leaves with its neighbours': elements contiguous in
/// the file, in C order.
fn joinable(s: &Source) -> bool {
    // An empty input has no bytes to place: it never splits a domain.
    s.meta.rows == 0
        || (matches!(s.storage, Storage::Mapped) && s.meta.mapped && s.meta.order == Order::C)
}

fn domains(sources: &[Source], starts: &[u64]) -> Vec<Domain> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sources.len() {
        let mut j = i + 1;
        if joinable(&sources[i]) {
            while j < sources.len() && joinable(&sources[j]) {
                j += 1;
            }
        }
        let meta = if j - i == 1 {
            sources[i].meta.clone()
        } else {
            concat_meta(&sources[i].meta, starts[j] - starts[i]).expect("checked shapes")
        };
        out.push(Domain {
            inputs: i..j,
            rows: starts[i]..starts[j],
            meta,
        });
        i = j;
    }
    out
}

/// Reads a list of paths, one a line (`-` reads standard input); blank lines are skipped.
pub fn read_list(list: &Path) -> Result<Vec<PathBuf>> {
    use std::io::Read;
    let mut text = String::new();
    if list == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::io(Path::new("<stdin>"), e))?;
    } else {
        text = std::fs::read_to_string(list).map_err(|e| Error::io(list, e))?;
    }
    Ok(text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(PathBuf::from)
        .collect())
}
