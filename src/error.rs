//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while inspecting or reducing an array.
///
/// Every variant that concerns a file carries its path, so a message can name it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in a format colstats reads, or its header is corrupt.
    #[error("{}: {msg}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The array's element type is not a numeric type colstats reduces.
    #[error("{}: unsupported dtype {dtype}: {why}", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The dtype as the file spells it.
        dtype: String,
        /// Why it is refused.
        why: String,
    },
    /// The file holds fewer (or more) data bytes than its header promises.
    #[error("{}: {msg}", path.display())]
    Size {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The request does not fit the array (column or row out of range, dataset missing, ...).
    #[error("{}: {msg}", path.display())]
    Request {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The request cannot be met within the memory budget.
    #[error("{}: {msg}", path.display())]
    Budget {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Building the thread pool failed.
    #[error("cannot start worker threads: {0}")]
    Threads(String),
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn format(path: &std::path::Path, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn request(path: &std::path::Path, msg: impl Into<String>) -> Self {
        Error::Request {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
