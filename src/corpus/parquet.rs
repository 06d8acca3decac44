//! Streaming Parquet reader for the input document table.
