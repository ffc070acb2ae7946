//! A reduction to run: the builder, and what it runs (`info`, `run`, partials).

use crate::*;
use std::path::{Path, PathBuf};

/// What `colstats info` reports: the datasets of an HDF5 file, and for the chosen array its
/// metadata and the plan a run would follow.
#[derive(Clone, Debug)]
pub struct Info {
    /// The format.
    pub format: Format,
    /// Every dataset of an HDF5 file, each once (empty for `.npy`).
    pub datasets: Vec<DatasetInfo>,
    /// The chosen dataset's path (HDF5).
    pub dataset: Option<String>,
    /// How the chosen array is read (HDF5), e.g. "memory-mapped" or "chunks decoded in parallel".
    pub access: String,
    /// The array and its plan for reducing every column over every row; `None` for an HDF5
    /// file with several datasets and no `--dataset`.
    pub array: Option<(ArrayMeta, PlanSummary)>,
    /// Worker threads the plan assumes.
    pub threads: usize,
    /// The inputs (several are read as one array; then `array` is their concatenation and
    /// its plan the sum of the domains' plans).
    pub inputs: Vec<PathBuf>,
    /// Merge-tree domains of the inputs (see [`Request::inputs`]).
    pub domains: usize,
}

/// The plan a run would follow, as `colstats info` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanSummary {
    /// The memory budget, in bytes.
    pub budget: u64,
    /// Blocks the array is cut into.
    pub blocks: usize,
    /// The first block's rows and columns (`None` when there is no block).
    pub block_shape: Option<(u64, u64)>,
    /// Largest number of bytes one block touches.
    pub block_bytes: u64,
    /// Groups of blocks (column ranges reduced together).
    pub groups: usize,
    /// Blocks mapped or read at the same time.
    pub in_flight: usize,
    /// Rows per leaf of the merge tree.
    pub leaf_rows: u64,
    /// Estimated peak memory of the run, in bytes.
    pub est_memory: u64,
}

impl PlanSummary {
    fn of(meta: &ArrayMeta, p: &plan::Plan) -> PlanSummary {
        PlanSummary {
            budget: p.budget,
            blocks: p.blocks.len(),
            block_shape: p.blocks.first().map(|b| {
                if meta.order == Order::F {
                    (b.rows.end - b.rows.start, b.runs.end - b.runs.start)
                } else {
                    (b.shape.rows as u64, b.shape.width as u64)
                }
            }),
            block_bytes: p.block_bytes,
            groups: p.groups.len(),
            in_flight: p.in_flight,
            leaf_rows: p.leaf_rows,
            est_memory: p.est_memory,
        }
    }
}

/// A handle that stops a running [`Request`] from another thread (see
/// [`Request::cancel_token`]). Clones share one flag.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(pub(crate) std::sync::Arc<std::sync::atomic::AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Asks every run holding this token to stop; runs stop within one block.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A reduction to run: built with [`Request::new`] and the setters, run with [`Request::run`].
#[derive(Clone, Debug)]
pub struct Request {
    pub(crate) path: PathBuf,
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) per_input: bool,
    pub(crate) dataset: Option<String>,
    pub(crate) stats: Vec<Stat>,
    pub(crate) memory: u64,
    pub(crate) threads: Option<usize>,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) nan: NanPolicy,
    pub(crate) ddof: u64,
    pub(crate) columns: Option<ColumnSpec>,
    pub(crate) rows: Option<RowSpec>,
    pub(crate) block_limit: u64,
    pub(crate) io: exec::IoMode,
    pub(crate) state_dir: Option<(PathBuf, bool)>,
    pub(crate) keep_going: bool,
}

impl Request {
    /// All statistics of every column of `path`, NaNs skipped, ddof 0, 1 GiB, all cores.
    pub fn new(path: impl AsRef<Path>) -> Request {
        Request {
            path: path.as_ref().to_path_buf(),
            paths: vec![path.as_ref().to_path_buf()],
            per_input: false,
            dataset: None,
            stats: Stat::ALL.to_vec(),
            memory: DEFAULT_MEMORY,
            threads: None,
            cancel: None,
            nan: NanPolicy::Skip,
            ddof: 0,
            columns: None,
            rows: None,
            block_limit: u64::MAX,
            io: exec::IoMode::Auto,
            state_dir: None,
            keep_going: false,
        }
    }

    /// Keeps one state per input in `dir` as each completes (written atomically), and with
    /// `resume` reuses every state there whose input is unchanged (path, rows, size,
    /// modification time, header) instead of reading that input again. Inputs are then
    /// reduced one after another, each over the rows of the leaves that start in it; the
    /// result is the same as one run's. An interruption loses only the input in flight.
    pub fn state_dir(mut self, dir: impl AsRef<Path>, resume: bool) -> Request {
        self.state_dir = Some((dir.as_ref().to_path_buf(), resume));
        self
    }

    /// Skips inputs that cannot be read (reported in [`Summary::skipped`]) instead of
    /// failing: those that fail to open or do not concatenate with the first readable one
    /// are left out before any data is read; one that fails while being read (a file
    /// truncated since it was opened) is left out and the job runs again without it.
    pub fn keep_going(mut self, yes: bool) -> Request {
        self.keep_going = yes;
        self
    }

    /// Several inputs read as one array, their rows concatenated in this order (as
    /// `numpy.concatenate(axis=0)`): the same dtype (byte order may differ) and the same
    /// shape after the first axis. The dataset, rows and columns apply to the concatenation.
    ///
    /// Consecutive inputs stored contiguously in C order (`.npy`, contiguous HDF5) share one
    /// merge tree over their rows, so the result is bit-identical to one file holding the
    /// same rows; other inputs (HDF5 chunks) keep their own tree, and trees are folded in
    /// input order.
    pub fn inputs<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Request {
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        let mut r = Request::new(paths.first().cloned().unwrap_or_default());
        r.paths = paths;
        r
    }

    /// Also report each input's own statistics ([`Summary::per_input`]), from the same
    /// read. An input's results are those of the run restricted to its rows.
    pub fn per_input(mut self, yes: bool) -> Request {
        self.per_input = yes;
        self
    }

    /// How contiguous data is reached: per-block memory maps (the default on local disks),
    /// or `pread` into reused buffers (the default on network filesystems, where every page
    /// fault can become a small request).
    pub fn io(mut self, mode: exec::IoMode) -> Request {
        self.io = mode;
        self
    }

    /// The HDF5 dataset to reduce.
    pub fn dataset(mut self, name: impl Into<String>) -> Request {
        self.dataset = Some(name.into());
        self
    }

    /// The statistics to compute (output keeps the canonical order, without duplicates).
    pub fn stats(mut self, stats: &[Stat]) -> Request {
        let mut v = stats.to_vec();
        v.sort();
        v.dedup();
        self.stats = v;
        self
    }

    /// The memory budget in bytes (maps, buffers and partial results together).
    pub fn memory(mut self, bytes: u64) -> Request {
        self.memory = bytes;
        self
    }

    /// Worker threads (default: the available cores, or, when called from inside a rayon
    /// pool, that pool's threads). 0 is refused when the request runs.
    ///
    /// Each run builds a pool of this many threads, so several runs at once multiply
    /// threads; to share threads, call [`Request::run`] from inside your own pool
    /// (`pool.install(|| request.run())`): the run then uses that pool and builds none
    /// (workers then use that pool's stack size; a debug build of colstats needs several MiB).
    pub fn threads(mut self, n: usize) -> Request {
        self.threads = Some(n);
        self
    }

    /// Lets another thread stop the run with [`CancelToken::cancel`]: no block starts after
    /// that, and the run returns an error of kind [`ErrorKind::Cancelled`].
    pub fn cancel_token(mut self, token: &CancelToken) -> Request {
        self.cancel = Some(token.clone());
        self
    }

    /// How NaNs are treated.
    pub fn nan(mut self, policy: NanPolicy) -> Request {
        self.nan = policy;
        self
    }

    /// Delta degrees of freedom for var and std.
    pub fn ddof(mut self, ddof: u64) -> Request {
        self.ddof = ddof;
        self
    }

    /// Only these columns, in this order.
    pub fn columns(mut self, spec: ColumnSpec) -> Request {
        self.columns = Some(spec);
        self
    }

    /// Only these rows.
    pub fn rows(mut self, spec: RowSpec) -> Request {
        self.rows = Some(spec);
        self
    }

    /// Caps the bytes per block below what the budget allows, to exercise many-block plans
    /// on small inputs in tests.
    #[doc(hidden)]
    pub fn block_limit(mut self, bytes: u64) -> Request {
        self.block_limit = bytes;
        self
    }

    /// The thread count, after checking every setting that can be wrong whatever the input:
    /// no statistics, zero threads, a budget below [`crate::MIN_BUDGET`].
    pub(crate) fn thread_count(&self) -> Result<usize> {
        if self.stats.is_empty() {
            return Err(Error::request(&self.path, "no statistics requested"));
        }
        if let Err(m) = kernel::simd_choice() {
            return Err(Error::new(ErrorKind::Request, None, m));
        }
        if let Some(e) = plan::budget_floor(self.memory) {
            return Err(budget_error(&self.path, e));
        }
        match self.threads {
            Some(0) => Err(Error::new(
                ErrorKind::Request,
                Some(&self.path),
                "the thread count must be at least 1",
            )),
            Some(n) => Ok(n),
            None if rayon::current_thread_index().is_some() => Ok(rayon::current_num_threads()),
            None => Ok(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)),
        }
    }

    /// `n` leaf-aligned row ranges of about equal size covering the selected rows (all rows
    /// by default): runs over them, saved with [`Request::run_state`] and merged, give the
    /// bits of one run over all the rows. Fewer than `n` when there are fewer leaves.
    pub fn shards(&self, n: u64) -> Result<Vec<std::ops::Range<u64>>> {
        if n == 0 {
            return Err(Error::request(
                &self.path,
                "the shard count must be at least 1",
            ));
        }
        let inputs = source::Inputs::open(&self.paths, self.dataset.as_deref())?;
        let rows = self
            .rows
            .unwrap_or(RowSpec::new(None, None))
            .resolve(inputs.meta.rows);
        let len = rows.end - rows.start;
        // No more shards than leaves (each shard holds at least one).
        let leaves: u64 = inputs
            .domains
            .iter()
            .map(|d| (d.rows.end - d.rows.start).div_ceil(plan::leaf_rows(&d.meta).max(1)))
            .sum();
        let n = n.min(leaves.max(1));
        let mut cuts = vec![rows.start];
        for k in 1..n {
            let at = rows.start + ((len as u128 * k as u128 + n as u128 / 2) / n as u128) as u64;
            // Snap to the nearest leaf boundary of the domain holding the row.
            let d = inputs
                .domains
                .iter()
                .find(|d| d.rows.contains(&at))
                .or(inputs.domains.last())
                .expect("at least one input");
            let leaf = plan::leaf_rows(&d.meta).max(1);
            let off = at.saturating_sub(d.rows.start);
            let snapped = (d.rows.start + (off + leaf / 2) / leaf * leaf).min(d.rows.end);
            cuts.push(snapped.clamp(rows.start, rows.end));
        }
        cuts.push(rows.end);
        cuts.dedup();
        Ok(cuts
            .windows(2)
            .filter(|w| w[0] < w[1])
            .map(|w| w[0]..w[1])
            .collect())
    }

    /// Opens the input and plans a full reduction without reading the data; for an HDF5
    /// file, lists its datasets.
    pub fn info(&self) -> Result<Info> {
        if self.paths.len() > 1 {
            return self.info_inputs();
        }
        let format = source::sniff(&self.path)?;
        let threads = self.thread_count()?;
        #[cfg(feature = "hdf5")]
        let datasets = if format == Format::Hdf5 {
            source::hdf5::list(&self.path)?
        } else {
            Vec::new()
        };
        #[cfg(not(feature = "hdf5"))]
        let datasets = Vec::new();
        // Without HDF5 support, opening says so.
        let choose = format == Format::Npy
            || self.dataset.is_some()
            || datasets.len() == 1
            || !cfg!(feature = "hdf5");
        let mut info = Info {
            format,
            datasets,
            dataset: None,
            access: String::new(),
            array: None,
            threads,
            inputs: self.paths.clone(),
            domains: 1,
        };
        if choose {
            let src = source::open(&self.path, self.dataset.as_deref())?;
            plan::results_fit(src.meta.columns, self.memory)
                .map_err(|e| budget_error(&self.path, e))?;
            let sel: Vec<u64> = (0..src.meta.columns).collect();
            let plan = plan::plan(
                &src.meta,
                &sel,
                0..src.meta.rows,
                self.memory,
                threads,
                self.block_limit,
            )
            .map_err(|e| budget_error(&self.path, e))?;
            info.threads = plan.threads;
            info.access = match &src.storage {
                source::Storage::Mapped => "memory-mapped per block".into(),
                #[cfg(feature = "hdf5")]
                source::Storage::Chunked(c) => match c.index {
                    source::hdf5::ChunkIndex::Table(_) => {
                        "chunks read raw and decoded in parallel".into()
                    }
                    source::hdf5::ChunkIndex::Library(_) => {
                        "chunks fetched raw through libhdf5 (one at a time, under its lock) \
                         and decoded in parallel"
                            .into()
                    }
                },
                #[cfg(feature = "hdf5")]
                source::Storage::Hdf5(r) => format!("libhdf5 hyperslab reads ({})", r.why),
            };
            info.dataset = src.dataset;
            let summary = PlanSummary::of(&src.meta, &plan);
            info.array = Some((src.meta, summary));
        }
        Ok(info)
    }

    /// [`Request::info`] for several inputs: their concatenation and the sum of the
    /// domains' plans.
    fn info_inputs(&self) -> Result<Info> {
        let threads = self.thread_count()?;
        let inputs = source::Inputs::open(&self.paths, self.dataset.as_deref())?;
        let meta = inputs.meta.clone();
        plan::results_fit(meta.columns, self.memory).map_err(|e| budget_error(&self.path, e))?;
        let sel: Vec<u64> = (0..meta.columns).collect();
        let n = inputs.sources.len() as u64;
        let budget = plan::after_inputs(
            self.memory,
            n,
            plan::inputs_bytes(n, inputs.bookkeeping(), None),
        )
        .map_err(|e| budget_error(&self.path, e))?;
        let plans = self.plan_domains(&inputs, &sel, threads, &(0..meta.rows), false, budget)?;
        let mut sum: Option<PlanSummary> = None;
        let mut used = 1;
        for dp in &plans {
            let (d, p) = (&inputs.domains[dp.domain], &dp.plan);
            used = used.max(p.threads);
            let ps = PlanSummary::of(&d.meta, p);
            sum = Some(match sum {
                None => ps,
                Some(mut a) => {
                    a.blocks += ps.blocks;
                    a.groups += ps.groups;
                    a.block_shape = a.block_shape.or(ps.block_shape);
                    a.block_bytes = a.block_bytes.max(ps.block_bytes);
                    a.in_flight = a.in_flight.max(ps.in_flight);
                    a.est_memory = a.est_memory.max(ps.est_memory);
                    a
                }
            });
        }
        let first = &inputs.sources[0];
        Ok(Info {
            format: first.format,
            datasets: Vec::new(),
            dataset: inputs.sources.iter().find_map(|s| s.dataset.clone()),
            access: format!("{} inputs as one array", inputs.sources.len()),
            array: sum.map(|s| (meta, s)),
            threads: used,
            inputs: self.paths.clone(),
            domains: inputs.domains.len(),
        })
    }

    /// Runs the reduction.
    pub fn run(&self) -> Result<Summary> {
        self.run_with_progress(|_, _| {})
    }

    /// Runs the reduction, calling `progress(bytes_done, bytes_total)` as blocks finish.
    pub fn run_with_progress(&self, progress: impl Fn(u64, u64) + Sync) -> Result<Summary> {
        let (summary, _) = self.run_job(|p| progress(p.bytes_done, p.bytes_total), false)?;
        Ok(summary)
    }

    /// Runs the reduction and returns its mergeable state (see [`State`]) rather than a
    /// summary: merge it with the states of runs over other rows of the same inputs
    /// ([`State::merge`]), then [`State::finish`].
    pub fn run_state(&self) -> Result<State> {
        let (_, state) = self.run_job(|_| {}, true)?;
        Ok(state.expect("asked for the state"))
    }

    /// Runs the reduction and returns both its summary and its mergeable state.
    pub fn run_with_state(&self, progress: impl Fn(u64, u64) + Sync) -> Result<(Summary, State)> {
        let (summary, state) = self.run_job(|p| progress(p.bytes_done, p.bytes_total), true)?;
        Ok((summary, state.expect("asked for the state")))
    }

    /// The former name of [`Request::run_state`].
    pub fn run_partial(&self) -> Result<State> {
        self.run_state()
    }

    /// The summary of a (merged) state with this request's statistics and ddof, and its
    /// columns in the order this request's column selection gives (each must be in the
    /// state).
    pub fn summarise_partial(&self, partial: &State) -> Result<Summary> {
        let mut st = partial.clone();
        let order = self.column_order_n(st.shape[1..].iter().product())?;
        if let Some(c) = order.iter().find(|c| st.columns.binary_search(c).is_err()) {
            return Err(Error::request(
                &self.path,
                format!("column {c} is not in the partial result"),
            ));
        }
        st.output = order;
        st.nan = self.nan;
        st.finish_with(&self.stats, Some(self.ddof))
    }

    pub(crate) fn column_order(&self, meta: &ArrayMeta) -> Result<Vec<u64>> {
        self.column_order_n(meta.columns)
    }

    fn column_order_n(&self, columns: u64) -> Result<Vec<u64>> {
        match &self.columns {
            Some(spec) => spec
                .resolve(columns)
                .map_err(|m| Error::request(&self.path, m)),
            None => Ok((0..columns).collect()),
        }
    }
}

pub(crate) fn budget_error(path: &Path, e: plan::PlanError) -> Error {
    Error::budget(path, e.0)
}
