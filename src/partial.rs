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
    pub(crate) leaf_rows: u64,
    /// The row ranges covered, sorted and disjoint.
    pub(crate) rows: Vec<Range<u64>>,
    /// Nodes of the canonical tree, in row order; `accs` per selected column.
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
        if self.leaf_rows != other.leaf_rows || self.shift != other.shift {
            return differ("leaf sizes or reference rows");
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
        let mut nodes: Vec<Node> = self.nodes.iter().chain(&other.nodes).cloned().collect();
        nodes.sort_by_key(|n| n.first_leaf);
        self.rows = rows;
        self.nodes = nodes;
        Ok(())
    }

    /// Number of rows covered.
    pub fn row_count(&self) -> u64 {
        self.rows.iter().map(|r| r.end - r.start).sum()
    }

    /// The accumulators of the selected columns: the nodes pushed in row order into one
    /// canonical tree, then folded.
    pub(crate) fn fold(&self) -> Vec<Acc> {
        let mut tree = Tree::new();
        for n in &self.nodes {
            match n.level {
                Some(l) => tree.push_at(n.first_leaf, l, n.accs.clone()),
                None => tree.push_tail(n.first_leaf, n.accs.clone()),
            }
        }
        tree.finish()
            .unwrap_or_else(|| vec![Acc::EMPTY; self.columns.len()])
    }
}
