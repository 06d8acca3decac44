//! Entity representation and classification, as in the reference implementation: max-pool the
//! mention
//! representations of each cluster (one `index_reduce` for all clusters of a batch), then
//! `Linear H→H, ReLU, dropout, Linear H→types`.

use tch::nn;
use tch::Tensor;

use crate::layers::Linear;
use crate::model::pool::group_max;

pub struct EntityClassification {
    linear: Linear,
    entity_classifier: Linear,
    dropout: f64,
}

impl EntityClassification {
    /// Parameters under `p` (= `entity_classification`): `linear`, `entity_classifier`.
    pub fn new(p: nn::Path, hidden: i64, entity_types: i64, dropout: f64) -> Self {
        EntityClassification {
            linear: Linear::new(&p / "linear", hidden, hidden),
            entity_classifier: Linear::new(&p / "entity_classifier", hidden, entity_types),
            dropout,
        }
    }

    /// Type logits `[E, types]` of entity representations `[E, H]` (already dropped out, as
    /// the relation heads share them).
    pub fn logits(&self, entity_reprs: &Tensor, train: bool) -> Tensor {
        self.entity_classifier.forward(
            &self
                .linear
                .forward(entity_reprs)
                .relu()
                .dropout(self.dropout, train),
        )
    }
}

/// Entity representations `[E, H]` with dropout: `max` over each cluster's mention rows.
/// `member_mention[k]` is a row of `mention_reprs` that belongs to entity `member_entity[k]`;
/// every entity `< entities` has at least one member.
pub fn entity_reprs(
    mention_reprs: &Tensor,
    member_mention: &Tensor,
    member_entity: &Tensor,
    entities: i64,
    dropout: f64,
    train: bool,
) -> Tensor {
    group_max(
        &mention_reprs.index_select(0, member_mention),
        member_entity,
        entities,
    )
    .dropout(dropout, train)
}
