//! Uploads: a blocking [`std::io::Write`] into an object, so the Parquet and Arrow IPC writers
//! that write local part files write objects the same way, byte for byte. Small objects go up
//! in one request; larger ones as a multipart upload of [`PART_BYTES`] parts. The object
//! appears only when [`Upload::finish`] completes it (an object store write is atomic), and an
//! upload dropped unfinished is aborted, so readers never see part of one.

use std::io::Write;

use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;

use super::{block_on, Remote};
use crate::error::{Error, Result};

/// Bytes per part of a multipart upload (S3 needs at least 5 MiB per part but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

pub struct Upload {
    writer: Option<BufWriter>,
    url: String,
}

impl Upload {
    pub fn new(r: &Remote) -> Upload {
        Upload {
            writer: Some(BufWriter::with_capacity(
                r.store.clone(),
                r.key.clone(),
                PART_BYTES,
            )),
            url: r.url.clone(),
        }
    }

    /// Completes the upload: the object exists from here on.
    pub fn finish(mut self) -> Result<()> {
        let mut w = self.writer.take().expect("an upload finishes once");
        block_on(w.shutdown()).map_err(|e| self.error(e))
    }

    fn error(&self, e: std::io::Error) -> Error {
        // The store's own error, with its class, when it is one.
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<object_store::Error>())
        {
            Some(_) => {
                let inner = e.into_inner().expect("checked above");
                match inner.downcast::<object_store::Error>() {
                    Ok(os) => Error::store(&self.url, *os),
                    Err(other) => Error::io(&self.url, std::io::Error::other(other)),
                }
            }
            None => Error::io(&self.url, e),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let w = self.writer.as_mut().expect("not finished");
        block_on(w.write_all(buf))?;
        Ok(buf.len())
    }

    /// Nothing to do: parts go up as they fill, the rest at [`Upload::finish`].
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = block_on(w.abort());
        }
    }
}
