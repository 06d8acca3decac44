//! The test kit: what the unit tests, the integration tests (`tests/`), the benchmarks and the
//! examples share, so each builds its fixtures the same way instead of keeping a copy.
//!
//! Compiled only with the `test-util` feature (on for every target of `cargo test`, `cargo
//! clippy --all-targets` and `cargo bench` through the crate's dev-dependency on itself) or in
//! the library's own unit tests; `cargo build` and the release binary never contain it.
//!
//! - [`checkout`]: the repository and `../shared` (data sets, fixtures, the pretrained
//!   encoder); `require_*` skip a test when something is missing, and fail it under CI.
//! - [`model`]: type inventories and [`TinyModel`], one builder for every tiny randomly
//!   initialised model (in memory or saved as a model folder), and synthetic documents.
//! - [`fake`]: a deterministic stand-in backend for tests of the engine itself.
//! - [`corpus`]: input files, pipeline configurations and job files for the engine tests.
//! - [`tables`]: output tables read back (part files, record batches) and what the binary
//!   printed.

pub mod checkout;
pub mod corpus;
pub mod fake;
pub mod model;
pub mod tables;

pub use checkout::{
    python_with, repo_root, require_encoder, require_fixture, require_shared, require_tokenizer,
    shared_data_dir, shared_dir, under_ci,
};
pub use corpus::{pipeline_config, sample_corpus, write_texts, JobFile};
pub use fake::{Failures, FakeFactory};
pub use model::{
    check_well_formed, numbered_types, synthetic_document, synthetic_prepared, types, window,
    TinyModel, TINY_WINDOW,
};
pub use tables::{
    exit_code, files, part_files, read_batches, read_table, stderr, stdout, strings, success,
    table_rows, text,
};
