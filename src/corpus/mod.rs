//! The document model shared by every stage: sentences of words with optional character offsets,
//! plus optional gold annotations (DocRED style) for training and evaluation.
//!
//! Coordinates: a *word index* counts words over the whole document (sentences concatenated);
//! spans are half-open `[start, end)` word ranges. Character offsets are into `Document::text`.

pub mod docred;
pub mod parquet;
pub mod text;

use serde::{Deserialize, Serialize};

/// One word of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Word {
    pub text: String,
    /// Character (Unicode scalar) offsets `[start, end)` into the original text, when there is one.
    pub chars: Option<(usize, usize)>,
}

/// A document: an id, the original text when known, and its sentences of words.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub text: Option<String>,
    pub sentences: Vec<Vec<Word>>,
    pub gold: Option<Annotations>,
}

/// A mention as a document-level word span `[start, end)` within sentence `sent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub sent: usize,
}

impl Span {
    pub fn len(&self) -> usize {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// A gold entity: a cluster of mentions with one type (the type of its first mention, as in the
/// reference implementation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldEntity {
    pub mentions: Vec<Span>,
    pub entity_type: String,
}

/// A gold relation between two entities (indices into `Annotations::entities`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GoldRelation {
    pub head: usize,
    pub tail: usize,
    pub relation: String,
    pub evidence: Vec<usize>,
}

/// Gold labels. `relations` is `None` when the source has no relation labels at all (DocRED
/// test), which trains the mention, coreference and entity heads only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotations {
    pub entities: Vec<GoldEntity>,
    pub relations: Option<Vec<GoldRelation>>,
}

impl Document {
    /// Number of words over all sentences.
    pub fn word_count(&self) -> usize {
        self.sentences.iter().map(Vec::len).sum()
    }

    /// All words in document order.
    pub fn words(&self) -> impl Iterator<Item = &Word> {
        self.sentences.iter().flatten()
    }

    /// Document-level word index of the first word of each sentence, plus the total at the end
    /// (`sentence_starts()[s]..sentence_starts()[s + 1]` are the words of sentence `s`).
    pub fn sentence_starts(&self) -> Vec<usize> {
        let mut starts = Vec::with_capacity(self.sentences.len() + 1);
        let mut acc = 0;
        starts.push(0);
        for s in &self.sentences {
            acc += s.len();
            starts.push(acc);
        }
        starts
    }

    /// The words of `span` joined by single spaces: the phrase used for edit distances and
    /// canonical names (the original words, in training and inference alike).
    pub fn phrase(&self, span: Span) -> String {
        let words: Vec<&Word> = self.words().skip(span.start).take(span.len()).collect();
        let mut out = String::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(&w.text);
        }
        out.trim().to_string()
    }

    /// blake3 (hex) of the document's content: its text when it has one, else its words
    /// (length-prefixed, so different splits never collide). Reruns compare it to skip unchanged
    /// documents.
    pub fn content_hash(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        match &self.text {
            Some(text) => {
                hasher.update(b"text\0");
                hasher.update(text.as_bytes());
            }
            None => {
                hasher.update(b"sentences\0");
                for sentence in &self.sentences {
                    hasher.update(&(sentence.len() as u64).to_le_bytes());
                    for word in sentence {
                        hasher.update(&(word.text.len() as u64).to_le_bytes());
                        hasher.update(word.text.as_bytes());
                    }
                }
            }
        }
        hasher.finalize().to_hex().to_string()
    }

    /// Character offsets of a word span, when the words carry them.
    pub fn char_span(&self, span: Span) -> Option<(usize, usize)> {
        let first = self.words().nth(span.start)?.chars?;
        let last = self.words().nth(span.end.checked_sub(1)?)?.chars?;
        Some((first.0, last.1))
    }
}
