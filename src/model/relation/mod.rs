//! Relation classification: the multi-instance head (MRC, the JEREX model) and the global
//! baseline (GRC).
//!
//! The heads read mention pairs (`pairs`); MRC (`mrc`) pools over them, GRC (`grc`) reads
//! entity representations only.

mod grc;
mod mrc;
mod pairs;

use tch::{nn, Tensor};

use crate::model::config::{HeadConfig, RelationHead};
use crate::model::input::index_tensor;
use crate::model::pool::RangeMax;

pub use grc::Grc;
pub use mrc::Mrc;
pub use pairs::{context, token_distance, MentionPairs, MentionPlace};

/// What the relation heads read, for a batch of documents.
pub struct RelationInput<'a> {
    /// Range-max table over the encoder states (contexts).
    pub pool: &'a RangeMax,
    /// `[M, H]`, rows indexed by `MentionPairs::head/tail`.
    pub mention_reprs: &'a Tensor,
    /// `[E, H]` (dropped out).
    pub entity_reprs: &'a Tensor,
    /// `[E]` type indices (gold in training, argmax at inference).
    pub entity_types: &'a Tensor,
    pub entity_pairs: &'a [(usize, usize)],
    pub mention_pairs: &'a MentionPairs,
}

/// How the relation heads run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RelationPass {
    /// With dropout; no evidence.
    Train,
    /// Evidence is counted only for the entity pairs with some relation probability at or
    /// above `threshold`: only their relations are output.
    Infer { threshold: f32 },
}

impl RelationPass {
    fn train(self) -> bool {
        self == RelationPass::Train
    }
}

/// Logits `[R, relation types]`, and for MRC at inference, per mention pair, how many hidden
/// dimensions it wins in its entity pair's max-pool (for evidence; 0 in the entity pairs the
/// pass's threshold leaves without relations).
pub struct RelationOutput {
    pub logits: Tensor,
    pub wins: Option<Tensor>,
}

pub enum RelationClassifier {
    Mrc(Mrc),
    Grc(Grc),
}

impl RelationClassifier {
    /// Builds the configured head under the model root `p` (its parameter names differ).
    pub fn new(
        p: &nn::Path,
        hidden: i64,
        heads: &HeadConfig,
        entity_types: i64,
        relation_types: i64,
    ) -> RelationClassifier {
        match heads.relation_head {
            RelationHead::Mrc => RelationClassifier::Mrc(Mrc::new(
                p / "relation_classification",
                hidden,
                heads,
                entity_types,
                relation_types,
            )),
            RelationHead::Grc => {
                RelationClassifier::Grc(Grc::new(p, hidden, heads, entity_types, relation_types))
            }
        }
    }

    pub fn forward(
        &self,
        input: &RelationInput,
        pass: RelationPass,
        chunk_rows: i64,
    ) -> RelationOutput {
        match self {
            RelationClassifier::Mrc(m) => m.forward(input, pass, chunk_rows),
            RelationClassifier::Grc(g) => RelationOutput {
                logits: g.forward(input, pass.train()),
                wins: None,
            },
        }
    }

    /// Computes once the products of the head's weights alone that every inference batch would
    /// otherwise recompute. Only for replicas whose weights no longer change: a later weight
    /// update would not reach them.
    pub fn freeze(&mut self) {
        if let RelationClassifier::Mrc(m) = self {
            m.frozen = Some(tch::no_grad(|| m.folded_weights()));
        }
    }

    /// Evidence per entity pair (index into the mention pairs): MRC, the pair winning the most
    /// max-pool dimensions; GRC, the closest pair (token, then sentence distance).
    pub fn evidence(&self, pairs: &MentionPairs, wins: Option<&[i64]>) -> Vec<usize> {
        match wins {
            Some(wins) => pairs.pick(|p| std::cmp::Reverse(wins[p])),
            None => pairs.pick(|p| (pairs.token_distance[p], pairs.sentence_distance[p])),
        }
    }
}

/// Head and tail entity indices of the entity pairs, as device tensors.
fn pair_ends(pairs: &[(usize, usize)], device: tch::Device) -> (Tensor, Tensor) {
    let heads: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
    let tails: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
    (index_tensor(&heads, device), index_tensor(&tails, device))
}

#[cfg(test)]
mod tests;
