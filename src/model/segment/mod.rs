//! Long documents as overlapping segments.
//!
//! The heads are quadratic in a document's mentions (coreference pairs, complete linkage) and
//! entities (relation pairs times their mention pairs): harmless at DocRED's few hundred words,
//! ruinous at tens of thousands. A document of at most `whole_pieces` word pieces is predicted
//! whole, exactly as it always was. A longer one is cut at sentence boundaries into segments of
//! at most `segment_pieces` pieces, consecutive ones sharing at least `overlap_pieces`; each
//! segment is predicted as a document of its own (so cost grows linearly with length, and every
//! budget and replica applies to it), and the predictions are merged:
//!
//! - **Ownership.** Each shared stretch is split at the sentence boundary nearest its middle; a
//!   mention belongs to the segment that owns its sentence, where it has context on both sides.
//!   The document's mentions are the segments' owned mentions, with the owner's scores.
//! - **Entities.** Across each boundary, the local entities of the two segments are matched one
//!   to one by the mention spans they share in the overlap (most shared first), and matched
//!   entities are joined, so an entity continues from segment to segment as long as it is
//!   mentioned in the overlaps. One-to-one matching never joins two entities that either segment
//!   kept apart. An entity's type is that of its largest local entity (then the higher type
//!   score); its coreference score is the mean pair probability over the pairs scored inside
//!   segments.
//! - **Relations.** Each segment's relations are mapped to the joined entities; a relation
//!   predicted in several segments keeps its highest score and that segment's evidence.
//!
//! Segments are short on purpose: one encoder window of the default model, about the length of
//! the longest documents it was trained on, so the heads see what they were trained for (pairs
//! farther apart than any training document carry distance features never trained). On Re-DocRED
//! dev documents joined into long ones, shorter segments scored better on every task than longer
//! ones, and both far better than predicting the long document whole (`docs/performance.md`).
//!
//! What this gives up, by design: two entities are related only if some segment sees a mention
//! of each, i.e. mentions at most about `segment_pieces` pieces apart; mentions of one entity
//! farther apart than that, with no mention of it in the overlaps between, become separate
//! entities. The limits are tunable (model config `heads.long_documents`, job file
//! `[long_documents]`); longer segments reach farther, at a cost quadratic in their length.
//! Sentences longer than a quarter of a segment are cut into parts, and a candidate span never
//! crosses a part boundary.
//!
//! `plan` cuts a document into segments, `merge` joins their predictions.

mod merge;
mod plan;

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::input::PreparedDoc;
use crate::model::prediction::DocPrediction;
use crate::model::{JerexModel, Thresholds};

pub use merge::merge;
pub use plan::{plan, segment_doc, Segment};

/// How documents longer than `whole_pieces` are processed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongDocuments {
    /// Documents of at most this many word pieces are predicted whole, exactly as without
    /// segments. The default, 1,024 (about 850 words), keeps every DocRED-sized document whole
    /// (DocRED's longest have under 600).
    pub whole_pieces: usize,
    /// Word pieces per segment of a longer document, at most. The default is one encoder window
    /// of the default model (512 positions less `[CLS]` and `[SEP]`).
    pub segment_pieces: usize,
    /// Word pieces consecutive segments share (at least: segments end at sentence boundaries);
    /// less than half a segment.
    pub overlap_pieces: usize,
}

impl Default for LongDocuments {
    fn default() -> Self {
        LongDocuments {
            whole_pieces: 1024,
            segment_pieces: 510,
            overlap_pieces: 128,
        }
    }
}

impl LongDocuments {
    /// Segments shorter than this leave too little room for sentences.
    pub const MIN_SEGMENT_PIECES: usize = 64;

    /// Checks that segments hold several sentences and advance; the message names the field
    /// (`segment_pieces`, `overlap_pieces`).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.segment_pieces < Self::MIN_SEGMENT_PIECES {
            return Err(format!(
                "segment_pieces: {} is below the minimum of {}",
                self.segment_pieces,
                Self::MIN_SEGMENT_PIECES
            ));
        }
        // Every segment but the last holds at least `segment - part` pieces, so with parts of at
        // most a quarter segment an overlap under half a segment is always found.
        if self.overlap_pieces == 0 || 2 * self.overlap_pieces >= self.segment_pieces {
            return Err(format!(
                "overlap_pieces: {} must be at least 1 and less than half of segment_pieces ({})",
                self.overlap_pieces, self.segment_pieces
            ));
        }
        Ok(())
    }

    /// Word pieces of the longest sentence part: longer sentences are cut (see the module
    /// documentation), so that a segment always holds several parts.
    fn max_part(&self) -> usize {
        (self.segment_pieces / 4).max(1)
    }
}

/// Replacements for a model's limits (job file `[long_documents]`, command-line flags); unset
/// fields keep the model's values (by default 1,024, 510 and 128).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LongDocumentOverrides {
    /// Documents of at most this many word pieces are predicted whole
    /// (`long_documents.whole_pieces`).
    #[arg(long)]
    pub whole_pieces: Option<usize>,
    /// Word pieces per segment of a longer document. Entities and relations reach at most about
    /// this far; longer segments reach farther, at a cost quadratic in their length
    /// (`long_documents.segment_pieces`).
    #[arg(long)]
    pub segment_pieces: Option<usize>,
    /// Word pieces consecutive segments share, less than half a segment
    /// (`long_documents.overlap_pieces`).
    #[arg(long)]
    pub overlap_pieces: Option<usize>,
}

impl LongDocumentOverrides {
    /// `base` with the set fields replaced.
    pub fn apply(&self, base: LongDocuments) -> LongDocuments {
        LongDocuments {
            whole_pieces: self.whole_pieces.unwrap_or(base.whole_pieces),
            segment_pieces: self.segment_pieces.unwrap_or(base.segment_pieces),
            overlap_pieces: self.overlap_pieces.unwrap_or(base.overlap_pieces),
        }
    }
}
/// Groups of items (by their word pieces) predicted together: at most `budget` pieces each, or
/// one item.
fn budget_groups(pieces: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut sum = 0;
    for (i, &p) in pieces.iter().enumerate() {
        if i > start && sum + p > budget {
            out.push(start..i);
            start = i;
            sum = 0;
        }
        sum += p;
    }
    if start < pieces.len() {
        out.push(start..pieces.len());
    }
    out
}

impl JerexModel {
    /// End-to-end predictions in which documents longer than the model's
    /// `heads.long_documents.whole_pieces` are predicted as overlapping segments and merged (see
    /// [`crate::model::segment`]). The other documents are predicted together in one call,
    /// exactly as [`predict`](Self::predict) does; the segments in groups of at most
    /// `batch_pieces` word pieces, so memory stays bounded however long a document is.
    pub fn predict_segmented(
        &self,
        docs: &[PreparedDoc],
        thresholds: &Thresholds,
        batch_pieces: usize,
    ) -> Result<Vec<DocPrediction>> {
        let cfg = self.config().heads.long_documents;
        cfg.check()
            .map_err(|e| Error::Config(format!("long_documents.{e}")))?;
        let plans: Vec<Option<Vec<Segment>>> = docs.iter().map(|d| plan(d, &cfg)).collect();
        if plans.iter().all(Option::is_none) {
            return self.predict(docs, thresholds);
        }
        let whole: Vec<PreparedDoc> = docs
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        let mut whole = self.predict(&whole, thresholds)?.into_iter();
        let mut out = Vec::with_capacity(docs.len());
        for (doc, plan) in docs.iter().zip(plans) {
            let Some(segments) = plan else {
                out.push(whole.next().expect("one prediction per whole document"));
                continue;
            };
            let parts: Vec<PreparedDoc> = segments.iter().map(|s| segment_doc(doc, s)).collect();
            let pieces: Vec<usize> = parts.iter().map(PreparedDoc::piece_count).collect();
            let mut preds = Vec::with_capacity(parts.len());
            for group in budget_groups(&pieces, batch_pieces) {
                preds.extend(self.predict(&parts[group], thresholds)?);
            }
            out.push(merge(&segments, &preds));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
