#!/usr/bin/env bash
# Installs what colstats needs on a fresh Debian/Ubuntu machine with a Rust toolchain;
# idempotent (installs nothing when everything is present).
#
#   scripts/setup.sh          the HDF5 C library and a C toolchain
#   scripts/setup.sh --mpi    also what the `mpi` feature needs: Open MPI (headers, mpicc,
#                             mpirun) and libclang for bindgen
#
# Other systems: a Rust toolchain (1.85+), a C compiler, pkg-config and the HDF5 C library
# with headers (Fedora: hdf5-devel; macOS: brew install hdf5; conda: hdf5). Without HDF5,
# build with `--no-default-features --features cli` (.npy only). On a cluster, load its MPI
# module (`module load openmpi`) before `cargo build --features mpi`: the build finds MPI
# through `mpicc -show` (set MPICC to pick another wrapper) or pkg-config (MPI_PKG_CONFIG).
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
dpkg -s libhdf5-dev >/dev/null 2>&1 || need+=(libhdf5-dev)
if [ "${1:-}" = "--mpi" ]; then
    dpkg -s libopenmpi-dev >/dev/null 2>&1 || need+=(libopenmpi-dev)
    dpkg -s openmpi-bin >/dev/null 2>&1 || need+=(openmpi-bin)
    dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
fi
if ((${#need[@]})); then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
