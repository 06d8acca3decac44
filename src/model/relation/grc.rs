//! The global relation classifier (GRC), the baseline to MRC.

use tch::{nn, Tensor};

use crate::layers::{embedding, Linear};
use crate::model::config::HeadConfig;

use super::{pair_ends, RelationInput};

/// The global relation classifier: `FFNN([e_h; e_t; type_h; type_t])`, split exactly into
/// per-entity and per-type projections.
pub struct Grc {
    entity_embeddings: Tensor,
    entity_pair_linear: Linear,
    rel_classifier: Linear,
    hidden: i64,
    meta: i64,
    dropout: f64,
}

impl Grc {
    /// Parameters under the model root: `entity_pair_representation.{entity_embeddings,
    /// entity_pair_linear}` and `relation_classification.rel_classifier`.
    pub fn new(
        root: &nn::Path,
        hidden: i64,
        heads: &HeadConfig,
        entity_types: i64,
        relation_types: i64,
    ) -> Grc {
        let e = heads.meta_embedding_size;
        let rep = root / "entity_pair_representation";
        Grc {
            entity_embeddings: embedding(&rep / "entity_embeddings", entity_types, e),
            entity_pair_linear: Linear::new(
                &rep / "entity_pair_linear",
                2 * hidden + 2 * e,
                hidden,
            ),
            rel_classifier: Linear::new(
                root / "relation_classification" / "rel_classifier",
                hidden,
                relation_types,
            ),
            hidden,
            meta: e,
            dropout: heads.dropout,
        }
    }

    pub(super) fn forward(&self, input: &RelationInput, train: bool) -> Tensor {
        let device = input.entity_reprs.device();
        let (h, e) = (self.hidden, self.meta);
        let w = |from, len| self.entity_pair_linear.columns(from, len).tr();
        let (heads, tails) = pair_ends(input.entity_pairs, device);
        let head_types = input.entity_types.index_select(0, &heads);
        let tail_types = input.entity_types.index_select(0, &tails);
        let rep = input.entity_reprs.matmul(&w(0, h)).index_select(0, &heads)
            + input.entity_reprs.matmul(&w(h, h)).index_select(0, &tails)
            + (self.entity_embeddings.matmul(&w(2 * h, e)) + &self.entity_pair_linear.bias)
                .index_select(0, &head_types)
            + self
                .entity_embeddings
                .matmul(&w(2 * h + e, e))
                .index_select(0, &tail_types);
        self.rel_classifier
            .forward(&rep.relu().dropout(self.dropout, train))
    }

    /// The unsplit layer over `[e_h; e_t; type_h; type_t]` (no dropout), for the exactness test.
    #[cfg(test)]
    pub(crate) fn forward_concat(&self, input: &RelationInput) -> Tensor {
        let device = input.entity_reprs.device();
        let (heads, tails) = pair_ends(input.entity_pairs, device);
        let x = Tensor::cat(
            &[
                input.entity_reprs.index_select(0, &heads),
                input.entity_reprs.index_select(0, &tails),
                self.entity_embeddings
                    .index_select(0, &input.entity_types.index_select(0, &heads)),
                self.entity_embeddings
                    .index_select(0, &input.entity_types.index_select(0, &tails)),
            ],
            1,
        );
        self.rel_classifier
            .forward(&self.entity_pair_linear.forward(&x).relu())
    }
}
