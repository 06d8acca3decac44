//! Device workers. One thread per device owns one model replica (a [`Backend`] created inside
//! that thread, on its device), pulls batches from a shared channel, so every device receives
//! work as soon as it is free, and hands predictions to the CPU decoding stage while it starts
//! the next batch.
//!
//! A batch that fails (an error, or a panic such as a CUDA out-of-memory inside libtorch) is
//! split in halves and retried; a single document that still fails is reported as failed, and
//! the rest of the batch and every other batch go on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tch::Device;

use std::path::PathBuf;

use crate::device::{device_name, Precision};
use crate::error::{Error, Result};
use crate::model::{DocPrediction, GoldInput, JerexModel, LoadedModel, PreparedDoc, Thresholds};

/// What the engine needs from a model on one device.
pub trait Backend: Send {
    /// Runs every head on a batch: one prediction per document, in order.
    fn predict(&mut self, batch: &[PreparedDoc]) -> Result<Vec<DocPrediction>>;
    /// Runs only the encoder on the same batch (the ceiling `jerex bench` compares against).
    fn encode_only(&mut self, batch: &[PreparedDoc]) -> Result<()>;
    /// Seconds `predict` has spent in the encoder so far (the rest is the heads); 0 when the
    /// backend cannot tell.
    fn encoder_seconds(&self) -> f64 {
        0.0
    }
}

/// Creates the backend of one device. Called inside the device's worker thread, so a replica is
/// built where it runs (and a device that cannot load the model fails alone).
pub trait BackendFactory: Send + Sync {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>>;
}

/// The real model: each device loads its own replica from the model folder.
#[derive(Debug, Clone)]
pub struct ModelFactory {
    pub dir: PathBuf,
    pub thresholds: Thresholds,
    pub precision: Precision,
    /// Intra-op threads of each CPU replica.
    pub threads: usize,
}

impl BackendFactory for ModelFactory {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>> {
        if device == Device::Cpu {
            tch::set_num_threads(self.threads.max(1) as i32);
        }
        let mut loaded = JerexModel::load(&self.dir, device, self.precision)?;
        loaded.model.freeze();
        Ok(Box::new(ModelBackend {
            loaded,
            thresholds: self.thresholds,
            device,
            encoder_seconds: 0.0,
        }))
    }
}

struct ModelBackend {
    loaded: LoadedModel,
    thresholds: Thresholds,
    device: Device,
    encoder_seconds: f64,
}

impl ModelBackend {
    /// CUDA runs asynchronously: wait, so the time measured is the work done.
    fn synchronize(&self) {
        if let Device::Cuda(i) = self.device {
            tch::Cuda::synchronize(i as i64);
        }
    }
}

impl Backend for ModelBackend {
    fn predict(&mut self, batch: &[PreparedDoc]) -> Result<Vec<DocPrediction>> {
        let model = &self.loaded.model;
        let start = Instant::now();
        let encoded = model.encode_batch(batch);
        self.synchronize();
        self.encoder_seconds += start.elapsed().as_secs_f64();
        model.predict_encoded(&encoded, &self.thresholds, GoldInput::None)
    }

    fn encoder_seconds(&self) -> f64 {
        self.encoder_seconds
    }

    fn encode_only(&mut self, batch: &[PreparedDoc]) -> Result<()> {
        let encoded = self.loaded.model.encode_batch(batch);
        self.synchronize();
        drop(encoded);
        Ok(())
    }
}

/// What a worker does with each batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Predict,
    EncodeOnly,
}

/// The outcome of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Predicted(DocPrediction),
    /// Encoder-only mode: nothing to decode.
    Encoded,
    Failed(String),
}

/// A batch and per-document data the engine carries along (`T`).
#[derive(Debug)]
pub struct Batch<T> {
    pub docs: Vec<PreparedDoc>,
    pub meta: Vec<T>,
}

/// A processed batch.
#[derive(Debug)]
pub struct Done<T> {
    pub batch: Batch<T>,
    pub outcomes: Vec<Outcome>,
    /// Index of the device in the job's device list.
    pub device: usize,
    /// Seconds on the device (retries included).
    pub seconds: f64,
    /// Of `seconds`, those in the encoder (0 when the backend cannot tell).
    pub encoder_seconds: f64,
    /// Sub-batches run because of failures.
    pub retries: usize,
}

/// Runs one call, turning a panic into an error: libtorch reports out-of-memory and kernel
/// failures as panics through tch's infallible API.
fn guarded<R>(device: &str, what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("panic without a message");
            Err(Error::Device {
                device: device.to_string(),
                message: format!("{what} panicked: {msg}"),
            })
        }
    }
}

/// Runs `docs` on `backend`, splitting in halves on failure down to single documents.
/// Returns one outcome per document and the number of retried sub-batches.
pub fn run_split(
    device: &str,
    backend: &mut dyn Backend,
    docs: &[PreparedDoc],
    mode: Mode,
) -> (Vec<Outcome>, usize) {
    let result = match mode {
        Mode::Predict => guarded(device, "predict", || backend.predict(docs)).and_then(|p| {
            if p.len() == docs.len() {
                Ok(p.into_iter().map(Outcome::Predicted).collect())
            } else {
                Err(Error::Device {
                    device: device.to_string(),
                    message: format!(
                        "backend returned {} predictions for {} documents",
                        p.len(),
                        docs.len()
                    ),
                })
            }
        }),
        Mode::EncodeOnly => guarded(device, "encode", || backend.encode_only(docs))
            .map(|()| vec![Outcome::Encoded; docs.len()]),
    };
    match result {
        Ok(outcomes) => (outcomes, 0),
        Err(e) if docs.len() == 1 => (vec![Outcome::Failed(e.to_string())], 0),
        Err(e) => {
            tracing::warn!(
                device,
                docs = docs.len(),
                "batch failed, retrying in halves: {e}"
            );
            let (left, right) = docs.split_at(docs.len() / 2);
            let (mut a, ra) = run_split(device, backend, left, mode);
            let (b, rb) = run_split(device, backend, right, mode);
            a.extend(b);
            (a, ra + rb + 2)
        }
    }
}

/// The loop of one device thread: create the replica, then process batches until the channel
/// closes. A device whose replica cannot be created returns that error at once; the other
/// devices take its share. When the thread releases freed memory, so do the threads of
/// `cpu_pool`: they build the documents and rows that other threads free, and mimalloc returns
/// those pages only on the thread that owns them.
pub fn device_loop<T: Send>(
    index: usize,
    device: Device,
    factory: &dyn BackendFactory,
    mode: Mode,
    batches: Receiver<Batch<T>>,
    done: Sender<Done<T>>,
    cpu_pool: Option<&rayon::ThreadPool>,
) -> Result<()> {
    let name = device_name(device);
    let mut backend = guarded(&name, "model loading", || factory.create(device))?;
    tracing::info!(device = %name, "model replica ready");
    let mut memory = crate::alloc::ReleasePolicy::here();
    for batch in batches {
        let start = Instant::now();
        let encoder_before = backend.encoder_seconds();
        let (outcomes, retries) = run_split(&name, backend.as_mut(), &batch.docs, mode);
        let seconds = start.elapsed().as_secs_f64();
        let encoder_seconds = backend.encoder_seconds() - encoder_before;
        tracing::debug!(device = %name, docs = batch.docs.len(), seconds, "batch done");
        let out = Done {
            batch,
            outcomes,
            device: index,
            seconds,
            encoder_seconds,
            retries,
        };
        if done.send(out).is_err() {
            break; // the pipeline is shutting down
        }
        if let Some(memory) = &mut memory {
            memory.after_batch(|| {
                if let Some(pool) = cpu_pool {
                    pool.broadcast(|_| crate::alloc::release_freed());
                }
            });
        }
    }
    Ok(())
}
