//! Training samples: what one document contributes to one training step. Drawn anew every
//! epoch from the gold annotations (paper / reference section 2).
//!
//! The sample holds only spans and indices; the model derives pooled representations, mention
//! pairs, context ranges and distances itself with the same code it uses at inference.

use std::collections::{BTreeMap, HashSet};

use rand::seq::index;
use rand::Rng;

use crate::corpus::{Annotations, Document, Span};
use crate::error::{Error, Result};
use crate::model::ModelConfig;

pub use crate::model::DocSample;

/// How many negatives a document contributes (reference section 6 defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// Negative spans per document.
    pub neg_mentions: usize,
    /// Share of the negative spans drawn from proper sub-spans of gold mentions.
    pub inside_ratio: f64,
    /// Negative coreference pairs (mentions of different entities) per document.
    pub neg_coref: usize,
    /// Negative (unrelated) ordered entity pairs per document.
    pub neg_relations: usize,
    /// Negative spans have at most this many words (the inference candidate limit).
    pub max_span_words: usize,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            neg_mentions: 200,
            inside_ratio: 0.5,
            neg_coref: 200,
            neg_relations: 200,
            max_span_words: 10,
        }
    }
}

impl SamplingConfig {
    /// The defaults, with the candidate span limit of the model.
    pub fn for_model(config: &ModelConfig) -> Self {
        SamplingConfig {
            max_span_words: config.heads.max_span_words,
            ..SamplingConfig::default()
        }
    }

    /// For a document whose relation labels are incomplete (DocRED's own training annotations
    /// miss many true facts): an unlabelled pair may well be related, so none is drawn as a
    /// relation negative; its labelled pairs still train the relation head.
    pub fn partial(self) -> Self {
        SamplingConfig {
            neg_relations: 0,
            ..self
        }
    }
}

/// Draws one training sample from a labelled document. Type keys are resolved through
/// `config`; a type the model does not know, an empty entity, a mention outside the document or
/// a relation naming a missing entity is an error naming the document.
pub fn sample_document(
    doc: &Document,
    config: &ModelConfig,
    sampling: &SamplingConfig,
    rng: &mut impl Rng,
) -> Result<DocSample> {
    let bad = |message: String| Error::BadDocument {
        doc: doc.id.clone(),
        message,
    };
    let gold = doc
        .gold
        .as_ref()
        .ok_or_else(|| bad("has no gold annotations to train on".into()))?;
    let words = doc.word_count();
    for (e, entity) in gold.entities.iter().enumerate() {
        if entity.mentions.is_empty() {
            return Err(bad(format!("entity {e} has no mention")));
        }
        if let Some(m) = entity
            .mentions
            .iter()
            .find(|m| m.is_empty() || m.end > words)
        {
            return Err(bad(format!(
                "entity {e}: mention [{}, {}) is empty or beyond the {words} words",
                m.start, m.end
            )));
        }
    }

    let mut sample = DocSample::default();
    sample_mentions(doc, gold, sampling, rng, &mut sample);
    sample_coreference(gold, sampling, rng, &mut sample);
    sample.entity_types = gold
        .entities
        .iter()
        .map(|e| {
            config
                .entity_index(&e.entity_type)
                .ok_or_else(|| bad(format!("unknown entity type '{}'", e.entity_type)))
        })
        .collect::<Result<_>>()?;
    if let Some(relations) = &gold.relations {
        let n_types = config.relation_types.len();
        let mut positives: BTreeMap<(usize, usize), Vec<f32>> = BTreeMap::new();
        for r in relations {
            let n = gold.entities.len();
            if r.head >= n || r.tail >= n {
                return Err(bad(format!(
                    "relation ({}, {}, {}) refers to a missing entity (there are {n})",
                    r.head, r.tail, r.relation
                )));
            }
            let ty = config
                .relation_index(&r.relation)
                .ok_or_else(|| bad(format!("unknown relation type '{}'", r.relation)))?;
            // A relation of an entity with itself can never be predicted (candidates are
            // pairs of distinct entities), so it is not trained on.
            if r.head != r.tail {
                positives
                    .entry((r.head, r.tail))
                    .or_insert_with(|| vec![0.0; n_types])[ty] = 1.0;
            }
        }
        sample_relations(
            gold.entities.len(),
            positives,
            n_types,
            sampling,
            rng,
            &mut sample,
        );
    }
    Ok(sample)
}

/// Gold mentions (label 1), then negatives: up to `inside_ratio` of them proper sub-spans of a
/// gold mention, the rest any other span of at most `max_span_words` words inside one sentence.
/// Also fills the deduplicated mention list and the entities' indices into it.
fn sample_mentions(
    doc: &Document,
    gold: &Annotations,
    sampling: &SamplingConfig,
    rng: &mut impl Rng,
    sample: &mut DocSample,
) {
    let words = doc.word_count();
    let mut index_of: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for entity in &gold.entities {
        let mut members = Vec::with_capacity(entity.mentions.len());
        for &m in &entity.mentions {
            sample.spans.push(m);
            sample.span_labels.push(1.0);
            let i = *index_of.entry((m.start, m.end)).or_insert_with(|| {
                sample.mentions.push(m);
                sample.mentions.len() - 1
            });
            if !members.contains(&i) {
                members.push(i);
            }
        }
        sample.entities.push(members);
    }

    // reach[s] = the furthest end of a gold mention starting at or before word s, so [s, e) lies
    // inside some gold mention iff reach[s] >= e: one pass instead of a scan over the gold.
    let mut reach = vec![0usize; words + 1];
    for m in sample.mentions.iter() {
        reach[m.start] = reach[m.start].max(m.end);
    }
    for s in 1..reach.len() {
        reach[s] = reach[s].max(reach[s - 1]);
    }
    let (mut inside, mut other) = (Vec::new(), Vec::new());
    let starts = doc.sentence_starts();
    for (sent, w) in starts.windows(2).enumerate() {
        let (first, end) = (w[0], w[1]);
        for size in 1..=sampling.max_span_words.min(end - first) {
            for (start, &furthest) in reach.iter().enumerate().take(end - size + 1).skip(first) {
                let span = Span {
                    start,
                    end: start + size,
                    sent,
                };
                if index_of.contains_key(&(span.start, span.end)) {
                    continue;
                }
                if furthest >= span.end {
                    inside.push(span);
                } else {
                    other.push(span);
                }
            }
        }
    }
    let max_inside = (sampling.neg_mentions as f64 * sampling.inside_ratio).floor() as usize;
    let k_in = inside.len().min(max_inside);
    let k_out = other.len().min(sampling.neg_mentions - k_in);
    for pool_and_k in [(&inside, k_in), (&other, k_out)] {
        let (pool, k) = pool_and_k;
        for i in index::sample(rng, pool.len(), k) {
            sample.spans.push(pool[i]);
            sample.span_labels.push(0.0);
        }
    }
}

/// Pairs of mentions of one entity (label 1), then up to `neg_coref` pairs of mentions that
/// share no entity (label 0); each pair in `(start, end)` order.
fn sample_coreference(
    gold: &Annotations,
    sampling: &SamplingConfig,
    rng: &mut impl Rng,
    sample: &mut DocSample,
) {
    let ms = &sample.mentions;
    let ordered = |a: usize, b: usize| {
        if (ms[a].start, ms[a].end) <= (ms[b].start, ms[b].end) {
            (a, b)
        } else {
            (b, a)
        }
    };
    let mut positive: HashSet<(usize, usize)> = HashSet::new();
    for members in &sample.entities {
        for (x, &a) in members.iter().enumerate() {
            for &b in &members[x + 1..] {
                let pair = ordered(a, b);
                if positive.insert(pair) {
                    sample.coref_pairs.push(pair);
                    sample.coref_labels.push(1.0);
                }
            }
        }
    }
    debug_assert_eq!(gold.entities.len(), sample.entities.len());
    let mut negatives = Vec::new();
    for a in 0..ms.len() {
        for b in a + 1..ms.len() {
            let pair = ordered(a, b);
            if !positive.contains(&pair) {
                negatives.push(pair);
            }
        }
    }
    let k = negatives.len().min(sampling.neg_coref);
    for i in index::sample(rng, negatives.len(), k) {
        sample.coref_pairs.push(negatives[i]);
        sample.coref_labels.push(0.0);
    }
}

/// Labelled ordered entity pairs (multi-hot), then up to `neg_relations` unlabelled ordered
/// pairs of distinct gold entities (all-zero targets).
fn sample_relations(
    entities: usize,
    positives: BTreeMap<(usize, usize), Vec<f32>>,
    n_types: usize,
    sampling: &SamplingConfig,
    rng: &mut impl Rng,
    sample: &mut DocSample,
) {
    let mut negatives = Vec::new();
    for h in 0..entities {
        for t in 0..entities {
            if h != t && !positives.contains_key(&(h, t)) {
                negatives.push((h, t));
            }
        }
    }
    for (pair, labels) in positives {
        sample.rel_pairs.push(pair);
        sample.rel_labels.extend(labels);
    }
    let k = negatives.len().min(sampling.neg_relations);
    for i in index::sample(rng, negatives.len(), k) {
        sample.rel_pairs.push(negatives[i]);
        sample.rel_labels.extend(std::iter::repeat_n(0.0, n_types));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{GoldEntity, GoldRelation, Word};
    use crate::encoder::BertConfig;
    use crate::model::{HeadConfig, Thresholds, TypeInfo, WindowConfig};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn config() -> ModelConfig {
        let types = |ks: &[&str]| {
            ks.iter()
                .map(|k| TypeInfo {
                    key: k.to_string(),
                    name: k.to_string(),
                })
                .collect()
        };
        ModelConfig {
            entity_types: types(&["A", "B", "C"]),
            relation_types: types(&["r0", "r1", "r2", "r3"]),
            thresholds: Thresholds::default(),
            heads: HeadConfig::default(),
            window: WindowConfig::default(),
            encoder: BertConfig::tiny(100),
            training: serde_json::Value::Null,
        }
    }

    /// Mentions as (sentence, start in sentence, length), and a type index.
    type EntitySpec = (Vec<(usize, usize, usize)>, usize);

    /// A synthetic document from sentence lengths, entities as (sentence, start in sentence,
    /// length) lists with a type index, and relations as (head, tail, type index).
    fn make_doc(
        sentences: &[usize],
        entities: &[EntitySpec],
        relations: Option<&[(usize, usize, usize)]>,
    ) -> Document {
        let cfg = config();
        let mut starts = vec![0];
        for &n in sentences {
            starts.push(starts.last().unwrap() + n);
        }
        Document {
            id: "synthetic".into(),
            text: None,
            sentences: sentences
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|i| Word {
                            text: format!("w{}", i % 7),
                            chars: None,
                        })
                        .collect()
                })
                .collect(),
            gold: Some(Annotations {
                entities: entities
                    .iter()
                    .map(|(ms, t)| GoldEntity {
                        mentions: ms
                            .iter()
                            .map(|&(sent, s, len)| Span {
                                start: starts[sent] + s,
                                end: starts[sent] + s + len,
                                sent,
                            })
                            .collect(),
                        entity_type: cfg.entity_types[*t].key.clone(),
                    })
                    .collect(),
                relations: relations.map(|rs| {
                    rs.iter()
                        .map(|&(head, tail, r)| GoldRelation {
                            head,
                            tail,
                            relation: cfg.relation_types[r].key.clone(),
                            evidence: vec![],
                        })
                        .collect()
                }),
            }),
        }
    }

    fn draw(doc: &Document, sampling: &SamplingConfig, seed: u64) -> DocSample {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        sample_document(doc, &config(), sampling, &mut rng).unwrap()
    }

    fn small_doc() -> Document {
        make_doc(
            &[8, 6],
            &[
                // Entity 0: a 3-word mention, a repeat of it, and a 1-word mention.
                (vec![(0, 1, 3), (0, 1, 3), (1, 0, 1)], 0),
                (vec![(0, 6, 2)], 1),
                (vec![(1, 3, 2)], 2),
            ],
            Some(&[(0, 1, 2), (0, 1, 3), (2, 0, 1), (1, 1, 0)]),
        )
    }

    #[test]
    fn small_document_sample_is_exact_where_it_is_determined() {
        let s = draw(&small_doc(), &SamplingConfig::default(), 1);
        // Gold spans with duplicates first, then negatives.
        assert_eq!(&s.span_labels[..5], &[1.0; 5]);
        assert!(s.span_labels[5..].iter().all(|&l| l == 0.0));
        assert_eq!(s.mentions.len(), 4);
        assert_eq!(s.entities, vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(s.entity_types, vec![0, 1, 2]);
        // Proper sub-spans of gold mentions, all drawn first (the inside cap is 100): 5 of
        // [1, 4), 2 of [6, 8) and 2 of [11, 13).
        let mut inside: Vec<(usize, usize)> =
            s.spans[5..14].iter().map(|sp| (sp.start, sp.end)).collect();
        inside.sort_unstable();
        let expected = [
            (1, 2),
            (1, 3),
            (2, 3),
            (2, 4),
            (3, 4),
            (6, 7),
            (7, 8),
            (11, 12),
            (12, 13),
        ];
        assert_eq!(inside, expected);
        // Every span of <= 10 words inside one sentence: 36 + 21, minus the 4 gold spans.
        assert_eq!(s.spans.len() - 5, 36 + 21 - 4);
        // One positive coreference pair, and all 5 cross-entity pairs as negatives.
        assert_eq!(s.coref_pairs[0], (0, 1));
        assert_eq!(s.coref_labels, vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // Positives (0,1) with r2+r3 and (2,0) with r1; (1,1) is dropped; 4 negatives.
        assert_eq!(&s.rel_pairs[..2], &[(0, 1), (2, 0)]);
        assert_eq!(
            &s.rel_labels[..8],
            &[0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(s.rel_pairs.len(), 6);
        assert!(s.rel_labels[8..].iter().all(|&l| l == 0.0));
    }

    #[test]
    fn a_partially_labelled_document_gives_its_positives_and_no_relation_negatives() {
        let full = draw(&small_doc(), &SamplingConfig::default(), 1);
        let s = draw(&small_doc(), &SamplingConfig::default().partial(), 1);
        assert_eq!(s.rel_pairs, [(0, 1), (2, 0)]);
        assert_eq!(s.rel_labels, full.rel_labels[..8]);
        // The other heads sample as for a fully labelled document.
        assert_eq!((&s.spans, &s.span_labels), (&full.spans, &full.span_labels));
        assert_eq!(
            (&s.coref_pairs, &s.coref_labels),
            (&full.coref_pairs, &full.coref_labels)
        );
    }

    #[test]
    fn same_seed_same_sample_other_seed_other_negatives() {
        let doc = make_doc(
            &[30, 30, 30],
            &[(vec![(0, 0, 2), (1, 4, 3)], 0), (vec![(2, 5, 1)], 1)],
            Some(&[]),
        );
        let sampling = SamplingConfig::default();
        assert_eq!(draw(&doc, &sampling, 7), draw(&doc, &sampling, 7));
        assert_ne!(
            draw(&doc, &sampling, 7).spans,
            draw(&doc, &sampling, 8).spans
        );
    }

    #[test]
    fn documents_without_relation_labels_get_no_relation_samples() {
        let doc = make_doc(&[5], &[(vec![(0, 0, 1)], 0), (vec![(0, 2, 1)], 1)], None);
        let s = draw(&doc, &SamplingConfig::default(), 3);
        assert!(s.rel_pairs.is_empty() && s.rel_labels.is_empty());
        let labelled = make_doc(
            &[5],
            &[(vec![(0, 0, 1)], 0), (vec![(0, 2, 1)], 1)],
            Some(&[]),
        );
        assert_eq!(
            draw(&labelled, &SamplingConfig::default(), 3)
                .rel_pairs
                .len(),
            2
        );
    }

    #[test]
    fn bad_documents_are_errors_naming_them() {
        let cfg = config();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sampling = SamplingConfig::default();
        let mut doc = small_doc();
        doc.gold.as_mut().unwrap().entities[0].entity_type = "Z".into();
        let err = sample_document(&doc, &cfg, &sampling, &mut rng).unwrap_err();
        assert!(err.to_string().contains("synthetic") && err.to_string().contains("'Z'"));
        let mut doc = small_doc();
        doc.gold.as_mut().unwrap().relations.as_mut().unwrap()[0].tail = 9;
        assert!(sample_document(&doc, &cfg, &sampling, &mut rng).is_err());
        let mut doc = small_doc();
        doc.gold.as_mut().unwrap().entities[1].mentions[0].end = 99;
        assert!(sample_document(&doc, &cfg, &sampling, &mut rng).is_err());
        let doc = Document {
            gold: None,
            ..small_doc()
        };
        assert!(sample_document(&doc, &cfg, &sampling, &mut rng).is_err());
    }

    /// Random documents: 1-4 sentences of 1-25 words, up to 6 entities of 1-4 mentions (inside
    /// their sentence), random relations (self-relations included).
    fn arb_doc() -> impl Strategy<Value = Document> {
        prop::collection::vec(1usize..25, 1..5).prop_flat_map(|sents| {
            let mention = {
                let sents = sents.clone();
                (0..sents.len(), any::<prop::sample::Index>(), 1usize..6).prop_map(
                    move |(sent, at, len)| {
                        let len = len.min(sents[sent]);
                        let start = at.index(sents[sent] - len + 1);
                        (sent, start, len)
                    },
                )
            };
            let entities =
                prop::collection::vec((prop::collection::vec(mention, 1..5), 0usize..3), 0..7);
            let relations = prop::collection::vec((0usize..7, 0usize..7, 0usize..4), 0..12);
            (Just(sents), entities, relations, any::<bool>()).prop_map(
                |(sents, entities, relations, labelled)| {
                    let n = entities.len();
                    let rels: Vec<_> = relations
                        .into_iter()
                        .filter(|&(h, t, _)| h < n && t < n)
                        .collect();
                    make_doc(&sents, &entities, labelled.then_some(rels.as_slice()))
                },
            )
        })
    }

    proptest! {
        #[test]
        fn sample_invariants(doc in arb_doc(), seed in any::<u64>(), caps in (0usize..40, 0usize..20, 0usize..20)) {
            let sampling = SamplingConfig {
                neg_mentions: caps.0,
                neg_coref: caps.1,
                neg_relations: caps.2,
                max_span_words: 4,
                ..SamplingConfig::default()
            };
            let s = draw(&doc, &sampling, seed);
            let gold = doc.gold.as_ref().unwrap();
            let gold_spans: Vec<Span> = gold.entities.iter().flat_map(|e| e.mentions.clone()).collect();
            let gold_set: HashSet<(usize, usize)> = gold_spans.iter().map(|m| (m.start, m.end)).collect();
            let starts = doc.sentence_starts();

            // Mentions: gold first (all of them, duplicates kept), then capped negatives.
            prop_assert_eq!(s.spans.len(), s.span_labels.len());
            prop_assert_eq!(&s.spans[..gold_spans.len()], &gold_spans[..]);
            prop_assert!(s.span_labels[..gold_spans.len()].iter().all(|&l| l == 1.0));
            let negatives = &s.spans[gold_spans.len()..];
            prop_assert!(s.span_labels[gold_spans.len()..].iter().all(|&l| l == 0.0));
            prop_assert!(negatives.len() <= sampling.neg_mentions);
            let distinct: HashSet<&Span> = negatives.iter().collect();
            prop_assert_eq!(distinct.len(), negatives.len());
            let is_inside = |n: &Span| gold_spans.iter().any(|g| g.start <= n.start && n.end <= g.end);
            let inside_count = negatives.iter().take_while(|n| is_inside(n)).count();
            prop_assert!(inside_count <= sampling.neg_mentions / 2);
            for n in negatives {
                prop_assert!(!gold_set.contains(&(n.start, n.end)));
                prop_assert!(!n.is_empty() && n.len() <= sampling.max_span_words);
                prop_assert!(starts[n.sent] <= n.start && n.end <= starts[n.sent + 1]);
            }
            // Inside negatives come first; none of the rest lies inside a gold mention.
            prop_assert!(negatives[inside_count..].iter().all(|n| !is_inside(n)));

            // Deduplicated mentions and entities.
            let dedup: HashSet<(usize, usize)> = s.mentions.iter().map(|m| (m.start, m.end)).collect();
            prop_assert_eq!(dedup.len(), s.mentions.len());
            prop_assert_eq!(&dedup, &gold_set);
            prop_assert_eq!(s.entities.len(), gold.entities.len());
            for (e, members) in s.entities.iter().enumerate() {
                let spans: HashSet<(usize, usize)> = members.iter().map(|&i| (s.mentions[i].start, s.mentions[i].end)).collect();
                let expected: HashSet<(usize, usize)> = gold.entities[e].mentions.iter().map(|m| (m.start, m.end)).collect();
                prop_assert_eq!(spans, expected);
                prop_assert_eq!(s.entity_types[e], config().entity_index(&gold.entities[e].entity_type).unwrap());
            }

            // Coreference: labels say whether the pair shares an entity; pairs in span order,
            // distinct; negatives capped.
            let same_entity = |a: usize, b: usize| s.entities.iter().any(|m| m.contains(&a) && m.contains(&b));
            prop_assert_eq!(s.coref_pairs.len(), s.coref_labels.len());
            let pairs: HashSet<&(usize, usize)> = s.coref_pairs.iter().collect();
            prop_assert_eq!(pairs.len(), s.coref_pairs.len());
            for (&(a, b), &l) in s.coref_pairs.iter().zip(&s.coref_labels) {
                prop_assert!(a != b);
                prop_assert!((s.mentions[a].start, s.mentions[a].end) < (s.mentions[b].start, s.mentions[b].end));
                prop_assert_eq!(l == 1.0, same_entity(a, b));
            }
            prop_assert!(s.coref_labels.iter().filter(|&&l| l == 0.0).count() <= sampling.neg_coref);

            // Relations: multi-hot rows match the gold labels; negatives are distinct, unlabelled.
            let n_rt = config().relation_types.len();
            prop_assert_eq!(s.rel_labels.len(), s.rel_pairs.len() * n_rt);
            match &gold.relations {
                None => prop_assert!(s.rel_pairs.is_empty()),
                Some(rels) => {
                    let labelled: HashSet<(usize, usize)> = rels.iter().filter(|r| r.head != r.tail).map(|r| (r.head, r.tail)).collect();
                    let mut negatives = 0;
                    for (k, &(h, t)) in s.rel_pairs.iter().enumerate() {
                        prop_assert!(h != t);
                        let row = &s.rel_labels[k * n_rt..(k + 1) * n_rt];
                        for (ty, &v) in row.iter().enumerate() {
                            let key = &config().relation_types[ty].key;
                            let expected = rels.iter().any(|r| r.head == h && r.tail == t && &r.relation == key);
                            prop_assert_eq!(v == 1.0, expected);
                        }
                        if !labelled.contains(&(h, t)) {
                            negatives += 1;
                        }
                    }
                    let all_pairs: HashSet<&(usize, usize)> = s.rel_pairs.iter().collect();
                    prop_assert_eq!(all_pairs.len(), s.rel_pairs.len());
                    prop_assert_eq!(s.rel_pairs.len() - negatives, labelled.len());
                    prop_assert!(negatives <= sampling.neg_relations);
                }
            }
        }
    }
}
