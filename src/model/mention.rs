//! Mention localization (reference 3.2): `FFNN([span repr; size embedding])` → one logit.
//! The first layer is split over its input, `W [r; s] = W_r r + (W_s S)[size]`, so the size term
//! is one small table projected once, not a per-span concatenation.

use tch::nn;
use tch::Tensor;

use crate::layers::{embedding, Linear};
use crate::model::config::HeadConfig;

pub struct MentionLocalization {
    size_embeddings: Tensor,
    linear: Linear,
    mention_classifier: Linear,
    hidden: i64,
    meta: i64,
    dropout: f64,
}

impl MentionLocalization {
    /// Parameters under `p` (= `mention_localization`): `size_embeddings`, `linear`,
    /// `mention_classifier`.
    pub fn new(p: nn::Path, hidden: i64, heads: &HeadConfig) -> MentionLocalization {
        let e = heads.meta_embedding_size;
        MentionLocalization {
            size_embeddings: embedding(&p / "size_embeddings", heads.size_embeddings, e),
            linear: Linear::new(&p / "linear", hidden + e, hidden),
            mention_classifier: Linear::new(&p / "mention_classifier", hidden, 1),
            hidden,
            meta: e,
            dropout: heads.dropout,
        }
    }

    /// Number of rows of the size table: sizes are clamped below it.
    pub fn size_count(&self) -> i64 {
        self.size_embeddings.size()[0]
    }

    /// `[sizes, H]`: the size block of the first layer applied to every size embedding, plus
    /// the layer's bias.
    pub fn size_terms(&self) -> Tensor {
        self.size_embeddings
            .matmul(&self.linear.columns(self.hidden, self.meta).tr())
            + &self.linear.bias
    }

    /// Logits `[N]` for representations `[N, H]` of spans of one size, whose row of
    /// [`size_terms`](Self::size_terms) is `size_term` (`[H]`): it enters as the broadcast
    /// bias of one fused matrix product.
    pub fn logits(&self, reprs: &Tensor, size_term: &Tensor, train: bool) -> Tensor {
        let hid = size_term.addmm(reprs, &self.linear.columns(0, self.hidden).tr());
        self.mention_classifier
            .forward(&hid.relu().dropout(self.dropout, train))
            .squeeze_dim(-1)
    }

    /// The unsplit layer over the concatenation, for the exactness test.
    #[cfg(test)]
    pub(crate) fn logits_concat(&self, reprs: &Tensor, sizes: &Tensor) -> Tensor {
        let x = Tensor::cat(&[reprs, &self.size_embeddings.index_select(0, sizes)], 1);
        self.mention_classifier
            .forward(&self.linear.forward(&x).relu())
            .squeeze_dim(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn split_equals_concatenation() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = MentionLocalization::new(
            vs.root() / "mention_localization",
            16,
            &HeadConfig::default(),
        );
        let reprs = Tensor::randn([9, 16], (Kind::Float, Device::Cpu));
        let size_terms = head.size_terms();
        for size in [0i64, 1, 9, 29] {
            let split = head.logits(&reprs, &size_terms.get(size), false);
            let full =
                head.logits_concat(&reprs, &Tensor::full([9], size, (Kind::Int64, Device::Cpu)));
            assert!(split.allclose(&full, 1e-5, 1e-6, false), "size {size}");
        }
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"mention_localization.linear.weight".to_string()));
        assert!(names.contains(&"mention_localization.size_embeddings.weight".to_string()));
        assert!(names.contains(&"mention_localization.mention_classifier.bias".to_string()));
    }
}
