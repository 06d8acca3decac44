//! Coreference at inference: each document's mention pairs scored once, in the model's
//! direction, and clustered by complete linkage.

use crate::corpus::Span;
use crate::error::{Error, Result};
use crate::model::cluster::complete_linkage;
use crate::model::config::{CorefPairOrder, CorefStrings};
use crate::model::input::{clamp_index, index_tensor, PreparedDoc};
use crate::model::prediction::DocTrace;
use tch::Tensor;

use super::predict::{host_f32, DocState};
use super::{Batch, JerexModel};

impl JerexModel {
    /// Scores each document's mention pairs once, in the direction of the model's
    /// `coref_pair_order` (and in the other direction too when tracing), and clusters them.
    pub(super) fn cluster(
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
