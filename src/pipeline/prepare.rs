//! The prepare stage: screening, tokenization and candidate spans on the rayon pool. Rejected
//! rows go straight to the writer; long documents go on as their segments.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;

use super::read::RowChunk;
use super::{DocResult, Meta, Stage, StageClock, WriterMsg};
use crate::alloc::ReleaseFollower;
use crate::encoder::{plan_windows, WindowConfig};
use crate::error::Error;
use crate::model::PreparedDoc;
use crate::output::{DocRows, DocumentRow, Status};
use crate::pipeline::bucket::Cost;
use crate::pipeline::checks::{FirstSeen, Screen};
use crate::pipeline::long;

/// Mentions per word assumed when estimating a document's mention pairs before prediction
/// (DocRED-like text has about one mention every eight words).
const WORDS_PER_MENTION: usize = 8;

/// Prepared documents (or segments) of one chunk of rows, for the bucketer.
pub(super) type Prepared = Vec<(PreparedDoc, Meta)>;

/// Prepares every chunk from the reader; documents whose id maps to their content hash in
/// `unchanged` are dropped (counted as skipped). Raises the abort on a strict-mode problem.
pub(super) fn run(
    stage: &Stage,
    first_seen: &FirstSeen,
    unchanged: &HashMap<String, String>,
    rows_rx: Receiver<RowChunk>,
    prepared_tx: Sender<Prepared>,
    write_tx: Sender<WriterMsg>,
) {
    let (cfg, model) = (stage.cfg, stage.model);
    let screen = Screen::new(cfg.checks, first_seen, &cfg.units);
    let mut memory = ReleaseFollower::default();
    for (unit, rows) in rows_rx {
        memory.follow();
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                stage.abort.raise(e);
                return;
            }
        };
        let t = Instant::now();
        let source = cfg.units[unit].path.to_string_lossy().into_owned();
        let mut docs = Vec::with_capacity(rows.len());
        let mut rejected = Vec::new();
        for r in rows {
            let r = screen.check(unit, r);
            match r.doc {
                Ok(doc) => docs.push((r.row as u64, doc)),
                Err(reason) if cfg.checks.strict => {
                    let id =
                        r.id.map_or("document".into(), |id| format!("document {id:?}"));
                    stage.abort.raise(Error::BadRow {
                        path: cfg.units[unit].path.clone(),
                        row: r.row,
                        message: format!("{id} rejected in strict mode: {reason}"),
                    });
                    return;
                }
                Err(reason) => rejected.push(DocResult {
                    unit,
                    document: DocumentRow {
                        doc_id: r.id,
                        status: Status::Rejected,
                        reason: Some(reason),
                        source_file: source.clone(),
                        source_row: r.row as u64,
                        content_hash: None,
                        words: 0,
                        word_pieces: 0,
                        segments: 0,
                        mentions: 0,
                        entities: 0,
                        relations: 0,
                        seconds: 0.0,
                        model_id: model.model_id.clone(),
                    },
                    rows: DocRows::default(),
                }),
            }
        }
        let offered = docs.len();
        let long_documents = &model.config.heads.long_documents;
        let good: Vec<Prepared> = stage.pool.install(|| {
            docs.into_par_iter()
                .filter_map(|(row, doc)| {
                    let content_hash = doc.content_hash();
                    if unchanged.get(&doc.id) == Some(&content_hash) {
                        return None;
                    }
                    let items = long::split(model.prepare(doc), long_documents);
                    let items = items.into_iter().map(|(prepared, segment)| {
                        let meta = Meta {
                            unit,
                            row,
                            content_hash: content_hash.clone(),
                            cost: cost(&prepared, &model.config.window),
                            segment,
                        };
                        (prepared, meta)
                    });
                    Some(items.collect())
                })
                .collect()
        });
        let skipped = WriterMsg::Skipped {
            unit,
            docs: offered - good.len(),
        };
        if offered > good.len() && write_tx.send(skipped).is_err() {
            return;
        }
        let good: Prepared = good.into_iter().flatten().collect();
        StageClock::add(&stage.clock.prepare, t);
        if !rejected.is_empty() && write_tx.send(WriterMsg::Docs(rejected)).is_err() {
            return;
        }
        if !good.is_empty() && prepared_tx.send(good).is_err() {
            return;
        }
    }
}

/// The batch cost of a prepared document: its encoder windows and heads' sizes.
fn cost(doc: &PreparedDoc, window: &WindowConfig) -> Cost {
    let windows = plan_windows(doc.tokens.ids.len(), window);
    let lens = windows.iter().map(|w| w.end - w.start + 2);
    let mentions = doc.doc.word_count().div_ceil(WORDS_PER_MENTION);
    Cost {
        row_len: lens.clone().max().unwrap_or(0),
        rows: windows.len(),
        word_pieces: lens.sum(),
        spans: doc.candidate_count(),
        pairs: mentions * mentions.saturating_sub(1),
    }
}
