//! Reading inputs from either kind of location: a Parquet source that streams the row groups a
//! unit needs (on an object store with range requests: the footer, then the projected column
//! chunks of one row group at a time, never the whole file), byte ranges and identities of
//! input files for the planner, and the expansion of input paths (files, folders, globs).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderBuilder, ParquetRecordBatchReaderBuilder};
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStream};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::file::metadata::ParquetMetaData;
use parquet::schema::types::SchemaDescriptor;

use super::{block_on, list_all, Location, Remote};
use crate::error::{Error, Result};

/// Bytes read with the footer in one request (the footer is usually smaller).
const FOOTER_HINT: usize = 64 * 1024;

/// Record batches of a configured Parquet source, in order.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// An opened Parquet file: its footer is read; nothing else is until [`Source::build`].
pub enum Source {
    Local(ParquetRecordBatchReaderBuilder<File>),
    Remote(ParquetRecordBatchStreamBuilder<ParquetObjectReader>, String),
}

impl Source {
    /// Opens a Parquet file or object and reads its footer; errors name the path.
    pub fn open(path: &Path) -> Result<Source> {
        match Location::of(path)? {
            Location::Local(p) => {
                let file = File::open(&p).map_err(|e| Error::io(&p, e))?;
                let b = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| Error::parquet(&p, e))?;
                Ok(Source::Local(b))
            }
            Location::Remote(r) => {
                let meta = block_on(r.store.head(&r.key)).map_err(|e| r.error(e))?;
                let reader = ParquetObjectReader::new(Arc::clone(&r.store), r.key.clone())
                    .with_file_size(meta.size)
                    .with_footer_size_hint(FOOTER_HINT);
                let b = block_on(ParquetRecordBatchStreamBuilder::new(reader))
                    .map_err(|e| Error::parquet(path, e))?;
                Ok(Source::Remote(b, r.url))
            }
        }
    }

    pub fn metadata(&self) -> &Arc<ParquetMetaData> {
        match self {
            Source::Local(b) => b.metadata(),
            Source::Remote(b, _) => b.metadata(),
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        match self {
            Source::Local(b) => b.schema(),
            Source::Remote(b, _) => b.schema(),
        }
    }

    pub fn parquet_schema(&self) -> &SchemaDescriptor {
        match self {
            Source::Local(b) => b.parquet_schema(),
            Source::Remote(b, _) => b.parquet_schema(),
        }
    }

    /// The batches `settings` select (projection, row groups, rows, batch size).
    pub fn build(self, path: &Path, settings: &impl Settings) -> Result<Batches> {
        match self {
            Source::Local(b) => {
                let reader = settings
                    .apply(b)
                    .build()
                    .map_err(|e| Error::parquet(path, e))?;
                Ok(Box::new(reader.map(|r| r.map_err(Error::from))))
            }
            Source::Remote(b, url) => {
                let stream = settings
                    .apply(b)
                    .build()
                    .map_err(|e| Error::parquet(path, e))?;
                Ok(Box::new(Blocking { stream, url }))
            }
        }
    }
}

/// What a reader applies to a builder of either kind (the sync file reader or the async object
/// reader share the builder's settings).
pub trait Settings {
    fn apply<T>(&self, b: ArrowReaderBuilder<T>) -> ArrowReaderBuilder<T>;
}

/// The async stream of an object, one batch per blocking step.
struct Blocking {
    stream: ParquetRecordBatchStream<ParquetObjectReader>,
    url: String,
}

impl Iterator for Blocking {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        block_on(self.stream.next()).map(|r| r.map_err(|e| Error::parquet(&self.url, e)))
    }
}

/// An input file as the planner sees it: its size, modification time and byte ranges.
pub struct Input {
    pub len: u64,
    /// Nanoseconds since the Unix epoch (0 where unknown).
    pub modified_ns: u64,
    inner: InputInner,
}

enum InputInner {
    Local(File, PathBuf),
    Remote(Remote),
}

impl Input {
    pub fn open(path: &Path) -> Result<Input> {
        match Location::of(path)? {
            Location::Local(p) => {
                let file = File::open(&p).map_err(|e| Error::io(&p, e))?;
                let meta = file.metadata().map_err(|e| Error::io(&p, e))?;
                let modified_ns = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as u64);
                Ok(Input {
                    len: meta.len(),
                    modified_ns,
                    inner: InputInner::Local(file, p),
                })
            }
            Location::Remote(r) => {
                let meta = block_on(r.store.head(&r.key)).map_err(|e| r.error(e))?;
                let modified_ns = meta.last_modified.timestamp_nanos_opt().unwrap_or(0).max(0);
                Ok(Input {
                    len: meta.size,
                    modified_ns: modified_ns as u64,
                    inner: InputInner::Remote(r),
                })
            }
        }
    }

    /// `len` bytes from `offset` (a range request on an object store).
    pub fn read_at(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        match &mut self.inner {
            InputInner::Local(file, p) => {
                let mut bytes = vec![0u8; len];
                file.seek(SeekFrom::Start(offset))
                    .and_then(|_| file.read_exact(&mut bytes))
                    .map_err(|e| Error::io(&*p, e))?;
                Ok(bytes)
            }
            InputInner::Remote(r) => {
                let range = offset..offset + len as u64;
                let bytes = block_on(r.store.get_range(&r.key, range)).map_err(|e| r.error(e))?;
                Ok(bytes.to_vec())
            }
        }
    }
}

/// The Parquet objects an object store input path names, sorted: the object itself, every
/// `*.parquet` below a prefix (a "folder"; names starting with `.` or `_` below it are
/// skipped), or the objects a glob pattern (`s3://b/corpus/*/part-*.parquet`) matches, with the
/// `*.parquet` below any prefix it matches.
pub fn expand_remote(spec: &str) -> Result<Vec<PathBuf>> {
    let Location::Remote(r) = Location::of(Path::new(spec))? else {
        unreachable!("called for object store URLs")
    };
    let root = r.root.clone();
    let key = r.key.as_ref();
    let name = |k: &str| PathBuf::from(format!("{root}/{k}"));
    let glob_at = key.find(['*', '?', '[']);
    let Some(at) = glob_at else {
        match block_on(r.store.head(&r.key)) {
            Ok(_) if !key.is_empty() => return Ok(vec![name(key)]),
            Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(r.error(e)),
        }
        let mut found: Vec<PathBuf> = list_all(&r)?
            .iter()
            .map(|m| m.location.as_ref())
            .filter(|k| parquet_below(k, key))
            .map(name)
            .collect();
        found.sort();
        return Ok(found);
    };
    let pattern = glob::Pattern::new(key)
        .map_err(|e| Error::Config(format!("input.paths: '{spec}' is not a valid glob: {e}")))?;
    let literal = key[..at].rsplit_once('/').map_or("", |(dir, _)| dir);
    let prefix = Remote {
        key: object_store::path::Path::from(literal),
        ..r.clone()
    };
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    let mut found = Vec::new();
    for meta in list_all(&prefix)? {
        let k = meta.location.as_ref();
        if pattern.matches_with(k, options) {
            found.push(name(k));
            continue;
        }
        // Below a matching "folder".
        let mut ancestor = k;
        while let Some((dir, _)) = ancestor.rsplit_once('/') {
            if pattern.matches_with(dir, options) {
                if parquet_below(k, dir) {
                    found.push(name(k));
                }
                break;
            }
            ancestor = dir;
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `key` is a `*.parquet` object below `dir` with no hidden name (`.`, `_`) in between.
fn parquet_below(key: &str, dir: &str) -> bool {
    let rest = match dir.is_empty() {
        true => key,
        false => match key.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
            Some(rest) => rest,
            None => return false,
        },
    };
    rest.ends_with(".parquet")
        && !rest
            .split('/')
            .any(|s| s.starts_with('.') || s.starts_with('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parquet_objects_below_a_prefix_skip_hidden_names() {
        assert!(parquet_below("corpus/a.parquet", "corpus"));
        assert!(parquet_below("corpus/2024/a.parquet", "corpus"));
        assert!(parquet_below("a.parquet", ""));
        assert!(!parquet_below("corpus/_tmp/a.parquet", "corpus"));
        assert!(!parquet_below("corpus/.a.parquet", "corpus"));
        assert!(!parquet_below("corpus/a.json", "corpus"));
        assert!(!parquet_below("corpus2/a.parquet", "corpus"));
    }
}
