//! What both relation heads read of a mention pair: where the mentions sit, their distances
//! and the context between them, built on the CPU for every mention pair of the entity pairs.

use crate::corpus::Span;

/// Where a mention sits: its word span (for distances) and its word-piece range in the batch's
/// flat token axis (for contexts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MentionPlace {
    pub words: Span,
    pub pieces: (usize, usize),
}

/// All mention pairs of a list of entity pairs, built on the CPU, with the reference
/// implementation's distances and contexts. The
/// pairs of entity pair `r` are `offsets[r]..offsets[r + 1]`. Distances are raw (unclamped);
/// the heads clamp them to their tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MentionPairs {
    pub head: Vec<usize>,
    pub tail: Vec<usize>,
    pub offsets: Vec<usize>,
    pub token_distance: Vec<usize>,
    pub sentence_distance: Vec<usize>,
    /// Word pieces strictly between the two mentions, `None` when they touch or overlap.
    pub context: Vec<Option<(usize, usize)>>,
}

impl MentionPairs {
    /// Every `(m_h, m_t)` in `clusters[h] × clusters[t]` for each `(h, t)` of `entity_pairs`.
    /// `clusters` hold indices into `places`.
    pub fn build(
        places: &[MentionPlace],
        clusters: &[Vec<usize>],
        entity_pairs: &[(usize, usize)],
    ) -> MentionPairs {
        let mut out = MentionPairs {
            offsets: vec![0],
            ..MentionPairs::default()
        };
        for &(h, t) in entity_pairs {
            for &mh in &clusters[h] {
                for &mt in &clusters[t] {
                    let (a, b) = (places[mh], places[mt]);
                    out.head.push(mh);
                    out.tail.push(mt);
                    out.token_distance.push(token_distance(a.words, b.words));
                    out.sentence_distance
                        .push(a.words.sent.abs_diff(b.words.sent));
                    out.context.push(context(a.pieces, b.pieces));
                }
            }
            out.offsets.push(out.head.len());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.head.len()
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty()
    }

    /// The mention pairs of entity pairs `rows` (indices into this list's entity pairs), in
    /// that order.
    pub fn select(&self, rows: &[usize]) -> MentionPairs {
        let mut out = MentionPairs {
            offsets: vec![0],
            ..MentionPairs::default()
        };
        for &r in rows {
            let range = self.offsets[r]..self.offsets[r + 1];
            out.head.extend_from_slice(&self.head[range.clone()]);
            out.tail.extend_from_slice(&self.tail[range.clone()]);
            out.token_distance
                .extend_from_slice(&self.token_distance[range.clone()]);
            out.sentence_distance
                .extend_from_slice(&self.sentence_distance[range.clone()]);
            out.context.extend_from_slice(&self.context[range]);
            out.offsets.push(out.head.len());
        }
        out
    }

    /// For each entity pair, the index of its mention pair with the smallest `key` (the first
    /// on ties). Entity pairs without mention pairs cannot occur (clusters are non-empty).
    pub fn pick<K: Ord>(&self, key: impl Fn(usize) -> K) -> Vec<usize> {
        self.offsets
            .windows(2)
            .map(|w| (w[0]..w[1]).min_by_key(|&p| key(p)).unwrap_or(w[0]))
            .collect()
    }
}

/// Word distance as in the reference: `first` is the mention starting strictly earlier (on a tie
/// the tail), `max(0, second.start − (first.end − 1))`; adjacent mentions are at distance 1.
pub fn token_distance(head: Span, tail: Span) -> usize {
    let (first, second) = if head.start < tail.start {
        (head, tail)
    } else {
        (tail, head)
    };
    (second.start + 1).saturating_sub(first.end)
}

/// The pieces strictly between two piece ranges, if any (the same for both orders).
pub fn context(a: (usize, usize), b: (usize, usize)) -> Option<(usize, usize)> {
    if a.1 < b.0 {
        Some((a.1, b.0))
    } else if b.1 < a.0 {
        Some((b.1, a.0))
    } else {
        None
    }
}
