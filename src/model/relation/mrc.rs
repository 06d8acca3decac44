//! The multi-instance relation classifier (MRC, the JEREX model).
//!
//! MRC scores every mention pair of an entity pair with `pair_linear` over
//! `[ctx; m_h; m_t; e_h; e_t; tok; sent]`, split exactly into per-part products so mentions,
//! entities and distance tables are projected once and only the context term is per pair
//! (the reference multiplies every pair's concatenation by the whole layer); contexts come from
//! the range-max table, computed once per distinct range in a chunk. Mention pairs are processed in chunks whose `[chunk, H]` temporaries stay under
//! the caller's budget, with a running segment max per entity pair.

use std::collections::HashMap;

use tch::{nn, Kind, Tensor};

use crate::layers::{embedding, Linear};
use crate::model::config::HeadConfig;
use crate::model::input::{cat_rows, chunk_starts, clamp_index, index_tensor};
use crate::model::pool::{row_sums, scatter_max, scatter_max_};

use super::{pair_ends, RelationInput, RelationOutput, RelationPass};

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
    pub(super) frozen: Option<FoldedWeights>,
}

/// What folding `rel_linear` into a batch's pair tables needs besides the batch's own rows:
/// the distance blocks and the context weight times `rel_linear`'s pooled block, and the
/// entity type table. A product of weights alone: 0.33 GFLOP per batch (mostly the 750 distance
/// rows) unless frozen.
pub(super) struct FoldedWeights {
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
    pub(super) fn tables(&self, input: &RelationInput) -> PairTables {
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

    pub(super) fn folded_weights(&self) -> FoldedWeights {
        let w = self.w_pooled();
        FoldedWeights {
            distance: Tensor::cat(&self.distance_blocks(), 0).matmul(&w),
            w_ctx: self.w_ctx().matmul(&w),
            types: self.type_table(),
        }
    }

    pub(super) fn forward(
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
    pub(super) fn pool_pairs(
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

    /// The same head without dropout, for the exactness test (the fields are this module's).
    #[cfg(test)]
    pub(super) fn without_dropout(self) -> Mrc {
        Mrc {
            dropout: 0.0,
            ..self
        }
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
pub(super) struct KeptPairs {
    entity_pair: Tensor,
    chunks: Vec<(i64, i64, Tensor)>,
}

impl KeptPairs {
    /// `[P]`: how many dimensions of its entity pair's max-pool (`pooled`, `[R, H]`) each
    /// mention pair attains. Only in the entity pairs where `needed` (`[R]`, bool) is true, 0
    /// elsewhere: evidence matters only where a relation is output.
    pub(super) fn wins(&self, pooled: &Tensor, needed: &Tensor) -> Tensor {
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
pub(super) struct PairTables {
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
