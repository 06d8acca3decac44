//! The model's configuration, stored as `config.json` in a model folder next to
//! `model.safetensors` and `tokenizer.json`. Everything `run` and `eval` need to rebuild the
//! model comes from here.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::encoder::window::{Framing, WindowConfig};
use crate::encoder::BertConfig;
use crate::error::{Error, Result};
pub use crate::model::segment::LongDocuments;

/// An entity or relation type: the key used in data (`PER`, `P17`) and a readable name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeInfo {
    pub key: String,
    pub name: String,
}

/// Decision thresholds, tuned on validation data (`jerex tune`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// A candidate span is a mention when `sigmoid >= mention`.
    pub mention: f32,
    /// Two clusters merge only when every cross pair has `sigmoid > coref`.
    pub coref: f32,
    /// A relation type is predicted for an entity pair when `sigmoid >= relation`.
    pub relation: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            mention: 0.85,
            coref: 0.85,
            relation: 0.6,
        }
    }
}

/// Command-line overrides of a model's thresholds.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ThresholdFlags {
    /// Mention threshold instead of the model's (job field `thresholds.mention`).
    #[arg(long)]
    pub mention_threshold: Option<f32>,
    /// Coreference threshold instead of the model's (job field `thresholds.coref`).
    #[arg(long)]
    pub coref_threshold: Option<f32>,
    /// Relation threshold instead of the model's (job field `thresholds.relation`).
    #[arg(long)]
    pub relation_threshold: Option<f32>,
}

impl ThresholdFlags {
    /// `model`'s thresholds with the given ones replaced; each must lie in [0, 1].
    pub fn apply(&self, model: Thresholds) -> Result<Thresholds> {
        let pick = |name: &str, flag: Option<f32>, default: f32| match flag {
            Some(t) if !(0.0..=1.0).contains(&t) => Err(Error::Config(format!(
                "--{name}-threshold {t} is not between 0 and 1"
            ))),
            Some(t) => Ok(t),
            None => Ok(default),
        };
        Ok(Thresholds {
            mention: pick("mention", self.mention_threshold, model.mention)?,
            coref: pick("coref", self.coref_threshold, model.coref)?,
            relation: pick("relation", self.relation_threshold, model.relation)?,
        })
    }
}

/// Which relation head the model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelationHead {
    /// Multi-instance relation classification (the JEREX model).
    #[default]
    Mrc,
    /// Global relation classification (the baseline).
    Grc,
}

/// Sizes of the heads. Every embedding table indexed by a size or distance is bucketed or
/// clamped to its count, so no input can index past it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    pub relation_head: RelationHead,
    pub meta_embedding_size: i64,
    /// Candidate spans have at most this many words (inside one sentence).
    pub max_span_words: usize,
    pub size_embeddings: i64,
    pub ed_embeddings: i64,
    pub token_distance_embeddings: i64,
    pub sentence_distance_embeddings: i64,
    pub dropout: f64,
    /// Which mention of an unordered pair comes first when coreference scores it (inference).
    #[serde(default)]
    pub coref_pair_order: CorefPairOrder,
    /// The strings whose edit distance the coreference head reads at inference.
    #[serde(default)]
    pub coref_strings: CorefStrings,
    /// Adds a learned embedding of each word's shape (capitals, digits; see
    /// [`word_shape`](crate::tokenize::word_shape)) to its word pieces' encoder input, so an
    /// uncased encoder can tell names from common words. Off in the reference.
    #[serde(default)]
    pub word_shapes: bool,
    /// How the heads see documents longer than one segment (inference only): as overlapping
    /// segments whose predictions are merged, so cost stays linear in length.
    #[serde(default)]
    pub long_documents: LongDocuments,
}

/// The direction in which coreference scores each unordered mention pair at inference (the
/// head is not symmetric, and clustering reads one score per pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorefPairOrder {
    /// The mention that starts earlier first (ties: the shorter): the direction this
    /// engine's trainer samples.
    #[default]
    Position,
    /// The earlier candidate first, in candidate order (sentence, then size, then start): what
    /// the reference implementation scores, for its checkpoints.
    Candidate,
}

/// The mention strings of the coreference head's edit distance at inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorefStrings {
    /// The mention's words joined by spaces, as in training.
    #[default]
    Words,
    /// The mention's word pieces decoded back to text (joined by spaces, `##` merged, spaces
    /// before punctuation removed, lowercased with an uncased vocabulary): what the reference
    /// implementation compares at inference, though it trains on words.
    DecodedPieces,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            relation_head: RelationHead::Mrc,
            meta_embedding_size: 25,
            max_span_words: 10,
            size_embeddings: 30,
            ed_embeddings: 300,
            token_distance_embeddings: 700,
            sentence_distance_embeddings: 50,
            dropout: 0.1,
            coref_pair_order: CorefPairOrder::default(),
            coref_strings: CorefStrings::default(),
            word_shapes: false,
            long_documents: LongDocuments::default(),
        }
    }
}

/// The whole model configuration (`config.json` of a model folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub entity_types: Vec<TypeInfo>,
    pub relation_types: Vec<TypeInfo>,
    pub thresholds: Thresholds,
    pub heads: HeadConfig,
    pub window: WindowConfig,
    pub encoder: BertConfig,
    /// Free-form provenance: how the model was trained (data, command, scores).
    #[serde(default)]
    pub training: serde_json::Value,
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn entity_index(&self, key: &str) -> Option<usize> {
        self.entity_types.iter().position(|t| t.key == key)
    }

    pub fn relation_index(&self, key: &str) -> Option<usize> {
        self.relation_types.iter().position(|t| t.key == key)
    }
}
