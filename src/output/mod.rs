//! Output tables: rows built from predictions (one builder per schema in `schemas/`) and atomic
//! part-file writers (Parquet or Arrow IPC).

pub mod tables;
pub mod writer;

pub use tables::{
    doc_rows, record_batch, DocRows, DocumentRow, EntityRow, MentionRow, PendingRows, RelationRow,
    Status, TableRow,
};
pub use writer::PartWriter;
