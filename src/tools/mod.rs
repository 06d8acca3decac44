//! Tooling beside the production runs: `jerex bench` (the pipeline measured end to end and
//! against the encoder alone) and the demo and benchmark inputs it makes (`sample`).

pub mod bench;
pub mod sample;

pub use bench::{bench, BenchArgs, BenchResult};
