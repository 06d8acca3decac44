//! Evaluation: strict end-to-end metrics ([`metrics`]), threshold tuning ([`tune`]) and the
//! `jerex eval` command.
//!
//! `jerex eval --model DIR --data FILE` predicts every document of a labelled DocRED-format file
//! end to end and, for the per-task scores, three more times from gold inputs (gold mentions,
//! gold clusters, gold entities). It prints the JSON summary ([`EvalReport`]) on stdout and a
//! table on stderr. With several devices each loads its own copy of the model and takes every
//! n-th batch. The end-to-end prediction is made once at the lowest relation cut-off of the
//! precision–recall table (`--cutoffs`), and the relation scores at the model's threshold are
//! read from it ([`Evaluator::with_relation_cutoffs`]).

pub mod metrics;
pub mod tune;

use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;
use tch::Device;

use crate::corpus::docred::read_docred;
use crate::corpus::Document;
use crate::device::{check_available, parse_devices, Precision};
use crate::encoder::DEFAULT_MAX_BATCH_TOKENS;
use crate::error::{Error, Result};
use crate::model::segment::{self, LongDocumentOverrides};
use crate::model::{DocPrediction, GoldInput, JerexModel, PreparedDoc, ThresholdFlags, Thresholds};
use crate::paths;
use crate::tokenize::WordPieceTokenizer;

pub use metrics::{Counts, EvalReport, Evaluator, GoldTask, Prf, Report, Scores};

/// `jerex eval`: strict scores of a model on a labelled file.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Model folder (config.json, model.safetensors, tokenizer.json); default: the shipped model.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Labelled DocRED-format JSON file.
    #[arg(long)]
    pub data: PathBuf,
    /// Documents per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Devices: `cpu`, `cuda:0`, `cuda:0,cuda:1`, `cuda:all`.
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Encoder precision on GPUs: fp32, bf16 or fp16 (CPU always runs fp32).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    #[command(flatten)]
    pub thresholds: ThresholdFlags,
    /// Relation score cut-offs of the precision–recall table, in (0, 1]; the model's relation
    /// threshold is always added.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_CUTOFFS)]
    pub cutoffs: Vec<f32>,
    /// Join every N consecutive documents into one (gold annotations shifted): long documents
    /// whose scores compare with those of the same documents one by one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concat: u32,
    /// End-to-end scores only, without the gold-input tasks (those predict a long document
    /// whole, in time quadratic in its length).
    #[arg(long)]
    pub end_to_end: bool,
    /// The model's `heads.long_documents` limits instead.
    #[command(flatten)]
    pub long_documents: LongDocumentOverrides,
}

/// What an evaluation predicts besides the model folder's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub scope: Scope,
    /// Replaces the model's long-document limits.
    pub long_documents: LongDocumentOverrides,
    /// Relation score cut-offs of the precision–recall table, in (0, 1].
    pub cutoffs: Vec<f32>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            scope: Scope::Full,
            long_documents: LongDocumentOverrides::default(),
            cutoffs: Vec::new(),
        }
    }
}

/// The default `--cutoffs`.
const DEFAULT_CUTOFFS: &str = "0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95";

/// Runs `jerex eval`: JSON on stdout, table on stderr.
pub fn run(args: &EvalArgs) -> Result<()> {
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => paths::default_model_dir()?,
    };
    let devices = parse_devices(&args.devices)?;
    check_available(&devices)?;
    let mut docs = read_docred(&args.data)?;
    if args.concat > 1 {
        docs = docs
            .chunks(args.concat as usize)
            .enumerate()
            .map(|(i, c)| Document::join(format!("joined {i}"), c))
            .collect();
    }
    let options = EvalOptions {
        scope: if args.end_to_end {
            Scope::EndToEnd
        } else {
            Scope::Full
        },
        long_documents: args.long_documents,
        cutoffs: args.cutoffs.clone(),
    };
    let start = Instant::now();
    let scores = evaluate_folder(
        &dir,
        &devices,
        args.precision,
        &args.thresholds,
        docs,
        args.batch_size,
        &options,
    )?;
    let scores = Scores {
        seconds: start.elapsed().as_secs_f64(),
        ..scores
    };
    eprint!("{}", scores.table());
    println!("{}", report_json(&scores)?);
    Ok(())
}

/// The JSON summary as one line ([`EvalReport`]).
pub fn report_json(scores: &Scores) -> Result<String> {
    serde_json::to_string(&scores.eval_report()).map_err(|e| Error::Config(e.to_string()))
}

/// Word pieces and candidates of each document, computed in parallel, in document order.
pub fn prepare_docs(
    docs: Vec<Document>,
    tokenizer: &WordPieceTokenizer,
    max_span_words: usize,
) -> Vec<PreparedDoc> {
    docs.into_par_iter()
        .map(|doc| PreparedDoc::new(doc, tokenizer, max_span_words))
        .collect()
}

/// Batches of at most `batch_size` documents of similar length (indices into `docs`), so
/// padding in a batch stays small. Deterministic.
pub fn length_batches(docs: &[PreparedDoc], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| (docs[i].piece_count(), i));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Which predictions [`evaluate`] makes and scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// End to end only (validation during training).
    EndToEnd,
    /// End to end and the three gold-input tasks.
    Full,
}

const GOLD_TASKS: [(GoldInput, GoldTask); 3] = [
    (GoldInput::Mentions, GoldTask::Coreference),
    (GoldInput::Clusters, GoldTask::Entity),
    (GoldInput::Entities, GoldTask::Relation),
];

/// The predictions `scope` asks for, per document of `batch`: end to end (at `end_to_end`)
/// first, then one per gold task (at the model's thresholds).
fn predict_scope(
    model: &JerexModel,
    docs: &[PreparedDoc],
    batch: &[usize],
    scope: Scope,
    end_to_end: &Thresholds,
) -> Result<Vec<Vec<DocPrediction>>> {
    let inputs: Vec<PreparedDoc> = batch.iter().map(|&i| docs[i].clone()).collect();
    let thresholds = model.config().thresholds;
    let mut levels = vec![(GoldInput::None, end_to_end)];
    if scope == Scope::Full {
        levels.extend(GOLD_TASKS.iter().map(|(level, _)| (*level, &thresholds)));
    }
    // Documents over `whole_pieces`: end to end as merged segments, the gold-input levels
    // whole (exact, in time quadratic in their length).
    let cfg = model.config().heads.long_documents;
    if inputs.iter().any(|d| segment::plan(d, &cfg).is_some()) {
        let mut per_doc: Vec<Vec<DocPrediction>> = model
            .predict_segmented(&inputs, end_to_end, DEFAULT_MAX_BATCH_TOKENS)?
            .into_iter()
            .map(|p| vec![p])
            .collect();
        for &(level, t) in &levels[1..] {
            for (slot, p) in per_doc
                .iter_mut()
                .zip(model.predict_from(&inputs, t, level)?)
            {
                slot.push(p);
            }
        }
        return Ok(per_doc);
    }
    let mut per_doc: Vec<Vec<DocPrediction>> = vec![Vec::new(); batch.len()];
    // One encoder pass serves every level.
    let encoded = model.encode_batch(&inputs);
    for (level, t) in levels {
        for (slot, p) in per_doc
            .iter_mut()
            .zip(model.predict_encoded(&encoded, t, level)?)
        {
            slot.push(p);
        }
    }
    Ok(per_doc)
}

fn score(evaluator: &mut Evaluator, doc: &Document, predictions: &[DocPrediction]) -> Result<()> {
    let (end_to_end, gold_input) = predictions
        .split_first()
        .ok_or_else(|| Error::Config("no prediction to score".into()))?;
    evaluator.add(doc, end_to_end)?;
    for ((_, task), p) in GOLD_TASKS.iter().zip(gold_input) {
        evaluator.add_gold_input(*task, doc, p)?;
    }
    Ok(())
}

/// Scores a loaded model on prepared documents with its configured thresholds. `seconds` is
/// the wall time of the call.
pub fn evaluate(
    model: &JerexModel,
    docs: &[PreparedDoc],
    batch_size: usize,
    scope: Scope,
) -> Result<Scores> {
    let start = Instant::now();
    let mut evaluator = Evaluator::new(model.config());
    for batch in length_batches(docs, batch_size) {
        let predictions = predict_scope(model, docs, &batch, scope, &model.config().thresholds)?;
        for (&i, p) in batch.iter().zip(&predictions) {
            score(&mut evaluator, &docs[i].doc, p)?;
        }
    }
    Ok(evaluator.finish(start.elapsed().as_secs_f64()))
}

/// One device's predictions: (document index, predictions as in [`predict_scope`]).
type Share = Vec<(usize, Vec<DocPrediction>)>;

/// Full evaluation of a model folder on `devices` with its thresholds, overridden by
/// `thresholds`, and `options` (scope, long-document limits, relation cut-offs): each device
/// loads the model and predicts every `devices.len()`-th batch; scores are accumulated in
/// document order afterwards.
pub fn evaluate_folder(
    dir: &std::path::Path,
    devices: &[Device],
    precision: Precision,
    thresholds: &ThresholdFlags,
    docs: Vec<Document>,
    batch_size: usize,
    options: &EvalOptions,
) -> Result<Scores> {
    let cutoffs = &options.cutoffs;
    let start = Instant::now();
    if let Some(c) = cutoffs.iter().find(|&&c| !(c > 0.0 && c <= 1.0)) {
        return Err(Error::Config(format!(
            "relation cut-off {c} must be in (0, 1]"
        )));
    }
    let mut first = JerexModel::load(dir, devices[0], precision)?;
    first.config.thresholds = thresholds.apply(first.config.thresholds)?;
    let long = options
        .long_documents
        .apply(first.config.heads.long_documents);
    long.check()
        .map_err(|e| Error::Config(format!("long_documents.{e}")))?;
    first.config.heads.long_documents = long;
    first.model.set_long_documents(long);
    let prepared = prepare_docs(docs, &first.tokenizer, first.config.heads.max_span_words);
    let batches = length_batches(&prepared, batch_size);
    let thresholds = first.config.thresholds;
    let mut evaluator =
        Evaluator::new(&first.config).with_relation_cutoffs(thresholds.relation, cutoffs);
    // Every cut-off is answered by filtering the relations predicted at the lowest.
    let end_to_end = Thresholds {
        relation: cutoffs.iter().copied().fold(thresholds.relation, f32::min),
        ..thresholds
    };
    let shares: Vec<Result<Share>> = std::thread::scope(|scope| {
        let prepared = &prepared;
        let batches = &batches;
        let mut first = Some(first);
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(k, &device)| {
                let preloaded = first.take();
                scope.spawn(move || -> Result<Share> {
                    let loaded = match preloaded {
                        Some(l) => l,
                        None => {
                            let mut l = JerexModel::load(dir, device, precision)?;
                            l.model.set_long_documents(long);
                            l
                        }
                    };
                    let mut out = Vec::new();
                    for batch in batches.iter().skip(k).step_by(devices.len()) {
                        let predictions = predict_scope(
                            &loaded.model,
                            prepared,
                            batch,
                            options.scope,
                            &end_to_end,
                        )?;
                        out.extend(batch.iter().copied().zip(predictions));
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("an evaluation worker panicked".into())))
            })
            .collect()
    });
    let mut predictions: Vec<Option<Vec<DocPrediction>>> = vec![None; prepared.len()];
    for share in shares {
        for (i, p) in share? {
            predictions[i] = Some(p);
        }
    }
    for (doc, p) in prepared.iter().zip(predictions) {
        let p = p.ok_or_else(|| Error::BadDocument {
            doc: doc.doc.id.clone(),
            message: "was not predicted".into(),
        })?;
        score(&mut evaluator, &doc.doc, &p)?;
    }
    Ok(evaluator.finish(start.elapsed().as_secs_f64()))
}
