//! Model inputs built on the CPU: documents with their word pieces and candidate spans, and the
//! small helpers that turn host index arrays into device tensors (each moved once).

use tch::{Device, Kind, Tensor};

use crate::corpus::{Document, Span};
use crate::error::{Error, Result};
use crate::tokenize::{TokenizedDoc, WordPieceTokenizer};

/// A document ready for the model: its word pieces, and the size limit of its candidate spans.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedDoc {
    pub doc: Document,
    pub tokens: TokenizedDoc,
    /// Candidate spans are listed only when a batch needs them: stored, they were three
    /// quarters of a prepared document's memory, and the pipeline holds hundreds of documents.
    pub max_span_words: usize,
}

impl PreparedDoc {
    pub fn new(doc: Document, tokenizer: &WordPieceTokenizer, max_span_words: usize) -> Self {
        let tokens = tokenizer.tokenize(&doc);
        PreparedDoc::from_tokens(doc, tokens, max_span_words)
    }

    /// From pieces tokenized elsewhere; `tokens.word_pieces` must cover every word with a
    /// non-empty piece range (as [`WordPieceTokenizer::tokenize`] guarantees).
    pub fn from_tokens(doc: Document, tokens: TokenizedDoc, max_span_words: usize) -> Self {
        PreparedDoc {
            doc,
            tokens,
            max_span_words,
        }
    }

    /// Every span of `1..=max_span_words` words inside one sentence, in the reference order:
    /// sentence, then size ascending, then start ascending (the reference implementation's order,
    /// which its checkpoints' coreference direction depends on).
    pub fn candidates(&self) -> Vec<Span> {
        candidate_spans(&self.doc, self.max_span_words)
    }

    /// `candidates().len()`, without listing them.
    pub fn candidate_count(&self) -> usize {
        let m = self.max_span_words;
        let starts = self.doc.sentence_starts();
        starts
            .windows(2)
            .map(|b| {
                let n = b[1] - b[0];
                let k = m.min(n);
                // Spans of size 1..=k in n words: n + (n - 1) + ... + (n - k + 1).
                k * n - k * (k.saturating_sub(1)) / 2
            })
            .sum()
    }

    /// Word-piece ids as the encoder takes them.
    pub fn piece_ids(&self) -> Vec<i64> {
        self.tokens.ids.iter().map(|&i| i64::from(i)).collect()
    }

    /// Per word piece, the [`word_shape`](crate::tokenize::word_shape) of its word.
    pub fn piece_shapes(&self) -> Vec<i64> {
        let mut shapes = vec![0i64; self.piece_count()];
        for (word, &(start, end)) in self.doc.words().zip(&self.tokens.word_pieces) {
            let shape = i64::from(crate::tokenize::word_shape(&word.text));
            shapes[start as usize..end as usize].fill(shape);
        }
        shapes
    }

    pub fn piece_count(&self) -> usize {
        self.tokens.ids.len()
    }

    /// The pieces `[start, end)` (document-local) of a non-empty, in-range word span.
    pub fn pieces(&self, span: Span) -> (usize, usize) {
        let first = self.tokens.word_pieces[span.start].0 as usize;
        let last = self.tokens.word_pieces[span.end - 1].1 as usize;
        (first, last)
    }

    /// Checks that `span` can be pooled: non-empty, inside the document, with pieces.
    pub fn check_span(&self, span: Span, what: &str) -> Result<()> {
        let words = self.tokens.word_pieces.len();
        let ok = span.start < span.end
            && span.end <= words
            && self.pieces(span).0 < self.pieces(span).1
            && self.pieces(span).1 <= self.piece_count();
        if ok {
            Ok(())
        } else {
            Err(Error::BadDocument {
                doc: self.doc.id.clone(),
                message: format!(
                    "{what} span {}..{} is empty or outside the document's {words} tokenized words",
                    span.start, span.end
                ),
            })
        }
    }
}

/// Candidate spans of a document (see [`PreparedDoc::candidates`]).
fn candidate_spans(doc: &Document, max_span_words: usize) -> Vec<Span> {
    let starts = doc.sentence_starts();
    let mut out = Vec::new();
    for (sent, bounds) in starts.windows(2).enumerate() {
        let (first, end) = (bounds[0], bounds[1]);
        for size in 1..=max_span_words.min(end - first) {
            for start in first..=(end - size) {
                out.push(Span {
                    start,
                    end: start + size,
                    sent,
                });
            }
        }
    }
    out
}

/// `value` as an embedding row, clamped to the last row of a table of `count` rows, so no
/// size or distance can index past a table.
pub fn clamp_index(value: usize, count: i64) -> i64 {
    value.min(count.max(1) as usize - 1) as i64
}

/// A host index array as an `Int64` tensor on `device` (one transfer).
pub fn index_tensor(values: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(values).to_device(device)
}

/// `(start, len)` of consecutive chunks of at most `chunk_rows` (≥ 1) rows covering `0..rows`.
pub fn chunk_starts(rows: i64, chunk_rows: i64) -> impl Iterator<Item = (i64, i64)> {
    let step = chunk_rows.max(1);
    (0..rows)
        .step_by(step as usize)
        .map(move |start| (start, step.min(rows - start)))
}

/// Concatenates chunk results along rows; a zero tensor of `empty_shape` when there is none.
pub fn cat_rows(chunks: &[Tensor], empty_shape: &[i64], kind: Kind, device: Device) -> Tensor {
    match chunks {
        [] => Tensor::zeros(empty_shape, (kind, device)),
        [one] => one.shallow_clone(),
        _ => Tensor::cat(chunks, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Word;

    fn doc(sentence_lengths: &[usize]) -> Document {
        Document {
            id: "d".into(),
            sentences: sentence_lengths
                .iter()
                .map(|&n| {
                    (0..n)
                        .map(|i| Word {
                            text: format!("w{i}"),
                            chars: None,
                        })
                        .collect()
                })
                .collect(),
            ..Document::default()
        }
    }

    #[test]
    fn candidates_follow_reference_order() {
        let spans = candidate_spans(&doc(&[3, 0, 2]), 2);
        let got: Vec<(usize, usize, usize)> =
            spans.iter().map(|s| (s.sent, s.start, s.end)).collect();
        assert_eq!(
            got,
            vec![
                (0, 0, 1),
                (0, 1, 2),
                (0, 2, 3),
                (0, 0, 2),
                (0, 1, 3),
                (2, 3, 4),
                (2, 4, 5),
                (2, 3, 5),
            ]
        );
        // Σ_{k=1..10} (L − k + 1) for a 12-word sentence.
        assert_eq!(candidate_spans(&doc(&[12]), 10).len(), 75);
        assert!(candidate_spans(&doc(&[]), 10).is_empty());
    }

    #[test]
    fn candidate_count_is_the_listed_count() {
        let tokens = TokenizedDoc {
            ids: Vec::new(),
            word_pieces: Vec::new(),
        };
        for lengths in [&[][..], &[0], &[1], &[3, 0, 2], &[12], &[10, 11, 9, 25, 1]] {
            for max in [1, 2, 10, 30] {
                let d = PreparedDoc::from_tokens(doc(lengths), tokens.clone(), max);
                assert_eq!(
                    d.candidate_count(),
                    d.candidates().len(),
                    "{lengths:?} {max}"
                );
            }
        }
    }

    #[test]
    fn pieces_and_span_checks() {
        let tokens = TokenizedDoc {
            ids: vec![5, 6, 7, 8],
            word_pieces: vec![(0, 2), (2, 3), (3, 4)],
        };
        let p = PreparedDoc::from_tokens(doc(&[3]), tokens, 10);
        let span = |start, end| Span {
            start,
            end,
            sent: 0,
        };
        assert_eq!(p.pieces(span(0, 1)), (0, 2));
        assert_eq!(p.pieces(span(1, 3)), (2, 4));
        assert!(p.check_span(span(0, 3), "gold").is_ok());
        assert!(p.check_span(span(2, 2), "gold").is_err());
        assert!(p.check_span(span(2, 4), "gold").is_err());
    }

    #[test]
    fn clamps_any_value() {
        assert_eq!(clamp_index(0, 30), 0);
        assert_eq!(clamp_index(29, 30), 29);
        assert_eq!(clamp_index(30, 30), 29);
        assert_eq!(clamp_index(usize::MAX, 30), 29);
        assert_eq!(clamp_index(5, 0), 0);
    }

    #[test]
    fn chunks_cover_rows() {
        let c: Vec<(i64, i64)> = chunk_starts(10, 4).collect();
        assert_eq!(c, vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(chunk_starts(0, 4).count(), 0);
        assert_eq!(chunk_starts(3, 0).count(), 3);
    }
}
