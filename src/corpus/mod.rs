//! The document model shared by every stage: sentences of words with optional character offsets,
//! plus optional gold annotations (DocRED style) for training and evaluation.
//!
//! Coordinates: a *word index* counts words over the whole document (sentences concatenated);
//! spans are half-open `[start, end)` word ranges. Character offsets are into `Document::text`.

pub mod docred;
pub mod parquet;
pub mod text;
pub mod unit;

pub use unit::Unit;

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

    /// `docs` one after another as one document called `id`: sentences in order, gold mentions
    /// shifted by the words and sentences before them and relation ends by the entities before
    /// them (gold only when every part has it; relations only when every part has them). The text
    /// is the parts' texts joined by a blank line, with character offsets shifted, when every
    /// part has one; otherwise there is none and words carry no offsets. Long test documents
    /// with exact gold are made this way.
    pub fn join(id: String, docs: &[Document]) -> Document {
        let all_text = docs.iter().all(|d| d.text.is_some());
        let all_gold = docs.iter().all(|d| d.gold.is_some());
        let all_relations = all_gold
            && docs
                .iter()
                .all(|d| d.gold.as_ref().is_some_and(|g| g.relations.is_some()));
        let mut out = Document {
            id,
            text: all_text.then(String::new),
            sentences: Vec::new(),
            gold: all_gold.then(|| Annotations {
                entities: Vec::new(),
                relations: all_relations.then(Vec::new),
            }),
        };
        let (mut words, mut chars) = (0usize, 0usize);
        for (i, d) in docs.iter().enumerate() {
            let sentences = out.sentences.len();
            if let (Some(text), Some(part)) = (&mut out.text, &d.text) {
                if i > 0 {
                    text.push_str("\n\n");
                    chars += 2;
                }
                text.push_str(part);
            }
            for sentence in &d.sentences {
                out.sentences.push(
                    sentence
                        .iter()
                        .map(|w| Word {
                            text: w.text.clone(),
                            chars: w
                                .chars
                                .filter(|_| all_text)
                                .map(|(a, b)| (a + chars, b + chars)),
                        })
                        .collect(),
                );
            }
            if let (Some(gold), Some(part)) = (&mut out.gold, &d.gold) {
                let entities = gold.entities.len();
                gold.entities.extend(part.entities.iter().map(|e| {
                    GoldEntity {
                        mentions: e
                            .mentions
                            .iter()
                            .map(|m| Span {
                                start: m.start + words,
                                end: m.end + words,
                                sent: m.sent + sentences,
                            })
                            .collect(),
                        entity_type: e.entity_type.clone(),
                    }
                }));
                if let (Some(rels), Some(part)) = (&mut gold.relations, &part.relations) {
                    rels.extend(part.iter().map(|r| GoldRelation {
                        head: r.head + entities,
                        tail: r.tail + entities,
                        relation: r.relation.clone(),
                        evidence: r.evidence.iter().map(|&s| s + sentences).collect(),
                    }));
                }
            }
            words += d.word_count();
            chars += d.text.as_ref().map_or(0, |t| t.chars().count());
        }
        out
    }

    /// Character offsets of a word span, when the words carry them.
    pub fn char_span(&self, span: Span) -> Option<(usize, usize)> {
        let first = self.words().nth(span.start)?.chars?;
        let last = self.words().nth(span.end.checked_sub(1)?)?.chars?;
        Some((first.0, last.1))
    }
}

/// Consecutive runs of `docs` of at most `max_words` words each (a longer document alone), in
/// order, covering every document.
pub fn runs_up_to(docs: &[Document], max_words: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut words) = (0, 0);
    for (i, d) in docs.iter().enumerate() {
        let n = d.word_count();
        if i > start && words + n > max_words {
            out.push(start..i);
            (start, words) = (i, 0);
        }
        words += n;
    }
    if start < docs.len() {
        out.push(start..docs.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, sentences: &[&[&str]], text: Option<&str>) -> Document {
        let mut at = 0;
        Document {
            id: id.into(),
            text: text.map(str::to_string),
            sentences: sentences
                .iter()
                .map(|s| {
                    s.iter()
                        .map(|w| {
                            let n = w.chars().count();
                            at += n + 1;
                            Word {
                                text: w.to_string(),
                                chars: Some((at - n - 1, at - 1)),
                            }
                        })
                        .collect()
                })
                .collect(),
            gold: Some(Annotations {
                entities: vec![GoldEntity {
                    mentions: vec![Span {
                        start: 0,
                        end: 1,
                        sent: 0,
                    }],
                    entity_type: "PER".into(),
                }],
                relations: Some(vec![GoldRelation {
                    head: 0,
                    tail: 0,
                    relation: "P1".into(),
                    evidence: vec![0],
                }]),
            }),
        }
    }

    #[test]
    fn joined_documents_keep_gold_and_offsets_aligned() {
        let a = doc("a", &[&["Ann", "ran"], &["Bo"]], Some("Ann ran Bo"));
        let b = doc("b", &[&["Cy", "sat"]], Some("Cy sat"));
        let j = Document::join("ab".into(), &[a.clone(), b.clone()]);
        assert_eq!(j.word_count(), 5);
        assert_eq!(j.sentences.len(), 3);
        let text = j.text.as_deref().unwrap();
        assert_eq!(text, "Ann ran Bo\n\nCy sat");
        // Every word's offsets still cut its text out of the joined text.
        for w in j.words() {
            let (s, e) = w.chars.unwrap();
            assert_eq!(text.chars().skip(s).take(e - s).collect::<String>(), w.text);
        }
        let gold = j.gold.as_ref().unwrap();
        assert_eq!(
            gold.entities[1].mentions[0],
            Span {
                start: 3,
                end: 4,
                sent: 2
            }
        );
        assert_eq!(j.phrase(gold.entities[1].mentions[0]), "Cy");
        let r = &gold.relations.as_ref().unwrap()[1];
        assert_eq!((r.head, r.tail, r.evidence.clone()), (1, 1, vec![2]));
        // Without text in every part: no text, no offsets; without relations: none.
        let mut c = b.clone();
        c.text = None;
        c.gold.as_mut().unwrap().relations = None;
        let j = Document::join("ac".into(), &[a, c]);
        assert!(j.text.is_none() && j.words().all(|w| w.chars.is_none()));
        assert!(j.gold.unwrap().relations.is_none());
    }

    #[test]
    fn runs_stay_under_the_word_limit() {
        let d = |n: usize| Document {
            sentences: vec![vec![
                Word {
                    text: "w".into(),
                    chars: None
                };
                n
            ]],
            ..Document::default()
        };
        let docs: Vec<Document> = [3, 4, 2, 9, 1, 1].iter().map(|&n| d(n)).collect();
        assert_eq!(runs_up_to(&docs, 7), vec![0..2, 2..3, 3..4, 4..6]);
        assert!(runs_up_to(&[], 7).is_empty());
    }
}
