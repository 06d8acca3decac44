//! The BERT encoder (HuggingFace `BertModel` without pooler) on tch. Parameters live under the
//! VarStore paths that spell the checkpoint keys, so a HF `model.safetensors` fills them as is.

use tch::{nn, Device, Kind, Tensor};

use super::BertConfig;
use crate::layers::{embedding, LayerNorm, Linear};

/// A linear layer run in `kind`: input and parameters are cast (differentiably, so fp32 master
/// weights still get gradients), as autocast does for matmuls.
fn linear_in(layer: &Linear, xs: &Tensor, kind: Kind) -> Tensor {
    xs.to_kind(kind)
        .linear(&layer.weight.to_kind(kind), Some(&layer.bias.to_kind(kind)))
}

#[derive(Debug, Clone, Copy)]
enum Activation {
    Gelu,
    GeluTanh,
    Relu,
}

impl Activation {
    fn from_name(name: &str) -> Activation {
        match name {
            "gelu_new" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            // BertConfig::load accepts only these three names; HF "gelu" is the exact erf form.
            _ => Activation::Gelu,
        }
    }

    fn apply(self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => xs.gelu("none"),
            Activation::GeluTanh => xs.gelu("tanh"),
            Activation::Relu => xs.relu(),
        }
    }
}

#[derive(Debug)]
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    layer_norm: LayerNorm,
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

impl Layer {
    fn new(p: nn::Path, cfg: &BertConfig) -> Layer {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let attention = &p / "attention";
        let this = &attention / "self";
        Layer {
            query: Linear::new(&this / "query", h, h),
            key: Linear::new(&this / "key", h, h),
            value: Linear::new(&this / "value", h, h),
            attention_output: Linear::new(&attention / "output" / "dense", h, h),
            attention_norm: LayerNorm::new(&attention / "output" / "LayerNorm", h, eps),
            intermediate: Linear::new(&p / "intermediate" / "dense", h, i),
            output: Linear::new(&p / "output" / "dense", i, h),
            output_norm: LayerNorm::new(&p / "output" / "LayerNorm", h, eps),
        }
    }
}

/// HuggingFace BERT: embeddings (word + position + token type 0, LayerNorm, dropout) and
/// `num_hidden_layers` post-norm transformer layers. No pooler.
#[derive(Debug)]
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: i64,
    hidden: i64,
    activation: Activation,
    hidden_dropout: f64,
    attention_dropout: f64,
}

impl BertModel {
    /// Creates the parameters under `p` (e.g. `vs.root() / "bert"` gives
    /// `bert.embeddings.word_embeddings.weight`, `bert.encoder.layer.0.attention.self.query.weight`).
    pub fn new(p: nn::Path, cfg: &BertConfig) -> BertModel {
        let e = &p / "embeddings";
        let h = cfg.hidden_size;
        let embeddings = Embeddings {
            word: embedding(&e / "word_embeddings", cfg.vocab_size, h),
            position: embedding(&e / "position_embeddings", cfg.max_position_embeddings, h),
            token_type: embedding(&e / "token_type_embeddings", cfg.type_vocab_size, h),
            layer_norm: LayerNorm::new(&e / "LayerNorm", h, cfg.layer_norm_eps),
        };
        let encoder = &p / "encoder" / "layer";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Layer::new(&encoder / i, cfg))
            .collect();
        BertModel {
            embeddings,
            layers,
            heads: cfg.num_attention_heads,
            hidden: h,
            activation: Activation::from_name(&cfg.hidden_act),
            hidden_dropout: cfg.hidden_dropout_prob,
            attention_dropout: cfg.attention_probs_dropout_prob,
        }
    }

    pub fn device(&self) -> Device {
        self.embeddings.word.device()
    }

    pub fn hidden_size(&self) -> i64 {
        self.hidden
    }

    /// `input_ids [B, T]` (i64), `attention_mask [B, T]` (1 = real token) → `[B, T, H]` fp32.
    /// Token types are all 0 and positions `0..T`; dropout only when `train`.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        self.forward_in(input_ids, attention_mask, None, train, Kind::Float)
    }

    /// As [`forward_t`](Self::forward_t) with matmuls and attention in `compute` (fp32, bf16 or
    /// fp16). Embeddings, LayerNorms and the residual stream stay fp32, as under autocast, so the
    /// output is fp32 whatever `compute` is.
    /// `extra` (`[B, T, H]`), when given, is added to the embeddings before their LayerNorm.
    pub fn forward_in(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        extra: Option<&Tensor>,
        train: bool,
        compute: Kind,
    ) -> Tensor {
        let (batch, len) = input_ids.size2().expect("input_ids must be [B, T]");
        let e = &self.embeddings;
        let positions = Tensor::arange(len, (Kind::Int64, input_ids.device()));
        let mut embedded = Tensor::embedding(&e.word, input_ids, -1, false, false)
            + e.position.index_select(0, &positions)
            + e.token_type.get(0);
        if let Some(extra) = extra {
            embedded += extra;
        }
        let mut xs = e
            .layer_norm
            .forward(&embedded)
            .dropout(self.hidden_dropout, train);

        // Boolean mask (true = attend) broadcast over heads and queries: padded keys are excluded
        // exactly, with no large additive constant that would overflow in half precision.
        let attend = attention_mask.ne(0).view([batch, 1, 1, len]);
        let head_dim = self.hidden / self.heads;
        let split_heads = |t: Tensor| t.view([batch, len, self.heads, head_dim]).transpose(1, 2);
        let attention_dropout = if train { self.attention_dropout } else { 0.0 };
        for layer in &self.layers {
            let q = split_heads(linear_in(&layer.query, &xs, compute));
            let k = split_heads(linear_in(&layer.key, &xs, compute));
            let v = split_heads(linear_in(&layer.value, &xs, compute));
            let context = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(&attend),
                attention_dropout,
                false,
                None,
                false,
            )
            .transpose(1, 2)
            .reshape([batch, len, self.hidden]);
            let attended = linear_in(&layer.attention_output, &context, compute)
                .dropout(self.hidden_dropout, train);
            xs = layer
                .attention_norm
                .forward(&(attended.to_kind(Kind::Float) + &xs));
            let inner = self
                .activation
                .apply(&linear_in(&layer.intermediate, &xs, compute));
            let out = linear_in(&layer.output, &inner, compute).dropout(self.hidden_dropout, train);
            xs = layer.output_norm.forward(&(out.to_kind(Kind::Float) + &xs));
        }
        xs
    }
}
