//! The chunk planner: cuts the selected part of an array into blocks that fit the budget.
//!
//! C-order arrays are cut into slabs of whole rows; Fortran-order arrays into ranges of whole
//! columns; and when a single row (C) or column (F) is too large for a block's share of the
//! budget, into tiles in both directions. Row ranges are always whole leaves times a power of
//! two, aligned from the first selected row, so every block is one node of the canonical
//! merge tree and results do not depend on the budget or thread count.

use std::ops::Range;

mod budget;

use crate::kernel::Shape;
use crate::source::{ArrayMeta, Order};
use budget::MIN_BALANCED_BLOCK;
pub use budget::{
    after_inputs, floor_error as budget_floor, inputs_bytes, results_fit, Split, ACC_BYTES,
    HDF5_INPUT_BYTES, MAX_BLOCK_BYTES, MIN_BUDGET, NPY_INPUT_BYTES,
};

/// Target bytes per leaf of the merge tree (rows × columns × itemsize), small enough for the
/// second pass over a leaf to hit the cache, large enough that per-leaf work is amortised.
const LEAF_BYTES: u64 = 128 << 10;
/// Most rows per leaf (keeps 16-bit sums in the kernel's i32 lanes from overflowing).
const MAX_LEAF_ROWS: u64 = 32768;
/// Fewest rows per leaf, so wide arrays do not pay a merge (112 bytes per column) for every
/// few elements; very wide rows are cut into column tiles instead.
const MIN_LEAF_ROWS: u64 = 256;
/// Rows per leaf for one contiguous Fortran-order column.
const RUN_LEAF_ROWS: u64 = 16384;
const PAGE: u64 = 4096;

/// What a group of blocks covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupKind {
    /// C order: columns `cols` of every selected row; blocks are row slabs of them.
    Rows {
        /// Column range (within a row) reduced together.
        cols: Range<u64>,
    },
    /// Fortran order: the contiguous runs (columns in memory order) `runs`.
    Runs {
        /// Run range.
        runs: Range<u64>,
    },
}

/// A set of blocks whose partials merge into final results for the same columns.
#[derive(Clone, Debug)]
pub struct Group {
    /// What it covers.
    pub kind: GroupKind,
    /// Index of its first block in [`Plan::blocks`]; its blocks are consecutive.
    pub first_block: usize,
    /// Number of blocks.
    pub blocks: usize,
}

/// Where one input's rows sit in a domain (see [`crate::source::inputs`]).
#[derive(Clone, Copy, Debug)]
pub struct Seg {
    /// Its first row, counted from the domain's first row.
    pub start: u64,
    /// Its row count.
    pub rows: u64,
    /// File offset of its first element.
    pub data_offset: u64,
}

/// The segments of domain `d` of `inputs`: each input's first row (counted in the domain),
/// rows and file offset.
pub fn segments(inputs: &crate::source::Inputs, d: &crate::source::Domain) -> Vec<Seg> {
    d.inputs
        .clone()
        .map(|i| Seg {
            start: inputs.starts[i] - d.rows.start,
            rows: inputs.sources[i].meta.rows,
            data_offset: inputs.sources[i].meta.data_offset,
        })
        .collect()
}

/// Which results a block feeds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The domain's tree and its input's own tree.
    Both,
    /// The domain's tree only: a leaf whose rows lie in several inputs, read from all.
    Total,
    /// Its input's own tree only: an input's share of a leaf that straddles inputs
    /// (planned only when per-input results are asked for).
    Part,
}

/// One unit of work: a byte range of the file, mapped on its own and reduced by one worker.
#[derive(Clone, Debug)]
pub struct Block {
    /// The group it belongs to.
    pub group: usize,
    /// The input (segment) it reads; for a [`Role::Total`] block, the first of them.
    pub seg: usize,
    /// Which results it feeds.
    pub role: Role,
    /// Rows covered.
    pub rows: Range<u64>,
    /// For Fortran-order groups, the runs covered (each with all of `rows`); for C order,
    /// the group's columns.
    pub runs: Range<u64>,
    /// The merge-tree level of this block (`Some(k)`: 2^k leaves, the first a multiple of
    /// 2^k) or `None` for the last block of a group that reaches the end of the array with
    /// fewer leaves (a tail, folded by the kernel).
    pub level: Option<u32>,
    /// Index of the block's first leaf, counted from row 0 of the array (leaves are
    /// anchored there whatever rows are selected, so runs over different rows share them).
    pub first_leaf: u64,
    /// Offset of the block's first element in its segment's file.
    pub offset: u64,
    /// Bytes from `offset` to the end of the block's last element.
    pub span: u64,
    /// Bytes the reduction actually reads (resident while the block is mapped).
    pub touched: u64,
    /// Geometry for the kernel (for runs: one run's geometry).
    pub shape: Shape,
    /// Whether the whole span is read, so it can be populated up front.
    pub dense: bool,
}

/// The full plan for one reduction.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Groups of blocks, in execution order.
    pub groups: Vec<Group>,
    /// Blocks, in execution (file) order.
    pub blocks: Vec<Block>,
    /// Rows per leaf of the merge tree.
    pub leaf_rows: u64,
    /// Largest number of bytes one block touches.
    pub block_bytes: u64,
    /// Blocks mapped at the same time.
    pub in_flight: usize,
    /// Completed partials allowed to wait for an earlier block.
    pub window: usize,
    /// Estimated peak memory of the run (maps + partials + results), in bytes.
    pub est_memory: u64,
    /// The memory budget.
    pub budget: u64,
    /// Threads the plan is made for (at most the number asked for).
    pub threads: usize,
}

/// Why no plan fits.
#[derive(Debug)]
pub struct PlanError(pub String);

fn prev_pow2(x: u64) -> u64 {
    if x == 0 {
        0
    } else {
        1 << (63 - x.leading_zeros())
    }
}

fn ceil_log2(x: u64) -> u64 {
    if x <= 1 {
        0
    } else {
        64 - (x - 1).leading_zeros() as u64
    }
}

/// The row blocks of `rows` for leaves of `r` rows counted from row 0 of the array, at most
/// 2^`k` leaves each: `(rows, first leaf, level)`. Every block is one node of the canonical
/// merge tree over all the array's leaves (its first leaf a multiple of its leaf count), so
/// runs over different row ranges reduce to nodes of the same tree; a first leaf cut by
/// the start of `rows` is a block of its own. When `rows` reaches the end of the array
/// (`n_rows`) and starts on a leaf boundary, the last block may instead hold fewer than
/// 2^k leaves (level `None`, folded by the kernel): exactly the blocks of a run over every
/// row, so such runs keep their plan.
pub fn aligned_blocks(
    rows: &Range<u64>,
    r: u64,
    k: u32,
    n_rows: u64,
) -> Vec<(Range<u64>, u64, Option<u32>)> {
    let mut out = Vec::new();
    if rows.start >= rows.end {
        return out;
    }
    let r = r.max(1);
    let (mut j, jend) = (rows.start / r, rows.end.div_ceil(r));
    let cut_first = rows.start % r != 0;
    let tail_ok = rows.end == n_rows && !cut_first;
    while j < jend {
        let mut m = if cut_first && j == rows.start / r {
            0
        } else {
            k.min(j.trailing_zeros())
        };
        let block = |m: u32| {
            (
                (j * r).max(rows.start),
                ((j + (1u64 << m)) * r).min(rows.end),
            )
        };
        if tail_ok && j + (1u64 << m) > jend && j % (1u64 << k) == 0 {
            // The remaining leaves, fewer than 2^k, as one tail block.
            let (r0, r1) = block(m);
            out.push((r0..r1, j, None));
            break;
        }
        while j + (1u64 << m) > jend {
            m -= 1;
        }
        let (r0, r1) = block(m);
        out.push((r0..r1, j, Some(m)));
        j += 1u64 << m;
    }
    out
}

/// Rows per merge-tree leaf for a C-order array with `columns` columns of `itemsize` bytes.
pub fn leaf_rows_c(columns: u64, itemsize: u64) -> u64 {
    prev_pow2(LEAF_BYTES / (columns.max(1) * itemsize.max(1))).clamp(MIN_LEAF_ROWS, MAX_LEAF_ROWS)
}

/// Rows per merge-tree leaf for buffered storage read in bands of `chunk_rows` rows (HDF5
/// chunks): whole bands, as many as fit `LEAF_BYTES` (a power of two of them, and at most
/// `MAX_LEAF_ROWS` rows unless one band is longer), so that datasets of many short chunks
/// (netCDF-4 record variables are chunked one record a chunk) do not pay a merge per record.
/// It depends only on the file's layout, never on the budget or thread count.
pub fn leaf_rows_chunked(chunk_rows: u64, row_bytes: u64) -> u64 {
    let c = chunk_rows.max(1);
    let by_bytes = LEAF_BYTES / (c.saturating_mul(row_bytes.max(1)));
    let by_rows = MAX_LEAF_ROWS / c;
    c * prev_pow2(by_bytes.min(by_rows)).max(1)
}

/// Rows per merge-tree leaf for `meta`: what its layout imposes, whatever the budget.
pub fn leaf_rows(meta: &ArrayMeta) -> u64 {
    match (meta.order, meta.chunk_rows) {
        (Order::F, _) => RUN_LEAF_ROWS,
        (Order::C, Some(c)) => leaf_rows_chunked(c, meta.columns * meta.dtype.size as u64),
        (Order::C, None) => leaf_rows_c(meta.columns, meta.dtype.size as u64),
    }
}

/// Plans the reduction of columns `sel` (sorted, unique) over `rows` of `meta` on up to
/// `threads` threads: fewer when the budget cannot hold a block and scratch for each (the
/// results are the same on any number).
pub fn plan(
    meta: &ArrayMeta,
    sel: &[u64],
    rows: Range<u64>,
    budget: u64,
    threads: usize,
    block_limit: u64,
) -> Result<Plan, PlanError> {
    let one = [Seg {
        start: 0,
        rows: meta.rows,
        data_offset: meta.data_offset,
    }];
    let parts = Parts {
        segs: &one,
        per_input: false,
    };
    plan_parts(meta, &parts, sel, rows, budget, threads, block_limit)
}

/// The inputs a domain's rows come from (one segment each, in row order), and whether each
/// input's own results are wanted as well as the domain's.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    /// The segments; several only for mapped C-order data.
    pub segs: &'a [Seg],
    /// Plan [`Role::Part`] blocks too.
    pub per_input: bool,
}

/// [`plan`] for a domain of several inputs (see [`Parts`]): blocks never cross from one
/// input into the next, except the [`Role::Total`] blocks of leaves that straddle two.
pub fn plan_parts(
    meta: &ArrayMeta,
    parts: &Parts<'_>,
    sel: &[u64],
    rows: Range<u64>,
    budget: u64,
    threads: usize,
    block_limit: u64,
) -> Result<Plan, PlanError> {
    debug_assert!(parts.segs.len() == 1 || (meta.mapped && meta.order == Order::C));
    // Errors that no thread count can fix come first, so they are not tried again.
    if let Some(e) = budget::floor_error(budget) {
        return Err(e);
    }
    results_fit(sel.len() as u64, budget)?;
    let mut t = threads.max(1);
    loop {
        match plan_for(meta, parts, sel, rows.clone(), budget, t, block_limit) {
            Err(_) if t > 1 => t = if t > 8 { t / 2 } else { t - 1 },
            r => return r,
        }
    }
}

/// [`plan`] for exactly `threads` threads, once the budget floor and the results' size
/// have been checked.
fn plan_for(
    meta: &ArrayMeta,
    parts: &Parts<'_>,
    sel: &[u64],
    rows: Range<u64>,
    budget: u64,
    threads: usize,
    block_limit: u64,
) -> Result<Plan, PlanError> {
    let threads = threads.max(1) as u64;
    let split = Split::new(budget, sel.len() as u64, threads, meta.scratch_per_thread);
    let (fixed, avail) = (split.fixed, split.avail);
    // Enough blocks to keep every thread busy (about four each), but not so small that
    // mapping costs dominate.
    let total = (rows.end - rows.start) * sel.len() as u64 * meta.dtype.size as u64;
    let balance = (total / (4 * threads)).max(MIN_BALANCED_BLOCK);
    let share = split.share;
    let block_limit = block_limit.min(balance);
    let nrows = rows.end - rows.start;
    let s = meta.dtype.size as u64;
    let mut p = Plan {
        groups: Vec::new(),
        blocks: Vec::new(),
        leaf_rows: 0,
        block_bytes: 0,
        in_flight: 0,
        window: split.window(),
        est_memory: fixed,
        budget,
        threads: threads as usize,
    };
    if nrows == 0 || sel.is_empty() {
        p.leaf_rows = leaf_rows_c(meta.columns, meta.dtype.size as u64);
        return Ok(p);
    }
    let mut partial_mem = 0u64;
    match meta.order {
        Order::C => {
            // Buffered storage (HDF5 chunks, libhdf5 reads) is read whole rows at a time,
            // in leaves of whole chunks.
            let r = match meta.chunk_rows {
                Some(c) => leaf_rows_chunked(c, meta.columns * meta.dtype.size as u64),
                None => leaf_rows_c(meta.columns, meta.dtype.size as u64),
            };
            p.leaf_rows = r;
            let ranges = if meta.mapped {
                column_ranges(sel, s)
            } else {
                std::iter::once(0..meta.columns).collect()
            };
            for cols in ranges {
                plan_rows(
                    meta,
                    parts,
                    &mut p,
                    cols,
                    &rows,
                    r,
                    (share, block_limit),
                    &split,
                    &mut partial_mem,
                )?;
            }
        }
        Order::F => {
            p.leaf_rows = RUN_LEAF_ROWS;
            let mut runs: Vec<u64> = sel.iter().map(|&c| meta.run_of_column(c)).collect();
            runs.sort_unstable();
            partial_mem = split.run_partials();
            let share = (avail.saturating_sub(partial_mem) / threads).min(share);
            for rr in contiguous_ranges(&runs) {
                plan_runs(meta, &mut p, rr, &rows, share.min(block_limit));
            }
        }
    }
    p.block_bytes = p.blocks.iter().map(|b| b.touched).max().unwrap_or(0);
    p.in_flight = split.in_flight(partial_mem, p.block_bytes, p.blocks.len());
    p.est_memory = split.estimate(p.in_flight, p.block_bytes, partial_mem)?;
    Ok(p)
}

/// Merges sorted column indices into ranges, bridging small gaps (in C order reading a few
/// unselected columns costs less than cutting rows into pieces).
fn column_ranges(sel: &[u64], itemsize: u64) -> Vec<Range<u64>> {
    let gap = (PAGE / itemsize).max(64);
    let mut out: Vec<Range<u64>> = Vec::new();
    for &c in sel {
        match out.last_mut() {
            Some(r) if c <= r.end + gap => r.end = c + 1,
            _ => out.push(c..c + 1),
        }
    }
    out
}

fn contiguous_ranges(sorted: &[u64]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for &c in sorted {
        match out.last_mut() {
            Some(r) if c == r.end => r.end = c + 1,
            Some(r) if c < r.end => {}
            _ => out.push(c..c + 1),
        }
    }
    out
}

/// Bytes resident when `rows` rows of `w` columns are read from rows `stride` bytes apart:
/// each row's pages, but never more than every page of the span (rows shorter than a page
/// share them).
fn touched_rows(rows: u64, w_bytes: u64, stride_bytes: u64) -> u64 {
    let span = rows * stride_bytes + 2 * PAGE;
    if w_bytes == stride_bytes {
        span
    } else {
        span.min(rows * (w_bytes.div_ceil(PAGE) + 1) * PAGE)
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_rows(
    meta: &ArrayMeta,
    parts: &Parts<'_>,
    p: &mut Plan,
    cols: Range<u64>,
    rows: &Range<u64>,
    r: u64,
    (share, limit): (u64, u64),
    split: &Split,
    partial_mem: &mut u64,
) -> Result<(), PlanError> {
    let (threads, avail) = (split.threads, split.avail);
    let s = meta.dtype.size as u64;
    let c = meta.columns;
    let nrows = rows.end - rows.start;
    let total_leaves = nrows.div_ceil(r);
    // Column tile width: whole range unless one leaf of it exceeds a block's share or the
    // partial results it needs crowd out the data.
    let mut w = cols.end - cols.start;
    if !meta.mapped {
        // Whole rows only: one leaf per block at least, fewer blocks in flight if need be.
        let leaf_bytes = r * w * s;
        if leaf_bytes > avail {
            return Err(PlanError(format!(
                "one band of {r} rows ({} MiB) does not fit the memory budget; raise {}",
                leaf_bytes.div_ceil(1 << 20),
                crate::error::opt::MEMORY
            )));
        }
        let mut k = 0u32;
        while (2u64 << k) <= total_leaves.max(1).next_power_of_two()
            && leaf_bytes * (2u64 << k) <= share.min(limit)
        {
            k += 1;
        }
        *partial_mem = split.buffered_partials(w, k);
        emit_rows(meta, parts, p, cols, rows, r, k, w);
        return Ok(());
    }
    let (k, w) = loop {
        let leaf_bytes = touched_rows(r.min(nrows), w * s, c * s);
        let mut k = 0u32;
        if leaf_bytes <= share {
            while (2u64 << k) <= total_leaves.max(1).next_power_of_two()
                && leaf_bytes * (2u64 << k) <= share.min(limit)
            {
                k += 1;
            }
            let block_rows = r << k;
            let nblocks = nrows.div_ceil(block_rows);
            let depth_b = k as u64 + 1;
            let depth_g = ceil_log2(nblocks) + 1;
            let partials = split.row_partials(w, depth_b, depth_g);
            let data = threads * touched_rows(block_rows.min(nrows), w * s, c * s);
            if partials + data <= avail {
                *partial_mem = (*partial_mem).max(partials);
                break (k, w);
            }
        }
        if w <= 16 {
            return Err(PlanError(format!(
                "a single leaf of {r} rows does not fit the memory budget; raise {}",
                crate::error::opt::MEMORY
            )));
        }
        w = w.div_ceil(2);
    };
    emit_rows(meta, parts, p, cols, rows, r, k, w);
    Ok(())
}

/// Emits the blocks of a C-order column range: tiles of `w` columns, 2^k leaves of rows.
#[allow(clippy::too_many_arguments)]
fn emit_rows(
    meta: &ArrayMeta,
    parts: &Parts<'_>,
    p: &mut Plan,
    cols: Range<u64>,
    rows: &Range<u64>,
    r: u64,
    k: u32,
    w: u64,
) {
    let s = meta.dtype.size as u64;
    let c = meta.columns;
    let cut = seg_blocks(rows, parts, r, k, meta.rows);
    let mut c0 = cols.start;
    while c0 < cols.end {
        let c1 = (c0 + w).min(cols.end);
        let gi = p.groups.len();
        let first = p.blocks.len();
        for (rr, first_leaf, level, si, role) in cut.iter().cloned() {
            let (r0, r1) = (rr.start, rr.end);
            let n = r1 - r0;
            let wb = (c1 - c0) * s;
            let seg = &parts.segs[si];
            let offset = seg.data_offset + ((r0 - seg.start) * c + c0) * s;
            let span = ((n - 1) * c + (c1 - c0)) * s;
            let touched = if !meta.mapped {
                n * wb
            } else if role == Role::Total {
                // The inputs' maps and the buffer the leaf is gathered into.
                touched_rows(n, wb, c * s) + n * (wb + s) + 2 * PAGE
            } else {
                touched_rows(n, wb, c * s)
            };
            p.blocks.push(Block {
                group: gi,
                seg: si,
                role,
                rows: r0..r1,
                runs: c0..c1,
                level,
                first_leaf,
                offset,
                span,
                touched,
                shape: Shape {
                    rows: n as usize,
                    width: (c1 - c0) as usize,
                    stride: c as usize,
                    leaf_rows: r as usize,
                },
                dense: c1 - c0 == c && role != Role::Total,
            });
        }
        p.groups.push(Group {
            kind: GroupKind::Rows { cols: c0..c1 },
            first_block: first,
            blocks: p.blocks.len() - first,
        });
        c0 = c1;
    }
}

/// A block's rows, first leaf, level, segment and role.
type RowBlock = (Range<u64>, u64, Option<u32>, usize, Role);

/// The row blocks of `rows` over the segments of `parts` (see [`aligned_blocks`] for one
/// segment, whose blocks these are). Each segment's rows are cut alone; a leaf holding rows
/// of several segments is cut into one [`Role::Part`] block per segment (when per-input
/// results are wanted) and read whole by one [`Role::Total`] block, placed after the first
/// of its parts, so that each tree receives its nodes in leaf order.
fn seg_blocks(rows: &Range<u64>, parts: &Parts<'_>, r: u64, k: u32, n_rows: u64) -> Vec<RowBlock> {
    let segs = parts.segs;
    if segs.len() == 1 {
        return aligned_blocks(rows, r, k, n_rows)
            .into_iter()
            .map(|(rr, f, l)| (rr, f, l, 0, Role::Both))
            .collect();
    }
    let r = r.max(1);
    let mut out = Vec::new();
    let mut joint_done = None;
    for (si, seg) in segs.iter().enumerate() {
        let (s0, s1) = (
            rows.start.max(seg.start),
            rows.end.min(seg.start + seg.rows),
        );
        if s0 >= s1 {
            continue;
        }
        // The leaf holding s0 (or s1 - 1) also holds selected rows of another input.
        let head_cut = s0 == seg.start && s0 > rows.start && s0 % r != 0;
        let tail_cut = s1 == seg.start + seg.rows && s1 < rows.end && s1 % r != 0;
        let mut a = s0;
        if head_cut {
            let e = ((s0 / r + 1) * r).min(s1);
            if parts.per_input {
                out.push((s0..e, s0 / r, Some(0), si, Role::Part));
            }
            a = e;
        }
        let mid_end = if tail_cut { (s1 / r * r).max(a) } else { s1 };
        if a < mid_end {
            out.extend(
                aligned_blocks(&(a..mid_end), r, k, n_rows)
                    .into_iter()
                    .map(|(rr, f, l)| (rr, f, l, si, Role::Both)),
            );
        }
        if tail_cut {
            let jt = s1 / r;
            if mid_end < s1 && parts.per_input {
                out.push((mid_end..s1, jt, Some(0), si, Role::Part));
            }
            if joint_done != Some(jt) {
                let joint = (jt * r).max(rows.start)..((jt + 1) * r).min(rows.end);
                out.push((joint, jt, Some(0), si, Role::Total));
                joint_done = Some(jt);
            }
        }
    }
    out
}

fn plan_runs(meta: &ArrayMeta, p: &mut Plan, runs: Range<u64>, rows: &Range<u64>, share: u64) {
    let s = meta.dtype.size as u64;
    let n0 = meta.rows;
    let nrows = rows.end - rows.start;
    let run_bytes = nrows * s;
    let r = p.leaf_rows;
    let full_rows = nrows == n0;
    // A block's map reaches out to page boundaries on both sides.
    let share = share.saturating_sub(2 * PAGE);
    // Whole runs per block when every row is selected: the kernel folds each run's leaves
    // into one node, which is the canonical tree's result only over the whole run (a
    // partial run is cut into aligned tiles, nodes of that tree).
    if run_bytes <= share && full_rows {
        // Several whole runs per block (adjacent in the file).
        let per = (share / run_bytes.max(1)).max(1);
        let mut m0 = runs.start;
        while m0 < runs.end {
            let m1 = (m0 + per).min(runs.end);
            let gi = p.groups.len();
            let offset = meta.data_offset + (m0 * n0 + rows.start) * s;
            let span = ((m1 - 1 - m0) * n0 + nrows) * s;
            p.blocks.push(Block {
                group: gi,
                seg: 0,
                role: Role::Both,
                rows: rows.clone(),
                runs: m0..m1,
                level: None,
                first_leaf: rows.start / r,
                offset,
                span,
                touched: span + 2 * PAGE,
                shape: Shape {
                    rows: nrows as usize,
                    width: 1,
                    stride: 1,
                    leaf_rows: r as usize,
                },
                dense: true,
            });
            p.groups.push(Group {
                kind: GroupKind::Runs { runs: m0..m1 },
                first_block: p.blocks.len() - 1,
                blocks: 1,
            });
            m0 = m1;
        }
        return;
    }
    // One run per group, cut into aligned row tiles.
    let leaf_bytes = r * s;
    let mut k = 0u32;
    while leaf_bytes * (2u64 << k) <= share {
        k += 1;
    }
    for m in runs {
        let gi = p.groups.len();
        let first = p.blocks.len();
        for (rr, first_leaf, level) in aligned_blocks(rows, r, k, n0) {
            let (r0, r1) = (rr.start, rr.end);
            let n = r1 - r0;
            let span = n * s;
            p.blocks.push(Block {
                group: gi,
                seg: 0,
                role: Role::Both,
                rows: r0..r1,
                runs: m..m + 1,
                level,
                first_leaf,
                offset: meta.data_offset + (m * n0 + r0) * s,
                span,
                touched: span + 2 * PAGE,
                shape: Shape {
                    rows: n as usize,
                    width: 1,
                    stride: 1,
                    leaf_rows: r as usize,
                },
                dense: true,
            });
        }
        p.groups.push(Group {
            kind: GroupKind::Runs { runs: m..m + 1 },
            first_block: first,
            blocks: p.blocks.len() - first,
        });
    }
}
