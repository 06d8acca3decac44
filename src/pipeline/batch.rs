//! The batching stage: a look-ahead window of prepared documents, sorted and packed into
//! batches under the word-piece budget (see [`Bucketer`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::prepare::Prepared;
use super::{Meta, Stage, StageClock};
use crate::alloc::ReleaseFollower;
use crate::model::PreparedDoc;
use crate::pipeline::bucket::{self, Bucketer};
use crate::pipeline::worker::Batch;

/// Real and padded word pieces of every batch sent.
#[derive(Default)]
pub(super) struct Padding {
    pub real: AtomicU64,
    pub padded: AtomicU64,
}

/// Packs everything from the prepare stage into batches for the devices.
pub(super) fn run(
    stage: &Stage,
    padding: &Padding,
    prepared_rx: Receiver<Prepared>,
    batch_tx: Sender<Batch<Meta>>,
) {
    let mut bucketer = Bucketer::new(stage.cfg.batch, |item: &(PreparedDoc, Meta)| item.1.cost);
    let send = |batches: Vec<Vec<(PreparedDoc, Meta)>>| {
        for b in batches {
            let (r, p) = bucket::padding(b.iter().map(|(_, m)| m.cost));
            padding.real.fetch_add(r as u64, Ordering::Relaxed);
            padding.padded.fetch_add(p as u64, Ordering::Relaxed);
            let (docs, meta) = b.into_iter().unzip();
            if batch_tx.send(Batch { docs, meta }).is_err() {
                return false;
            }
        }
        true
    };
    let mut memory = ReleaseFollower::default();
    for items in prepared_rx {
        memory.follow();
        for item in items {
            let t = Instant::now();
            let batches = bucketer.push(item);
            StageClock::add(&stage.clock.bucket, t);
            if !send(batches) {
                return;
            }
        }
    }
    // After a strict-mode stop the documents still waiting are not worth computing.
    if stage.abort.raised() {
        return;
    }
    let t = Instant::now();
    let batches = bucketer.flush();
    StageClock::add(&stage.clock.bucket, t);
    send(batches);
}
