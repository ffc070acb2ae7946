//! Running a [`Request`]: its inputs opened once and every domain planned before any data
//! is read, the plans executed domain by domain on one thread pool, results finished into a
//! [`Summary`] and a [`State`]; the batch mode (one state per input in a directory, resume)
//! and keep-going.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::moments::Acc;
use crate::request::budget_error;
use crate::state::{DomainNodes, InputId, InputNodes, Job};
use crate::*;

/// How far a run has come, for a progress display.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// Element bytes reduced so far.
    pub bytes_done: u64,
    /// Element bytes the run reduces.
    pub bytes_total: u64,
    /// Inputs whose rows are all reduced.
    pub files_done: usize,
    /// Inputs in the run.
    pub files_total: usize,
    /// The input being read (the last one started).
    pub current: Option<PathBuf>,
}

/// The inputs of a run, opened, and what every reduction over them shares.
pub(crate) struct Opened {
    pub(crate) inputs: source::Inputs,
    /// Selected columns, sorted, unique.
    pub(crate) sel: Vec<u64>,
    /// The columns in output order.
    pub(crate) order: Vec<u64>,
    /// The request's rows.
    pub(crate) rows: Range<u64>,
    pub(crate) shift: kernel::Shift,
    pub(crate) shift_bits: Vec<u64>,
    pub(crate) threads: usize,
    pub(crate) need: kernel::Need,
    /// The job's identity, as states record it.
    pub(crate) job: Job,
    /// The dataset read from the HDF5 inputs (that of the first one).
    pub(crate) dataset: Option<String>,
    /// The budget left to plan blocks with, once the inputs' bookkeeping is counted.
    pub(crate) budget: u64,
}

/// One domain's plan for its share of some rows: the domain, the inputs those rows lie in
/// (a window of the domain's, so that a reduction over a few rows of a domain of 10,000
/// inputs handles a few of them), and the plan over the window's segments.
pub(crate) struct DomainPlan {
    pub(crate) domain: usize,
    pub(crate) window: Range<usize>,
    pub(crate) plan: plan::Plan,
}

/// The plans of a reduction over some rows: one per domain those rows touch.
pub(crate) struct Planned {
    rows: Range<u64>,
    pub(crate) plans: Vec<DomainPlan>,
    /// Element bytes the plans reduce (progress).
    bytes: u64,
}

/// What a reduction leaves: the accumulators of the selected columns, each input's own
/// (when asked for; by input index, sorted), and the domains' tree nodes (when kept).
pub(crate) struct Reduced {
    accs: Vec<Acc>,
    per_input: Vec<(usize, Vec<Acc>)>,
    domains: Vec<DomainNodes>,
    /// Each input's own tree (kept nodes with per-input results).
    input_trees: Vec<InputNodes>,
}

type ProgressCb<'a> = &'a (dyn Fn(&Progress) + Sync);

/// The job's worker pool, started when the first block is reduced (idle workers spinning
/// while 1,000 inputs are opened cost 30 ms here), or the caller's pool.
pub(crate) struct JobPool {
    threads: usize,
    /// Whether the job has its own pool (it was not called from inside one).
    own: bool,
    pool: std::sync::OnceLock<rayon::ThreadPool>,
}

impl JobPool {
    /// The pool to run on: the job's own (started now if need be), or `None` for the
    /// caller's.
    fn get(&self) -> Result<Option<&rayon::ThreadPool>> {
        if !self.own {
            return Ok(None);
        }
        if let Some(p) = self.pool.get() {
            return Ok(Some(p));
        }
        let p = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads)
            .stack_size(exec::WORKER_STACK)
            .thread_name(|i| format!("colstats-{i}"))
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Threads,
                    None,
                    format!("cannot start worker threads: {e}"),
                )
            })?;
        Ok(Some(self.pool.get_or_init(|| p)))
    }
}

type Pool<'a> = &'a JobPool;

impl Request {
    /// Runs the reduction, calling `progress` as blocks finish, and returns its summary and,
    /// when `state` is set, its mergeable state.
    pub fn run_job(
        &self,
        progress: impl Fn(&Progress) + Sync,
        state: bool,
    ) -> Result<(Summary, Option<State>)> {
        let threads = self.thread_count()?;
        // One pool for the whole job (every domain, every input of a batch); none when
        // called from inside the caller's pool, which is then used. The job itself stays on
        // this thread (opening 1,000 inputs from a pool worker while the other workers spin
        // waiting for work cost 25 ms here); only the reductions run in the pool.
        let pool = JobPool {
            threads,
            own: rayon::current_thread_index().is_none(),
            pool: std::sync::OnceLock::new(),
        };
        self.run_attempts(&pool, &progress, state)
    }

    fn run_attempts(
        &self,
        pool: Pool<'_>,
        progress: ProgressCb<'_>,
        state: bool,
    ) -> Result<(Summary, Option<State>)> {
        // Inputs left out while reading, and (from the last attempt) at opening.
        let mut dropped: Vec<(PathBuf, String)> = Vec::new();
        let mut paths = self.paths.clone();
        loop {
            let mut skipped = Vec::new();
            let attempt = self.open_and_run(pool, &paths, &mut skipped, progress, state);
            match attempt {
                // Only an input that cannot be read is left out (not a budget or request
                // error, which no input's absence would fix).
                Err(e)
                    if self.keep_going
                        && matches!(
                            e.kind(),
                            ErrorKind::Io
                                | ErrorKind::Format
                                | ErrorKind::Size
                                | ErrorKind::UnsupportedType
                        ) =>
                {
                    // A failure while reading one input: leave it out and run again.
                    let Some(p) = e.path().map(Path::to_path_buf) else {
                        return Err(e);
                    };
                    let Some(i) = paths.iter().position(|x| *x == p) else {
                        return Err(e);
                    };
                    dropped.push((paths.remove(i), e.message()));
                    if paths.is_empty() {
                        return Err(Error::new(
                            ErrorKind::Request,
                            None,
                            "every input was skipped",
                        ));
                    }
                }
                Err(e) => return Err(e),
                Ok((mut summary, st)) => {
                    skipped.extend(dropped);
                    // In the order the inputs were given.
                    let pos = |p: &PathBuf| self.paths.iter().position(|x| x == p);
                    skipped.sort_by_key(|(p, _)| pos(p));
                    summary.skipped = skipped;
                    return Ok((summary, st));
                }
            }
        }
    }

    fn open_and_run(
        &self,
        pool: Pool<'_>,
        paths: &[PathBuf],
        skipped: &mut Vec<(PathBuf, String)>,
        progress: ProgressCb<'_>,
        state: bool,
    ) -> Result<(Summary, Option<State>)> {
        if paths.is_empty() {
            return Err(Error::new(ErrorKind::Request, None, "no input files"));
        }
        let threads = self.thread_count()?;
        let inputs = if self.keep_going {
            let (inputs, bad) = source::Inputs::open_lenient(paths, self.dataset.as_deref());
            skipped.extend(bad.into_iter().map(|(p, e)| (p, e.message())));
            inputs?
        } else {
            source::Inputs::open(paths, self.dataset.as_deref())?
        };
        let o = self.prepare(inputs, threads)?;
        match &self.state_dir {
            Some((dir, resume)) => self.batch(pool, &o, dir, *resume, progress),
            None => {
                let planned = self.plan_rows(&o, o.rows.clone())?;
                let red = self.reduce(pool, &o, &planned, state, 0, planned.bytes, progress)?;
                let st = if state {
                    let trees = self.per_input.then(|| red.input_trees.clone());
                    let ids = named_ids(&o.inputs, &planned.rows, None)?;
                    let mut st = self.state_with(&o, ids, &planned.rows, red.domains.clone());
                    st.per_input = trees;
                    Some(st)
                } else {
                    None
                };
                Ok((self.summary_of(&o, &red), st))
            }
        }
    }

    /// Checks the request against the opened inputs and reads the shift.
    fn prepare(&self, inputs: source::Inputs, threads: usize) -> Result<Opened> {
        let meta = &inputs.meta;
        let count = self
            .columns
            .as_ref()
            .map_or(meta.columns, |spec| spec.count(meta.columns));
        plan::results_fit(count, self.memory).map_err(|e| budget_error(&self.path, e))?;
        let order = self.column_order(meta)?;
        let mut sel = order.clone();
        sel.sort_unstable();
        sel.dedup();
        // Every input holds a line of bookkeeping for the whole run (and its own results
        // with per-input results): counted in the budget like everything else.
        let n = inputs.sources.len() as u64;
        let book = plan::inputs_bytes(
            n,
            inputs.bookkeeping(),
            self.per_input.then_some(sel.len() as u64),
        );
        let budget =
            plan::after_inputs(self.memory, n, book).map_err(|e| budget_error(&self.path, e))?;
        let rows = self
            .rows
            .unwrap_or(RowSpec::new(None, None))
            .resolve(meta.rows);
        let (shift, shift_bits) = row0_shift(&inputs, &sel)?;
        let job = Job::of(inputs.sources.iter().enumerate().map(|(i, s)| {
            (
                s.meta.path.as_path(),
                inputs.starts[i],
                s.meta.rows,
                s.dataset.as_deref(),
            )
        }));
        let dataset = inputs.sources.iter().find_map(|s| s.dataset.clone());
        Ok(Opened {
            inputs,
            sel,
            order,
            rows,
            shift,
            shift_bits,
            threads,
            need: stats::needs(&self.stats),
            job,
            dataset,
            budget,
        })
    }

    /// Plans every domain's share of `rows`.
    fn plan_rows(&self, o: &Opened, rows: Range<u64>) -> Result<Planned> {
        let plans = self.plan_domains(
            &o.inputs,
            &o.sel,
            o.threads,
            &rows,
            self.per_input,
            o.budget,
        )?;
        let itemsize = o.inputs.meta.dtype.size as u64;
        let bytes = plans
            .iter()
            .map(|p| exec::plan_bytes(&p.plan, itemsize))
            .sum();
        Ok(Planned { rows, plans, bytes })
    }

    /// One plan for each domain of `inputs` that `rows` reach, over the inputs those rows
    /// lie in (also `info`'s plans).
    pub(crate) fn plan_domains(
        &self,
        inputs: &source::Inputs,
        sel: &[u64],
        threads: usize,
        rows: &Range<u64>,
        per_input: bool,
        budget: u64,
    ) -> Result<Vec<DomainPlan>> {
        let doms = &inputs.domains;
        let first = doms.partition_point(|d| d.rows.end <= rows.start);
        let mut plans = Vec::new();
        for (k, d) in doms.iter().enumerate().skip(first) {
            if d.rows.start >= rows.end {
                break;
            }
            let (a, b) = (rows.start.max(d.rows.start), rows.end.min(d.rows.end));
            if a >= b {
                continue;
            }
            // The inputs holding rows a..b (every block, straddling leaves included, lies in
            // the selected rows).
            let lo = d.inputs.start + inputs.starts[d.inputs.clone()].partition_point(|&s| s <= a);
            let lo = lo.saturating_sub(1).max(d.inputs.start);
            let hi = d.inputs.start + inputs.starts[d.inputs.clone()].partition_point(|&s| s < b);
            let window = lo..hi.max(lo + 1).min(d.inputs.end);
            let segs: Vec<plan::Seg> = window
                .clone()
                .map(|i| plan::Seg {
                    start: inputs.starts[i] - d.rows.start,
                    rows: inputs.sources[i].meta.rows,
                    data_offset: inputs.sources[i].meta.data_offset,
                })
                .collect();
            let parts = plan::Parts {
                segs: &segs,
                per_input,
            };
            let path = &inputs.sources[window.start].meta.path;
            let p = plan::plan_parts(
                &d.meta,
                &parts,
                sel,
                a - d.rows.start..b - d.rows.start,
                budget,
                threads,
                self.block_limit,
            )
            .map_err(|e| budget_error(path, e))?;
            plans.push(DomainPlan {
                domain: k,
                window,
                plan: p,
            });
        }
        Ok(plans)
    }

    /// Executes the plans domain by domain; progress is reported from `base` of `total`.
    #[allow(clippy::too_many_arguments)]
    fn reduce(
        &self,
        pool: Pool<'_>,
        o: &Opened,
        planned: &Planned,
        keep_nodes: bool,
        base: u64,
        total: u64,
        progress: ProgressCb<'_>,
    ) -> Result<Reduced> {
        let inputs = &o.inputs;
        let itemsize = inputs.meta.dtype.size as u64;
        let rows = &planned.rows;
        let mut accs: Option<Vec<Acc>> = None;
        let mut per_input: Vec<(usize, Vec<Acc>)> = Vec::new();
        let mut domains = Vec::new();
        let mut input_trees = Vec::new();
        let mut done = base;
        let report = |bytes: u64| {
            // The input being read: the one holding the row this far into the rows.
            let frac = if planned.bytes == 0 {
                1.0
            } else {
                (bytes - base) as f64 / planned.bytes as f64
            };
            let row = rows.start + ((rows.end - rows.start) as f64 * frac) as u64;
            let cur = inputs.input_of(row.min(inputs.meta.rows.saturating_sub(1)));
            let files_done = inputs.starts[1..].partition_point(|&e| e <= row);
            progress(&Progress {
                bytes_done: bytes,
                bytes_total: total,
                files_done: files_done.min(inputs.sources.len()),
                files_total: inputs.sources.len(),
                current: Some(inputs.sources[cur].meta.path.clone()),
            });
        };
        for dp in &planned.plans {
            let d = &inputs.domains[dp.domain];
            let plan = &dp.plan;
            let window = dp.window.clone();
            // Its storage and I/O mode: those of its first input with rows (a domain of
            // several inputs is all mapped; its empty inputs may be of any kind).
            let lead = window
                .clone()
                .find(|&i| inputs.sources[i].meta.rows > 0)
                .unwrap_or(window.start);
            let first = &inputs.sources[lead];
            let ins: Vec<exec::Input> = window
                .clone()
                .map(|i| exec::Input {
                    meta: &inputs.sources[i].meta,
                    file: &inputs.sources[i].file,
                    start: inputs.starts[i] - d.rows.start,
                })
                .collect();
            let job = exec::Job {
                meta: &d.meta,
                inputs: &ins,
                sel: &o.sel,
                shift: &o.shift,
                need: o.need,
                threads: plan.threads,
                storage: &first.storage,
                dataset: first.dataset.as_deref(),
                read: self.io.resolve(&first.file),
                cancel: self.cancel.as_ref().map(|c| &*c.0),
                keep_nodes,
                per_input: self.per_input,
            };
            let at = done;
            let out = exec::run(&job, plan, pool.get()?, &|n| report(at + n))?;
            done += exec::plan_bytes(plan, itemsize);
            if self.per_input {
                let tree = |nodes: Vec<moments::Node>| DomainNodes {
                    rows: d.rows.clone(),
                    leaf_rows: plan.leaf_rows,
                    nodes,
                };
                let own = |i: usize| InputNodes {
                    input: i as u64,
                    order: inputs.sources[i].meta.order,
                    tree: tree(Vec::new()),
                };
                if window.len() == 1 {
                    per_input.push((window.start, out.accs.clone()));
                    if keep_nodes && !out.nodes.is_empty() {
                        let mut t = own(window.start);
                        t.tree.nodes = out.nodes.clone();
                        input_trees.push(t);
                    }
                } else {
                    for (k, a) in out.per_input.into_iter().enumerate() {
                        per_input.push((window.start + k, a));
                    }
                    for (k, nodes) in out.per_input_nodes.into_iter().enumerate() {
                        if !nodes.is_empty() {
                            let mut t = own(window.start + k);
                            t.tree.nodes = nodes;
                            input_trees.push(t);
                        }
                    }
                }
            }
            // A domain without selected rows adds nothing (merging an empty one could
            // still renormalise a sum's two parts).
            if !plan.blocks.is_empty() {
                accs = Some(match accs {
                    None => out.accs,
                    Some(mut a) => {
                        moments::merge_into(&mut a, &out.accs);
                        a
                    }
                });
                domains.push(DomainNodes {
                    rows: d.rows.clone(),
                    leaf_rows: plan.leaf_rows,
                    nodes: out.nodes,
                });
            }
        }
        report(done);
        // Windows of different domains hold different inputs, in row order.
        debug_assert!(per_input.windows(2).all(|w| w[0].0 < w[1].0));
        Ok(Reduced {
            accs: accs.unwrap_or_else(|| vec![Acc::EMPTY; o.sel.len()]),
            per_input,
            domains,
            input_trees,
        })
    }

    fn state_with(
        &self,
        o: &Opened,
        ids: Vec<InputId>,
        rows: &Range<u64>,
        domains: Vec<DomainNodes>,
    ) -> State {
        let meta = &o.inputs.meta;
        State {
            dtype: meta.dtype,
            shape: meta.shape.clone(),
            order: meta.order,
            dataset: o.dataset.clone(),
            nan: self.nan,
            ddof: self.ddof,
            stats: self.stats.clone(),
            need: o.need,
            job: o.job,
            inputs: ids,
            columns: o.sel.clone(),
            output: o.order.clone(),
            shift: o.shift_bits.clone(),
            rows: if rows.is_empty() {
                Vec::new()
            } else {
                vec![rows.clone()]
            },
            head: None,
            domains,
            per_input: None,
        }
    }

    /// The summary of a reduction over the request's rows.
    fn summary_of(&self, o: &Opened, red: &Reduced) -> Summary {
        let inputs = &o.inputs;
        let meta = &inputs.meta;
        let rows = &o.rows;
        let pick = |accs: &[Acc]| -> Vec<Acc> {
            o.order
                .iter()
                .map(|c| accs[o.sel.binary_search(c).expect("selected")])
                .collect()
        };
        let mut summary = self.summarise(
            meta,
            rows.end - rows.start,
            o.order.clone(),
            &pick(&red.accs),
        );
        summary.dataset = o.dataset.clone();
        // The first input read (keep-going may have left the first given out).
        summary.path = inputs.sources[0].meta.path.clone();
        summary.inputs = inputs.sources.iter().map(|s| s.meta.path.clone()).collect();
        if self.per_input {
            let empty = vec![Acc::EMPTY; o.sel.len()];
            for (i, src) in inputs.sources.iter().enumerate() {
                let (a, b) = (
                    rows.start.max(inputs.starts[i]),
                    rows.end.min(inputs.starts[i + 1]),
                );
                let accs = match red.per_input.binary_search_by_key(&i, |(j, _)| *j) {
                    Ok(k) => &red.per_input[k].1,
                    Err(_) => &empty,
                };
                let mut s =
                    self.summarise(&src.meta, b.saturating_sub(a), o.order.clone(), &pick(accs));
                s.path = src.meta.path.clone();
                s.inputs = vec![s.path.clone()];
                s.dataset = src.dataset.clone();
                summary.per_input.push(s);
            }
        }
        summary
    }

    fn summarise(&self, meta: &ArrayMeta, rows: u64, columns: Vec<u64>, accs: &[Acc]) -> Summary {
        let fin = Finish {
            stats: &self.stats,
            ddof: self.ddof,
            nan: self.nan,
        };
        let mut s = summarise(
            &fin,
            &self.path,
            meta.dtype,
            &meta.shape,
            meta.order,
            rows,
            columns,
            accs,
        );
        s.dataset = self.dataset.clone();
        s
    }

    /// The batch mode: each input's leaves reduced on their own and kept as a state in
    /// `dir` (reused when `resume` and still valid), then all merged, one state at a time
    /// in row order, so memory stays that of one input's work and the merged result.
    fn batch(
        &self,
        pool: Pool<'_>,
        o: &Opened,
        dir: &Path,
        resume: bool,
        progress: ProgressCb<'_>,
    ) -> Result<(Summary, Option<State>)> {
        make_state_dir(dir)?;
        let inputs = &o.inputs;
        let n = inputs.sources.len();
        let mut warnings = Vec::new();
        // First, which states can be reused, and a plan for every other input (checking
        // the budget before anything is read); the plans are made again when their turn
        // comes, so that only one is held at a time.
        let mut reuse = vec![false; n];
        let mut total = 0u64;
        for (i, again) in reuse.iter_mut().enumerate() {
            let owned = owned_rows(inputs, i, &o.rows);
            let path = state_path(dir, i, &inputs.sources[i].meta.path);
            if resume {
                match State::load(&path) {
                    Ok(st) => {
                        if reusable(&st, o, i, &owned, self)? {
                            *again = true;
                            continue;
                        }
                    }
                    Err(e)
                        if e.kind() == ErrorKind::Io
                            && e.io_kind() == Some(std::io::ErrorKind::NotFound) => {}
                    Err(e) => warnings.push(format!(
                        "{}; {} is read again",
                        e,
                        inputs.sources[i].meta.path.display()
                    )),
                }
            }
            total += self.plan_rows(o, owned)?.bytes;
        }
        let done_before = reuse.iter().filter(|&&r| r).count();
        let mut merged = self.state_with(o, Vec::new(), &(0..0), Vec::new());
        merged.per_input = self.per_input.then(Vec::new);
        let mut done = 0u64;
        let mut fresh = 0usize;
        for (i, &again) in reuse.iter().enumerate() {
            let owned = owned_rows(inputs, i, &o.rows);
            let path = state_path(dir, i, &inputs.sources[i].meta.path);
            // Checked in the first loop (inputs included); only that it is still the same
            // state is checked again.
            let kept = if again {
                State::load(&path)
                    .ok()
                    .filter(|st| st.job == o.job && st.rows == owned_ranges(&owned))
            } else {
                None
            };
            let st = match kept {
                Some(st) => st,
                None => {
                    let planned = self.plan_rows(o, owned.clone())?;
                    let cur = inputs.sources[i].meta.path.clone();
                    let files_done = done_before + fresh;
                    let at = done;
                    let red = self.reduce(
                        pool,
                        o,
                        &planned,
                        true,
                        0,
                        planned.bytes,
                        &|p: &Progress| {
                            progress(&Progress {
                                bytes_done: at + p.bytes_done,
                                bytes_total: total.max(at + p.bytes_done),
                                files_done,
                                files_total: n,
                                current: Some(cur.clone()),
                            })
                        },
                    )?;
                    done += planned.bytes;
                    fresh += 1;
                    let ids = named_ids(inputs, &owned, Some(i))?;
                    let mut st = self.state_with(o, ids, &owned, red.domains);
                    // Each input's own tree, for --per-file: the parts of the inputs this
                    // run's leaves reach (its own, and the head of the next one).
                    st.per_input = self.per_input.then_some(red.input_trees);
                    st.save_unsynced(&path)?;
                    st
                }
            };
            merged.merge(&st)?;
            merged.fold_head();
        }
        progress(&Progress {
            bytes_done: done,
            bytes_total: done,
            files_done: n,
            files_total: n,
            current: None,
        });
        let mut summary = merged.finish_with(&self.stats, Some(self.ddof))?;
        summary.rows = o.rows.end - o.rows.start;
        summary.warnings = warnings;
        Ok((summary, Some(merged)))
    }
}

/// Creates a state directory, or says clearly why it cannot be one.
fn make_state_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::Request,
            Some(dir),
            "the state directory exists and is not a directory",
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// The identities, read now, of the inputs a state over `rows` names: those holding its
/// rows, and the empty ones at their edges; with `own`, that input too (a batch input all
/// of whose rows lie in the leaf before it still has its state).
fn named_ids(
    inputs: &source::Inputs,
    rows: &Range<u64>,
    own: Option<usize>,
) -> Result<Vec<InputId>> {
    let n = inputs.sources.len();
    // From the first input ending at or after rows.start to the last starting at or
    // before rows.end (none for no rows).
    let lo = inputs.starts[1..].partition_point(|&e| e < rows.start);
    let hi = if rows.is_empty() {
        lo
    } else {
        inputs.starts[..n].partition_point(|&s| s <= rows.end)
    };
    let mut named: Vec<usize> = (lo..hi.max(lo))
        .filter(|&i| {
            let (s, e) = (inputs.starts[i], inputs.starts[i + 1]);
            (s < rows.end && e > rows.start) || (s == e && rows.start <= s && s <= rows.end)
        })
        .chain(own)
        .collect();
    named.sort_unstable();
    named.dedup();
    named
        .into_iter()
        .map(|i| {
            let src = &inputs.sources[i];
            InputId::of(
                &src.meta.path,
                src.dataset.as_deref(),
                i as u64,
                inputs.starts[i],
                src.meta.rows,
            )
        })
        .collect()
}

/// The rows a batch reduces for input `i`: the leaves that start in it (in its domain's
/// tree), within the request's rows. Over all inputs: adjacent, disjoint, covering the rows.
fn owned_rows(inputs: &source::Inputs, i: usize, rows: &Range<u64>) -> Range<u64> {
    let d = &inputs.domains[inputs.domains.partition_point(|d| d.inputs.end <= i)];
    let leaf = plan::leaf_rows(&d.meta).max(1);
    let up = |x: u64| (d.rows.start + (x - d.rows.start).div_ceil(leaf) * leaf).min(d.rows.end);
    let (s, e) = (inputs.starts[i], inputs.starts[i + 1]);
    let a = if i == d.inputs.start {
        d.rows.start
    } else {
        up(s)
    };
    let b = if i + 1 == d.inputs.end {
        d.rows.end
    } else {
        up(e)
    };
    let (a, b) = (a.max(rows.start), b.min(rows.end));
    if a < b {
        a..b
    } else {
        0..0
    }
}

/// A state's rows for a reduction over `r`.
fn owned_ranges(r: &Range<u64>) -> Vec<Range<u64>> {
    if r.is_empty() {
        Vec::new()
    } else {
        vec![r.clone()]
    }
}

fn state_path(dir: &Path, i: usize, input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!("{i:06}-{stem}.cstate"))
}

/// Whether a saved state of input `i` can stand for reading it again: the same job (input
/// list), array, columns, policy, statistics and shift, its rows exactly the ones owned
/// now, and every input it names unchanged.
fn reusable(st: &State, o: &Opened, i: usize, owned: &Range<u64>, r: &Request) -> Result<bool> {
    let meta = &o.inputs.meta;
    let rows_ok = if owned.is_empty() {
        st.rows.is_empty()
    } else {
        st.rows == [owned.clone()]
    };
    // The domains it holds nodes of are still domains, with the same leaves (an input
    // rewritten in another layout changes them).
    let domains_ok = st.domains.iter().all(|sd| {
        o.inputs
            .domains
            .iter()
            .any(|d| d.rows == sd.rows && plan::leaf_rows(&d.meta) == sd.leaf_rows)
    });
    let same_run = st.job == o.job
        && st.head.is_none()
        && domains_ok
        && rows_ok
        && st.dtype == meta.dtype
        && st.shape == meta.shape
        && st.columns == o.sel
        && st.output == o.order
        && st.shift == o.shift_bits
        && st.nan == r.nan
        && st.need == o.need
        && st.stats == r.stats
        && st.per_input.is_some() == r.per_input;
    if !same_run {
        return Ok(false);
    }
    // Every input it read, unchanged (read now only for a state that could be reused).
    let now = match named_ids(&o.inputs, owned, Some(i)) {
        Ok(ids) => ids,
        Err(_) => return Ok(false),
    };
    Ok(now == st.inputs)
}

/// How accumulators become results: which statistics, ddof, NaN policy.
pub(crate) struct Finish<'a> {
    pub(crate) stats: &'a [Stat],
    pub(crate) ddof: u64,
    pub(crate) nan: NanPolicy,
}

/// The summary of accumulators `accs` (one per column of `columns`, in that order).
#[allow(clippy::too_many_arguments)]
pub(crate) fn summarise(
    how: &Finish<'_>,
    path: &Path,
    dtype: DType,
    shape: &[u64],
    order: Order,
    rows: u64,
    columns: Vec<u64>,
    accs: &[Acc],
) -> Summary {
    let fin = stats::Finish {
        int: dtype.is_integer(),
        ddof: how.ddof,
        propagate: how.nan == NanPolicy::Propagate,
    };
    let values = how
        .stats
        .iter()
        .map(|&st| {
            let f = stats::def(st).finish;
            let outs: Vec<stats::Out> = accs.iter().map(|a| f(a, &fin)).collect();
            // Integer or float is the statistic's and dtype's, not the data's.
            let v = if matches!(f(&Acc::EMPTY, &fin), stats::Out::I(_)) {
                Values::Int(
                    outs.iter()
                        .map(|o| match o {
                            stats::Out::I(v) => *v,
                            stats::Out::F(_) => None,
                        })
                        .collect(),
                )
            } else {
                Values::Float(
                    outs.iter()
                        .map(|o| match o {
                            stats::Out::F(v) => *v,
                            stats::Out::I(v) => v.map_or(f64::NAN, |v| v as f64),
                        })
                        .collect(),
                )
            };
            (st, v)
        })
        .collect();
    Summary {
        path: path.to_path_buf(),
        dataset: None,
        dtype,
        shape: shape.to_vec(),
        order,
        rows,
        columns,
        ddof: how.ddof,
        nan: how.nan,
        stats: how.stats.to_vec(),
        values,
        inputs: vec![path.to_path_buf()],
        per_input: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    }
}

/// The shift of every column: its value in row 0 of the concatenated array, as the kernel
/// decodes it (unselected columns of Fortran-order input stay 0), and the selected columns'
/// shifts as bits (f64 bits for floats, the integer for integer dtypes), what a partial's
/// means are relative to.
fn row0_shift(inputs: &source::Inputs, sel: &[u64]) -> Result<(kernel::Shift, Vec<u64>)> {
    use std::os::unix::fs::FileExt;
    let m0 = &inputs.meta;
    let s = m0.dtype.size;
    let mut row = vec![0u8; m0.columns as usize * s];
    let mut dtype = m0.dtype;
    if let Some(src) = inputs.sources.iter().find(|x| x.meta.rows > 0) {
        let m = &src.meta;
        dtype = m.dtype;
        if !m.mapped {
            row = first_row(src, 0)?;
        } else {
            let io = |e| Error::io(&m.path, e);
            match m.order {
                source::Order::C => src
                    .file
                    .read_exact_at(&mut row, m.data_offset)
                    .map_err(io)?,
                source::Order::F => {
                    for &c in sel {
                        let at = m.data_offset + m.run_of_column(c) * m.rows * s as u64;
                        let i = c as usize * s;
                        src.file.read_exact_at(&mut row[i..i + s], at).map_err(io)?;
                    }
                }
            }
        }
    }
    let shift = kernel::decode_shift(&row, dtype, m0.columns as usize, s);
    let bits = sel
        .iter()
        .map(|&c| {
            let c = c as usize;
            match shift.float.get(c) {
                Some(v) => v.to_bits(),
                None => shift.int.get(c).map_or(0, |&v| v as u64),
            }
        })
        .collect();
    Ok((shift, bits))
}

/// The raw bytes of row `row` (all columns) of a buffered (HDF5) input.
#[cfg(feature = "hdf5")]
fn first_row(src: &source::Source, row: u64) -> Result<Vec<u8>> {
    let m = &src.meta;
    let mut buf = vec![0u8; (m.columns * m.dtype.size as u64) as usize];
    match &src.storage {
        source::Storage::Hdf5(r) => {
            source::hdf5::read_rows(&m.path, r, &m.shape, row, row + 1, &mut buf)?
        }
        source::Storage::Chunked(ch) => {
            // Decode the band holding the row, then keep the row.
            let c0 = ch.chunk[0];
            let (b0, b1) = (row / c0 * c0, (row / c0 * c0 + c0).min(m.rows));
            let mut band = vec![0u8; ((b1 - b0) * m.columns * m.dtype.size as u64) as usize];
            let mut sc = source::hdf5::ChunkScratch::default();
            source::hdf5::read_chunk_rows(
                &m.path,
                src.dataset.as_deref().unwrap_or("?"),
                &src.file,
                ch,
                &m.shape,
                m.dtype.size,
                (b0, b1),
                &mut sc,
                &mut band,
            )?;
            let off = ((row - b0) * m.columns * m.dtype.size as u64) as usize;
            let n = buf.len();
            buf.copy_from_slice(&band[off..off + n]);
        }
        source::Storage::Mapped => unreachable!("mapped inputs read their shift in place"),
    }
    Ok(buf)
}

#[cfg(not(feature = "hdf5"))]
fn first_row(_src: &source::Source, _row: u64) -> Result<Vec<u8>> {
    unreachable!("only HDF5 inputs are buffered")
}
