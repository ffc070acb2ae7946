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
    /// Reads the identity of `path` now, for an input of `rows` rows starting at `start`.
    pub fn of(path: &Path, dataset: Option<&str>, start: u64, rows: u64) -> Result<InputId> {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let md = f.metadata().map_err(|e| Error::io(path, e))?;
        let mut head = vec![0u8; md.len().min(4096) as usize];
        f.read_exact_at(&mut head, 0)
            .map_err(|e| Error::io(path, e))?;
        Ok(InputId {
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
        self.path == other.path
            && self.start == other.start
            && self.rows == other.rows
            && self.size == other.size
            && self.header_crc == other.header_crc
            && self.dataset == other.dataset
    }
}

/// The mergeable state of a run over some rows of its inputs (see
/// [`crate::Request::run_state`]): merge states of other rows with [`State::merge`], then
/// [`State::finish`]; save and load with [`State::save`] and [`State::load`].
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
    pub(crate) inputs: Vec<InputId>,
    /// Selected columns, sorted, unique.
    pub(crate) columns: Vec<u64>,
    /// The columns in output order (each one of `columns`).
    pub(crate) output: Vec<u64>,
    /// Each column's shift, as bits (f64 bits for floats, the integer for integer dtypes).
    pub(crate) shift: Vec<u64>,
    /// The row ranges covered, sorted and disjoint.
    pub(crate) rows: Vec<Range<u64>>,
    /// The nodes held, per domain (see [`crate::source::inputs`]), in row order.
    pub(crate) domains: Vec<DomainNodes>,
    /// Whether each input's own results were asked for, and then each input's own tree:
    /// its nodes, its memory order (for its summary).
    pub(crate) per_input: Option<Vec<InputNodes>>,
}

/// The nodes a state holds of one input's own tree (`--per-file`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InputNodes {
    /// The input's index among the state's inputs.
    pub(crate) input: usize,
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

    /// The inputs of the run, in row order.
    pub fn inputs(&self) -> &[InputId] {
        &self.inputs
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

    /// Merges `other` (a run over other rows of the same inputs, with the same columns,
    /// NaN policy and statistics) into `self`. Refused when the two differ in any of those,
    /// or when their rows overlap.
    pub fn merge(&mut self, other: &State) -> Result<()> {
        let differ = |what: &str| {
            Err(Error::new(
                ErrorKind::Mismatch,
                None,
                format!("cannot merge states of different {what}"),
            ))
        };
        if self.inputs.len() != other.inputs.len()
            || self
                .inputs
                .iter()
                .zip(&other.inputs)
                .any(|(a, b)| !a.same_data(b))
        {
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
        // Adjacent ranges join.
        let mut joined: Vec<Range<u64>> = Vec::with_capacity(rows.len());
        for r in rows {
            match joined.last_mut() {
                Some(l) if l.end == r.start => l.end = r.end,
                _ => joined.push(r),
            }
        }
        let mut domains = self.domains.clone();
        for d in &other.domains {
            let overlaps = |x: &DomainNodes| x.rows.start < d.rows.end && d.rows.start < x.rows.end;
            if domains.iter().any(|x| overlaps(x) && x.rows != d.rows) {
                return differ("input layouts");
            }
            match domains.iter_mut().find(|x| x.rows == d.rows) {
                Some(x) if x.leaf_rows == d.leaf_rows => {
                    x.nodes.extend(d.nodes.iter().cloned());
                    x.nodes.sort_by_key(|n| n.first_leaf);
                }
                Some(_) => return differ("leaf sizes"),
                None => domains.push(d.clone()),
            }
        }
        domains.sort_by_key(|d| d.rows.start);
        if let (Some(mine), Some(theirs)) = (&mut self.per_input, &other.per_input) {
            for t in theirs {
                match mine.iter_mut().find(|m| m.input == t.input) {
                    Some(m)
                        if m.tree.rows == t.tree.rows && m.tree.leaf_rows == t.tree.leaf_rows =>
                    {
                        m.tree.nodes.extend(t.tree.nodes.iter().cloned());
                        m.tree.nodes.sort_by_key(|n| n.first_leaf);
                    }
                    Some(_) => return differ("input layouts"),
                    None => mine.push(t.clone()),
                }
            }
            mine.sort_by_key(|m| m.input);
        }
        self.rows = joined;
        self.domains = domains;
        Ok(())
    }

    /// Merges the nodes that are the two halves of a node of the canonical tree into that
    /// node, as the final fold would: the same results from fewer bytes (a state over a
    /// contiguous range keeps at most about two nodes per tree level).
    pub fn compact(&mut self) {
        let inputs = self.per_input.iter_mut().flatten().map(|i| &mut i.tree);
        for d in self.domains.iter_mut().chain(inputs) {
            let mut tree = Tree::new();
            for n in std::mem::take(&mut d.nodes) {
                match n.level {
                    Some(l) => tree.push_at(n.first_leaf, l, n.accs),
                    None => tree.push_tail(n.first_leaf, n.accs),
                }
            }
            d.nodes = tree.into_nodes();
        }
    }

    /// The accumulators of the selected columns: each domain's nodes pushed in leaf order
    /// into its tree and folded, then the domains' results folded left to right, as a run
    /// over all the rows does.
    pub(crate) fn fold(&self) -> Vec<Acc> {
        let mut out: Option<Vec<Acc>> = None;
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
    /// input that the state covers.
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
            .enumerate()
            .map(|(i, id)| {
                let accs = per
                    .iter()
                    .find(|p| p.input == i)
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
                let order = per
                    .iter()
                    .find(|p| p.input == i)
                    .map_or(Order::C, |p| p.order);
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
            return Err(Error::new(
                ErrorKind::Request,
                None,
                "the state was saved without the accumulators these statistics need",
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
    pub fn merge_files<P: AsRef<Path>>(paths: &[P], allow_gaps: bool) -> Result<State> {
        let mut states = Vec::with_capacity(paths.len());
        for p in paths {
            states.push((p.as_ref(), State::load(p.as_ref())?));
        }
        if states.is_empty() {
            return Err(Error::new(ErrorKind::Request, None, "no state files"));
        }
        // Merge in row order, so that any order of the arguments gives the same bits.
        states.sort_by_key(|(_, s)| s.rows.first().map_or(0, |r| r.start));
        let mut merged = states[0].1.clone();
        for (k, (p, s)) in states.iter().enumerate().skip(1) {
            if let Err(e) = merged.merge(s) {
                // Name the earlier state it clashes with: one whose rows it overlaps, else
                // the first.
                let overlaps = |t: &State| {
                    t.rows
                        .iter()
                        .any(|r| s.rows.iter().any(|x| x.start < r.end && r.start < x.end))
                };
                let other = states[..k]
                    .iter()
                    .find(|(_, t)| overlaps(t))
                    .map_or(states[0].0, |(q, _)| *q);
                return Err(Error::new(
                    e.kind(),
                    Some(p),
                    format!("{} (and {})", e.message(), other.display()),
                ));
            }
        }
        let gaps = merged.gaps();
        if !gaps.is_empty() && !allow_gaps {
            let list: Vec<String> = gaps
                .iter()
                .map(|g| format!("{}:{}", g.start, g.end))
                .collect();
            return Err(Error::new(
                ErrorKind::Gap,
                None,
                format!("no state covers rows {}", list.join(", ")),
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

    /// Writes the state to `path` atomically (a temporary file, then a rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::report::write_atomic(path, &self.to_bytes()).map_err(|e| Error::io(path, e))
    }

    /// Reads a state file.
    pub fn load(path: &Path) -> Result<State> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        codec::decode(&bytes).map_err(|e| e.with_path(path))
    }
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
