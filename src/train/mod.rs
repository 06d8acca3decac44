//! Joint training: sampling, losses, optimizer and schedule, the training loop, checkpoints.

mod checkpoint;
pub mod command;
pub mod data;
pub mod history;
pub mod optim;
pub mod sample;
pub mod trainer;

pub use command::{run, TrainArgs};
pub use optim::{AdamW, AdamWConfig, Schedule};
pub use sample::{sample_document, DocSample, SamplingConfig};
pub use trainer::{TrainOptions, Trainer};
