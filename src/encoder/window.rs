//! Splitting long documents into overlapping encoder windows, and packing windows into padded
//! batches under a token budget. Both are pure functions so the plans are easy to test and
//! identical on every run and device.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How documents longer than the encoder's position limit are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Word pieces per window, special tokens included (at most the encoder's positions).
    pub max_len: usize,
    /// Word pieces shared by consecutive windows.
    pub overlap: usize,
    /// The special tokens around each window.
    #[serde(default)]
    pub framing: Framing,
}

/// What surrounds a window's word pieces in the encoder input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// `[CLS] pieces [SEP]`, as BERT was pre-trained.
    #[default]
    ClsSep,
    /// The pieces alone: the reference implementation encodes documents without special
    /// tokens, so its checkpoints expect no `[CLS]` at position 0.
    None,
}

impl Framing {
    /// Special tokens added to each window.
    pub fn tokens(self) -> usize {
        match self {
            Framing::ClsSep => 2,
            Framing::None => 0,
        }
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_len: 512,
            overlap: 128,
            framing: Framing::ClsSep,
        }
    }
}

/// One encoder window over a document's word pieces (special tokens excluded): it encodes the
/// pieces `[start, end)` and supplies the output rows of `[keep_start, keep_end)`, a sub-range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub keep_start: usize,
    pub keep_end: usize,
}

/// Word pieces per window without its special tokens.
pub fn content_width(cfg: &WindowConfig) -> usize {
    cfg.max_len.saturating_sub(cfg.framing.tokens())
}

/// Checks that `cfg` yields windows the encoder can run: room for at least one piece, windows
/// that advance (overlap below the content width), and no more tokens than position embeddings.
pub fn check_window_config(cfg: &WindowConfig, max_positions: i64) -> Result<()> {
    let width = content_width(cfg);
    if width == 0 {
        return Err(Error::Config(format!(
            "window max_len {} leaves no room for word pieces besides the special tokens",
            cfg.max_len
        )));
    }
    if cfg.overlap >= width {
        return Err(Error::Config(format!(
            "window overlap {} must be smaller than the {width} word pieces of a window",
            cfg.overlap
        )));
    }
    if cfg.max_len as i64 > max_positions {
        return Err(Error::Config(format!(
            "window max_len {} exceeds the encoder's {max_positions} position embeddings",
            cfg.max_len
        )));
    }
    Ok(())
}

/// Plans the windows of a document of `len` word pieces.
///
/// A document that fits (`len <=` [`content_width`]) is one window, so windowed and single-pass
/// encoding agree exactly. Otherwise windows start every `width - overlap` pieces and the last
/// one is aligned to end at `len`. Between two consecutive windows the overlap is split at its
/// midpoint, so each piece comes from the window where it has more context on the cut side;
/// on a tie the earlier window keeps it. An empty document has no windows.
///
/// Panics if `cfg` fails [`check_window_config`]'s width/overlap checks.
pub fn plan_windows(len: usize, cfg: &WindowConfig) -> Vec<Window> {
    let width = content_width(cfg);
    assert!(
        width > 0 && cfg.overlap < width,
        "invalid window config {cfg:?}"
    );
    if len == 0 {
        return Vec::new();
    }
    let mut starts = Vec::new();
    let mut start = 0;
    while start + width < len {
        starts.push(start);
        start += width - cfg.overlap;
    }
    // Every start pushed so far is < len - width, so the final aligned start is strictly later.
    starts.push(len.saturating_sub(width));

    let mut windows: Vec<Window> = starts
        .iter()
        .map(|&s| Window {
            start: s,
            end: (s + width).min(len),
            keep_start: 0,
            keep_end: len,
        })
        .collect();
    for i in 1..windows.len() {
        // Piece p is as far from the left window's end as from the right window's start when
        // 2p = prev.end - 1 + next.start; pieces up to there stay in the left window.
        let split = (windows[i].start + windows[i - 1].end).div_ceil(2);
        windows[i - 1].keep_end = split;
        windows[i].keep_start = split;
    }
    windows
}

/// Packs sequences of the given lengths into batches, each padded to its longest member, so that
/// `rows × longest ≤ max_batch_tokens` (a sequence longer than the budget goes alone). Sequences
/// are taken longest first (ties in input order) to keep padding low; the result lists indices
/// into `lengths`.
pub fn plan_batches(lengths: &[usize], max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match batches.last_mut() {
            // Sorted descending: the batch's first member is its longest.
            Some(batch) if (batch.len() + 1) * lengths[batch[0]] <= max_batch_tokens => {
                batch.push(i)
            }
            _ => batches.push(vec![i]),
        }
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(max_len: usize, overlap: usize) -> WindowConfig {
        WindowConfig {
            max_len,
            overlap,
            framing: Framing::ClsSep,
        }
    }

    #[test]
    fn short_document_is_one_window() {
        let w = plan_windows(10, &cfg(12, 4));
        assert_eq!(
            w,
            vec![Window {
                start: 0,
                end: 10,
                keep_start: 0,
                keep_end: 10
            }]
        );
        assert!(plan_windows(0, &cfg(12, 4)).is_empty());
    }

    #[test]
    fn long_document_windows_split_overlaps_at_midpoint() {
        // width 10, stride 6: starts 0, 6, then the last aligned to end at 20 → 10.
        let w = plan_windows(20, &cfg(12, 4));
        let spans: Vec<_> = w
            .iter()
            .map(|w| (w.start, w.end, w.keep_start, w.keep_end))
            .collect();
        // Overlap [6, 10) splits at 8; overlap [10, 16) splits at 13.
        assert_eq!(spans, vec![(0, 10, 0, 8), (6, 16, 8, 13), (10, 20, 13, 20)]);
    }

    #[test]
    fn odd_overlap_tie_goes_to_earlier_window() {
        // width 10, overlap 5: windows [0,10) and [5,15); piece 7 has 2 pieces of context on the
        // cut side in both windows, and stays in the first.
        let w = plan_windows(15, &cfg(12, 5));
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].keep_end, w[1].keep_start), (8, 8));
    }

    #[test]
    fn rejects_unusable_configs() {
        assert!(check_window_config(&cfg(2, 0), 512).is_err());
        assert!(check_window_config(&cfg(12, 10), 512).is_err());
        assert!(check_window_config(&cfg(600, 128), 512).is_err());
        assert!(check_window_config(&cfg(512, 128), 512).is_ok());
    }

    #[test]
    fn batches_respect_budget_longest_first() {
        let batches = plan_batches(&[5, 9, 9, 3, 20, 4], 20);
        assert_eq!(batches, vec![vec![4], vec![1, 2], vec![0, 5, 3]]);
    }

    proptest! {
        #[test]
        fn windows_cover_every_piece_once(
            len in 0usize..3000,
            max_len in 3usize..300,
            overlap_frac in 0.0f64..1.0,
        ) {
            let width = max_len - 2;
            let overlap = ((width as f64) * overlap_frac) as usize;
            prop_assume!(overlap < width);
            let c = cfg(max_len, overlap);
            let windows = plan_windows(len, &c);
            let mut next = 0;
            for (i, w) in windows.iter().enumerate() {
                prop_assert!(w.end - w.start <= width);
                prop_assert!(w.start <= w.keep_start && w.keep_start < w.keep_end);
                prop_assert!(w.keep_end <= w.end && w.end <= len);
                prop_assert_eq!(w.keep_start, next);
                next = w.keep_end;
                if i > 0 {
                    let prev = windows[i - 1];
                    prop_assert!(prev.start < w.start && prev.end <= w.end);
                    // Context on the cut side: the kept boundary pieces are no closer to the
                    // cut edge than in the neighbouring window.
                    let p = w.keep_start;
                    prop_assert!(p - w.start >= prev.end.saturating_sub(p + 1));
                    let q = prev.keep_end - 1;
                    prop_assert!(prev.end - 1 - q >= q.saturating_sub(w.start));
                }
            }
            prop_assert_eq!(next, len);
            if len <= width {
                prop_assert!(windows.len() == usize::from(len > 0));
            }
        }

        #[test]
        fn batches_hold_every_sequence_once_within_budget(
            lengths in proptest::collection::vec(1usize..100, 0..60),
            budget in 1usize..400,
        ) {
            let batches = plan_batches(&lengths, budget);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for b in &batches {
                let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
                prop_assert!(b.len() == 1 || b.len() * longest <= budget);
            }
        }
    }
}
