//! `jerex train`: a training run around the inner loop ([`Trainer`], the reference
//! implementation's optimizer, schedule and clipping, with several documents per step).
//!
//! A run starts from the pretrained encoder folder (heads initialised at random) or resumes
//! from `OUTPUT/checkpoint/` (model, optimizer moments, epoch/step and history). Every epoch
//! draws fresh samples (reference section 2) from streams fixed by `(seed, epoch, document)`,
//! trains on length-bucketed batches in a seeded random order, then validates with full
//! end-to-end inference. The best epoch by strict relation F1 (`rel_nec`; ties by entity, then
//! mention F1) is saved as a model folder in `OUTPUT`. At the end the best model is evaluated
//! once more with the gold-input tasks, and the run's summary (epochs, wall time, training
//! docs/s, peak RSS, best validation scores) goes into the model's `config.json` under
//! `training` and to stdout.
//!
//! Reproducibility: the same seed, data and settings give the same model on CPU. A run resumed
//! at an epoch boundary continues exactly; one stopped by `--max-minutes` inside an epoch
//! resumes at the next batch with the same samples, but dropout draws differ from an
//! uninterrupted run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::nn::VarStore;
use tch::Device;

use crate::corpus::docred::relation_names;
use crate::corpus::Document;
use crate::device::{check_available, parse_devices, Precision};
use crate::durable::{read_json, write_json_atomic};
use crate::encoder::{load_pretrained, BertConfig};
use crate::error::{Error, Result};
use crate::eval::{evaluate, prepare_docs, Report, Scope};
use crate::model::folder::{check_vocab, special_ids, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
use crate::model::{
    HeadConfig, JerexModel, LoadedModel, ModelConfig, PreparedDoc, RelationHead, Thresholds,
    WindowConfig,
};
use crate::paths;
use crate::tokenize::WordPieceTokenizer;
use crate::train::checkpoint::{
    recover_dir, replace_dir, TrainState, CHECKPOINT_DIR, OPTIMIZER_FILE, STATE_FILE,
};
use crate::train::data::{collect_types, load_dataset, torch_seed, Dataset, SplitSpec};
use crate::train::history::{describe, EpochRecord, F1s};
use crate::train::optim::AdamWConfig;
use crate::train::sample::SamplingConfig;
use crate::train::trainer::{TrainOptions, Trainer};

/// `jerex train`: train a joint model on DocRED-format data.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// DocRED-format JSON training files. Documents without relation labels (no `labels` key)
    /// train the mention, coreference and entity heads only.
    #[arg(long = "train", num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// DocRED-format training files whose relation labels are incomplete (DocRED's own
    /// training annotations miss many true facts): their labelled pairs train the relation head,
    /// their unlabelled pairs are not used as negatives; the other heads train on them as usual.
    #[arg(long = "partial-relations", num_args = 1..)]
    pub partial_relations: Vec<PathBuf>,
    /// Validation file (labelled DocRED JSON).
    #[arg(long, conflicts_with = "split")]
    pub validation: Option<PathBuf>,
    /// `PATH:N`: the first N documents of PATH (file order) are added to the training data, the
    /// remaining ones are the validation set. E.g. `--split ../shared/data/redocred/dev_revised.json:400`.
    #[arg(long)]
    pub split: Option<SplitSpec>,
    /// DocRED `rel_info.json`: relation names, and every relation type it lists.
    #[arg(long)]
    pub rel_info: Option<PathBuf>,
    /// Pretrained encoder folder (HuggingFace BERT: config.json, model.safetensors,
    /// tokenizer.json); default: $JEREX_ENCODER, else all-MiniLM-L6-v2 from the build tree's
    /// .venv (installed by scripts/bootstrap.sh).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Output folder: the best model, and `checkpoint/` to resume from.
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Documents per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-5)]
    pub lr: f64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Wall-clock budget: stop (with a checkpoint) once it is spent.
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Continue from OUTPUT/checkpoint (same data and settings).
    #[arg(long)]
    pub resume: bool,
    /// Training device (one): `cpu`, `cuda:0`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Encoder precision on GPUs: fp32, bf16 or fp16 (CPU always runs fp32).
    #[arg(long, default_value = "fp32")]
    pub precision: Precision,
    /// Relation head: `mrc` (JEREX) or `grc` (global baseline).
    #[arg(long, default_value = "mrc", value_parser = parse_relation_head)]
    pub relation_head: RelationHead,
    /// Documents per forward pass during validation.
    #[arg(long, default_value_t = 8)]
    pub eval_batch_size: usize,
    /// Keep the encoder's word-piece embeddings at their pretrained values. They are half of a
    /// MiniLM's parameters, so this roughly halves the optimizer's work per step.
    #[arg(long)]
    pub freeze_word_embeddings: bool,
    /// Add a learned word-shape embedding (capitals, digits) to the encoder input
    /// (`heads.word_shapes`): the uncased encoder cannot see capitals otherwise.
    #[arg(long)]
    pub word_shapes: bool,
    /// Dropout on attention probabilities (default: the encoder's config). 0 lets libtorch use
    /// its fused attention kernels forward and backward, the largest single saving in training.
    #[arg(long)]
    pub attention_dropout: Option<f64>,
}

fn parse_relation_head(s: &str) -> std::result::Result<RelationHead, String> {
    match s.to_ascii_lowercase().as_str() {
        "mrc" => Ok(RelationHead::Mrc),
        "grc" => Ok(RelationHead::Grc),
        other => Err(format!("unknown relation head '{other}' (mrc or grc)")),
    }
}

/// The summary stored in the model's `config.json` (`training`) and printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainSummary {
    pub epochs: usize,
    pub planned_epochs: usize,
    pub steps: u64,
    pub stopped_by_budget: bool,
    pub wall_seconds: f64,
    pub train_seconds: f64,
    pub train_docs_per_second: f64,
    pub peak_rss_mib: Option<f64>,
    pub train_documents: usize,
    pub validation_documents: usize,
    pub dropped_unlabelled_documents: usize,
    pub best_epoch: Option<usize>,
    pub best_validation: Option<Report>,
    pub train_files: Vec<PathBuf>,
    pub validation: Option<String>,
    pub encoder: Option<PathBuf>,
    pub seed: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub history: Vec<EpochRecord>,
}

/// Runs `jerex train` (see the module doc).
pub fn run(args: &TrainArgs) -> Result<()> {
    let started = Instant::now();
    let deadline = args
        .max_minutes
        .map(|m| started + Duration::from_secs_f64(m.max(0.0) * 60.0));
    let device = training_device(args)?;
    if args.train.is_empty() && args.partial_relations.is_empty() && args.split.is_none() {
        return Err(Error::Config(
            "no training data: give --train FILE... or --split PATH:N".into(),
        ));
    }
    let (data, dropped) = load_dataset(
        &args.train,
        &args.partial_relations,
        args.validation.as_deref(),
        args.split.as_ref(),
    )?;
    if data.train.is_empty() {
        return Err(Error::Config("no labelled training document".into()));
    }
    std::fs::create_dir_all(&args.output).map_err(|e| Error::io(&args.output, e))?;
    let (loaded, tokenizer_json, encoder_dir, mut state) = start(args, &data, device)?;
    let LoadedModel {
        vs,
        model,
        config,
        tokenizer,
    } = loaded;
    if args.freeze_word_embeddings {
        freeze_word_embeddings(&vs)?;
    }
    let max_span_words = config.heads.max_span_words;
    let (train_count, validation_count) = (data.train.len(), data.validation.len());
    let train_docs = prepare_docs(data.train, &tokenizer, max_span_words);
    let validation_docs = prepare_docs(data.validation, &tokenizer, max_span_words);

    let options = TrainOptions {
        batch_size: args.batch_size.max(1),
        seed: args.seed,
        max_grad_norm: 1.0,
        sampling: SamplingConfig::for_model(&config),
        partial_relations: data.partial_relations,
    };
    let per_epoch = Trainer::batches_per_epoch(train_docs.len(), options.batch_size);
    let adamw = AdamWConfig {
        lr: args.lr,
        ..AdamWConfig::default()
    };
    let mut trainer = Trainer::new(
        &model,
        &vs,
        options,
        adamw,
        (per_epoch * args.epochs) as u64,
    )?;
    if args.resume {
        trainer.optimizer().load(
            &args.output.join(CHECKPOINT_DIR).join(OPTIMIZER_FILE),
            state.steps,
        )?;
    }
    let saver = Saver {
        vs: &vs,
        config: &config,
        tokenizer_json: &tokenizer_json,
    };
    let timing = Timing {
        started,
        earlier_wall_seconds: state.wall_seconds,
        deadline,
    };
    let stopped = train_epochs(
        args,
        &mut trainer,
        &saver,
        &train_docs,
        &validation_docs,
        &timing,
        &mut state,
    )?;
    if !args.output.join(WEIGHTS_FILE).is_file() {
        saver.save(&args.output, serde_json::Value::Null)?;
    }
    drop(trainer);

    // The best model, evaluated with the gold-input tasks too.
    let best_validation = if validation_docs.is_empty() {
        None
    } else {
        let best = JerexModel::load(&args.output, device, args.precision)?;
        let scores = evaluate(
            &best.model,
            &validation_docs,
            args.eval_batch_size,
            Scope::Full,
        )?;
        eprint!("best model on validation:\n{}", scores.table());
        Some(scores.report())
    };
    state.wall_seconds = timing.wall_seconds();
    let summary = TrainSummary {
        epochs: state.epoch,
        planned_epochs: args.epochs,
        steps: state.steps,
        stopped_by_budget: stopped,
        wall_seconds: state.wall_seconds,
        train_seconds: state.train_seconds,
        train_docs_per_second: state.train_docs as f64 / state.train_seconds.max(1e-9),
        peak_rss_mib: crate::alloc::peak_rss_bytes().map(|b| b as f64 / (1 << 20) as f64),
        train_documents: train_count,
        validation_documents: validation_count,
        dropped_unlabelled_documents: dropped,
        best_epoch: state.best.map(|(e, _)| e),
        best_validation,
        train_files: args.train.clone(),
        validation: args
            .validation
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| {
                args.split.as_ref().map(|s| {
                    format!(
                        "{} after the first {} documents",
                        s.path.display(),
                        s.train_docs
                    )
                })
            }),
        encoder: encoder_dir,
        seed: args.seed,
        batch_size: args.batch_size,
        lr: args.lr,
        history: state.history.clone(),
    };
    let value = serde_json::to_value(&summary).map_err(|e| Error::Config(e.to_string()))?;
    let config_path = args.output.join(CONFIG_FILE);
    let mut saved = ModelConfig::load(&config_path)?;
    saved.training = value;
    write_json_atomic(&config_path, &saved)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|e| Error::Config(e.to_string()))?
    );
    Ok(())
}

/// The one device training runs on.
fn training_device(args: &TrainArgs) -> Result<Device> {
    let devices = parse_devices(&args.device)?;
    check_available(&devices)?;
    match devices[..] {
        [device] => Ok(device),
        _ => Err(Error::Config(format!(
            "training runs on one device, got '{}'",
            args.device
        ))),
    }
}

/// The model and state a run starts from: the checkpoint's with `--resume` (which must have
/// been made with the same data and settings), else a fresh model on the pretrained encoder.
/// Also the tokenizer file to save with the model, and the encoder folder of a fresh start.
fn start(
    args: &TrainArgs,
    data: &Dataset,
    device: Device,
) -> Result<(LoadedModel, PathBuf, Option<PathBuf>, TrainState)> {
    let fingerprint = fingerprint(args, &data.train, &data.validation);
    let checkpoint = args.output.join(CHECKPOINT_DIR);
    if args.resume {
        recover_dir(&fresh_checkpoint_dir(args), &checkpoint, STATE_FILE)?;
        let state: TrainState = read_json(&checkpoint.join(STATE_FILE))?;
        if state.fingerprint != fingerprint {
            return Err(Error::Config(format!(
                "{}: the checkpoint was made with other data or settings (files, split, epochs, \
                 batch size, lr, seed, relation head); start a new output folder or repeat them",
                checkpoint.display()
            )));
        }
        let loaded = JerexModel::load(&checkpoint, device, args.precision)?;
        return Ok((loaded, checkpoint.join(TOKENIZER_FILE), None, state));
    }
    let dir = match &args.encoder {
        Some(dir) => dir.clone(),
        None => paths::default_encoder_dir()?,
    };
    let all: Vec<&Document> = data.train.iter().chain(&data.validation).collect();
    let loaded = fresh_model(args, &dir, &all, device)?;
    let state = TrainState {
        fingerprint,
        epoch: 0,
        batch_in_epoch: 0,
        steps: 0,
        train_seconds: 0.0,
        wall_seconds: 0.0,
        train_docs: 0,
        best: None,
        history: Vec::new(),
    };
    Ok((loaded, dir.join(TOKENIZER_FILE), Some(dir), state))
}

/// `OUTPUT/checkpoint.new`: where the next checkpoint is written before it is swapped in.
fn fresh_checkpoint_dir(args: &TrainArgs) -> PathBuf {
    args.output.join(format!("{CHECKPOINT_DIR}.new"))
}

/// Saves the model being trained as a model folder.
struct Saver<'a> {
    vs: &'a VarStore,
    config: &'a ModelConfig,
    tokenizer_json: &'a Path,
}

impl Saver<'_> {
    fn save(&self, dir: &Path, training: serde_json::Value) -> Result<()> {
        let config = ModelConfig {
            training,
            ..self.config.clone()
        };
        JerexModel::save(dir, self.vs, &config, self.tokenizer_json)
    }
}

/// Clocks of a run: its start, the wall time of the runs it resumes, its deadline.
struct Timing {
    started: Instant,
    earlier_wall_seconds: f64,
    deadline: Option<Instant>,
}

impl Timing {
    /// Wall seconds of the whole training, resumed runs included.
    fn wall_seconds(&self) -> f64 {
        self.earlier_wall_seconds + self.started.elapsed().as_secs_f64()
    }
}

/// Trains the remaining epochs: after each, validation, the best model saved to the output
/// folder, and a checkpoint. Returns true when the time budget stopped it.
fn train_epochs(
    args: &TrainArgs,
    trainer: &mut Trainer,
    saver: &Saver,
    train_docs: &[PreparedDoc],
    validation_docs: &[PreparedDoc],
    timing: &Timing,
    state: &mut TrainState,
) -> Result<bool> {
    let checkpoint = args.output.join(CHECKPOINT_DIR);
    let fresh = fresh_checkpoint_dir(args);
    while state.epoch < args.epochs {
        let epoch = state.epoch;
        let bar = progress_bar(epoch, args.epochs);
        let progress = trainer.train_epoch(
            train_docs,
            epoch,
            state.batch_in_epoch,
            timing.deadline,
            &bar,
        )?;
        bar.finish_and_clear();
        state.steps = trainer.optimizer().steps();
        state.train_seconds += progress.seconds;
        state.train_docs += progress.docs as u64;
        let complete = !progress.stopped;
        // A budget stop still leaves a usable model behind when none was saved yet.
        let keep = complete || state.best.is_none();
        let validation = if keep && !validation_docs.is_empty() {
            let s = evaluate(
                trainer.model(),
                validation_docs,
                args.eval_batch_size,
                Scope::EndToEnd,
            )?;
            Some(F1s::of(&s))
        } else {
            None
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            complete,
            losses: progress.losses,
            docs_per_second: progress.docs as f64 / progress.seconds.max(1e-9),
            seconds: progress.seconds,
            validation,
        };
        eprintln!("{}", describe(&record, args.epochs));
        state.history.push(record);
        let better = match (&state.best, validation) {
            (None, _) => true,
            (Some((_, best)), Some(now)) => best.is_none_or(|b| now.key() > b.key()),
            // Without validation data the latest complete epoch is kept.
            (Some(_), None) => complete && validation_docs.is_empty(),
        };
        if better {
            state.best = Some((epoch + 1, validation));
            saver.save(
                &args.output,
                serde_json::json!({"in_progress": true, "epoch": epoch + 1}),
            )?;
        }
        if complete {
            state.epoch += 1;
            state.batch_in_epoch = 0;
        } else {
            state.batch_in_epoch = progress.batches_done;
        }
        state.wall_seconds = timing.wall_seconds();
        // Written whole into a fresh folder (the state file last), then swapped in.
        if fresh.exists() {
            std::fs::remove_dir_all(&fresh).map_err(|e| Error::io(&fresh, e))?;
        }
        saver.save(&fresh, serde_json::Value::Null)?;
        trainer.optimizer().save(&fresh.join(OPTIMIZER_FILE))?;
        write_json_atomic(&fresh.join(STATE_FILE), &*state)?;
        replace_dir(&fresh, &checkpoint)?;
        if progress.stopped {
            eprintln!(
                "time budget spent: stopped in epoch {} at batch {}/{}; continue with --resume",
                epoch + 1,
                progress.batches_done,
                progress.batches
            );
            return Ok(true);
        }
    }
    Ok(false)
}

/// A new model: types from the data, the pretrained encoder's weights, heads at random (seeded).
fn fresh_model(
    args: &TrainArgs,
    encoder_dir: &Path,
    docs: &[&Document],
    device: tch::Device,
) -> Result<LoadedModel> {
    let mut bert = BertConfig::load(&encoder_dir.join(CONFIG_FILE))?;
    if let Some(p) = args.attention_dropout {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::Config(format!(
                "--attention-dropout must be in [0, 1), got {p}"
            )));
        }
        bert.attention_probs_dropout_prob = p;
    }
    let tokenizer = WordPieceTokenizer::from_file(&encoder_dir.join(TOKENIZER_FILE))?;
    let names = args.rel_info.as_deref().map(relation_names).transpose()?;
    let (entity_types, relation_types) = collect_types(docs, names.as_deref());
    // The default window, shrunk to small encoders' positions (overlap a quarter of it).
    let max_len = WindowConfig::default()
        .max_len
        .min(bert.max_position_embeddings.max(0) as usize);
    let window = WindowConfig {
        max_len,
        overlap: WindowConfig::default().overlap.min(max_len / 4),
        framing: crate::model::Framing::ClsSep,
    };
    let config = ModelConfig {
        entity_types,
        relation_types,
        thresholds: Thresholds::default(),
        heads: HeadConfig {
            relation_head: args.relation_head,
            word_shapes: args.word_shapes,
            ..HeadConfig::default()
        },
        window,
        encoder: bert,
        training: serde_json::Value::Null,
    };
    check_vocab(&tokenizer, &config, encoder_dir)?;
    tch::manual_seed(torch_seed(args.seed, usize::MAX));
    let mut vs = VarStore::new(device);
    let model = JerexModel::new(&vs.root(), &config, special_ids(&tokenizer), args.precision)?;
    load_pretrained(&mut vs, &encoder_dir.join(WEIGHTS_FILE), "bert.")?;
    Ok(LoadedModel {
        vs,
        model,
        config,
        tokenizer,
    })
}

/// Stops gradients to the word-piece embedding table (before the optimizer is built, which
/// then leaves it out).
fn freeze_word_embeddings(vs: &VarStore) -> Result<()> {
    // The encoder lives under `bert.` with HuggingFace's names (see encoder::bert).
    let name = "bert.embeddings.word_embeddings.weight";
    let vars = vs.variables();
    let table = vars
        .get(name)
        .ok_or_else(|| Error::Config(format!("the model has no parameter {name} to freeze")))?;
    let _ = table.shallow_clone().set_requires_grad(false);
    Ok(())
}

/// What a resume must repeat: the documents (ids, in order) and every setting that shapes the
/// run.
fn fingerprint(args: &TrainArgs, train: &[Document], validation: &[Document]) -> String {
    let mut h = blake3::Hasher::new();
    for (tag, docs) in [("train", train), ("validation", validation)] {
        h.update(tag.as_bytes());
        for d in docs {
            h.update(d.id.as_bytes());
            h.update(&[0]);
        }
    }
    let settings = format!(
        "{}|{}|{}|{}|{:?}|{}|{}",
        args.epochs,
        args.batch_size,
        args.lr,
        args.seed,
        args.relation_head,
        args.freeze_word_embeddings,
        args.attention_dropout
            .map_or(String::new(), |p| p.to_string())
    );
    h.update(settings.as_bytes());
    // Appended only when set, so checkpoints made before the flag existed still resume.
    if args.word_shapes {
        h.update(b"|word_shapes");
    }
    if !args.partial_relations.is_empty() {
        h.update(format!("|partial_relations:{}", args.partial_relations.len()).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

fn progress_bar(epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
    )
    .map(|s| s.progress_chars("=> "));
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_head_flag_parses() {
        assert_eq!(parse_relation_head("MRC"), Ok(RelationHead::Mrc));
        assert_eq!(parse_relation_head("grc"), Ok(RelationHead::Grc));
        assert!(parse_relation_head("x").is_err());
    }
}
