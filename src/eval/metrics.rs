//! Strict end-to-end metrics (reference 5.1).
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

use std::collections::HashSet;
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

    /// A readable table (for stderr).
    pub fn table(&self) -> String {
        let rows: [(&str, &Counts); 8] = [
            ("mention", &self.mention),
            ("coreference", &self.coreference),
            ("entity", &self.entity),
            ("relation", &self.relation),
            ("relation (untyped args)", &self.relation_untyped),
            ("gold mentions → coref", &self.gold_input.coreference),
            ("gold clusters → entity", &self.gold_input.entity),
            ("gold entities → relation", &self.gold_input.relation),
        ];
        let mut out = format!(
            "{:<26}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}\n",
            "task", "P", "R", "F1", "TP", "FP", "FN"
        );
        for (name, c) in rows {
            out.push_str(&format!(
                "{:<26}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}{:>9}\n",
                name,
                c.precision(),
                c.recall(),
                c.f1(),
                c.tp,
                c.fp,
                c.fn_
            ));
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
    /// `(head, tail, relation key)` with entity indices; `None` = no relation labels.
    relations: Option<Vec<(usize, usize, &'a str)>>,
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
                        Ok((r.head, r.tail, r.relation.as_str()))
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
                Ok((r.head, r.tail, ty.as_str()))
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
        let arg = |i: usize| (&self.entities[i].0, self.entities[i].1);
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r)| (arg(h), arg(t), r))
            .collect()
    }

    /// Relation items with untyped arguments (`rel`).
    fn untyped_relations(&self) -> HashSet<(&Cluster, &Cluster, &str)> {
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r)| (&self.entities[h].0, &self.entities[t].0, r))
            .collect()
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

    /// Scores one document's end-to-end prediction against its gold annotations.
    pub fn add(&mut self, doc: &Document, pred: &DocPrediction) -> Result<()> {
        let gold = Side::gold(doc, gold_of(doc)?)?;
        let pred = Side::predicted(doc, pred, &self.types)?;
        let s = &mut self.scores;
        s.mention.add_sets(&gold.mentions, &pred.mentions);
        s.coreference.add_sets(&gold.clusters(), &pred.clusters());
        s.entity
            .add_sets(&gold.typed_entities(), &pred.typed_entities());
        if gold.relations.is_some() {
            s.relation
                .add_sets(&gold.typed_relations(), &pred.typed_relations());
            s.relation_untyped
                .add_sets(&gold.untyped_relations(), &pred.untyped_relations());
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
    const RELATION_TYPES: [&str; 2] = ["born_in", "lives_in"];

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

    /// A prediction: mention spans, entities as (mention indices, type index), relations as
    /// (head, tail, relation index).
    fn pred(
        mentions: &[Span],
        entities: &[(&[usize], usize)],
        relations: &[(usize, usize, usize)],
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
                .map(|&(head, tail, relation)| PredRelation {
                    head,
                    tail,
                    relation,
                    score: 1.0,
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
        let mut ev = evaluator();
        let g = doc(vec![(vec![sp(0, 1)], "PER"), (vec![sp(3, 4)], "LOC")], None);
        let p = pred(&[sp(0, 1), sp(3, 4)], &[(&[0], 0), (&[1], 1)], &[(0, 1, 0)]);
        ev.add(&g, &p).unwrap();
        let s = ev.scores();
        assert_eq!(s.entity, counts(2, 0, 0));
        assert_eq!(s.relation, Counts::default());
        assert_eq!(s.relation_untyped, Counts::default());
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
    }
}
