//! Runs a plan: maps each block on its own, reduces blocks in parallel on rayon, and merges
//! partials in block order.
//!
//! # Memory maps
//!
//! Each block is mapped read-only at a page-aligned offset, populated up front when the whole
//! span is read, reduced and unmapped before the next, so at most `in_flight` blocks are
//! mapped at once. Mapping is the fast path for this job (copies cost two thirds of the warm
//! speed) but it carries one hazard no read call has: if another process truncates the file
//! while it is being reduced, touching a vanished page raises SIGBUS. The guard (`guard`)
//! catches it: the input fails with an error of kind `Size`, the process goes on.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use memmap2::{Advice, MmapOptions};

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::{self, Need};
use crate::kernel::{Shape, Shift};
use crate::moments::{fold_nodes, Acc, Node, Tree};
use crate::plan::{Block, GroupKind, Plan, Role};
use crate::source::{ArrayMeta, Storage};

mod guard;
mod io;

use guard::GuardedMap;

pub use io::IoMode;
use io::*;

/// Receives the number of element bytes reduced so far (monotonic, from any thread).
pub type ProgressFn<'a> = dyn Fn(u64) + Sync + 'a;

/// One input of a domain: its own metadata (file, offset, byte order) and open file.
pub struct Input<'a> {
    /// The input's metadata.
    pub meta: &'a ArrayMeta,
    /// The open file holding its elements.
    pub file: &'a File,
    /// Its first row, counted from the domain's first row.
    pub start: u64,
}

/// Everything a run needs besides the plan.
pub struct Job<'a> {
    /// The domain as one array (for one input, that input's metadata).
    pub meta: &'a ArrayMeta,
    /// The domain's inputs, in row order (the plan's segments).
    pub inputs: &'a [Input<'a>],
    /// Selected columns, sorted and unique; results come back in this order.
    pub sel: &'a [u64],
    /// Each column's shift (all columns, by column index): the values of the run's row 0,
    /// whatever rows are selected, so that partials of runs over different rows share them.
    pub shift: &'a Shift,
    /// Statistics families to compute.
    pub need: Need,
    /// Worker threads.
    pub threads: usize,
    /// How the elements are reached.
    pub storage: &'a Storage,
    /// The HDF5 dataset, for messages.
    pub dataset: Option<&'a str>,
    /// Read dense blocks of contiguous data with `pread` instead of mapping them.
    pub read: bool,
    /// Set by the caller to stop the run: no block starts after it is seen.
    pub cancel: Option<&'a AtomicBool>,
    /// Also return the canonical tree's nodes (for a [`crate::Partial`]), not only their fold.
    pub keep_nodes: bool,
    /// Also return each input's own results (the plan has its [`Role::Part`] blocks).
    pub per_input: bool,
}

/// What a run returns: one accumulator per selected column for the domain, the nodes they
/// were folded from (when kept), and each input's own accumulators (when asked for).
pub struct Output {
    /// The domain's results.
    pub accs: Vec<Acc>,
    /// The canonical tree's nodes (empty unless [`Job::keep_nodes`]).
    pub nodes: Vec<Node>,
    /// Per input, its own results (empty unless [`Job::per_input`] and several inputs).
    pub per_input: Vec<Vec<Acc>>,
    /// Per input, the nodes of its own tree (as `per_input`, and only when nodes are kept).
    pub per_input_nodes: Vec<Vec<Node>>,
}

struct State {
    next_merge: usize,
    pending: BTreeMap<usize, Vec<Acc>>,
    trees: HashMap<usize, Tree>,
    input_trees: BTreeMap<(usize, usize), Tree>,
    results: Vec<Acc>,
    per_input: Vec<Vec<Acc>>,
    per_input_nodes: Vec<Vec<Node>>,
    nodes: Vec<Node>,
    error: Option<Error>,
}

/// Element bytes a block reduces.
pub fn block_bytes(b: &Block, itemsize: u64) -> u64 {
    (b.rows.end - b.rows.start) * (b.runs.end - b.runs.start) * itemsize
}

/// Element bytes a plan reduces, as its progress counts them (an input's share of a
/// straddling leaf, reduced again for its own results, is not counted twice).
pub fn plan_bytes(plan: &Plan, itemsize: u64) -> u64 {
    plan.blocks.iter().map(|b| counted_bytes(b, itemsize)).sum()
}

/// A block's bytes as progress counts them: none for a [`Role::Part`] block.
fn counted_bytes(b: &Block, itemsize: u64) -> u64 {
    if b.role == Role::Part {
        0
    } else {
        block_bytes(b, itemsize)
    }
}

/// Stack reserved for each worker thread. Built without optimisation (a dependent crate's
/// debug build: colstats's own `[profile.dev]` settings do not apply there), the kernels,
/// forced inline into each instruction-set variant, take one frame of several MiB, more than
/// rayon's default 2 MiB. The reservation is virtual: only the pages touched are resident.
pub const WORKER_STACK: usize = 64 << 20;

/// Reduces every block of `plan` and returns one accumulator per selected column, and, when
/// the job asks to keep them, the nodes of the canonical tree those were folded from.
/// The workers run on `pool`, or with `None` on the pool the caller runs in.
pub fn run(
    job: &Job<'_>,
    plan: &Plan,
    pool: Option<&rayon::ThreadPool>,
    progress: &ProgressFn<'_>,
) -> Result<Output> {
    let mut results = vec![Acc::EMPTY; job.sel.len()];
    let split = job.per_input && job.inputs.len() > 1;
    let per_input = if split {
        vec![vec![Acc::EMPTY; job.sel.len()]; job.inputs.len()]
    } else {
        Vec::new()
    };
    let per_input_nodes = vec![Vec::new(); per_input.len()];
    if plan.blocks.is_empty() {
        return Ok(Output {
            accs: results,
            nodes: Vec::new(),
            per_input,
            per_input_nodes,
        });
    }
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let done_bytes = AtomicU64::new(0);
    let state = Mutex::new(State {
        next_merge: 0,
        pending: BTreeMap::new(),
        trees: HashMap::new(),
        input_trees: BTreeMap::new(),
        results: std::mem::take(&mut results),
        per_input,
        per_input_nodes,
        nodes: Vec::new(),
        error: None,
    });
    let cv = Condvar::new();
    let itemsize = job.meta.dtype.size as u64;

    let worker = || {
        let mut scratch = Scratch::default();
        loop {
            if job.cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                let mut st = state.lock().unwrap();
                if st.error.is_none() {
                    st.error = Some(Error::new(
                        ErrorKind::Cancelled,
                        Some(&job.meta.path),
                        "cancelled",
                    ));
                }
                abort.store(true, Ordering::SeqCst);
                drop(st);
                cv.notify_all();
                break;
            }
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= plan.blocks.len() || abort.load(Ordering::SeqCst) {
                break;
            }
            // Bound the partials waiting for an earlier block: wait while too far ahead.
            {
                let mut st = state.lock().unwrap();
                while i >= st.next_merge + plan.window && !abort.load(Ordering::SeqCst) {
                    st = cv.wait(st).unwrap();
                }
            }
            if abort.load(Ordering::SeqCst) {
                break;
            }
            let block = &plan.blocks[i];
            if let Some(ahead) = plan.blocks.get(i + plan.in_flight) {
                prefetch(job, ahead);
            }
            let out = reduce_block(job, plan, block, &mut scratch);
            let mut st = state.lock().unwrap();
            match out {
                Ok(partial) => {
                    st.pending.insert(i, partial);
                    drain(&mut st, job, plan);
                }
                Err(e) => {
                    if st.error.is_none() {
                        st.error = Some(e);
                    }
                    abort.store(true, Ordering::SeqCst);
                }
            }
            drop(st);
            cv.notify_all();
            let bytes = counted_bytes(block, itemsize);
            progress(done_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes);
        }
    };
    let workers = plan.in_flight.max(1);
    match pool {
        Some(pool) => pool.scope(|s| (0..workers).for_each(|_| s.spawn(|_| worker()))),
        None => rayon::in_place_scope(|s| (0..workers).for_each(|_| s.spawn(|_| worker()))),
    }
    let st = state.into_inner().unwrap();
    if let Some(e) = st.error {
        return Err(e);
    }
    debug_assert_eq!(st.next_merge, plan.blocks.len());
    Ok(Output {
        accs: st.results,
        nodes: st.nodes,
        per_input: st.per_input,
        per_input_nodes: st.per_input_nodes,
    })
}

/// Merges the partials that are next in block order.
fn drain(st: &mut State, job: &Job<'_>, plan: &Plan) {
    while let Some(mut partial) = st.pending.remove(&st.next_merge) {
        let b = &plan.blocks[st.next_merge];
        let g = &plan.groups[b.group];
        let push = |tree: &mut Tree, partial: Vec<Acc>| match b.level {
            Some(k) => tree.push_at(b.first_leaf, k, partial),
            None => tree.push_tail(b.first_leaf, partial),
        };
        let to_input = !st.per_input.is_empty() && b.role != Role::Total;
        let to_total = b.role != Role::Part;
        if to_input {
            let p = if to_total {
                partial.clone()
            } else {
                std::mem::take(&mut partial)
            };
            push(st.input_trees.entry((b.group, b.seg)).or_default(), p);
        }
        if to_total {
            push(st.trees.entry(b.group).or_default(), partial);
        }
        st.next_merge += 1;
        if st.next_merge == g.first_block + g.blocks {
            let nodes = st.trees.remove(&b.group).expect("tree exists").into_nodes();
            if job.keep_nodes {
                scatter_nodes(&mut st.nodes, job, &g.kind, &nodes);
            }
            let accs = fold_nodes(nodes).expect("a group has blocks");
            scatter(&mut st.results, job, &g.kind, &accs);
            let done: Vec<(usize, usize)> = st
                .input_trees
                .range((b.group, 0)..(b.group + 1, 0))
                .map(|(&k, _)| k)
                .collect();
            for key in done {
                let nodes = st.input_trees.remove(&key).expect("listed").into_nodes();
                if job.keep_nodes {
                    scatter_nodes(&mut st.per_input_nodes[key.1], job, &g.kind, &nodes);
                }
                if let Some(accs) = fold_nodes(nodes) {
                    scatter(&mut st.per_input[key.1], job, &g.kind, &accs);
                }
            }
        }
    }
}

/// Stores a finished group's tree nodes into `out`, at the selected columns' positions.
/// Every group's rows are cut alike, so its nodes line up with the other groups'.
fn scatter_nodes(out: &mut Vec<Node>, job: &Job<'_>, kind: &GroupKind, nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        if out.len() <= i {
            out.push(Node {
                first_leaf: n.first_leaf,
                level: n.level,
                accs: vec![Acc::EMPTY; job.sel.len()],
            });
        }
        debug_assert_eq!(out[i].first_leaf, n.first_leaf);
        scatter(&mut out[i].accs, job, kind, &n.accs);
    }
}

/// Stores a finished group's accumulators at the selected columns' positions.
fn scatter(results: &mut [Acc], job: &Job<'_>, kind: &GroupKind, accs: &[Acc]) {
    let (first, is_runs) = match kind {
        GroupKind::Rows { cols } => (cols.start, false),
        GroupKind::Runs { runs } => (runs.start, true),
    };
    for (i, a) in accs.iter().enumerate() {
        let idx = first + i as u64;
        let col = if is_runs {
            job.meta.column_of_run(idx)
        } else {
            idx
        };
        if let Ok(pos) = job.sel.binary_search(&col) {
            results[pos] = *a;
        }
    }
}

/// The shifts of columns `c0..c1` (by column index).
fn shift_cols(shift: &Shift, c0: usize, c1: usize) -> Shift {
    Shift {
        float: shift.float.get(c0..c1).map_or(Vec::new(), <[f64]>::to_vec),
        int: shift.int.get(c0..c1).map_or(Vec::new(), <[i64]>::to_vec),
    }
}

fn reduce_block(job: &Job<'_>, plan: &Plan, block: &Block, sc: &mut Scratch) -> Result<Vec<Acc>> {
    let meta = job.meta;
    if !matches!(job.storage, Storage::Mapped) {
        read_block(job, block, sc)?;
        return Ok(kernel::reduce(
            &sc.block,
            meta.dtype,
            block.shape,
            job.need,
            job.shift,
        ));
    }
    let s = meta.dtype.size;
    let g = &plan.groups[block.group];
    if block.role == Role::Total {
        // A leaf whose rows lie in several inputs, gathered into one buffer.
        let (c0, c1) = (block.runs.start as usize, block.runs.end as usize);
        let shape = gather_leaf(job, block, sc)?;
        let shift = shift_cols(job.shift, c0, c1);
        return Ok(kernel::reduce(
            &sc.block, meta.dtype, shape, job.need, &shift,
        ));
    }
    let input = &job.inputs[block.seg];
    let dtype = input.meta.dtype;
    // Dense blocks can be read into a reused buffer instead (sparse column tiles would read
    // bytes they do not need).
    let mapped = if job.read && block.dense {
        read_dense(input, block, &mut sc.block)?;
        None
    } else {
        Some(map_block(input, block)?)
    };
    let data: &[u8] = match &mapped {
        Some((map, delta)) => &map[*delta..],
        None => &sc.block,
    };
    let out = match &g.kind {
        GroupKind::Rows { cols } => {
            let shift = shift_cols(job.shift, cols.start as usize, cols.end as usize);
            kernel::reduce(data, dtype, block.shape, job.need, &shift)
        }
        GroupKind::Runs { .. } => {
            let n0 = meta.rows as usize;
            let mut out = Vec::with_capacity((block.runs.end - block.runs.start) as usize);
            for (i, m) in block.runs.clone().enumerate() {
                let sub = &data[i * n0 * s..];
                let c = meta.column_of_run(m) as usize;
                let shift = shift_cols(job.shift, c, c + 1);
                out.extend(kernel::reduce(sub, dtype, block.shape, job.need, &shift));
            }
            out
        }
    };
    if let Some((map, _)) = &mapped {
        check_map(input, map, block.offset + block.span)?;
    }
    Ok(out)
}
