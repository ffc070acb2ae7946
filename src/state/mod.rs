//! A self-contained partial result ([`State`]): what a run over some rows leaves before its
//! trees are folded, mergeable with the states of runs over other rows of the same inputs,
//! and saved to and loaded from a checksummed file (`codec.rs`, `docs/state-format.md`).
//!
//! A state carries everything its numbers are relative to: the inputs (their paths, row
//! counts, sizes, modification times and header hashes), the array (dtype, shape), the
//! columns, and each column's shift (the value means are taken relative to: always row 0's,
//! so every run over the inputs shares it). Its accumulators are the nodes of the canonical
//! merge trees of the domains (see [`crate::source::inputs`]) that its rows cover. Merging
//! the states of runs over adjacent, leaf-aligned row ranges and folding the result gives
//! the bits of one run over all those rows, in any merge order.

mod codec;

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::Need;
use crate::moments::{Acc, Node, Tree};
use crate::source::{DType, Order};
use crate::{NanPolicy, Stat, Summary};

/// The identity of one input as a state records it: a state is only merged with states of
/// the same inputs, and a saved per-input state is only reused while its input is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputId {
    /// Its position in the job's list of inputs (0 for the first).
    pub index: u64,
    /// The path, as given.
    pub path: PathBuf,
    /// Its first row in the concatenated array.
    pub start: u64,
    /// Its rows.
    pub rows: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// CRC-32 of its first 4 KiB (the `.npy` header, the HDF5 superblock).
    pub header_crc: u32,
    /// The HDF5 dataset read from it.
    pub dataset: Option<String>,
}

impl InputId {
    /// Reads the identity of `path` now, for input number `index` of a job, of `rows` rows
    /// starting at global row `start`.
    pub fn of(
        path: &Path,
        dataset: Option<&str>,
        index: u64,
        start: u64,
        rows: u64,
    ) -> Result<InputId> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let md = f.metadata().map_err(|e| Error::io(path, e))?;
        let mut head = vec![0u8; md.len().min(4096) as usize];
        f.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(path, e))?;
        Ok(InputId {
            index,
            path: path.to_path_buf(),
            start,
            rows,
            size: md.len(),
            mtime_ns: md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec(),
            header_crc: crc32fast::hash(&head),
            dataset: dataset.map(str::to_string),
        })
    }

    /// The same file, unchanged: path, place, rows, size, modification time and header.
    pub fn same_file(&self, other: &InputId) -> bool {
        self == other
    }

    /// The same input of the same array, whatever its modification time (copies of one
    /// file on several machines merge).
    fn same_data(&self, other: &InputId) -> bool {
        self.index == other.index
            && self.path == other.path
            && self.start == other.start
            && self.rows == other.rows
            && self.size == other.size
            && self.header_crc == other.header_crc
            && self.dataset == other.dataset
    }
}

/// Which job a state belongs to: how many inputs it has and a fingerprint of their list
/// (every path, first row, row count and dataset, in order). States name only the inputs
/// they read; the fingerprint is what keeps states of other lists apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Job {
    /// Inputs in the job.
    pub(crate) inputs: u64,
    /// FNV-1a (64 bits) of the list, see [`Job::of`].
    pub(crate) fingerprint: u64,
}

impl Job {
    /// The job of inputs given as (path, first row, rows, dataset), in order.
    pub(crate) fn of<'a>(
        inputs: impl IntoIterator<Item = (&'a Path, u64, u64, Option<&'a str>)>,
    ) -> Job {
        use std::os::unix::ffi::OsStrExt;
        let mut h = Fnv::new();
        let mut n = 0u64;
        for (path, start, rows, dataset) in inputs {
            let p = path.as_os_str().as_bytes();
            h.write(&(p.len() as u64).to_le_bytes());
            h.write(p);
            h.write(&start.to_le_bytes());
            h.write(&rows.to_le_bytes());
            match dataset {
                Some(d) => {
                    h.write(&[1]);
                    h.write(&(d.len() as u64).to_le_bytes());
                    h.write(d.as_bytes());
                }
                None => h.write(&[0]),
            }
            n += 1;
        }
        Job {
            inputs: n,
            fingerprint: h.0,
        }
    }
}

/// FNV-1a, 64 bits: a stable hash (the standard library's may change between releases).
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The mergeable state of a run over some rows of its inputs (see
/// [`crate::Request::run_state`]): merge states of other rows with [`State::merge`], then
/// [`State::finish`]; save and load with [`State::save`] and [`State::load`].
///
/// A state names only the inputs it read (and the empty ones at its edges), so its size is
/// that of what it covers, not of the job: 10,000 shards give 10,000 small states.
#[derive(Clone, Debug, PartialEq)]
pub struct State {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<u64>,
    pub(crate) order: Order,
    pub(crate) dataset: Option<String>,
    pub(crate) nan: NanPolicy,
    pub(crate) ddof: u64,
    pub(crate) stats: Vec<Stat>,
    pub(crate) need: Need,
    /// The job's input list, as a count and a fingerprint.
    pub(crate) job: Job,
    /// The inputs named, sorted by index, unique.
    pub(crate) inputs: Vec<InputId>,
    /// Selected columns, sorted, unique.
    pub(crate) columns: Vec<u64>,
    /// The columns in output order (each one of `columns`).
    pub(crate) output: Vec<u64>,
    /// Each column's shift, as bits (f64 bits for floats, the integer for integer dtypes).
    pub(crate) shift: Vec<u64>,
    /// The row ranges covered, sorted and disjoint.
    pub(crate) rows: Vec<Range<u64>>,
    /// The leading domains already folded, left to right (see [`State::fold_head`]).
    pub(crate) head: Option<Head>,
    /// The nodes held, per domain (see [`crate::source::inputs`]), in row order.
    pub(crate) domains: Vec<DomainNodes>,
    /// Whether each input's own results were asked for, and then each input's own tree:
    /// its nodes, its memory order (for its summary); sorted by input.
    pub(crate) per_input: Option<Vec<InputNodes>>,
}

/// The fold of a state's leading domains, left to right, as [`State::fold`] would begin:
/// nothing before `rows.end` can be merged in any more.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Head {
    /// From the state's first row to the end of the last domain folded.
    pub(crate) rows: Range<u64>,
    /// One accumulator per selected column.
    pub(crate) accs: Vec<Acc>,
}

/// The nodes a state holds of one input's own tree (`--per-file`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InputNodes {
    /// The input's index in the job.
    pub(crate) input: u64,
    /// Its memory order, as its own summary reports it.
    pub(crate) order: Order,
    /// The nodes, in the input's domain's leaves.
    pub(crate) tree: DomainNodes,
}

/// The former name of [`State`].
pub type Partial = State;

/// The nodes a state holds of one domain's canonical tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DomainNodes {
    /// The domain's global rows (its tree's leaves are counted from the first).
    pub(crate) rows: Range<u64>,
    /// Rows per leaf of its tree.
    pub(crate) leaf_rows: u64,
    /// Nodes, in leaf order; `accs` per selected column.
    pub(crate) nodes: Vec<Node>,
}

impl State {
    /// The row ranges this state covers, sorted.
    pub fn rows(&self) -> &[Range<u64>] {
        &self.rows
    }

    /// The selected columns, sorted.
    pub fn columns(&self) -> &[u64] {
        &self.columns
    }

    /// The inputs this state names (those its rows lie in, and the empty ones at their
    /// edges), in row order. After merging the states of a whole job, every input.
    pub fn inputs(&self) -> &[InputId] {
        &self.inputs
    }

    /// Rows of the whole array (every input of the job).
    pub fn array_rows(&self) -> u64 {
        self.shape[0]
    }

    /// How many inputs the job has.
    pub fn input_count(&self) -> u64 {
        self.job.inputs
    }

    /// Number of rows covered.
    pub fn row_count(&self) -> u64 {
        self.rows.iter().map(|r| r.end - r.start).sum()
    }

    /// The rows between the first and the last covered row that no range covers.
    pub fn gaps(&self) -> Vec<Range<u64>> {
        self.rows
            .windows(2)
            .filter(|w| w[0].end < w[1].start)
            .map(|w| w[0].end..w[1].start)
            .collect()
    }

    /// Whether every row of `r` is covered.
    fn covers(&self, r: &Range<u64>) -> bool {
        if r.is_empty() {
            return true;
        }
        let i = self.rows.partition_point(|x| x.end <= r.start);
        self.rows
            .get(i)
            .is_some_and(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Merges `other` (a run over other rows of the same inputs, with the same columns,
    /// NaN policy and statistics) into `self`. Refused when the two differ in any of those,
    /// or when their rows overlap. The nodes of every tree touched are compacted as they
    /// merge ([`State::compact`]), so merging many states one after another in row order
    /// keeps the merged state small.
    pub fn merge(&mut self, other: &State) -> Result<()> {
        let differ = |what: &str| {
            Err(Error::new(
                ErrorKind::Mismatch,
                None,
                format!("cannot merge states of different {what}"),
            ))
        };
        if self.job != other.job {
            return differ("inputs");
        }
        if self.dtype != other.dtype || self.shape != other.shape || self.dataset != other.dataset {
            return differ("arrays");
        }
        if self.columns != other.columns || self.output != other.output {
            return differ("columns");
        }
        if self.nan != other.nan {
            return differ("NaN policies");
        }
        if self.need != other.need || self.stats != other.stats {
            return differ("statistics");
        }
        if self.shift != other.shift {
            return differ("reference rows");
        }
        if self.per_input.is_some() != other.per_input.is_some() {
            return differ("options (per-input results in one only)");
        }
        // Only the inputs from the first one `other` names can be named by both (row-order
        // merges share one or two at the boundary): the rest of `self` stays as it is.
        let from = other.inputs.first().map_or(self.inputs.len(), |y| {
            self.inputs.partition_point(|x| x.index < y.index)
        });
        let Some(tail) = union_inputs(&self.inputs[from..], &other.inputs) else {
            return differ("inputs (an input changed between the runs)");
        };
        let mut rows: Vec<Range<u64>> = self.rows.iter().chain(&other.rows).cloned().collect();
        rows.sort_by_key(|r| r.start);
        if let Some(w) = rows.windows(2).find(|w| w[0].end > w[1].start) {
            return Err(Error::new(
                ErrorKind::Mismatch,
                None,
                format!(
                    "cannot merge states whose rows overlap ({}:{} and {}:{})",
                    w[0].start, w[0].end, w[1].start, w[1].end
                ),
            ));
        }
        // A folded head must come first: nothing before its end may join it.
        for (a, b) in [(&*self, other), (other, &*self)] {
            if let Some(h) = &a.head {
                if b.head.is_some() || b.rows.iter().any(|r| r.start < h.rows.end) {
                    return Err(Error::new(
                        ErrorKind::Mismatch,
                        None,
                        format!(
                            "cannot merge rows before row {} into a state whose rows up to \
                             there are already folded (merge states in row order)",
                            h.rows.end
                        ),
                    ));
                }
            }
        }
        // Adjacent ranges join.
        let mut joined: Vec<Range<u64>> = Vec::with_capacity(rows.len());
        for r in rows {
            match joined.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => joined.push(r),
            }
        }
        // Everything that can refuse is checked before anything changes.
        for d in &other.domains {
            let overlaps = |x: &DomainNodes| x.rows.start < d.rows.end && d.rows.start < x.rows.end;
            if self.domains.iter().any(|x| overlaps(x) && x.rows != d.rows) {
                return differ("input layouts");
            }
            if self
                .domains
                .iter()
                .any(|x| x.rows == d.rows && x.leaf_rows != d.leaf_rows)
            {
                return differ("leaf sizes");
            }
        }
        if let (Some(mine), Some(theirs)) = (&self.per_input, &other.per_input) {
            for t in theirs {
                if let Ok(k) = mine.binary_search_by_key(&t.input, |m| m.input) {
                    let m = &mine[k];
                    if m.tree.rows != t.tree.rows || m.tree.leaf_rows != t.tree.leaf_rows {
                        return differ("input layouts");
                    }
                }
            }
        }
        for d in &other.domains {
            match self.domains.iter_mut().find(|x| x.rows == d.rows) {
                Some(x) => {
                    x.nodes.extend(d.nodes.iter().cloned());
                    x.nodes.sort_by_key(|n| n.first_leaf);
                }
                None => {
                    let at = self
                        .domains
                        .partition_point(|x| x.rows.start < d.rows.start);
                    self.domains.insert(at, d.clone());
                }
            }
        }
        if let (Some(mine), Some(theirs)) = (&mut self.per_input, &other.per_input) {
            for t in theirs {
                match mine.binary_search_by_key(&t.input, |m| m.input) {
                    Ok(k) => {
                        let m = &mut mine[k].tree.nodes;
                        m.extend(t.tree.nodes.iter().cloned());
                        m.sort_by_key(|n| n.first_leaf);
                    }
                    Err(k) => mine.insert(k, t.clone()),
                }
            }
        }
        if other.head.is_some() {
            self.head = other.head.clone();
        }
        self.rows = joined;
        self.inputs.truncate(from);
        self.inputs.extend(tail);
        // Compact what this merge touched.
        let touched: Vec<u64> = other.domains.iter().map(|d| d.rows.start).collect();
        let touched_inputs: Vec<u64> = other.per_input.iter().flatten().map(|t| t.input).collect();
        self.compact_some(Some(&touched), Some(&touched_inputs));
        Ok(())
    }

    /// Merges the nodes that are the two halves of a node of the canonical tree into that
    /// node, as the final fold would, and folds each tree whose rows are all covered into
    /// one node: the same results from fewer bytes (a state over a contiguous range keeps
    /// at most about two nodes per tree level).
    pub fn compact(&mut self) {
        self.compact_some(None, None);
    }

    /// Compacts the trees of the domains starting at `domains` and of the inputs `inputs`
    /// (`None`: all of them), found by binary search so that a merge costs what it touches.
    fn compact_some(&mut self, domains: Option<&[u64]>, inputs: Option<&[u64]>) {
        let mut doms = std::mem::take(&mut self.domains);
        let picked: Vec<usize> = match domains {
            None => (0..doms.len()).collect(),
            Some(starts) => starts
                .iter()
                .filter_map(|s| doms.binary_search_by_key(s, |d| d.rows.start).ok())
                .collect(),
        };
        for k in picked {
            let complete = self.covers(&doms[k].rows);
            compact_tree(&mut doms[k], complete);
        }
        self.domains = doms;
        let mut per = self.per_input.take();
        if let Some(per) = per.as_mut() {
            let picked: Vec<usize> = match inputs {
                None => (0..per.len()).collect(),
                Some(ids) => ids
                    .iter()
                    .filter_map(|i| per.binary_search_by_key(i, |p| p.input).ok())
                    .collect(),
            };
            for k in picked {
                let p = &mut per[k];
                let complete = match self.inputs.binary_search_by_key(&p.input, |i| i.index) {
                    Ok(j) => {
                        let id = &self.inputs[j];
                        self.covers(&(id.start..id.start + id.rows))
                    }
                    Err(_) => false,
                };
                compact_tree(&mut p.tree, complete);
            }
        }
        self.per_input = per;
    }

    /// Folds the leading domains whose rows are all covered, from row 0, into the state's
    /// head, left to right as [`State::fold`] does: a state merged in row order from row 0
    /// (a batch's, rank 0's, `merge_files`') then stays one accumulator per column however
    /// many domains (HDF5 shards) it has passed.
    pub(crate) fn fold_head(&mut self) {
        // Only from row 0, before which nothing can come: a head that began later could not
        // be merged after the rows before it (a left fold does not regroup).
        let Some(first) = self.rows.first().cloned().filter(|r| r.start == 0) else {
            return;
        };
        let k = self
            .domains
            .iter()
            .take_while(|d| d.rows.end <= first.end)
            .count();
        if k == 0 {
            return;
        }
        let mut acc = self.head.take().map(|h| (h.rows, h.accs));
        for d in self.domains.drain(..k) {
            let Some(a) = fold_tree(&d) else { continue };
            acc = Some(match acc {
                None => (first.start..d.rows.end, a),
                Some((rows, mut x)) => {
                    crate::moments::merge_into(&mut x, &a);
                    (rows.start..d.rows.end, x)
                }
            });
        }
        self.head = acc.map(|(rows, accs)| Head { rows, accs });
    }

    /// The accumulators of the selected columns: each domain's nodes pushed in leaf order
    /// into its tree and folded, then the domains' results folded left to right, as a run
    /// over all the rows does.
    pub(crate) fn fold(&self) -> Vec<Acc> {
        let mut out: Option<Vec<Acc>> = self.head.as_ref().map(|h| h.accs.clone());
        for d in &self.domains {
            let Some(accs) = fold_tree(d) else { continue };
            out = Some(match out {
                None => accs,
                Some(mut a) => {
                    crate::moments::merge_into(&mut a, &accs);
                    a
                }
            });
        }
        out.unwrap_or_else(|| vec![Acc::EMPTY; self.columns.len()])
    }

    /// Accumulators of the selected (sorted) columns, in output order.
    fn in_output_order(&self, accs: &[Acc]) -> Vec<Acc> {
        self.output
            .iter()
            .map(|c| accs[self.columns.binary_search(c).expect("validated")])
            .collect()
    }

    /// Each input's own summary, when the run asked for them (else empty): the rows of the
    /// input that the state covers, for every input it names.
    fn per_input_summaries(&self, stats: &[Stat], ddof: Option<u64>) -> Vec<Summary> {
        let Some(per) = &self.per_input else {
            return Vec::new();
        };
        let how = crate::run::Finish {
            stats,
            ddof: ddof.unwrap_or(self.ddof),
            nan: self.nan,
        };
        self.inputs
            .iter()
            .map(|id| {
                let mine = per
                    .binary_search_by_key(&id.index, |p| p.input)
                    .ok()
                    .map(|k| &per[k]);
                let accs = mine
                    .and_then(|p| fold_tree(&p.tree))
                    .unwrap_or_else(|| vec![Acc::EMPTY; self.columns.len()]);
                let picked = self.in_output_order(&accs);
                let rows: u64 = self
                    .rows
                    .iter()
                    .map(|r| {
                        r.end
                            .min(id.start + id.rows)
                            .saturating_sub(r.start.max(id.start))
                    })
                    .sum();
                let mut shape = self.shape.clone();
                shape[0] = id.rows;
                let order = mine.map_or(Order::C, |p| p.order);
                let mut s = crate::run::summarise(
                    &how,
                    &id.path,
                    self.dtype,
                    &shape,
                    order,
                    rows,
                    self.output.clone(),
                    &picked,
                );
                s.dataset = id.dataset.clone();
                s
            })
            .collect()
    }

    /// The summary of the rows covered: the statistics the run asked for, with `ddof`
    /// (`None`: the run's) applied now. What one run over the same rows would report.
    pub fn finish(&self, ddof: Option<u64>) -> Summary {
        self.finish_with(&self.stats, ddof)
            .expect("a state derives its own statistics")
    }

    /// [`State::finish`] for other statistics: refused for those the state cannot derive
    /// (min and max need a run that computed them, so do sum, mean, var and std).
    pub fn finish_with(&self, stats: &[Stat], ddof: Option<u64>) -> Result<Summary> {
        let needs = crate::stats::needs(stats);
        if (needs.moments && !self.need.moments) || (needs.minmax && !self.need.minmax) {
            let missing: Vec<&str> = stats
                .iter()
                .filter(|s| {
                    let n = crate::stats::needs(&[**s]);
                    (n.moments && !self.need.moments) || (n.minmax && !self.need.minmax)
                })
                .map(|s| s.name())
                .collect();
            let saved: Vec<&str> = self.stats.iter().map(|s| s.name()).collect();
            return Err(Error::new(
                ErrorKind::Request,
                None,
                format!(
                    "cannot give {}: the state was saved by a run of {} only, which kept \
                     no accumulators for {}",
                    missing.join(", "),
                    saved.join(", "),
                    if missing.len() == 1 { "it" } else { "them" }
                ),
            ));
        }
        let picked = self.in_output_order(&self.fold());
        let path = self
            .inputs
            .first()
            .map(|i| i.path.clone())
            .unwrap_or_default();
        let mut s = crate::run::summarise(
            &crate::run::Finish {
                stats,
                ddof: ddof.unwrap_or(self.ddof),
                nan: self.nan,
            },
            &path,
            self.dtype,
            &self.shape,
            self.order,
            self.row_count(),
            self.output.clone(),
            &picked,
        );
        s.dataset = self.dataset.clone();
        s.inputs = self.inputs.iter().map(|i| i.path.clone()).collect();
        s.per_input = self.per_input_summaries(stats, ddof);
        Ok(s)
    }

    /// Loads the state files `paths` and merges them, in any order: states whose rows
    /// overlap, or that differ in inputs, columns, NaN policy or statistics, are refused
    /// naming both files. Rows between the states that none covers are an
    /// [`ErrorKind::Gap`] error unless `allow_gaps`; the merged state's [`State::gaps`] lists
    /// them.
    ///
    /// The files are read twice, one at a time: once for the rows each covers, then in row
    /// order to merge, so time is linear in their number and memory that of one state and
    /// the merged result (which stays small: see [`State::merge`]).
    pub fn merge_files<P: AsRef<Path>>(paths: &[P], allow_gaps: bool) -> Result<State> {
        if paths.is_empty() {
            return Err(Error::new(ErrorKind::Request, None, "no state files"));
        }
        // The rows of every state, then the order to merge them in.
        let mut index: Vec<(usize, Vec<Range<u64>>, u64)> = Vec::with_capacity(paths.len());
        for (k, p) in paths.iter().enumerate() {
            let p = p.as_ref();
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            let (rows, at) = codec::rows_of(&bytes).map_err(|e| e.with_path(p))?;
            index.push((k, rows, at));
        }
        // Merge in row order, so that any order of the arguments gives the same bits (a
        // state without rows, of an empty input, where its first input lies).
        index.sort_by_key(|(k, rows, at)| (rows.first().map_or(*at, |r| r.start), *k));
        let path_of = |j: usize| paths[index[j].0].as_ref();
        let mut merged = State::load(path_of(0))?;
        merged.fold_head();
        for j in 1..index.len() {
            let p = path_of(j);
            let s = State::load(p)?;
            if let Err(e) = merged.merge(&s) {
                // Name the earlier state it clashes with: one whose rows it overlaps, else
                // the first.
                let overlaps = |t: &[Range<u64>]| {
                    t.iter()
                        .any(|r| s.rows.iter().any(|x| x.start < r.end && r.start < x.end))
                };
                let other = (0..j)
                    .find(|&i| overlaps(&index[i].1))
                    .map_or(path_of(0), path_of);
                return Err(Error::new(
                    e.kind(),
                    Some(p),
                    format!("{} (and {})", e.message(), other.display()),
                ));
            }
            merged.fold_head();
        }
        let gaps = merged.gaps();
        if let (Some(g), false) = (gaps.first(), allow_gaps) {
            let list: Vec<String> = gaps
                .iter()
                .map(|g| format!("{}:{}", g.start, g.end))
                .collect();
            // The states on either side of the first gap.
            let before = (0..index.len())
                .find(|&i| index[i].1.iter().any(|r| r.end == g.start))
                .map_or(path_of(0), path_of);
            let after = (0..index.len())
                .find(|&i| index[i].1.iter().any(|r| r.start == g.end))
                .map_or(path_of(index.len() - 1), path_of);
            return Err(Error::new(
                ErrorKind::Gap,
                Some(before),
                format!(
                    "no state covers rows {} (between this state and {})",
                    list.join(", "),
                    after.display()
                ),
            ));
        }
        Ok(merged)
    }

    /// The state as bytes (see `docs/state-format.md`).
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads a state from bytes; a truncated, corrupt or newer-version state is an error
    /// ([`ErrorKind::State`]), never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<State> {
        codec::decode(bytes)
    }

    /// Writes the state to `path` atomically (a temporary file, synced, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::report::write_atomic(path, &self.to_bytes()).map_err(|e| Error::io(path, e))
    }

    /// [`State::save`] without waiting for the disk: a batch's states, of which a power
    /// failure can at worst leave the last few missing or damaged (their checksum tells,
    /// and `--resume` computes them again). A crash of the process loses nothing written.
    pub(crate) fn save_unsynced(&self, path: &Path) -> Result<()> {
        crate::report::write_renamed(path, &self.to_bytes(), false).map_err(|e| Error::io(path, e))
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<State> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        codec::decode(&bytes).map_err(|e| e.with_path(path))
    }
}

/// The inputs two states name, as one list sorted by index; `None` when an input both
/// name differs between them.
fn union_inputs(a: &[InputId], b: &[InputId]) -> Option<Vec<InputId>> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.index == y.index => {
                if !x.same_data(y) {
                    return None;
                }
                out.push(x.clone());
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.index < y.index => {
                out.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                out.push(x.clone());
                i += 1;
            }
            (None, None) => unreachable!(),
        }
    }
    Some(out)
}

/// A tree's nodes pushed in leaf order and folded (`None` when it holds none).
fn fold_tree(d: &DomainNodes) -> Option<Vec<Acc>> {
    let mut tree = Tree::new();
    for n in &d.nodes {
        match n.level {
            Some(l) => tree.push_at(n.first_leaf, l, n.accs.clone()),
            None => tree.push_tail(n.first_leaf, n.accs.clone()),
        }
    }
    tree.finish()
}

/// A tree's nodes pushed in leaf order into its canonical tree; a tree whose rows are all
/// covered (`complete`: nothing more can join it) folded into one node.
fn compact_tree(d: &mut DomainNodes, complete: bool) {
    if complete && d.nodes.len() > 1 {
        let first = d.nodes[0].first_leaf;
        if let Some(accs) = fold_tree(d) {
            d.nodes = vec![Node {
                first_leaf: first,
                level: None,
                accs,
            }];
        }
        return;
    }
    let mut tree = Tree::new();
    for n in std::mem::take(&mut d.nodes) {
        match n.level {
            Some(l) => tree.push_at(n.first_leaf, l, n.accs),
            None => tree.push_tail(n.first_leaf, n.accs),
        }
    }
    d.nodes = tree.into_nodes();
}
