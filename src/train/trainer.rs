//! The inner training loop: per batch, fresh samples, the joint loss, gradient clipping, an
//! AdamW step and the learning-rate schedule (the reference implementation's, with several
//! documents per step). The `jerex train` command around it is [`super::command`].

use std::time::Instant;

use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;

use crate::error::Result;
use crate::model::{JerexModel, PreparedDoc};
use crate::train::data::{plan_epoch, sample_rng, torch_seed};
use crate::train::optim::{AdamW, AdamWConfig, Schedule};
use crate::train::sample::{sample_document, DocSample, SamplingConfig};

/// Fraction of the optimizer steps spent warming up.
const WARMUP_FRACTION: f64 = 0.1;
/// Batches between progress lines when no progress bar can be shown.
const LOG_EVERY_BATCHES: usize = 50;

/// Settings of the inner loop.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub batch_size: usize,
    pub seed: u64,
    pub max_grad_norm: f64,
    pub sampling: SamplingConfig,
    /// Per training document (by index): sampled with [`SamplingConfig::partial`].
    pub partial_relations: Vec<bool>,
}

/// Mean losses over the batches of an epoch (or part of one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossMeans {
    pub mention: f64,
    pub coref: f64,
    pub entity: f64,
    pub relation: f64,
    pub total: f64,
}

/// What one call of [`Trainer::train_epoch`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochProgress {
    /// Batches of the epoch done so far (including skipped ones of a resumed epoch).
    pub batches_done: usize,
    pub batches: usize,
    /// Documents trained on in this call.
    pub docs: usize,
    pub losses: LossMeans,
    /// Steps skipped because the loss was not finite.
    pub skipped: usize,
    pub seconds: f64,
    /// True when the deadline stopped the epoch early.
    pub stopped: bool,
}

/// The training loop over prepared documents: sampling, loss, clipping, AdamW, schedule.
pub struct Trainer<'m> {
    model: &'m JerexModel,
    optimizer: AdamW,
    schedule: Schedule,
    options: TrainOptions,
}

impl<'m> Trainer<'m> {
    /// `vs` holds the model's parameters; `total_steps` sets the learning-rate schedule.
    pub fn new(
        model: &'m JerexModel,
        vs: &VarStore,
        options: TrainOptions,
        adamw: AdamWConfig,
        total_steps: u64,
    ) -> Result<Self> {
        Ok(Trainer {
            model,
            optimizer: AdamW::new(vs, adamw)?,
            schedule: Schedule::new(adamw.lr, total_steps, WARMUP_FRACTION),
            options,
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &'m JerexModel {
        self.model
    }

    pub fn optimizer(&mut self) -> &mut AdamW {
        &mut self.optimizer
    }

    /// Batches per epoch for `docs` documents.
    pub fn batches_per_epoch(docs: usize, batch_size: usize) -> usize {
        docs.div_ceil(batch_size.max(1))
    }

    /// Trains one epoch from batch `skip` on, until the plan is done or `deadline` passes
    /// (checked before each step). Seeds libtorch for the epoch when starting it afresh.
    pub fn train_epoch(
        &mut self,
        docs: &[PreparedDoc],
        epoch: usize,
        skip: usize,
        deadline: Option<Instant>,
        bar: &ProgressBar,
    ) -> Result<EpochProgress> {
        let start = Instant::now();
        let lengths: Vec<usize> = docs.iter().map(PreparedDoc::piece_count).collect();
        let plan = plan_epoch(&lengths, self.options.batch_size, self.options.seed, epoch);
        if skip == 0 {
            tch::manual_seed(torch_seed(self.options.seed, epoch));
        }
        bar.set_length(plan.len() as u64);
        bar.set_position(skip.min(plan.len()) as u64);
        let mut sums = [0.0f64; 5];
        let mut progress = EpochProgress {
            batches_done: skip.min(plan.len()),
            batches: plan.len(),
            docs: 0,
            losses: LossMeans::default(),
            skipped: 0,
            seconds: 0.0,
            stopped: false,
        };
        let mut trained = 0usize;
        for batch in plan.iter().skip(skip) {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                progress.stopped = true;
                break;
            }
            match self.step(docs, batch, epoch)? {
                Some(losses) => {
                    for (s, l) in sums.iter_mut().zip(losses) {
                        *s += l;
                    }
                    trained += 1;
                }
                None => progress.skipped += 1,
            }
            progress.batches_done += 1;
            progress.docs += batch.len();
            let mean = |i: usize| sums[i] / trained.max(1) as f64;
            let message = format!(
                "loss {:.3} (mention {:.3} coref {:.3} entity {:.3} relation {:.3}) {:.1} docs/s",
                mean(4),
                mean(0),
                mean(1),
                mean(2),
                mean(3),
                progress.docs as f64 / start.elapsed().as_secs_f64().max(1e-9)
            );
            // Without a terminal (logs, nohup) the bar is hidden: print a line now and then.
            if bar.is_hidden() && progress.batches_done.is_multiple_of(LOG_EVERY_BATCHES) {
                eprintln!(
                    "epoch {} batch {}/{}: {message}",
                    epoch + 1,
                    progress.batches_done,
                    progress.batches
                );
            }
            bar.set_message(message);
            bar.inc(1);
        }
        let mean = |i: usize| sums[i] / trained.max(1) as f64;
        progress.losses = LossMeans {
            mention: mean(0),
            coref: mean(1),
            entity: mean(2),
            relation: mean(3),
            total: mean(4),
        };
        progress.seconds = start.elapsed().as_secs_f64();
        Ok(progress)
    }

    /// One optimizer step on the documents `batch`; `None` when the loss was not finite (the
    /// update is skipped so one bad batch cannot destroy the weights).
    fn step(
        &mut self,
        docs: &[PreparedDoc],
        batch: &[usize],
        epoch: usize,
    ) -> Result<Option<[f64; 5]>> {
        let config = self.model.config();
        let sampling = self.options.sampling;
        let partial = &self.options.partial_relations;
        let seed = self.options.seed;
        let samples: Vec<DocSample> = batch
            .par_iter()
            .map(|&i| {
                let sampling = match partial.get(i) {
                    Some(true) => sampling.partial(),
                    _ => sampling,
                };
                sample_document(
                    &docs[i].doc,
                    config,
                    &sampling,
                    &mut sample_rng(seed, epoch, i),
                )
            })
            .collect::<Result<_>>()?;
        let inputs: Vec<PreparedDoc> = batch.iter().map(|&i| docs[i].clone()).collect();
        self.optimizer.zero_grad();
        let losses = self.model.loss(&inputs, &samples)?;
        let values = [
            losses.mention.double_value(&[]),
            losses.coref.double_value(&[]),
            losses.entity.double_value(&[]),
            losses.relation.double_value(&[]),
            losses.total.double_value(&[]),
        ];
        if !values[4].is_finite() {
            let ids: Vec<&str> = batch.iter().map(|&i| docs[i].doc.id.as_str()).collect();
            tracing::warn!(?ids, "non-finite loss, step skipped");
            return Ok(None);
        }
        losses.total.backward();
        self.optimizer.clip_grad_norm(self.options.max_grad_norm);
        let lr = self.schedule.lr(self.optimizer.steps());
        self.optimizer.step(lr);
        Ok(Some(values))
    }
}
