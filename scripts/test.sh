#!/usr/bin/env bash
# Every test (unit, integration, doctests, MPI runs), a debug build of a crate that depends on
# colstats, then the quick end-to-end benchmarks (which asserts nothing about speed), then a
# one-line total. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --mpi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets 2>&1 | tee "$log"
cargo test --doc 2>&1 | tee -a "$log"
# MPI: the same binary built with the `mpi` feature, run under mpirun -n 1..4.
cargo test --release --features mpi --test mpi 2>&1 | tee -a "$log"
./scripts/dependent_check.sh
# The portable kernel (what an aarch64 node runs) keeps compiling for aarch64 (about 75 s).
if command -v rustup >/dev/null && rustup target add aarch64-unknown-linux-gnu; then
    cargo check --target aarch64-unknown-linux-gnu --no-default-features --features cli
else
    echo 'warning: no aarch64 target to check the portable kernel against' >&2
fi
cargo bench --bench e2e -- --quick
cargo bench --bench batch -- --quick
passed=$(grep -E '^test result:' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | awk '{s += $6} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
