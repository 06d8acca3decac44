use super::*;
use crate::corpus::{GoldEntity, GoldRelation, Span, Word};
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
fn doc(entities: Vec<(Vec<Span>, &str)>, relations: Option<Vec<(usize, usize, &str)>>) -> Document {
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
        assert!(o.contains_key("precision") && o.contains_key("recall") && o.contains_key("f1"));
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
