//! BERT-architecture encoder on tch, loading HuggingFace folders; long documents in windows.

mod config;

pub use config::BertConfig;
