//! Running a [`Request`]: its inputs opened once and every domain planned before any data
//! is read, the plans executed domain by domain, results finished into a [`Summary`] and a
//! [`State`]; the batch mode (one state per input in a directory, resume) and keep-going.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::moments::Acc;
use crate::request::budget_error;
use crate::state::{DomainNodes, InputId, InputNodes};
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
}

/// The plans of a reduction over some rows: one per domain.
pub(crate) struct Planned {
    rows: Range<u64>,
    plans: Vec<plan::Plan>,
    /// Element bytes the plans reduce (progress).
    bytes: u64,
}

/// What a reduction leaves: the accumulators of the selected columns, each input's own
/// (when asked for), and the domains' tree nodes (when kept).
pub(crate) struct Reduced {
    accs: Vec<Acc>,
    per_input: Vec<Vec<Acc>>,
    domains: Vec<DomainNodes>,
    /// Each input's own tree (kept nodes with per-input results).
    input_trees: Vec<InputNodes>,
}

type ProgressCb<'a> = &'a (dyn Fn(&Progress) + Sync);

impl Request {
    /// Runs the reduction, calling `progress` as blocks finish, and returns its summary and,
    /// when `state` is set, its mergeable state.
    pub fn run_job(
        &self,
        progress: impl Fn(&Progress) + Sync,
        state: bool,
    ) -> Result<(Summary, Option<State>)> {
        // Inputs left out while reading, and (from the last attempt) at opening.
        let mut dropped: Vec<(PathBuf, String)> = Vec::new();
        let mut paths = self.paths.clone();
        loop {
            let mut skipped = Vec::new();
            let attempt = self.open_and_run(&paths, &mut skipped, &progress, state);
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
            Some((dir, resume)) => self.batch(&o, dir, *resume, progress),
            None => {
                let planned = self.plan_rows(&o, o.rows.clone())?;
                let red = self.reduce(&o, &planned, state, 0, planned.bytes, progress)?;
                let st = if state {
                    let trees = self.per_input.then(|| red.input_trees.clone());
                    Some(self.state_of(&o, &planned.rows, red.domains.clone(), trees)?)
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
        let rows = self
            .rows
            .unwrap_or(RowSpec::new(None, None))
            .resolve(meta.rows);
        let (shift, shift_bits) = row0_shift(&inputs, &sel)?;
        Ok(Opened {
            inputs,
            sel,
            order,
            rows,
            shift,
            shift_bits,
            threads,
            need: stats::needs(&self.stats),
        })
    }

    /// Plans every domain's share of `rows`.
    fn plan_rows(&self, o: &Opened, rows: Range<u64>) -> Result<Planned> {
        let plans = self.plan_domains(&o.inputs, &o.sel, o.threads, &rows, self.per_input)?;
        let itemsize = o.inputs.meta.dtype.size as u64;
        let bytes = plans.iter().map(|p| exec::plan_bytes(p, itemsize)).sum();
        Ok(Planned { rows, plans, bytes })
    }

    /// One plan per domain of `inputs` for its share of `rows` (also `info`'s plans).
    pub(crate) fn plan_domains(
        &self,
        inputs: &source::Inputs,
        sel: &[u64],
        threads: usize,
        rows: &Range<u64>,
        per_input: bool,
    ) -> Result<Vec<plan::Plan>> {
        let mut plans = Vec::with_capacity(inputs.domains.len());
        for d in &inputs.domains {
            let (a, b) = (rows.start.max(d.rows.start), rows.end.min(d.rows.end));
            let local = if a < b {
                a - d.rows.start..b - d.rows.start
            } else {
                0..0
            };
            let segs = plan::segments(inputs, d);
            let parts = plan::Parts {
                segs: &segs,
                per_input,
            };
            let path = &inputs.sources[d.inputs.start].meta.path;
            let p = plan::plan_parts(
                &d.meta,
                &parts,
                sel,
                local,
                self.memory,
                threads,
                self.block_limit,
            )
            .map_err(|e| budget_error(path, e))?;
            plans.push(p);
        }
        Ok(plans)
    }

    /// Executes the plans domain by domain; progress is reported from `base` of `total`.
    fn reduce(
        &self,
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
        let mut per_input = vec![Vec::new(); inputs.sources.len()];
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
        for (d, plan) in inputs.domains.iter().zip(&planned.plans) {
            // Its storage and I/O mode: those of its first input with rows (a domain of
            // several inputs is all mapped; its empty inputs may be of any kind).
            let lead = d
                .inputs
                .clone()
                .find(|&i| inputs.sources[i].meta.rows > 0)
                .unwrap_or(d.inputs.start);
            let first = &inputs.sources[lead];
            let ins: Vec<exec::Input> = d
                .inputs
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
            let out = exec::run(&job, plan, &|n| report(at + n))?;
            done += exec::plan_bytes(plan, itemsize);
            if self.per_input {
                let tree = |nodes: Vec<moments::Node>| DomainNodes {
                    rows: d.rows.clone(),
                    leaf_rows: plan.leaf_rows,
                    nodes,
                };
                if d.inputs.len() == 1 {
                    per_input[d.inputs.start] = out.accs.clone();
                    if keep_nodes && !out.nodes.is_empty() {
                        input_trees.push(InputNodes {
                            input: d.inputs.start,
                            order: inputs.sources[d.inputs.start].meta.order,
                            tree: tree(out.nodes.clone()),
                        });
                    }
                } else {
                    for (k, a) in out.per_input.into_iter().enumerate() {
                        per_input[d.inputs.start + k] = a;
                    }
                    for (k, nodes) in out.per_input_nodes.into_iter().enumerate() {
                        if !nodes.is_empty() {
                            input_trees.push(InputNodes {
                                input: d.inputs.start + k,
                                order: inputs.sources[d.inputs.start + k].meta.order,
                                tree: tree(nodes),
                            });
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
        Ok(Reduced {
            accs: accs.unwrap_or_else(|| vec![Acc::EMPTY; o.sel.len()]),
            per_input,
            domains,
            input_trees,
        })
    }

    /// The state of a reduction over `rows`.
    fn state_of(
        &self,
        o: &Opened,
        rows: &Range<u64>,
        domains: Vec<DomainNodes>,
        per_input: Option<Vec<InputNodes>>,
    ) -> Result<State> {
        let mut st = self.state_with(o, input_ids(&o.inputs)?, rows, domains);
        st.per_input = per_input;
        Ok(st)
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
            dataset: o.inputs.sources[0].dataset.clone(),
            nan: self.nan,
            ddof: self.ddof,
            stats: self.stats.clone(),
            need: o.need,
            inputs: ids,
            columns: o.sel.clone(),
            output: o.order.clone(),
            shift: o.shift_bits.clone(),
            rows: if rows.is_empty() {
                Vec::new()
            } else {
                vec![rows.clone()]
            },
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
        summary.dataset = inputs.sources[0].dataset.clone();
        summary.inputs = inputs.sources.iter().map(|s| s.meta.path.clone()).collect();
        if self.per_input {
            for (i, src) in inputs.sources.iter().enumerate() {
                let (a, b) = (
                    rows.start.max(inputs.starts[i]),
                    rows.end.min(inputs.starts[i + 1]),
                );
                let accs = if red.per_input[i].is_empty() {
                    vec![Acc::EMPTY; o.sel.len()]
                } else {
                    red.per_input[i].clone()
                };
                let mut s = self.summarise(
                    &src.meta,
                    b.saturating_sub(a),
                    o.order.clone(),
                    &pick(&accs),
                );
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
    /// `dir` (reused when `resume` and still valid), then all merged.
    fn batch(
        &self,
        o: &Opened,
        dir: &Path,
        resume: bool,
        progress: ProgressCb<'_>,
    ) -> Result<(Summary, Option<State>)> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let inputs = &o.inputs;
        let n = inputs.sources.len();
        let ids = input_ids(inputs)?;
        let owned = owned_rows(inputs, &o.rows);
        // Reuse what can be reused, plan the rest: every plan is made before reading.
        let mut have: Vec<Option<State>> = vec![None; n];
        let mut todo: Vec<(usize, Planned)> = Vec::new();
        for i in 0..n {
            let path = state_path(dir, i, &inputs.sources[i].meta.path);
            if resume {
                if let Ok(st) = State::load(&path) {
                    if reusable(&st, o, &ids, &owned[i], self) {
                        have[i] = Some(st);
                        continue;
                    }
                }
            }
            todo.push((i, self.plan_rows(o, owned[i].clone())?));
        }
        let total: u64 = todo.iter().map(|(_, p)| p.bytes).sum();
        let done_before = have.iter().filter(|h| h.is_some()).count();
        let mut done = 0u64;
        for (k, (i, planned)) in todo.iter().enumerate() {
            let i = *i;
            let cur = inputs.sources[i].meta.path.clone();
            let files_done = done_before + k;
            let at = done;
            let red = self.reduce(o, planned, true, 0, planned.bytes, &|p: &Progress| {
                progress(&Progress {
                    bytes_done: at + p.bytes_done,
                    bytes_total: total,
                    files_done,
                    files_total: n,
                    current: Some(cur.clone()),
                })
            })?;
            done += planned.bytes;
            let mut st = self.state_with(o, ids.clone(), &planned.rows, red.domains);
            // Each input's own tree, for --per-file: the parts of the inputs this run's
            // leaves reach (its own, and the head of the next one).
            st.per_input = self.per_input.then_some(red.input_trees);
            st.save(&state_path(dir, i, &inputs.sources[i].meta.path))?;
            have[i] = Some(st);
        }
        progress(&Progress {
            bytes_done: done,
            bytes_total: total,
            files_done: n,
            files_total: n,
            current: None,
        });
        // Merge, with every state's inputs set to the inputs as they are now (what matters
        // of them was checked).
        let mut merged = self.state_with(o, ids.clone(), &(0..0), Vec::new());
        merged.per_input = self.per_input.then(Vec::new);
        for st in have.into_iter().flatten() {
            let mut st = st;
            st.inputs = ids.clone();
            merged.merge(&st)?;
        }
        let mut summary = merged.finish_with(&self.stats, Some(self.ddof))?;
        summary.rows = o.rows.end - o.rows.start;
        Ok((summary, Some(merged)))
    }
}

/// The identity of every input, as it is now (for a state).
fn input_ids(inputs: &source::Inputs) -> Result<Vec<InputId>> {
    inputs
        .sources
        .iter()
        .enumerate()
        .map(|(i, src)| {
            InputId::of(
                &src.meta.path,
                src.dataset.as_deref(),
                inputs.starts[i],
                src.meta.rows,
            )
        })
        .collect()
}

/// Per input, the rows a batch reduces for it: the leaves that start in it (in its domain's
/// tree), within the request's rows. Adjacent, disjoint, covering the rows.
fn owned_rows(inputs: &source::Inputs, rows: &Range<u64>) -> Vec<Range<u64>> {
    let mut out = vec![0..0; inputs.sources.len()];
    for d in &inputs.domains {
        let leaf = plan::leaf_rows(&d.meta).max(1);
        let up = |x: u64| (d.rows.start + (x - d.rows.start).div_ceil(leaf) * leaf).min(d.rows.end);
        for i in d.inputs.clone() {
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
            out[i] = if a < b { a..b } else { 0..0 };
        }
    }
    out
}

fn state_path(dir: &Path, i: usize, input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!("{i:06}-{stem}.cstate"))
}

/// Whether a saved state of input `i` can stand for reading it again: the same run (array,
/// columns, policy, statistics, shift), the same layout of every input (paths and rows),
/// its rows exactly the ones owned now, and every input it read unchanged.
fn reusable(st: &State, o: &Opened, ids: &[InputId], owned: &Range<u64>, r: &Request) -> bool {
    let meta = &o.inputs.meta;
    let same_layout = st.inputs.len() == ids.len()
        && st
            .inputs
            .iter()
            .zip(ids)
            .all(|(a, b)| a.path == b.path && a.start == b.start && a.rows == b.rows);
    let rows_ok = if owned.is_empty() {
        st.rows.is_empty()
    } else {
        st.rows == [owned.clone()]
    };
    let read_ok = ids
        .iter()
        .zip(&st.inputs)
        .filter(|(id, _)| {
            id.start < owned.end.max(owned.start + 1) && owned.start < id.start + id.rows.max(1)
        })
        .all(|(id, old)| id.same_file(old));
    // The domains it holds nodes of are still domains, with the same leaves (an input
    // rewritten in another layout changes them).
    let domains_ok = st.domains.iter().all(|sd| {
        o.inputs
            .domains
            .iter()
            .any(|d| d.rows == sd.rows && plan::leaf_rows(&d.meta) == sd.leaf_rows)
    });
    same_layout
        && domains_ok
        && rows_ok
        && read_ok
        && st.dtype == meta.dtype
        && st.shape == meta.shape
        && st.columns == o.sel
        && st.output == o.order
        && st.shift == o.shift_bits
        && st.nan == r.nan
        && st.need == o.need
        && st.stats == r.stats
        && st.per_input.is_some() == r.per_input
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
