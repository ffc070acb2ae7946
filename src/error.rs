//! The library's error type: one [`ErrorKind`] per kind of failure, whatever the format.

use std::path::{Path, PathBuf};

/// What kind of failure an [`Error`] is. The same failure has the same kind whatever the
/// input format: a string dtype is [`ErrorKind::UnsupportedType`] in `.npy` and HDF5 alike,
/// a directory is [`ErrorKind::Io`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened, read or mapped, or is not a regular file.
    Io,
    /// The file is not in a format colstats reads, or its metadata is corrupt.
    Format,
    /// The array's element type is not a numeric type colstats reduces.
    UnsupportedType,
    /// The file holds fewer (or more) data bytes than its metadata promises.
    Size,
    /// The request does not fit the array (column or row out of range, dataset missing or
    /// ambiguous, an option that does not apply), or an option's value is invalid.
    Request,
    /// The request cannot be met within the memory budget.
    Budget,
    /// The worker threads could not be started.
    Threads,
    /// The run was cancelled by the caller.
    Cancelled,
    /// Inputs that cannot be read as one array (dtype or trailing shape differ), or saved
    /// states that cannot be merged (different arrays, columns or policy, overlapping rows).
    Mismatch,
    /// A saved state file is truncated, corrupt, or of a newer format version.
    State,
    /// Saved states leave rows uncovered (a gap between them).
    Gap,
}

/// Everything that can go wrong while inspecting or reducing an array: its kind, the file
/// it concerns (if any) and what is wrong, in the library's own terms.
///
/// `Display` gives one line, `FILE: message`. [`Error::cli_message`] gives the same line with
/// the command-line tool's option names where the message mentions an option.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: Option<PathBuf>,
    msg: String,
    source: Option<std::io::Error>,
}

/// Shorthand for results carrying [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Option names in messages: written as these markers, shown as the library's words by
/// `Display` and as the CLI's flags by [`Error::cli_message`].
pub(crate) mod opt {
    /// The dataset to read.
    pub const DATASET: &str = "\u{1}dataset\u{2}";
    /// The memory budget.
    pub const MEMORY: &str = "\u{1}memory\u{2}";
    /// The column selection.
    pub const COLUMNS: &str = "\u{1}columns\u{2}";
}

const OPTIONS: [(&str, &str, &str); 3] = [
    (opt::DATASET, "the dataset path", "--dataset"),
    (opt::MEMORY, "the memory budget", "--memory"),
    (opt::COLUMNS, "columns", "--columns"),
];

fn render(msg: &str, cli: bool) -> String {
    let mut s = msg.to_string();
    for (marker, lib, flag) in OPTIONS {
        s = s.replace(marker, if cli { flag } else { lib });
    }
    s
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// An error of `kind` about `path` (if any), saying `msg`.
    pub fn new(kind: ErrorKind, path: Option<&Path>, msg: impl Into<String>) -> Error {
        Error {
            kind,
            path: path.map(Path::to_path_buf),
            msg: msg.into(),
            source: None,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file it concerns, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What is wrong, without the file name, in the library's words.
    pub fn message(&self) -> String {
        self.body(false)
    }

    /// The one-line message as the command-line tool shows it: `FILE: message`, with
    /// `--flag` names where the message mentions an option.
    pub fn cli_message(&self) -> String {
        self.render(true)
    }

    /// The message and the underlying error, without the file name.
    fn body(&self, cli: bool) -> String {
        let m = render(&self.msg, cli);
        match &self.source {
            Some(e) if m.is_empty() => e.to_string(),
            Some(e) => format!("{m}: {e}"),
            None => m,
        }
    }

    fn render(&self, cli: bool) -> String {
        let m = self.body(cli);
        match &self.path {
            Some(p) => format!("{}: {m}", p.display()),
            None => m,
        }
    }

    /// The kind of the underlying I/O error, if there is one.
    pub(crate) fn io_kind(&self) -> Option<std::io::ErrorKind> {
        self.source.as_ref().map(|e| e.kind())
    }

    /// The same error about `path` (for errors found before the file was known).
    pub(crate) fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }

    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Format, Some(path), msg)
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error {
            kind: ErrorKind::Io,
            path: Some(path.to_path_buf()),
            msg: String::new(),
            source: Some(source),
        }
    }
    pub(crate) fn request(path: &Path, msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Request, Some(path), msg)
    }
    pub(crate) fn size(path: &Path, msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Size, Some(path), msg)
    }
    pub(crate) fn unsupported(path: &Path, msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::UnsupportedType, Some(path), msg)
    }
    pub(crate) fn budget(path: &Path, msg: impl Into<String>) -> Self {
        Error::new(ErrorKind::Budget, Some(path), msg)
    }
}
