//! Runs a plan: maps each block on its own, reduces blocks in parallel on rayon, and merges
//! partials in block order.
//!
//! # Memory maps
//!
//! Each block is mapped read-only at a page-aligned offset, populated up front when the whole
//! span is read, reduced and unmapped before the next, so at most `in_flight` blocks are
//! mapped at once. Mapping is the fast path for this job (copies cost two thirds of the warm
//! speed) but it carries one hazard no read call has: if another process truncates the file
//! while it is being reduced, touching a vanished page raises SIGBUS and ends the process.
//! colstats checks the file's length before each block to narrow that window; it does not
//! try to survive a file that shrinks under it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use memmap2::{Advice, Mmap, MmapOptions};

use crate::error::{Error, ErrorKind, Result};
use crate::kernel::{self, Need};
use crate::moments::{fold_nodes, Acc, Node, Tree};
use crate::plan::{Block, GroupKind, Plan};
use crate::source::{ArrayMeta, Storage};

mod io;

pub use io::IoMode;
use io::*;

/// Receives the number of element bytes reduced so far (monotonic, from any thread).
pub type ProgressFn<'a> = dyn Fn(u64) + Sync + 'a;

/// Everything a run needs besides the plan.
pub struct Job<'a> {
    /// The array.
    pub meta: &'a ArrayMeta,
    /// The open file.
    pub file: &'a File,
    /// Selected columns, sorted and unique; results come back in this order.
    pub sel: &'a [u64],
    /// The row each column's shift is read from: row 0 of the array, whatever rows are
    /// selected, so that partials of runs over different rows share their shifts.
    pub first_row: u64,
    /// Statistics families to compute.
    pub need: Need,
    /// Worker threads.
    pub threads: usize,
    /// How the elements are reached.
    pub storage: &'a Storage,
    /// The HDF5 dataset, for messages.
    pub dataset: Option<&'a str>,
    /// For storage that is not memory-mapped: the raw bytes of the first selected row
    /// (all columns), from which the shift is taken.
    pub first_row_bytes: Option<Vec<u8>>,
    /// Read dense blocks of contiguous data with `pread` instead of mapping them.
    pub read: bool,
    /// Set by the caller to stop the run: no block starts after it is seen.
    pub cancel: Option<&'a AtomicBool>,
    /// Also return the canonical tree's nodes (for a [`crate::Partial`]), not only their fold.
    pub keep_nodes: bool,
}

struct State {
    next_merge: usize,
    pending: BTreeMap<usize, Vec<Acc>>,
    trees: HashMap<usize, Tree>,
    results: Vec<Acc>,
    nodes: Vec<Node>,
    error: Option<Error>,
}

/// Element bytes a block reduces.
pub fn block_bytes(b: &Block, itemsize: u64) -> u64 {
    (b.rows.end - b.rows.start) * (b.runs.end - b.runs.start) * itemsize
}

/// Stack reserved for each worker thread. Built without optimisation (a dependent crate's
/// debug build: colstats's own `[profile.dev]` settings do not apply there), the kernels,
/// forced inline into each instruction-set variant, take one frame of several MiB, more than
/// rayon's default 2 MiB. The reservation is virtual: only the pages touched are resident.
pub const WORKER_STACK: usize = 64 << 20;

/// Reduces every block of `plan` and returns one accumulator per selected column, and, when
/// the job asks to keep them, the nodes of the canonical tree those were folded from.
pub fn run(job: &Job<'_>, plan: &Plan, progress: &ProgressFn<'_>) -> Result<(Vec<Acc>, Vec<Node>)> {
    let mut results = vec![Acc::EMPTY; job.sel.len()];
    if plan.blocks.is_empty() {
        return Ok((results, Vec::new()));
    }
    // Called from inside a rayon pool (`ThreadPool::install`): run on that pool.
    let own = rayon::current_thread_index().is_none();
    let pool = if own {
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(job.threads.max(1))
            .stack_size(WORKER_STACK)
            .thread_name(|i| format!("colstats-{i}"))
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Threads,
                    None,
                    format!("cannot start worker threads: {e}"),
                )
            })?;
        Some(p)
    } else {
        None
    };
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let done_bytes = AtomicU64::new(0);
    let state = Mutex::new(State {
        next_merge: 0,
        pending: BTreeMap::new(),
        trees: HashMap::new(),
        results: std::mem::take(&mut results),
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
            let bytes = block_bytes(block, itemsize);
            progress(done_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes);
        }
    };
    let workers = plan.in_flight.max(1);
    match &pool {
        Some(pool) => pool.scope(|s| (0..workers).for_each(|_| s.spawn(|_| worker()))),
        None => rayon::in_place_scope(|s| (0..workers).for_each(|_| s.spawn(|_| worker()))),
    }
    let st = state.into_inner().unwrap();
    if let Some(e) = st.error {
        return Err(e);
    }
    debug_assert_eq!(st.next_merge, plan.blocks.len());
    Ok((st.results, st.nodes))
}

/// Merges the partials that are next in block order.
fn drain(st: &mut State, job: &Job<'_>, plan: &Plan) {
    while let Some(partial) = st.pending.remove(&st.next_merge) {
        let b = &plan.blocks[st.next_merge];
        let g = &plan.groups[b.group];
        let tree = st.trees.entry(b.group).or_default();
        match b.level {
            Some(k) => tree.push_at(b.first_leaf, k, partial),
            None => tree.push_tail(b.first_leaf, partial),
        }
        st.next_merge += 1;
        if st.next_merge == g.first_block + g.blocks {
            let nodes = st.trees.remove(&b.group).expect("tree exists").into_nodes();
            if job.keep_nodes {
                // Every group's rows are cut alike, so its nodes line up with the others'.
                for (i, n) in nodes.iter().enumerate() {
                    if st.nodes.len() <= i {
                        st.nodes.push(Node {
                            first_leaf: n.first_leaf,
                            level: n.level,
                            accs: vec![Acc::EMPTY; job.sel.len()],
                        });
                    }
                    debug_assert_eq!(st.nodes[i].first_leaf, n.first_leaf);
                    scatter(&mut st.nodes[i].accs, job, &g.kind, &n.accs);
                }
            }
            let accs = fold_nodes(nodes).expect("a group has blocks");
            scatter(&mut st.results, job, &g.kind, &accs);
        }
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

fn reduce_block(job: &Job<'_>, plan: &Plan, block: &Block, sc: &mut Scratch) -> Result<Vec<Acc>> {
    if !matches!(job.storage, Storage::Mapped) {
        let meta = job.meta;
        let s = meta.dtype.size;
        let w = meta.columns as usize;
        read_block(job, block, sc)?;
        let buf = &sc.block;
        let first = job.first_row_bytes.as_deref().unwrap_or(&buf[..w * s]);
        let shift = kernel::decode_shift(first, meta.dtype, w, s);
        return Ok(kernel::reduce(
            buf,
            meta.dtype,
            block.shape,
            job.need,
            &shift,
        ));
    }
    let meta = job.meta;
    let s = meta.dtype.size;
    let g = &plan.groups[block.group];
    // Dense blocks can be read into a reused buffer instead (sparse column tiles would read
    // bytes they do not need).
    let mapped;
    let data: &[u8] = if job.read && block.dense {
        read_dense(job, block, &mut sc.block)?;
        &sc.block
    } else {
        mapped = map_block(job, block)?;
        &mapped.0[mapped.1..]
    };
    let first = block.rows.start == job.first_row;
    let out = match &g.kind {
        GroupKind::Rows { cols } => {
            let w = (cols.end - cols.start) as usize;
            let shift = if first {
                kernel::decode_shift(&data[..w * s], meta.dtype, w, s)
            } else {
                let off = meta.data_offset + (job.first_row * meta.columns + cols.start) * s as u64;
                kernel::decode_shift(&read_at(job, off, w * s)?, meta.dtype, w, s)
            };
            kernel::reduce(data, meta.dtype, block.shape, job.need, &shift)
        }
        GroupKind::Runs { .. } => {
            let n0 = meta.rows as usize;
            let mut out = Vec::with_capacity((block.runs.end - block.runs.start) as usize);
            for (i, m) in block.runs.clone().enumerate() {
                let sub = &data[i * n0 * s..];
                let shift = if first {
                    kernel::decode_shift(&sub[..s], meta.dtype, 1, s)
                } else {
                    let off = meta.data_offset + (m * meta.rows + job.first_row) * s as u64;
                    kernel::decode_shift(&read_at(job, off, s)?, meta.dtype, 1, s)
                };
                out.extend(kernel::reduce(
                    sub,
                    meta.dtype,
                    block.shape,
                    job.need,
                    &shift,
                ));
            }
            out
        }
    };
    Ok(out)
}
