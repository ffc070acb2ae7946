//! A self-contained partial result: what a run over some rows leaves before its tree is
//! folded, mergeable with the partials of runs over other rows of the same array.
//!
//! A partial carries everything its numbers are relative to: the array (dtype, shape), the
//! columns, the leaf size, and each column's shift (the value means are taken relative to,
//! always row 0's, so every run over the array shares it). Its accumulators are the nodes of
//! the canonical merge tree over all the array's leaves, counted from row 0, that its rows
//! cover. Merging the partials of runs over adjacent, leaf-aligned row ranges and folding
//! the result gives the bits of one run over all those rows.

use std::ops::Range;

use crate::error::{Error, ErrorKind, Result};
use crate::moments::{Acc, Node, Tree};
use crate::source::DType;

/// The mergeable state of a run over some rows of an array (see [`crate::Request::run_partial`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<u64>,
    /// Selected columns, sorted, unique.
    pub(crate) columns: Vec<u64>,
    /// Each column's shift, as bits (f64 bits for floats, the integer for integer dtypes).
    pub(crate) shift: Vec<u64>,
    /// The row ranges covered, sorted and disjoint.
    pub(crate) rows: Vec<Range<u64>>,
    /// The nodes held, per domain (see [`crate::source::inputs`]), in row order.
    pub(crate) domains: Vec<DomainNodes>,
}

/// The nodes a partial holds of one domain's canonical tree.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DomainNodes {
    /// The domain's global rows (its tree's leaves are counted from the first).
    pub(crate) rows: Range<u64>,
    /// Rows per leaf of its tree.
    pub(crate) leaf_rows: u64,
    /// Nodes, in leaf order; `accs` per selected column.
    pub(crate) nodes: Vec<Node>,
}

impl Partial {
    /// The row ranges this partial covers, sorted.
    pub fn rows(&self) -> &[Range<u64>] {
        &self.rows
    }

    /// The selected columns, sorted.
    pub fn columns(&self) -> &[u64] {
        &self.columns
    }

    /// Merges `other` (another run over other rows of the same array, with the same
    /// columns) into `self`. Refused when the two differ in array, columns, leaf size or
    /// shift, or when their rows overlap.
    pub fn merge(&mut self, other: &Partial) -> Result<()> {
        let differ = |what: &str| {
            Err(Error::new(
                ErrorKind::Request,
                None,
                format!("cannot merge partial results of different {what}"),
            ))
        };
        if self.dtype != other.dtype || self.shape != other.shape {
            return differ("arrays");
        }
        if self.columns != other.columns {
            return differ("columns");
        }
        if self.shift != other.shift {
            return differ("reference rows");
        }
        let mut rows: Vec<Range<u64>> = self.rows.iter().chain(&other.rows).cloned().collect();
        rows.sort_by_key(|r| r.start);
        if rows.windows(2).any(|w| w[0].end > w[1].start) {
            return Err(Error::new(
                ErrorKind::Request,
                None,
                "cannot merge partial results whose rows overlap",
            ));
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
        self.rows = rows;
        self.domains = domains;
        Ok(())
    }

    /// Number of rows covered.
    pub fn row_count(&self) -> u64 {
        self.rows.iter().map(|r| r.end - r.start).sum()
    }

    /// The accumulators of the selected columns: the nodes pushed in row order into one
    /// canonical tree, then folded.
    /// Each domain's nodes are pushed in leaf order into its tree and folded; the domains'
    /// results are folded left to right, as a run over all the rows does.
    pub(crate) fn fold(&self) -> Vec<Acc> {
        let mut out: Option<Vec<Acc>> = None;
        for d in &self.domains {
            let mut tree = Tree::new();
            for n in &d.nodes {
                match n.level {
                    Some(l) => tree.push_at(n.first_leaf, l, n.accs.clone()),
                    None => tree.push_tail(n.first_leaf, n.accs.clone()),
                }
            }
            let Some(accs) = tree.finish() else { continue };
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
}
