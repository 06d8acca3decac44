//! The writing stage: each unit's rows gathered into parts of `rows_per_part` rows, written to
//! the unit's staging area, and the unit committed through the output's [`UnitSink`] when its last
//! document is done, so the tables never hold part of a unit.

use std::collections::HashMap;
use std::time::Instant;

use crossbeam_channel::Receiver;

use super::sink::{now, DocCounts, PartRecord, UnitRecord, UnitSink};
use super::{DocResult, OutputSettings, Report, Stage, StageClock, WriterMsg};
use crate::alloc::ReleaseFollower;
use crate::corpus::Unit;
use crate::error::{Error, Result};
use crate::output::{
    DocRows, DocumentRow, EntityRow, MentionRow, PartWriter, PendingRows, RelationRow, Status,
    TableRow,
};
use crate::schema::TABLES;

/// How many top-scoring relations the summary keeps as examples.
const EXAMPLES: usize = 5;

/// Rows of one unit waiting to be written.
#[derive(Default)]
struct UnitBuffer {
    expected: Option<usize>,
    /// The unit was not read to the end or a part failed: it must not be recorded as finished.
    broken: bool,
    seen: usize,
    mentions: PendingRows<MentionRow>,
    entities: PendingRows<EntityRow>,
    relations: PendingRows<RelationRow>,
    documents: PendingRows<DocumentRow>,
    counts: DocCounts,
    /// Writes the unit's parts into its staging folder (opened at the first part).
    stage: Option<PartWriter>,
    /// Parts written per table, in [`TABLES`] order.
    parts: [Vec<PartRecord>; 4],
}

impl UnitBuffer {
    fn record(self, unit: &Unit) -> UnitRecord {
        UnitRecord {
            hash: unit.hash.clone(),
            source_file: unit.path.clone(),
            row_groups: unit.row_groups.clone(),
            rows: unit.rows.clone(),
            parts: TABLES
                .iter()
                .zip(self.parts)
                .map(|(t, p)| (t.to_string(), p))
                .collect(),
            documents: self.counts,
            finished: now(),
        }
    }
}

/// Gathers every unit's rows, writes them as parts and commits each unit once all its documents
/// are done (a broken unit is abandoned instead). Returns the run's counts.
pub(super) fn run(
    stage: &Stage,
    manifest: Option<&dyn UnitSink>,
    rx: Receiver<WriterMsg>,
    progress: &indicatif::ProgressBar,
) -> Result<Report> {
    let cfg = stage.cfg;
    let mut units: HashMap<usize, UnitBuffer> = HashMap::new();
    let mut report = Report::default();
    let mut first_error: Option<Error> = None;
    // One message's rows per unit, gathered before they join the unit's pending batches.
    let mut gathered: HashMap<usize, (DocRows, Vec<DocumentRow>)> = HashMap::new();
    let mut memory = ReleaseFollower::default();
    let mut slowest = 0.0f64;
    for msg in rx {
        memory.follow();
        let t = Instant::now();
        let mut touched = Vec::new();
        match msg {
            WriterMsg::UnitEnd { unit, rows, error } => {
                let buf = units.entry(unit).or_default();
                if let Some(e) = error {
                    // The error names the unit's file already.
                    report.unit_errors.push(e);
                    buf.broken = true;
                }
                buf.expected = Some(rows);
                touched.push(unit);
            }
            WriterMsg::Skipped { unit, docs } => {
                units.entry(unit).or_default().seen += docs;
                progress.inc(docs as u64);
                touched.push(unit);
            }
            WriterMsg::Docs(docs) => {
                for d in docs {
                    count(&mut report, &d);
                    progress.inc(1);
                    show_if_slowest(progress, &mut slowest, &d.document);
                    if !touched.contains(&d.unit) {
                        touched.push(d.unit);
                    }
                    let buf = units.entry(d.unit).or_default();
                    buf.seen += 1;
                    match d.document.status {
                        Status::Ok => buf.counts.ok += 1,
                        Status::Rejected => buf.counts.rejected += 1,
                        Status::Failed => buf.counts.failed += 1,
                    }
                    let (rows, documents) = gathered.entry(d.unit).or_default();
                    rows.mentions.extend(d.rows.mentions);
                    rows.entities.extend(d.rows.entities);
                    rows.relations.extend(d.rows.relations);
                    documents.push(d.document);
                }
                for (unit, (rows, documents)) in gathered.drain() {
                    let buf = units.get_mut(&unit).expect("unit buffer exists");
                    let pushed = buf
                        .mentions
                        .push(rows.mentions)
                        .and_then(|()| buf.entities.push(rows.entities))
                        .and_then(|()| buf.relations.push(rows.relations))
                        .and_then(|()| buf.documents.push(documents));
                    if let Err(e) = pushed {
                        tracing::error!("buffering unit {}: {e}", cfg.units[unit].path.display());
                        buf.broken = true;
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        for unit in touched {
            let buf = units.get_mut(&unit).expect("unit buffer exists");
            let complete = buf.expected == Some(buf.seen);
            if let (Some(m), Some(o), false) = (manifest, &cfg.output, buf.broken) {
                if let Err(e) = flush_unit(m, o, &cfg.units[unit], buf, complete) {
                    tracing::error!("writing unit {}: {e}", cfg.units[unit].path.display());
                    buf.broken = true;
                    first_error.get_or_insert(e);
                }
            }
            if complete {
                let done = units.remove(&unit).expect("unit buffer exists");
                let u = &cfg.units[unit];
                let (seen, parts) = (done.seen, done.parts.each_ref().map(Vec::len));
                let committed = match manifest {
                    Some(m) if done.broken => m.abandon(u, &done.parts).map(|()| false),
                    Some(m) => m.commit(&done.record(u)).map(|()| true),
                    None => Ok(false),
                };
                match committed {
                    Ok(true) => {
                        for (n, total) in parts.iter().zip(&mut report.parts) {
                            *total += n;
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!("committing unit {}: {e}", u.path.display());
                        first_error.get_or_insert(e);
                    }
                }
                tracing::info!(unit = %u.path.display(), documents = seen, "unit done");
            }
        }
        StageClock::add(&stage.clock.write, t);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if !units.is_empty() {
        let open: Vec<String> = units
            .keys()
            .map(|&u| cfg.units[u].path.display().to_string())
            .collect();
        return Err(Error::Config(format!(
            "the pipeline stopped before finishing units: {}",
            open.join(", ")
        )));
    }
    Ok(report)
}

fn count(report: &mut Report, d: &DocResult) {
    report.documents += 1;
    match d.document.status {
        Status::Ok => report.ok += 1,
        Status::Rejected => report.rejected += 1,
        Status::Failed => report.failed += 1,
    }
    report.words += d.document.words as usize;
    report.mentions += d.rows.mentions.len();
    report.entities += d.rows.entities.len();
    report.relations += d.rows.relations.len();
    for r in &d.rows.relations {
        let pos = report.examples.partition_point(|e| e.score >= r.score);
        if pos < EXAMPLES {
            report.examples.insert(pos, r.clone());
            report.examples.truncate(EXAMPLES);
        }
    }
}

/// Writes the full parts of a unit's buffers, and everything left when the unit is complete,
/// into the unit's staging folder (a fresh one at the first part, so leftovers of a killed run
/// of the unit never mix in).
fn flush_unit(
    m: &dyn UnitSink,
    o: &OutputSettings,
    unit: &Unit,
    buf: &mut UnitBuffer,
    complete: bool,
) -> Result<()> {
    let pending = [
        buf.mentions.len(),
        buf.entities.len(),
        buf.relations.len(),
        buf.documents.len(),
    ];
    let due = |n: usize| n >= o.rows_per_part || (complete && n > 0);
    if !pending.iter().any(|&n| due(n)) {
        return Ok(());
    }
    if buf.stage.is_none() {
        buf.stage = Some(m.stage(unit, o.format, o.compression)?);
    }
    let w = buf.stage.as_ref().expect("staging opened above");
    let [mentions, entities, relations, documents] = &mut buf.parts;
    let n = o.rows_per_part;
    write_table(w, unit, &mut buf.mentions, mentions, n, complete)?;
    write_table(w, unit, &mut buf.entities, entities, n, complete)?;
    write_table(w, unit, &mut buf.relations, relations, n, complete)?;
    write_table(w, unit, &mut buf.documents, documents, n, complete)?;
    Ok(())
}

fn write_table<R: TableRow>(
    w: &PartWriter,
    unit: &Unit,
    rows: &mut PendingRows<R>,
    parts: &mut Vec<PartRecord>,
    rows_per_part: usize,
    complete: bool,
) -> Result<()> {
    while rows.len() >= rows_per_part || (complete && !rows.is_empty()) {
        let batch = rows.take(rows_per_part)?;
        let stem = w.stem(&unit.hash, parts.len());
        let path = w.write(R::TABLE, &stem, &batch)?;
        let file = path.file_name().expect("a part file name");
        parts.push(PartRecord {
            file: file.to_string_lossy().into_owned(),
            rows: batch.num_rows(),
        });
    }
    Ok(())
}

/// Names the slowest document so far next to the progress bar, with its time and length.
fn show_if_slowest(progress: &indicatif::ProgressBar, slowest: &mut f64, d: &DocumentRow) {
    if d.seconds > *slowest {
        *slowest = d.seconds;
        progress.set_message(format!(
            "slowest: {} {:.1} s ({} words)",
            d.doc_id.as_deref().unwrap_or("?"),
            d.seconds,
            d.words
        ));
    }
}
