//! What is scored: each side (gold or predicted) of a document as sets of hashable items
//! (module doc of [`super`]), including the lenient string-level relation items.

use std::collections::{HashMap, HashSet};

use crate::corpus::{Annotations, Document, Span};
use crate::error::{Error, Result};
use crate::model::DocPrediction;

/// A word span as scored: the sentence index follows from the words.
type SpanKey = (usize, usize);
/// A cluster as scored: its distinct spans, sorted.
type Cluster = Vec<SpanKey>;

fn cluster_of<'a>(spans: impl IntoIterator<Item = &'a Span>) -> Cluster {
    let mut c: Cluster = spans.into_iter().map(|s| (s.start, s.end)).collect();
    c.sort_unstable();
    c.dedup();
    c
}

/// One side (gold or predicted) of a document as scorable entities and relations.
pub(super) struct Side<'a> {
    pub(super) mentions: HashSet<SpanKey>,
    /// Per entity: its cluster and type key.
    pub(super) entities: Vec<(Cluster, &'a str)>,
    /// `(head, tail, relation key, score)` with entity indices (gold scores 1); `None` = no
    /// relation labels.
    pub(super) relations: Option<Vec<(usize, usize, &'a str, f32)>>,
}

impl<'a> Side<'a> {
    pub(super) fn gold(doc: &Document, gold: &'a Annotations) -> Result<Self> {
        let mentions = gold
            .entities
            .iter()
            .flat_map(|e| &e.mentions)
            .map(|s| (s.start, s.end))
            .collect();
        let entities = gold
            .entities
            .iter()
            .map(|e| (cluster_of(&e.mentions), e.entity_type.as_str()))
            .collect();
        let relations = match &gold.relations {
            None => None,
            Some(rels) => Some(
                rels.iter()
                    .map(|r| {
                        check_entity(doc, r.head, gold.entities.len(), "gold relation")?;
                        check_entity(doc, r.tail, gold.entities.len(), "gold relation")?;
                        Ok((r.head, r.tail, r.relation.as_str(), 1.0))
                    })
                    .collect::<Result<_>>()?,
            ),
        };
        Ok(Side {
            mentions,
            entities,
            relations,
        })
    }

    pub(super) fn predicted(
        doc: &Document,
        pred: &DocPrediction,
        types: &'a TypeKeys,
    ) -> Result<Self> {
        let mentions = pred
            .mentions
            .iter()
            .map(|m| (m.span.start, m.span.end))
            .collect();
        let entities = pred
            .entities
            .iter()
            .map(|e| {
                let spans = e
                    .mentions
                    .iter()
                    .map(|&i| {
                        pred.mentions.get(i).map(|m| &m.span).ok_or_else(|| {
                            bad(doc, format!("predicted entity mention {i} out of range"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let ty = types.entity.get(e.entity_type).ok_or_else(|| {
                    bad(
                        doc,
                        format!("predicted entity type {} unknown", e.entity_type),
                    )
                })?;
                Ok((cluster_of(spans), ty.as_str()))
            })
            .collect::<Result<_>>()?;
        let relations = pred
            .relations
            .iter()
            .map(|r| {
                check_entity(doc, r.head, pred.entities.len(), "predicted relation")?;
                check_entity(doc, r.tail, pred.entities.len(), "predicted relation")?;
                let ty = types.relation.get(r.relation).ok_or_else(|| {
                    bad(
                        doc,
                        format!("predicted relation type {} unknown", r.relation),
                    )
                })?;
                Ok((r.head, r.tail, ty.as_str(), r.score))
            })
            .collect::<Result<_>>()?;
        Ok(Side {
            mentions,
            entities,
            relations: Some(relations),
        })
    }

    pub(super) fn clusters(&self) -> HashSet<&Cluster> {
        self.entities.iter().map(|(c, _)| c).collect()
    }

    pub(super) fn typed_entities(&self) -> HashSet<(&Cluster, &str)> {
        self.entities.iter().map(|(c, t)| (c, *t)).collect()
    }

    /// Relation items with typed arguments (`rel_nec`).
    pub(super) fn typed_relations(&self) -> HashSet<TypedRelation<'_>> {
        self.typed_relation_scores().into_keys().collect()
    }

    /// Relation items with typed arguments, each with the highest score of the relations
    /// that make it (duplicate entities can make one item twice).
    pub(super) fn typed_relation_scores(&self) -> HashMap<TypedRelation<'_>, f32> {
        let arg = |i: usize| (&self.entities[i].0, self.entities[i].1);
        let mut out = HashMap::new();
        for &(h, t, r, score) in self.relations.iter().flatten() {
            let best = out.entry((arg(h), arg(t), r)).or_insert(score);
            *best = best.max(score);
        }
        out
    }

    /// Relation items with untyped arguments (`rel`).
    pub(super) fn untyped_relations(&self) -> HashSet<(&Cluster, &Cluster, &str)> {
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r, _)| (&self.entities[h].0, &self.entities[t].0, r))
            .collect()
    }

    /// Lenient items: (head first-mention string, tail first-mention string, relation key).
    pub(super) fn lenient_relations(
        &self,
        doc: &Document,
    ) -> Result<HashSet<(String, String, &str)>> {
        let first = |i: usize| -> Result<String> {
            // Clusters are sorted, so their first span is the entity's first mention.
            let &(start, end) = self.entities[i]
                .0
                .first()
                .ok_or_else(|| bad(doc, format!("entity {i} of a relation has no mention")))?;
            Ok(doc.phrase(Span {
                start,
                end,
                sent: 0,
            }))
        };
        self.relations
            .iter()
            .flatten()
            .map(|&(h, t, r, _)| Ok((first(h)?, first(t)?, r)))
            .collect()
    }

    /// Drops the relations scoring below `cutoff`.
    pub(super) fn keep_relations_from(&mut self, cutoff: f32) {
        if let Some(rels) = &mut self.relations {
            rels.retain(|r| r.3 >= cutoff);
        }
    }
}

pub(super) type TypedRelation<'s> = ((&'s Cluster, &'s str), (&'s Cluster, &'s str), &'s str);

fn check_entity(doc: &Document, index: usize, count: usize, what: &str) -> Result<()> {
    if index < count {
        Ok(())
    } else {
        Err(bad(
            doc,
            format!("{what} refers to entity {index} of {count}"),
        ))
    }
}

pub(super) fn bad(doc: &Document, message: String) -> Error {
    Error::BadDocument {
        doc: doc.id.clone(),
        message,
    }
}

/// The type keys predictions index into (`ModelConfig::{entity,relation}_types`).
#[derive(Debug, Clone)]
pub(super) struct TypeKeys {
    pub(super) entity: Vec<String>,
    pub(super) relation: Vec<String>,
}
