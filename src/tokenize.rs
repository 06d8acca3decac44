//! Words → word pieces, keeping the word → piece alignment the model pools over.
//!
//! Each word of the document goes through the `tokenizers` pipeline (normalizer, BERT
//! pre-tokenizer, WordPiece) on its own, exactly as the reference encodes word by word and as the
//! crate does for pre-tokenized input, so word boundaries are the document's and every word owns
//! a contiguous piece range. No special tokens are added here: windowing adds `[CLS]`/`[SEP]` per
//! encoder window.

use std::path::Path;

use tokenizers::Tokenizer;

use crate::corpus::Document;
use crate::error::{Error, Result};

/// A BERT WordPiece tokenizer loaded from a `tokenizer.json`.
pub struct WordPieceTokenizer {
    inner: Tokenizer,
    cls: u32,
    sep: u32,
    pad: u32,
    unk: u32,
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

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Word pieces of all words of `doc`. A word that yields no piece (only control or
    /// zero-width characters) becomes one `[UNK]`, so every word has a piece to pool over.
    pub fn tokenize(&self, doc: &Document) -> TokenizedDoc {
        let mut ids = Vec::with_capacity(doc.word_count() * 3 / 2);
        let mut word_pieces = Vec::with_capacity(doc.word_count());
        for word in doc.words() {
            let start = ids.len() as u32;
            self.push_pieces(&doc.id, &word.text, &mut ids);
            if ids.len() as u32 == start {
                ids.push(self.unk);
            }
            word_pieces.push((start, ids.len() as u32));
        }
        TokenizedDoc { ids, word_pieces }
    }

    /// Pieces of one word. Encoding word by word is what the tokenizer does internally for
    /// pre-tokenized input, but `encode_fast` (no offsets, no token strings) drops the word ids
    /// of a pre-tokenized encoding, and the per-word call keeps the alignment trivially.
    fn push_pieces(&self, doc: &str, word: &str, ids: &mut Vec<u32>) {
        match self.inner.encode_fast(word, false) {
            Ok(encoding) => ids.extend_from_slice(encoding.get_ids()),
            // WordPiece has no failure mode on valid UTF-8 (unknown text becomes [UNK]); should a
            // custom tokenizer fail anyway, the word becomes [UNK] rather than losing the document.
            Err(e) => {
                tracing::warn!(doc, word, "tokenizer failed, using [UNK]: {e}");
                ids.push(self.unk)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{text, Word};
    use crate::paths;

    fn tokenizer() -> Option<WordPieceTokenizer> {
        let dir = paths::require_encoder()?;
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
        let Some(path) = paths::require_shared("redocred/dev_revised.json") else {
            return;
        };
        let docs = crate::corpus::docred::read_docred(&path).unwrap();
        let mut pieces = 0;
        for doc in &docs {
            let t = tok.tokenize(doc);
            check_alignment(&tok, doc, &t);
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
    fn missing_file_is_a_tokenizer_error() {
        let e = WordPieceTokenizer::from_file(Path::new("/nonexistent/tokenizer.json"))
            .err()
            .unwrap();
        assert!(matches!(e, Error::Tokenizer(_)) && e.to_string().contains("/nonexistent"));
    }
}
