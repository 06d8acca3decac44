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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::corpus::{Annotations, Document, Span};
use crate::error::{Error, Result};
use crate::model::{DocPrediction, ModelConfig};

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

/// The JSON summary of a run, fields in the documented order: `{"mention": Prf,
/// "coreference", "entity", "relation", "gold_input": {"coreference", "entity", "relation"},
/// "documents": N, "seconds": S}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mention: Prf,
    pub coreference: Prf,
    pub entity: Prf,
    pub relation: Prf,
    pub gold_input: GoldInputReport,
    pub documents: usize,
    pub seconds: f64,
}

/// The gold-input part of [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldInputReport {
    pub coreference: Prf,
    pub entity: Prf,
    pub relation: Prf,
}

/// What `jerex eval` prints: the [`Report`] fields first (unchanged, in their order), then the
/// relation views for knowledge-base builders (module doc).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub report: Report,
    /// Lenient string-level relation triples.
    pub relation_lenient: Prf,
    /// Strict relations per relation type key.
    pub relation_per_type: BTreeMap<String, TypeReport>,
    /// Strict relations per score cut-off, ascending.
    pub relation_pr_curve: Vec<CutoffReport>,
}

/// One relation type's strict scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeReport {
    #[serde(flatten)]
    pub prf: Prf,
    /// Gold relations of the type.
    pub support: u64,
    /// Predicted relations of the type.
    pub predicted: u64,
}

/// Strict relation scores at one cut-off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoffReport {
    pub cutoff: f32,
    #[serde(flatten)]
    pub prf: Prf,
    /// Predicted relations (distinct strict items) scoring at least `cutoff`.
    pub predicted: u64,
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

impl Scores {
    /// The machine-readable summary printed by `jerex eval` and stored with a trained model
    /// (serialize it with serde_json to keep the field order).
    pub fn report(&self) -> Report {
        Report {
            mention: self.mention.prf(),
            coreference: self.coreference.prf(),
            entity: self.entity.prf(),
            relation: self.relation.prf(),
            gold_input: GoldInputReport {
                coreference: self.gold_input.coreference.prf(),
                entity: self.gold_input.entity.prf(),
                relation: self.gold_input.relation.prf(),
            },
            documents: self.documents,
            seconds: self.seconds,
        }
    }

    /// What `jerex eval` prints: [`Scores::report`] and the knowledge-base views.
    pub fn eval_report(&self) -> EvalReport {
        EvalReport {
            report: self.report(),
            relation_lenient: self.relation_lenient.prf(),
            relation_per_type: self
                .relation_per_type
                .iter()
                .map(|(key, c)| {
                    let report = TypeReport {
                        prf: c.prf(),
                        support: c.tp + c.fn_,
                        predicted: c.tp + c.fp,
                    };
                    (key.clone(), report)
                })
                .collect(),
            relation_pr_curve: self
                .relation_curve
                .iter()
                .map(|p| CutoffReport {
                    cutoff: p.cutoff,
                    prf: p.counts.prf(),
                    predicted: p.counts.tp + p.counts.fp,
                })
                .collect(),
        }
    }

    /// A readable table (for stderr): every task, then the most frequent relation types and
    /// the relation cut-offs when there are any.
    pub fn table(&self) -> String {
        let rows: [(&str, &Counts); 9] = [
            ("mention", &self.mention),
            ("coreference", &self.coreference),
            ("entity", &self.entity),
            ("relation", &self.relation),
            ("relation (untyped args)", &self.relation_untyped),
            ("relation (lenient strings)", &self.relation_lenient),
            ("gold mentions → coref", &self.gold_input.coreference),
            ("gold clusters → entity", &self.gold_input.entity),
            ("gold entities → relation", &self.gold_input.relation),
        ];
        let mut out = format!(
            "{:<28}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}\n",
            "task", "P", "R", "F1", "TP", "FP", "FN"
        );
        for (name, c) in rows {
            out.push_str(&format!(
                "{:<28}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}{:>9}\n",
                name,
                c.precision(),
                c.recall(),
                c.f1(),
                c.tp,
                c.fp,
                c.fn_
            ));
        }
        if !self.relation_per_type.is_empty() {
            let mut types: Vec<(&String, &Counts)> = self.relation_per_type.iter().collect();
            types.sort_by_key(|(key, c)| (std::cmp::Reverse(c.tp + c.fn_), *key));
            out.push_str(&format!(
                "{:<28}{:>8}{:>8}{:>8}{:>9}{:>9}\n",
                format!(
                    "relation type (top {} of {})",
                    TOP_TYPES.min(types.len()),
                    types.len()
                ),
                "P",
                "R",
                "F1",
                "gold",
                "pred"
            ));
            for (key, c) in types.into_iter().take(TOP_TYPES) {
                out.push_str(&format!(
                    "  {:<26}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}\n",
                    key,
                    c.precision(),
                    c.recall(),
                    c.f1(),
                    c.tp + c.fn_,
                    c.tp + c.fp
                ));
            }
        }
        if !self.relation_curve.is_empty() {
            out.push_str(&format!(
                "{:<28}{:>8}{:>8}{:>8}{:>9}\n",
                "relation score cut-off", "P", "R", "F1", "pred"
            ));
            for p in &self.relation_curve {
                let mark = if Some(p.cutoff) == self.relation_threshold {
                    " (model threshold)"
                } else {
                    ""
                };
                let c = &p.counts;
                out.push_str(&format!(
                    "  {:<26}{:>8.2}{:>8.2}{:>8.2}{:>9}\n",
                    format!("{:.2}{mark}", p.cutoff),
                    c.precision(),
                    c.recall(),
                    c.f1(),
                    c.tp + c.fp
                ));
            }
        }
        let rate = if self.seconds > 0.0 {
            self.documents as f64 / self.seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "{} documents in {:.1} s ({rate:.1} docs/s)\n",
            self.documents, self.seconds
        ));
        out
    }
}

/// Relation types the stderr table lists (by support).
const TOP_TYPES: usize = 10;

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

/// A word span as scored: the sentence index follows from the words.
type SpanKey = (usize, usize);
/// A cluster as scored: its distinct spans, sorted.
type Cluster = Vec<SpanKey>;

fn cluster_of<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Cluster {
    let mut c: Cluster = spans.into_iter().map(|s| (s.start, s.end)).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// One side (gold or predicted) of a document as scorable entities and relations.
struct Side<'a> {
    mentions: HashSet<SpanKey>,
    /// Per entity: its cluster and type key.
    entities: Vec<(Cluster, &'a str)>,
    /// `(head, tail, relation key, score)` with entity indices (gold scores 1); `None` = no
    /// relation labels.
    relations: Option<Vec<(usize, usize, &'a str, f32)>>,
}

impl<'a> Side<'a> {
    fn gold(doc: &Document, gold: &'a Annotations) -> Result<Self> {
        let mentions = gold
            .entities
            .iter()
            .flat_map(|e| &e.mentions)
            .map(|s| (s.start, s.end))
            .collect();
        let entities = gold
            .entities
            .iter()
            .map(|e| (cluster_of(&e.mentions), e.entity_type.as_str()))
            .collect();
        let relations = match &gold.relations {
            None => None,
            Some(rels) => Some(
                rels.iter()
                    .map(|r| {
                        check_entity(doc, r.head, gold.entities.len(), "gold relation")?;
                        check_entity(doc, r.tail, gold.entities.len(), "gold relation")?;
                        Ok((r.head, r.tail, r.relation.as_str(), 1.0))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Side {
            mentions,
            entities,
            relations,
        })
    }

    fn predicted(doc: &Document, pred: &DocPrediction, types: &'a TypeKeys) -> Result<Self> {
        let mentions = pred
            .mentions
            .iter()
            .map(|m| (m.span.start, m.span.end))
            .collect();
        let entities = pred
            .entities
            .iter()
            .map(|e| {
                let spans = e
                    .mentions
                    .iter()
                    .map(|&i| {
                        pred.mentions.get(i).map(|m| &m.span).ok_or_else(|| {
                            bad(doc, format!("predicted entity mention {i} out of range"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ty = types.entity.get(e.entity_type).ok_or_else(|| {
                    bad(
                        doc,
                        format!("predicted entity type {} unknown", e.entity_type),
                    )
                })?;
                Ok((cluster_of(spans), ty.as_str()))
            })
            .collect::<Result<_>>()?;
        let relations = pred
            .relations
            .iter()
            .map(|r| {
                check_entity(doc, r.head, pred.entities.len(), "predicted relation")?;
                check_entity(doc, r.tail, pred.entities.len(), "predicted relation")?;
                let ty = types.relation.get(r.relation).ok_or_else(|| {
                    bad(
                        doc,
                        format!("predicted relation type {} unknown", r.relation),
                    )
                })?;
                Ok((r.head, r.tail, ty.as_str(), r.score))
            })
            .collect::<Result<_>>()?;
        Ok(Side {
            mentions,
            entities,
            relations: Some(relations),
        })
    }

    fn clusters(&self) -> HashSet<&Cluster> {
        self.entities.iter().map(|(c, _)| c).collect()
    }

    fn typed_entities(&self) -> HashSet<(&Cluster, &str)> {
        self.entities.iter().map(|(c, t)| (c, *t)).collect()
    }

    /// Relation items with typed arguments (`rel_nec`).
    fn typed_relations(&self) -> HashSet<TypedRelation<'_>> {
        self.typed_relation_scores().into_keys().collect()
    }

    /// Relation items with typed arguments, each with the highest score of the relations
    /// that make it (duplicate entities can make one item twice).
    fn typed_relation_scores(&self) -> HashMap<TypedRelation<'_>, f32> {
        let arg = |i: usize| (&self.entities[i].0, self.entities[i].1);
        let mut out = HashMap::new();
        for &(h, t, r, score) in self.relations.iter().flatten() {
            let best = out.entry((arg(h), arg(t), r)).or_insert(score);
            *best = best.max(score);
        }
        out
    }

    /// Relation items with untyped arguments (`rel`).
    fn untyped_relations(&self) -> HashSet<(&Cluster, &Cluster, &str)> {
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r, _)| (&self.entities[h].0, &self.entities[t].0, r))
            .collect()
    }

    /// Lenient items: (head first-mention string, tail first-mention string, relation key).
    fn lenient_relations(&self, doc: &Document) -> Result<HashSet<(String, String, &str)>> {
        let first = |i: usize| -> Result<String> {
            // Clusters are sorted, so their first span is the entity's first mention.
            let &(start, end) = self.entities[i]
                .0
                .first()
                .ok_or_else(|| bad(doc, format!("entity {i} of a relation has no mention")))?;
            Ok(doc.phrase(Span {
                start,
                end,
                sent: 0,
            }))
        };
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r, _)| Ok((first(h)?, first(t)?, r)))
            .collect()
    }

    /// Drops the relations scoring below `cutoff`.
    fn keep_relations_from(&mut self, cutoff: f32) {
        if let Some(rels) = &mut self.relations {
            rels.retain(|r| r.3 >= cutoff);
        }
    }
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

type TypedRelation<'s> = ((&'s Cluster, &'s str), (&'s Cluster, &'s str), &'s str);

fn check_entity(doc: &Document, index: usize, count: usize, what: &str) -> Result<()> {
    if index < count {
        Ok(())
    } else {
        Err(bad(
            doc,
            format!("{what} refers to entity {index} of {count}"),
        ))
    }
}

fn bad(doc: &Document, message: String) -> Error {
    Error::BadDocument {
        doc: doc.id.clone(),
        message,
    }
}

/// The type keys predictions index into (`ModelConfig::{entity,relation}_types`).
#[derive(Debug, Clone)]
struct TypeKeys {
    entity: Vec<String>,
    relation: Vec<String>,
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
mod tests {
    use super::*;
    use crate::corpus::{GoldEntity, GoldRelation, Word};
    use crate::model::{PredEntity, PredMention, PredRelation};

    const ENTITY_TYPES: [&str; 2] = ["PER", "LOC"];
    const RELATION_TYPES: [&str; 3] = ["born_in", "lives_in", "works_for"];

    fn evaluator() -> Evaluator {
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect();
        Evaluator::with_types(keys(&ENTITY_TYPES), keys(&RELATION_TYPES))
    }

    fn sp(start: usize, end: usize) -> Span {
        Span {
            start,
            end,
            sent: 0,
        }
    }

    /// A one-sentence document of 20 synthetic words with the given gold.
    fn doc(
        entities: Vec<(Vec<Span>, &str)>,
        relations: Option<Vec<(usize, usize, &str)>>,
    ) -> Document {
        Document {
            id: "d".into(),
            text: None,
            sentences: vec![(0..20)
                .map(|i| Word {
                    text: format!("w{i}"),
                    chars: None,
                })
                .collect()],
            gold: Some(Annotations {
                entities: entities
                    .into_iter()
                    .map(|(mentions, t)| GoldEntity {
                        mentions,
                        entity_type: t.into(),
                    })
                    .collect(),
                relations: relations.map(|rs| {
                    rs.into_iter()
                        .map(|(head, tail, r)| GoldRelation {
                            head,
                            tail,
                            relation: r.into(),
                            evidence: vec![],
                        })
                        .collect()
                }),
            }),
        }
    }

    /// Renames words (`w{i}` by default), for string-level items.
    fn named(mut d: Document, names: &[(usize, &str)]) -> Document {
        for &(i, text) in names {
            d.sentences[0][i].text = text.into();
        }
        d
    }

    /// A prediction: mention spans, entities as (mention indices, type index), relations as
    /// (head, tail, relation index), every score 1.
    fn pred(
        mentions: &[Span],
        entities: &[(&[usize], usize)],
        relations: &[(usize, usize, usize)],
    ) -> DocPrediction {
        let scored: Vec<_> = relations.iter().map(|&(h, t, r)| (h, t, r, 1.0)).collect();
        scored_pred(mentions, entities, &scored)
    }

    /// Like [`pred`], relations as (head, tail, relation index, score).
    fn scored_pred(
        mentions: &[Span],
        entities: &[(&[usize], usize)],
        relations: &[(usize, usize, usize, f32)],
    ) -> DocPrediction {
        DocPrediction {
            mentions: mentions
                .iter()
                .map(|&span| PredMention { span, score: 1.0 })
                .collect(),
            entities: entities
                .iter()
                .map(|(ms, t)| PredEntity {
                    mentions: ms.to_vec(),
                    entity_type: *t,
                    type_score: 1.0,
                    coref_score: 1.0,
                })
                .collect(),
            relations: relations
                .iter()
                .map(|&(head, tail, relation, score)| PredRelation {
                    head,
                    tail,
                    relation,
                    score,
                    evidence: (0, 0),
                })
                .collect(),
        }
    }

    fn counts(tp: u64, fp: u64, fn_: u64) -> Counts {
        Counts { tp, fp, fn_ }
    }

    /// Gold: PER {0..1, 5..6} born_in LOC {10..12}; PER lives_in LOC.
    fn gold_doc() -> Document {
        doc(
            vec![(vec![sp(0, 1), sp(5, 6)], "PER"), (vec![sp(10, 12)], "LOC")],
            Some(vec![(0, 1, "born_in"), (0, 1, "lives_in")]),
        )
    }

    #[test]
    fn perfect_prediction_scores_100() {
        let mut ev = evaluator();
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 1)],
            &[(0, 1, 0), (0, 1, 1)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        let s = ev.finish(1.0);
        for c in [
            s.mention,
            s.coreference,
            s.entity,
            s.relation,
            s.relation_untyped,
        ] {
            assert_eq!((c.precision(), c.recall(), c.f1()), (100.0, 100.0, 100.0));
        }
        assert_eq!(s.relation, counts(2, 0, 0));
        assert_eq!(s.documents, 1);
    }

    #[test]
    fn one_missing_mention_breaks_cluster_entity_and_relations() {
        let mut ev = evaluator();
        // The PER entity lost its mention 5..6: the cluster, the entity and both its relations
        // are wrong, although everything else is right.
        let p = pred(
            &[sp(0, 1), sp(10, 12)],
            &[(&[0], 0), (&[1], 1)],
            &[(0, 1, 0), (0, 1, 1)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.mention, counts(2, 0, 1));
        assert_eq!(s.coreference, counts(1, 1, 1));
        assert_eq!(s.entity, counts(1, 1, 1));
        assert_eq!(s.relation, counts(0, 2, 2));
        assert_eq!(s.relation_untyped, counts(0, 2, 2));
    }

    #[test]
    fn extra_mention_in_a_cluster_also_breaks_it() {
        let mut ev = evaluator();
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(7, 8), sp(10, 12)],
            &[(&[0, 1, 2], 0), (&[3], 1)],
            &[(0, 1, 0)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.mention, counts(3, 1, 0));
        assert_eq!(s.coreference, counts(1, 1, 1));
        assert_eq!(s.relation, counts(0, 1, 2));
    }

    #[test]
    fn boundary_error_is_fp_and_fn() {
        let mut ev = evaluator();
        let p = pred(&[sp(0, 1), sp(5, 6), sp(10, 11)], &[], &[]);
        ev.add(&gold_doc(), &p).unwrap();
        assert_eq!(ev.scores().mention, counts(2, 1, 1));
    }

    #[test]
    fn entity_type_error_is_fp_and_fn_and_breaks_typed_relations_only() {
        let mut ev = evaluator();
        // The LOC entity predicted as PER: clusters are right, entity and rel_nec are not.
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 0)],
            &[(0, 1, 0), (0, 1, 1)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.coreference, counts(2, 0, 0));
        assert_eq!(s.entity, counts(1, 1, 1));
        assert_eq!(s.relation, counts(0, 2, 2));
        assert_eq!(s.relation_untyped, counts(2, 0, 0));
    }

    #[test]
    fn relation_type_and_direction_errors_are_fp_and_fn() {
        let mut ev = evaluator();
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 1)],
            // born_in right; lives_in reversed.
            &[(0, 1, 0), (1, 0, 1)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        assert_eq!(ev.scores().relation, counts(1, 1, 1));
    }

    #[test]
    fn duplicates_count_once() {
        let mut ev = evaluator();
        // Gold repeats a mention inside its entity, repeats a whole entity and a label.
        let g = doc(
            vec![
                (vec![sp(0, 1), sp(0, 1), sp(5, 6)], "PER"),
                (vec![sp(10, 12)], "LOC"),
                (vec![sp(10, 12)], "LOC"),
            ],
            Some(vec![
                (0, 1, "born_in"),
                (0, 1, "born_in"),
                (0, 2, "born_in"),
            ]),
        );
        // The prediction repeats a mention, an entity and a relation.
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 1), (&[3], 1)],
            &[(0, 1, 0), (0, 2, 0)],
        );
        ev.add(&g, &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.mention, counts(3, 0, 0));
        assert_eq!(s.coreference, counts(2, 0, 0));
        assert_eq!(s.entity, counts(2, 0, 0));
        assert_eq!(s.relation, counts(1, 0, 0));
    }

    #[test]
    fn empty_gold_and_empty_prediction_give_zeros() {
        let mut ev = evaluator();
        ev.add(&doc(vec![], Some(vec![])), &DocPrediction::default())
            .unwrap();
        let s = ev.finish(0.0);
        for c in [s.mention, s.coreference, s.entity, s.relation] {
            assert_eq!(c, Counts::default());
            assert_eq!((c.precision(), c.recall(), c.f1()), (0.0, 0.0, 0.0));
        }
        assert_eq!(s.documents, 1);
    }

    #[test]
    fn documents_without_relation_labels_skip_relation_scores() {
        let mut ev = evaluator().with_relation_cutoffs(0.6, &[0.3]);
        let g = doc(vec![(vec![sp(0, 1)], "PER"), (vec![sp(3, 4)], "LOC")], None);
        let p = pred(&[sp(0, 1), sp(3, 4)], &[(&[0], 0), (&[1], 1)], &[(0, 1, 0)]);
        ev.add(&g, &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.entity, counts(2, 0, 0));
        assert_eq!(s.relation, Counts::default());
        assert_eq!(s.relation_untyped, Counts::default());
        assert_eq!(s.relation_lenient, Counts::default());
        assert!(s.relation_per_type.is_empty());
        assert_eq!(s.relation_curve.len(), 2);
        assert!(s
            .relation_curve
            .iter()
            .all(|p| p.counts == Counts::default()));
    }

    #[test]
    fn lenient_matches_first_mention_strings_where_strict_fails() {
        let g = gold_doc();
        // Gold strings: PER "w0" (mentions w0, w5), LOC "w10 w11"; born_in and lives_in.
        // The PER cluster without its second mention: strict misses both relations, but the
        // first mention and so the string is right.
        let mut ev = evaluator();
        let missing_second = pred(
            &[sp(0, 1), sp(10, 12)],
            &[(&[0], 0), (&[1], 1)],
            &[(0, 1, 0), (0, 1, 1)],
        );
        ev.add(&g, &missing_second).unwrap();
        assert_eq!(ev.scores().relation, counts(0, 2, 2));
        assert_eq!(ev.scores().relation_lenient, counts(2, 0, 0));
        // Without its first mention the PER entity's string is "w5": both fail leniently too.
        let mut ev = evaluator();
        let missing_first = pred(
            &[sp(5, 6), sp(10, 12)],
            &[(&[0], 0), (&[1], 1)],
            &[(0, 1, 0), (0, 1, 1)],
        );
        ev.add(&g, &missing_first).unwrap();
        assert_eq!(ev.scores().relation_lenient, counts(0, 2, 2));
        // Entity types are not part of the lenient item: LOC typed PER still matches.
        let mut ev = evaluator();
        let mistyped = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 0)],
            &[(0, 1, 0)],
        );
        ev.add(&g, &mistyped).unwrap();
        assert_eq!(ev.scores().relation, counts(0, 1, 2));
        assert_eq!(ev.scores().relation_lenient, counts(1, 0, 1));
    }

    #[test]
    fn lenient_takes_the_first_mention_in_the_document_and_counts_a_string_triple_once() {
        // Two gold entities named "Paris" (words 0 and 7), both lives_in "North Texas" (words
        // 10-11); the first one's mentions are listed out of document order.
        let g = named(
            doc(
                vec![
                    (vec![sp(5, 6), sp(0, 1)], "PER"),
                    (vec![sp(7, 8)], "PER"),
                    (vec![sp(10, 12)], "LOC"),
                ],
                Some(vec![(0, 2, "lives_in"), (1, 2, "lives_in")]),
            ),
            &[
                (0, "Paris"),
                (5, "it"),
                (7, "Paris"),
                (10, "North"),
                (11, "Texas"),
            ],
        );
        let mentions = [sp(0, 1), sp(5, 6), sp(7, 8), sp(10, 12)];
        let entities: [(&[usize], usize); 3] = [(&[0, 1], 0), (&[2], 0), (&[3], 1)];
        // One of the two strict items; leniently the one gold triple (Paris, North Texas,
        // lives_in) is found: not "it", the first-listed mention.
        let mut ev = evaluator();
        ev.add(&g, &pred(&mentions, &entities, &[(0, 2, 1)]))
            .unwrap();
        assert_eq!(ev.scores().relation, counts(1, 0, 1));
        assert_eq!(ev.scores().relation_lenient, counts(1, 0, 0));
        // Both strict items predicted are still one lenient triple, and a wrong direction adds
        // one false positive however often it is predicted.
        let mut ev = evaluator();
        let both = pred(
            &mentions,
            &entities,
            &[(0, 2, 1), (1, 2, 1), (2, 0, 1), (2, 1, 1)],
        );
        ev.add(&g, &both).unwrap();
        assert_eq!(ev.scores().relation, counts(2, 2, 0));
        assert_eq!(ev.scores().relation_lenient, counts(1, 1, 0));
    }

    #[test]
    fn per_type_scores_sum_to_the_strict_relation_counts() {
        let mut ev = evaluator();
        let mentions = [sp(0, 1), sp(5, 6), sp(10, 12)];
        let entities: [(&[usize], usize); 2] = [(&[0, 1], 0), (&[2], 1)];
        // Document 1: born_in right, lives_in reversed, works_for (not in gold) predicted.
        ev.add(
            &gold_doc(),
            &pred(&mentions, &entities, &[(0, 1, 0), (1, 0, 1), (0, 1, 2)]),
        )
        .unwrap();
        // Document 2: both right.
        ev.add(
            &gold_doc(),
            &pred(&mentions, &entities, &[(0, 1, 0), (0, 1, 1)]),
        )
        .unwrap();
        let s = ev.finish(0.0);
        let per_type = &s.relation_per_type;
        assert_eq!(per_type.len(), 3);
        assert_eq!(per_type["born_in"], counts(2, 0, 0));
        assert_eq!(per_type["lives_in"], counts(1, 1, 1));
        assert_eq!(per_type["works_for"], counts(0, 1, 0));
        assert_eq!(s.relation, counts(3, 2, 1));
        let report = s.eval_report().relation_per_type;
        let lives_in = &report["lives_in"];
        assert_eq!((lives_in.support, lives_in.predicted), (2, 2));
        assert_eq!(lives_in.prf.precision, 50.0);
        assert_eq!(lives_in.prf.recall, 50.0);
        assert_eq!(lives_in.prf.f1, 50.0);
        let works_for = &report["works_for"];
        assert_eq!((works_for.support, works_for.predicted), (0, 1));
        assert_eq!(works_for.prf.f1, 0.0);
        assert_eq!(report["born_in"].prf.f1, 100.0);
        let table = s.table();
        assert!(table.contains("relation type (top 3 of 3)"), "{table}");
    }

    #[test]
    fn cutoffs_count_the_relations_scoring_at_least_each() {
        // Gold: born_in and lives_in from PER to LOC. Predicted: born_in 0.9 (right), lives_in
        // 0.4 (right), born_in reversed 0.55 and lives_in reversed 0.35 (wrong).
        let mentions = [sp(0, 1), sp(5, 6), sp(10, 12)];
        let entities: [(&[usize], usize); 2] = [(&[0, 1], 0), (&[2], 1)];
        let p = scored_pred(
            &mentions,
            &entities,
            &[
                (0, 1, 0, 0.9),
                (0, 1, 1, 0.4),
                (1, 0, 0, 0.55),
                (1, 0, 1, 0.35),
            ],
        );
        let mut ev = evaluator().with_relation_cutoffs(0.6, &[0.5, 0.3, 0.5]);
        ev.add(&gold_doc(), &p).unwrap();
        let s = ev.finish(0.0);
        let curve: Vec<(f32, Counts)> = s
            .relation_curve
            .iter()
            .map(|c| (c.cutoff, c.counts))
            .collect();
        assert_eq!(
            curve,
            [
                // All four: 2 right, 2 wrong.
                (0.3, counts(2, 2, 0)),
                // born_in 0.9 and the reversed 0.55.
                (0.5, counts(1, 1, 1)),
                // born_in 0.9 alone.
                (0.6, counts(1, 0, 1)),
            ]
        );
        // Every other relation score is taken at the threshold.
        assert_eq!(s.relation, counts(1, 0, 1));
        assert_eq!(s.relation_untyped, counts(1, 0, 1));
        assert_eq!(s.relation_lenient, counts(1, 0, 1));
        assert_eq!(s.relation_per_type["born_in"], counts(1, 0, 0));
        assert_eq!(s.relation_per_type["lives_in"], counts(0, 0, 1));
        let report = s.eval_report().relation_pr_curve;
        assert_eq!(report[0].predicted, 4);
        assert_eq!(report[0].prf.precision, 50.0);
        assert_eq!(report[0].prf.recall, 100.0);
        assert!((report[0].prf.f1 - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(report[1].predicted, 2);
        assert_eq!(report[1].prf.f1, 50.0);
        assert_eq!(report[2].predicted, 1);
        assert_eq!(report[2].prf.precision, 100.0);
        let table = s.table();
        assert!(table.contains("0.60 (model threshold)"), "{table}");
    }

    #[test]
    fn micro_average_sums_counts_over_documents() {
        let mut ev = evaluator();
        let g = gold_doc();
        let all = [sp(0, 1), sp(5, 6), sp(10, 12)];
        ev.add(&g, &pred(&all, &[], &[])).unwrap();
        ev.add(&g, &pred(&all[..1], &[], &[])).unwrap();
        let m = ev.scores().mention;
        assert_eq!(m, counts(4, 0, 2));
        assert!((m.precision() - 100.0).abs() < 1e-9);
        assert!((m.recall() - 400.0 / 6.0).abs() < 1e-9);
        assert!((m.f1() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn gold_input_tasks_score_their_own_items() {
        let mut ev = evaluator();
        let g = gold_doc();
        let mentions = [sp(0, 1), sp(5, 6), sp(10, 12)];
        // Coreference on gold mentions split the PER cluster.
        let coref = pred(&mentions, &[(&[0], 0), (&[1], 0), (&[2], 1)], &[]);
        ev.add_gold_input(GoldTask::Coreference, &g, &coref)
            .unwrap();
        // Entity typing on gold clusters got LOC wrong.
        let typed = pred(&mentions, &[(&[0, 1], 0), (&[2], 0)], &[]);
        ev.add_gold_input(GoldTask::Entity, &g, &typed).unwrap();
        // Relations between gold entities (entity types ignored): one of two found.
        let rels = pred(&mentions, &[(&[0, 1], 0), (&[2], 0)], &[(0, 1, 1)]);
        ev.add_gold_input(GoldTask::Relation, &g, &rels).unwrap();
        let s = ev.finish(0.0);
        assert_eq!(s.gold_input.coreference, counts(1, 2, 1));
        assert_eq!(s.gold_input.entity, counts(1, 1, 1));
        assert_eq!(s.gold_input.relation, counts(1, 0, 1));
        assert_eq!(s.documents, 0);
        assert_eq!(s.mention, Counts::default());
    }

    #[test]
    fn invalid_predictions_and_unlabelled_documents_are_errors() {
        let mut ev = evaluator();
        let g = gold_doc();
        let bad_type = pred(&[sp(0, 1)], &[(&[0], 7)], &[]);
        assert!(ev.add(&g, &bad_type).is_err());
        let bad_mention = pred(&[sp(0, 1)], &[(&[3], 0)], &[]);
        assert!(ev.add(&g, &bad_mention).is_err());
        let bad_rel = pred(&[sp(0, 1)], &[(&[0], 0)], &[(0, 1, 0)]);
        assert!(ev.add(&g, &bad_rel).is_err());
        let unlabelled = Document {
            gold: None,
            ..gold_doc()
        };
        let err = ev.add(&unlabelled, &DocPrediction::default()).unwrap_err();
        assert!(err.to_string().contains("document d"));
    }

    #[test]
    fn json_has_exactly_the_documented_shape() {
        let mut ev = evaluator();
        ev.add(&gold_doc(), &DocPrediction::default()).unwrap();
        let report = ev.finish(2.5).report();
        let text = serde_json::to_string(&report).unwrap();
        // Field order is part of the contract: the top-level keys appear in this order.
        let positions: Vec<usize> = [
            "\"mention\"",
            "\"coreference\"",
            "\"entity\"",
            "\"relation\"",
            "\"gold_input\"",
            "\"documents\"",
            "\"seconds\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 7);
        assert_eq!(v["documents"], 1);
        assert_eq!(v["seconds"], 2.5);
        assert_eq!(v["mention"]["recall"], 0.0);
        for task in ["coreference", "entity", "relation"] {
            let o = v["gold_input"][task].as_object().unwrap();
            assert_eq!(o.len(), 3);
            assert!(
                o.contains_key("precision") && o.contains_key("recall") && o.contains_key("f1")
            );
        }
        let table = Scores::default().table();
        assert!(table.contains("relation (untyped args)"));
        assert!(table.contains("relation (lenient strings)"));
    }

    #[test]
    fn eval_json_appends_the_relation_views_to_the_report() {
        let mut ev = evaluator().with_relation_cutoffs(0.6, &[0.3]);
        let p = pred(
            &[sp(0, 1), sp(5, 6), sp(10, 12)],
            &[(&[0, 1], 0), (&[2], 1)],
            &[(0, 1, 0)],
        );
        ev.add(&gold_doc(), &p).unwrap();
        let scores = ev.finish(1.0);
        let text = serde_json::to_string(&scores.eval_report()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let report = serde_json::to_value(scores.report()).unwrap();
        let old = report.as_object().unwrap();
        // The report's fields unchanged and in their order, then the new sections.
        assert_eq!(v.as_object().unwrap().len(), old.len() + 3);
        for (key, value) in old {
            assert_eq!(&v[key], value, "{key}");
        }
        let positions: Vec<usize> = [
            "\"mention\"",
            "\"coreference\"",
            "\"entity\"",
            "\"relation\"",
            "\"gold_input\"",
            "\"documents\"",
            "\"seconds\"",
            "\"relation_lenient\"",
            "\"relation_per_type\"",
            "\"relation_pr_curve\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let prf = |o: &serde_json::Value| ["precision", "recall", "f1"].map(|k| o[k].is_number());
        assert_eq!(prf(&v["relation_lenient"]), [true; 3]);
        let born_in = &v["relation_per_type"]["born_in"];
        assert_eq!(prf(born_in), [true; 3]);
        assert_eq!(
            (born_in["support"].as_u64(), born_in["predicted"].as_u64()),
            (Some(1), Some(1))
        );
        let curve = v["relation_pr_curve"].as_array().unwrap();
        let cutoffs: Vec<f64> = curve
            .iter()
            .map(|c| c["cutoff"].as_f64().unwrap())
            .collect();
        assert_eq!(cutoffs, [0.3, 0.6]);
        assert_eq!(prf(&curve[0]), [true; 3]);
        assert_eq!(curve[0]["predicted"], 1);
    }
}
