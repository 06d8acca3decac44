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
    /// An input file whose columns do not fit the job (a missing column, a column of an
    /// unusable type). Bad data of that file: the job's columns fit the others (see
    /// [`crate::engine::plan`]).
    #[error("{path}: {message}")]
    Columns { path: PathBuf, message: String },
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
    /// Input units (files or row-group ranges) that could not be read to the end; the rest of
    /// the run's output was written.
    #[error("{} input unit(s) could not be read completely: {}", .0.len(), join(.0))]
    Units(Vec<Error>),
    /// The output directory holds another job's output: resuming would mix the two.
    #[error(
        "{path}: holds the output of a different job: {differences}; run with --overwrite to \
         replace it, or choose another output directory"
    )]
    OtherJob { path: PathBuf, differences: String },
    /// An object store refused or failed a request about `url`; `hint` says what that means
    /// for the job (see [`crate::store`]).
    #[error("{url}: {hint}{source}")]
    Store {
        url: String,
        hint: &'static str,
        class: ErrorClass,
        #[source]
        source: object_store::Error,
    },
    /// Another live process writes the same output (see [`crate::engine::lease`]).
    #[error("{path}: {message}")]
    Busy { path: PathBuf, message: String },
}

/// The hint of an object store's refusal of the credentials.
const DENIED: &str = "access denied: check the credentials (AWS_ACCESS_KEY_ID and \
    AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*) and the bucket's \
    permissions: ";

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a caller (a job engine, a shell script) should do about an error; `jerex` maps each
/// class to an exit code. Ordered by severity: when several errors end a run, the most severe
/// class wins, because retrying cannot fix bad data or a bad configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// May succeed when run again: I/O trouble (disk full, interrupted), device or memory
    /// failures.
    Retryable,
    /// The input data is bad (corrupt or truncated file, a rejected document in strict mode).
    Data,
    /// The job, flags, model folder, input columns or output directory must be fixed.
    Config,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A Parquet error about `path`; an I/O failure underneath (a full disk while writing)
    /// stays an [`Error::Io`] (an object store's failure an [`Error::Store`]) so it is classed by
    /// its kind, not as bad data.
    pub fn parquet(path: impl Into<PathBuf>, e: parquet::errors::ParquetError) -> Self {
        match e {
            parquet::errors::ParquetError::External(inner) => {
                let path = path.into();
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => Error::io(path, *io),
                    Err(other) => match other.downcast::<object_store::Error>() {
                        // Read from an object store: classed by the store's answer.
                        Ok(os) => Error::store(path.to_string_lossy(), *os),
                        Err(other) => Error::Parquet {
                            path,
                            message: other.to_string(),
                        },
                    },
                }
            }
            e => Error::Parquet {
                path: path.into(),
                message: e.to_string(),
            },
        }
    }

    /// An object store's error about `url`, with a hint at what to fix and its class: a
    /// missing bucket or object, refused credentials, a bad key or option cannot be fixed by
    /// retrying; an unreachable or throttling store, a server error or a lost race can.
    pub fn store(url: impl Into<String>, source: object_store::Error) -> Self {
        use object_store::Error as E;
        // Some requests (listings) wrap the store's answer in a generic error: its text says.
        let mut text = source.to_string();
        let mut cause = std::error::Error::source(&source);
        while let Some(c) = cause {
            text.push_str(&c.to_string());
            cause = c.source();
        }
        let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        let denied = [
            "403 Forbidden",
            "401 Unauthorized",
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthorizationFailure",
        ];
        let (hint, class) = match &source {
            _ if has(&[
                "NoSuchBucket",
                "ContainerNotFound",
                "The specified bucket does not exist",
            ]) =>
            {
                (
                    "the bucket does not exist (or these credentials cannot see it): ",
                    ErrorClass::Config,
                )
            }
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => (DENIED, ErrorClass::Config),
            _ if has(&denied) => (DENIED, ErrorClass::Config),
            E::NotFound { .. } => ("no such object: ", ErrorClass::Config),
            E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented
            | E::UnknownConfigurationKey { .. } => ("", ErrorClass::Config),
            E::Generic { .. } => (
                "the object store failed or could not be reached (retryable): ",
                ErrorClass::Retryable,
            ),
            _ => ("", ErrorClass::Retryable),
        };
        Error::Store {
            url: url.into(),
            hint,
            class,
            source,
        }
    }

    /// How the error should be handled (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        use std::io::ErrorKind as K;
        match self {
            Error::Io { source, .. } => match source.kind() {
                K::NotFound
                | K::PermissionDenied
                | K::ReadOnlyFilesystem
                | K::NotADirectory
                | K::IsADirectory
                | K::AlreadyExists
                | K::InvalidInput
                | K::InvalidFilename
                | K::Unsupported => ErrorClass::Config,
                K::InvalidData | K::UnexpectedEof => ErrorClass::Data,
                _ => ErrorClass::Retryable,
            },
            Error::Arrow(arrow::error::ArrowError::IoError(..)) => ErrorClass::Retryable,
            Error::Store { class, .. } => *class,
            Error::Parquet { .. }
            | Error::Columns { .. }
            | Error::BadRow { .. }
            | Error::BadDocument { .. } => ErrorClass::Data,
            Error::Arrow(_) => ErrorClass::Data,
            Error::Json { .. }
            | Error::Format { .. }
            | Error::Config(_)
            | Error::Tokenizer(_)
            | Error::Weights { .. }
            | Error::OtherJob { .. } => ErrorClass::Config,
            // The other writer may finish or its lease expire: trying again later can succeed.
            Error::Device { .. } | Error::Torch(_) | Error::Busy { .. } => ErrorClass::Retryable,
            Error::Units(errors) => errors
                .iter()
                .map(Error::class)
                .max()
                .unwrap_or(ErrorClass::Data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;
    use std::path::Path;

    fn io(kind: ErrorKind) -> Error {
        Error::io("/out/x", std::io::Error::from(kind))
    }

    #[test]
    fn errors_are_classed_for_exit_codes() {
        assert_eq!(io(ErrorKind::StorageFull).class(), ErrorClass::Retryable);
        assert_eq!(io(ErrorKind::Interrupted).class(), ErrorClass::Retryable);
        assert_eq!(io(ErrorKind::OutOfMemory).class(), ErrorClass::Retryable);
        assert_eq!(io(ErrorKind::PermissionDenied).class(), ErrorClass::Config);
        assert_eq!(
            io(ErrorKind::ReadOnlyFilesystem).class(),
            ErrorClass::Config
        );
        assert_eq!(io(ErrorKind::UnexpectedEof).class(), ErrorClass::Data);
        let corrupt = Error::Parquet {
            path: "a.parquet".into(),
            message: "bad page".into(),
        };
        assert_eq!(corrupt.class(), ErrorClass::Data);
        assert_eq!(Error::Config("x".into()).class(), ErrorClass::Config);
        // One file's columns not fitting the job is that file's bad data.
        let columns = Error::Columns {
            path: "b.parquet".into(),
            message: "no id column \"id\"".into(),
        };
        assert_eq!(columns.class(), ErrorClass::Data);
        let busy = Error::Busy {
            path: "/out".into(),
            message: "another run writes this output".into(),
        };
        assert_eq!(busy.class(), ErrorClass::Retryable);
        // Several failed units: the most severe class decides, since a retry cannot fix the
        // others.
        let units = Error::Units(vec![io(ErrorKind::StorageFull), corrupt]);
        assert_eq!(units.class(), ErrorClass::Data);
        assert!(units.to_string().starts_with("2 input unit(s)"), "{units}");
        assert!(units.to_string().contains("a.parquet: bad page"), "{units}");
    }

    #[test]
    fn parquet_errors_keep_an_underlying_io_error() {
        let full = std::io::Error::from(ErrorKind::StorageFull);
        let e = Error::parquet(
            "p.parquet",
            parquet::errors::ParquetError::External(full.into()),
        );
        assert!(matches!(&e, Error::Io { path, .. } if path == Path::new("p.parquet")));
        assert_eq!(e.class(), ErrorClass::Retryable);
        let eof = parquet::errors::ParquetError::EOF("footer".into());
        assert_eq!(Error::parquet("p.parquet", eof).class(), ErrorClass::Data);
    }
}
