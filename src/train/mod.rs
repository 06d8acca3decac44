//! Joint training: sampling, losses, optimizer and schedule, the training loop, checkpoints.

pub mod data;
pub mod optim;
pub mod sample;
pub mod trainer;

pub use optim::{AdamW, AdamWConfig, Schedule};
pub use sample::{sample_document, DocSample, SamplingConfig};
pub use trainer::{run, TrainArgs, TrainOptions, Trainer};
