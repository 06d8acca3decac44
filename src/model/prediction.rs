//! What the model predicts for one document after decoding (thresholds, clustering): the shape
//! shared by the model (producer), the evaluator and the output tables (consumers).

use serde::{Deserialize, Serialize};

use crate::corpus::Span;

/// A predicted mention: a candidate span whose probability passed the mention threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredMention {
    pub span: Span,
    pub score: f32,
}

/// A predicted entity: a coreference cluster with its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredEntity {
    /// Indices into `DocPrediction::mentions`, ascending.
    pub mentions: Vec<usize>,
    /// Index into `ModelConfig::entity_types` (argmax).
    pub entity_type: usize,
    /// Softmax probability of that type.
    pub type_score: f32,
    /// Mean pairwise coreference probability inside the cluster (1.0 for singletons).
    pub coref_score: f32,
}

/// A predicted relation between two entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredRelation {
    /// Indices into `DocPrediction::entities`.
    pub head: usize,
    pub tail: usize,
    /// Index into `ModelConfig::relation_types`.
    pub relation: usize,
    pub score: f32,
    /// Evidence: the mention pair (indices into `DocPrediction::mentions`) that wins the
    /// multi-instance max-pool for this entity pair (MRC); for GRC, the closest mention pair.
    pub evidence: (usize, usize),
}

/// Everything predicted for one document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocPrediction {
    /// Sorted by (start, end).
    pub mentions: Vec<PredMention>,
    /// Sorted by their first mention.
    pub entities: Vec<PredEntity>,
    /// Sorted by (head, tail, relation).
    pub relations: Vec<PredRelation>,
}

/// Every raw score behind one document's predictions, for checking the heads against another
/// implementation or explaining a decision. Mentions are spans, so the trace can be matched
/// with other candidate orders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocTrace {
    /// Every candidate span in candidate order with its mention probability (exact, not the
    /// screened bound inference uses for spans that cannot pass).
    pub candidates: Vec<(Span, f32)>,
    /// Coreference probabilities of the predicted mentions' pairs, both directions `(first,
    /// second)`; clustering reads the direction of the model's `coref_pair_order`.
    pub coref: Vec<(Span, Span, f32)>,
    /// Per entity (in `DocPrediction::entities` order), its type probabilities.
    pub entity_types: Vec<Vec<f32>>,
    /// Per ordered entity pair `(head, tail)` (indices into `DocPrediction::entities`), the
    /// probabilities of every relation type.
    pub relations: Vec<((usize, usize), Vec<f32>)>,
}
