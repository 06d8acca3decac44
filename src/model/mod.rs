//! The JEREX model: the encoder plus the heads for mentions, coreference, entities and
//! relations (`joint`), their inputs (`input`), range max-pooling (`pool`), clustering
//! (`cluster`), long documents as segments (`segment`) and the model folder (`folder`).

pub mod cluster;
pub mod config;
pub mod coref;
pub mod entity;
pub mod folder;
pub mod info;
pub mod input;
pub mod joint;
pub mod mention;
pub mod pool;
pub mod prediction;
pub mod relation;
pub mod sample;
pub mod segment;

pub use config::{
    CorefPairOrder, CorefStrings, Framing, HeadConfig, LongDocuments, ModelConfig, RelationHead,
    ThresholdFlags, Thresholds, TypeInfo, WindowConfig,
};
pub use folder::LoadedModel;
pub use info::ModelInfo;
pub use input::PreparedDoc;
pub use joint::{EncodedBatch, GoldInput, JerexModel, Losses};
pub use prediction::{DocPrediction, DocTrace, PredEntity, PredMention, PredRelation};
pub use sample::DocSample;
