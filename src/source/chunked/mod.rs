//! Chunked storage shared by any format that keeps an array as a regular grid of chunks
//! (HDF5 now; Zarr would reuse it): the codecs that undo a chunk's write pipeline, and the
//! reader that assembles whole rows from chunks.

pub mod codec;
pub mod grid;

pub use codec::{decode_chunk, fletcher32, Codec};
pub use grid::{read_rows, ChunkScratch, Fetched, Grid};
