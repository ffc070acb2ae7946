//! The per-column accumulator and its exact, order-fixed merge.
//!
//! Mean and M2 (the sum of squared deviations) merge by Chan, Golub and LeVeque's pairwise
//! update; sums carry a compensation term (Neumaier) so long columns keep f64 accuracy; counts,
//! integer sums, minima and maxima merge exactly. Partials are combined in a canonical binary
//! tree over fixed-size leaves ([`Tree`]), so the answer does not depend on how rows were split
//! into blocks or how many threads reduced them.

/// Running statistics of one column over some rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Acc {
    /// Non-NaN values seen.
    pub n: u64,
    /// NaN values seen.
    pub nan: u64,
    /// Mean of the non-NaN values (0 when `n == 0`).
    pub mean: f64,
    /// Sum of squared deviations from `mean`.
    pub m2: f64,
    /// Sum of the non-NaN values, high part.
    pub sum_hi: f64,
    /// Sum of the non-NaN values, compensation (low) part.
    pub sum_lo: f64,
    /// Smallest non-NaN value (`+inf` when none).
    pub min: f64,
    /// Largest non-NaN value (`-inf` when none).
    pub max: f64,
    /// Exact sum, for integer dtypes.
    pub isum: i128,
    /// Exact minimum, for integer dtypes (`i128::MAX` when none).
    pub imin: i128,
    /// Exact maximum, for integer dtypes (`i128::MIN` when none).
    pub imax: i128,
}

impl Default for Acc {
    fn default() -> Self {
        Acc::EMPTY
    }
}

/// `a + b` as an unevaluated pair (sum, rounding error).
#[inline]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

impl Acc {
    /// No values seen.
    pub const EMPTY: Acc = Acc {
        n: 0,
        nan: 0,
        mean: 0.0,
        m2: 0.0,
        sum_hi: 0.0,
        sum_lo: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        isum: 0,
        imin: i128::MAX,
        imax: i128::MIN,
    };

    /// The sum of the non-NaN values, rounded once.
    pub fn sum(&self) -> f64 {
        if self.sum_hi.is_finite() {
            self.sum_hi + self.sum_lo
        } else {
            self.sum_hi
        }
    }

    /// Combines `self` (earlier rows) with `b` (later rows).
    #[inline]
    pub fn merge(&self, b: &Acc) -> Acc {
        let a = self;
        let n = a.n + b.n;
        let (mean, m2) = if b.n == 0 {
            (a.mean, a.m2)
        } else if a.n == 0 {
            (b.mean, b.m2)
        } else if a.mean.is_finite() && b.mean.is_finite() {
            let (na, nb, nf) = (a.n as f64, b.n as f64, n as f64);
            let delta = b.mean - a.mean;
            let mean = a.mean + delta * (nb / nf);
            let m2 = a.m2 + b.m2 + delta * delta * (na * (nb / nf));
            (mean, m2)
        } else {
            // An infinity dominates the mean (inf and -inf give NaN); the spread is undefined.
            (a.mean + b.mean, f64::NAN)
        };
        let (sum_hi, sum_lo) = {
            let (s, e) = two_sum(a.sum_hi, b.sum_hi);
            if s.is_finite() {
                let lo = a.sum_lo + b.sum_lo + e;
                let (h, l) = two_sum(s, lo);
                (h, l)
            } else {
                (s, 0.0)
            }
        };
        Acc {
            n,
            nan: a.nan + b.nan,
            mean,
            m2,
            sum_hi,
            sum_lo,
            min: a.min.min(b.min),
            max: a.max.max(b.max),
            isum: a.isum.wrapping_add(b.isum),
            imin: a.imin.min(b.imin),
            imax: a.imax.max(b.imax),
        }
    }
}

/// Merges `b` into `a`, column by column.
pub fn merge_into(a: &mut [Acc], b: &[Acc]) {
    debug_assert_eq!(a.len(), b.len());
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.merge(y);
    }
}

/// A canonical binary merge tree over a sequence of equal-sized leaves.
///
/// Leaves are pushed in order; two nodes of the same level merge as soon as both exist, and
/// [`Tree::finish`] folds what is left from the right. Pushing a whole aligned subtree (a block
/// of 2^k leaves already reduced by its own `Tree`) as one node at level k gives exactly the
/// same result as pushing its leaves one by one, which is what makes results independent of
/// block size and thread count.
#[derive(Debug, Default)]
pub struct Tree {
    /// (first leaf, level, node); `u64::MAX` as first leaf marks nodes pushed without an
    /// index ([`Tree::push`]'s sequential use, and tails).
    stack: Vec<(u64, u32, Vec<Acc>)>,
}

/// One node of a canonical tree: the merged partials of leaves
/// `first_leaf .. first_leaf + 2^level` (or, for a tail, of the leaves from `first_leaf` to
/// the end of the rows reduced).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Index of its first leaf, counted from row 0 of the array.
    pub first_leaf: u64,
    /// Its level: it holds 2^level leaves; `None` for a tail already folded.
    pub level: Option<u32>,
    /// One accumulator per column.
    pub accs: Vec<Acc>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Tree {
        Tree { stack: Vec::new() }
    }

    /// Adds the next node, which summarises 2^`level` leaves, leaves being pushed in order
    /// from the first of an aligned run (as the kernel does inside a block).
    pub fn push(&mut self, level: u32, mut node: Vec<Acc>) {
        let mut level = level;
        while let Some((_, l, _)) = self.stack.last() {
            if *l != level {
                break;
            }
            let (_, _, mut left) = self.stack.pop().expect("non-empty");
            merge_into(&mut left, &node);
            node = left;
            level += 1;
        }
        self.stack.push((u64::MAX, level, node));
    }

    /// Adds the node of leaves `first_leaf .. first_leaf + 2^level`, which must be aligned
    /// (`first_leaf` a multiple of 2^level) and follow the nodes pushed before it. It merges
    /// with the node before it only when the two are the halves of one node of the
    /// canonical tree over all leaves from row 0, so a run over any leaf-aligned range of
    /// rows, or several runs over adjacent ranges pushed in order, give the nodes of that
    /// one canonical tree.
    pub fn push_at(&mut self, first_leaf: u64, level: u32, mut node: Vec<Acc>) {
        let (mut first, mut level) = (first_leaf, level);
        while let Some(&(f, l, _)) = self.stack.last() {
            let span = 1u64 << l;
            let is_left_half =
                l == level && l < 63 && f % (span << 1) == 0 && f.checked_add(span) == Some(first);
            if !is_left_half {
                break;
            }
            let (_, _, mut left) = self.stack.pop().expect("non-empty");
            merge_into(&mut left, &node);
            node = left;
            first = f;
            level += 1;
        }
        self.stack.push((first, level, node));
    }

    /// Adds the node summarising a final, incomplete run of leaves (its levels are all lower
    /// than any node pushed before it); the tree must be finished next.
    pub fn push_tail(&mut self, first_leaf: u64, node: Vec<Acc>) {
        self.stack.push((first_leaf, u32::MAX, node));
    }

    /// Number of nodes held.
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// The nodes held, in order, without folding them: what another run's nodes can still
    /// be merged with ([`Tree::push_at`]).
    pub fn into_nodes(self) -> Vec<Node> {
        self.stack
            .into_iter()
            .map(|(f, l, accs)| Node {
                first_leaf: f,
                level: (l != u32::MAX).then_some(l),
                accs,
            })
            .collect()
    }

    /// Folds the remaining nodes from the right; `None` when nothing was pushed.
    pub fn finish(self) -> Option<Vec<Acc>> {
        fold(self.stack.into_iter().map(|(_, _, accs)| accs))
    }
}

/// Folds nodes from the right, as [`Tree::finish`] does with the nodes it holds.
pub fn fold_nodes(nodes: Vec<Node>) -> Option<Vec<Acc>> {
    fold(nodes.into_iter().map(|n| n.accs))
}

/// Folds a tree's stack from the right: the last node into the one before it, and so on.
fn fold(mut stack: impl DoubleEndedIterator<Item = Vec<Acc>>) -> Option<Vec<Acc>> {
    let mut acc = stack.next_back()?;
    while let Some(mut left) = stack.next_back() {
        merge_into(&mut left, &acc);
        acc = left;
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(x: f64) -> Vec<Acc> {
        vec![Acc {
            n: 1,
            mean: x,
            sum_hi: x,
            min: x,
            max: x,
            ..Acc::EMPTY
        }]
    }

    /// Runs over adjacent leaf ranges, their nodes pushed in order by index, give the
    /// canonical tree of one run over all the leaves, whatever the cuts.
    #[test]
    fn aligned_runs_merge_to_the_whole_tree() {
        let xs: Vec<f64> = (0..45).map(|i| 1e9 + (i as f64 * 0.7).cos()).collect();
        let mut whole = Tree::new();
        for &x in &xs {
            whole.push(0, leaf(x));
        }
        let whole = whole.finish().unwrap();
        for cuts in [
            vec![3],
            vec![1, 2, 17],
            vec![8, 16, 40],
            vec![5, 6, 7, 30, 44],
        ] {
            let mut bounds = vec![0];
            bounds.extend(&cuts);
            bounds.push(xs.len());
            let mut all = Tree::new();
            for w in bounds.windows(2) {
                // One run: its leaves pushed by index, then its nodes handed over.
                let mut run = Tree::new();
                for (j, &x) in xs.iter().enumerate().take(w[1]).skip(w[0]) {
                    run.push_at(j as u64, 0, leaf(x));
                }
                for n in run.into_nodes() {
                    all.push_at(n.first_leaf, n.level.unwrap(), n.accs);
                }
            }
            assert_eq!(all.finish().unwrap(), whole, "cuts {cuts:?}");
        }
    }

    #[test]
    fn tree_of_blocks_equals_tree_of_leaves() {
        let xs: Vec<f64> = (0..37).map(|i| 1e9 + (i as f64).sin()).collect();
        let mut whole = Tree::new();
        for &x in &xs {
            whole.push(0, leaf(x));
        }
        let whole = whole.finish().unwrap();
        for k in 0..6u32 {
            let per = 1usize << k;
            let mut outer = Tree::new();
            for (i, chunk) in xs.chunks(per).enumerate() {
                let mut t = Tree::new();
                for &x in chunk {
                    t.push(0, leaf(x));
                }
                let full = chunk.len() == per;
                let node = t.finish().unwrap();
                if full {
                    outer.push(k, node);
                } else {
                    assert_eq!(i, xs.len() / per);
                    outer.push_tail(0, node);
                }
            }
            assert_eq!(outer.finish().unwrap(), whole, "k = {k}");
        }
    }
}
