//! jerex: joint entity-level relation extraction over document corpora.
//!
//! The modules follow the data's path: `corpus` (documents and readers) → `tokenize` (word
//! pieces) → `encoder` (BERT) → `model` (heads and decoding) → `engine` (batching, devices) →
//! `output` (Arrow/Parquet tables). `train` and `eval` reuse the same path.

pub mod alloc;
pub mod corpus;
pub mod device;
pub mod durable;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod eval;
pub mod layers;
pub mod model;
pub mod output;
pub mod paths;
pub mod pipeline;
pub mod reference;
pub mod schema;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tokenize;
pub mod tools;
pub mod train;

pub use error::{Error, Result};
