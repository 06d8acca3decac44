//! Length bucketing: documents are read ahead into a window, sorted by encoder length and packed
//! greedily into batches under the batch budget. Padding is counted: a batch costs
//! `longest row × rows`, so neighbours of similar length fill a budget with little waste.

use serde::{Deserialize, Serialize};

/// How documents are packed into device batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Word pieces per batch, padding included: longest document × documents in the batch.
    pub max_word_pieces: usize,
    /// Documents per batch.
    pub max_docs: usize,
    /// Documents read ahead and sorted by length before packing: larger windows pad less but
    /// hold more documents in memory.
    pub lookahead: usize,
    /// Candidate spans per batch: bounds the span heads' memory, which grows with candidate
    /// spans × hidden size and dominates the peak after the encoder's own.
    pub max_spans: usize,
    /// Candidate mention pairs per batch (bounds the coreference and relation heads' memory;
    /// estimated before prediction from the candidate spans).
    pub max_pairs: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_word_pieces: 8192,
            max_docs: 64,
            lookahead: 512,
            max_spans: 10_000,
            max_pairs: 2_000_000,
        }
    }
}

/// What packing needs to know about one prepared document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Length in word pieces of the document's longest encoder row (special tokens included).
    pub row_len: usize,
    /// Encoder rows: 1, or the number of windows of a document longer than the encoder.
    pub rows: usize,
    /// Word pieces that are not padding (summed over the rows).
    pub word_pieces: usize,
    /// Candidate spans.
    pub spans: usize,
    /// Estimated mention pairs (coreference and relation heads).
    pub pairs: usize,
}

/// Running totals of a batch being filled.
#[derive(Debug, Clone, Copy, Default)]
struct Fill {
    docs: usize,
    rows: usize,
    row_len: usize,
    spans: usize,
    pairs: usize,
}

impl Fill {
    fn with(&self, c: &Cost) -> Fill {
        Fill {
            docs: self.docs + 1,
            rows: self.rows + c.rows,
            row_len: self.row_len.max(c.row_len),
            spans: self.spans + c.spans,
            pairs: self.pairs + c.pairs,
        }
    }

    fn fits(&self, cfg: &BatchConfig) -> bool {
        self.docs <= cfg.max_docs
            && self.rows * self.row_len <= cfg.max_word_pieces
            && self.spans <= cfg.max_spans
            && self.pairs <= cfg.max_pairs
    }
}

/// Sorts `items` by cost (stable: equal lengths keep their arrival order, so packing is
/// deterministic) and packs them greedily into batches within `cfg`. An item too large for any
/// budget on its own forms a batch by itself: it cannot be split here (the device worker splits
/// only batches of several documents).
pub fn pack<T>(mut items: Vec<T>, cfg: &BatchConfig, cost: impl Fn(&T) -> Cost) -> Vec<Vec<T>> {
    items.sort_by_key(|t| {
        let c = cost(t);
        (c.row_len, c.rows)
    });
    let mut batches = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut fill = Fill::default();
    for item in items {
        let next = fill.with(&cost(&item));
        if !current.is_empty() && !next.fits(cfg) {
            batches.push(std::mem::take(&mut current));
            fill = Fill::default().with(&cost(&item));
        } else {
            fill = next;
        }
        current.push(item);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Real and padded word pieces of a batch (padding efficiency = real / padded).
pub fn padding(costs: impl IntoIterator<Item = Cost>) -> (usize, usize) {
    let mut real = 0;
    let mut rows = 0;
    let mut longest = 0;
    for c in costs {
        real += c.word_pieces;
        rows += c.rows;
        longest = longest.max(c.row_len);
    }
    (real, rows * longest)
}

/// Collects a stream into look-ahead windows and packs each window. Holds at most
/// `cfg.lookahead` items.
pub struct Bucketer<T, F> {
    cfg: BatchConfig,
    cost: F,
    window: Vec<T>,
}

impl<T, F: Fn(&T) -> Cost> Bucketer<T, F> {
    pub fn new(cfg: BatchConfig, cost: F) -> Self {
        Bucketer {
            window: Vec::with_capacity(cfg.lookahead),
            cfg,
            cost,
        }
    }

    /// Adds an item; returns the batches of the window when it is full.
    pub fn push(&mut self, item: T) -> Vec<Vec<T>> {
        self.window.push(item);
        if self.window.len() >= self.cfg.lookahead {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// Packs whatever the window holds (end of input, or a caller that must not wait).
    pub fn flush(&mut self) -> Vec<Vec<T>> {
        let items = std::mem::take(&mut self.window);
        pack(items, &self.cfg, &self.cost)
    }

    pub fn len(&self) -> usize {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(max_word_pieces: usize, max_docs: usize) -> BatchConfig {
        BatchConfig {
            max_word_pieces,
            max_docs,
            lookahead: 1000,
            max_spans: 1_000_000,
            max_pairs: 1_000_000,
        }
    }

    fn doc(len: usize) -> Cost {
        Cost {
            row_len: len,
            rows: 1,
            word_pieces: len,
            spans: len * 5,
            pairs: len,
        }
    }

    #[test]
    fn packs_similar_lengths_under_the_padded_budget() {
        let lens = [100, 510, 120, 480, 110, 500];
        let batches = pack(lens.to_vec(), &cfg(1024, 8), |&l| doc(l));
        // Sorted: 100 110 120 | 480 500 | 510: 4×120 would fit but 4 of the long ones would not.
        assert_eq!(
            batches,
            vec![vec![100, 110, 120], vec![480, 500], vec![510]]
        );
        for b in &batches {
            let (_, padded) = padding(b.iter().map(|&l| doc(l)));
            assert!(padded <= 1024);
        }
    }

    #[test]
    fn oversized_document_goes_alone_and_limits_apply() {
        let batches = pack(vec![3000, 10, 10, 10], &cfg(1024, 2), |&l| doc(l));
        assert_eq!(batches, vec![vec![10, 10], vec![10], vec![3000]]);
        let mut c = cfg(1_000_000, 100);
        c.max_spans = 100;
        let batches = pack(vec![10; 5], &c, |&l| doc(l));
        assert_eq!(batches.len(), 3, "50 spans each, 100 per batch");
    }

    #[test]
    fn bucketer_emits_full_windows_and_flushes_the_rest() {
        let mut c = cfg(10_000, 4);
        c.lookahead = 5;
        let mut b = Bucketer::new(c, |&l: &usize| doc(l));
        let mut out = Vec::new();
        for l in [5, 4, 3, 2, 1, 9, 8] {
            out.extend(b.push(l));
        }
        assert_eq!(out, vec![vec![1, 2, 3, 4], vec![5]]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.flush(), vec![vec![8, 9]]);
        assert!(b.is_empty());
    }

    proptest! {
        #[test]
        fn every_item_once_and_every_multi_batch_within_budget(
            lens in proptest::collection::vec(1usize..700, 0..200),
            budget in 256usize..4096,
            max_docs in 1usize..40,
        ) {
            let c = cfg(budget, max_docs);
            let batches = pack(lens.clone(), &c, |&l| doc(l));
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            let mut want = lens.clone();
            seen.sort();
            want.sort();
            prop_assert_eq!(seen, want);
            for b in &batches {
                prop_assert!(!b.is_empty());
                if b.len() > 1 {
                    prop_assert!(b.len() <= max_docs);
                    let (_, padded) = padding(b.iter().map(|&l| doc(l)));
                    prop_assert!(padded <= budget);
                }
            }
        }
    }
}
