//! Atomic part files. Each part is written under a hidden temporary name in its table's
//! directory, fsynced, renamed into place and the directory fsynced: a reader listing the
//! directory (pyarrow, DuckDB skip names starting with `.`) sees whole files or nothing, and a
//! crash leaves at most a stray temporary file, never a truncated part. Below an object store
//! URL a part is uploaded under its final name (multipart when large): an object appears whole
//! when its upload completes, or not at all.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::durable::sync_dir;
use crate::error::{Error, Result};
use crate::store::{self, write::Upload, Location};

/// Output table file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Parquet,
    /// Arrow IPC files (`.arrow`).
    Arrow,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Arrow => "arrow",
        }
    }
}

/// Compression of the output part files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Snappy,
    Lz4,
    None,
}

/// Writes part files of the output tables below one root directory (`ROOT/TABLE/NAME.EXT`).
#[derive(Debug, Clone)]
pub struct PartWriter {
    root: PathBuf,
    format: OutputFormat,
    compression: Compression,
    /// Put into part names after the unit (see [`PartWriter::stem`]).
    attempt: Option<String>,
}

impl PartWriter {
    /// Creates `root/TABLE` for every table in `tables`.
    pub fn new(
        root: &Path,
        tables: &[&str],
        format: OutputFormat,
        compression: Compression,
    ) -> Result<Self> {
        for t in tables {
            store::create_dir_all(&root.join(t))?;
        }
        Ok(PartWriter {
            root: root.to_path_buf(),
            format,
            compression,
            attempt: None,
        })
    }

    /// Names parts `part-<unit>-<attempt>-NNNNN`: the parts of two attempts at a unit never
    /// share a name (where parts are written in place instead of renamed there).
    pub fn with_attempt(mut self, attempt: &str) -> Self {
        self.attempt = Some(attempt.to_string());
        self
    }

    /// The stem of part `n` of unit `unit`.
    pub fn stem(&self, unit: &str, n: usize) -> String {
        match &self.attempt {
            Some(a) => format!("part-{unit}-{a}-{n:05}"),
            None => format!("part-{unit}-{n:05}"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The final path of part `stem` of `table`.
    pub fn part_path(&self, table: &str, stem: &str) -> PathBuf {
        self.root
            .join(table)
            .join(format!("{stem}.{}", self.format.extension()))
    }

    /// Writes `batch` as part `stem` of `table`, atomically; returns the final path.
    pub fn write(&self, table: &str, stem: &str, batch: &RecordBatch) -> Result<PathBuf> {
        let dir = self.root.join(table);
        let target = self.part_path(table, stem);
        if let Location::Remote(r) = Location::of(&target)? {
            let upload = self.encode(Upload::new(&r), &target, batch)?;
            upload.finish()?;
            return Ok(target);
        }
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let result = self
            .write_file(&tmp, batch)
            .and_then(|()| std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e)))
            .and_then(|()| sync_dir(&dir));
        if result.is_err() {
            // Best effort: the temporary file is hidden from readers either way.
            let _ = std::fs::remove_file(&tmp);
        }
        result.map(|()| target)
    }

    fn write_file(&self, path: &Path, batch: &RecordBatch) -> Result<()> {
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let out = self.encode(BufWriter::new(file), path, batch)?;
        let file = out
            .into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(path, e))
    }

    /// Writes `batch` as a whole file in the writer's format into `out` (named `path` in
    /// errors) and hands `out` back.
    fn encode<W: std::io::Write + Send>(
        &self,
        out: W,
        path: &Path,
        batch: &RecordBatch,
    ) -> Result<W> {
        Ok(match self.format {
            OutputFormat::Parquet => {
                let pq_err = |e| Error::parquet(path, e);
                let props = WriterProperties::builder()
                    .set_compression(parquet_compression(self.compression))
                    .set_created_by(format!("jerex {}", env!("CARGO_PKG_VERSION")))
                    .build();
                let mut w =
                    ArrowWriter::try_new(out, batch.schema(), Some(props)).map_err(pq_err)?;
                w.write(batch).map_err(pq_err)?;
                w.into_inner().map_err(pq_err)?
            }
            OutputFormat::Arrow => {
                let compression = match self.compression {
                    Compression::Zstd => Some(arrow::ipc::CompressionType::ZSTD),
                    Compression::Lz4 => Some(arrow::ipc::CompressionType::LZ4_FRAME),
                    Compression::None => None,
                    Compression::Snappy => {
                        return Err(Error::Config(
                            "writer.compression: Arrow IPC files cannot use snappy".into(),
                        ))
                    }
                };
                // An I/O failure (a full disk) keeps its kind and the path, so it is retryable.
                let arrow_err = |e| match e {
                    arrow::error::ArrowError::IoError(_, io) => Error::io(path, io),
                    e => Error::Arrow(e),
                };
                let options = IpcWriteOptions::default().try_with_compression(compression)?;
                let mut w = FileWriter::try_new_with_options(out, &batch.schema(), options)
                    .map_err(arrow_err)?;
                w.write(batch).map_err(arrow_err)?;
                w.finish().map_err(arrow_err)?;
                w.into_inner().map_err(arrow_err)?
            }
        })
    }
}

fn parquet_compression(c: Compression) -> parquet::basic::Compression {
    use parquet::basic::{Compression as C, ZstdLevel};
    match c {
        Compression::Zstd => C::ZSTD(ZstdLevel::default()),
        Compression::Snappy => C::SNAPPY,
        Compression::Lz4 => C::LZ4_RAW,
        Compression::None => C::UNCOMPRESSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, RecordBatch};
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let a = Int32Array::from(vec![3, 1, 2]);
        RecordBatch::try_from_iter(vec![("x", Arc::new(a) as _)]).unwrap()
    }

    #[test]
    fn parts_land_whole_under_their_final_name_in_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        for (format, compression) in [
            (OutputFormat::Parquet, Compression::Zstd),
            (OutputFormat::Parquet, Compression::Snappy),
            (OutputFormat::Arrow, Compression::Lz4),
            (OutputFormat::Arrow, Compression::None),
        ] {
            let w = PartWriter::new(dir.path(), &["t"], format, compression).unwrap();
            let path = w.write("t", "part-abc-00000", &batch()).unwrap();
            assert_eq!(path, w.part_path("t", "part-abc-00000"));
            let names: Vec<String> = std::fs::read_dir(dir.path().join("t"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
            let back = read_back(&path, format);
            assert_eq!(back, batch());
        }
    }

    fn read_back(path: &Path, format: OutputFormat) -> RecordBatch {
        let f = File::open(path).unwrap();
        match format {
            OutputFormat::Parquet => {
                parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 1024)
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
            }
            OutputFormat::Arrow => arrow::ipc::reader::FileReader::try_new(f, None)
                .unwrap()
                .next()
                .unwrap()
                .unwrap(),
        }
    }

    /// A full disk, simulated by linking the part's temporary name to `/dev/full` (every write
    /// there fails with ENOSPC): the error is retryable, names the file, and no part appears.
    #[test]
    fn a_full_disk_is_retryable_names_the_file_and_leaves_no_part() {
        if !Path::new("/dev/full").exists() {
            eprintln!("skipping: this system has no /dev/full");
            return;
        }
        for format in [OutputFormat::Parquet, OutputFormat::Arrow] {
            let dir = tempfile::tempdir().unwrap();
            let w = PartWriter::new(dir.path(), &["t"], format, Compression::None).unwrap();
            let target = w.part_path("t", "part-abc-00000");
            let name = target.file_name().unwrap().to_string_lossy();
            let tmp = dir
                .path()
                .join("t")
                .join(format!(".{name}.{}.tmp", std::process::id()));
            std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
            let e = w.write("t", "part-abc-00000", &batch()).unwrap_err();
            let full = matches!(&e, Error::Io { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull);
            assert!(full, "{format:?}: {e:?}");
            assert_eq!(e.class(), crate::error::ErrorClass::Retryable);
            assert!(e.to_string().contains(name.as_ref()), "{e}");
            assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), 0);
        }
    }

    #[test]
    fn arrow_with_snappy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w =
            PartWriter::new(dir.path(), &["t"], OutputFormat::Arrow, Compression::Snappy).unwrap();
        assert!(w.write("t", "p", &batch()).is_err());
        assert_eq!(std::fs::read_dir(dir.path().join("t")).unwrap().count(), 0);
    }
}
