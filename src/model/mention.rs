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

    /// Logits `[N]` for span representations `[N, H]` and their (clamped) word counts `[N]`.
    pub fn logits(&self, reprs: &Tensor, sizes: &Tensor, train: bool) -> Tensor {
        let size_term = self
            .size_embeddings
            .matmul(&self.linear.columns(self.hidden, self.meta).tr())
            + &self.linear.bias;
        let hid = reprs.matmul(&self.linear.columns(0, self.hidden).tr())
            + size_term.index_select(0, sizes);
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
        let sizes = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 9, 29, 1]);
        let split = head.logits(&reprs, &sizes, false);
        let full = head.logits_concat(&reprs, &sizes);
        assert!(split.allclose(&full, 1e-5, 1e-6, false));
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(names.contains(&"mention_localization.linear.weight".to_string()));
        assert!(names.contains(&"mention_localization.size_embeddings.weight".to_string()));
        assert!(names.contains(&"mention_localization.mention_classifier.bias".to_string()));
    }
}
