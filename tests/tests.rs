//! colstats's integration tests, in one binary (one link instead of seven), a module per
//! area; `tests/memory.rs` alone is its own binary (see there). Most run the built `colstats` binary on files written by numpy, h5py, the netCDF4
//! library or the tests themselves, and compare with exact references.

mod api;
mod batch;
mod common;
mod datagen;
mod fixtures_numpy;
mod generated;
#[cfg(feature = "hdf5")]
mod hdf5_fixtures;
#[cfg(feature = "hdf5")]
mod hdf5_generated;
mod partials;
mod properties;
mod shrink;
mod simd;
