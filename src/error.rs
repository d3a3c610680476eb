//! One error type for the library, so both front ends (CLI and browser) can show a clear message
//! without knowing which stage failed.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file that is missing, truncated, corrupt or of the wrong kind. `file` names it so a
    /// user knows which download to redo.
    #[error("model file {file}: {reason}")]
    Model { file: String, reason: String },

    /// A document that cannot be turned into text. The other documents of the batch still go on.
    #[error("{file}: {reason}")]
    Document { file: String, reason: String },

    /// A stored index that this build cannot read.
    #[error("index file: {0}")]
    Index(String),

    /// Something the caller asked for that makes no sense (an empty question, k = 0, ...).
    #[error("{0}")]
    Input(String),

    /// A state the code should never reach: a caller inside pocketrag broke a rule (a position
    /// out of step with the cache, a matrix of the wrong shape). Kept apart from `Input` so that a
    /// user is told it is our bug, not their mistake.
    #[error("internal error (a bug in pocketrag; please report it): {0}")]
    Internal(String),

    /// No usable GPU, or a GPU operation that failed. The CPU path still works.
    #[error("GPU: {0}")]
    Gpu(String),

    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn model(file: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Model { file: file.to_string(), reason: reason.to_string() }
    }
    pub fn document(file: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Document { file: file.to_string(), reason: reason.to_string() }
    }
}
