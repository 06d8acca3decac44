//! A document's training sample: what the joint loss ([`JerexModel::loss`](super::JerexModel::loss))
//! reads. `train::sample` draws them.

use crate::corpus::Span;

/// One document's training sample. All indices are local to the document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocSample {
    /// Mention-localization samples: every gold mention (duplicates kept), then negatives.
    pub spans: Vec<Span>,
    /// 1.0 for gold mentions, 0.0 for negatives (same length as `spans`).
    pub span_labels: Vec<f32>,
    /// The gold mentions, deduplicated by span, in first-occurrence order. Coreference pairs,
    /// entities and relation mention pairs index into this list.
    pub mentions: Vec<Span>,
    /// Coreference samples: `(i, j)` into `mentions`, positives then negatives. The mention
    /// with the smaller `(start, end)` comes first: inference scores each unordered pair once,
    /// in that direction, so training sees the same direction.
    pub coref_pairs: Vec<(usize, usize)>,
    pub coref_labels: Vec<f32>,
    /// Gold entities: each a list of indices into `mentions`.
    pub entities: Vec<Vec<usize>>,
    /// Gold entity types (indices into `ModelConfig::entity_types`).
    pub entity_types: Vec<usize>,
    /// Relation samples: ordered entity pairs `(head, tail)`, positives then negatives. Empty
    /// when the document has no relation labels.
    pub rel_pairs: Vec<(usize, usize)>,
    /// Multi-hot targets, `rel_pairs.len() x n_relation_types`, row-major.
    pub rel_labels: Vec<f32>,
}
