//! Long documents as overlapping segments.
//!
//! The heads are quadratic in a document's mentions (coreference pairs, complete linkage) and
//! entities (relation pairs times their mention pairs): harmless at DocRED's few hundred words,
//! ruinous at tens of thousands. A document of at most `whole_pieces` word pieces is predicted
//! whole, exactly as it always was. A longer one is cut at sentence boundaries into segments of
//! at most `segment_pieces` pieces, consecutive ones sharing at least `overlap_pieces`; each
//! segment is predicted as a document of its own (so cost grows linearly with length, and every
//! budget and replica applies to it), and the predictions are merged:
//!
//! - **Ownership.** Each shared stretch is split at the sentence boundary nearest its middle; a
//!   mention belongs to the segment that owns its sentence, where it has context on both sides.
//!   The document's mentions are the segments' owned mentions, with the owner's scores.
//! - **Entities.** Across each boundary, the local entities of the two segments are matched one
//!   to one by the mention spans they share in the overlap (most shared first), and matched
//!   entities are joined, so an entity continues from segment to segment as long as it is
//!   mentioned in the overlaps. One-to-one matching never joins two entities that either segment
//!   kept apart. An entity's type is that of its largest local entity (then the higher type
//!   score); its coreference score is the mean pair probability over the pairs scored inside
//!   segments.
//! - **Relations.** Each segment's relations are mapped to the joined entities; a relation
//!   predicted in several segments keeps its highest score and that segment's evidence.
//!
//! Segments are short on purpose: one encoder window of the default model, about the length of
//! the longest documents it was trained on, so the heads see what they were trained for (pairs
//! farther apart than any training document carry distance features never trained). On Re-DocRED
//! dev documents joined into long ones, shorter segments scored better on every task than longer
//! ones, and both far better than predicting the long document whole (`docs/performance.md`).
//!
//! What this gives up, by design: two entities are related only if some segment sees a mention
//! of each, i.e. mentions at most about `segment_pieces` pieces apart; mentions of one entity
//! farther apart than that, with no mention of it in the overlaps between, become separate
//! entities. The limits are tunable (model config `heads.long_documents`, job file
//! `[long_documents]`); longer segments reach farther, at a cost quadratic in their length.
//! Sentences longer than a quarter of a segment are cut into parts, and a candidate span never
//! crosses a part boundary.

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::corpus::{Document, Span};
use crate::error::{Error, Result};
use crate::model::input::PreparedDoc;
use crate::model::prediction::{DocPrediction, PredEntity, PredMention, PredRelation};
use crate::model::{JerexModel, Thresholds};
use crate::tokenize::TokenizedDoc;

/// How documents longer than `whole_pieces` are processed (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LongDocuments {
    /// Documents of at most this many word pieces are predicted whole, exactly as without
    /// segments. The default, 1,024 (about 850 words), keeps every DocRED-sized document whole
    /// (DocRED's longest have under 600).
    pub whole_pieces: usize,
    /// Word pieces per segment of a longer document, at most. The default is one encoder window
    /// of the default model (512 positions less `[CLS]` and `[SEP]`).
    pub segment_pieces: usize,
    /// Word pieces consecutive segments share (at least: segments end at sentence boundaries);
    /// less than half a segment.
    pub overlap_pieces: usize,
}

impl Default for LongDocuments {
    fn default() -> Self {
        LongDocuments {
            whole_pieces: 1024,
            segment_pieces: 510,
            overlap_pieces: 128,
        }
    }
}

impl LongDocuments {
    /// Segments shorter than this leave too little room for sentences.
    pub const MIN_SEGMENT_PIECES: usize = 64;

    /// Checks that segments hold several sentences and advance; the message names the field
    /// (`segment_pieces`, `overlap_pieces`).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.segment_pieces < Self::MIN_SEGMENT_PIECES {
            return Err(format!(
                "segment_pieces: {} is below the minimum of {}",
                self.segment_pieces,
                Self::MIN_SEGMENT_PIECES
            ));
        }
        // Every segment but the last holds at least `segment - part` pieces, so with parts of at
        // most a quarter segment an overlap under half a segment is always found.
        if self.overlap_pieces == 0 || 2 * self.overlap_pieces >= self.segment_pieces {
            return Err(format!(
                "overlap_pieces: {} must be at least 1 and less than half of segment_pieces ({})",
                self.overlap_pieces, self.segment_pieces
            ));
        }
        Ok(())
    }

    /// Word pieces of the longest sentence part: longer sentences are cut (see the module
    /// documentation), so that a segment always holds several parts.
    fn max_part(&self) -> usize {
        (self.segment_pieces / 4).max(1)
    }
}

/// Replacements for a model's limits (job file `[long_documents]`, command-line flags); unset
/// fields keep the model's values (by default 1,024, 510 and 128).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LongDocumentOverrides {
    /// Documents of at most this many word pieces are predicted whole
    /// (`long_documents.whole_pieces`).
    #[arg(long)]
    pub whole_pieces: Option<usize>,
    /// Word pieces per segment of a longer document. Entities and relations reach at most about
    /// this far; longer segments reach farther, at a cost quadratic in their length
    /// (`long_documents.segment_pieces`).
    #[arg(long)]
    pub segment_pieces: Option<usize>,
    /// Word pieces consecutive segments share, less than half a segment
    /// (`long_documents.overlap_pieces`).
    #[arg(long)]
    pub overlap_pieces: Option<usize>,
}

impl LongDocumentOverrides {
    /// `base` with the set fields replaced.
    pub fn apply(&self, base: LongDocuments) -> LongDocuments {
        LongDocuments {
            whole_pieces: self.whole_pieces.unwrap_or(base.whole_pieces),
            segment_pieces: self.segment_pieces.unwrap_or(base.segment_pieces),
            overlap_pieces: self.overlap_pieces.unwrap_or(base.overlap_pieces),
        }
    }
}

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
    fn to_doc(&self, span: Span) -> Span {
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

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The document's prediction from its segments' (in segment order, in segment coordinates).
/// See the module documentation for the rules.
///
/// # Panics
/// When `preds` and `segments` differ in length.
pub fn merge(segments: &[Segment], preds: &[DocPrediction]) -> DocPrediction {
    assert_eq!(segments.len(), preds.len(), "one prediction per segment");
    // Every local mention as a document span.
    let spans: Vec<Vec<Span>> = segments
        .iter()
        .zip(preds)
        .map(|(seg, p)| p.mentions.iter().map(|m| seg.to_doc(m.span)).collect())
        .collect();
    // The document's mentions: each segment's owned ones (owned words are disjoint).
    let mut owned: Vec<(Span, f32, usize, usize)> = Vec::new();
    for (k, (seg, p)) in segments.iter().zip(preds).enumerate() {
        for (i, (span, m)) in spans[k].iter().zip(&p.mentions).enumerate() {
            if seg.own.contains(&span.start) {
                owned.push((*span, m.score, k, i));
            }
        }
    }
    owned.sort_by_key(|o| (o.0.start, o.0.end));
    let global: HashMap<(usize, usize), usize> = owned
        .iter()
        .enumerate()
        .map(|(g, o)| ((o.0.start, o.0.end), g))
        .collect();

    // Local entities as union-find nodes: segment k's entity j is node `base[k] + j`.
    let mut base = Vec::with_capacity(preds.len());
    let mut nodes = 0;
    for p in preds {
        base.push(nodes);
        nodes += p.entities.len();
    }
    let entity_of: Vec<Vec<usize>> = preds
        .iter()
        .map(|p| {
            let mut of = vec![usize::MAX; p.mentions.len()];
            for (j, e) in p.entities.iter().enumerate() {
                for &m in &e.mentions {
                    of[m] = j;
                }
            }
            of
        })
        .collect();
    let mut parent: Vec<usize> = (0..nodes).collect();
    for k in 1..segments.len() {
        // Entities of the two segments sharing mention spans in the overlap: (count, first
        // shared span start, left entity, right entity), matched one to one, most shared first.
        let shared = segments[k].words.start..segments[k - 1].words.end;
        let left: HashMap<(usize, usize), usize> = spans[k - 1]
            .iter()
            .enumerate()
            .filter(|(_, s)| shared.contains(&s.start))
            .map(|(i, s)| ((s.start, s.end), entity_of[k - 1][i]))
            .collect();
        let mut counts: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
        for (i, s) in spans[k].iter().enumerate() {
            if let Some(&a) = left.get(&(s.start, s.end)) {
                let c = counts.entry((a, entity_of[k][i])).or_insert((0, s.start));
                c.0 += 1;
            }
        }
        let mut candidates: Vec<(usize, usize, usize, usize)> = counts
            .into_iter()
            .map(|((a, b), (count, first))| (count, first, a, b))
            .collect();
        candidates.sort_by_key(|&(count, first, a, b)| (std::cmp::Reverse(count), first, a, b));
        let (mut left_used, mut right_used) = (
            vec![false; preds[k - 1].entities.len()],
            vec![false; preds[k].entities.len()],
        );
        for (_, _, a, b) in candidates {
            if !left_used[a] && !right_used[b] {
                left_used[a] = true;
                right_used[b] = true;
                let (x, y) = (
                    find(&mut parent, base[k - 1] + a),
                    find(&mut parent, base[k] + b),
                );
                parent[x.max(y)] = x.min(y);
            }
        }
    }

    // Joined entities, in order of their first owned mention; those without owned mentions
    // (all their mentions lie on the other side of an ownership cut) are left out.
    let mut entity_index: HashMap<usize, usize> = HashMap::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for (g, &(_, _, k, i)) in owned.iter().enumerate() {
        let root = find(&mut parent, base[k] + entity_of[k][i]);
        let e = *entity_index.entry(root).or_insert_with(|| {
            members.push(Vec::new());
            members.len() - 1
        });
        members[e].push(g);
    }
    // Per joined entity: the local entity its type comes from, and the pair-weighted coref sum.
    let mut best: Vec<Option<(usize, f32, usize, usize)>> = vec![None; members.len()];
    let mut coref: Vec<(f64, f64)> = vec![(0.0, 0.0); members.len()];
    for (k, p) in preds.iter().enumerate() {
        for (j, ent) in p.entities.iter().enumerate() {
            let root = find(&mut parent, base[k] + j);
            let Some(&e) = entity_index.get(&root) else {
                continue;
            };
            let size = ent.mentions.len();
            let pairs = (size * size.saturating_sub(1) / 2) as f64;
            coref[e].0 += f64::from(ent.coref_score) * pairs;
            coref[e].1 += pairs;
            // Largest, then most confident, then earliest.
            let better = match best[e] {
                None => true,
                Some((s, t, _, _)) => (size, ent.type_score) > (s, t),
            };
            if better {
                best[e] = Some((size, ent.type_score, k, j));
            }
        }
    }
    let entities: Vec<PredEntity> = members
        .iter()
        .enumerate()
        .map(|(e, mentions)| {
            let (_, type_score, k, j) = best[e].expect("a joined entity has a local entity");
            let (sum, pairs) = coref[e];
            PredEntity {
                mentions: mentions.clone(),
                entity_type: preds[k].entities[j].entity_type,
                type_score,
                coref_score: if pairs > 0.0 {
                    (sum / pairs) as f32
                } else {
                    1.0
                },
            }
        })
        .collect();

    // Relations, keyed by joined head, tail and type; the highest score wins (earlier segment
    // on ties).
    let mut relations: HashMap<(usize, usize, usize), PredRelation> = HashMap::new();
    for (k, p) in preds.iter().enumerate() {
        let joined =
            |parent: &mut [usize], j: usize| entity_index.get(&find(parent, base[k] + j)).copied();
        for r in &p.relations {
            let (Some(head), Some(tail)) =
                (joined(&mut parent, r.head), joined(&mut parent, r.tail))
            else {
                continue;
            };
            if head == tail {
                continue;
            }
            let mapped = PredRelation {
                head,
                tail,
                relation: r.relation,
                score: r.score,
                evidence: (
                    evidence(&members[head], &owned, &global, spans[k][r.evidence.0]),
                    evidence(&members[tail], &owned, &global, spans[k][r.evidence.1]),
                ),
            };
            let slot = relations
                .entry((head, tail, r.relation))
                .or_insert_with(|| mapped.clone());
            if mapped.score > slot.score {
                *slot = mapped;
            }
        }
    }
    let mut relations: Vec<PredRelation> = relations.into_values().collect();
    relations.sort_by_key(|r| (r.head, r.tail, r.relation));

    DocPrediction {
        mentions: owned
            .iter()
            .map(|&(span, score, _, _)| PredMention { span, score })
            .collect(),
        entities,
        relations,
    }
}

/// The mention of a joined entity (`members`, ascending document mention indices) standing for
/// a segment's evidence mention `span`: the same span when the entity has it, else its mention
/// nearest to it (the earlier on a tie).
fn evidence(
    members: &[usize],
    owned: &[(Span, f32, usize, usize)],
    global: &HashMap<(usize, usize), usize>,
    span: Span,
) -> usize {
    if let Some(&g) = global.get(&(span.start, span.end)) {
        if members.binary_search(&g).is_ok() {
            return g;
        }
    }
    *members
        .iter()
        .min_by_key(|&&g| owned[g].0.start.abs_diff(span.start))
        .expect("a joined entity has a mention")
}

/// Groups of items (by their word pieces) predicted together: at most `budget` pieces each, or
/// one item.
fn budget_groups(pieces: &[usize], budget: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut sum = 0;
    for (i, &p) in pieces.iter().enumerate() {
        if i > start && sum + p > budget {
            out.push(start..i);
            start = i;
            sum = 0;
        }
        sum += p;
    }
    if start < pieces.len() {
        out.push(start..pieces.len());
    }
    out
}

impl JerexModel {
    /// End-to-end predictions in which documents longer than the model's
    /// `heads.long_documents.whole_pieces` are predicted as overlapping segments and merged (see
    /// [`crate::model::segment`]). The other documents are predicted together in one call,
    /// exactly as [`predict`](Self::predict) does; the segments in groups of at most
    /// `batch_pieces` word pieces, so memory stays bounded however long a document is.
    pub fn predict_segmented(
        &self,
        docs: &[PreparedDoc],
        thresholds: &Thresholds,
        batch_pieces: usize,
    ) -> Result<Vec<DocPrediction>> {
        let cfg = self.config().heads.long_documents;
        cfg.check()
            .map_err(|e| Error::Config(format!("long_documents.{e}")))?;
        let plans: Vec<Option<Vec<Segment>>> = docs.iter().map(|d| plan(d, &cfg)).collect();
        if plans.iter().all(Option::is_none) {
            return self.predict(docs, thresholds);
        }
        let whole: Vec<PreparedDoc> = docs
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.is_none())
            .map(|(d, _)| d.clone())
            .collect();
        let mut whole = self.predict(&whole, thresholds)?.into_iter();
        let mut out = Vec::with_capacity(docs.len());
        for (doc, plan) in docs.iter().zip(plans) {
            let Some(segments) = plan else {
                out.push(whole.next().expect("one prediction per whole document"));
                continue;
            };
            let parts: Vec<PreparedDoc> = segments.iter().map(|s| segment_doc(doc, s)).collect();
            let pieces: Vec<usize> = parts.iter().map(PreparedDoc::piece_count).collect();
            let mut preds = Vec::with_capacity(parts.len());
            for group in budget_groups(&pieces, batch_pieces) {
                preds.extend(self.predict(&parts[group], thresholds)?);
            }
            out.push(merge(&segments, &preds));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Word;

    /// A document of sentences of the given word counts, each word `pieces(w)` pieces long.
    fn doc(lengths: &[usize], pieces: impl Fn(usize) -> u32) -> PreparedDoc {
        let mut w = 0;
        let sentences: Vec<Vec<Word>> = lengths
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        w += 1;
                        Word {
                            text: format!("w{w}"),
                            chars: None,
                        }
                    })
                    .collect()
            })
            .collect();
        let mut tokens = TokenizedDoc::default();
        for i in 0..w {
            let start = tokens.ids.len() as u32;
            for _ in 0..pieces(i) {
                tokens.ids.push(5 + i as u32);
            }
            tokens.word_pieces.push((start, tokens.ids.len() as u32));
        }
        let document = Document {
            id: "d".into(),
            sentences,
            ..Document::default()
        };
        PreparedDoc::from_tokens(document, tokens, 10)
    }

    fn cfg(segment: usize, overlap: usize) -> LongDocuments {
        LongDocuments {
            whole_pieces: segment,
            segment_pieces: segment,
            overlap_pieces: overlap,
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(LongDocuments::default().check().is_ok());
        assert!(cfg(63, 8)
            .check()
            .unwrap_err()
            .starts_with("segment_pieces"));
        assert!(cfg(100, 0)
            .check()
            .unwrap_err()
            .starts_with("overlap_pieces"));
        assert!(cfg(100, 50)
            .check()
            .unwrap_err()
            .starts_with("overlap_pieces"));
        assert!(cfg(100, 49).check().is_ok());
    }

    #[test]
    fn documents_up_to_the_whole_limit_are_not_segmented() {
        let d = doc(&[30, 30], |_| 2);
        assert_eq!(d.piece_count(), 120);
        assert!(plan(&d, &cfg(120, 10)).is_none());
        assert!(plan(&d, &cfg(119, 10)).is_some());
        let whole = |w| LongDocuments {
            whole_pieces: w,
            ..cfg(64, 10)
        };
        assert!(plan(&d, &whole(120)).is_none());
        let segments = plan(&d, &whole(119)).unwrap();
        assert!(segments.iter().all(|s| s.pieces.len() <= 64));
    }

    #[test]
    fn segments_cover_the_document_overlap_and_own_every_word_once() {
        // 40 sentences of 5..=14 words, 1..=3 pieces per word, and one 90-word sentence.
        let mut lengths: Vec<usize> = (0..40).map(|i| 5 + (i * 7) % 10).collect();
        lengths[17] = 90;
        let d = doc(&lengths, |w| 1 + (w % 3) as u32);
        let long_overlap = LongDocuments {
            overlap_pieces: 60,
            ..cfg(128, 16)
        };
        for c in [
            cfg(128, 16),
            cfg(200, 50),
            cfg(64, 8),
            long_overlap,
            LongDocuments::default(),
        ] {
            let Some(segs) = plan(&d, &c) else {
                assert!(d.piece_count() <= c.whole_pieces);
                continue;
            };
            assert!(segs.len() > 1);
            let words = d.doc.word_count();
            assert_eq!(segs[0].words.start, 0);
            assert_eq!(segs.last().unwrap().words.end, words);
            assert_eq!(segs[0].own.start, 0);
            assert_eq!(segs.last().unwrap().own.end, words);
            for (k, s) in segs.iter().enumerate() {
                assert!(s.pieces.len() <= c.segment_pieces, "{c:?} segment {k}");
                assert!(s.own.start >= s.words.start && s.own.end <= s.words.end);
                // Sentences tile the segment's words.
                assert_eq!(s.sentences[0].0.start, s.words.start);
                for w in s.sentences.windows(2) {
                    assert_eq!(w[0].0.end, w[1].0.start);
                }
                assert_eq!(s.sentences.last().unwrap().0.end, s.words.end);
                let sub = segment_doc(&d, s);
                assert_eq!(sub.piece_count(), s.pieces.len());
                assert_eq!(sub.doc.word_count(), s.words.len());
                for (i, w) in sub.doc.words().enumerate() {
                    let orig = d.doc.words().nth(s.words.start + i).unwrap();
                    assert_eq!(w, orig);
                    let (a, b) = sub.tokens.word_pieces[i];
                    let (x, y) = d.tokens.word_pieces[s.words.start + i];
                    assert_eq!(
                        sub.tokens.ids[a as usize..b as usize],
                        d.tokens.ids[x as usize..y as usize]
                    );
                }
                if k > 0 {
                    let prev = &segs[k - 1];
                    assert_eq!(prev.own.end, s.own.start, "ownership tiles the words");
                    assert!(s.words.start > prev.words.start, "segments advance");
                    let shared = d.tokens.word_pieces[prev.words.end - 1].1 as usize
                        - d.tokens.word_pieces[s.words.start].0 as usize;
                    assert!(shared >= c.overlap_pieces, "{c:?}: {shared} shared pieces");
                }
            }
        }
        // The 90-word sentence (up to 270 pieces) is cut into parts of at most 32 pieces for
        // 128-piece segments; every part keeps its document sentence.
        let segs = plan(&d, &cfg(128, 16)).unwrap();
        let sentence_17: Vec<&(Range<usize>, usize)> = segs
            .iter()
            .flat_map(|s| &s.sentences)
            .filter(|(_, s)| *s == 17)
            .collect();
        assert!(sentence_17.len() > 3);
    }

    fn mention(start: usize, end: usize, sent: usize, score: f32) -> PredMention {
        PredMention {
            span: Span { start, end, sent },
            score,
        }
    }

    fn entity(mentions: Vec<usize>, entity_type: usize, type_score: f32) -> PredEntity {
        PredEntity {
            mentions,
            entity_type,
            type_score,
            coref_score: 0.9,
        }
    }

    fn seg(words: Range<usize>, own: Range<usize>, sentences: &[(usize, usize)]) -> Segment {
        let mut at = words.start;
        Segment {
            pieces: words.clone(),
            own,
            sentences: sentences
                .iter()
                .map(|&(len, s)| {
                    at += len;
                    (at - len..at, s)
                })
                .collect(),
            words,
        }
    }

    #[test]
    fn merge_joins_entities_through_the_overlap_one_to_one() {
        // Two segments of a 30-word document, words 0..20 and 10..30, owning 0..15 and 15..30.
        let segs = vec![
            seg(0..20, 0..15, &[(10, 0), (10, 1)]),
            seg(10..30, 15..30, &[(10, 1), (10, 2)]),
        ];
        // Segment 0: A = {0..1, 12..13, 16..17}, B = {5..6}, C = {17..18}.
        let p0 = DocPrediction {
            mentions: vec![
                mention(0, 1, 0, 0.9),
                mention(5, 6, 0, 0.95),
                mention(12, 13, 1, 0.9),
                mention(16, 17, 1, 0.91),
                mention(17, 18, 1, 0.92),
            ],
            entities: vec![
                entity(vec![0, 2, 3], 0, 0.8),
                entity(vec![1], 1, 0.9),
                entity(vec![4], 2, 0.7),
            ],
            relations: vec![
                PredRelation {
                    head: 0,
                    tail: 1,
                    relation: 3,
                    score: 0.7,
                    evidence: (3, 1),
                },
                PredRelation {
                    head: 2,
                    tail: 1,
                    relation: 0,
                    score: 0.8,
                    evidence: (4, 1),
                },
            ],
        };
        // Segment 1 (local words 0..20 = document 10..30): it found 12..13 and 16..17 in one
        // entity with 25..26, and 17..18 together with them too (a different decision than
        // segment 0's): one-to-one matching joins only A with it; C stays apart.
        let p1 = DocPrediction {
            mentions: vec![
                mention(2, 3, 0, 0.5),
                mention(6, 7, 0, 0.6),
                mention(7, 8, 0, 0.61),
                mention(15, 16, 1, 0.99),
                mention(18, 19, 1, 0.98),
            ],
            entities: vec![entity(vec![0, 1, 2, 3], 1, 0.95), entity(vec![4], 0, 0.6)],
            relations: vec![
                PredRelation {
                    head: 0,
                    tail: 1,
                    relation: 3,
                    score: 0.9,
                    evidence: (0, 4),
                },
                PredRelation {
                    head: 1,
                    tail: 0,
                    relation: 2,
                    score: 0.65,
                    evidence: (4, 2),
                },
            ],
        };
        let merged = merge(&segs, &[p0, p1]);
        let spans: Vec<(usize, usize, usize)> = merged
            .mentions
            .iter()
            .map(|m| (m.span.start, m.span.end, m.span.sent))
            .collect();
        // Owned: 0..1, 5..6, 12..13 from segment 0; 16..17, 17..18, 25..26, 28..29 from 1.
        assert_eq!(
            spans,
            vec![
                (0, 1, 0),
                (5, 6, 0),
                (12, 13, 1),
                (16, 17, 1),
                (17, 18, 1),
                (25, 26, 2),
                (28, 29, 2)
            ]
        );
        assert_eq!(merged.mentions[3].score, 0.6, "the owner's score");
        let clusters: Vec<Vec<usize>> =
            merged.entities.iter().map(|e| e.mentions.clone()).collect();
        // A joined with segment 1's big entity (its owned mentions 16..17, 17..18, 25..26 come
        // along); C = {17..18} of segment 0 is not owned there and is dropped; B stays.
        assert_eq!(clusters, vec![vec![0, 2, 3, 4, 5], vec![1], vec![6]]);
        // Type from the largest local entity (segment 1's, 4 mentions).
        assert_eq!(merged.entities[0].entity_type, 1);
        assert_eq!(merged.entities[0].type_score, 0.95);
        assert!((merged.entities[0].coref_score - 0.9).abs() < 1e-6);
        // A→B from segment 0 (0.7), A→{28..29} from 1 (0.9), {28..29}→A (0.65); C's relation
        // is gone with C.
        let rel = |head, tail, relation, score, evidence| PredRelation {
            head,
            tail,
            relation,
            score,
            evidence,
        };
        assert_eq!(
            merged.relations,
            vec![
                rel(0, 1, 3, 0.7, (3, 1)),
                rel(0, 2, 3, 0.9, (2, 6)),
                rel(2, 0, 2, 0.65, (6, 4)),
            ]
        );
        // Evidence mentions belong to their entities.
        for r in &merged.relations {
            assert!(merged.entities[r.head].mentions.contains(&r.evidence.0));
            assert!(merged.entities[r.tail].mentions.contains(&r.evidence.1));
        }
    }

    #[test]
    fn merge_of_one_segment_is_its_prediction() {
        let segs = vec![seg(0..10, 0..10, &[(10, 0)])];
        let p = DocPrediction {
            mentions: vec![mention(0, 2, 0, 0.9), mention(4, 5, 0, 0.95)],
            entities: vec![entity(vec![0], 0, 0.8), entity(vec![1], 1, 0.9)],
            relations: vec![PredRelation {
                head: 1,
                tail: 0,
                relation: 2,
                score: 0.7,
                evidence: (1, 0),
            }],
        };
        let mut expected = p.clone();
        for e in &mut expected.entities {
            e.coref_score = 1.0;
        }
        assert_eq!(merge(&segs, &[p]), expected);
    }

    #[test]
    fn budget_groups_cover_items_in_order() {
        assert_eq!(
            budget_groups(&[5, 5, 5, 20, 1], 10),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert!(budget_groups(&[], 10).is_empty());
    }
}
