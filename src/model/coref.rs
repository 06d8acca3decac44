//! Coreference, as in the reference implementation: a mention-pair classifier
//! `FFNN([m1; m2; ED embedding])`.
//! The first layer is split exactly, `W [m1; m2; e] = (A m)[i] + (B m)[j] + (E' ed)[d] + b`,
//! so each mention is projected once and a pair costs one fused sum of three rows (the reference
//! multiplies every pair's concatenation by the whole layer).
//! Pairs are scored in chunks so the `[pairs, H]` temporaries stay under a memory budget.

use tch::{nn, Kind, Tensor};

use crate::layers::{embedding, Linear};
use crate::model::config::HeadConfig;
use crate::model::input::{cat_rows, chunk_starts};
use crate::model::pool::row_sums;

pub struct CoreferenceResolution {
    coref_ed_embeddings: Tensor,
    coref_linear: Linear,
    coref_classifier: Linear,
    hidden: i64,
    meta: i64,
    dropout: f64,
}

impl CoreferenceResolution {
    /// Parameters under `p` (= `coreference_resolution`): `coref_ed_embeddings`, `coref_linear`,
    /// `coref_classifier`.
    pub fn new(p: nn::Path, hidden: i64, heads: &HeadConfig) -> CoreferenceResolution {
        let e = heads.meta_embedding_size;
        CoreferenceResolution {
            coref_ed_embeddings: embedding(&p / "coref_ed_embeddings", heads.ed_embeddings, e),
            coref_linear: Linear::new(&p / "coref_linear", 2 * hidden + e, hidden),
            coref_classifier: Linear::new(&p / "coref_classifier", hidden, 1),
            hidden,
            meta: e,
            dropout: heads.dropout,
        }
    }

    /// Number of rows of the edit-distance table: distances are clamped below it.
    pub fn ed_count(&self) -> i64 {
        self.coref_ed_embeddings.size()[0]
    }

    /// Logits `[C]` of the pairs `(first[c], second[c])` of rows of `reprs` `[M, H]`, with their
    /// clamped edit distances `eds[c]`. At most `chunk_rows` pairs are expanded at a time.
    pub fn logits(
        &self,
        reprs: &Tensor,
        first: &Tensor,
        second: &Tensor,
        eds: &Tensor,
        train: bool,
        chunk_rows: i64,
    ) -> Tensor {
        let h = self.hidden;
        let m = reprs.size()[0];
        // [A m; B m; E' ed + b] stacked: a pair's first layer is one fused sum of three rows.
        let table = Tensor::cat(
            &[
                reprs.matmul(&self.coref_linear.columns(0, h).tr()),
                reprs.matmul(&self.coref_linear.columns(h, h).tr()),
                self.coref_ed_embeddings
                    .matmul(&self.coref_linear.columns(2 * h, self.meta).tr())
                    + &self.coref_linear.bias,
            ],
            0,
        );
        let index = Tensor::stack(&[first.shallow_clone(), second + m, eds + 2 * m], 1).view([-1]);
        let pairs = first.size()[0];
        let chunks: Vec<Tensor> = chunk_starts(pairs, chunk_rows)
            .map(|(start, len)| {
                let mut hid = row_sums(&table, &index.narrow(0, 3 * start, 3 * len), 3);
                let _ = hid.relu_();
                self.coref_classifier
                    .forward(&hid.dropout(self.dropout, train))
                    .squeeze_dim(-1)
            })
            .collect();
        cat_rows(&chunks, &[0], Kind::Float, reprs.device())
    }

    /// The unsplit layer over the concatenation, for the exactness test.
    #[cfg(test)]
    pub(crate) fn logits_concat(
        &self,
        reprs: &Tensor,
        first: &Tensor,
        second: &Tensor,
        eds: &Tensor,
    ) -> Tensor {
        let x = Tensor::cat(
            &[
                reprs.index_select(0, first),
                reprs.index_select(0, second),
                self.coref_ed_embeddings.index_select(0, eds),
            ],
            1,
        );
        self.coref_classifier
            .forward(&self.coref_linear.forward(&x).relu())
            .squeeze_dim(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn split_equals_concatenation_in_any_chunking() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = CoreferenceResolution::new(
            vs.root() / "coreference_resolution",
            16,
            &HeadConfig::default(),
        );
        let reprs = Tensor::randn([6, 16], (Kind::Float, Device::Cpu));
        let first = Tensor::from_slice(&[0i64, 0, 1, 2, 4, 5, 3]);
        let second = Tensor::from_slice(&[1i64, 2, 3, 5, 5, 0, 1]);
        let eds = Tensor::from_slice(&[0i64, 3, 299, 17, 1, 0, 8]);
        let full = head.logits_concat(&reprs, &first, &second, &eds);
        for chunk in [1, 3, 7, 100] {
            let split = head.logits(&reprs, &first, &second, &eds, false, chunk);
            assert!(split.allclose(&full, 1e-5, 1e-6, false), "chunk {chunk}");
        }
        let none = Tensor::zeros([0], (Kind::Int64, Device::Cpu));
        assert_eq!(
            head.logits(&reprs, &none, &none, &none, false, 4).size(),
            [0]
        );
    }
}
