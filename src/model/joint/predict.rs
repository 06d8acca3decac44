//! Inference: the heads run once over all documents of a batch, then each document is decoded
//! (mentions, clusters, entity types, relations), optionally with every raw score behind it.

use tch::{Device, Kind, Tensor};

use crate::corpus::{Annotations, Span};
use crate::error::{Error, Result};
use crate::model::config::{ModelConfig, Thresholds};
use crate::model::input::{clamp_index, index_tensor, PreparedDoc};
use crate::model::pool::RangeMax;
use crate::model::prediction::{DocPrediction, DocTrace, PredEntity, PredMention, PredRelation};
use crate::model::relation::{
    MentionPairs, MentionPlace, RelationInput, RelationOutput, RelationPass,
};

use super::{shift, Batch, EncodedBatch, GoldInput, JerexModel, MentionPass};

/// One document's mentions and clusters while a batch is decoded. Mentions are in the output
/// order, `(start, end)`; coreference scores each unordered pair once as (earlier, later) in
/// that order, the direction the training sampler uses.
pub(super) struct DocState {
    pub(super) mentions: Vec<Span>,
    pub(super) mention_scores: Vec<f32>,
    /// Indices into `mentions`, ascending; clusters ordered by first mention.
    pub(super) clusters: Vec<Vec<usize>>,
    pub(super) coref_scores: Vec<f32>,
    /// Gold type indices, when given.
    pub(super) types: Option<Vec<i64>>,
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

impl JerexModel {
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
        let relations = self.predict_relations(&scope, &states, trace.as_deref_mut())?;

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

    /// Every document's relations (unsorted): its entity pairs grouped as the comment in
    /// [`run_predict`](Self::run_predict) says.
    fn predict_relations(
        &self,
        scope: &RelationScope,
        states: &[DocState],
        mut trace: Option<&mut Vec<DocTrace>>,
    ) -> Result<Vec<Vec<PredRelation>>> {
        let clusters = scope.clusters;
        let mut relations: Vec<Vec<PredRelation>> = vec![Vec::new(); states.len()];
        let mut group = RelationGroup::new(self.chunk_rows());
        for (d, (s, &off)) in states.iter().zip(scope.entity_offsets).enumerate() {
            let n = s.clusters.len();
            for i in 0..n {
                for j in (i + 1)..n {
                    for (h, t) in [(off + i, off + j), (off + j, off + i)] {
                        group.push(d, h, t, clusters[h].len() * clusters[t].len());
                    }
                    if group.is_full() {
                        let done =
                            std::mem::replace(&mut group, RelationGroup::new(self.chunk_rows()));
                        self.score_relations(scope, done, &mut relations, trace.as_deref_mut())?;
                    }
                }
            }
        }
        self.score_relations(scope, group, &mut relations, trace)?;
        Ok(relations)
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

pub(super) fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(Device::Cpu).contiguous().view([-1]),
    )?)
}

fn host_i64(t: &Tensor) -> Result<Vec<i64>> {
    Ok(Vec::<i64>::try_from(
        t.to_device(Device::Cpu).contiguous().view([-1]),
    )?)
}
