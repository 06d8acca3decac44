//! BERT-architecture encoder on tch, loading HuggingFace folders; long documents in windows.
//!
//! [`Encoder::encode`] takes documents as word-piece ids without special tokens, cuts each into
//! windows (`[CLS] … [SEP]`, or bare pieces for reference checkpoints; see [`window`]), runs all windows of all documents in padded
//! sub-batches under a token budget, and gathers one row per word piece back into a flat
//! per-document layout for the heads.

mod bert;
mod config;
mod load;
pub mod window;

pub use bert::BertModel;
pub use config::BertConfig;
pub use load::{load_all, load_pretrained, save_all};
pub use window::{plan_batches, plan_windows, Framing, Window, WindowConfig};

use tch::{nn, Device, Kind, Tensor};

use crate::device::Precision;
use crate::error::Result;

/// Padded tokens per forward pass by default: 16 windows of 512 pieces. Bounds activation memory
/// however long a document is.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

/// The tokenizer's special token ids the encoder adds around each window and pads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub cls: i64,
    pub sep: i64,
    pub pad: i64,
}

/// Encoder output for a list of documents.
#[derive(Debug)]
pub struct Encoded {
    /// `[Σ len_i, H]` fp32: document `i`'s word pieces are rows `offsets[i]..offsets[i + 1]`.
    pub states: Tensor,
    /// `docs.len() + 1` row offsets into `states`.
    pub offsets: Vec<usize>,
    /// `(rows, padded length)` of each forward pass, in order (for budgets and statistics).
    pub passes: Vec<(usize, usize)>,
}

/// The encoder with its windowing and batching policy.
#[derive(Debug)]
pub struct Encoder {
    pub bert: BertModel,
    config: BertConfig,
    specials: SpecialIds,
    window: WindowConfig,
    precision: Precision,
    max_batch_tokens: usize,
    /// `[shapes, H]`: added to each piece's input embedding by its word's shape.
    shape_embeddings: Option<Tensor>,
}

impl Encoder {
    /// Creates the BERT parameters under `p` (usually `vs.root() / "bert"`). Fails when the window
    /// does not fit the encoder's positions or leaves no room for pieces.
    pub fn new(
        p: nn::Path,
        cfg: &BertConfig,
        specials: SpecialIds,
        window: WindowConfig,
        precision: Precision,
    ) -> Result<Encoder> {
        window::check_window_config(&window, cfg.max_position_embeddings)?;
        Ok(Encoder {
            bert: BertModel::new(p, cfg),
            config: cfg.clone(),
            specials,
            window,
            precision,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            shape_embeddings: None,
        })
    }

    /// Adds `table[shape]` (`[shapes, H]`) to each piece's input embedding, by the shape ids
    /// given to [`encode_shaped`](Self::encode_shaped) (0 for special tokens and padding).
    pub fn with_shape_embeddings(mut self, table: Tensor) -> Encoder {
        self.shape_embeddings = Some(table);
        self
    }

    /// Sets the padded-token budget of one forward pass (a single window longer than the budget
    /// still runs alone).
    pub fn with_max_batch_tokens(mut self, max_batch_tokens: usize) -> Encoder {
        self.max_batch_tokens = max_batch_tokens;
        self
    }

    /// The word-shape table, when the encoder has one.
    pub fn shape_table(&self) -> Option<&Tensor> {
        self.shape_embeddings.as_ref()
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    pub fn window(&self) -> WindowConfig {
        self.window
    }

    pub fn max_batch_tokens(&self) -> usize {
        self.max_batch_tokens
    }

    pub fn device(&self) -> Device {
        self.bert.device()
    }

    /// The precision the encoder actually runs in on its device (fp32 on CPU).
    pub fn precision(&self) -> Precision {
        self.precision.effective(self.device())
    }

    /// Encodes documents given as word-piece ids without special tokens. Dropout is active only
    /// when `train`; gradients flow to the encoder's parameters unless the caller runs this under
    /// `tch::no_grad`. Output rows are fp32 whatever the precision.
    pub fn encode(&self, docs: &[&[i64]], train: bool) -> Encoded {
        self.encode_shaped(docs, None, train)
    }

    /// As [`encode`](Self::encode), with each piece's word shape (`shapes[d][i]` for piece `i`
    /// of document `d`) when the encoder has a shape table.
    pub fn encode_shaped(
        &self,
        docs: &[&[i64]],
        shapes: Option<&[&[i64]]>,
        train: bool,
    ) -> Encoded {
        let device = self.device();
        let shapes = shapes.filter(|_| self.shape_embeddings.is_some());
        let compute = self.precision().autocast_kind().unwrap_or(Kind::Float);

        // Every window of every document, as (doc, window) in document order.
        let windows: Vec<(usize, Window)> = docs
            .iter()
            .enumerate()
            .flat_map(|(d, ids)| {
                plan_windows(ids.len(), &self.window)
                    .into_iter()
                    .map(move |w| (d, w))
            })
            .collect();
        // With [CLS]/[SEP] framing a window's pieces start one row after its first token.
        let framed = self.window.framing.tokens() / 2;
        let lengths: Vec<usize> = windows
            .iter()
            .map(|(_, w)| w.end - w.start + 2 * framed)
            .collect();

        // Row of each window's first piece in the concatenation of all passes' flattened outputs.
        let mut first_row = vec![0i64; windows.len()];
        let mut outputs = Vec::new();
        let mut passes = Vec::new();
        let mut base = 0i64;
        for batch in plan_batches(&lengths, self.max_batch_tokens) {
            let len = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
            let mut ids = vec![self.specials.pad; batch.len() * len];
            let mut mask = vec![0i64; batch.len() * len];
            let mut shape_ids = vec![
                0i64;
                if shapes.is_some() {
                    batch.len() * len
                } else {
                    0
                }
            ];
            for (row, &i) in batch.iter().enumerate() {
                let (d, w) = windows[i];
                let at = row * len;
                if framed > 0 {
                    ids[at] = self.specials.cls;
                    ids[at + lengths[i] - 1] = self.specials.sep;
                }
                ids[at + framed..at + lengths[i] - framed]
                    .copy_from_slice(&docs[d][w.start..w.end]);
                if let Some(shapes) = shapes {
                    shape_ids[at + framed..at + lengths[i] - framed]
                        .copy_from_slice(&shapes[d][w.start..w.end]);
                }
                mask[at..at + lengths[i]].fill(1);
                first_row[i] = base + (row * len + framed) as i64;
            }
            let shape = [batch.len() as i64, len as i64];
            let ids = Tensor::from_slice(&ids).view(shape).to_device(device);
            let mask = Tensor::from_slice(&mask).view(shape).to_device(device);
            let extra = match (&self.shape_embeddings, shapes) {
                (Some(table), Some(_)) => Some(
                    table
                        .index_select(0, &Tensor::from_slice(&shape_ids).to_device(device))
                        .view([shape[0], shape[1], -1]),
                ),
                _ => None,
            };
            let out = self
                .bert
                .forward_in(&ids, &mask, extra.as_ref(), train, compute);
            outputs.push(out.reshape([-1, self.bert.hidden_size()]));
            passes.push((batch.len(), len));
            base += (batch.len() * len) as i64;
        }

        // Each piece comes from the window that keeps it; windows are in document order and
        // keep every piece once, so documents follow one another.
        let gather: Vec<i64> = windows
            .iter()
            .zip(&first_row)
            .flat_map(|((_, w), &first)| {
                (w.keep_start..w.keep_end).map(move |p| first + (p - w.start) as i64)
            })
            .collect();
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(docs.iter().scan(0, |end, ids| {
                *end += ids.len();
                Some(*end)
            }))
            .collect();
        debug_assert_eq!(offsets.last(), Some(&gather.len()));

        let states = if outputs.is_empty() {
            Tensor::zeros([0, self.bert.hidden_size()], (Kind::Float, device))
        } else {
            let index = Tensor::from_slice(&gather).to_device(device);
            Tensor::cat(&outputs, 0).index_select(0, &index)
        };
        Encoded {
            states,
            offsets,
            passes,
        }
    }
}
