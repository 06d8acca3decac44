//! Long documents in the pipeline. A document longer than one segment (the model's
//! `heads.long_documents`, overridden by the job's `[long_documents]`) leaves the prepare stage
//! as its segments: the bucketer packs them and the devices predict them like any other
//! documents, so the batch budgets hold and every replica works on it. The decoder keeps each
//! segment's outcome with its document and merges them when the last one is done (see
//! [`crate::model::segment`]); only then does the document reach the tables.

use std::fmt;
use std::sync::{Arc, Mutex};

use super::worker::Outcome;
use crate::model::segment::{self, LongDocuments, Segment};
use crate::model::PreparedDoc;

/// A long document while its segments are in flight.
pub struct LongDoc {
    prepared: PreparedDoc,
    segments: Vec<Segment>,
    gathered: Mutex<Gathered>,
}

struct Gathered {
    outcomes: Vec<Option<Outcome>>,
    seconds: f64,
    left: usize,
}

/// Marks a batch item as segment `index` of a long document.
#[derive(Clone)]
pub struct SegmentOf {
    pub doc: Arc<LongDoc>,
    pub index: usize,
}

impl fmt::Debug for SegmentOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} of {} of {:?}",
            self.index,
            self.doc.segments.len(),
            self.doc.prepared.doc.id
        )
    }
}

/// The items a prepared document goes to the devices as: itself when it fits in one segment,
/// else its segments, each marked with its place.
pub fn split(prepared: PreparedDoc, cfg: &LongDocuments) -> Vec<(PreparedDoc, Option<SegmentOf>)> {
    let Some(segments) = segment::plan(&prepared, cfg) else {
        return vec![(prepared, None)];
    };
    let items: Vec<PreparedDoc> = segments
        .iter()
        .map(|s| segment::segment_doc(&prepared, s))
        .collect();
    let doc = Arc::new(LongDoc {
        gathered: Mutex::new(Gathered {
            outcomes: vec![None; segments.len()],
            seconds: 0.0,
            left: segments.len(),
        }),
        prepared,
        segments,
    });
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let of = SegmentOf {
                doc: Arc::clone(&doc),
                index,
            };
            (item, Some(of))
        })
        .collect()
}

impl LongDoc {
    /// The whole document.
    pub fn prepared(&self) -> &PreparedDoc {
        &self.prepared
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Records segment `index`'s outcome and device seconds. After the last segment: the
    /// document's outcome (the merged prediction; failed when any segment failed) and its
    /// seconds summed over the segments.
    pub fn finish(&self, index: usize, outcome: &Outcome, seconds: f64) -> Option<(Outcome, f64)> {
        let mut g = self.gathered.lock().unwrap_or_else(|e| e.into_inner());
        if g.outcomes[index].replace(outcome.clone()).is_none() {
            g.left -= 1;
        }
        g.seconds += seconds;
        if g.left > 0 {
            return None;
        }
        let n = self.segments.len();
        let mut preds = Vec::with_capacity(n);
        for (k, o) in g.outcomes.iter_mut().enumerate() {
            match o.take().expect("every segment is done") {
                Outcome::Predicted(p) => preds.push(p),
                Outcome::Failed(e) => {
                    return Some((
                        Outcome::Failed(format!("segment {k} of {n}: {e}")),
                        g.seconds,
                    ))
                }
            }
        }
        let merged = segment::merge(&self.segments, &preds);
        Some((Outcome::Predicted(merged), g.seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{Document, Word};
    use crate::model::DocPrediction;
    use crate::tokenize::TokenizedDoc;

    fn long_doc(words: usize) -> PreparedDoc {
        let sentences: Vec<Vec<Word>> = (0..words / 10)
            .map(|s| {
                (0..10)
                    .map(|i| Word {
                        text: format!("w{s}_{i}"),
                        chars: None,
                    })
                    .collect()
            })
            .collect();
        let tokens = TokenizedDoc {
            ids: (0..words as u32).collect(),
            word_pieces: (0..words as u32).map(|i| (i, i + 1)).collect(),
        };
        let doc = Document {
            id: "long".into(),
            sentences,
            ..Document::default()
        };
        PreparedDoc::from_tokens(doc, tokens, 10)
    }

    #[test]
    fn short_documents_pass_whole_and_long_ones_finish_with_their_last_segment() {
        let cfg = LongDocuments {
            whole_pieces: 100,
            segment_pieces: 100,
            overlap_pieces: 20,
        };
        let short = split(long_doc(100), &cfg);
        assert_eq!(short.len(), 1);
        assert!(short[0].1.is_none());

        let items = split(long_doc(400), &cfg);
        assert!(items.len() >= 4, "{} segments", items.len());
        let long = items[0].1.as_ref().unwrap().doc.clone();
        assert_eq!(long.prepared().doc.word_count(), 400);
        assert_eq!(long.segment_count(), items.len());
        // Out of order, one of them twice (a retried batch): done only after every segment.
        let n = items.len();
        let empty = Outcome::Predicted(DocPrediction::default());
        for k in (1..n).rev() {
            assert!(long.finish(k, &empty, 1.0).is_none());
        }
        assert!(long.finish(n - 1, &empty, 0.5).is_none());
        let (outcome, seconds) = long.finish(0, &empty, 1.0).unwrap();
        assert_eq!(outcome, Outcome::Predicted(DocPrediction::default()));
        assert_eq!(seconds, n as f64 + 0.5);

        // A failed segment fails the document, naming the segment.
        let items = split(long_doc(400), &cfg);
        let long = items[0].1.as_ref().unwrap().doc.clone();
        for k in 0..n {
            let o = if k == 2 {
                Outcome::Failed("out of memory".into())
            } else {
                empty.clone()
            };
            if let Some((outcome, _)) = long.finish(k, &o, 0.0) {
                assert_eq!(
                    outcome,
                    Outcome::Failed(format!("segment 2 of {n}: out of memory"))
                );
            }
        }
    }
}
