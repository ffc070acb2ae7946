//! The memory budget's one owner: how `--memory` is split between the results, per-thread
//! scratch, the blocks in flight and the partial results waiting for their turn to merge.
//! The planner asks it every question of size; nothing else derives a share of the budget.

use super::PlanError;
use crate::moments::Acc;

/// Smallest budget accepted.
pub const MIN_BUDGET: u64 = 1 << 20;
/// Largest block a worker maps at once: per-block maps of tens of MiB, populated up front,
/// amortise mapping costs best on this machine class (see the I/O notes in the README).
pub const MAX_BLOCK_BYTES: u64 = 64 << 20;
/// Blocks are not cut smaller than this just to spread work over threads.
pub(super) const MIN_BALANCED_BLOCK: u64 = 1 << 20;
/// Fixed allowance for per-thread scratch and bookkeeping.
const SCRATCH_PER_THREAD: u64 = 256 << 10;
/// Bytes one column accumulator takes.
pub const ACC_BYTES: u64 = std::mem::size_of::<Acc>() as u64;

/// Bytes of the final results for `columns` columns (an accumulator and an index each).
fn results(columns: u64) -> u64 {
    columns.saturating_mul(ACC_BYTES + 8)
}

/// Checks that the results for `columns` selected columns take at most half of `budget`:
/// before the selection itself is built, whose size a corrupt header can make absurd.
pub fn results_fit(columns: u64, budget: u64) -> Result<(), PlanError> {
    let r = results(columns);
    if r > budget / 2 {
        return Err(PlanError(format!(
            "the results for {columns} columns need {} MiB, more than half the memory budget; \
             raise {} or select fewer {}",
            r >> 20,
            crate::error::opt::MEMORY,
            crate::error::opt::COLUMNS
        )));
    }
    Ok(())
}

/// Bookkeeping bytes one `.npy` input takes for the whole run, besides its path: its
/// metadata, open file, place in the concatenation and identity in the merged state
/// (measured: 10,000 inputs add about 6 MB to the peak RSS).
pub const NPY_INPUT_BYTES: u64 = 768;
/// The same for an HDF5 input, whose library handles stay open (measured: about 2.2 KiB).
pub const HDF5_INPUT_BYTES: u64 = 3 << 10;

/// Bytes the inputs of a run hold for its whole length: `each` (their bookkeeping, see
/// [`NPY_INPUT_BYTES`]) and, with per-input results (`per_input_columns`), every input's
/// own accumulators and results.
pub fn inputs_bytes(inputs: u64, each: u64, per_input_columns: Option<u64>) -> u64 {
    let per = per_input_columns.map_or(0, |c| results(c).saturating_mul(2));
    each.saturating_add(inputs.saturating_mul(per))
}

/// The budget left for blocks once `book` bytes of the `inputs`' bookkeeping are counted
/// (at least [`MIN_BUDGET`]); refused when they alone exceed it. One input's is within the
/// fixed allowance.
pub fn after_inputs(budget: u64, inputs: u64, book: u64) -> Result<u64, PlanError> {
    if inputs <= 1 {
        return Ok(budget);
    }
    if book > budget {
        return Err(PlanError(format!(
            "the {inputs} inputs need about {} MiB of bookkeeping for the run, more than the \
             memory budget; raise {}",
            book.div_ceil(1 << 20),
            crate::error::opt::MEMORY
        )));
    }
    Ok(budget.saturating_sub(book).max(MIN_BUDGET))
}

/// The budget below its floor.
pub fn floor_error(budget: u64) -> Option<PlanError> {
    (budget < MIN_BUDGET).then(|| {
        PlanError(format!(
            "{} {budget} bytes is below the minimum of {MIN_BUDGET} bytes (1 MiB)",
            crate::error::opt::MEMORY
        ))
    })
}

/// One run's split of the budget, for a given thread count.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    /// The whole budget.
    pub budget: u64,
    /// Results plus per-thread scratch: taken before any block.
    pub fixed: u64,
    /// What is left for blocks and waiting partials.
    pub avail: u64,
    /// One thread's share of `avail` for its block (at most [`MAX_BLOCK_BYTES`]).
    pub share: u64,
    /// Threads.
    pub threads: u64,
}

impl Split {
    /// The split of `budget` for `columns` selected columns on `threads` threads, each also
    /// needing `scratch_per_thread` bytes of the source's own (chunk decoding buffers).
    pub fn new(budget: u64, columns: u64, threads: u64, scratch_per_thread: u64) -> Split {
        let fixed = results(columns) + threads * (SCRATCH_PER_THREAD + scratch_per_thread);
        let avail = budget.saturating_sub(fixed);
        Split {
            budget,
            fixed,
            avail,
            share: (avail / threads).min(MAX_BLOCK_BYTES),
            threads,
        }
    }

    /// Completed partials allowed to wait for an earlier block (exec's window).
    pub fn window(&self) -> usize {
        2 * self.threads as usize
    }

    /// Partial results of C-order row blocks of `w` columns: each thread's tree of
    /// `depth_block` levels, the group's tree of `depth_group`, and the window.
    pub fn row_partials(&self, w: u64, depth_block: u64, depth_group: u64) -> u64 {
        let t = self.threads;
        w * ACC_BYTES * (t * (depth_block + 1) + depth_group + 2 * t)
    }

    /// Partial results of buffered (chunked) row blocks of 2^`k` leaves of `w` columns.
    pub fn buffered_partials(&self, w: u64, k: u32) -> u64 {
        let t = self.threads;
        w * ACC_BYTES * (t * (k as u64 + 2) + 2 * t + 64)
    }

    /// Partial results of Fortran-order run blocks.
    pub fn run_partials(&self) -> u64 {
        ACC_BYTES * (self.window() as u64 + self.threads) * 64
    }

    /// Blocks in flight: one per thread, fewer when blocks are larger than a thread's share
    /// (one chunk band of a buffered input).
    pub fn in_flight(&self, partials: u64, block_bytes: u64, blocks: usize) -> usize {
        let fit = (self.avail.saturating_sub(partials) / block_bytes.max(1)).max(1);
        (self.threads as usize).min(blocks).min(fit as usize).max(1)
    }

    /// Estimated peak memory of a plan, refused when over the budget.
    pub fn estimate(
        &self,
        in_flight: usize,
        block_bytes: u64,
        partials: u64,
    ) -> Result<u64, PlanError> {
        let est = self.fixed + in_flight as u64 * block_bytes + partials;
        if est > self.budget {
            return Err(PlanError(format!(
                "cannot fit the reduction in {} MiB (needs about {} MiB); raise {}",
                self.budget >> 20,
                est.div_ceil(1 << 20),
                crate::error::opt::MEMORY
            )));
        }
        Ok(est)
    }
}
