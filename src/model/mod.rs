//! The JEREX heads on top of the encoder: mentions, coreference, entities, relations.

pub mod config;
pub mod prediction;

pub use config::{HeadConfig, ModelConfig, RelationHead, Thresholds, TypeInfo, WindowConfig};
pub use prediction::{DocPrediction, PredEntity, PredMention, PredRelation};
