//! Table rows built from one document's prediction, and their conversion to Arrow record
//! batches. The column lists live in `schemas/*.json` only: a batch is assembled by walking the
//! schema's columns and asking the row type for each by name, so a column added to a schema
//! without a builder here is an error (caught by the tests), never a silently missing column.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, ListBuilder, StringArray, UInt32Array, UInt32Builder,
    UInt64Array,
};
use arrow::compute::{lexsort_to_indices, take, SortColumn};
use arrow::record_batch::RecordBatch;

use crate::corpus::{Document, Span};
use crate::error::{Error, Result};
use crate::model::{DocPrediction, ModelConfig};
use crate::schema;

/// A row type of one output table.
pub trait TableRow: Sized {
    /// The schema name (`schema::MENTIONS`, ...).
    const TABLE: &'static str;
    /// The column called `name` built from `rows`, or `None` when this type has no such column.
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef>;
}

/// One row of the `mentions` table.
#[derive(Debug, Clone, PartialEq)]
pub struct MentionRow {
    pub doc_id: String,
    pub mention_id: u32,
    pub entity_id: u32,
    pub sentence: u32,
    pub word_start: u32,
    pub word_end: u32,
    pub char_start: Option<u32>,
    pub char_end: Option<u32>,
    pub text: String,
    pub score: f32,
}

/// One row of the `entities` table.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    pub doc_id: String,
    pub entity_id: u32,
    pub entity_type: String,
    pub entity_type_name: String,
    pub canonical_name: String,
    pub type_score: f32,
    pub coref_score: f32,
    pub mention_ids: Vec<u32>,
}

/// One row of the `relations` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RelationRow {
    pub doc_id: String,
    pub head_entity_id: u32,
    pub tail_entity_id: u32,
    pub relation: String,
    pub relation_name: String,
    pub head_name: String,
    pub tail_name: String,
    pub score: f32,
    pub evidence_head_mention_id: u32,
    pub evidence_tail_mention_id: u32,
    pub evidence_sentences: Vec<u32>,
    pub evidence_text: String,
}

/// Processing status of an input row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Bad input row (no id, no text, bad words).
    Rejected,
    /// Valid input that could not be processed (e.g. a device failure on that document alone).
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
        }
    }
}

/// One row of the `documents` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentRow {
    pub doc_id: Option<String>,
    pub status: Status,
    pub reason: Option<String>,
    pub source_file: String,
    pub source_row: u64,
    pub content_hash: Option<String>,
    pub words: u32,
    pub word_pieces: u32,
    /// Segments the document was predicted in (1 when whole, 0 when not tokenized).
    pub segments: u32,
    pub mentions: u32,
    pub entities: u32,
    pub relations: u32,
    pub seconds: f64,
    pub model_id: String,
}

/// The rows one document contributes to the three content tables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DocRows {
    pub mentions: Vec<MentionRow>,
    pub entities: Vec<EntityRow>,
    pub relations: Vec<RelationRow>,
}

fn u32_of(n: usize, what: &str, doc: &Document) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::BadDocument {
        doc: doc.id.clone(),
        message: format!("{what} {n} does not fit the u32 output column"),
    })
}

/// The text of a word span: the original text between its character offsets when the document
/// has text and offsets, else its words joined by single spaces (the schema's rule).
fn span_text(doc: &Document, span: Span) -> String {
    if let (Some(text), Some((start, end))) = (&doc.text, doc.char_span(span)) {
        text.chars().skip(start).take(end - start).collect()
    } else {
        doc.phrase(span)
    }
}

/// Builds the mention, entity and relation rows of one document from its prediction.
/// Indices out of range in the prediction are an error naming the document (a model bug must
/// not produce a table that silently joins wrong).
pub fn doc_rows(doc: &Document, pred: &DocPrediction, config: &ModelConfig) -> Result<DocRows> {
    let bad = |message: String| Error::BadDocument {
        doc: doc.id.clone(),
        message,
    };
    let mut entity_of = vec![None; pred.mentions.len()];
    for (e, ent) in pred.entities.iter().enumerate() {
        for &m in &ent.mentions {
            let slot = entity_of
                .get_mut(m)
                .ok_or_else(|| bad(format!("entity {e} refers to missing mention {m}")))?;
            if slot.is_some() {
                return Err(bad(format!("mention {m} belongs to two entities")));
            }
            *slot = Some(e);
        }
    }
    let texts: Vec<String> = pred
        .mentions
        .iter()
        .map(|m| span_text(doc, m.span))
        .collect();
    let mut rows = DocRows::default();
    for (i, m) in pred.mentions.iter().enumerate() {
        let entity = entity_of[i].ok_or_else(|| bad(format!("mention {i} has no entity")))?;
        let chars = doc.text.as_ref().and(doc.char_span(m.span));
        rows.mentions.push(MentionRow {
            doc_id: doc.id.clone(),
            mention_id: u32_of(i, "mention id", doc)?,
            entity_id: u32_of(entity, "entity id", doc)?,
            sentence: u32_of(m.span.sent, "sentence", doc)?,
            word_start: u32_of(m.span.start, "word index", doc)?,
            word_end: u32_of(m.span.end, "word index", doc)?,
            char_start: chars.map(|c| u32_of(c.0, "char offset", doc)).transpose()?,
            char_end: chars.map(|c| u32_of(c.1, "char offset", doc)).transpose()?,
            text: texts[i].clone(),
            score: m.score,
        });
    }
    let mut names = Vec::with_capacity(pred.entities.len());
    for (e, ent) in pred.entities.iter().enumerate() {
        let ty = config
            .entity_types
            .get(ent.entity_type)
            .ok_or_else(|| bad(format!("entity {e} has unknown type {}", ent.entity_type)))?;
        let name = canonical_name(ent.mentions.iter().map(|&m| (m, texts[m].as_str())));
        names.push(name.clone());
        let mut mention_ids = ent
            .mentions
            .iter()
            .map(|&m| u32_of(m, "mention id", doc))
            .collect::<Result<Vec<_>>>()?;
        mention_ids.sort_unstable();
        rows.entities.push(EntityRow {
            doc_id: doc.id.clone(),
            entity_id: u32_of(e, "entity id", doc)?,
            entity_type: ty.key.clone(),
            entity_type_name: ty.name.clone(),
            canonical_name: name,
            type_score: ent.type_score,
            coref_score: ent.coref_score,
            mention_ids,
        });
    }
    let starts = doc.sentence_starts();
    for r in &pred.relations {
        let ty = config
            .relation_types
            .get(r.relation)
            .ok_or_else(|| bad(format!("relation of unknown type {}", r.relation)))?;
        let (hm, tm) = r.evidence;
        let (head, tail) = (
            pred.mentions
                .get(hm)
                .ok_or_else(|| bad(format!("relation evidence names missing mention {hm}")))?,
            pred.mentions
                .get(tm)
                .ok_or_else(|| bad(format!("relation evidence names missing mention {tm}")))?,
        );
        if r.head >= names.len() || r.tail >= names.len() {
            return Err(bad(format!(
                "relation between missing entities {} and {}",
                r.head, r.tail
            )));
        }
        let mut sents = vec![head.span.sent, tail.span.sent];
        sents.sort_unstable();
        sents.dedup();
        let evidence_text = sents
            .iter()
            .map(|&s| {
                let span = Span {
                    start: starts[s],
                    end: starts[s + 1],
                    sent: s,
                };
                span_text(doc, span)
            })
            .collect::<Vec<_>>()
            .join(" ");
        rows.relations.push(RelationRow {
            doc_id: doc.id.clone(),
            head_entity_id: u32_of(r.head, "entity id", doc)?,
            tail_entity_id: u32_of(r.tail, "entity id", doc)?,
            relation: ty.key.clone(),
            relation_name: ty.name.clone(),
            head_name: names[r.head].clone(),
            tail_name: names[r.tail].clone(),
            score: r.score,
            evidence_head_mention_id: u32_of(hm, "mention id", doc)?,
            evidence_tail_mention_id: u32_of(tm, "mention id", doc)?,
            evidence_sentences: sents
                .iter()
                .map(|&s| u32_of(s, "sentence", doc))
                .collect::<Result<_>>()?,
            evidence_text,
        });
    }
    Ok(rows)
}

/// The most frequent mention text; ties go to the longest, then the earliest mention.
fn canonical_name<'a>(mentions: impl Iterator<Item = (usize, &'a str)>) -> String {
    let mut counts: Vec<(&str, usize, usize)> = Vec::new(); // (text, count, first mention)
    for (m, text) in mentions {
        match counts.iter_mut().find(|c| c.0 == text) {
            Some(c) => {
                c.1 += 1;
                c.2 = c.2.min(m);
            }
            None => counts.push((text, 1, m)),
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| {
            (a.1, a.0.chars().count())
                .cmp(&(b.1, b.0.chars().count()))
                .then(b.2.cmp(&a.2))
        })
        .map(|c| c.0.to_string())
        .unwrap_or_default()
}

fn strings<R>(rows: &[R], f: impl Fn(&R) -> &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
}

fn u32s<R>(rows: &[R], f: impl Fn(&R) -> u32) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(rows.iter().map(f)))
}

fn f32s<R>(rows: &[R], f: impl Fn(&R) -> f32) -> ArrayRef {
    Arc::new(Float32Array::from_iter_values(rows.iter().map(f)))
}

fn u32_lists<R>(rows: &[R], f: impl Fn(&R) -> &[u32]) -> ArrayRef {
    let mut b = ListBuilder::new(UInt32Builder::new());
    for r in rows {
        b.values().append_slice(f(r));
        b.append(true);
    }
    Arc::new(b.finish())
}

impl TableRow for MentionRow {
    const TABLE: &'static str = schema::MENTIONS;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => strings(rows, |r| &r.doc_id),
            "mention_id" => u32s(rows, |r| r.mention_id),
            "entity_id" => u32s(rows, |r| r.entity_id),
            "sentence" => u32s(rows, |r| r.sentence),
            "word_start" => u32s(rows, |r| r.word_start),
            "word_end" => u32s(rows, |r| r.word_end),
            "char_start" => Arc::new(rows.iter().map(|r| r.char_start).collect::<UInt32Array>()),
            "char_end" => Arc::new(rows.iter().map(|r| r.char_end).collect::<UInt32Array>()),
            "text" => strings(rows, |r| &r.text),
            "score" => f32s(rows, |r| r.score),
            _ => return None,
        })
    }
}

impl TableRow for EntityRow {
    const TABLE: &'static str = schema::ENTITIES;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => strings(rows, |r| &r.doc_id),
            "entity_id" => u32s(rows, |r| r.entity_id),
            "entity_type" => strings(rows, |r| &r.entity_type),
            "entity_type_name" => strings(rows, |r| &r.entity_type_name),
            "canonical_name" => strings(rows, |r| &r.canonical_name),
            "type_score" => f32s(rows, |r| r.type_score),
            "coref_score" => f32s(rows, |r| r.coref_score),
            "mention_count" => u32s(rows, |r| r.mention_ids.len() as u32),
            "mention_ids" => u32_lists(rows, |r| &r.mention_ids),
            _ => return None,
        })
    }
}

impl TableRow for RelationRow {
    const TABLE: &'static str = schema::RELATIONS;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => strings(rows, |r| &r.doc_id),
            "head_entity_id" => u32s(rows, |r| r.head_entity_id),
            "tail_entity_id" => u32s(rows, |r| r.tail_entity_id),
            "relation" => strings(rows, |r| &r.relation),
            "relation_name" => strings(rows, |r| &r.relation_name),
            "head_name" => strings(rows, |r| &r.head_name),
            "tail_name" => strings(rows, |r| &r.tail_name),
            "score" => f32s(rows, |r| r.score),
            "evidence_head_mention_id" => u32s(rows, |r| r.evidence_head_mention_id),
            "evidence_tail_mention_id" => u32s(rows, |r| r.evidence_tail_mention_id),
            "evidence_sentences" => u32_lists(rows, |r| &r.evidence_sentences),
            "evidence_text" => strings(rows, |r| &r.evidence_text),
            _ => return None,
        })
    }
}

impl TableRow for DocumentRow {
    const TABLE: &'static str = schema::DOCUMENTS;
    fn column(rows: &[Self], name: &str) -> Option<ArrayRef> {
        Some(match name {
            "doc_id" => Arc::new(
                rows.iter()
                    .map(|r| r.doc_id.as_deref())
                    .collect::<StringArray>(),
            ),
            "status" => strings(rows, |r| r.status.as_str()),
            "reason" => Arc::new(
                rows.iter()
                    .map(|r| r.reason.as_deref())
                    .collect::<StringArray>(),
            ),
            "source_file" => strings(rows, |r| &r.source_file),
            "source_row" => Arc::new(UInt64Array::from_iter_values(
                rows.iter().map(|r| r.source_row),
            )),
            "content_hash" => Arc::new(
                rows.iter()
                    .map(|r| r.content_hash.as_deref())
                    .collect::<StringArray>(),
            ),
            "words" => u32s(rows, |r| r.words),
            "word_pieces" => u32s(rows, |r| r.word_pieces),
            "segments" => u32s(rows, |r| r.segments),
            "mentions" => u32s(rows, |r| r.mentions),
            "entities" => u32s(rows, |r| r.entities),
            "relations" => u32s(rows, |r| r.relations),
            "seconds" => Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.seconds),
            )),
            "model_id" => strings(rows, |r| &r.model_id),
            _ => return None,
        })
    }
}

/// The rows as a record batch with the table's schema, sorted by the schema's sort key (so
/// every part file is sorted, whatever order the documents were processed in).
pub fn record_batch<R: TableRow>(rows: &[R]) -> Result<RecordBatch> {
    sort_batch(&unsorted_batch(rows)?, &schema::table(R::TABLE).sort_key)
}

fn unsorted_batch<R: TableRow>(rows: &[R]) -> Result<RecordBatch> {
    let schema = schema::table(R::TABLE).arrow_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            R::column(rows, f.name()).ok_or_else(|| {
                Error::Config(format!(
                    "table {}: schema column {} has no builder in output::tables",
                    R::TABLE,
                    f.name()
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Rows of one table waiting for their part file, held as Arrow batches instead of row structs.
///
/// Rows can wait many minutes (a `documents` part of 10,000 rows spans that many documents).
/// As structs they are many small strings scattered over allocator pages that short-lived
/// allocations share, each page kept by a few of them; as column buffers, merged as they
/// accumulate, they are a few large allocations.
pub struct PendingRows<R> {
    batches: Vec<RecordBatch>,
    rows: usize,
    table: std::marker::PhantomData<R>,
}

impl<R> Default for PendingRows<R> {
    fn default() -> Self {
        PendingRows {
            batches: Vec::new(),
            rows: 0,
            table: std::marker::PhantomData,
        }
    }
}

impl<R: TableRow> PendingRows<R> {
    /// Batches held before they are merged into one (bounds the buffer count, and the copying
    /// to about `rows / MERGE_AT` per row).
    const MERGE_AT: usize = 16;

    /// Rows waiting.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Appends rows (consumed: their strings are freed now, not when the part is written).
    pub fn push(&mut self, rows: Vec<R>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.rows += rows.len();
        self.batches.push(unsorted_batch(&rows)?);
        if self.batches.len() >= Self::MERGE_AT {
            self.merge()?;
        }
        Ok(())
    }

    /// The first `n` rows waiting (all when fewer), sorted as [`record_batch`] sorts.
    pub fn take(&mut self, n: usize) -> Result<RecordBatch> {
        self.merge()?;
        let all = self.batches.pop().unwrap_or_else(|| {
            RecordBatch::new_empty(schema::table(R::TABLE).arrow_schema().clone())
        });
        let n = n.min(all.num_rows());
        if n < all.num_rows() {
            self.batches.push(all.slice(n, all.num_rows() - n));
        }
        self.rows -= n;
        sort_batch(&all.slice(0, n), &schema::table(R::TABLE).sort_key)
    }

    fn merge(&mut self) -> Result<()> {
        if self.batches.len() > 1 {
            let schema = self.batches[0].schema();
            let merged = arrow::compute::concat_batches(&schema, &self.batches)?;
            self.batches = vec![merged];
        }
        Ok(())
    }
}

fn sort_batch(batch: &RecordBatch, key: &[String]) -> Result<RecordBatch> {
    if key.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let sort_columns =
        key.iter()
            .map(|k| {
                let values = batch.column_by_name(k).cloned().ok_or_else(|| {
                    Error::Config(format!("sort key column {k} is not in the table"))
                })?;
                Ok(SortColumn {
                    values,
                    options: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
    let indices = lexsort_to_indices(&sort_columns, None)?;
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &indices, None))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Word;
    use crate::model::{PredEntity, PredMention, PredRelation, Thresholds, TypeInfo};

    fn word(text: &str, start: usize) -> Word {
        Word {
            text: text.into(),
            chars: Some((start, start + text.chars().count())),
        }
    }

    /// "Ada Lind founded Brightwater. Lind lives in Oslo." with offsets.
    fn doc() -> Document {
        let text = "Ada Lind founded Brightwater. Lind lives in Oslo.";
        Document {
            id: "d1".into(),
            text: Some(text.into()),
            sentences: vec![
                vec![
                    word("Ada", 0),
                    word("Lind", 4),
                    word("founded", 9),
                    word("Brightwater", 17),
                    word(".", 28),
                ],
                vec![
                    word("Lind", 30),
                    word("lives", 35),
                    word("in", 41),
                    word("Oslo", 44),
                    word(".", 48),
                ],
            ],
            gold: None,
        }
    }

    fn config() -> ModelConfig {
        let t = |k: &str, n: &str| TypeInfo {
            key: k.into(),
            name: n.into(),
        };
        ModelConfig {
            entity_types: vec![
                t("PER", "person"),
                t("ORG", "organization"),
                t("LOC", "place"),
            ],
            relation_types: vec![t("P112", "founded by"), t("P551", "residence")],
            thresholds: Thresholds::default(),
            heads: Default::default(),
            window: Default::default(),
            encoder: crate::encoder::BertConfig::tiny(100),
            training: serde_json::Value::Null,
        }
    }

    fn prediction() -> DocPrediction {
        let m = |start, end, sent| PredMention {
            span: Span { start, end, sent },
            score: 0.9,
        };
        let e = |mentions: Vec<usize>, entity_type| PredEntity {
            mentions,
            entity_type,
            type_score: 0.8,
            coref_score: 0.95,
        };
        DocPrediction {
            mentions: vec![m(0, 2, 0), m(3, 4, 0), m(5, 6, 1), m(8, 9, 1)],
            entities: vec![e(vec![0, 2], 0), e(vec![1], 1), e(vec![3], 2)],
            relations: vec![
                PredRelation {
                    head: 1,
                    tail: 0,
                    relation: 0,
                    score: 0.7,
                    evidence: (1, 0),
                },
                PredRelation {
                    head: 0,
                    tail: 2,
                    relation: 1,
                    score: 0.65,
                    evidence: (2, 3),
                },
            ],
        }
    }

    #[test]
    fn rows_carry_offsets_names_and_evidence() {
        let rows = doc_rows(&doc(), &prediction(), &config()).unwrap();
        let m = &rows.mentions[2];
        assert_eq!(
            (m.entity_id, m.sentence, m.word_start, m.word_end),
            (0, 1, 5, 6)
        );
        assert_eq!((m.char_start, m.char_end), (Some(30), Some(34)));
        assert_eq!(m.text, "Lind");
        assert_eq!(rows.mentions[0].text, "Ada Lind");
        let e = &rows.entities[0];
        // "Ada Lind" and "Lind" occur once each: the longer wins.
        assert_eq!(e.canonical_name, "Ada Lind");
        assert_eq!(
            (e.entity_type.as_str(), e.entity_type_name.as_str()),
            ("PER", "person")
        );
        assert_eq!(e.mention_ids, vec![0, 2]);
        let r = &rows.relations[0];
        assert_eq!(
            (r.head_name.as_str(), r.tail_name.as_str()),
            ("Brightwater", "Ada Lind")
        );
        assert_eq!(r.evidence_sentences, vec![0]);
        assert_eq!(r.evidence_text, "Ada Lind founded Brightwater.");
        let r = &rows.relations[1];
        assert_eq!(r.relation_name, "residence");
        assert_eq!(r.evidence_sentences, vec![1]);
        assert_eq!(r.evidence_text, "Lind lives in Oslo.");
    }

    #[test]
    fn pretokenized_documents_have_no_char_offsets() {
        let mut d = doc();
        d.text = None;
        for w in d.sentences.iter_mut().flatten() {
            w.chars = None;
        }
        let rows = doc_rows(&d, &prediction(), &config()).unwrap();
        assert_eq!(rows.mentions[0].char_start, None);
        assert_eq!(rows.mentions[0].text, "Ada Lind");
        assert_eq!(rows.relations[1].evidence_text, "Lind lives in Oslo .");
        let batch = record_batch(&rows.mentions).unwrap();
        assert_eq!(batch.column_by_name("char_start").unwrap().null_count(), 4);
    }

    #[test]
    fn bad_predictions_are_errors_naming_the_document() {
        let mut p = prediction();
        p.entities[1].mentions = vec![7];
        let err = doc_rows(&doc(), &p, &config()).unwrap_err().to_string();
        assert!(
            err.contains("d1") && err.contains("missing mention 7"),
            "{err}"
        );
        let mut p = prediction();
        p.entities.pop();
        let err = doc_rows(&doc(), &p, &config()).unwrap_err().to_string();
        assert!(err.contains("mention 3 has no entity"), "{err}");
    }

    #[test]
    fn every_schema_column_has_a_builder_and_batches_sort() {
        let rows = doc_rows(&doc(), &prediction(), &config()).unwrap();
        let mut relations = rows.relations.clone();
        relations.reverse();
        let batch = record_batch(&relations).unwrap();
        let heads = batch
            .column_by_name("head_entity_id")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap();
        assert_eq!(
            heads.values().to_vec(),
            vec![0, 1],
            "sorted by the schema's key"
        );
        assert_eq!(record_batch(&rows.mentions).unwrap().num_rows(), 4);
        assert_eq!(record_batch(&rows.entities).unwrap().num_rows(), 3);
        assert_eq!(record_batch::<RelationRow>(&[]).unwrap().num_rows(), 0);
        let docs = [DocumentRow {
            doc_id: None,
            status: Status::Rejected,
            reason: Some("null id".into()),
            source_file: "a.parquet".into(),
            source_row: 3,
            content_hash: None,
            words: 0,
            word_pieces: 0,
            segments: 0,
            mentions: 0,
            entities: 0,
            relations: 0,
            seconds: 0.0,
            model_id: "m".into(),
        }];
        let batch = record_batch(&docs).unwrap();
        assert_eq!(
            batch.schema(),
            schema::table(schema::DOCUMENTS).arrow_schema()
        );
    }

    #[test]
    fn pending_rows_give_the_parts_that_row_slices_give() {
        let row = |i: usize| DocumentRow {
            doc_id: Some(format!("d{}", (i * 7919) % 100)),
            status: Status::Ok,
            reason: None,
            source_file: "a.parquet".into(),
            source_row: i as u64,
            content_hash: Some(format!("h{i}")),
            words: i as u32,
            word_pieces: 2 * i as u32,
            segments: 1,
            mentions: 0,
            entities: 0,
            relations: 0,
            seconds: 0.5,
            model_id: "m".into(),
        };
        let all: Vec<DocumentRow> = (0..100).map(row).collect();
        let mut pending = PendingRows::default();
        // More pushes than MERGE_AT, of uneven sizes, so merging happens between takes.
        let (mut next, mut size) = (0, 0);
        while next < all.len() {
            let end = (next + size % 5).min(all.len());
            pending.push(all[next..end].to_vec()).unwrap();
            (next, size) = (end, size + 1);
        }
        assert_eq!(pending.len(), 100);
        for chunk in all.chunks(30) {
            assert_eq!(pending.take(30).unwrap(), record_batch(chunk).unwrap());
        }
        assert!(pending.is_empty());
        assert_eq!(pending.take(30).unwrap().num_rows(), 0);
    }

    #[test]
    fn canonical_name_prefers_frequent_then_long_then_early() {
        let name = |v: &[(usize, &str)]| canonical_name(v.iter().copied());
        assert_eq!(name(&[(0, "Lind"), (1, "Ada Lind"), (2, "Lind")]), "Lind");
        assert_eq!(name(&[(0, "Ada"), (1, "Lind")]), "Lind");
        assert_eq!(name(&[(0, "Oslo"), (1, "Bonn")]), "Oslo");
    }
}
