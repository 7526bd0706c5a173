//! Errors of the image format library. Every message names the file or the
//! structure that is wrong, because users read them when an image is damaged.

use std::io;
use std::path::PathBuf;

/// An error from opening, reading, writing or checking an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A host I/O error where no path is known (e.g. an anonymous buffer).
    #[error("{0}")]
    RawIo(#[from] io::Error),
    /// The image is damaged or hostile: a structure is invalid.
    #[error("{0}")]
    Corrupt(String),
    /// The image uses a feature this implementation does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A check that stopped with `error` after reporting `messages` (which
    /// the caller prints before the error).
    #[error("{error}")]
    CheckFailed {
        messages: Vec<String>,
        error: Box<Error>,
    },
    /// A bad argument or creation option from the user.
    #[error("{0}")]
    InvalidArgument(String),
    /// An access beyond the end of the virtual disk.
    #[error("Access beyond end of image (offset {offset}, length {len}, size {size})")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    /// A write to an image opened read-only.
    #[error("Image is read-only")]
    ReadOnly,
    /// A backing chain that loops back on itself.
    #[error(
        "Backing file loop detected: '{0}' is its own backing file (directly or through a chain)"
    )]
    BackingLoop(String),
    /// An encrypted image needs a key that was not given.
    #[error("{0}")]
    NeedKey(String),
}

/// The result type of the format library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Shorthand for a corruption error.
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Error::Corrupt(msg.into())
    }

    /// Shorthand for an unsupported feature.
    pub fn unsupported(msg: impl Into<String>) -> Self {
        Error::Unsupported(msg.into())
    }

    /// Shorthand for a bad argument.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// True when the error is "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Io { source, .. } | Error::RawIo(source) => {
                source.kind() == io::ErrorKind::NotFound
            }
            _ => false,
        }
    }
}
