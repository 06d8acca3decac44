//! Strict end-to-end metrics, as the reference implementation scores them.
//!
//! Per document, gold and predictions become sets of hashable items; an item is a true positive
//! when it is in both sets, a false positive when only predicted, a false negative when only
//! gold. Sets remove duplicates, so a DocRED mention or label annotated twice counts once, and
//! types are part of the item, so a type error is one false positive plus one false negative.
//! Counts are summed over documents (micro averaging) and reported in percent.
//!
//! | task | item |
//! |---|---|
//! | mention | document-level word span `(start, end)` |
//! | coreference | cluster = set of mention spans |
//! | entity | (cluster, entity type) |
//! | relation | ((head cluster, head type), (tail cluster, tail type), relation type): the reference's `rel_nec`, its model-selection metric |
//! | relation, untyped arguments | (head cluster, tail cluster, relation type): the reference's `rel` |
//!
//! A relation counts only when both argument clusters are reproduced exactly (every mention,
//! no extra one, exact word boundaries). Documents whose gold has no relation labels at all
//! (`relations: None`, e.g. DocRED test) are left out of the relation scores instead of turning
//! every predicted relation into a false positive.
//!
//! The gold-input scores (paper Table 4) score each head on gold inputs: coreference given gold
//! mentions, entity types given gold clusters, relations given gold entities (their types are
//! gold too, so the untyped-argument item is used).
//!
//! For knowledge-base builders and comparison with other systems, three more relation views:
//!
//! - **Lenient, string-level** (as in REBEL's DocRED evaluation): the item is (head string, tail
//!   string, relation type), where an entity's string is its *first mention* (the mention that
//!   starts first in the document, the shorter one on a tie) with its words joined by single
//!   spaces, compared exactly (case included). Entity types are not part of the item. For a
//!   prediction the first mention is the predicted entity's earliest mention, so a cluster that
//!   misses a later mention still matches, and one that misses the first does not. Items are a
//!   set per document, so two entities with the same first-mention string and the same
//!   relation to the same string count once, on either side; counts are micro-summed.
//! - **Per relation type**: the strict relation items grouped by their relation type key.
//! - **Cut-offs** ([`Evaluator::with_relation_cutoffs`]): the strict relation items at several
//!   relation-score cut-offs, from one prediction made at the lowest of them.
//!
//! `items` turns a document's gold and prediction into these sets; `report` turns the summed
//! counts into the JSON summaries and the table.

mod items;
mod report;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::corpus::{Annotations, Document};
use crate::error::Result;
use crate::model::{DocPrediction, ModelConfig};

use items::{bad, Side, TypeKeys, TypedRelation};
pub use report::{CutoffReport, EvalReport, GoldInputReport, Report, TypeReport};

/// True positives, false positives and false negatives of one task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
}

impl Counts {
    /// Precision in percent (0 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Recall in percent (0 when there is no gold item).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// F1 in percent (0 when precision and recall are both 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// `{"precision": P, "recall": R, "f1": F}`.
    pub fn prf(&self) -> Prf {
        Prf {
            precision: self.precision(),
            recall: self.recall(),
            f1: self.f1(),
        }
    }

    /// Adds one document's gold and predicted item sets.
    fn add_sets<T: Eq + Hash>(&mut self, gold: &HashSet<T>, pred: &HashSet<T>) {
        let tp = gold.intersection(pred).count() as u64;
        self.tp += tp;
        self.fp += pred.len() as u64 - tp;
        self.fn_ += gold.len() as u64 - tp;
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        100.0 * num as f64 / den as f64
    }
}

/// Precision, recall and F1 in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Strict relation counts of the relations scoring at least `cutoff`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CutoffCounts {
    pub cutoff: f32,
    pub counts: Counts,
}

/// Scores of each head given gold inputs (paper Table 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldInputScores {
    /// Clusters predicted from the gold mentions.
    pub coreference: Counts,
    /// Entities (cluster + type) predicted from the gold clusters.
    pub entity: Counts,
    /// Relations predicted between the gold entities.
    pub relation: Counts,
}

/// All scores of an evaluation run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub mention: Counts,
    pub coreference: Counts,
    pub entity: Counts,
    /// Strict relations with both argument types (`rel_nec`): the main relation score.
    pub relation: Counts,
    /// Strict relations without argument types (`rel`).
    pub relation_untyped: Counts,
    /// Lenient string-level relation triples (module doc).
    pub relation_lenient: Counts,
    /// `relation`'s items per relation type key.
    pub relation_per_type: BTreeMap<String, Counts>,
    /// The cut-off the relation scores above apply to predicted relations (`None`: every
    /// predicted relation counts).
    pub relation_threshold: Option<f32>,
    /// Strict relations at each cut-off, ascending (empty unless asked for).
    pub relation_curve: Vec<CutoffCounts>,
    pub gold_input: GoldInputScores,
    pub documents: usize,
    pub seconds: f64,
}

/// Which head a gold-input prediction exercises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoldTask {
    /// The prediction clusters the gold mentions: its clusters are scored.
    Coreference,
    /// The prediction types the gold clusters: its entities are scored.
    Entity,
    /// The prediction relates the gold entities: its relations are scored.
    Relation,
}
/// Adds one document's strict relation items to the per-type counts.
fn add_per_type<'s>(
    per_type: &mut BTreeMap<String, Counts>,
    gold: &HashSet<TypedRelation<'s>>,
    pred: &HashSet<TypedRelation<'s>>,
) {
    let of = |set: &HashSet<TypedRelation<'s>>, key: &str| -> HashSet<TypedRelation<'s>> {
        set.iter().filter(|item| item.2 == key).copied().collect()
    };
    let keys: BTreeSet<&str> = gold.iter().chain(pred).map(|item| item.2).collect();
    for key in keys {
        per_type
            .entry(key.to_string())
            .or_default()
            .add_sets(&of(gold, key), &of(pred, key));
    }
}

/// Accumulates scores over documents.
#[derive(Debug, Clone)]
pub struct Evaluator {
    types: TypeKeys,
    scores: Scores,
}

impl Evaluator {
    /// Predicted type indices are resolved through the model's type lists.
    pub fn new(config: &ModelConfig) -> Self {
        let keys = |ts: &[crate::model::TypeInfo]| ts.iter().map(|t| t.key.clone()).collect();
        Evaluator::with_types(keys(&config.entity_types), keys(&config.relation_types))
    }

    /// Like [`Evaluator::new`] from the type keys alone.
    pub fn with_types(entity_types: Vec<String>, relation_types: Vec<String>) -> Self {
        Evaluator {
            types: TypeKeys {
                entity: entity_types,
                relation: relation_types,
            },
            scores: Scores::default(),
        }
    }

    /// Relation scores at `threshold` only, plus the strict relation counts at each of
    /// `cutoffs` and `threshold` (the precision–recall table), from one prediction per
    /// document: the predictions given to [`Evaluator::add`] must then be made at a relation
    /// threshold no higher than the lowest of them. The gold-input scores are not affected.
    pub fn with_relation_cutoffs(mut self, threshold: f32, cutoffs: &[f32]) -> Self {
        let mut all: Vec<f32> = cutoffs.iter().copied().chain([threshold]).collect();
        all.sort_by(f32::total_cmp);
        all.dedup();
        self.scores.relation_threshold = Some(threshold);
        self.scores.relation_curve = all
            .into_iter()
            .map(|cutoff| CutoffCounts {
                cutoff,
                counts: Counts::default(),
            })
            .collect();
        self
    }

    /// Scores one document's end-to-end prediction against its gold annotations.
    pub fn add(&mut self, doc: &Document, pred: &DocPrediction) -> Result<()> {
        let gold = Side::gold(doc, gold_of(doc)?)?;
        let mut pred = Side::predicted(doc, pred, &self.types)?;
        let s = &mut self.scores;
        s.mention.add_sets(&gold.mentions, &pred.mentions);
        s.coreference.add_sets(&gold.clusters(), &pred.clusters());
        s.entity
            .add_sets(&gold.typed_entities(), &pred.typed_entities());
        if gold.relations.is_some() {
            let gold_items = gold.typed_relations();
            if !s.relation_curve.is_empty() {
                let scored = pred.typed_relation_scores();
                for point in &mut s.relation_curve {
                    let above: HashSet<_> = scored
                        .iter()
                        .filter(|(_, &score)| score >= point.cutoff)
                        .map(|(item, _)| *item)
                        .collect();
                    point.counts.add_sets(&gold_items, &above);
                }
            }
            if let Some(threshold) = s.relation_threshold {
                pred.keep_relations_from(threshold);
            }
            let pred_items = pred.typed_relations();
            s.relation.add_sets(&gold_items, &pred_items);
            add_per_type(&mut s.relation_per_type, &gold_items, &pred_items);
            s.relation_untyped
                .add_sets(&gold.untyped_relations(), &pred.untyped_relations());
            s.relation_lenient
                .add_sets(&gold.lenient_relations(doc)?, &pred.lenient_relations(doc)?);
        }
        s.documents += 1;
        Ok(())
    }

    /// Scores one document's prediction made from gold inputs for `task` (not counted as a
    /// document: pair it with [`Evaluator::add`]).
    pub fn add_gold_input(
        &mut self,
        task: GoldTask,
        doc: &Document,
        pred: &DocPrediction,
    ) -> Result<()> {
        let gold = Side::gold(doc, gold_of(doc)?)?;
        let pred = Side::predicted(doc, pred, &self.types)?;
        let g = &mut self.scores.gold_input;
        match task {
            GoldTask::Coreference => g.coreference.add_sets(&gold.clusters(), &pred.clusters()),
            GoldTask::Entity => g
                .entity
                .add_sets(&gold.typed_entities(), &pred.typed_entities()),
            GoldTask::Relation if gold.relations.is_some() => g
                .relation
                .add_sets(&gold.untyped_relations(), &pred.untyped_relations()),
            GoldTask::Relation => {}
        }
        Ok(())
    }

    /// The scores so far.
    pub fn scores(&self) -> &Scores {
        &self.scores
    }

    /// The final scores, with the wall time of the run.
    pub fn finish(mut self, seconds: f64) -> Scores {
        self.scores.seconds = seconds;
        self.scores
    }
}

fn gold_of(doc: &Document) -> Result<&Annotations> {
    doc.gold
        .as_ref()
        .ok_or_else(|| bad(doc, "has no gold annotations to evaluate against".into()))
}

#[cfg(test)]
mod tests;
