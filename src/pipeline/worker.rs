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

impl ModelFactory {
    /// One frozen replica on `device` (a CPU replica with this factory's intra-op threads).
    pub fn load(&self, device: Device) -> Result<LoadedModel> {
        if device == Device::Cpu {
            tch::set_num_threads(self.threads.max(1) as i32);
        }
        let mut loaded = JerexModel::load(&self.dir, device, self.precision)?;
        loaded.model.freeze();
        Ok(loaded)
    }
}

impl BackendFactory for ModelFactory {
    fn create(&self, device: Device) -> Result<Box<dyn Backend>> {
        Ok(Box::new(ModelBackend {
            loaded: self.load(device)?,
            thresholds: self.thresholds,
        }))
    }
}

struct ModelBackend {
    loaded: LoadedModel,
    thresholds: Thresholds,
}

impl Backend for ModelBackend {
    fn predict(&mut self, batch: &[PreparedDoc]) -> Result<Vec<DocPrediction>> {
        let model = &self.loaded.model;
        model.predict_encoded(
            &model.encode_batch(batch),
            &self.thresholds,
            GoldInput::None,
        )
    }
}

/// The outcome of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Predicted(DocPrediction),
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
) -> (Vec<Outcome>, usize) {
    let result = guarded(device, "predict", || backend.predict(docs)).and_then(|p| {
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
    });
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
            let (mut a, ra) = run_split(device, backend, left);
            let (b, rb) = run_split(device, backend, right);
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
        // Predictions come back to the host, so on CUDA too this is the work done.
        let (outcomes, retries) = run_split(&name, backend.as_mut(), &batch.docs);
        let seconds = start.elapsed().as_secs_f64();
        tracing::debug!(device = %name, docs = batch.docs.len(), seconds, "batch done");
        let out = Done {
            batch,
            outcomes,
            device: index,
            seconds,
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
