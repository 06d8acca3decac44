//! The decoding stage: table rows of every finished document of a processed batch, on the
//! rayon pool, overlapped with the devices' next batches.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;

use super::{DeviceReport, DocResult, Meta, Stage, StageClock, WriterMsg};
use crate::alloc::ReleaseFollower;
use crate::model::PreparedDoc;
use crate::output::{doc_rows, DocRows, DocumentRow, Status};
use crate::pipeline::long::LongDoc;
use crate::pipeline::worker::{Done, Outcome};

/// Decodes every processed batch, counting each device's work, and sends the rows to the writer.
pub(super) fn run(
    stage: &Stage,
    device_reports: &Mutex<Vec<DeviceReport>>,
    done_rx: Receiver<Done<Meta>>,
    write_tx: Sender<WriterMsg>,
) {
    let mut memory = ReleaseFollower::default();
    for done in done_rx {
        memory.follow();
        let t = Instant::now();
        {
            let mut reports = device_reports.lock().unwrap();
            let r = &mut reports[done.device];
            r.batches += 1;
            r.documents += done.batch.docs.len();
            r.seconds += done.seconds;
            r.retries += done.retries;
        }
        stage
            .clock
            .device
            .fetch_add((done.seconds * 1e9) as u64, Ordering::Relaxed);
        let results = decode(&done, stage);
        StageClock::add(&stage.clock.decode, t);
        if write_tx.send(WriterMsg::Docs(results)).is_err() {
            return;
        }
    }
}

/// A document of a processed batch ready for its rows: a whole one, or a long one whose last
/// segment the batch held.
struct Ready<'a> {
    meta: &'a Meta,
    whole: Option<&'a PreparedDoc>,
    long: Option<Arc<LongDoc>>,
    outcome: Cow<'a, Outcome>,
    seconds: f64,
}

impl Ready<'_> {
    fn prepared(&self) -> &PreparedDoc {
        match (&self.whole, &self.long) {
            (Some(p), _) => p,
            (None, Some(l)) => l.prepared(),
            (None, None) => unreachable!("a ready document is whole or long"),
        }
    }
}

/// Table rows of every document of a processed batch that is complete. A document's seconds
/// are its share of the batch's device time by word pieces, summed over the batches of its
/// segments for a long document (whose rows come with its last segment).
fn decode(done: &Done<Meta>, stage: &Stage) -> Vec<DocResult> {
    let (cfg, model) = (stage.cfg, stage.model);
    let total_pieces: usize = done.batch.meta.iter().map(|m| m.cost.word_pieces).sum();
    let share = |m: &Meta| done.seconds * m.cost.word_pieces as f64 / total_pieces.max(1) as f64;
    let mut ready = Vec::with_capacity(done.batch.docs.len());
    for ((prepared, meta), outcome) in done
        .batch
        .docs
        .iter()
        .zip(&done.batch.meta)
        .zip(&done.outcomes)
    {
        match &meta.segment {
            None => ready.push(Ready {
                meta,
                whole: Some(prepared),
                long: None,
                outcome: Cow::Borrowed(outcome),
                seconds: share(meta),
            }),
            Some(s) => {
                if let Some((outcome, seconds)) = s.doc.finish(s.index, outcome, share(meta)) {
                    tracing::info!(
                        doc = %s.doc.prepared().doc.id,
                        words = s.doc.prepared().doc.word_count(),
                        segments = s.doc.segment_count(),
                        seconds,
                        "long document done"
                    );
                    ready.push(Ready {
                        meta,
                        whole: None,
                        long: Some(Arc::clone(&s.doc)),
                        outcome: Cow::Owned(outcome),
                        seconds,
                    });
                }
            }
        }
    }
    stage.pool.install(|| {
        ready
            .par_iter()
            .map(|r| {
                let (prepared, meta) = (r.prepared(), r.meta);
                let doc = &prepared.doc;
                let (status, reason, rows) = match r.outcome.as_ref() {
                    Outcome::Predicted(pred) => match doc_rows(doc, pred, &model.config) {
                        Ok(rows) => (Status::Ok, None, rows),
                        Err(e) => (Status::Failed, Some(e.to_string()), DocRows::default()),
                    },
                    Outcome::Failed(e) => (Status::Failed, Some(e.clone()), DocRows::default()),
                };
                DocResult {
                    unit: meta.unit,
                    document: DocumentRow {
                        doc_id: Some(doc.id.clone()),
                        status,
                        reason,
                        source_file: cfg.units[meta.unit].path.to_string_lossy().into_owned(),
                        source_row: meta.row,
                        content_hash: Some(meta.content_hash.clone()),
                        words: doc.word_count() as u32,
                        word_pieces: prepared.tokens.ids.len() as u32,
                        segments: r.long.as_ref().map_or(1, |l| l.segment_count()) as u32,
                        mentions: rows.mentions.len() as u32,
                        entities: rows.entities.len() as u32,
                        relations: rows.relations.len() as u32,
                        seconds: r.seconds,
                        model_id: model.model_id.clone(),
                    },
                    rows,
                }
            })
            .collect()
    })
}
