//! The library's error type. Every variant keeps its cause and names the file, row or document
//! it concerns, so a user can find the bad input without a debugger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: row {row}: {message}")]
    BadRow {
        path: PathBuf,
        row: usize,
        message: String,
    },
    #[error("document {doc}: {message}")]
    BadDocument { doc: String, message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("configuration: {0}")]
    Config(String),
    /// A device failed (model loading, or a batch after all retries).
    #[error("device {device}: {message}")]
    Device { device: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
