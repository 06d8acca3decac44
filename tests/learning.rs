//! Learning test: a tiny randomly initialised encoder with the JEREX heads, trained by the real
//! training loop (sampler, joint loss, AdamW with warm-up/decay and clipping), overfits a few
//! synthetic documents until the strict end-to-end relation F1 on them reaches 90.
//!
//! The documents are made up here: a person born in one place and living in another, referred
//! to again by a pronoun, with places repeated, so every head (mentions, coreference, entity
//! types, relations through a coreferent mention) has to learn something.

use std::time::Instant;

use indicatif::ProgressBar;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use jerex::corpus::{Annotations, Document, GoldEntity, GoldRelation, Span, Word};
use jerex::encoder::SpecialIds;
use jerex::eval::{evaluate, Scope};
use jerex::model::PreparedDoc;
use jerex::testing::{types, window, TinyModel};
use jerex::tokenize::TokenizedDoc;
use jerex::train::{AdamWConfig, SamplingConfig, TrainOptions, Trainer};

const SPECIALS: [&str; 4] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
const FIRST: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const LAST: [&str; 3] = ["smith", "jones", "brown"];
const PLACES: [&str; 8] = [
    "paris", "rome", "oslo", "lima", "cairo", "delhi", "tokyo", "quito",
];
const FUNCTION: [&str; 9] = ["was", "born", "in", "lives", "he", "she", "is", "near", "."];

fn vocab() -> Vec<&'static str> {
    SPECIALS
        .iter()
        .chain(&FIRST)
        .chain(&LAST)
        .chain(&PLACES)
        .chain(&FUNCTION)
        .copied()
        .collect()
}

/// Builds a document sentence by sentence; entity mentions are recorded as they are written.
struct DocBuilder {
    sentences: Vec<Vec<Word>>,
    words: usize,
    entities: Vec<GoldEntity>,
}

impl DocBuilder {
    fn new(entity_types: &[&str]) -> Self {
        DocBuilder {
            sentences: Vec::new(),
            words: 0,
            entities: entity_types
                .iter()
                .map(|t| GoldEntity {
                    mentions: Vec::new(),
                    entity_type: t.to_string(),
                })
                .collect(),
        }
    }

    /// Parts: plain words, or `(entity, words)` for a mention.
    fn sentence(&mut self, parts: &[(Option<usize>, &[&str])]) {
        let sent = self.sentences.len();
        let mut words = Vec::new();
        for (entity, text) in parts {
            let start = self.words + words.len();
            words.extend(text.iter().map(|w| Word {
                text: w.to_string(),
                chars: None,
            }));
            if let Some(e) = entity {
                self.entities[*e].mentions.push(Span {
                    start,
                    end: start + text.len(),
                    sent,
                });
            }
        }
        self.words += words.len();
        self.sentences.push(words);
    }
}

/// Document `i`: "F [L] was born in P1 . he/she lives in P2 . [P1 is near P2 .]" with
/// born_in(person, P1) and lives_in(person, P2).
fn synthetic_doc(i: usize, rng: &mut ChaCha8Rng) -> Document {
    let first = *FIRST.choose(rng).unwrap();
    let last = *LAST.choose(rng).unwrap();
    let places: Vec<&str> = PLACES.choose_multiple(rng, 2).copied().collect();
    let name: Vec<&str> = if i.is_multiple_of(2) {
        vec![first, last]
    } else {
        vec![first]
    };
    let pronoun: &[&str] = if i.is_multiple_of(3) {
        &["she"]
    } else {
        &["he"]
    };
    let (person, born, lives) = (Some(0), Some(1), Some(2));
    let mut b = DocBuilder::new(&["PER", "LOC", "LOC"]);
    b.sentence(&[
        (person, &name),
        (None, &["was", "born", "in"]),
        (born, &[places[0]]),
        (None, &["."]),
    ]);
    b.sentence(&[
        (person, pronoun),
        (None, &["lives", "in"]),
        (lives, &[places[1]]),
        (None, &["."]),
    ]);
    if i % 2 == 1 {
        b.sentence(&[
            (born, &[places[0]]),
            (None, &["is", "near"]),
            (lives, &[places[1]]),
            (None, &["."]),
        ]);
    }
    let relation = |tail, r: &str| GoldRelation {
        head: 0,
        tail,
        relation: r.to_string(),
        evidence: vec![],
    };
    Document {
        id: format!("synthetic-{i}"),
        text: None,
        sentences: b.sentences,
        gold: Some(Annotations {
            entities: b.entities,
            relations: Some(vec![relation(1, "born_in"), relation(2, "lives_in")]),
        }),
    }
}

/// One word piece per word, from the synthetic vocabulary.
fn prepare(doc: Document, max_span_words: usize) -> PreparedDoc {
    let vocab = vocab();
    let ids: Vec<u32> = doc
        .words()
        .map(|w| vocab.iter().position(|v| *v == w.text).unwrap() as u32)
        .collect();
    let word_pieces = (0..ids.len() as u32).map(|i| (i, i + 1)).collect();
    PreparedDoc::from_tokens(doc, TokenizedDoc { ids, word_pieces }, max_span_words)
}

#[test]
fn tiny_model_overfits_synthetic_documents() {
    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tiny = TinyModel::new(vocab().len() as i64)
        .entity_types(types(&["LOC", "PER"]))
        .relation_types(types(&["born_in", "lives_in"]))
        .window(window(128, 32))
        .specials(SpecialIds {
            cls: 2,
            sep: 3,
            pad: 0,
        })
        .seed(11);
    let config = tiny.config();
    let docs: Vec<PreparedDoc> = (0..8)
        .map(|i| prepare(synthetic_doc(i, &mut rng), config.heads.max_span_words))
        .collect();

    let (vs, model) = tiny.build();
    let options = TrainOptions {
        batch_size: 2,
        seed: 3,
        max_grad_norm: 1.0,
        sampling: SamplingConfig::for_model(&config),
        partial_relations: Vec::new(),
    };
    let max_epochs = 150;
    let steps = (Trainer::batches_per_epoch(docs.len(), options.batch_size) * max_epochs) as u64;
    let adamw = AdamWConfig {
        lr: 3e-3,
        ..AdamWConfig::default()
    };
    let mut trainer = Trainer::new(&model, &vs, options, adamw, steps).unwrap();

    let mut best = 0.0f64;
    let mut first_loss = None;
    let mut last_loss = 0.0;
    for epoch in 0..max_epochs {
        let progress = trainer
            .train_epoch(&docs, epoch, 0, None, &ProgressBar::hidden())
            .unwrap();
        first_loss.get_or_insert(progress.losses.total);
        last_loss = progress.losses.total;
        if epoch % 10 == 9 {
            let scores = evaluate(&model, &docs, 8, Scope::EndToEnd).unwrap();
            eprintln!(
                "epoch {}: loss {:.4}; F1 mention {:.1} coreference {:.1} entity {:.1} relation {:.1} ({:.0} s)",
                epoch + 1,
                progress.losses.total,
                scores.mention.f1(),
                scores.coreference.f1(),
                scores.entity.f1(),
                scores.relation.f1(),
                start.elapsed().as_secs_f64()
            );
            best = best.max(scores.relation.f1());
            if best >= 90.0 {
                break;
            }
        }
    }
    let first_loss = first_loss.unwrap();
    assert!(
        last_loss < first_loss / 5.0,
        "loss fell only from {first_loss} to {last_loss}"
    );
    assert!(
        best >= 90.0,
        "strict relation F1 reached only {best:.1} on the training documents"
    );
}
