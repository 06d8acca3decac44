//! A training run's history: each epoch's losses, speed and validation F1s, and the model
//! selection key.

use serde::{Deserialize, Serialize};

use crate::eval::Scores;
use crate::train::trainer::LossMeans;

/// F1 scores of one validation (percent).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct F1s {
    pub mention: f64,
    pub coreference: f64,
    pub entity: f64,
    pub relation: f64,
}

impl F1s {
    pub(super) fn of(s: &Scores) -> Self {
        F1s {
            mention: s.mention.f1(),
            coreference: s.coreference.f1(),
            entity: s.entity.f1(),
            relation: s.relation.f1(),
        }
    }

    /// Model selection: strict relation F1, then entity F1, then mention F1 (early epochs
    /// often tie at relation F1 = 0).
    pub(super) fn key(&self) -> [f64; 3] {
        [self.relation, self.entity, self.mention]
    }
}

/// One epoch in the run's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// False when the budget ended the epoch early.
    pub complete: bool,
    pub losses: LossMeans,
    pub docs_per_second: f64,
    pub seconds: f64,
    pub validation: Option<F1s>,
}

pub(super) fn describe(r: &EpochRecord, epochs: usize) -> String {
    let mut line = format!(
        "epoch {}/{epochs}{}: loss {:.4} (mention {:.4}, coref {:.4}, entity {:.4}, relation {:.4}), {:.1} docs/s, {:.0} s",
        r.epoch,
        if r.complete { "" } else { " (partial)" },
        r.losses.total,
        r.losses.mention,
        r.losses.coref,
        r.losses.entity,
        r.losses.relation,
        r.docs_per_second,
        r.seconds
    );
    if let Some(v) = r.validation {
        line.push_str(&format!(
            "; validation F1 mention {:.2}, coreference {:.2}, entity {:.2}, relation {:.2}",
            v.mention, v.coreference, v.entity, v.relation
        ));
    }
    line
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_key_prefers_relation_then_entity_then_mention() {
        let f = |m, e, r| F1s {
            mention: m,
            coreference: 0.0,
            entity: e,
            relation: r,
        };
        assert!(f(50.0, 50.0, 1.0).key() > f(90.0, 90.0, 0.5).key());
        assert!(f(50.0, 60.0, 0.0).key() > f(90.0, 50.0, 0.0).key());
        assert!(f(60.0, 50.0, 0.0).key() > f(50.0, 50.0, 0.0).key());
    }
}
