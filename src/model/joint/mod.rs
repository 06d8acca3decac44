//! The joint JEREX model: one encoder pass for a batch of documents, then mention localization,
//! coreference, entity classification and relation classification, each head run once over
//! all documents of the batch with flat index arrays built on the host. Training (`loss`) and
//! inference (`predict`) share the same heads; inference decodes per document.
//!
//! Host/device traffic at inference: index arrays go over once per stage, and the host waits
//! three times per batch (mention scores, coreference scores, final entity/relation scores).
//!
//! This file assembles the model and holds what training and inference share (encoding, span
//! pooling, mention logits, entity representations); `predict` and `clustering` are inference,
//! `loss` is training.

mod clustering;
mod loss;
mod predict;

use tch::{nn, Device, Kind, Tensor};

use crate::corpus::Span;
use crate::device::Precision;
use crate::encoder::{Encoder, SpecialIds};
use crate::error::{Error, Result};
use crate::model::config::ModelConfig;
use crate::model::coref::CoreferenceResolution;
use crate::model::entity::{entity_reprs, EntityClassification};
use crate::model::input::{cat_rows, index_tensor, PreparedDoc};
use crate::model::mention::MentionLocalization;
use crate::model::pool::RangeMax;
use crate::model::relation::{MentionPlace, RelationClassifier};
use crate::tokenize::PieceDecoder;

pub use loss::Losses;

/// Default budget for one chunk's `[rows, H]` temporaries in the pair heads and span pooling:
/// 1 M floats (4 MB fp32) per tensor, so chunks stay in cache and in reused heap memory: 16× larger
/// chunks made the element-wise ops 10× slower (fresh pages for every temporary).
pub const DEFAULT_CHUNK_ELEMENTS: i64 = 1 << 20;
/// Which stages take the document's gold annotations instead of the model's own predictions,
/// for the per-task "gold input" evaluation. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum GoldInput {
    /// End to end: everything predicted.
    #[default]
    None,
    /// Gold mentions (score 1); clusters, types and relations predicted.
    Mentions,
    /// Gold mentions and clusters (coref score 1); types and relations predicted.
    Clusters,
    /// Gold mentions, clusters and types (type score 1); only relations predicted.
    Entities,
}

pub struct JerexModel {
    encoder: Encoder,
    mention: MentionLocalization,
    coref: CoreferenceResolution,
    entity: EntityClassification,
    relation: RelationClassifier,
    config: ModelConfig,
    hidden: i64,
    chunk_elements: i64,
    /// Word pieces back to text, for `CorefStrings::DecodedPieces`.
    pieces: Option<PieceDecoder>,
}

/// How mention logits are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum MentionPass {
    /// With dropout.
    Train,
    /// Every span exactly (for traces).
    Exact,
    /// Only spans that can reach this probability exactly; the others get a bound below it.
    Screen(f32),
}

/// A batch's encoder output, kept so the heads can run on it several times (gold-input
/// evaluation, threshold search) without encoding again. Holds only the final states: the
/// pooling table is rebuilt per prediction, which is cheap next to the encoder and keeps a
/// cache of many batches small.
pub struct EncodedBatch<'a> {
    docs: &'a [PreparedDoc],
    states: Tensor,
    offsets: Vec<usize>,
}

/// The encoded batch.
struct Batch<'a> {
    docs: &'a [PreparedDoc],
    /// Row offset of each document in the flat token axis.
    offsets: Vec<usize>,
    pool: RangeMax,
}

impl<'a> Batch<'a> {
    fn pooled(encoded: &EncodedBatch<'a>) -> Batch<'a> {
        // Contexts may span a whole document, so the table covers the longest one.
        let longest = encoded
            .docs
            .iter()
            .map(PreparedDoc::piece_count)
            .max()
            .unwrap_or(0);
        Batch {
            docs: encoded.docs,
            pool: RangeMax::new(&encoded.states, longest),
            offsets: encoded.offsets.clone(),
        }
    }

    /// Word-piece range of a span of document `d` in the flat token axis.
    fn pieces(&self, d: usize, span: Span) -> (usize, usize) {
        let (s, e) = self.docs[d].pieces(span);
        (self.offsets[d] + s, self.offsets[d] + e)
    }

    fn place(&self, d: usize, span: Span) -> MentionPlace {
        MentionPlace {
            words: span,
            pieces: self.pieces(d, span),
        }
    }
}

impl JerexModel {
    /// Creates every parameter under `p` with the reference's checkpoint names: the encoder under
    /// `bert.`, the heads under `mention_localization.`, `coreference_resolution.`,
    /// `entity_classification.`, `relation_classification.` (and `entity_pair_representation.`
    /// for GRC).
    pub fn new(
        p: &nn::Path,
        cfg: &ModelConfig,
        specials: SpecialIds,
        precision: Precision,
    ) -> Result<JerexModel> {
        check_config(cfg)?;
        let hidden = cfg.encoder.hidden_size;
        let heads = &cfg.heads;
        let n_et = cfg.entity_types.len() as i64;
        let n_rt = cfg.relation_types.len() as i64;
        let mut encoder = Encoder::new(p / "bert", &cfg.encoder, specials, cfg.window, precision)?;
        if heads.word_shapes {
            // Zeros: training starts from the pretrained encoder's own inputs.
            let table = (p / "word_shape_embeddings")
                .set_group(crate::layers::DECAY)
                .zeros("weight", &[crate::tokenize::WORD_SHAPES, hidden]);
            encoder = encoder.with_shape_embeddings(table);
        }
        Ok(JerexModel {
            encoder,
            mention: MentionLocalization::new(p / "mention_localization", hidden, heads),
            coref: CoreferenceResolution::new(p / "coreference_resolution", hidden, heads),
            entity: EntityClassification::new(
                p / "entity_classification",
                hidden,
                n_et,
                heads.dropout,
            ),
            relation: RelationClassifier::new(p, hidden, heads, n_et, n_rt),
            config: cfg.clone(),
            hidden,
            chunk_elements: DEFAULT_CHUNK_ELEMENTS,
            pieces: None,
        })
    }

    /// Gives the model the tokenizer's pieces, which `CorefStrings::DecodedPieces` reads.
    pub fn with_piece_decoder(mut self, pieces: PieceDecoder) -> JerexModel {
        self.pieces = Some(pieces);
        self
    }

    /// Computes once what inference would recompute per batch from the weights alone. Only for
    /// replicas whose weights no longer change (the engine's workers), not during training.
    pub fn freeze(&mut self) {
        self.relation.freeze();
    }

    /// Sets the per-chunk element budget of the pair heads (smaller saves memory, costs speed).
    pub fn with_chunk_elements(mut self, elements: i64) -> JerexModel {
        self.chunk_elements = elements.max(1);
        self
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Replaces the long-document limits of the model's configuration (what
    /// [`predict_segmented`](Self::predict_segmented) reads).
    pub fn set_long_documents(&mut self, limits: crate::model::LongDocuments) {
        self.config.heads.long_documents = limits;
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn device(&self) -> Device {
        self.encoder.device()
    }

    fn chunk_rows(&self) -> i64 {
        (self.chunk_elements / self.hidden).max(1)
    }

    fn encode_states<'a>(&self, docs: &'a [PreparedDoc], train: bool) -> EncodedBatch<'a> {
        let ids: Vec<Vec<i64>> = docs.iter().map(PreparedDoc::piece_ids).collect();
        let refs: Vec<&[i64]> = ids.iter().map(Vec::as_slice).collect();
        let encoded = if self.config.heads.word_shapes {
            let shapes: Vec<Vec<i64>> = docs.iter().map(PreparedDoc::piece_shapes).collect();
            let shape_refs: Vec<&[i64]> = shapes.iter().map(Vec::as_slice).collect();
            self.encoder.encode_shaped(&refs, Some(&shape_refs), train)
        } else {
            self.encoder.encode(&refs, train)
        };
        EncodedBatch {
            docs,
            states: encoded.states,
            offsets: encoded.offsets,
        }
    }

    /// Mention logits `[N]` of spans with their clamped sizes, pooled in chunks under the memory
    /// budget (see [`MentionPass`]). Spans are scored grouped by size, so each chunk's size
    /// term is the bias of its matrix product, and the logits are put back in the spans' order.
    fn mention_logits(
        &self,
        pool: &RangeMax,
        places: &[MentionPlace],
        sizes: &[i64],
        pass: MentionPass,
    ) -> Tensor {
        let device = self.device();
        let mut order: Vec<usize> = (0..places.len()).collect();
        order.sort_by_key(|&i| sizes[i]);
        let size_terms = self.mention.size_terms();
        let screen = match pass {
            MentionPass::Screen(threshold) => Some((self.mention.screen(), threshold)),
            MentionPass::Train | MentionPass::Exact => None,
        };
        let mut chunks = Vec::new();
        for run in order.chunk_by(|&a, &b| sizes[a] == sizes[b]) {
            let size = sizes[run[0]];
            for piece in run.chunks(self.chunk_rows() as usize) {
                let ranges: Vec<(usize, usize)> = piece.iter().map(|&i| places[i].pieces).collect();
                let reprs = pool.query(&ranges);
                chunks.push(match &screen {
                    Some((screen, threshold)) => screen.logits(&reprs, size, *threshold),
                    None => self.mention.logits(
                        &reprs,
                        &size_terms.get(size),
                        pass == MentionPass::Train,
                    ),
                });
            }
        }
        let sorted = cat_rows(&chunks, &[0], Kind::Float, device);
        let order: Vec<i64> = order.iter().map(|&i| i as i64).collect();
        sorted
            .zeros_like()
            .index_copy(0, &index_tensor(&order, device), &sorted)
    }

    /// `[N, H]` max-pooled representations of the spans' word pieces.
    fn pool_ranges(&self, pool: &RangeMax, places: &[MentionPlace]) -> Tensor {
        let ranges: Vec<(usize, usize)> = places.iter().map(|p| p.pieces).collect();
        pool.query(&ranges)
    }
    /// `[E, H]` entity representations (max over each cluster's mention rows, with dropout).
    fn entity_reprs(&self, mention_reprs: &Tensor, clusters: &[Vec<usize>], train: bool) -> Tensor {
        let device = self.device();
        let mut member_mention = Vec::new();
        let mut member_entity = Vec::new();
        for (e, c) in clusters.iter().enumerate() {
            for &m in c {
                member_mention.push(m as i64);
                member_entity.push(e as i64);
            }
        }
        entity_reprs(
            mention_reprs,
            &index_tensor(&member_mention, device),
            &index_tensor(&member_entity, device),
            clusters.len() as i64,
            self.config.heads.dropout,
            train,
        )
    }
}

/// Rejects configurations whose tables could not be indexed at all.
fn check_config(cfg: &ModelConfig) -> Result<()> {
    let h = &cfg.heads;
    let tables = [
        ("size_embeddings", h.size_embeddings),
        ("ed_embeddings", h.ed_embeddings),
        ("token_distance_embeddings", h.token_distance_embeddings),
        (
            "sentence_distance_embeddings",
            h.sentence_distance_embeddings,
        ),
        ("meta_embedding_size", h.meta_embedding_size),
    ];
    if let Some((name, _)) = tables.iter().find(|(_, n)| *n < 1) {
        return Err(Error::Config(format!("heads.{name} must be at least 1")));
    }
    if h.max_span_words < 1 {
        return Err(Error::Config(
            "heads.max_span_words must be at least 1".into(),
        ));
    }
    if cfg.entity_types.is_empty() {
        return Err(Error::Config(
            "the model needs at least one entity type".into(),
        ));
    }
    Ok(())
}
fn shift(indices: &[usize], offset: usize) -> Vec<usize> {
    indices.iter().map(|&i| i + offset).collect()
}
