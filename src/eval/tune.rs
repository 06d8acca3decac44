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
//! 2. **Coreference and relation thresholds together**, by the [`Target`] on strict relations
//!    (`rel_nec`): by default the best F1 (ties by coreference F1), or the best recall among
//!    the pairs whose precision reaches a minimum (ties by F1, then coreference F1). One pass
//!    per coreference value, with the relation threshold at the lowest grid value, so each pass
//!    answers every relation value by filtering scores
//!    ([`Evaluator::with_relation_cutoffs`]).
//!
//! Ties keep the value closest to the model's current one.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use serde::{Serialize, Serializer};
use serde_json::json;

use crate::corpus::docred::read_docred;
use crate::device::{check_available, parse_devices, Precision};
use crate::durable::write_json_atomic;
use crate::error::{Error, Result};
use crate::eval::metrics::{Counts, Evaluator};
use crate::eval::prepare_docs;
use crate::model::{DocPrediction, EncodedBatch, GoldInput, JerexModel, PreparedDoc, Thresholds};
use crate::paths;

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
    /// What the coreference and relation thresholds maximize on strict relations: `f1`, or
    /// `recall-at-precision=P` (the best recall with precision at least P, a fraction).
    #[arg(long, default_value = "f1")]
    pub target: Target,
}

/// The operating point `jerex tune` chooses (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The best strict relation F1.
    F1,
    /// The best strict relation recall with precision at least this fraction.
    RecallAtPrecision(f64),
}

impl Target {
    /// The key `point` is ranked by (larger is better), or `None` when it does not qualify.
    fn key(&self, point: &Point) -> Option<Key> {
        let c = &point.relation;
        match *self {
            Target::F1 => Some((c.f1(), point.coreference_f1, 0.0)),
            // Precision is in percent; the slack keeps 11 of 20 at 0.55 (100 × 0.55 > 55).
            Target::RecallAtPrecision(min) => (c.precision() >= 100.0 * min - 1e-9)
                .then(|| (c.recall(), c.f1(), point.coreference_f1)),
        }
    }
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "tune target '{s}': expected 'f1' or 'recall-at-precision=P' with P in (0, 1]"
            ))
        };
        match s.split_once('=') {
            None if s == "f1" => Ok(Target::F1),
            Some(("recall-at-precision", p)) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1.0 => Ok(Target::RecallAtPrecision(p)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::F1 => write!(f, "f1"),
            Target::RecallAtPrecision(p) => write!(f, "recall-at-precision={p}"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
    pub relation_precision: f64,
    pub relation_recall: f64,
    /// What the coreference and relation thresholds were chosen for.
    pub target: Target,
    pub documents: usize,
    /// Prediction passes over the data.
    pub passes: usize,
    pub seconds: f64,
}

/// Runs `jerex tune`: prints the outcome as JSON on stdout and writes the thresholds (and a
/// `training.tuning` record) into the folder's `config.json`.
pub fn run(args: &TuneArgs) -> Result<()> {
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => paths::default_model_dir()?,
    };
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
    let tuned = tune(
        &loaded.model,
        &docs,
        args.step,
        args.batch_size,
        args.target,
    )?;
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
        "target {}: thresholds mention {:.2}, coref {:.2}, relation {:.2} (were {:.2}, {:.2}, \
         {:.2}); F1 mention {:.2}, coreference {:.2}, entity {:.2}; relation P {:.2}, R {:.2}, \
         F1 {:.2}",
        tuned.target,
        tuned.thresholds.mention,
        tuned.thresholds.coref,
        tuned.thresholds.relation,
        tuned.previous.mention,
        tuned.previous.coref,
        tuned.previous.relation,
        tuned.mention_f1,
        tuned.coreference_f1,
        tuned.entity_f1,
        tuned.relation_precision,
        tuned.relation_recall,
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
    target: Target,
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
            let counts = mention_counts(model, docs, &preds, v)?;
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

    // 2. Coreference and relation thresholds: every relation value per coreference value.
    let mut points: Vec<Point> = Vec::new();
    for &coref in &values {
        let preds = predict(Thresholds {
            mention,
            coref,
            relation: lowest,
        })?;
        let mut ev = Evaluator::new(model.config()).with_relation_cutoffs(lowest, &values);
        for (d, p) in docs.iter().zip(&preds) {
            ev.add(&d.doc, p)?;
        }
        let s = ev.scores();
        points.extend(s.relation_curve.iter().map(|c| Point {
            coref,
            relation_threshold: c.cutoff,
            relation: c.counts,
            coreference_f1: s.coreference.f1(),
            entity_f1: s.entity.f1(),
        }));
    }
    let chosen = choose(&points, target, previous)?;

    Ok(Tuned {
        thresholds: Thresholds {
            mention,
            coref: chosen.coref,
            relation: chosen.relation_threshold,
        },
        previous,
        mention_f1,
        coreference_f1: chosen.coreference_f1,
        entity_f1: chosen.entity_f1,
        relation_f1: chosen.relation.f1(),
        relation_precision: chosen.relation.precision(),
        relation_recall: chosen.relation.recall(),
        target,
        documents: docs.len(),
        passes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// One (coreference, relation) threshold pair of the search and what it reaches.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    coref: f32,
    relation_threshold: f32,
    /// Strict relation counts.
    relation: Counts,
    coreference_f1: f64,
    entity_f1: f64,
}

/// A [`Target`]'s ranking key.
type Key = (f64, f64, f64);

/// The point `target` prefers: the coreference value by the best key it allows, then the
/// relation value for it; ties go to the values closest to `previous`.
fn choose(points: &[Point], target: Target, previous: Thresholds) -> Result<Point> {
    let ranked: Vec<(&Point, Key)> = points
        .iter()
        .filter_map(|p| target.key(p).map(|k| (p, k)))
        .collect();
    let mut per_coref: Vec<(f32, Key)> = Vec::new();
    for &(p, k) in &ranked {
        match per_coref.iter_mut().find(|(c, _)| *c == p.coref) {
            Some((_, top)) if k > *top => *top = k,
            Some(_) => {}
            None => per_coref.push((p.coref, k)),
        }
    }
    let none = || unreachable_target(points, target);
    let (coref, _) = best(&per_coref, previous.coref).ok_or_else(none)?;
    let per_relation: Vec<(f32, Key)> = ranked
        .iter()
        .filter(|(p, _)| p.coref == coref)
        .map(|(p, k)| (p.relation_threshold, *k))
        .collect();
    let (relation, _) = best(&per_relation, previous.relation).ok_or_else(none)?;
    ranked
        .iter()
        .map(|(p, _)| **p)
        .find(|p| p.coref == coref && p.relation_threshold == relation)
        .ok_or_else(none)
}

/// Why no point qualified, with the highest precision reached.
fn unreachable_target(points: &[Point], target: Target) -> Error {
    let top = points
        .iter()
        .max_by(|a, b| a.relation.precision().total_cmp(&b.relation.precision()));
    match top {
        Some(p) => Error::Config(format!(
            "no thresholds reach the tune target {target} on this data: the highest strict \
             relation precision is {:.2}% (coreference {:.2}, relation {:.2}, recall {:.2}%)",
            p.relation.precision(),
            p.coref,
            p.relation_threshold,
            p.relation.recall()
        )),
        None => Error::Config("no coreference threshold could be scored".into()),
    }
}

/// Mention counts of `preds` with only the mentions scoring at least `t`.
fn mention_counts(
    model: &JerexModel,
    docs: &[PreparedDoc],
    preds: &[DocPrediction],
    t: f32,
) -> Result<Counts> {
    let mut ev = Evaluator::new(model.config());
    for (d, p) in docs.iter().zip(preds) {
        ev.add(&d.doc, &only_mentions(p, t))?;
    }
    Ok(ev.scores().mention)
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
    fn the_mention_view_filters_by_score() {
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
        assert!(only_mentions(&p, 0.5).relations.is_empty());
    }

    fn point(coref: f32, relation_threshold: f32, tp: u64, fp: u64, fn_: u64) -> Point {
        Point {
            coref,
            relation_threshold,
            relation: Counts { tp, fp, fn_ },
            coreference_f1: 70.0,
            entity_f1: 60.0,
        }
    }

    /// Ten gold relations; by hand (P, R, F1 in percent):
    /// coref 0.5: relation 0.3 → 8 of 16 right (50, 80, 61.5); 0.5 → 5 of 8 (62.5, 50, 55.6);
    /// 0.7 → 3 of 3 (100, 30, 46.2).
    /// coref 0.8: relation 0.3 → 7 of 14 (50, 70, 58.3); 0.5 → 7 of 12 (58.3, 70, 63.6);
    /// 0.7 → 2 of 2 (100, 20, 33.3).
    fn points() -> Vec<Point> {
        vec![
            point(0.5, 0.3, 8, 8, 2),
            point(0.5, 0.5, 5, 3, 5),
            point(0.5, 0.7, 3, 0, 7),
            point(0.8, 0.3, 7, 7, 3),
            point(0.8, 0.5, 7, 5, 3),
            point(0.8, 0.7, 2, 0, 8),
        ]
    }

    fn chosen(points: &[Point], target: Target) -> (f32, f32) {
        let previous = Thresholds::default();
        let p = choose(points, target, previous).unwrap();
        (p.coref, p.relation_threshold)
    }

    #[test]
    fn best_f1_and_best_recall_at_precision_choose_different_thresholds() {
        // F1: 63.6 at (0.8, 0.5) beats 61.5 at (0.5, 0.3).
        assert_eq!(chosen(&points(), Target::F1), (0.8, 0.5));
        // Precision ≥ 60% leaves (0.5, 0.5) with R 50 and the 0.7s with R 30 and 20.
        assert_eq!(
            chosen(&points(), Target::RecallAtPrecision(0.6)),
            (0.5, 0.5)
        );
        // Precision ≥ 50%: every point qualifies; the best recall is 80 at (0.5, 0.3), not the
        // best F1.
        assert_eq!(
            chosen(&points(), Target::RecallAtPrecision(0.5)),
            (0.5, 0.3)
        );
        // Precision ≥ 90%: only the 0.7s; recall 30 at coref 0.5 beats 20.
        assert_eq!(
            chosen(&points(), Target::RecallAtPrecision(0.9)),
            (0.5, 0.7)
        );
        // Exactly the minimum qualifies: 100% at 1.0.
        assert_eq!(
            chosen(&points(), Target::RecallAtPrecision(1.0)),
            (0.5, 0.7)
        );
    }

    #[test]
    fn recall_ties_go_to_f1_then_to_the_current_thresholds() {
        // Same recall (5 of 10) at two relation values: the more precise one has the higher F1.
        let tied = [point(0.5, 0.4, 5, 4, 5), point(0.5, 0.6, 5, 2, 5)];
        assert_eq!(chosen(&tied, Target::RecallAtPrecision(0.5)), (0.5, 0.6));
        // Identical counts at two coreference values: the one closer to the current 0.85.
        let same = [point(0.5, 0.6, 5, 2, 5), point(0.9, 0.6, 5, 2, 5)];
        assert_eq!(chosen(&same, Target::F1), (0.9, 0.6));
        // 11 of 20 is precision 55% and reaches "0.55", although 100 × 0.55 rounds above 55.
        let at = [
            point(0.5, 0.3, 12, 12, 8),
            point(0.5, 0.6, 11, 9, 9),
            point(0.5, 0.8, 5, 1, 15),
        ];
        assert_eq!(chosen(&at, Target::RecallAtPrecision(0.55)), (0.5, 0.6));
    }

    #[test]
    fn an_unreachable_precision_is_an_error_naming_the_highest() {
        // Without the 0.7s the highest precision is 5 of 8 = 62.50% at (0.5, 0.5).
        let low: Vec<Point> = points()
            .into_iter()
            .filter(|p| p.relation_threshold < 0.7)
            .collect();
        let err = choose(&low, Target::RecallAtPrecision(0.7), Thresholds::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("recall-at-precision=0.7"), "{err}");
        assert!(err.contains("62.50%"), "{err}");
        assert!(err.contains("coreference 0.50, relation 0.50"), "{err}");
        // No prediction at all has precision 0 and never qualifies.
        let nothing = [point(0.5, 0.9, 0, 0, 10)];
        assert!(choose(
            &nothing,
            Target::RecallAtPrecision(0.1),
            Thresholds::default()
        )
        .is_err());
    }

    #[test]
    fn targets_parse_and_print() {
        assert_eq!("f1".parse::<Target>().unwrap(), Target::F1);
        let t: Target = "recall-at-precision=0.6".parse().unwrap();
        assert_eq!(t, Target::RecallAtPrecision(0.6));
        assert_eq!(t.to_string(), "recall-at-precision=0.6");
        assert_eq!(serde_json::to_value(t).unwrap(), "recall-at-precision=0.6");
        for bad in [
            "F1",
            "recall",
            "recall-at-precision=",
            "recall-at-precision=0",
            "recall-at-precision=1.5",
            "precision=0.6",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
