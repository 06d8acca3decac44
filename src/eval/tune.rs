//! `jerex tune`: grid search of the decision thresholds on a labelled validation file, written
//! into the model folder's `config.json`.
//!
//! The encoder runs once per document; the search is sequential, so the heads run a few dozen
//! times instead of once per point of the 3-D grid:
//!
//! 1. **Mention threshold**, by mention F1. A prediction pass at threshold `floor` yields every
//!    mention with probability ≥ `floor` and its score, which answers every grid value ≥
//!    `floor` at once (with coreference threshold 0, so each document is one cluster and no
//!    entity pairs are scored). Floors go down (0.75, 0.5, 0.25, lowest grid value) and stop
//!    once a pass predicts more than [`MENTION_BUDGET`] times the gold mentions: lower
//!    thresholds cannot win and would make the pair heads quadratic in spurious mentions. A
//!    model over the budget at its best threshold is refused (not trained enough).
//! 2. **Coreference and relation thresholds together**, by strict relation F1 (`rel_nec`, ties
//!    by coreference F1): one pass per coreference value, with the relation threshold at the
//!    lowest grid value, so each pass answers every relation value by filtering scores.
//!
//! Ties keep the value closest to the model's current one.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::corpus::docred::read_docred;
use crate::device::{check_available, parse_devices, Precision};
use crate::error::{Error, Result};
use crate::eval::metrics::{Counts, Evaluator};
use crate::eval::prepare_docs;
use crate::model::{DocPrediction, EncodedBatch, GoldInput, JerexModel, PreparedDoc, Thresholds};
use crate::paths;
use crate::train::trainer::write_json_atomic;

/// A mention pass stops lowering its floor once it predicts this many times the gold mentions.
pub const MENTION_BUDGET: usize = 2;

/// `jerex tune`: choose thresholds on a validation file.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    /// Model folder; its config.json receives the chosen thresholds.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Labelled DocRED-format JSON validation file.
    #[arg(long)]
    pub data: PathBuf,
    /// Grid step (values step, 2·step, … below 1).
    #[arg(long, default_value_t = 0.05)]
    pub step: f32,
    /// Documents per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Device (one): `cpu`, `cuda:0`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
}

/// The outcome of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuned {
    pub thresholds: Thresholds,
    pub previous: Thresholds,
    /// Scores (percent) on the tuning data with the chosen thresholds.
    pub mention_f1: f64,
    pub coreference_f1: f64,
    pub entity_f1: f64,
    pub relation_f1: f64,
    pub documents: usize,
    /// Prediction passes over the data.
    pub passes: usize,
    pub seconds: f64,
}

/// Runs `jerex tune`: prints the outcome as JSON on stdout and writes the thresholds (and a
/// `training.tuning` record) into the folder's `config.json`.
pub fn run(args: &TuneArgs) -> Result<()> {
    let dir = args.model.clone().unwrap_or_else(paths::default_model_dir);
    let devices = parse_devices(&args.device)?;
    check_available(&devices)?;
    let [device] = devices[..] else {
        return Err(Error::Config(format!(
            "tune runs on one device, got '{}'",
            args.device
        )));
    };
    let loaded = JerexModel::load(&dir, device, args.precision)?;
    let docs = prepare_docs(
        read_docred(&args.data)?,
        &loaded.tokenizer,
        loaded.config.heads.max_span_words,
    );
    let tuned = tune(&loaded.model, &docs, args.step, args.batch_size)?;
    let mut config = loaded.config.clone();
    config.thresholds = tuned.thresholds;
    let record = json!({"data": args.data, "step": args.step, "result": tuned});
    match &mut config.training {
        serde_json::Value::Object(map) => {
            map.insert("tuning".into(), record);
        }
        other => *other = json!({ "tuning": record }),
    }
    write_json_atomic(&dir.join(crate::model::folder::CONFIG_FILE), &config)?;
    eprintln!(
        "thresholds: mention {:.2}, coref {:.2}, relation {:.2} (were {:.2}, {:.2}, {:.2}); \
         F1 mention {:.2}, coreference {:.2}, entity {:.2}, relation {:.2}",
        tuned.thresholds.mention,
        tuned.thresholds.coref,
        tuned.thresholds.relation,
        tuned.previous.mention,
        tuned.previous.coref,
        tuned.previous.relation,
        tuned.mention_f1,
        tuned.coreference_f1,
        tuned.entity_f1,
        tuned.relation_f1
    );
    println!(
        "{}",
        serde_json::to_string(&tuned).map_err(|e| Error::Config(e.to_string()))?
    );
    Ok(())
}

/// The grid `step, 2·step, …` below 1, rounded to 1e-4 so values print and compare cleanly.
pub fn grid(step: f32) -> Result<Vec<f32>> {
    if !(step > 0.0 && step < 1.0) {
        return Err(Error::Config(format!(
            "threshold step {step} must be in (0, 1)"
        )));
    }
    Ok((1..)
        .map(|k| ((k as f64 * f64::from(step)) * 1e4).round() / 1e4)
        .take_while(|&v| v < 1.0 - 1e-9)
        .map(|v| v as f32)
        .collect())
}

/// The candidate maximizing `key`; ties go to the value closest to `current`.
fn best<K: PartialOrd + Copy>(candidates: &[(f32, K)], current: f32) -> Option<(f32, K)> {
    let mut out: Option<(f32, K)> = None;
    for &(v, k) in candidates {
        out = match out {
            Some((bv, bk))
                if bk > k || (bk == k && (bv - current).abs() <= (v - current).abs()) =>
            {
                Some((bv, bk))
            }
            _ => Some((v, k)),
        };
    }
    out
}

/// Grid search of the thresholds of `model` on labelled `docs` (see the module doc).
pub fn tune(
    model: &JerexModel,
    docs: &[PreparedDoc],
    step: f32,
    batch_size: usize,
) -> Result<Tuned> {
    let start = Instant::now();
    let values = grid(step)?;
    let lowest = values[0];
    let previous = model.config().thresholds;
    // Every pass runs the heads on the same encoder output: encode once, in length batches.
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| (docs[i].piece_count(), i));
    let sorted: Vec<PreparedDoc> = order.iter().map(|&i| docs[i].clone()).collect();
    let encoded: Vec<EncodedBatch> = sorted
        .chunks(batch_size.max(1))
        .map(|chunk| model.encode_batch(chunk))
        .collect();
    let mut passes = 0;
    let mut predict = |t: Thresholds| -> Result<Vec<DocPrediction>> {
        passes += 1;
        let mut out = vec![DocPrediction::default(); docs.len()];
        let predicted = encoded
            .iter()
            .map(|batch| model.predict_encoded(batch, &t, GoldInput::None))
            .collect::<Result<Vec<_>>>()?;
        for (&i, p) in order.iter().zip(predicted.into_iter().flatten()) {
            out[i] = p;
        }
        Ok(out)
    };
    let gold_mentions: usize = docs
        .iter()
        .filter_map(|d| d.doc.gold.as_ref())
        .map(|g| {
            let mut spans: Vec<(usize, usize)> = g
                .entities
                .iter()
                .flat_map(|e| &e.mentions)
                .map(|m| (m.start, m.end))
                .collect();
            spans.sort_unstable();
            spans.dedup();
            spans.len()
        })
        .sum();

    // 1. Mention threshold.
    let mut mention_scores: Vec<(f32, f64)> = Vec::new();
    let mut floors: Vec<f32> = [0.75, 0.5, 0.25, lowest]
        .into_iter()
        .filter(|&f| f >= lowest)
        .collect();
    floors.dedup();
    let budget = MENTION_BUDGET * gold_mentions.max(1);
    // Per grid value: mention F1 and the number of mentions it predicts.
    let mut predicted_at: Vec<(f32, usize)> = Vec::new();
    let mut answered = f32::INFINITY;
    for floor in floors {
        // Coreference threshold 0 merges every document into one cluster (every pair has
        // probability > 0), so the pass scores mentions without paying for entity pairs.
        let preds = predict(Thresholds {
            mention: floor,
            coref: 0.0,
            relation: previous.relation,
        })?;
        for &v in values.iter().filter(|&&v| v >= floor && v < answered) {
            let counts = score(model, docs, &preds, |p| only_mentions(p, v))?.mention;
            mention_scores.push((v, counts.f1()));
            predicted_at.push((v, (counts.tp + counts.fp) as usize));
        }
        answered = floor;
        let predicted: usize = preds.iter().map(|p| p.mentions.len()).sum();
        if predicted > budget {
            break;
        }
    }
    let (mention, mention_f1) = best(&mention_scores, previous.mention)
        .ok_or_else(|| Error::Config("no mention threshold could be scored".into()))?;
    // Beyond the budget, spurious singletons would make the relation pairs quadratic in them.
    let predicted = predicted_at
        .iter()
        .find(|(v, _)| *v == mention)
        .map_or(0, |&(_, n)| n);
    if predicted > budget {
        return Err(Error::Config(format!(
            "at its best mention threshold {mention} the model predicts {predicted} mentions for \
             {gold_mentions} gold ones: it is not trained enough to tune"
        )));
    }

    // 2. Coreference and relation thresholds: (relation F1, coreference F1, entity F1) per
    // relation value, per coreference value.
    let mut joint: Vec<(f32, Vec<(f32, F1Triple)>)> = Vec::new();
    for &coref in &values {
        let preds = predict(Thresholds {
            mention,
            coref,
            relation: lowest,
        })?;
        let per_relation = values
            .iter()
            .map(|&relation| {
                let s = score(model, docs, &preds, |p| relations_above(p, relation))?;
                Ok((
                    relation,
                    (s.relation.f1(), s.coreference.f1(), s.entity.f1()),
                ))
            })
            .collect::<Result<_>>()?;
        joint.push((coref, per_relation));
    }
    // The coreference value by the best relation F1 it allows (ties: coreference F1), then the
    // relation value for it.
    let per_coref: Vec<(f32, (f64, f64))> = joint
        .iter()
        .map(|(c, rs)| {
            let top = rs
                .iter()
                .map(|(_, (r, co, _))| (*r, *co))
                .fold((f64::MIN, f64::MIN), |a, b| if b > a { b } else { a });
            (*c, top)
        })
        .collect();
    let (coref, _) = best(&per_coref, previous.coref)
        .ok_or_else(|| Error::Config("no coreference threshold could be scored".into()))?;
    let per_relation = joint
        .iter()
        .find(|(c, _)| *c == coref)
        .map(|(_, rs)| rs.as_slice())
        .unwrap_or_default();
    let (relation, (relation_f1, coreference_f1, entity_f1)) =
        best(per_relation, previous.relation)
            .ok_or_else(|| Error::Config("no relation threshold could be scored".into()))?;

    Ok(Tuned {
        thresholds: Thresholds {
            mention,
            coref,
            relation,
        },
        previous,
        mention_f1,
        coreference_f1,
        entity_f1,
        relation_f1,
        documents: docs.len(),
        passes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// (relation F1, coreference F1, entity F1).
type F1Triple = (f64, f64, f64);

/// Scores of `preds` after `view` (a thresholding of each prediction).
fn score(
    model: &JerexModel,
    docs: &[PreparedDoc],
    preds: &[DocPrediction],
    view: impl Fn(&DocPrediction) -> DocPrediction,
) -> Result<ScoreSet> {
    let mut ev = Evaluator::new(model.config());
    for (d, p) in docs.iter().zip(preds) {
        ev.add(&d.doc, &view(p))?;
    }
    let s = ev.scores();
    Ok(ScoreSet {
        mention: s.mention,
        coreference: s.coreference,
        entity: s.entity,
        relation: s.relation,
    })
}

struct ScoreSet {
    mention: Counts,
    coreference: Counts,
    entity: Counts,
    relation: Counts,
}

/// The mentions scoring at least `t`, without entities or relations (for mention F1 only).
fn only_mentions(p: &DocPrediction, t: f32) -> DocPrediction {
    DocPrediction {
        mentions: p
            .mentions
            .iter()
            .filter(|m| m.score >= t)
            .copied()
            .collect(),
        ..DocPrediction::default()
    }
}

/// The prediction with only the relations scoring at least `t`.
fn relations_above(p: &DocPrediction, t: f32) -> DocPrediction {
    DocPrediction {
        mentions: p.mentions.clone(),
        entities: p.entities.clone(),
        relations: p
            .relations
            .iter()
            .filter(|r| r.score >= t)
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_has_19_clean_values_for_step_005() {
        let g = grid(0.05).unwrap();
        assert_eq!(g.len(), 19);
        assert_eq!(g[0], 0.05);
        assert_eq!(g[18], 0.95);
        assert!(g.contains(&0.85) && g.contains(&0.6));
        assert_eq!(grid(0.5).unwrap(), vec![0.5]);
        assert!(grid(0.0).is_err() && grid(1.0).is_err());
    }

    #[test]
    fn best_takes_the_maximum_and_breaks_ties_towards_the_current_value() {
        let c = [(0.1, 1.0), (0.5, 3.0), (0.7, 3.0), (0.9, 2.0)];
        assert_eq!(best(&c, 0.85), Some((0.7, 3.0)));
        assert_eq!(best(&c, 0.2), Some((0.5, 3.0)));
        let flat = [(0.1, 0.0), (0.6, 0.0), (0.9, 0.0)];
        assert_eq!(best(&flat, 0.6), Some((0.6, 0.0)));
        assert_eq!(best::<f64>(&[], 0.5), None);
        // Lexicographic keys: relation F1 first, then coreference F1.
        let lex = [(0.3, (10.0, 50.0)), (0.8, (10.0, 60.0))];
        assert_eq!(best(&lex, 0.3), Some((0.8, (10.0, 60.0))));
    }

    #[test]
    fn views_filter_by_score() {
        use crate::corpus::Span;
        use crate::model::{PredEntity, PredMention, PredRelation};
        let span = |s| Span {
            start: s,
            end: s + 1,
            sent: 0,
        };
        let p = DocPrediction {
            mentions: vec![
                PredMention {
                    span: span(0),
                    score: 0.9,
                },
                PredMention {
                    span: span(1),
                    score: 0.3,
                },
            ],
            entities: vec![PredEntity {
                mentions: vec![0, 1],
                entity_type: 0,
                type_score: 1.0,
                coref_score: 1.0,
            }],
            relations: vec![PredRelation {
                head: 0,
                tail: 0,
                relation: 0,
                score: 0.4,
                evidence: (0, 1),
            }],
        };
        assert_eq!(only_mentions(&p, 0.5).mentions.len(), 1);
        assert!(only_mentions(&p, 0.5).entities.is_empty());
        assert_eq!(relations_above(&p, 0.4).relations.len(), 1);
        assert!(relations_above(&p, 0.45).relations.is_empty());
        assert_eq!(relations_above(&p, 0.45).entities, p.entities);
    }
}
