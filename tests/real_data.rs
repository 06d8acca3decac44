//! The sampler and the strict metrics on the real labelled files (read from `../shared/data`
//! at run time): every document samples within its caps, and gold scored against itself is 100
//! on every task, so the metric's item construction (duplicates, span sets, types) is
//! consistent on real annotations.

use std::time::Instant;

use jerex::corpus::docred::{read_docred, relation_names};
use jerex::corpus::{Document, Span};
use jerex::eval::Evaluator;
use jerex::model::{DocPrediction, PredEntity, PredMention, PredRelation};
use jerex::testing::{require_shared, TinyModel};
use jerex::train::data::{collect_types, sample_rng};
use jerex::train::{sample_document, SamplingConfig};

/// The gold annotations written as a prediction.
fn gold_as_prediction(
    doc: &Document,
    entity_keys: &[String],
    relation_keys: &[String],
) -> DocPrediction {
    let gold = doc.gold.as_ref().unwrap();
    let mut spans: Vec<Span> = gold
        .entities
        .iter()
        .flat_map(|e| e.mentions.clone())
        .collect();
    spans.sort_by_key(|s| (s.start, s.end));
    spans.dedup_by_key(|s| (s.start, s.end));
    let index = |m: &Span| {
        spans
            .iter()
            .position(|s| (s.start, s.end) == (m.start, m.end))
            .unwrap()
    };
    DocPrediction {
        mentions: spans
            .iter()
            .map(|&span| PredMention { span, score: 1.0 })
            .collect(),
        entities: gold
            .entities
            .iter()
            .map(|e| PredEntity {
                mentions: e.mentions.iter().map(index).collect(),
                entity_type: entity_keys
                    .iter()
                    .position(|k| *k == e.entity_type)
                    .unwrap(),
                type_score: 1.0,
                coref_score: 1.0,
            })
            .collect(),
        relations: gold
            .relations
            .iter()
            .flatten()
            .map(|r| PredRelation {
                head: r.head,
                tail: r.tail,
                relation: relation_keys.iter().position(|k| *k == r.relation).unwrap(),
                score: 1.0,
                evidence: (0, 0),
            })
            .collect(),
    }
}

#[test]
fn gold_scores_100_against_itself_and_every_document_samples() {
    let Some(path) = require_shared("redocred/dev_revised.json") else {
        return;
    };
    let Some(rel_info) = require_shared("docred/rel_info.json") else {
        return;
    };
    let docs = read_docred(&path).unwrap();
    let refs: Vec<&Document> = docs.iter().collect();
    let names = relation_names(&rel_info).unwrap();
    let (entity_types, relation_types) = collect_types(&refs, Some(&names));
    let keys = |ts: &[jerex::model::TypeInfo]| ts.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
    let (ek, rk) = (keys(&entity_types), keys(&relation_types));

    let mut ev = Evaluator::with_types(ek.clone(), rk.clone());
    for doc in &docs {
        ev.add(doc, &gold_as_prediction(doc, &ek, &rk)).unwrap();
    }
    let s = ev.finish(0.0);
    for c in [
        s.mention,
        s.coreference,
        s.entity,
        s.relation,
        s.relation_untyped,
        s.relation_lenient,
    ] {
        assert_eq!((c.fp, c.fn_), (0, 0));
        assert!(c.tp > 0);
        assert_eq!(c.f1(), 100.0);
    }

    let config = TinyModel::new(10)
        .entity_types(entity_types)
        .relation_types(relation_types)
        .window(Default::default())
        .config();
    let sampling = SamplingConfig::for_model(&config);
    let start = Instant::now();
    for (i, doc) in docs.iter().enumerate() {
        let sample = sample_document(doc, &config, &sampling, &mut sample_rng(0, 0, i)).unwrap();
        let gold = doc.gold.as_ref().unwrap();
        let gold_mentions: usize = gold.entities.iter().map(|e| e.mentions.len()).sum();
        assert!(sample.spans.len() <= gold_mentions + sampling.neg_mentions);
        assert!(
            sample.spans.len() > gold_mentions,
            "{}: no negative span",
            doc.id
        );
        let negative_coref = sample.coref_labels.iter().filter(|&&l| l == 0.0).count();
        assert!(negative_coref <= sampling.neg_coref);
        assert_eq!(sample.entities.len(), gold.entities.len());
        assert!(
            !sample.rel_pairs.is_empty(),
            "{}: no relation sample",
            doc.id
        );
    }
    // Sampling is host-side bookkeeping: far below the encoder's cost per document.
    let per_doc = start.elapsed().as_secs_f64() / docs.len() as f64;
    assert!(per_doc < 0.05, "{per_doc:.4} s per document");
}
