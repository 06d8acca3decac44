//! Relation classification: the multi-instance head (MRC, the JEREX model) and the global
//! baseline (GRC).
//!
//! MRC scores every mention pair of an entity pair with `pair_linear` over
//! `[ctx; m_h; m_t; e_h; e_t; tok; sent]`, split exactly into per-part products so mentions,
//! entities and distance tables are projected once and only the context term is per pair
//! (the reference multiplies every pair's concatenation by the whole layer); contexts come from
//! the range-max table, computed once per distinct range in a chunk. Mention pairs are processed in chunks whose `[chunk, H]` temporaries stay under
//! the caller's budget, with a running segment max per entity pair.

use std::collections::HashMap;

use tch::{nn, Kind, Tensor};

use crate::corpus::Span;
use crate::layers::{embedding, Linear};
use crate::model::config::{HeadConfig, RelationHead};
use crate::model::input::{cat_rows, chunk_starts, clamp_index, index_tensor};
use crate::model::pool::{row_sums, scatter_max, scatter_max_, RangeMax};

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

/// What the relation heads read, for a batch of documents.
pub struct RelationInput<'a> {
    /// Range-max table over the encoder states (contexts).
    pub pool: &'a RangeMax,
    /// `[M, H]`, rows indexed by `MentionPairs::head/tail`.
    pub mention_reprs: &'a Tensor,
    /// `[E, H]` (dropped out).
    pub entity_reprs: &'a Tensor,
    /// `[E]` type indices (gold in training, argmax at inference).
    pub entity_types: &'a Tensor,
    pub entity_pairs: &'a [(usize, usize)],
    pub mention_pairs: &'a MentionPairs,
}

/// How the relation heads run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RelationPass {
    /// With dropout; no evidence.
    Train,
    /// Evidence is counted only for the entity pairs with some relation probability at or
    /// above `threshold`: only their relations are output.
    Infer { threshold: f32 },
}

impl RelationPass {
    fn train(self) -> bool {
        self == RelationPass::Train
    }
}

/// Logits `[R, relation types]`, and for MRC at inference, per mention pair, how many hidden
/// dimensions it wins in its entity pair's max-pool (for evidence; 0 in the entity pairs the
/// pass's threshold leaves without relations).
pub struct RelationOutput {
    pub logits: Tensor,
    pub wins: Option<Tensor>,
}

pub enum RelationClassifier {
    Mrc(Mrc),
    Grc(Grc),
}

impl RelationClassifier {
    /// Builds the configured head under the model root `p` (its parameter names differ).
    pub fn new(
        p: &nn::Path,
        hidden: i64,
        heads: &HeadConfig,
        entity_types: i64,
        relation_types: i64,
    ) -> RelationClassifier {
        match heads.relation_head {
            RelationHead::Mrc => RelationClassifier::Mrc(Mrc::new(
                p / "relation_classification",
                hidden,
                heads,
                entity_types,
                relation_types,
            )),
            RelationHead::Grc => {
                RelationClassifier::Grc(Grc::new(p, hidden, heads, entity_types, relation_types))
            }
        }
    }

    pub fn forward(
        &self,
        input: &RelationInput,
        pass: RelationPass,
        chunk_rows: i64,
    ) -> RelationOutput {
        match self {
            RelationClassifier::Mrc(m) => m.forward(input, pass, chunk_rows),
            RelationClassifier::Grc(g) => RelationOutput {
                logits: g.forward(input, pass.train()),
                wins: None,
            },
        }
    }

    /// Computes once the products of the head's weights alone that every inference batch would
    /// otherwise recompute. Only for replicas whose weights no longer change: a later weight
    /// update would not reach them.
    pub fn freeze(&mut self) {
        if let RelationClassifier::Mrc(m) = self {
            m.frozen = Some(tch::no_grad(|| m.folded_weights()));
        }
    }

    /// Evidence per entity pair (index into the mention pairs): MRC, the pair winning the most
    /// max-pool dimensions; GRC, the closest pair (token, then sentence distance).
    pub fn evidence(&self, pairs: &MentionPairs, wins: Option<&[i64]>) -> Vec<usize> {
        match wins {
            Some(wins) => pairs.pick(|p| std::cmp::Reverse(wins[p])),
            None => pairs.pick(|p| (pairs.token_distance[p], pairs.sentence_distance[p])),
        }
    }
}

/// The multi-instance relation classifier (parameters under `relation_classification`).
pub struct Mrc {
    token_distance_embeddings: Tensor,
    sentence_distance_embeddings: Tensor,
    entity_type_embeddings: Tensor,
    pair_linear: Linear,
    rel_linear: Linear,
    rel_classifier: Linear,
    hidden: i64,
    meta: i64,
    dropout: f64,
    /// The folding products, once the weights are frozen (see [`RelationClassifier::freeze`]).
    frozen: Option<FoldedWeights>,
}

/// What folding `rel_linear` into a batch's pair tables needs besides the batch's own rows:
/// the distance blocks and the context weight times `rel_linear`'s pooled block, and the
/// entity type table. A product of weights alone: 0.33 GFLOP per batch (mostly the 750 distance
/// rows) unless frozen.
struct FoldedWeights {
    distance: Tensor,
    w_ctx: Tensor,
    types: Tensor,
}

impl Mrc {
    pub fn new(
        p: nn::Path,
        hidden: i64,
        heads: &HeadConfig,
        entity_types: i64,
        relation_types: i64,
    ) -> Mrc {
        let e = heads.meta_embedding_size;
        Mrc {
            token_distance_embeddings: embedding(
                &p / "token_distance_embeddings",
                heads.token_distance_embeddings,
                e,
            ),
            sentence_distance_embeddings: embedding(
                &p / "sentence_distance_embeddings",
                heads.sentence_distance_embeddings,
                e,
            ),
            entity_type_embeddings: embedding(&p / "entity_type_embeddings", entity_types, e),
            pair_linear: Linear::new(&p / "pair_linear", 5 * hidden + 2 * e, hidden),
            rel_linear: Linear::new(&p / "rel_linear", hidden + 2 * e, hidden),
            rel_classifier: Linear::new(&p / "rel_classifier", hidden, relation_types),
            hidden,
            meta: e,
            dropout: heads.dropout,
            frozen: None,
        }
    }

    /// Projection of rows through the `part`-th block of `pair_linear`'s input
    /// (ctx | m_h | m_t | e_h | e_t | tok | sent).
    fn project(&self, rows: &Tensor, part: i64) -> Tensor {
        let h = self.hidden;
        let (from, len) = if part < 5 {
            (part * h, h)
        } else {
            (5 * h + (part - 5) * self.meta, self.meta)
        };
        rows.matmul(&self.pair_linear.columns(from, len).tr())
    }

    /// The per-part projections of `pair_linear` for this input: mention and entity rows, the
    /// distance tables (bias folded into the sentence table) and the context weight.
    fn tables(&self, input: &RelationInput) -> PairTables {
        let [tok, sent] = self.distance_blocks();
        let blocks = [
            self.project(input.mention_reprs, 1),
            self.project(input.mention_reprs, 2),
            self.project(input.entity_reprs, 3),
            self.project(input.entity_reprs, 4),
            tok,
            sent,
        ];
        PairTables::stacked(&blocks, self.w_ctx())
    }

    /// The token and sentence distance tables through their blocks of `pair_linear`, its bias
    /// folded into the sentence table.
    fn distance_blocks(&self) -> [Tensor; 2] {
        [
            self.project(&self.token_distance_embeddings, 5),
            self.project(&self.sentence_distance_embeddings, 6) + &self.pair_linear.bias,
        ]
    }

    /// The context block of `pair_linear`, transposed.
    fn w_ctx(&self) -> Tensor {
        self.pair_linear.columns(0, self.hidden).tr()
    }

    fn folded_weights(&self) -> FoldedWeights {
        let w = self.w_pooled();
        FoldedWeights {
            distance: Tensor::cat(&self.distance_blocks(), 0).matmul(&w),
            w_ctx: self.w_ctx().matmul(&w),
            types: self.type_table(),
        }
    }

    fn forward(
        &self,
        input: &RelationInput,
        pass: RelationPass,
        chunk_rows: i64,
    ) -> RelationOutput {
        let tables = self.tables(input);
        let threshold = match pass {
            RelationPass::Train => {
                let (pooled, _) = self.pool_pairs(input, &tables, true, chunk_rows);
                let hid = pooled.matmul(&self.w_pooled()) + self.type_terms(input);
                return RelationOutput {
                    logits: self.classify(hid, true),
                    wins: None,
                };
            }
            RelationPass::Infer { threshold } => threshold,
        };
        // At inference an entity pair with a single mention pair (most of them: most entities
        // have one mention) pools nothing: `rel_linear` is folded into the tables (its pooled
        // block by linearity, its type rows as two more blocks), and each chunk of pair rows
        // goes straight to the classifier. Both parts are scored, then put back in order.
        let offsets = &input.mention_pairs.offsets;
        let (single, multi): (Vec<usize>, Vec<usize>) =
            (0..input.entity_pairs.len()).partition(|&r| offsets[r + 1] - offsets[r] == 1);
        let device = input.mention_reprs.device();
        let (mut logit_parts, mut win_parts) = (Vec::new(), Vec::new());
        let (mut rows, mut pair_rows) = (Vec::new(), Vec::new());
        for (part, is_single) in [(&multi, false), (&single, true)] {
            if part.is_empty() {
                continue;
            }
            let pairs = input.mention_pairs.select(part);
            let entity_pairs: Vec<(usize, usize)> =
                part.iter().map(|&r| input.entity_pairs[r]).collect();
            let sub = RelationInput {
                mention_pairs: &pairs,
                entity_pairs: &entity_pairs,
                ..*input
            };
            if is_single {
                let computed;
                let weights = match &self.frozen {
                    Some(frozen) => frozen,
                    None => {
                        computed = self.folded_weights();
                        &computed
                    }
                };
                let folded = tables.folded(&self.w_pooled(), weights);
                let mut chunks = Vec::new();
                self.pair_chunks(&sub, &folded, false, chunk_rows, |_, _, hid| {
                    chunks.push(self.classify(hid, false))
                });
                logit_parts.push(cat_rows(&chunks, &[0], Kind::Float, device));
                // A lone mention pair wins every dimension of its entity pair's max-pool.
                win_parts.push(Tensor::full(
                    [pairs.len() as i64],
                    self.hidden,
                    (Kind::Int64, device),
                ));
            } else {
                let (pooled, kept) = self.pool_pairs(&sub, &tables, false, chunk_rows);
                let hid = pooled.matmul(&self.w_pooled()) + self.type_terms(&sub);
                let logits = self.classify(hid, false);
                // Sigmoid as the caller thresholds it, so the same entity pairs pass.
                let needed = logits.amax(1, false).sigmoid().ge(f64::from(threshold));
                win_parts.push(kept.wins(&pooled, &needed));
                logit_parts.push(logits);
            }
            rows.extend(part.iter().map(|&r| r as i64));
            pair_rows.extend(
                part.iter()
                    .flat_map(|&r| offsets[r] as i64..offsets[r + 1] as i64),
            );
        }
        // Rows of the parts back to the input's order.
        let unpermute = |parts: &[Tensor], order: &[i64], empty: &[i64], kind: Kind| {
            let stacked = cat_rows(parts, empty, kind, device);
            stacked
                .zeros_like()
                .index_copy(0, &index_tensor(order, device), &stacked)
        };
        let n_rt = self.rel_classifier.bias.size()[0];
        RelationOutput {
            logits: unpermute(&logit_parts, &rows, &[0, n_rt], Kind::Float),
            wins: Some(unpermute(&win_parts, &pair_rows, &[0], Kind::Int64)),
        }
    }

    /// The block of `rel_linear` that reads the pooled pair representation, transposed.
    fn w_pooled(&self) -> Tensor {
        self.rel_linear.columns(0, self.hidden).tr()
    }

    /// The entity type blocks of `rel_linear` projected into one table, `[2 · types, H]`: the
    /// head rows (with the bias), then the tail rows.
    fn type_table(&self) -> Tensor {
        let (h, e) = (self.hidden, self.meta);
        let project = |from: i64| {
            self.entity_type_embeddings
                .matmul(&self.rel_linear.columns(from, e).tr())
        };
        Tensor::cat(&[project(h) + &self.rel_linear.bias, project(h + e)], 0)
    }

    /// `[R, H]`: the entity type terms of `rel_linear` and its bias, per entity pair.
    fn type_terms(&self, input: &RelationInput) -> Tensor {
        let (ep_head, ep_tail) = pair_ends(input.entity_pairs, input.entity_types.device());
        let n_types = self.entity_type_embeddings.size()[0];
        let index = Tensor::stack(
            &[
                input.entity_types.index_select(0, &ep_head),
                input.entity_types.index_select(0, &ep_tail) + n_types,
            ],
            1,
        );
        row_sums(&self.type_table(), &index.view([-1]), 2)
    }

    /// Relation logits from `rel_linear`'s output before its activation.
    fn classify(&self, mut hid: Tensor, train: bool) -> Tensor {
        let _ = hid.relu_();
        self.rel_classifier
            .forward(&hid.dropout(self.dropout, train))
    }

    /// The (dropped-out) pair representations built from `tables`, chunk by chunk: calls
    /// `each(start, len, reprs)` with `reprs` `[len, out]` for mention pairs `start..start + len`.
    /// A pair's mention, entity and distance terms (and with typed tables its entity types)
    /// are one fused row sum; contexts are pooled and projected once per distinct range in a
    /// chunk.
    fn pair_chunks(
        &self,
        input: &RelationInput,
        tables: &PairTables,
        train: bool,
        chunk_rows: i64,
        mut each: impl FnMut(i64, i64, Tensor),
    ) {
        let pairs = input.mention_pairs;
        let device = input.mention_reprs.device();
        let s = &tables.starts;
        let (tok_count, sent_count) = (s[5] - s[4], s[6] - s[5]);
        let mut bag = Vec::with_capacity(pairs.len() * 6);
        let (mut heads, mut tails) = (Vec::new(), Vec::new());
        for (r, w) in pairs.offsets.windows(2).enumerate() {
            let (eh, et) = input.entity_pairs[r];
            for p in w[0]..w[1] {
                bag.extend([
                    s[0] + pairs.head[p] as i64,
                    s[1] + pairs.tail[p] as i64,
                    s[2] + eh as i64,
                    s[3] + et as i64,
                    s[4] + clamp_index(pairs.token_distance[p], tok_count),
                    s[5] + clamp_index(pairs.sentence_distance[p], sent_count),
                ]);
                heads.push(eh as i64);
                tails.push(et as i64);
            }
        }
        let mut bag = index_tensor(&bag, device).view([-1, 6]);
        if tables.typed() {
            let types = |entities: &[i64], block: usize| {
                (input
                    .entity_types
                    .index_select(0, &index_tensor(entities, device))
                    + s[block])
                    .unsqueeze(1)
            };
            bag = Tensor::cat(&[bag, types(&heads, 6), types(&tails, 7)], 1);
        }
        let terms = bag.size()[1];
        let bag = bag.view([-1]);
        for (start, len) in chunk_starts(pairs.len() as i64, chunk_rows) {
            let mut reprs = row_sums(
                &tables.rows,
                &bag.narrow(0, terms * start, terms * len),
                terms,
            );
            // Pairs with context (mentions that do not touch), and their distinct ranges.
            let mut seen: HashMap<(usize, usize), i64> = HashMap::new();
            let (mut ranges, mut at, mut slot) = (Vec::new(), Vec::new(), Vec::new());
            let window = start as usize..(start + len) as usize;
            for (i, c) in pairs.context[window].iter().enumerate() {
                if let Some(range) = *c {
                    slot.push(*seen.entry(range).or_insert_with(|| {
                        ranges.push(range);
                        ranges.len() as i64 - 1
                    }));
                    at.push(i as i64);
                }
            }
            if !ranges.is_empty() {
                let ctx = input.pool.query(&ranges).matmul(&tables.w_ctx);
                let _ = reprs.index_add_(
                    0,
                    &index_tensor(&at, device),
                    &ctx.index_select(0, &index_tensor(&slot, device)),
                );
            }
            each(start, len, reprs.dropout(self.dropout, train));
        }
    }

    /// `[R, H]`: per entity pair, the max over its mention pairs of the (dropped-out) pair
    /// representations built from `tables`; at inference also the pair representations, to
    /// count their evidence wins.
    fn pool_pairs(
        &self,
        input: &RelationInput,
        tables: &PairTables,
        train: bool,
        chunk_rows: i64,
    ) -> (Tensor, KeptPairs) {
        let pairs = input.mention_pairs;
        let device = input.mention_reprs.device();
        let mut entity_pair = Vec::with_capacity(pairs.len());
        for (r, w) in pairs.offsets.windows(2).enumerate() {
            entity_pair.extend(std::iter::repeat_n(r as i64, w[1] - w[0]));
        }
        let entity_pair = index_tensor(&entity_pair, device);
        let mut pooled = Tensor::full(
            [input.entity_pairs.len() as i64, self.hidden],
            f64::NEG_INFINITY,
            (Kind::Float, device),
        );
        // At inference the chunks are kept for the evidence counts: callers bound the mention
        // pairs per call to a few chunks, so this costs little memory and saves recomputing.
        let mut kept = Vec::new();
        self.pair_chunks(input, tables, train, chunk_rows, |start, len, u| {
            let group = entity_pair.narrow(0, start, len);
            if train {
                pooled = scatter_max(&pooled, &u, &group);
            } else {
                // In place: no copy of the accumulator per chunk (autograd would need one).
                scatter_max_(&mut pooled, &u, &group);
                kept.push((start, len, u));
            }
        });
        (
            pooled,
            KeptPairs {
                entity_pair,
                chunks: kept,
            },
        )
    }

    /// The unsplit `pair_linear` over the concatenation `[ctx; m_h; m_t; e_h; e_t; tok; sent]`
    /// (no dropout), for the exactness test: `[P, H]` pair representations.
    #[cfg(test)]
    pub(crate) fn pair_repr_concat(&self, input: &RelationInput) -> Tensor {
        let pairs = input.mention_pairs;
        let device = input.mention_reprs.device();
        let h = self.hidden;
        let mut rows = Vec::new();
        for (r, w) in pairs.offsets.windows(2).enumerate() {
            let (eh, et) = input.entity_pairs[r];
            for p in w[0]..w[1] {
                let ctx = match pairs.context[p] {
                    Some(range) => input.pool.query(&[range]),
                    None => Tensor::zeros([1, h], (Kind::Float, device)),
                };
                let tok = clamp_index(
                    pairs.token_distance[p],
                    self.token_distance_embeddings.size()[0],
                );
                let sent = clamp_index(
                    pairs.sentence_distance[p],
                    self.sentence_distance_embeddings.size()[0],
                );
                rows.push(Tensor::cat(
                    &[
                        ctx,
                        input.mention_reprs.narrow(0, pairs.head[p] as i64, 1),
                        input.mention_reprs.narrow(0, pairs.tail[p] as i64, 1),
                        input.entity_reprs.narrow(0, eh as i64, 1),
                        input.entity_reprs.narrow(0, et as i64, 1),
                        self.token_distance_embeddings.narrow(0, tok, 1),
                        self.sentence_distance_embeddings.narrow(0, sent, 1),
                    ],
                    1,
                ));
            }
        }
        self.pair_linear.forward(&Tensor::cat(&rows, 0))
    }

    /// The unsplit `rel_linear` over `[pooled; type(head); type(tail)]`, for the exactness test.
    #[cfg(test)]
    pub(crate) fn classify_concat(&self, pooled: &Tensor, input: &RelationInput) -> Tensor {
        let (ep_head, ep_tail) = pair_ends(input.entity_pairs, pooled.device());
        let type_emb = |ends: &Tensor| {
            self.entity_type_embeddings
                .index_select(0, &input.entity_types.index_select(0, ends))
        };
        let y = Tensor::cat(&[pooled, &type_emb(&ep_head), &type_emb(&ep_tail)], 1);
        self.rel_classifier
            .forward(&self.rel_linear.forward(&y).relu())
    }
}

/// The pair representations of [`Mrc::pool_pairs`] at inference, chunk by chunk (`start`,
/// `len`, `[len, H]`), with each mention pair's entity pair.
struct KeptPairs {
    entity_pair: Tensor,
    chunks: Vec<(i64, i64, Tensor)>,
}

impl KeptPairs {
    /// `[P]`: how many dimensions of its entity pair's max-pool (`pooled`, `[R, H]`) each
    /// mention pair attains. Only in the entity pairs where `needed` (`[R]`, bool) is true, 0
    /// elsewhere: evidence matters only where a relation is output.
    fn wins(&self, pooled: &Tensor, needed: &Tensor) -> Tensor {
        let device = pooled.device();
        let counts: Vec<Tensor> = self
            .chunks
            .iter()
            .map(|(start, len, u)| {
                let group = self.entity_pair.narrow(0, *start, *len);
                let rows = needed.index_select(0, &group).nonzero().squeeze_dim(1);
                let counts = Tensor::zeros([*len], (Kind::Int64, device));
                if rows.size()[0] == 0 {
                    return counts;
                }
                let picked = u
                    .index_select(0, &rows)
                    .eq_tensor(&pooled.index_select(0, &group.index_select(0, &rows)))
                    .sum_dim_intlist(1, false, Kind::Int64);
                counts.index_copy(0, &rows, &picked)
            })
            .collect();
        cat_rows(&counts, &[0], Kind::Int64, device)
    }
}

/// `pair_linear`'s input blocks projected once per call and stacked (m_h | m_t | e_h | e_t |
/// tok | sent, block `k` from row `starts[k]`; typed tables add head and tail entity type
/// blocks), so a pair's non-context terms are one fused row sum; its context is pooled and
/// multiplied by `w_ctx` (`[H, out]`).
struct PairTables {
    rows: Tensor,
    /// First row of each block, then the row count.
    starts: Vec<i64>,
    w_ctx: Tensor,
}

impl PairTables {
    /// Blocks made from the batch (m_h, m_t, e_h, e_t); the later ones come from weights alone.
    const BATCH_BLOCKS: usize = 4;

    fn stacked(blocks: &[Tensor], w_ctx: Tensor) -> PairTables {
        let mut starts = vec![0i64];
        for block in blocks {
            starts.push(starts[starts.len() - 1] + block.size()[0]);
        }
        PairTables {
            rows: Tensor::cat(blocks, 0),
            starts,
            w_ctx,
        }
    }

    /// Whether the blocks include the entity type rows.
    fn typed(&self) -> bool {
        self.starts.len() == 9
    }

    /// Every table times `w` (`[H, out]`, `rel_linear`'s pooled block), by linearity the tables
    /// of `pair_repr · w`, plus the type rows (`[2 · entity types, out]`, head rows then tail
    /// rows) as two blocks. The mention and entity blocks are multiplied here; the distance
    /// blocks, the context weight and the type rows come from `weights`, made with the same `w`.
    fn folded(&self, w: &Tensor, weights: &FoldedWeights) -> PairTables {
        let n_types = weights.types.size()[0] / 2;
        let end = self.starts[self.starts.len() - 1];
        let mut starts = self.starts.clone();
        starts.extend([end + n_types, end + 2 * n_types]);
        let own = self
            .rows
            .narrow(0, 0, self.starts[Self::BATCH_BLOCKS])
            .matmul(w);
        PairTables {
            rows: Tensor::cat(
                &[
                    own,
                    weights.distance.shallow_clone(),
                    weights.types.shallow_clone(),
                ],
                0,
            ),
            starts,
            w_ctx: weights.w_ctx.shallow_clone(),
        }
    }
}

/// Head and tail entity indices of the entity pairs, as device tensors.
fn pair_ends(pairs: &[(usize, usize)], device: tch::Device) -> (Tensor, Tensor) {
    let heads: Vec<i64> = pairs.iter().map(|p| p.0 as i64).collect();
    let tails: Vec<i64> = pairs.iter().map(|p| p.1 as i64).collect();
    (index_tensor(&heads, device), index_tensor(&tails, device))
}

/// The global relation classifier: `FFNN([e_h; e_t; type_h; type_t])`, split exactly into
/// per-entity and per-type projections.
pub struct Grc {
    entity_embeddings: Tensor,
    entity_pair_linear: Linear,
    rel_classifier: Linear,
    hidden: i64,
    meta: i64,
    dropout: f64,
}

impl Grc {
    /// Parameters under the model root: `entity_pair_representation.{entity_embeddings,
    /// entity_pair_linear}` and `relation_classification.rel_classifier`.
    pub fn new(
        root: &nn::Path,
        hidden: i64,
        heads: &HeadConfig,
        entity_types: i64,
        relation_types: i64,
    ) -> Grc {
        let e = heads.meta_embedding_size;
        let rep = root / "entity_pair_representation";
        Grc {
            entity_embeddings: embedding(&rep / "entity_embeddings", entity_types, e),
            entity_pair_linear: Linear::new(
                &rep / "entity_pair_linear",
                2 * hidden + 2 * e,
                hidden,
            ),
            rel_classifier: Linear::new(
                root / "relation_classification" / "rel_classifier",
                hidden,
                relation_types,
            ),
            hidden,
            meta: e,
            dropout: heads.dropout,
        }
    }

    fn forward(&self, input: &RelationInput, train: bool) -> Tensor {
        let device = input.entity_reprs.device();
        let (h, e) = (self.hidden, self.meta);
        let w = |from, len| self.entity_pair_linear.columns(from, len).tr();
        let (heads, tails) = pair_ends(input.entity_pairs, device);
        let head_types = input.entity_types.index_select(0, &heads);
        let tail_types = input.entity_types.index_select(0, &tails);
        let rep = input.entity_reprs.matmul(&w(0, h)).index_select(0, &heads)
            + input.entity_reprs.matmul(&w(h, h)).index_select(0, &tails)
            + (self.entity_embeddings.matmul(&w(2 * h, e)) + &self.entity_pair_linear.bias)
                .index_select(0, &head_types)
            + self
                .entity_embeddings
                .matmul(&w(2 * h + e, e))
                .index_select(0, &tail_types);
        self.rel_classifier
            .forward(&rep.relu().dropout(self.dropout, train))
    }

    /// The unsplit layer over `[e_h; e_t; type_h; type_t]` (no dropout), for the exactness test.
    #[cfg(test)]
    pub(crate) fn forward_concat(&self, input: &RelationInput) -> Tensor {
        let device = input.entity_reprs.device();
        let (heads, tails) = pair_ends(input.entity_pairs, device);
        let x = Tensor::cat(
            &[
                input.entity_reprs.index_select(0, &heads),
                input.entity_reprs.index_select(0, &tails),
                self.entity_embeddings
                    .index_select(0, &input.entity_types.index_select(0, &heads)),
                self.entity_embeddings
                    .index_select(0, &input.entity_types.index_select(0, &tails)),
            ],
            1,
        );
        self.rel_classifier
            .forward(&self.entity_pair_linear.forward(&x).relu())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pool::group_max;
    use tch::Device;

    fn span(start: usize, end: usize, sent: usize) -> Span {
        Span { start, end, sent }
    }

    #[test]
    fn distances_and_contexts_follow_the_reference() {
        // Adjacent mentions are at distance 1, overlapping ones at 0, in either order.
        assert_eq!(token_distance(span(0, 2, 0), span(2, 3, 0)), 1);
        assert_eq!(token_distance(span(2, 3, 0), span(0, 2, 0)), 1);
        assert_eq!(token_distance(span(0, 2, 0), span(5, 6, 0)), 4);
        assert_eq!(token_distance(span(0, 4, 0), span(1, 2, 0)), 0);
        assert_eq!(token_distance(span(3, 4, 0), span(3, 6, 0)), 0);
        assert_eq!(context((0, 3), (3, 5)), None);
        assert_eq!(context((0, 3), (5, 7)), Some((3, 5)));
        assert_eq!(context((5, 7), (0, 3)), Some((3, 5)));
        assert_eq!(context((0, 6), (2, 3)), None);
    }

    /// Mentions spread over a long document (distances beyond every table), clusters, pairs.
    struct Fixture {
        pool: RangeMax,
        mention_reprs: Tensor,
        entity_reprs: Tensor,
        types: Tensor,
        entity_pairs: Vec<(usize, usize)>,
        pairs: MentionPairs,
    }

    fn fixture(hidden: i64) -> Fixture {
        let states = Tensor::randn([60, hidden], (Kind::Float, Device::Cpu));
        let pool = RangeMax::new(&states, 60);
        let places = vec![
            MentionPlace {
                words: span(0, 2, 0),
                pieces: (0, 3),
            },
            MentionPlace {
                words: span(2, 3, 0),
                pieces: (3, 4),
            },
            MentionPlace {
                words: span(900, 901, 70),
                pieces: (20, 22),
            },
            MentionPlace {
                words: span(5000, 5003, 400),
                pieces: (40, 45),
            },
            MentionPlace {
                words: span(901, 902, 70),
                pieces: (22, 23),
            },
            MentionPlace {
                words: span(5001, 5002, 400),
                pieces: (41, 42),
            },
            MentionPlace {
                words: span(7, 9, 1),
                pieces: (8, 11),
            },
        ];
        let ranges: Vec<(usize, usize)> = places.iter().map(|p| p.pieces).collect();
        let mention_reprs = pool.query(&ranges);
        // Entities 2 and 3 have one mention: their pairs take the folded inference path.
        let clusters = vec![vec![0, 2], vec![1, 3, 5], vec![4], vec![6]];
        let members: Vec<i64> = clusters.iter().flatten().map(|&m| m as i64).collect();
        let owners: Vec<i64> = clusters
            .iter()
            .enumerate()
            .flat_map(|(e, c)| std::iter::repeat_n(e as i64, c.len()))
            .collect();
        let entity_reprs = group_max(
            &mention_reprs.index_select(0, &Tensor::from_slice(&members)),
            &Tensor::from_slice(&owners),
            4,
        );
        let entity_pairs = vec![
            (0, 1),
            (1, 0),
            (0, 2),
            (2, 0),
            (1, 2),
            (2, 1),
            (2, 3),
            (3, 2),
        ];
        let pairs = MentionPairs::build(&places, &clusters, &entity_pairs);
        Fixture {
            pool,
            mention_reprs,
            entity_reprs,
            types: Tensor::from_slice(&[2i64, 0, 1, 1]),
            entity_pairs,
            pairs,
        }
    }

    fn input(f: &Fixture) -> RelationInput<'_> {
        RelationInput {
            pool: &f.pool,
            mention_reprs: &f.mention_reprs,
            entity_reprs: &f.entity_reprs,
            entity_types: &f.types,
            entity_pairs: &f.entity_pairs,
            mention_pairs: &f.pairs,
        }
    }

    #[test]
    fn mrc_split_equals_concatenation_in_any_chunking() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let mrc = Mrc::new(
            vs.root() / "relation_classification",
            16,
            &HeadConfig::default(),
            3,
            5,
        );
        let f = fixture(16);
        let input = input(&f);
        assert_eq!(f.pairs.len(), 2 * (6 + 2 + 3 + 1));
        assert!(f.pairs.token_distance.iter().any(|&d| d > 700));
        assert!(f.pairs.sentence_distance.iter().any(|&d| d > 50));

        let owner: Vec<i64> = f
            .pairs
            .offsets
            .windows(2)
            .enumerate()
            .flat_map(|(r, w)| std::iter::repeat_n(r as i64, w[1] - w[0]))
            .collect();
        let expected = group_max(
            &mrc.pair_repr_concat(&input),
            &Tensor::from_slice(&owner),
            f.entity_pairs.len() as i64,
        );
        for chunk in [1, 2, 5, 1000] {
            let (pooled, kept) = mrc.pool_pairs(&input, &mrc.tables(&input), false, chunk);
            assert!(
                pooled.allclose(&expected, 1e-5, 1e-5, false),
                "chunk {chunk}"
            );
            // Every hidden dimension is won by some mention pair of its entity pair.
            let every = Tensor::ones([f.entity_pairs.len() as i64], (Kind::Bool, Device::Cpu));
            let wins = Vec::<i64>::try_from(kept.wins(&pooled, &every)).unwrap();
            for w in f.pairs.offsets.windows(2) {
                assert!(wins[w[0]..w[1]].iter().sum::<i64>() >= 16);
            }
        }
        // Inference folds single-pair entity pairs; training does not: both equal the
        // concatenation, and every dimension of a single pair is its own win.
        let concat = mrc.classify_concat(&expected, &input);
        let every = RelationPass::Infer { threshold: 0.0 };
        for chunk in [1, 3, 1000] {
            let out = mrc.forward(&input, every, chunk);
            assert_eq!(out.logits.size(), [8, 5]);
            assert!(
                out.logits.allclose(&concat, 1e-5, 1e-5, false),
                "chunk {chunk}"
            );
            let wins = Vec::<i64>::try_from(out.wins.unwrap()).unwrap();
            assert_eq!(wins[f.pairs.offsets[6]..], [16, 16]);
            for w in f.pairs.offsets.windows(2) {
                assert!(wins[w[0]..w[1]].iter().sum::<i64>() >= 16);
            }
            let trained = mrc.forward(&input, RelationPass::Train, chunk);
            assert!(trained.wins.is_none());
        }
        // With a threshold, only entity pairs with a relation at or above it count wins (a
        // single pair's are known without counting); the counts there are unchanged.
        let all_wins = Vec::<i64>::try_from(mrc.forward(&input, every, 3).wins.unwrap()).unwrap();
        let best = Vec::<f32>::try_from(concat.sigmoid().amax(1, false)).unwrap();
        let mut sorted = best.clone();
        sorted.sort_by(f32::total_cmp);
        let threshold = sorted[best.len() / 2];
        let out = mrc.forward(&input, RelationPass::Infer { threshold }, 3);
        let wins = Vec::<i64>::try_from(out.wins.unwrap()).unwrap();
        let mut skipped = 0;
        for (r, w) in f.pairs.offsets.windows(2).enumerate() {
            let range = w[0]..w[1];
            if best[r] >= threshold || range.len() == 1 {
                assert_eq!(wins[range.clone()], all_wins[range], "entity pair {r}");
            } else {
                assert!(wins[range].iter().all(|&n| n == 0), "entity pair {r}");
                skipped += 1;
            }
        }
        assert!(
            skipped > 0,
            "the threshold {threshold} skipped no entity pair"
        );
        // Frozen, the folding products are computed once: the same logits.
        let unfrozen = mrc.forward(&input, every, 3).logits;
        let mut frozen = RelationClassifier::Mrc(mrc);
        frozen.freeze();
        let RelationClassifier::Mrc(mrc) = frozen else {
            unreachable!()
        };
        assert!(mrc.frozen.is_some());
        let out = mrc.forward(&input, every, 3).logits;
        assert!(out.allclose(&unfrozen, 1e-6, 1e-6, false));
        assert!(out.allclose(&concat, 1e-5, 1e-5, false));
        let no_dropout = Mrc {
            dropout: 0.0,
            ..mrc
        };
        let trained = no_dropout.forward(&input, RelationPass::Train, 2).logits;
        assert!(trained.allclose(&concat, 1e-5, 1e-5, false));
    }

    #[test]
    fn grc_split_equals_concatenation() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let heads = HeadConfig {
            relation_head: RelationHead::Grc,
            ..HeadConfig::default()
        };
        let grc = RelationClassifier::new(&vs.root(), 16, &heads, 3, 5);
        let f = fixture(16);
        let input = input(&f);
        let split = grc
            .forward(&input, RelationPass::Infer { threshold: 0.5 }, 7)
            .logits;
        let RelationClassifier::Grc(g) = &grc else {
            panic!("GRC expected")
        };
        assert!(split.allclose(&g.forward_concat(&input), 1e-5, 1e-5, false));
        let names: Vec<String> = vs.variables().into_keys().collect();
        for key in [
            "entity_pair_representation.entity_embeddings.weight",
            "entity_pair_representation.entity_pair_linear.weight",
            "relation_classification.rel_classifier.weight",
        ] {
            assert!(names.contains(&key.to_string()), "{key}");
        }
        // GRC evidence: the closest mention pair of each entity pair.
        let ev = grc.evidence(&f.pairs, None);
        assert_eq!(f.pairs.head[ev[0]], 0);
        assert_eq!(f.pairs.tail[ev[0]], 1);
    }
}
