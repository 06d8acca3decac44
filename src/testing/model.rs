//! Tiny randomly initialised models and what they read: type inventories, [`TinyModel`] (one
//! builder for every test's model, in memory or saved as a model folder), synthetic documents,
//! and the invariants every prediction keeps.

use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::Device;

use crate::corpus::{Document, Word};
use crate::device::Precision;
use crate::encoder::{BertConfig, SpecialIds};
use crate::model::ModelInfo;
use crate::model::{
    folder, DocPrediction, Framing, JerexModel, LongDocuments, ModelConfig, PreparedDoc,
    RelationHead, Thresholds, TypeInfo, WindowConfig,
};
use crate::tokenize::{TokenizedDoc, WordPieceTokenizer};

/// Types with these keys (named `"{key} name"`).
pub fn types(keys: &[&str]) -> Vec<TypeInfo> {
    keys.iter()
        .map(|k| TypeInfo {
            key: k.to_string(),
            name: format!("{k} name"),
        })
        .collect()
}

/// `n` types keyed `{prefix}0`, `{prefix}1`, ... (named `"{prefix} type {i}"`).
pub fn numbered_types(prefix: &str, n: usize) -> Vec<TypeInfo> {
    (0..n)
        .map(|i| TypeInfo {
            key: format!("{prefix}{i}"),
            name: format!("{prefix} type {i}"),
        })
        .collect()
}

/// Windows of `max_len` pieces sharing `overlap`, framed by `[CLS]` and `[SEP]`.
pub const fn window(max_len: usize, overlap: usize) -> WindowConfig {
    WindowConfig {
        max_len,
        overlap,
        framing: Framing::ClsSep,
    }
}

/// Windows of 64 pieces: the tiny encoder has 128 positions, and longer documents are encoded
/// in several windows.
pub const TINY_WINDOW: WindowConfig = window(64, 16);

/// The special ids of a made-up vocabulary: `[PAD]` 0, `[CLS]` 1, `[SEP]` 2.
const SPECIALS: SpecialIds = SpecialIds {
    cls: 1,
    sep: 2,
    pad: 0,
};

/// The mention classifier's weights, which [`TinyModel::mention_spread`] widens.
const MENTION_CLASSIFIER: &str = "mention_localization.mention_classifier.weight";

/// A tiny randomly initialised model (the encoder of [`BertConfig::tiny`] with the JEREX heads):
/// its configuration, the model itself, or a model folder.
///
/// The defaults: types `E0..E2` and `R0..R3`, default thresholds and heads, [`TINY_WINDOW`],
/// weights drawn from seed 11 as BERT initialises them.
#[derive(Debug, Clone)]
pub struct TinyModel {
    config: ModelConfig,
    specials: SpecialIds,
    tokenizer_json: Option<PathBuf>,
    seed: i64,
    mention_spread: f64,
}

impl TinyModel {
    /// Over a made-up vocabulary of `vocab` word pieces (`[PAD]` 0, `[CLS]` 1, `[SEP]` 2).
    pub fn new(vocab: i64) -> TinyModel {
        TinyModel {
            config: ModelConfig {
                entity_types: numbered_types("E", 3),
                relation_types: numbered_types("R", 4),
                thresholds: Thresholds::default(),
                heads: Default::default(),
                window: TINY_WINDOW,
                encoder: BertConfig::tiny(vocab),
                training: serde_json::Value::Null,
            },
            specials: SPECIALS,
            tokenizer_json: None,
            seed: 11,
            mention_spread: 1.0,
        }
    }

    /// Over the vocabulary and special tokens of a tokenizer (`tokenizer.json`), which
    /// [`save`](Self::save) puts in the model folder.
    pub fn with_tokenizer(tokenizer_json: &Path) -> TinyModel {
        let tokenizer = WordPieceTokenizer::from_file(tokenizer_json).unwrap();
        TinyModel {
            specials: folder::special_ids(&tokenizer),
            tokenizer_json: Some(tokenizer_json.to_path_buf()),
            ..TinyModel::new(tokenizer.vocab_size() as i64)
        }
    }

    /// Over a tokenizer, for runs of the binary in which every table gets rows: four entity and
    /// three relation types; a mention classifier widened 30 times and thresholds just above
    /// 0.5 keep a few mentions per document and some relations; coreference at 0.9, clear of
    /// the untrained scores' 0.5, merges none (no ties). Seed 5.
    pub fn sparse(tokenizer_json: &Path) -> TinyModel {
        TinyModel::with_tokenizer(tokenizer_json)
            .entity_types(numbered_types("E", 4))
            .relation_types(numbered_types("R", 3))
            .thresholds(0.535, 0.9, 0.501)
            .seed(5)
            .mention_spread(30.0)
    }

    pub fn entity_types(mut self, types: Vec<TypeInfo>) -> TinyModel {
        self.config.entity_types = types;
        self
    }

    pub fn relation_types(mut self, types: Vec<TypeInfo>) -> TinyModel {
        self.config.relation_types = types;
        self
    }

    /// The mention, coreference and relation thresholds.
    pub fn thresholds(mut self, mention: f32, coref: f32, relation: f32) -> TinyModel {
        self.config.thresholds = Thresholds {
            mention,
            coref,
            relation,
        };
        self
    }

    pub fn window(mut self, window: WindowConfig) -> TinyModel {
        self.config.window = window;
        self
    }

    pub fn relation_head(mut self, head: RelationHead) -> TinyModel {
        self.config.heads.relation_head = head;
        self
    }

    pub fn word_shapes(mut self, on: bool) -> TinyModel {
        self.config.heads.word_shapes = on;
        self
    }

    pub fn long_documents(mut self, limits: LongDocuments) -> TinyModel {
        self.config.heads.long_documents = limits;
        self
    }

    /// The special token ids (of a made-up vocabulary).
    pub fn specials(mut self, specials: SpecialIds) -> TinyModel {
        self.specials = specials;
        self
    }

    /// The seed of the weights (`tch::manual_seed`, just before they are drawn).
    pub fn seed(mut self, seed: i64) -> TinyModel {
        self.seed = seed;
        self
    }

    /// Multiplies the mention classifier's weights by `factor`. BERT's N(0, 0.02) init puts
    /// every mention probability within a hair of 0.5; a factor of about 30 makes a threshold
    /// above 0.5 keep a few percent of the candidates.
    pub fn mention_spread(mut self, factor: f64) -> TinyModel {
        self.mention_spread = factor;
        self
    }

    /// The model's configuration.
    pub fn config(&self) -> ModelConfig {
        self.config.clone()
    }

    /// The model on the CPU, in full precision, with its variables.
    pub fn build(&self) -> (VarStore, JerexModel) {
        tch::manual_seed(self.seed);
        let vs = VarStore::new(Device::Cpu);
        let model = JerexModel::new(&vs.root(), &self.config, self.specials, Precision::Fp32)
            .expect("a tiny model");
        if self.mention_spread != 1.0 {
            tch::no_grad(|| {
                let mut w = vs.variables()[MENTION_CLASSIFIER].shallow_clone();
                let wider = &w * self.mention_spread;
                w.copy_(&wider);
            });
        }
        (vs, model)
    }

    /// Saves the model as the model folder `dir/name` (with its tokenizer: see
    /// [`with_tokenizer`](Self::with_tokenizer)) and returns its path.
    pub fn save(&self, dir: &Path, name: &str) -> PathBuf {
        let (vs, _model) = self.build();
        let out = dir.join(name);
        JerexModel::save(&out, &vs, &self.config, self.tokenizer()).unwrap();
        out
    }

    /// The CPU side of the model without weights, for runs with the [fake
    /// backend](crate::testing::fake): its configuration and tokenizer, id `fake@test`.
    pub fn fake_info(&self) -> ModelInfo {
        ModelInfo {
            config: self.config(),
            tokenizer: WordPieceTokenizer::from_file(self.tokenizer()).unwrap(),
            model_id: "fake@test".into(),
        }
    }

    fn tokenizer(&self) -> &Path {
        self.tokenizer_json
            .as_deref()
            .expect("a model folder needs a tokenizer: TinyModel::with_tokenizer")
    }
}

/// Sentences of synthetic words `w<k>` (`k` from a simple generator started at `seed`, so
/// words repeat).
pub fn synthetic_document(id: &str, sentence_lengths: &[usize], seed: usize) -> Document {
    let mut k = seed;
    Document {
        id: id.into(),
        text: None,
        sentences: sentence_lengths
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        k = (k * 7 + 3) % 29;
                        Word {
                            text: format!("w{k}"),
                            chars: None,
                        }
                    })
                    .collect()
            })
            .collect(),
        gold: None,
    }
}

/// `doc` as a tiny model over `vocab` pieces reads it: one to three pieces per word (ids from 5
/// up, derived from the word, so equal words get equal pieces), spans of up to 10 words.
pub fn synthetic_prepared(doc: Document, vocab: i64) -> PreparedDoc {
    let mut tokens = TokenizedDoc::default();
    for w in doc.words() {
        let h = w
            .text
            .bytes()
            .fold(17u32, |a, b| a.wrapping_mul(31) ^ u32::from(b));
        let start = tokens.ids.len() as u32;
        for p in 0..=(h % 3) {
            tokens.ids.push(5 + (h + p * 13) % (vocab as u32 - 5));
        }
        tokens.word_pieces.push((start, tokens.ids.len() as u32));
    }
    PreparedDoc::from_tokens(doc, tokens, 10)
}

/// The invariants of every prediction of a document of `words` words by a model with
/// `entity_types` and `relation_types` types: mentions in order and inside the document,
/// clusters partitioning them in order of their first mentions, relations in order between
/// distinct entities with evidence mentions of their own entities, scores in [0, 1].
pub fn check_well_formed(
    p: &DocPrediction,
    words: usize,
    entity_types: usize,
    relation_types: usize,
) {
    let m = p.mentions.len();
    for w in p.mentions.windows(2) {
        assert!((w[0].span.start, w[0].span.end) < (w[1].span.start, w[1].span.end));
    }
    for pm in &p.mentions {
        assert!(pm.span.start < pm.span.end && pm.span.end <= words);
        assert!((0.0..=1.0).contains(&pm.score));
    }
    let mut covered = vec![0; m];
    for e in &p.entities {
        assert!(!e.mentions.is_empty());
        assert!(e.mentions.windows(2).all(|w| w[0] < w[1]));
        assert!(e.mentions.iter().all(|&i| i < m));
        assert!(e.entity_type < entity_types);
        assert!((0.0..=1.0).contains(&e.type_score) && (0.0..=1.0).contains(&e.coref_score));
        for &i in &e.mentions {
            covered[i] += 1;
        }
    }
    assert!(
        covered.iter().all(|&c| c == 1),
        "clusters partition the mentions"
    );
    assert!(p
        .entities
        .windows(2)
        .all(|w| w[0].mentions[0] < w[1].mentions[0]));
    for w in p.relations.windows(2) {
        assert!((w[0].head, w[0].tail, w[0].relation) < (w[1].head, w[1].tail, w[1].relation));
    }
    for r in &p.relations {
        assert!(r.head != r.tail && r.head < p.entities.len() && r.tail < p.entities.len());
        assert!(r.relation < relation_types && (0.0..=1.0).contains(&r.score));
        assert!(p.entities[r.head].mentions.contains(&r.evidence.0));
        assert!(p.entities[r.tail].mentions.contains(&r.evidence.1));
    }
}
