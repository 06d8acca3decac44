//! The joint model on a tiny random encoder: predictions are well formed, batching does not
//! change scores, gold inputs are honoured, the loss is finite and reaches every parameter,
//! huge documents and distances cannot crash it, and a model folder round-trips.

use jerex::corpus::{Annotations, Document, GoldEntity, GoldRelation, Span};
use jerex::device::Precision;
use jerex::model::{
    DocPrediction, GoldInput, JerexModel, ModelConfig, PreparedDoc, RelationHead, Thresholds,
};
use jerex::testing::{
    check_well_formed, require_tokenizer, synthetic_document, synthetic_prepared, window, TinyModel,
};
use jerex::train::sample::{sample_document, SamplingConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind};

const VOCAB: i64 = 64;

/// Three entity and four relation types; short windows, so documents are encoded in several
/// overlapping pieces.
fn build_model(head: RelationHead) -> (nn::VarStore, JerexModel) {
    TinyModel::new(VOCAB)
        .relation_head(head)
        .window(window(32, 8))
        .seed(11)
        .build()
}

/// One to three pieces per word, ids derived from the word so equal words get equal pieces.
fn prepare(doc: Document) -> PreparedDoc {
    synthetic_prepared(doc, VOCAB)
}

fn span(start: usize, end: usize, sent: usize) -> Span {
    Span { start, end, sent }
}

fn entity(mentions: Vec<Span>, ty: &str) -> GoldEntity {
    GoldEntity {
        mentions,
        entity_type: ty.into(),
    }
}

fn relation(head: usize, tail: usize, ty: &str) -> GoldRelation {
    GoldRelation {
        head,
        tail,
        relation: ty.into(),
        evidence: vec![],
    }
}

/// Three sentences of 8 words with three entities and two relations.
fn labelled(id: &str, seed: usize) -> Document {
    let mut doc = synthetic_document(id, &[8, 8, 8], seed);
    doc.gold = Some(Annotations {
        entities: vec![
            entity(vec![span(0, 2, 0), span(9, 10, 1), span(17, 19, 2)], "E0"),
            entity(vec![span(4, 5, 0), span(20, 23, 2)], "E2"),
            entity(vec![span(12, 14, 1), span(12, 14, 1)], "E1"),
        ],
        relations: Some(vec![
            relation(0, 1, "R3"),
            relation(0, 1, "R0"),
            relation(2, 0, "R1"),
        ]),
    });
    doc
}

#[test]
fn predictions_are_well_formed() {
    for head in [RelationHead::Mrc, RelationHead::Grc] {
        let (_vs, model) = build_model(head);
        let docs = vec![
            prepare(synthetic_document("a", &[8, 8, 8], 1)),
            prepare(synthetic_document("empty", &[], 2)),
            prepare(synthetic_document("b", &[1, 12], 3)),
        ];
        // Permissive thresholds so every stage has work: all candidates become mentions.
        let loose = Thresholds {
            mention: 0.0,
            coref: 0.5,
            relation: 0.0,
        };
        let preds = model.predict(&docs, &loose).unwrap();
        assert_eq!(preds.len(), 3);
        for (p, d) in preds.iter().zip(&docs) {
            check_well_formed(p, d.doc.word_count(), 3, 4);
            assert_eq!(p.mentions.len(), d.candidate_count());
            let n = p.entities.len();
            assert_eq!(p.relations.len(), n * n.saturating_sub(1) * 4);
        }
        assert!(preds[1].mentions.is_empty() && preds[1].entities.is_empty());
        // Batches with nothing to encode are fine too.
        let empty = vec![
            prepare(synthetic_document("e1", &[], 0)),
            prepare(synthetic_document("e2", &[0], 0)),
        ];
        let nothing = model.predict(&empty, &loose).unwrap();
        assert!(nothing.iter().all(|p| *p == DocPrediction::default()));
        assert!(model.predict(&[], &loose).unwrap().is_empty());
        assert!(preds[0].entities.len() > 1);
        for (p, d) in model
            .predict(&docs, &Thresholds::default())
            .unwrap()
            .iter()
            .zip(&docs)
        {
            check_well_formed(p, d.doc.word_count(), 3, 4);
        }
    }
}

#[test]
fn batching_does_not_change_scores() {
    let (_vs, model) = build_model(RelationHead::Mrc);
    let all = Thresholds {
        mention: 0.0,
        coref: 0.5,
        relation: 0.5,
    };
    let docs = vec![
        prepare(synthetic_document("a", &[8, 8, 8], 1)),
        prepare(synthetic_document("b", &[5, 30], 4)),
    ];
    let together = model.predict(&docs, &all).unwrap();
    for (d, p) in docs.iter().zip(&together) {
        let alone = model.predict(std::slice::from_ref(d), &all).unwrap();
        assert_eq!(alone[0].mentions.len(), p.mentions.len());
        for (x, y) in alone[0].mentions.iter().zip(&p.mentions) {
            assert_eq!(x.span, y.span);
            assert!((x.score - y.score).abs() < 1e-5);
        }
    }
}

#[test]
fn gold_inputs_are_honoured() {
    let (_vs, model) = build_model(RelationHead::Mrc);
    let docs = vec![prepare(labelled("a", 1)), prepare(labelled("b", 5))];
    let thr = Thresholds::default();

    let p = model
        .predict_from(&docs, &thr, GoldInput::Mentions)
        .unwrap();
    let spans: Vec<(usize, usize)> = p[0]
        .mentions
        .iter()
        .map(|m| (m.span.start, m.span.end))
        .collect();
    assert_eq!(
        spans,
        vec![(0, 2), (4, 5), (9, 10), (12, 14), (17, 19), (20, 23)]
    );
    assert!(p[0].mentions.iter().all(|m| m.score == 1.0));
    check_well_formed(&p[0], docs[0].doc.word_count(), 3, 4);

    let p = model
        .predict_from(&docs, &thr, GoldInput::Clusters)
        .unwrap();
    let clusters: Vec<Vec<usize>> = p[0].entities.iter().map(|e| e.mentions.clone()).collect();
    assert_eq!(clusters, vec![vec![0, 2, 4], vec![1, 5], vec![3]]);

    let loose = Thresholds {
        relation: 0.0,
        ..thr
    };
    let p = model
        .predict_from(&docs, &loose, GoldInput::Entities)
        .unwrap();
    let types: Vec<usize> = p[0].entities.iter().map(|e| e.entity_type).collect();
    assert_eq!(types, vec![0, 2, 1]);
    assert!(p[0].entities.iter().all(|e| e.type_score == 1.0));
    assert_eq!(p[0].relations.len(), 6 * 4);
    check_well_formed(&p[0], docs[0].doc.word_count(), 3, 4);

    let unlabelled = vec![prepare(synthetic_document("u", &[4], 1))];
    assert!(model
        .predict_from(&unlabelled, &thr, GoldInput::Mentions)
        .is_err());
}

fn samples(docs: &[PreparedDoc], cfg: &ModelConfig) -> Vec<jerex::train::sample::DocSample> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    docs.iter()
        .map(|d| sample_document(&d.doc, cfg, &SamplingConfig::for_model(cfg), &mut rng).unwrap())
        .collect()
}

#[test]
fn loss_is_finite_and_reaches_every_parameter() {
    for head in [RelationHead::Mrc, RelationHead::Grc] {
        let (vs, model) = build_model(head);
        let docs = vec![prepare(labelled("a", 1)), prepare(labelled("b", 5))];
        let samples = samples(&docs, model.config());
        let losses = model.loss(&docs, &samples).unwrap();
        let value = |t: &tch::Tensor| t.double_value(&[]);
        for (name, t) in [
            ("mention", &losses.mention),
            ("coref", &losses.coref),
            ("entity", &losses.entity),
            ("relation", &losses.relation),
        ] {
            assert!(
                value(t).is_finite() && value(t) > 0.0,
                "{name} = {}",
                value(t)
            );
        }
        let expected = value(&losses.mention)
            + value(&losses.coref)
            + 0.25 * value(&losses.entity)
            + value(&losses.relation);
        assert!((value(&losses.total) - expected).abs() < 1e-4);
        losses.total.backward();
        for (name, var) in vs.variables() {
            let grad = var.grad();
            assert!(grad.defined(), "{name}: no gradient");
            assert!(
                grad.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name}: zero gradient"
            );
        }
    }
}

#[test]
fn terms_without_samples_are_zero() {
    let (_vs, model) = build_model(RelationHead::Mrc);
    let mut doc = synthetic_document("a", &[6, 6], 1);
    doc.gold = Some(Annotations {
        entities: vec![],
        relations: None,
    });
    let docs = vec![prepare(doc)];
    let samples = samples(&docs, model.config());
    let losses = model.loss(&docs, &samples).unwrap();
    assert!(losses.mention.double_value(&[]) > 0.0);
    for t in [&losses.coref, &losses.entity, &losses.relation] {
        assert_eq!(t.double_value(&[]), 0.0);
    }
    assert_eq!(
        losses.total.double_value(&[]),
        losses.mention.double_value(&[])
    );
    // A sample that does not fit its document is an error, not a panic.
    let mut bad = samples[0].clone();
    bad.coref_pairs.push((0, 99));
    bad.coref_labels.push(1.0);
    assert!(model.loss(&docs, &[bad]).is_err());
}

/// 2,000 words (several thousand pieces, ~170 encoder windows), a 35-word gold mention of long
/// words (size and edit distance past their tables), and entities 79 sentences apart (token
/// and sentence distances past their tables).
#[test]
fn long_documents_and_huge_distances_do_not_crash() {
    // One intra-op thread: the evidence comparisons below need equal rounding in both runs, and
    // with other tests busy in parallel, OpenMP hands this thread's GEMMs a varying number of
    // threads (the full suite once picked the other of two near-tied evidence pairs).
    tch::set_num_threads(1);
    let (_vs, model) = build_model(RelationHead::Mrc);
    let mut lengths = vec![25; 79];
    lengths.insert(1, 25);
    lengths[0] = 40;
    let mut doc = synthetic_document("long", &lengths, 1);
    for w in &mut doc.sentences[0][2..37] {
        w.text = "abcdefghijklmnop".into();
    }
    assert_eq!(doc.word_count(), 40 + 25 * 79);
    let last = doc.word_count();
    doc.gold = Some(Annotations {
        entities: vec![
            entity(vec![span(2, 37, 0), span(last - 3, last - 1, 79)], "E0"),
            entity(vec![span(0, 1, 0), span(last - 1, last, 79)], "E1"),
            entity(vec![span(40, 41, 1)], "E2"),
        ],
        relations: Some(vec![relation(0, 1, "R2"), relation(1, 2, "R0")]),
    });
    let docs = vec![prepare(doc)];
    assert!(docs[0].piece_count() > 3000);
    let samples = samples(&docs, model.config());
    let losses = model.loss(&docs, &samples).unwrap();
    assert!(losses.total.double_value(&[]).is_finite());
    losses.total.backward();

    let loose = Thresholds {
        relation: 0.0,
        ..Thresholds::default()
    };
    let p = model
        .predict_from(&docs, &loose, GoldInput::Entities)
        .unwrap();
    assert_eq!(p[0].relations.len(), 6 * 4);
    check_well_formed(&p[0], docs[0].doc.word_count(), 3, 4);
    let p = model.predict(&docs, &Thresholds::default()).unwrap();
    check_well_formed(&p[0], docs[0].doc.word_count(), 3, 4);
    // A small chunk budget gives the same predictions as the default one.
    let (_vs2, small) = build_model(RelationHead::Mrc);
    let small = small.with_chunk_elements(32 * 7);
    let q = small
        .predict_from(&docs, &loose, GoldInput::Entities)
        .unwrap();
    let r = model
        .predict_from(&docs, &loose, GoldInput::Entities)
        .unwrap();
    assert_same_relations(&q[0].relations, &r[0].relations);
    // End to end with every threshold at 0: many entities, so the small budget scores the
    // entity pairs in many relation groups; the result is the same.
    let zero = Thresholds {
        mention: 0.0,
        coref: 1.0,
        relation: 0.0,
    };
    let short = vec![prepare(synthetic_document("short", &[7, 5], 1))];
    let q = small.predict(&short, &zero).unwrap();
    let r = model.predict(&short, &zero).unwrap();
    assert!(q[0].entities.len() > 20, "{} entities", q[0].entities.len());
    assert_same_relations(&q[0].relations, &r[0].relations);
}

fn assert_same_relations(a: &[jerex::model::PredRelation], b: &[jerex::model::PredRelation]) {
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(b) {
        assert_eq!(
            (a.head, a.tail, a.relation, a.evidence),
            (b.head, b.tail, b.relation, b.evidence)
        );
        assert!((a.score - b.score).abs() < 1e-5);
    }
}

#[test]
fn model_folder_round_trips() {
    let Some(tokenizer_json) = require_tokenizer() else {
        return;
    };
    let tiny = TinyModel::with_tokenizer(&tokenizer_json)
        .relation_head(RelationHead::Mrc)
        .window(window(32, 8))
        .seed(3);
    let cfg = tiny.config();
    let (vs, model) = tiny.build();
    let dir = tempfile::tempdir().unwrap();
    JerexModel::save(dir.path(), &vs, &cfg, &tokenizer_json).unwrap();

    let loaded = JerexModel::load(dir.path(), Device::Cpu, Precision::Fp32).unwrap();
    assert_eq!(loaded.config, cfg);
    let doc = PreparedDoc::new(synthetic_document("a", &[8, 8], 2), &loaded.tokenizer, 10);
    let thr = Thresholds {
        mention: 0.0,
        coref: 0.5,
        relation: 0.5,
    };
    let before = model.predict(std::slice::from_ref(&doc), &thr).unwrap();
    let after = loaded
        .model
        .predict(std::slice::from_ref(&doc), &thr)
        .unwrap();
    assert_eq!(before, after);
    let names: Vec<String> = loaded.vs.variables().into_keys().collect();
    for key in [
        "bert.embeddings.word_embeddings.weight",
        "mention_localization.linear.weight",
        "coreference_resolution.coref_linear.weight",
        "entity_classification.entity_classifier.weight",
        "relation_classification.pair_linear.weight",
    ] {
        assert!(names.contains(&key.to_string()), "{key}");
    }
    let pair = loaded.vs.variables()["relation_classification.pair_linear.weight"].size();
    assert_eq!(pair, [32, 5 * 32 + 2 * 25]);
}
