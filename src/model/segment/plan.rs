//! Where a long document is cut: sentence parts, segments with their overlaps and owned words,
//! and each segment as a document of its own.

use std::ops::Range;

use crate::corpus::{Document, Span};
use crate::model::input::PreparedDoc;
use crate::tokenize::TokenizedDoc;

use super::LongDocuments;

/// A run of whole words of one sentence: a sentence, or part of one longer than
/// [`LongDocuments::max_part`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    words: Range<usize>,
    /// The document sentence it belongs to.
    sentence: usize,
    /// Word pieces `[lo, hi)`.
    lo: usize,
    hi: usize,
}

/// One segment of a long document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Document words `[start, end)` of the segment.
    pub words: Range<usize>,
    /// Document word pieces of the segment.
    pub pieces: Range<usize>,
    /// The words whose mentions the merged prediction takes from this segment.
    pub own: Range<usize>,
    /// Per sentence of the segment: its document words and the document sentence it is (a part
    /// of).
    pub sentences: Vec<(Range<usize>, usize)>,
}

impl Segment {
    /// A span of the segment as a span of the document.
    pub(super) fn to_doc(&self, span: Span) -> Span {
        Span {
            start: span.start + self.words.start,
            end: span.end + self.words.start,
            sent: self.sentences[span.sent].1,
        }
    }
}

/// The sentences of `doc`, those over `max_part` pieces cut into parts (greedily, whole words).
fn parts(doc: &PreparedDoc, max_part: usize) -> Vec<Part> {
    let wp = &doc.tokens.word_pieces;
    let starts = doc.doc.sentence_starts();
    let mut out = Vec::with_capacity(starts.len());
    let mut pos = 0usize;
    for (sentence, bounds) in starts.windows(2).enumerate() {
        let (mut a, end) = (bounds[0], bounds[1]);
        if a == end {
            out.push(Part {
                words: a..a,
                sentence,
                lo: pos,
                hi: pos,
            });
        }
        while a < end {
            let first = wp[a].0 as usize;
            let mut e = a + 1;
            while e < end && wp[e].1 as usize - first <= max_part {
                e += 1;
            }
            let len = wp[e - 1].1 as usize - first;
            out.push(Part {
                words: a..e,
                sentence,
                lo: pos,
                hi: pos + len,
            });
            pos += len;
            a = e;
        }
    }
    out
}

/// The segments of a document longer than `cfg.whole_pieces` word pieces; `None` for a
/// document predicted whole (also one that fits in a single segment). Deterministic.
pub fn plan(doc: &PreparedDoc, cfg: &LongDocuments) -> Option<Vec<Segment>> {
    if doc.piece_count() <= cfg.whole_pieces.max(cfg.segment_pieces) {
        return None;
    }
    let parts = parts(doc, cfg.max_part());
    let n = parts.len();
    // Part ranges [s, e) of the segments: each as long as fits, the next one starting at the
    // latest part that still leaves `overlap_pieces` shared.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut s = 0;
    loop {
        let mut e = s + 1;
        while e < n && parts[e].hi - parts[s].lo <= cfg.segment_pieces {
            e += 1;
        }
        ranges.push((s, e));
        if e >= n {
            break;
        }
        let mut t = e - 1;
        while t > s + 1 && parts[e - 1].hi - parts[t].lo < cfg.overlap_pieces {
            t -= 1;
        }
        s = if t > s { t } else { e };
    }
    if ranges.len() == 1 {
        return None;
    }
    // Ownership: each shared stretch splits at the part boundary nearest its middle (on a tie
    // the earlier one), so an owned mention has context on both sides.
    let start_of = |j: usize| parts.get(j).map_or(parts[n - 1].hi, |p| p.lo);
    let mut cuts = vec![0usize];
    for w in ranges.windows(2) {
        let ((_, e0), (s1, _)) = (w[0], w[1]);
        let prev = *cuts.last().expect("starts with 0");
        let cut = if s1 >= e0 {
            s1
        } else {
            let twice_mid = start_of(s1) + parts[e0 - 1].hi;
            (s1..=e0)
                .min_by_key(|&j| (2 * start_of(j)).abs_diff(twice_mid))
                .expect("a non-empty range")
        };
        cuts.push(cut.max(prev));
    }
    cuts.push(n);
    let word_at = |j: usize| parts.get(j).map_or(doc.doc.word_count(), |p| p.words.start);
    Some(
        ranges
            .iter()
            .enumerate()
            .map(|(k, &(s, e))| Segment {
                words: parts[s].words.start..parts[e - 1].words.end,
                pieces: parts[s].lo..parts[e - 1].hi,
                own: word_at(cuts[k])..word_at(cuts[k + 1]),
                sentences: parts[s..e]
                    .iter()
                    .map(|p| (p.words.clone(), p.sentence))
                    .collect(),
            })
            .collect(),
    )
}

/// Segment `seg` of `doc` as a document of its own: its words (as sentences), word pieces and
/// candidate spans, without gold annotations or text.
pub fn segment_doc(doc: &PreparedDoc, seg: &Segment) -> PreparedDoc {
    let starts = doc.doc.sentence_starts();
    let sentences = seg
        .sentences
        .iter()
        .map(|(words, s)| {
            let base = starts[*s];
            doc.doc.sentences[*s][words.start - base..words.end - base].to_vec()
        })
        .collect();
    let first = seg.pieces.start as u32;
    let tokens = TokenizedDoc {
        ids: doc.tokens.ids[seg.pieces.clone()].to_vec(),
        word_pieces: doc.tokens.word_pieces[seg.words.clone()]
            .iter()
            .map(|&(a, b)| (a - first, b - first))
            .collect(),
    };
    let document = Document {
        id: doc.doc.id.clone(),
        text: None,
        sentences,
        gold: None,
    };
    PreparedDoc::from_tokens(document, tokens, doc.max_span_words)
}
