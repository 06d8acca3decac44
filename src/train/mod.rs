//! Joint training: sampling, losses, optimizer and schedule, the training loop, checkpoints.

pub mod sample;
