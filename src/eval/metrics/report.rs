//! What an evaluation run reports: the JSON summaries ([`Report`], [`EvalReport`]) and the
//! readable table, made from the accumulated [`Scores`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Counts, Prf, Scores};

/// The JSON summary of a run, fields in the documented order: `{"mention": Prf,
/// "coreference", "entity", "relation", "gold_input": {"coreference", "entity", "relation"},
/// "documents": N, "seconds": S}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub mention: Prf,
    pub coreference: Prf,
    pub entity: Prf,
    pub relation: Prf,
    pub gold_input: GoldInputReport,
    pub documents: usize,
    pub seconds: f64,
}

/// The gold-input part of [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoldInputReport {
    pub coreference: Prf,
    pub entity: Prf,
    pub relation: Prf,
}

/// What `jerex eval` prints: the [`Report`] fields first (unchanged, in their order), then the
/// relation views for knowledge-base builders ([`super`] module doc).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    #[serde(flatten)]
    pub report: Report,
    /// Lenient string-level relation triples.
    pub relation_lenient: Prf,
    /// Strict relations per relation type key.
    pub relation_per_type: BTreeMap<String, TypeReport>,
    /// Strict relations per score cut-off, ascending.
    pub relation_pr_curve: Vec<CutoffReport>,
}

/// One relation type's strict scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeReport {
    #[serde(flatten)]
    pub prf: Prf,
    /// Gold relations of the type.
    pub support: u64,
    /// Predicted relations of the type.
    pub predicted: u64,
}

/// Strict relation scores at one cut-off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoffReport {
    pub cutoff: f32,
    #[serde(flatten)]
    pub prf: Prf,
    /// Predicted relations (distinct strict items) scoring at least `cutoff`.
    pub predicted: u64,
}

impl Scores {
    /// The machine-readable summary printed by `jerex eval` and stored with a trained model
    /// (serialize it with serde_json to keep the field order).
    pub fn report(&self) -> Report {
        Report {
            mention: self.mention.prf(),
            coreference: self.coreference.prf(),
            entity: self.entity.prf(),
            relation: self.relation.prf(),
            gold_input: GoldInputReport {
                coreference: self.gold_input.coreference.prf(),
                entity: self.gold_input.entity.prf(),
                relation: self.gold_input.relation.prf(),
            },
            documents: self.documents,
            seconds: self.seconds,
        }
    }

    /// What `jerex eval` prints: [`Scores::report`] and the knowledge-base views.
    pub fn eval_report(&self) -> EvalReport {
        EvalReport {
            report: self.report(),
            relation_lenient: self.relation_lenient.prf(),
            relation_per_type: self
                .relation_per_type
                .iter()
                .map(|(key, c)| {
                    let report = TypeReport {
                        prf: c.prf(),
                        support: c.tp + c.fn_,
                        predicted: c.tp + c.fp,
                    };
                    (key.clone(), report)
                })
                .collect(),
            relation_pr_curve: self
                .relation_curve
                .iter()
                .map(|p| CutoffReport {
                    cutoff: p.cutoff,
                    prf: p.counts.prf(),
                    predicted: p.counts.tp + p.counts.fp,
                })
                .collect(),
        }
    }

    /// A readable table (for stderr): every task, then the most frequent relation types and
    /// the relation cut-offs when there are any.
    pub fn table(&self) -> String {
        let rows: [(&str, &Counts); 9] = [
            ("mention", &self.mention),
            ("coreference", &self.coreference),
            ("entity", &self.entity),
            ("relation", &self.relation),
            ("relation (untyped args)", &self.relation_untyped),
            ("relation (lenient strings)", &self.relation_lenient),
            ("gold mentions → coref", &self.gold_input.coreference),
            ("gold clusters → entity", &self.gold_input.entity),
            ("gold entities → relation", &self.gold_input.relation),
        ];
        let mut out = format!(
            "{:<28}{:>8}{:>8}{:>8}{:>9}{:>9}{:>9}\n",
            "task", "P", "R", "F1", "TP", "FP", "FN"
        );
        for (name, c) in rows {
            out.push_str(&format!(
                "{:<28}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}{:>9}\n",
                name,
                c.precision(),
                c.recall(),
                c.f1(),
                c.tp,
                c.fp,
                c.fn_
            ));
        }
        if !self.relation_per_type.is_empty() {
            let mut types: Vec<(&String, &Counts)> = self.relation_per_type.iter().collect();
            types.sort_by_key(|(key, c)| (std::cmp::Reverse(c.tp + c.fn_), *key));
            out.push_str(&format!(
                "{:<28}{:>8}{:>8}{:>8}{:>9}{:>9}\n",
                format!(
                    "relation type (top {} of {})",
                    TOP_TYPES.min(types.len()),
                    types.len()
                ),
                "P",
                "R",
                "F1",
                "gold",
                "pred"
            ));
            for (key, c) in types.into_iter().take(TOP_TYPES) {
                out.push_str(&format!(
                    "  {:<26}{:>8.2}{:>8.2}{:>8.2}{:>9}{:>9}\n",
                    key,
                    c.precision(),
                    c.recall(),
                    c.f1(),
                    c.tp + c.fn_,
                    c.tp + c.fp
                ));
            }
        }
        if !self.relation_curve.is_empty() {
            out.push_str(&format!(
                "{:<28}{:>8}{:>8}{:>8}{:>9}\n",
                "relation score cut-off", "P", "R", "F1", "pred"
            ));
            for p in &self.relation_curve {
                let mark = if Some(p.cutoff) == self.relation_threshold {
                    " (model threshold)"
                } else {
                    ""
                };
                let c = &p.counts;
                out.push_str(&format!(
                    "  {:<26}{:>8.2}{:>8.2}{:>8.2}{:>9}\n",
                    format!("{:.2}{mark}", p.cutoff),
                    c.precision(),
                    c.recall(),
                    c.f1(),
                    c.tp + c.fp
                ));
            }
        }
        let rate = if self.seconds > 0.0 {
            self.documents as f64 / self.seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "{} documents in {:.1} s ({rate:.1} docs/s)\n",
            self.documents, self.seconds
        ));
        out
    }
}

/// Relation types the stderr table lists (by support).
const TOP_TYPES: usize = 10;
