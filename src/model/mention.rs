//! Mention localization, as in the reference implementation: `FFNN([span repr; size embedding])`
//! → one logit.
//! The first layer is split over its input, `W [r; s] = W_r r + (W_s S)[size]`, so the size term
//! is one small table projected once, not a per-span concatenation. At inference,
//! [`MentionScreen`] bounds each span's logit from part of the layer and finishes only the
//! spans that can reach the threshold.

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
        let mut hid = size_term.addmm(reprs, &self.linear.columns(0, self.hidden).tr());
        let _ = hid.relu_();
        self.mention_classifier
            .forward(&hid.dropout(self.dropout, train))
            .squeeze_dim(-1)
    }

    /// The first layer split by the sign of each unit's output weight, for
    /// [`MentionScreen::logits`].
    pub fn screen(&self) -> MentionScreen {
        let out = self.mention_classifier.weight.view([-1]);
        let positive = out.gt(0.0);
        let units = |mask: &Tensor| mask.nonzero().squeeze_dim(1);
        let (pos, rest) = (units(&positive), units(&positive.logical_not()));
        let w = self.linear.columns(0, self.hidden);
        let size_terms = self.size_terms();
        let part = |u: &Tensor| {
            (
                w.index_select(0, u).tr().contiguous(),
                size_terms.index_select(1, u),
                out.index_select(0, u),
            )
        };
        let (pos, rest) = (part(&pos), part(&rest));
        // One more column: the other units' first layer weighted by their output weights.
        let (w_rest, sizes_rest, out_rest) = &rest;
        let bound = (
            Tensor::cat(&[&pos.0, &w_rest.mv(out_rest).unsqueeze(1)], 1),
            Tensor::cat(&[&pos.1, &sizes_rest.mv(out_rest).unsqueeze(1)], 1),
            pos.2,
        );
        MentionScreen {
            bound,
            rest,
            bias: self.mention_classifier.bias.shallow_clone(),
        }
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

/// Inference-only scoring that skips most of the work for spans that cannot reach the
/// threshold. The output layer sums `w_j relu(z_j)`. A unit with `w_j ≤ 0` adds at most
/// `min(0, w_j z_j)` (as `relu(z) ≥ 0` and `relu(z) ≥ z`), so together those units add at most
/// `min(0, Σ w_j z_j)`, and that sum is linear in the span: one more column of the first layer.
/// The units with `w_j > 0` plus that column bound the logit from above; only spans whose bound
/// reaches the threshold pay for the other units one by one. At usual thresholds the bound leaves
/// open little more than the spans that pass (figures in `docs/performance.md`).
pub struct MentionScreen {
    /// First-layer weights `[H, P + 1]` and size terms `[sizes, P + 1]` of the `P` units with
    /// positive output weights, then the column of the others; output weights `[P]`.
    bound: (Tensor, Tensor, Tensor),
    /// The same for the units with output weights `≤ 0`, without the extra column.
    rest: (Tensor, Tensor, Tensor),
    bias: Tensor,
}

impl MentionScreen {
    /// Slack on the bound, far above the rounding differences between the split sums and one
    /// full product (~1e-5).
    const MARGIN: f64 = 0.01;

    /// Logits `[N]` of spans of one size (`size` = its row of the size table) when only spans
    /// with probability ≥ `threshold` matter: exact (up to summation order) for every span that
    /// can reach it; the others get an upper bound on their logit that cannot.
    pub fn logits(&self, reprs: &Tensor, size: i64, threshold: f32) -> Tensor {
        let (mut logits, bound) = self.bound(reprs, size);
        let rest = |reprs: &Tensor| {
            let (w, sizes, out) = &self.rest;
            let mut hid = sizes.get(size).addmm(reprs, w);
            let _ = hid.relu_();
            hid.mv(out)
        };
        let t = f64::from(threshold);
        // Near 0 and 1 the probability saturates in f32; score everything exactly there.
        if t > 1e-6 && t < 0.999 {
            let min_logit = (t / (1.0 - t)).ln() - Self::MARGIN;
            let can_pass = bound.ge(min_logit);
            let open = can_pass.nonzero().squeeze_dim(1);
            if open.size()[0] > 0 {
                let _ = logits.index_add_(0, &open, &rest(&reprs.index_select(0, &open)));
            }
            logits.where_self(&can_pass, &bound)
        } else {
            logits + rest(reprs)
        }
    }

    /// `(positive part + bias, upper bound)`, both `[N]`: the logit without the units whose
    /// output weight is `≤ 0`, and the bound that adds those units' linear column.
    fn bound(&self, reprs: &Tensor, size: i64) -> (Tensor, Tensor) {
        let (w, sizes, out) = &self.bound;
        let p = out.size()[0];
        let z = sizes.get(size).addmm(reprs, w);
        let _ = z.narrow(1, 0, p).relu_();
        let positive = z.narrow(1, 0, p).mv(out) + &self.bias;
        let bound = &positive + z.select(1, p).clamp_max(0.0);
        (positive, bound)
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

    #[test]
    fn screened_logits_are_exact_where_they_can_pass() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut head = MentionLocalization::new(
            vs.root() / "mention_localization",
            16,
            &HeadConfig::default(),
        );
        // Few positive output weights, as in a trained head, and logits of a trained head's
        // spread, so that the bound bites.
        tch::no_grad(|| {
            let w = head.mention_classifier.weight.abs() * -20.0;
            let _ = w.narrow(1, 0, 3).abs_();
            head.mention_classifier.weight.copy_(&w);
        });
        let screen = head.screen();
        let reprs = Tensor::randn([400, 16], (Kind::Float, Device::Cpu)) * 3.0;
        let size = 2;
        let exact = head.logits(&reprs, &head.size_terms().get(size), false);
        let probs = Vec::<f32>::try_from(exact.sigmoid()).unwrap();
        let mut sorted = probs.clone();
        sorted.sort_by(f32::total_cmp);
        // The bound lies between the exact logit and the positive units alone, and the
        // column of the others makes it strictly tighter for some spans.
        let (positive, bound) = screen.bound(&reprs, size);
        assert!(bound.ge_tensor(&(&exact - 1e-4)).all().int64_value(&[]) == 1);
        assert!(bound.le_tensor(&positive).all().int64_value(&[]) == 1);
        assert!(bound.lt_tensor(&(&positive - 0.1)).any().int64_value(&[]) == 1);
        // At the bound's median half the spans are screened.
        let mut bounds = Vec::<f32>::try_from(bound.sigmoid()).unwrap();
        bounds.sort_by(f32::total_cmp);
        let median_bound = bounds[200];
        // Thresholds that keep about 90% and 50% of the spans, the median bound, and the
        // unscreened ends.
        for threshold in [sorted[40], sorted[200], median_bound, 0.0, 0.9995] {
            let screened = screen.logits(&reprs, size, threshold);
            let gap = Vec::<f32>::try_from((&screened - &exact).abs()).unwrap();
            let screened_probs = Vec::<f32>::try_from(screened.sigmoid()).unwrap();
            for (i, (&p, &q)) in probs.iter().zip(&screened_probs).enumerate() {
                if p >= threshold {
                    assert!(gap[i] < 1e-4, "span {i} at {threshold}: {p} vs {q}");
                } else {
                    assert!(q < threshold, "span {i} passes at {threshold}: {p} vs {q}");
                }
            }
            let screened_out = gap.iter().filter(|&&g| g > 1e-4).count();
            if threshold == median_bound {
                assert!(
                    screened_out > 100,
                    "the bound screened out only {screened_out}"
                );
            }
            if threshold == 0.0 || threshold > 0.999 {
                assert_eq!(screened_out, 0, "saturated thresholds score exactly");
            }
        }
    }
}
