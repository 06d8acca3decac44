//! The joint JEREX model: one encoder pass for a batch of documents, then mention localization,
//! coreference, entity classification and relation classification, each head run once over
//! all documents of the batch with flat index arrays built on the host. Training (`loss`) and
//! inference (`predict`) share the same heads; inference decodes per document.
//!
//! Host/device traffic at inference: index arrays go over once per stage, and the host waits
//! three times per batch (mention scores, coreference scores, final entity/relation scores).

use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::corpus::{Annotations, Span};
use crate::device::Precision;
use crate::encoder::{Encoder, SpecialIds};
use crate::error::{Error, Result};
use crate::model::cluster::complete_linkage;
use crate::model::config::{CorefPairOrder, CorefStrings, ModelConfig, Thresholds};
use crate::model::coref::CoreferenceResolution;
use crate::model::entity::{entity_reprs, EntityClassification};
use crate::model::input::{cat_rows, clamp_index, index_tensor, PreparedDoc};
use crate::model::mention::MentionLocalization;
use crate::model::pool::RangeMax;
use crate::model::prediction::{DocPrediction, DocTrace, PredEntity, PredMention, PredRelation};
use crate::model::relation::{
    MentionPairs, MentionPlace, RelationClassifier, RelationInput, RelationOutput, RelationPass,
};
use crate::model::sample::DocSample;
use crate::tokenize::PieceDecoder;

/// Default budget for one chunk's `[rows, H]` temporaries in the pair heads and span pooling:
/// 1 M floats (4 MB fp32) per tensor, so chunks stay in cache and in reused heap memory: 16× larger
/// chunks made the element-wise ops 10× slower (fresh pages for every temporary).
pub const DEFAULT_CHUNK_ELEMENTS: i64 = 1 << 20;

/// The joint training loss and its terms, weighted as in the reference implementation. Terms
/// without samples are 0.
#[derive(Debug)]
pub struct Losses {
    pub mention: Tensor,
    pub coref: Tensor,
    pub entity: Tensor,
    pub relation: Tensor,
    /// `mention + coref + 0.25 entity + relation`.
    pub total: Tensor,
}

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

/// One document's mentions and clusters while a batch is decoded. Mentions are in the output
/// order, `(start, end)`; coreference scores each unordered pair once as (earlier, later) in
/// that order, the direction the training sampler uses.
struct DocState {
    mentions: Vec<Span>,
    mention_scores: Vec<f32>,
    /// Indices into `mentions`, ascending; clusters ordered by first mention.
    clusters: Vec<Vec<usize>>,
    coref_scores: Vec<f32>,
    /// Gold type indices, when given.
    types: Option<Vec<i64>>,
}

/// What the relation stage of a batch reads: mention and entity representations with their
/// per-document offsets.
struct RelationScope<'b> {
    pool: &'b RangeMax,
    places: &'b [MentionPlace],
    clusters: &'b [Vec<usize>],
    mention_reprs: &'b Tensor,
    entity_reprs: &'b Tensor,
    types: &'b Tensor,
    mention_offsets: &'b [usize],
    entity_offsets: &'b [usize],
    threshold: f32,
}

/// Entity pairs scored together by the relation head, at most `limit` entity pairs and about
/// `limit` mention pairs (what the head's per-pair tensors grow with). With the default chunk
/// budget a few hundred typical documents fit in one group.
struct RelationGroup {
    /// Global entity indices (head, tail).
    pairs: Vec<(usize, usize)>,
    /// The document of each pair.
    docs: Vec<usize>,
    mention_pairs: usize,
    limit: usize,
}

impl RelationGroup {
    /// Chunks of the pair heads per group: large enough that groups rarely split a batch.
    const CHUNKS: usize = 8;

    fn new(chunk_rows: i64) -> RelationGroup {
        RelationGroup {
            pairs: Vec::new(),
            docs: Vec::new(),
            mention_pairs: 0,
            limit: Self::CHUNKS * chunk_rows.max(1) as usize,
        }
    }

    fn push(&mut self, doc: usize, head: usize, tail: usize, mention_pairs: usize) {
        self.pairs.push((head, tail));
        self.docs.push(doc);
        self.mention_pairs += mention_pairs;
    }

    fn is_full(&self) -> bool {
        self.pairs.len() >= self.limit || self.mention_pairs >= self.limit
    }
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

    /// End-to-end predictions for a batch of documents (one per document, in order).
    pub fn predict(
        &self,
        docs: &[PreparedDoc],
        thresholds: &Thresholds,
    ) -> Result<Vec<DocPrediction>> {
        self.predict_from(docs, thresholds, GoldInput::None)
    }

    /// Predictions with the stages up to `gold` taken from each document's gold annotations
    /// (an error when a document has none, or names an unknown entity type).
    pub fn predict_from(
        &self,
        docs: &[PreparedDoc],
        thresholds: &Thresholds,
        gold: GoldInput,
    ) -> Result<Vec<DocPrediction>> {
        self.predict_encoded(&self.encode_batch(docs), thresholds, gold)
    }

    /// Runs the encoder once over `docs` (inference mode) for [`predict_encoded`](Self::predict_encoded).
    pub fn encode_batch<'a>(&self, docs: &'a [PreparedDoc]) -> EncodedBatch<'a> {
        tch::no_grad(|| self.encode_states(docs, false))
    }

    /// As [`predict_from`](Self::predict_from) on an already encoded batch.
    pub fn predict_encoded(
        &self,
        encoded: &EncodedBatch,
        thresholds: &Thresholds,
        gold: GoldInput,
    ) -> Result<Vec<DocPrediction>> {
        tch::no_grad(|| self.run_predict(&Batch::pooled(encoded), thresholds, gold, None))
    }

    /// End-to-end predictions with every raw score behind them (slower: every candidate span
    /// is scored exactly, and coreference in both directions).
    pub fn predict_traced(
        &self,
        docs: &[PreparedDoc],
        thresholds: &Thresholds,
    ) -> Result<(Vec<DocPrediction>, Vec<DocTrace>)> {
        let encoded = self.encode_batch(docs);
        let mut traces = vec![DocTrace::default(); docs.len()];
        let predictions = tch::no_grad(|| {
            self.run_predict(
                &Batch::pooled(&encoded),
                thresholds,
                GoldInput::None,
                Some(&mut traces),
            )
        })?;
        Ok((predictions, traces))
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

    fn run_predict(
        &self,
        batch: &Batch,
        thresholds: &Thresholds,
        gold: GoldInput,
        mut trace: Option<&mut Vec<DocTrace>>,
    ) -> Result<Vec<DocPrediction>> {
        let docs = batch.docs;
        let device = self.device();

        // Mentions.
        let mut states: Vec<DocState> = if gold >= GoldInput::Mentions {
            docs.iter()
                .map(|d| gold_state(d, &self.config, gold))
                .collect::<Result<_>>()?
        } else {
            self.detect_mentions(batch, thresholds.mention, trace.as_deref_mut())?
        };
        let mention_offsets = prefix_sums(states.iter().map(|s| s.mentions.len()));
        let places: Vec<MentionPlace> = states
            .iter()
            .enumerate()
            .flat_map(|(d, s)| s.mentions.iter().map(move |&m| (d, m)))
            .map(|(d, m)| batch.place(d, m))
            .collect();
        let mention_reprs = self.pool_ranges(&batch.pool, &places);

        // Coreference and clustering.
        if gold < GoldInput::Clusters {
            self.cluster(
                batch,
                &mut states,
                &mention_reprs,
                &mention_offsets,
                thresholds.coref,
                trace.as_deref_mut(),
            )?;
        }

        // Entities.
        let entity_offsets = prefix_sums(states.iter().map(|s| s.clusters.len()));
        let clusters: Vec<Vec<usize>> = states
            .iter()
            .zip(&mention_offsets)
            .flat_map(|(s, &off)| s.clusters.iter().map(move |c| shift(c, off)))
            .collect();
        let entity_reprs = self.entity_reprs(&mention_reprs, &clusters, false);
        let entity_logits = self.entity.logits(&entity_reprs, false);
        let entity_probs = entity_logits.softmax(-1, Kind::Float);
        let types = if gold >= GoldInput::Entities {
            let given: Vec<i64> = states
                .iter()
                .flat_map(|s| s.types.iter().flatten().copied())
                .collect();
            index_tensor(&given, device)
        } else {
            entity_logits.argmax(-1, false)
        };

        // Relations: every ordered pair of distinct entities of a document, (i, j) then (j, i),
        // scored in groups of bounded size and thresholded group by group, so a document with
        // very many entities costs time but never unbounded memory.
        let scope = RelationScope {
            pool: &batch.pool,
            places: &places,
            clusters: &clusters,
            mention_reprs: &mention_reprs,
            entity_reprs: &entity_reprs,
            types: &types,
            mention_offsets: &mention_offsets,
            entity_offsets: &entity_offsets,
            threshold: thresholds.relation,
        };
        let mut relations: Vec<Vec<PredRelation>> = vec![Vec::new(); docs.len()];
        let mut group = RelationGroup::new(self.chunk_rows());
        for (d, (s, &off)) in states.iter().zip(&entity_offsets).enumerate() {
            let n = s.clusters.len();
            for i in 0..n {
                for j in (i + 1)..n {
                    for (h, t) in [(off + i, off + j), (off + j, off + i)] {
                        group.push(d, h, t, clusters[h].len() * clusters[t].len());
                    }
                    if group.is_full() {
                        let done =
                            std::mem::replace(&mut group, RelationGroup::new(self.chunk_rows()));
                        self.score_relations(&scope, done, &mut relations, trace.as_deref_mut())?;
                    }
                }
            }
        }
        self.score_relations(&scope, group, &mut relations, trace.as_deref_mut())?;

        // The final wait: everything left comes to the host at once.
        let entity_probs = host_f32(&entity_probs)?;
        let types = host_i64(&types)?;

        let n_et = self.config.entity_types.len();
        if let Some(traces) = trace {
            for (d, t) in traces.iter_mut().enumerate() {
                let entities = entity_offsets[d]..entity_offsets[d] + states[d].clusters.len();
                t.entity_types = entities
                    .map(|e| entity_probs[e * n_et..(e + 1) * n_et].to_vec())
                    .collect();
            }
        }
        let mut out = Vec::with_capacity(docs.len());
        for (d, (s, mut relations)) in states.into_iter().zip(relations).enumerate() {
            let e_off = entity_offsets[d];
            let mentions = s
                .mentions
                .iter()
                .zip(&s.mention_scores)
                .map(|(&span, &score)| PredMention { span, score })
                .collect();
            let entities = s
                .clusters
                .iter()
                .zip(&s.coref_scores)
                .enumerate()
                .map(|(i, (c, &coref_score))| {
                    let e = e_off + i;
                    let entity_type = types[e] as usize;
                    let type_score = if gold >= GoldInput::Entities {
                        1.0
                    } else {
                        entity_probs[e * n_et + entity_type]
                    };
                    PredEntity {
                        mentions: c.clone(),
                        entity_type,
                        type_score,
                        coref_score,
                    }
                })
                .collect();
            relations.sort_by_key(|r| (r.head, r.tail, r.relation));
            out.push(DocPrediction {
                mentions,
                entities,
                relations,
            });
        }
        Ok(out)
    }

    /// Scores the entity pairs of `group` and appends each relation at or above `threshold`
    /// (with its evidence mention pair) to its document's list.
    fn score_relations(
        &self,
        scope: &RelationScope,
        group: RelationGroup,
        relations: &mut [Vec<PredRelation>],
        mut trace: Option<&mut Vec<DocTrace>>,
    ) -> Result<()> {
        if group.pairs.is_empty() {
            return Ok(());
        }
        let mention_pairs = MentionPairs::build(scope.places, scope.clusters, &group.pairs);
        let RelationOutput { logits, wins } = self.relation.forward(
            &RelationInput {
                pool: scope.pool,
                mention_reprs: scope.mention_reprs,
                entity_reprs: scope.entity_reprs,
                entity_types: scope.types,
                entity_pairs: &group.pairs,
                mention_pairs: &mention_pairs,
            },
            RelationPass::Infer {
                threshold: scope.threshold,
            },
            self.chunk_rows(),
        );
        let probs = host_f32(&logits.sigmoid())?;
        let wins = wins.map(|w| host_i64(&w)).transpose()?;
        let evidence = self.relation.evidence(&mention_pairs, wins.as_deref());
        let n_rt = self.config.relation_types.len();
        for (r, (&(h, t), &d)) in group.pairs.iter().zip(&group.docs).enumerate() {
            let (m_off, e_off) = (scope.mention_offsets[d], scope.entity_offsets[d]);
            let p = evidence[r];
            let ev = (mention_pairs.head[p] - m_off, mention_pairs.tail[p] - m_off);
            let scores = &probs[r * n_rt..(r + 1) * n_rt];
            if let Some(traces) = trace.as_deref_mut() {
                traces[d]
                    .relations
                    .push(((h - e_off, t - e_off), scores.to_vec()));
            }
            for (relation, &score) in scores.iter().enumerate() {
                if score >= scope.threshold {
                    relations[d].push(PredRelation {
                        head: h - e_off,
                        tail: t - e_off,
                        relation,
                        score,
                        evidence: ev,
                    });
                }
            }
        }
        Ok(())
    }

    /// Scores every candidate span; keeps those at or above `threshold`, per document in
    /// `(start, end)` order.
    fn detect_mentions(
        &self,
        batch: &Batch,
        threshold: f32,
        mut trace: Option<&mut Vec<DocTrace>>,
    ) -> Result<Vec<DocState>> {
        let mut places = Vec::new();
        let mut sizes = Vec::new();
        let size_count = self.mention.size_count();
        let candidates: Vec<Vec<Span>> = batch.docs.iter().map(|d| d.candidates()).collect();
        for (d, spans) in candidates.iter().enumerate() {
            for &span in spans {
                places.push(batch.place(d, span));
                sizes.push(clamp_index(span.len(), size_count));
            }
        }
        let pass = match trace {
            Some(_) => MentionPass::Exact,
            None => MentionPass::Screen(threshold),
        };
        let logits = self.mention_logits(&batch.pool, &places, &sizes, pass);
        let probs = host_f32(&logits.sigmoid())?;
        let mut at = 0;
        let mut states = Vec::with_capacity(batch.docs.len());
        for (d, spans) in candidates.into_iter().enumerate() {
            let n = spans.len();
            if let Some(traces) = trace.as_deref_mut() {
                traces[d].candidates = spans
                    .iter()
                    .copied()
                    .zip(probs[at..at + n].to_vec())
                    .collect();
            }
            let mut kept: Vec<(Span, f32)> = spans
                .into_iter()
                .zip(&probs[at..at + n])
                .filter(|&(_, &p)| p >= threshold)
                .map(|(s, &p)| (s, p))
                .collect();
            at += n;
            kept.sort_by_key(|(s, _)| (s.start, s.end));
            states.push(DocState {
                mentions: kept.iter().map(|k| k.0).collect(),
                mention_scores: kept.iter().map(|k| k.1).collect(),
                clusters: Vec::new(),
                coref_scores: Vec::new(),
                types: None,
            });
        }
        Ok(states)
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

    /// Scores each document's mention pairs once, in the direction of the model's
    /// `coref_pair_order` (and in the other direction too when tracing), and clusters them.
    fn cluster(
        &self,
        batch: &Batch,
        states: &mut [DocState],
        mention_reprs: &Tensor,
        mention_offsets: &[usize],
        threshold: f32,
        mut trace: Option<&mut Vec<DocTrace>>,
    ) -> Result<()> {
        let ed_count = self.coref.ed_count();
        let order = self.config.heads.coref_pair_order;
        let (mut first, mut second, mut eds) = (Vec::new(), Vec::new(), Vec::new());
        for (d, s) in states.iter().enumerate() {
            let phrases = self.coref_phrases(&batch.docs[d], &s.mentions)?;
            let off = mention_offsets[d] as i64;
            let pairs = directed_pairs(&s.mentions, order);
            let reversed = pairs.iter().map(|&(a, b)| (b, a));
            let all: Vec<(usize, usize)> = match trace {
                Some(_) => pairs.iter().copied().chain(reversed).collect(),
                None => pairs,
            };
            for (a, b) in all {
                first.push(off + a as i64);
                second.push(off + b as i64);
                eds.push(clamp_index(
                    strsim::levenshtein(&phrases[a], &phrases[b]),
                    ed_count,
                ));
            }
        }
        let device = self.device();
        let logits = self.coref.logits(
            mention_reprs,
            &index_tensor(&first, device),
            &index_tensor(&second, device),
            &index_tensor(&eds, device),
            false,
            self.chunk_rows(),
        );
        let probs = host_f32(&logits.sigmoid())?;
        let mut at = 0;
        for (d, s) in states.iter_mut().enumerate() {
            let n = s.mentions.len();
            let count = n * n.saturating_sub(1) / 2;
            let condensed = &probs[at..at + count];
            at += count;
            if let Some(traces) = trace.as_deref_mut() {
                let pairs = directed_pairs(&s.mentions, order);
                let reversed = &probs[at..at + count];
                at += count;
                let m = &s.mentions;
                traces[d].coref = pairs
                    .iter()
                    .zip(condensed)
                    .map(|(&(a, b), &p)| (m[a], m[b], p))
                    .chain(
                        pairs
                            .iter()
                            .zip(reversed)
                            .map(|(&(a, b), &p)| (m[b], m[a], p)),
                    )
                    .collect();
            }
            s.clusters = complete_linkage(n, condensed, threshold);
            s.coref_scores = s
                .clusters
                .iter()
                .map(|c| mean_pair_prob(n, c, condensed))
                .collect();
        }
        Ok(())
    }

    /// The strings whose edit distance coreference reads at inference (`coref_strings`).
    fn coref_phrases(&self, doc: &PreparedDoc, mentions: &[Span]) -> Result<Vec<String>> {
        match self.config.heads.coref_strings {
            CorefStrings::Words => Ok(mentions.iter().map(|&m| doc.doc.phrase(m)).collect()),
            CorefStrings::DecodedPieces => {
                let pieces = self.pieces.as_ref().ok_or_else(|| {
                    Error::Config(
                        "the model compares decoded word pieces in coreference but was built \
                         without its tokenizer (load it from its folder)"
                            .into(),
                    )
                })?;
                Ok(mentions
                    .iter()
                    .map(|&m| {
                        let (start, end) = doc.pieces(m);
                        pieces.decode(&doc.tokens.ids[start..end])
                    })
                    .collect())
            }
        }
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

    /// The joint training loss over a batch of documents and their samples, as the reference
    /// implementation computes it:
    /// masked means over all samples of the batch, the relation BCE summed over types and
    /// averaged over entity pairs, `total = mention + coref + 0.25 entity + relation`.
    /// Entity and relation heads see gold clusters and gold types (teacher forcing).
    pub fn loss(&self, docs: &[PreparedDoc], samples: &[DocSample]) -> Result<Losses> {
        if docs.len() != samples.len() {
            return Err(Error::Config(format!(
                "loss: {} documents but {} samples",
                docs.len(),
                samples.len()
            )));
        }
        let n_rt = self.config.relation_types.len();
        let n_et = self.config.entity_types.len();
        for (doc, sample) in docs.iter().zip(samples) {
            check_sample(doc, sample, n_et, n_rt)?;
        }
        let device = self.device();
        let batch = Batch::pooled(&self.encode_states(docs, true));

        // Mention localization over the sampled spans.
        let size_count = self.mention.size_count();
        let mut span_places = Vec::new();
        let mut sizes = Vec::new();
        let mut span_labels = Vec::new();
        // Gold mentions, pooled once for coreference, entities and relations.
        let mut places = Vec::new();
        let mut mention_offsets = Vec::with_capacity(docs.len());
        for (d, sample) in samples.iter().enumerate() {
            for &span in &sample.spans {
                span_places.push(batch.place(d, span));
                sizes.push(clamp_index(span.len(), size_count));
            }
            span_labels.extend_from_slice(&sample.span_labels);
            mention_offsets.push(places.len());
            places.extend(sample.mentions.iter().map(|&m| batch.place(d, m)));
        }
        let mention = bce_mean(
            &self.mention_logits(&batch.pool, &span_places, &sizes, MentionPass::Train),
            &span_labels,
            device,
        );
        let mention_reprs = self.pool_ranges(&batch.pool, &places);

        // Coreference.
        let ed_count = self.coref.ed_count();
        let (mut first, mut second, mut eds, mut coref_labels) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((doc, sample), &off) in docs.iter().zip(samples).zip(&mention_offsets) {
            let phrases: Vec<String> = sample.mentions.iter().map(|&m| doc.doc.phrase(m)).collect();
            for &(i, j) in &sample.coref_pairs {
                first.push((off + i) as i64);
                second.push((off + j) as i64);
                eds.push(clamp_index(
                    strsim::levenshtein(&phrases[i], &phrases[j]),
                    ed_count,
                ));
            }
            coref_labels.extend_from_slice(&sample.coref_labels);
        }
        let coref_logits = self.coref.logits(
            &mention_reprs,
            &index_tensor(&first, device),
            &index_tensor(&second, device),
            &index_tensor(&eds, device),
            true,
            self.chunk_rows(),
        );
        let coref = bce_mean(&coref_logits, &coref_labels, device);

        // Entities (gold clusters and types).
        let mut clusters = Vec::new();
        let mut types = Vec::new();
        let mut entity_offsets = Vec::with_capacity(docs.len());
        for (sample, &off) in samples.iter().zip(&mention_offsets) {
            entity_offsets.push(clusters.len());
            clusters.extend(sample.entities.iter().map(|c| shift(c, off)));
            types.extend(sample.entity_types.iter().map(|&t| t as i64));
        }
        let entity_reprs = self.entity_reprs(&mention_reprs, &clusters, true);
        let types = index_tensor(&types, device);
        let entity = if clusters.is_empty() {
            Tensor::zeros([], (Kind::Float, device))
        } else {
            self.entity
                .logits(&entity_reprs, true)
                .cross_entropy_for_logits(&types)
        };

        // Relations.
        let mut entity_pairs = Vec::new();
        let mut rel_labels = Vec::new();
        for (sample, &off) in samples.iter().zip(&entity_offsets) {
            entity_pairs.extend(sample.rel_pairs.iter().map(|&(h, t)| (off + h, off + t)));
            rel_labels.extend_from_slice(&sample.rel_labels);
        }
        let relation = if entity_pairs.is_empty() {
            Tensor::zeros([], (Kind::Float, device))
        } else {
            let mention_pairs = MentionPairs::build(&places, &clusters, &entity_pairs);
            let out = self.relation.forward(
                &RelationInput {
                    pool: &batch.pool,
                    mention_reprs: &mention_reprs,
                    entity_reprs: &entity_reprs,
                    entity_types: &types,
                    entity_pairs: &entity_pairs,
                    mention_pairs: &mention_pairs,
                },
                RelationPass::Train,
                self.chunk_rows(),
            );
            let targets = Tensor::from_slice(&rel_labels)
                .view([entity_pairs.len() as i64, n_rt as i64])
                .to_device(device);
            out.logits
                .binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::None)
                .sum_dim_intlist(1, false, Kind::Float)
                .mean(Kind::Float)
        };

        let total = &mention + &coref + &entity * 0.25 + &relation;
        Ok(Losses {
            mention,
            coref,
            entity,
            relation,
            total,
        })
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

/// Checks a training sample against its document and the model, so a bad sample is an error
/// naming the document rather than an index panic inside a tensor op.
fn check_sample(doc: &PreparedDoc, s: &DocSample, n_et: usize, n_rt: usize) -> Result<()> {
    let bad = |message: String| {
        Err(Error::BadDocument {
            doc: doc.doc.id.clone(),
            message: format!("training sample: {message}"),
        })
    };
    for &span in s.spans.iter().chain(&s.mentions) {
        doc.check_span(span, "sample")?;
    }
    let m = s.mentions.len();
    if s.span_labels.len() != s.spans.len() || s.coref_labels.len() != s.coref_pairs.len() {
        return bad("label counts differ from sample counts".into());
    }
    if s.coref_pairs.iter().any(|&(i, j)| i >= m || j >= m) {
        return bad(format!("a coreference pair indexes past {m} mentions"));
    }
    if s.entities.len() != s.entity_types.len() {
        return bad("entity and entity type counts differ".into());
    }
    if s.entities
        .iter()
        .any(|e| e.is_empty() || e.iter().any(|&i| i >= m))
    {
        return bad(format!("an entity is empty or indexes past {m} mentions"));
    }
    if s.entity_types.iter().any(|&t| t >= n_et) {
        return bad(format!("an entity type is not below {n_et}"));
    }
    let n_e = s.entities.len();
    if s.rel_pairs.iter().any(|&(h, t)| h >= n_e || t >= n_e) {
        return bad(format!("a relation pair indexes past {n_e} entities"));
    }
    if s.rel_labels.len() != s.rel_pairs.len() * n_rt {
        return bad(format!(
            "{} relation labels for {} pairs of {n_rt} types",
            s.rel_labels.len(),
            s.rel_pairs.len()
        ));
    }
    Ok(())
}

/// The document's gold mentions (deduplicated, `(start, end)` order), and with `gold ≥
/// Clusters` its gold clusters, with `gold ≥ Entities` its gold types.
fn gold_state(doc: &PreparedDoc, config: &ModelConfig, gold: GoldInput) -> Result<DocState> {
    let annotations: &Annotations = doc.doc.gold.as_ref().ok_or_else(|| Error::BadDocument {
        doc: doc.doc.id.clone(),
        message: "gold input asked for, but the document has no gold annotations".into(),
    })?;
    let mut mentions: Vec<Span> = annotations
        .entities
        .iter()
        .flat_map(|e| e.mentions.iter().copied())
        .collect();
    for &m in &mentions {
        doc.check_span(m, "gold mention")?;
    }
    mentions.sort_by_key(|m| (m.start, m.end, m.sent));
    mentions.dedup_by_key(|m| (m.start, m.end));
    let index = |m: &Span| {
        mentions
            .binary_search_by_key(&(m.start, m.end), |x| (x.start, x.end))
            .expect("every gold mention is in the list")
    };
    let (mut clusters, mut types) = (Vec::new(), None);
    if gold >= GoldInput::Clusters {
        let mut entities: Vec<(Vec<usize>, &str)> = annotations
            .entities
            .iter()
            .map(|e| {
                let mut c: Vec<usize> = e.mentions.iter().map(index).collect();
                c.sort_unstable();
                c.dedup();
                (c, e.entity_type.as_str())
            })
            .collect();
        entities.sort_by(|a, b| a.0.cmp(&b.0));
        if gold >= GoldInput::Entities {
            types = Some(
                entities
                    .iter()
                    .map(|(_, key)| {
                        config.entity_index(key).map(|i| i as i64).ok_or_else(|| {
                            Error::BadDocument {
                                doc: doc.doc.id.clone(),
                                message: format!("unknown entity type '{key}'"),
                            }
                        })
                    })
                    .collect::<Result<_>>()?,
            );
        }
        clusters = entities.into_iter().map(|(c, _)| c).collect();
    }
    Ok(DocState {
        mention_scores: vec![1.0; mentions.len()],
        coref_scores: vec![1.0; clusters.len()],
        mentions,
        clusters,
        types,
    })
}

/// The pairs `(i, j)`, `i < j`, of mentions in `(start, end)` order (the condensed order
/// clustering reads), each turned into the direction coreference scores it.
fn directed_pairs(mentions: &[Span], order: CorefPairOrder) -> Vec<(usize, usize)> {
    let candidate_rank = |m: &Span| (m.sent, m.len(), m.start);
    let n = mentions.len();
    let mut pairs = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in (i + 1)..n {
            let swap = order == CorefPairOrder::Candidate
                && candidate_rank(&mentions[j]) < candidate_rank(&mentions[i]);
            pairs.push(if swap { (j, i) } else { (i, j) });
        }
    }
    pairs
}

/// Mean pair probability inside a cluster (1 for a singleton).
fn mean_pair_prob(n: usize, cluster: &[usize], condensed: &[f32]) -> f32 {
    let mut sum = 0.0f64;
    let mut count = 0usize;
    for (x, &i) in cluster.iter().enumerate() {
        for &j in &cluster[x + 1..] {
            sum += f64::from(condensed[crate::model::cluster::condensed_index(n, i, j)]);
            count += 1;
        }
    }
    if count == 0 {
        1.0
    } else {
        (sum / count as f64) as f32
    }
}

/// BCE-with-logits averaged over all samples, or 0 when there are none.
fn bce_mean(logits: &Tensor, labels: &[f32], device: Device) -> Tensor {
    if labels.is_empty() {
        return Tensor::zeros([], (Kind::Float, device));
    }
    let targets = Tensor::from_slice(labels).to_device(device);
    logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)
}

fn shift(indices: &[usize], offset: usize) -> Vec<usize> {
    indices.iter().map(|&i| i + offset).collect()
}

/// `[0, a, a + b, …]`: the offsets of consecutive groups of the given sizes (one per group).
fn prefix_sums(sizes: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut acc = 0;
    sizes
        .map(|n| {
            let start = acc;
            acc += n;
            start
        })
        .collect()
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(Device::Cpu).contiguous().view([-1]),
    )?)
}

fn host_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        t.to_device(Device::Cpu).contiguous().view([-1]),
    )?)
}
