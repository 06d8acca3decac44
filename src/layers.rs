//! Parameter constructors shared by the encoder and the heads. Each creates its tensors under the
//! VarStore path that spells the checkpoint key (`…attention.self.query.weight`), with BERT's
//! initialisation, and puts biases and LayerNorm parameters in [`NO_DECAY`] so AdamW leaves them
//! undecayed (reference: weight decay 0.01 except biases and LayerNorm).

use tch::nn::{self, Init};
use tch::Tensor;

/// Optimizer group of parameters that get weight decay.
pub const DECAY: usize = 0;
/// Optimizer group of biases and LayerNorm parameters: no weight decay.
pub const NO_DECAY: usize = 1;

/// BERT's initialiser for weights and embeddings: N(0, 0.02).
pub const BERT_INIT: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};

/// A linear layer `y = x Wᵀ + b` with `weight [out, in]` and `bias [out]`, as in PyTorch.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Tensor,
}

impl Linear {
    pub fn new(p: nn::Path, in_dim: i64, out_dim: i64) -> Linear {
        let weight = p
            .set_group(DECAY)
            .var("weight", &[out_dim, in_dim], BERT_INIT);
        let bias = p
            .set_group(NO_DECAY)
            .var("bias", &[out_dim], Init::Const(0.0));
        Linear { weight, bias }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, Some(&self.bias))
    }

    /// The columns `[from, from + len)` of the weight: the exact per-part product of a linear
    /// layer over a concatenation, `W [a; b] = W_a a + W_b b`.
    pub fn columns(&self, from: i64, len: i64) -> Tensor {
        self.weight.narrow(1, from, len)
    }
}

/// LayerNorm with `weight` (γ) and `bias` (β), no weight decay.
#[derive(Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    eps: f64,
    dim: i64,
}

impl LayerNorm {
    pub fn new(p: nn::Path, dim: i64, eps: f64) -> LayerNorm {
        let p = p.set_group(NO_DECAY);
        let weight = p.var("weight", &[dim], Init::Const(1.0));
        let bias = p.var("bias", &[dim], Init::Const(0.0));
        LayerNorm {
            weight,
            bias,
            eps,
            dim,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.layer_norm(
            [self.dim],
            Some(&self.weight),
            Some(&self.bias),
            self.eps,
            true,
        )
    }
}

/// An embedding table `weight [count, dim]`, N(0, 0.02), with weight decay (as the reference).
pub fn embedding(p: nn::Path, count: i64, dim: i64) -> Tensor {
    p.set_group(DECAY).var("weight", &[count, dim], BERT_INIT)
}
