//! The document's prediction from its segments' (module doc of [`super`]).

use std::collections::HashMap;

use crate::corpus::Span;
use crate::model::prediction::{DocPrediction, PredEntity, PredMention, PredRelation};

use super::plan::Segment;

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
    let mentions = DocMentions::owned(segments, preds, &spans);
    let mut nodes = LocalEntities::new(preds);
    nodes.join_overlaps(segments, preds, &spans);
    let joined = JoinedEntities::of(&mentions, &mut nodes);
    let entities = joined.entities(preds, &mut nodes);
    let relations = joined.relations(preds, &mut nodes, &mentions, &spans);
    DocPrediction {
        mentions: mentions
            .owned
            .iter()
            .map(|&(span, score, _, _)| PredMention { span, score })
            .collect(),
        entities,
        relations,
    }
}

/// The document's mentions: each segment's owned ones (owned words are disjoint).
struct DocMentions {
    /// `(document span, score, segment, local mention)`, in `(start, end)` order.
    owned: Vec<(Span, f32, usize, usize)>,
    /// The index in `owned` of each `(start, end)`.
    global: HashMap<(usize, usize), usize>,
}

impl DocMentions {
    fn owned(segments: &[Segment], preds: &[DocPrediction], spans: &[Vec<Span>]) -> Self {
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
        DocMentions { owned, global }
    }
}

/// Local entities as union-find nodes: segment k's entity j is node `base[k] + j`.
struct LocalEntities {
    base: Vec<usize>,
    /// Per segment, the local entity of each local mention.
    entity_of: Vec<Vec<usize>>,
    parent: Vec<usize>,
}

impl LocalEntities {
    fn new(preds: &[DocPrediction]) -> Self {
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
        LocalEntities {
            base,
            entity_of,
            parent: (0..nodes).collect(),
        }
    }

    /// The union-find root of segment `k`'s entity `j`.
    fn root(&mut self, k: usize, j: usize) -> usize {
        find(&mut self.parent, self.base[k] + j)
    }

    /// Joins, across each boundary, the entities of the two segments sharing mention spans in
    /// the overlap, matched one to one, most shared first.
    fn join_overlaps(
        &mut self,
        segments: &[Segment],
        preds: &[DocPrediction],
        spans: &[Vec<Span>],
    ) {
        for k in 1..segments.len() {
            // Candidates: (count, first shared span start, left entity, right entity).
            let shared = segments[k].words.start..segments[k - 1].words.end;
            let left: HashMap<(usize, usize), usize> = spans[k - 1]
                .iter()
                .enumerate()
                .filter(|(_, s)| shared.contains(&s.start))
                .map(|(i, s)| ((s.start, s.end), self.entity_of[k - 1][i]))
                .collect();
            let mut counts: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
            for (i, s) in spans[k].iter().enumerate() {
                if let Some(&a) = left.get(&(s.start, s.end)) {
                    let c = counts
                        .entry((a, self.entity_of[k][i]))
                        .or_insert((0, s.start));
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
                    let (x, y) = (self.root(k - 1, a), self.root(k, b));
                    self.parent[x.max(y)] = x.min(y);
                }
            }
        }
    }
}

/// The joined entities, in order of their first owned mention; those without owned mentions
/// (all their mentions lie on the other side of an ownership cut) are left out.
struct JoinedEntities {
    /// The joined entity of each union-find root.
    index: HashMap<usize, usize>,
    /// Per joined entity, its document mentions, ascending.
    members: Vec<Vec<usize>>,
}

impl JoinedEntities {
    fn of(mentions: &DocMentions, nodes: &mut LocalEntities) -> Self {
        let mut index: HashMap<usize, usize> = HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        for (g, &(_, _, k, i)) in mentions.owned.iter().enumerate() {
            let root = nodes.root(k, nodes.entity_of[k][i]);
            let e = *index.entry(root).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[e].push(g);
        }
        JoinedEntities { index, members }
    }

    /// The joined entity of segment `k`'s entity `j`, if it has owned mentions.
    fn of_local(&self, nodes: &mut LocalEntities, k: usize, j: usize) -> Option<usize> {
        self.index.get(&nodes.root(k, j)).copied()
    }

    /// Per joined entity: the type of its largest local entity, and the pair-weighted mean of
    /// its local coreference scores.
    fn entities(&self, preds: &[DocPrediction], nodes: &mut LocalEntities) -> Vec<PredEntity> {
        let n = self.members.len();
        let mut best: Vec<Option<(usize, f32, usize, usize)>> = vec![None; n];
        let mut coref: Vec<(f64, f64)> = vec![(0.0, 0.0); n];
        for (k, p) in preds.iter().enumerate() {
            for (j, ent) in p.entities.iter().enumerate() {
                let Some(e) = self.of_local(nodes, k, j) else {
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
        self.members
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
            .collect()
    }

    /// Each segment's relations between joined entities, keyed by joined head, tail and type;
    /// the highest score wins (earlier segment on ties).
    fn relations(
        &self,
        preds: &[DocPrediction],
        nodes: &mut LocalEntities,
        mentions: &DocMentions,
        spans: &[Vec<Span>],
    ) -> Vec<PredRelation> {
        let mut relations: HashMap<(usize, usize, usize), PredRelation> = HashMap::new();
        for (k, p) in preds.iter().enumerate() {
            for r in &p.relations {
                let (Some(head), Some(tail)) = (
                    self.of_local(nodes, k, r.head),
                    self.of_local(nodes, k, r.tail),
                ) else {
                    continue;
                };
                if head == tail {
                    continue;
                }
                let evidence_of = |e: usize, local: usize| {
                    evidence(
                        &self.members[e],
                        &mentions.owned,
                        &mentions.global,
                        spans[k][local],
                    )
                };
                let mapped = PredRelation {
                    head,
                    tail,
                    relation: r.relation,
                    score: r.score,
                    evidence: (
                        evidence_of(head, r.evidence.0),
                        evidence_of(tail, r.evidence.1),
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
        relations
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
