use super::*;
use crate::corpus::{Document, Span, Word};
use crate::model::prediction::{PredEntity, PredMention, PredRelation};
use crate::tokenize::TokenizedDoc;

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
    let clusters: Vec<Vec<usize>> = merged.entities.iter().map(|e| e.mentions.clone()).collect();
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
