//! The reader stage: units in order, rows in chunks.

use std::time::Instant;

use crossbeam_channel::Sender;

use super::{Stage, StageClock, WriterMsg};
use crate::alloc::ReleaseFollower;
use crate::corpus::parquet::RowResult;
use crate::corpus::Document;
use crate::error::Result;

/// Input rows per message from the reader: enough to amortise channel traffic and give the
/// rayon pool a parallel chunk.
const READ_CHUNK: usize = 64;

/// Words per message from the reader, at most (a longer document goes alone): what the stages
/// between the reader and the bucketer hold grows with words, and long documents would
/// otherwise fill a chunk of rows with hundreds of MB of segments. DocRED-sized rows fill
/// READ_CHUNK first.
const READ_CHUNK_WORDS: usize = 50_000;

/// Rows of a unit for the prepare stage; a unit's error travels with its rows only in strict
/// mode.
pub(super) type RowChunk = (usize, Result<Vec<RowResult>>);

/// Reads every unit, sending its rows to the prepare stage and its end (row count, or the error
/// that stopped it) to the writer. Returns when done or when a receiver has gone.
pub(super) fn run(stage: &Stage, rows_tx: Sender<RowChunk>, write_tx: Sender<WriterMsg>) {
    let cfg = stage.cfg;
    let mut memory = ReleaseFollower::default();
    for (u, unit) in cfg.units.iter().enumerate() {
        let mut rows = 0;
        let mut error = None;
        let mut t = Instant::now();
        match unit.open(&cfg.columns) {
            Err(e) => error = Some(e),
            Ok(reader) => {
                let mut chunk = Vec::with_capacity(READ_CHUNK);
                let mut words = 0;
                for r in reader {
                    match r {
                        Ok(row) => {
                            rows += 1;
                            words += row.doc.as_ref().map_or(0, Document::word_count);
                            chunk.push(row);
                            if chunk.len() == READ_CHUNK || words >= READ_CHUNK_WORDS {
                                words = 0;
                                memory.follow();
                                StageClock::add(&stage.clock.read, t);
                                let rows = std::mem::take(&mut chunk);
                                if rows_tx.send((u, Ok(rows))).is_err() {
                                    return;
                                }
                                t = Instant::now();
                            }
                        }
                        Err(e) => error = Some(e),
                    }
                }
                StageClock::add(&stage.clock.read, t);
                if !chunk.is_empty() && rows_tx.send((u, Ok(chunk))).is_err() {
                    return;
                }
            }
        }
        if let Some(e) = &error {
            tracing::error!(unit = %unit.path.display(), "input unit failed: {e}");
        }
        let error = match error {
            Some(e) if cfg.checks.strict => {
                // Through the prepare stage, behind the unit's rows: the run stops at the first
                // problem in input order, whichever stage finds it.
                let _ = rows_tx.send((u, Err(e)));
                return;
            }
            other => other,
        };
        let msg = WriterMsg::UnitEnd {
            unit: u,
            rows,
            error,
        };
        if write_tx.send(msg).is_err() {
            return;
        }
    }
}
