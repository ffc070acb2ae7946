//! One request across the ranks of an MPI job (feature `mpi`).
//!
//! Every rank opens the same inputs and makes the same split of the selected rows into one
//! leaf-aligned range per rank, of about equal bytes ([`Request::shards`]); each rank reduces
//! its range with its own threads and budget into a [`State`]; rank 0 receives the states as
//! bytes, point to point in rank order, and merges them in row order. A merge of leaf-aligned
//! states is the bits of one run, so the result is the same for any number of ranks. No MPI
//! reduction with a user operation is used: MPI may regroup those in any order.
//!
//! Failures never leave a rank waiting: each phase ends with every rank agreeing on success
//! with one collective (a maximum of failure flags), and a failure anywhere makes every rank
//! return the same error (the lowest failing rank's message). Panics in local work are
//! caught and count as failures. (On Open MPI 4.1 with PMIx, a rank that exits or aborts while
//! others wait in a collective can hang `mpirun` itself; agreeing first avoids that path.)

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::traits::*;

use crate::error::{Error, ErrorKind, Result};
use crate::{Progress, Request, RowSpec, State, Summary};

const TAG_PROGRESS: i32 = 11;
const TAG_ERROR: i32 = 12;
const TAG_VERDICT: i32 = 13;
const TAG_STATE: i32 = 14;
/// Bytes per point-to-point message (MPI counts are C ints).
const PIECE: usize = 1 << 30;

/// This process's rank as the launcher's environment gives it (before `MPI_Init`), if any.
pub fn launcher_rank() -> Option<usize> {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Whether this process was started by an MPI launcher (`mpirun`, `mpiexec`, `srun` with
/// PMI/PMIx): the variables Open MPI, MPICH and PMIx set in every rank.
pub fn under_launcher() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// An initialised MPI environment; MPI is finalised when it is dropped.
pub struct Cluster {
    world: mpi::topology::SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

impl Cluster {
    /// Initialises MPI (once per process; a second call is an error).
    pub fn init() -> Result<Cluster> {
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::new(ErrorKind::Threads, None, "MPI is already initialised"))?;
        Ok(Cluster {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    /// The number of ranks.
    pub fn size(&self) -> usize {
        self.world.size() as usize
    }

    /// Waits until every rank has called it (so that rank 0's last words are out before any
    /// rank exits: mpirun drops the output of a job it is tearing down).
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Rank 0's `bytes`, on every rank (what the others pass is ignored). A collective.
    pub fn share(&self, bytes: Vec<u8>) -> Vec<u8> {
        if self.rank() == 0 {
            for r in 1..self.world.size() {
                send_bytes(&self.world.process_at_rank(r), &bytes);
            }
            bytes
        } else {
            receive_bytes(&self.world.process_at_rank(0))
        }
    }

    /// Every rank passes its local outcome; all return `Ok` when every rank succeeded, else
    /// all return the same error: the lowest failing rank's. A collective: every rank must
    /// call it.
    pub fn agree(&self, local: Result<()>) -> Result<()> {
        let flag = local.is_err() as i32;
        let mut any = 0i32;
        self.world
            .all_reduce_into(&flag, &mut any, SystemOperation::max());
        if any == 0 {
            return Ok(());
        }
        let mine = match &local {
            Err(e) => encode_error(e),
            Ok(()) => Vec::new(),
        };
        let root = self.world.process_at_rank(0);
        let verdict = if self.rank() == 0 {
            let mut first = (!mine.is_empty()).then_some(mine);
            for r in 1..self.world.size() {
                let (m, _) = self
                    .world
                    .process_at_rank(r)
                    .receive_vec_with_tag::<u8>(TAG_ERROR);
                if first.is_none() && !m.is_empty() {
                    first = Some(m);
                }
            }
            let v = first.unwrap_or_default();
            for r in 1..self.world.size() {
                self.world
                    .process_at_rank(r)
                    .send_with_tag(&v[..], TAG_VERDICT);
            }
            v
        } else {
            root.send_with_tag(&mine[..], TAG_ERROR);
            root.receive_vec_with_tag::<u8>(TAG_VERDICT).0
        };
        Err(decode_error(&verdict))
    }

    /// Runs `req` across the ranks. Rank 0 returns the summary (and, with `want_state`, the
    /// merged state), exactly what one process would; the other ranks return `None`.
    /// `progress` is called on rank 0 only, with every rank's bytes. Per-input results travel
    /// in the states. Refused (on every rank) for batch mode and keep-going, which are
    /// single-process modes.
    pub fn run(
        &self,
        req: &Request,
        want_state: bool,
        progress: impl Fn(&Progress) + Sync,
    ) -> Result<Option<(Summary, Option<State>)>> {
        let (rank, size) = (self.rank(), self.size());
        let t0 = Instant::now();
        // Phase 1: every rank the same split (headers read, plans checked).
        let split = guarded(|| {
            injected(rank, "plan")?;
            if req.keep_going || req.state_dir.is_some() {
                return Err(Error::new(
                    ErrorKind::Request,
                    None,
                    "keep-going and a state directory are not available across MPI ranks \
                     (run them in one process)",
                ));
            }
            let mut ranges = req.shards(size as u64)?;
            let end = ranges.last().map_or(0, |r| r.end);
            ranges.resize(size, end..end);
            Ok(ranges)
        });
        let ranges = match split {
            Ok(r) => {
                self.agree(Ok(()))?;
                r
            }
            Err(e) => return self.agree(Err(e)).map(|_| None),
        };
        // Phase 2: each rank its rows, progress sent to rank 0 meanwhile.
        let t1 = Instant::now();
        let mine: Range<u64> = ranges[rank].clone();
        let local = self.reduce_with_progress(req, &mine, &progress);
        let state = match local {
            Ok(st) => {
                self.agree(Ok(()))?;
                st
            }
            Err(e) => return self.agree(Err(e)).map(|_| None),
        };
        // Phase 3: the states to rank 0 in a binary tree that keeps leaf order: at step d
        // (1, 2, 4, ...) rank r with r % 2d == d sends its state to r - d, which merges it
        // and compacts the result. Rank 0 receives log2(N) states instead of N - 1.
        let t2 = Instant::now();
        let mut merged = state;
        let mut failure: Option<Error> = guarded(|| injected(rank, "gather")).err();
        let mut gathered = 0usize;
        let mut d = 1usize;
        while d < size {
            if rank % (2 * d) == d {
                // A leading 1 and the state, or a leading 0 and the subtree's error.
                let bytes = match &failure {
                    None => guarded(|| Ok(merged.to_bytes())),
                    Some(e) => Err(Error::new(e.kind(), None, e.cli_message())),
                };
                let msg = match bytes {
                    Ok(b) => [vec![1u8], b].concat(),
                    Err(e) => [vec![0u8], encode_error(&e)].concat(),
                };
                send_bytes(&self.world.process_at_rank((rank - d) as i32), &msg);
                return match failure {
                    Some(e) => Err(e),
                    None => Ok(None),
                };
            }
            if rank + d < size {
                let bytes = receive_bytes(&self.world.process_at_rank((rank + d) as i32));
                gathered += bytes.len();
                if failure.is_none() {
                    let got = match bytes.split_first() {
                        Some((1, st)) => guarded(|| {
                            merged.merge(&State::from_bytes(st)?)?;
                            merged.compact();
                            // Rank 0 holds the first rows: what it has passed is folded.
                            if rank == 0 {
                                merged.fold_head();
                            }
                            Ok(())
                        }),
                        Some((_, e)) => Err(decode_error(e)),
                        None => Err(Error::new(ErrorKind::Io, None, "an empty message")),
                    };
                    failure = got.err();
                }
            }
            d *= 2;
        }
        if let Some(e) = failure {
            return Err(e);
        }
        let mut summary = guarded(|| merged.finish_with(&req.stats, Some(req.ddof)))?;
        summary.rows = merged.row_count();
        if std::env::var_os("COLSTATS_MPI_TIMING").is_some() {
            // Diagnostics for the cost model (README): seconds per phase on rank 0.
            eprintln!(
                "mpi timing: ranks {size} split {:.6} s reduce {:.6} s gather+merge {:.6} s state bytes {gathered}",
                (t1 - t0).as_secs_f64(),
                (t2 - t1).as_secs_f64(),
                t2.elapsed().as_secs_f64()
            );
        }
        Ok(Some((summary, want_state.then_some(merged))))
    }

    /// Reduces `rows` of `req` into a state on a worker thread while this (the MPI) thread
    /// forwards progress: other ranks send theirs to rank 0, which adds them up.
    fn reduce_with_progress(
        &self,
        req: &Request,
        rows: &Range<u64>,
        progress: &(dyn Fn(&Progress) + Sync),
    ) -> Result<State> {
        let (rank, size) = (self.rank(), self.size());
        let done = AtomicU64::new(0);
        let total = AtomicU64::new(0);
        let finished = AtomicBool::new(false);
        let sub = req
            .clone()
            .rows(RowSpec::new(Some(rows.start as i64), Some(rows.end as i64)));
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let out = guarded(|| {
                    injected(rank, "reduce")?;
                    sub.run_job(
                        |p| {
                            done.store(p.bytes_done, Ordering::Relaxed);
                            total.store(p.bytes_total, Ordering::Relaxed);
                        },
                        true,
                    )
                    .map(|(_, st)| st.expect("asked for the state"))
                });
                finished.store(true, Ordering::SeqCst);
                out
            });
            // Per rank: bytes done, bytes to do, finished.
            let mut table = vec![[0u64; 3]; size];
            let mut last_sent = Instant::now() - Duration::from_secs(1);
            loop {
                let fin = finished.load(Ordering::SeqCst);
                let now = [
                    done.load(Ordering::Relaxed),
                    total.load(Ordering::Relaxed),
                    fin as u64,
                ];
                if rank == 0 {
                    table[0] = now;
                    while let Some(st) = self
                        .world
                        .any_process()
                        .immediate_probe_with_tag(TAG_PROGRESS)
                    {
                        let src = st.source_rank();
                        let (v, _) = self
                            .world
                            .process_at_rank(src)
                            .receive_vec_with_tag::<u64>(TAG_PROGRESS);
                        if v.len() == 3 {
                            table[src as usize] = [v[0], v[1], v[2]];
                        }
                    }
                    progress(&Progress {
                        bytes_done: table.iter().map(|t| t[0]).sum(),
                        bytes_total: table.iter().map(|t| t[1]).sum(),
                        files_done: 0,
                        files_total: 0,
                        current: None,
                    });
                    if table.iter().all(|t| t[2] == 1) {
                        break;
                    }
                } else if fin || last_sent.elapsed() >= Duration::from_millis(250) {
                    self.world
                        .process_at_rank(0)
                        .send_with_tag(&now[..], TAG_PROGRESS);
                    last_sent = Instant::now();
                    if fin {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(if fin { 1 } else { 20 }));
            }
            worker.join().unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Threads,
                    None,
                    "a worker thread panicked",
                ))
            })
        })
    }
}

/// Testing aid: `COLSTATS_MPI_TEST_FAIL=RANK:PHASE` makes rank RANK fail in PHASE (`plan`:
/// while opening and splitting; `reduce`: while reducing; `gather`: before passing its
/// state on; `panic`: a panic while reducing; `kill`: SIGKILL while reducing), so that tests
/// can fail one rank alone.
fn injected(rank: usize, phase: &str) -> Result<()> {
    let Ok(spec) = std::env::var("COLSTATS_MPI_TEST_FAIL") else {
        return Ok(());
    };
    let Some((r, p)) = spec.split_once(':') else {
        return Ok(());
    };
    if r.parse::<usize>().ok() != Some(rank) {
        return Ok(());
    }
    match (p, phase) {
        ("plan", "plan") | ("reduce", "reduce") | ("gather", "gather") => Err(Error::new(
            ErrorKind::Io,
            None,
            format!("injected failure on rank {rank} ({phase})"),
        )),
        ("panic", "reduce") => panic!("injected panic on rank {rank}"),
        ("kill", "reduce") => {
            // SAFETY: raising a signal in our own process.
            unsafe { libc::raise(libc::SIGKILL) };
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Runs `f`, turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::new(
            ErrorKind::Threads,
            None,
            format!("internal error (a panic): {what}"),
        ))
    })
}

const KINDS: [ErrorKind; 11] = [
    ErrorKind::Io,
    ErrorKind::Format,
    ErrorKind::UnsupportedType,
    ErrorKind::Size,
    ErrorKind::Request,
    ErrorKind::Budget,
    ErrorKind::Threads,
    ErrorKind::Cancelled,
    ErrorKind::Mismatch,
    ErrorKind::State,
    ErrorKind::Gap,
];

/// An error as bytes: its kind, then its one-line message with the CLI's option names.
fn encode_error(e: &Error) -> Vec<u8> {
    let k = KINDS.iter().position(|&k| k == e.kind()).unwrap_or(4) as u8;
    let mut v = vec![k];
    v.extend_from_slice(e.cli_message().as_bytes());
    v
}

fn decode_error(b: &[u8]) -> Error {
    let kind = b
        .first()
        .and_then(|&k| KINDS.get(k as usize))
        .copied()
        .unwrap_or(ErrorKind::Request);
    let msg = String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into_owned();
    Error::new(kind, None, msg)
}

/// Sends `bytes` as its length, then pieces of at most [`PIECE`] bytes.
fn send_bytes(to: &mpi::topology::Process<'_>, bytes: &[u8]) {
    to.send_with_tag(&(bytes.len() as u64), TAG_STATE);
    for piece in bytes.chunks(PIECE) {
        to.send_with_tag(piece, TAG_STATE);
    }
}

fn receive_bytes(from: &mpi::topology::Process<'_>) -> Vec<u8> {
    let (n, _) = from.receive_with_tag::<u64>(TAG_STATE);
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let (piece, _) = from.receive_vec_with_tag::<u8>(TAG_STATE);
        if piece.is_empty() {
            break;
        }
        out.extend_from_slice(&piece);
    }
    out
}
