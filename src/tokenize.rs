//! Words → word pieces, keeping the word → piece alignment the model pools over.
//!
//! Each word of the document goes through the `tokenizers` pipeline (normalizer, BERT
//! pre-tokenizer, WordPiece) on its own, exactly as the reference encodes word by word and as the
//! crate does for pre-tokenized input, so word boundaries are the document's and every word owns
//! a contiguous piece range. No special tokens are added here: windowing adds `[CLS]`/`[SEP]` per
//! encoder window.
//!
//! Running the pipeline costs microseconds per word, so pieces are cached per distinct word
//! string (deterministic, hence exact): corpora are Zipfian and most words are repeats.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use tokenizers::Tokenizer;

use crate::corpus::Document;
use crate::error::{Error, Result};

/// Distinct words kept in the cache (bounds its memory to a few tens of MB; the frequent words
/// arrive first and stay).
const CACHE_WORDS: usize = 1 << 18;

/// A BERT WordPiece tokenizer loaded from a `tokenizer.json`. Shared by reference across threads.
pub struct WordPieceTokenizer {
    inner: Tokenizer,
    cache: RwLock<HashMap<String, Box<[u32]>>>,
    cls: u32,
    sep: u32,
    pad: u32,
    unk: u32,
}

/// Word pieces back to text, as HuggingFace's slow `BertTokenizer.decode` (transformers 4.x)
/// gives it: the reference implementation compares these strings in coreference.
#[derive(Debug, Clone)]
pub struct PieceDecoder {
    tokens: Vec<String>,
}

impl PieceDecoder {
    /// Pieces joined by spaces, `" ##"` removed, then the slow tokenizer's English clean-up of
    /// spaces before punctuation and contractions. (The `tokenizers` crate's WordPiece decoder
    /// also turns " do not" into " don't", which the slow tokenizer does not.)
    pub fn decode(&self, ids: &[u32]) -> String {
        let pieces: Vec<&str> = ids
            .iter()
            .map(|&id| self.tokens.get(id as usize).map_or("[UNK]", String::as_str))
            .collect();
        let mut text = pieces.join(" ").replace(" ##", "").trim().to_string();
        for (from, to) in [
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ] {
            text = text.replace(from, to);
        }
        text.trim().to_string()
    }
}

/// Rows of the word-shape table: 0 for special tokens and padding, then the shapes of
/// [`word_shape`].
pub const WORD_SHAPES: i64 = 7;

/// The shape of a word as the encoder's input sees it (an uncased vocabulary loses it): 1 all
/// lowercase, 2 capitalized, 3 all capitals (two letters or more), 4 other mixed case, 5 digits
/// without letters, 6 anything else (punctuation, symbols).
pub fn word_shape(word: &str) -> u8 {
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    if letters == 0 {
        return if word.chars().any(|c| c.is_numeric()) {
            5
        } else {
            6
        };
    }
    let upper = word.chars().filter(|c| c.is_uppercase()).count();
    let first_upper = word
        .chars()
        .find(|c| c.is_alphabetic())
        .is_some_and(char::is_uppercase);
    match upper {
        0 => 1,
        1 if first_upper => 2,
        n if n == letters && letters >= 2 => 3,
        _ => 4,
    }
}

/// A document as word pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizedDoc {
    /// Word pieces of the whole document, without special tokens.
    pub ids: Vec<u32>,
    /// Per document-level word: its pieces `ids[start..end]` (never empty).
    pub word_pieces: Vec<(u32, u32)>,
}

impl WordPieceTokenizer {
    /// Loads `tokenizer.json`, with truncation and padding switched off (documents are windowed
    /// and batched by the engine, not by the tokenizer).
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |m: String| Error::Tokenizer(format!("{}: {m}", path.display()));
        let mut inner = Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        let id = |token: &str| {
            inner
                .token_to_id(token)
                .ok_or_else(|| err(format!("the vocabulary has no {token} token")))
        };
        Ok(WordPieceTokenizer {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            unk: id("[UNK]")?,
            inner,
            cache: RwLock::default(),
        })
    }

    pub fn cls_id(&self) -> u32 {
        self.cls
    }

    pub fn sep_id(&self) -> u32 {
        self.sep
    }

    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    pub fn unk_id(&self) -> u32 {
        self.unk
    }

    /// A BERT WordPiece tokenizer from a `vocab.txt` (one piece per line, ids in line order),
    /// as HuggingFace's `BertTokenizer` reads it: text cleaned, CJK characters split,
    /// lowercased and accents stripped when `lowercase`, words split at whitespace and
    /// punctuation, words over 100 characters `[UNK]`, the special tokens never split.
    pub fn from_vocab(vocab: &Path, lowercase: bool) -> Result<Tokenizer> {
        use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
        use tokenizers::models::wordpiece::WordPiece;
        use tokenizers::normalizers::bert::BertNormalizer;
        use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
        use tokenizers::processors::bert::BertProcessing;
        use tokenizers::AddedToken;

        let err = |m: String| Error::Tokenizer(format!("{}: {m}", vocab.display()));
        let model = WordPiece::from_file(&vocab.to_string_lossy())
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(model);
        let id = |t: &Tokenizer, token: &str| {
            t.token_to_id(token)
                .ok_or_else(|| err(format!("the vocabulary has no {token} token")))
        };
        let (cls, sep) = (id(&tokenizer, "[CLS]")?, id(&tokenizer, "[SEP]")?);
        for token in ["[PAD]", "[UNK]", "[MASK]"] {
            id(&tokenizer, token)?;
        }
        tokenizer
            .with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
            .with_pre_tokenizer(Some(BertPreTokenizer))
            .with_post_processor(Some(BertProcessing::new(
                ("[SEP]".into(), sep),
                ("[CLS]".into(), cls),
            )))
            .with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
        let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .into_iter()
            .map(|t| AddedToken::from(t, true))
            .collect();
        tokenizer.add_special_tokens(&specials);
        Ok(tokenizer)
    }

    /// The id → piece table for [`PieceDecoder::decode`].
    pub fn piece_decoder(&self) -> PieceDecoder {
        let vocab = self.inner.get_vocab(true);
        let mut tokens = vec!["[UNK]".to_string(); vocab.len()];
        for (token, id) in vocab {
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = token;
            }
        }
        PieceDecoder { tokens }
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Word pieces of all words of `doc`; every word gets at least one piece to pool over.
    pub fn tokenize(&self, doc: &Document) -> TokenizedDoc {
        let mut ids = Vec::with_capacity(doc.word_count() * 3 / 2);
        let mut word_pieces = Vec::with_capacity(doc.word_count());
        // Words missing from the cache, encoded once per document and added after it: one read
        // and at most one write lock per document keeps threads from contending per word.
        let mut fresh: HashMap<&str, Vec<u32>> = HashMap::new();
        {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            for word in doc.words() {
                let start = ids.len() as u32;
                match cache.get(word.text.as_str()) {
                    Some(pieces) => ids.extend_from_slice(pieces),
                    None => ids.extend_from_slice(
                        fresh
                            .entry(&word.text)
                            .or_insert_with(|| self.encode_word(&doc.id, &word.text)),
                    ),
                }
                word_pieces.push((start, ids.len() as u32));
            }
        }
        if !fresh.is_empty() {
            let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
            let room = CACHE_WORDS.saturating_sub(cache.len());
            cache.extend(
                fresh
                    .into_iter()
                    .take(room)
                    .map(|(w, p)| (w.to_string(), p.into_boxed_slice())),
            );
        }
        TokenizedDoc { ids, word_pieces }
    }

    /// Pieces of one word (never empty: a word that yields none, e.g. only control or
    /// zero-width characters, becomes one `[UNK]`). Encoding word by word is what the tokenizer
    /// does internally for pre-tokenized input, but `encode_fast` (no offsets, no token strings)
    /// drops a pre-tokenized encoding's word ids, and the per-word call keeps the alignment
    /// trivially.
    fn encode_word(&self, doc: &str, word: &str) -> Vec<u32> {
        match self.inner.encode_fast(word, false) {
            Ok(encoding) if !encoding.get_ids().is_empty() => encoding.get_ids().to_vec(),
            Ok(_) => vec![self.unk],
            // WordPiece has no failure mode on valid UTF-8 (unknown text becomes [UNK]); should a
            // custom tokenizer fail anyway, the word becomes [UNK] rather than losing the document.
            Err(e) => {
                tracing::warn!(doc, word, "tokenizer failed, using [UNK]: {e}");
                vec![self.unk]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{text, Word};
    use crate::testing;

    fn tokenizer() -> Option<WordPieceTokenizer> {
        let dir = testing::require_encoder()?;
        Some(WordPieceTokenizer::from_file(&dir.join("tokenizer.json")).unwrap())
    }

    fn doc_of(words: &[&str]) -> Document {
        Document {
            id: "t".into(),
            sentences: vec![words
                .iter()
                .map(|w| Word {
                    text: w.to_string(),
                    chars: None,
                })
                .collect()],
            ..Default::default()
        }
    }

    fn check_alignment(tok: &WordPieceTokenizer, doc: &Document, t: &TokenizedDoc) {
        assert_eq!(t.word_pieces.len(), doc.word_count());
        let mut prev = 0;
        for &(s, e) in &t.word_pieces {
            assert!(s == prev && s < e, "{:?}", t.word_pieces);
            prev = e;
        }
        assert_eq!(prev as usize, t.ids.len());
        assert!(!t.ids.contains(&tok.cls_id()) && !t.ids.contains(&tok.sep_id()));
    }

    #[test]
    fn special_ids_of_the_real_vocabulary() {
        let Some(tok) = tokenizer() else { return };
        assert_eq!(tok.vocab_size(), 30522);
        assert_eq!(
            (tok.pad_id(), tok.unk_id(), tok.cls_id(), tok.sep_id()),
            (0, 100, 101, 102)
        );
    }

    #[test]
    fn words_map_to_their_pieces() {
        let Some(tok) = tokenizer() else { return };
        let doc = doc_of(&["Tokenization", "of", "U.S.", "\u{200B}", "", "naïve", "x"]);
        let t = tok.tokenize(&doc);
        check_alignment(&tok, &doc, &t);
        let piece = |w: usize| {
            let (s, e) = t.word_pieces[w];
            t.ids[s as usize..e as usize].to_vec()
        };
        // Each word alone gives the same pieces as in context (the reference's word-by-word rule).
        for (word, w) in ["Tokenization", "of", "U.S.", "naïve", "x"]
            .into_iter()
            .zip([0, 1, 2, 5, 6])
        {
            let alone = tok.inner.encode(word, false).unwrap();
            assert_eq!(piece(w), alone.get_ids(), "{word}");
        }
        assert!(piece(0).len() > 1, "subword split expected");
        assert_eq!(piece(2).len(), 4, "U . S . are four pieces");
        // Nothing to tokenize: one [UNK].
        assert_eq!(piece(3), vec![tok.unk_id()]);
        assert_eq!(piece(4), vec![tok.unk_id()]);
        // Over-long words are [UNK] under the WordPiece rule.
        let long = "a".repeat(150);
        let t = tok.tokenize(&doc_of(&[&long]));
        assert_eq!(t.ids, vec![tok.unk_id()]);
    }

    #[test]
    fn segmented_text_tokenizes_fully() {
        let Some(tok) = tokenizer() else { return };
        let doc = text::segment(
            "s",
            "Café owners in Zürich 👩\u{200D}🔬 met 東京 delegates.\nNo\u{301} one left.",
        );
        let t = tok.tokenize(&doc);
        check_alignment(&tok, &doc, &t);
        assert!(t.ids.len() >= doc.word_count());
        assert_eq!(
            tok.tokenize(&text::segment("e", "  ")),
            TokenizedDoc::default()
        );
    }

    #[test]
    fn tokenizes_redocred_dev() {
        let Some(tok) = tokenizer() else { return };
        let Some(path) = testing::require_shared("redocred/dev_revised.json") else {
            return;
        };
        let docs = crate::corpus::docred::read_docred(&path).unwrap();
        // Two threads share the cache while it fills.
        let (a, b) = std::thread::scope(|scope| {
            let run = || docs.iter().map(|d| tok.tokenize(d)).collect::<Vec<_>>();
            let a = scope.spawn(run);
            let b = scope.spawn(run);
            (a.join().unwrap(), b.join().unwrap())
        });
        assert_eq!(a, b);
        let mut pieces = 0;
        for (doc, t) in docs.iter().zip(&a) {
            check_alignment(&tok, doc, t);
            // Cached pieces are exactly the pipeline's.
            let direct: Vec<u32> = doc
                .words()
                .flat_map(|w| tok.encode_word(&doc.id, &w.text))
                .collect();
            assert_eq!(t.ids, direct, "{}", doc.id);
            assert_eq!(&tok.tokenize(doc), t);
            pieces += t.ids.len();
        }
        let words: usize = docs.iter().map(Document::word_count).sum();
        // Word pieces per word for English with an uncased BERT vocabulary is ~1.1-1.5.
        assert!(
            pieces > words && pieces < 2 * words,
            "{pieces} pieces, {words} words"
        );
    }

    #[test]
    fn vocab_tokenizer_matches_the_shipped_one_and_decodes_like_the_slow_tokenizer() {
        let Some(shipped) = tokenizer() else { return };
        let tmp = tempfile::tempdir().unwrap();
        let vocab = tmp.path().join("vocab.txt");
        let mut pieces: Vec<(String, u32)> = shipped.inner.get_vocab(false).into_iter().collect();
        pieces.sort_by_key(|p| p.1);
        let lines: Vec<String> = pieces.into_iter().map(|p| p.0).collect();
        std::fs::write(&vocab, lines.join("\n") + "\n").unwrap();
        let built = WordPieceTokenizer::from_vocab(&vocab, true).unwrap();
        let json = tmp.path().join("tokenizer.json");
        built.save(&json, false).unwrap();
        let built = WordPieceTokenizer::from_file(&json).unwrap();
        assert_eq!(built.vocab_size(), shipped.vocab_size());
        let doc = doc_of(&[
            "Tokenization",
            "of",
            "U.S.",
            "naïve",
            "Zürich",
            "[CLS]",
            "can't",
        ]);
        assert_eq!(built.tokenize(&doc), shipped.tokenize(&doc));

        let ids = |text: &str| -> Vec<u32> {
            built.inner.encode(text, false).unwrap().get_ids().to_vec()
        };
        let decoder = built.piece_decoder();
        assert_eq!(decoder.decode(&ids("U.S.")), "u. s.");
        assert_eq!(decoder.decode(&ids("Tokenization ,")), "tokenization,");
        assert_eq!(decoder.decode(&ids("I do not")), "i do not");
        assert_eq!(decoder.decode(&ids("it 's")), "it's");
        assert_eq!(decoder.decode(&[shipped.unk_id()]), "[UNK]");
    }

    #[test]
    fn word_shapes() {
        let shapes: Vec<u8> = [
            "paris", "Paris", "USA", "iPhone", "McDonald", "1887", "3.5", ",", "é", "É", "A",
        ]
        .into_iter()
        .map(word_shape)
        .collect();
        assert_eq!(shapes, [1, 2, 3, 4, 4, 5, 5, 6, 1, 2, 2]);
    }

    #[test]
    fn missing_file_is_a_tokenizer_error() {
        let e = WordPieceTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Tokenizer(_)) && e.to_string().contains("/nonexistent"));
    }
}
