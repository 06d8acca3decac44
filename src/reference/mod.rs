//! Checkpoints of the reference implementation (lavis-nlp/jerex, PyTorch Lightning):
//! `jerex import-reference` turns one into an ordinary jerex model folder.
//!
//! The reference saves a folder of `model.ckpt` (a pickled Lightning checkpoint), the encoder's
//! `config.json` and the tokenizer's `vocab.txt`. [`pickle`] reads the checkpoint without running
//! any of it, [`checkpoint`] rebuilds its tensors, and [`import`] maps tensors, types,
//! thresholds and settings onto a [`ModelConfig`](crate::model::ModelConfig) that reproduces the
//! reference's inference: documents encoded without `[CLS]`/`[SEP]` over its 700 positions,
//! coreference pairs scored in its direction on decoded word pieces.

pub mod checkpoint;
pub mod import;
pub mod pickle;

pub use import::{import, ImportArgs, Imported};
