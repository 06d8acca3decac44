//! Training: the joint loss over a batch of documents and their samples.

use tch::{Device, Kind, Reduction, Tensor};

use crate::error::{Error, Result};
use crate::model::input::{clamp_index, index_tensor, PreparedDoc};
use crate::model::relation::{MentionPairs, RelationInput, RelationPass};
use crate::model::sample::DocSample;

use super::{shift, Batch, JerexModel, MentionPass};

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

impl JerexModel {
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

/// BCE-with-logits averaged over all samples, or 0 when there are none.
fn bce_mean(logits: &Tensor, labels: &[f32], device: Device) -> Tensor {
    if labels.is_empty() {
        return Tensor::zeros([], (Kind::Float, device));
    }
    let targets = Tensor::from_slice(labels).to_device(device);
    logits.binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, Reduction::Mean)
}
