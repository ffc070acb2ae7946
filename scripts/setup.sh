#!/usr/bin/env bash
# Installs what colstats needs on a fresh Debian machine with a Rust toolchain; idempotent.
# Other systems: a Rust toolchain (1.85+) and a C compiler; HDF5 support will also need
# the HDF5 C library with headers (Debian/Ubuntu: libhdf5-dev, Fedora: hdf5-devel,
# macOS: brew install hdf5).
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}"
fi
