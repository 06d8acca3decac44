//! Streaming reader of the input document table (`schemas/documents_input.json`).
//!
//! Reads one record batch at a time with a projection of only the id and content columns, so
//! memory stays bounded whatever the file size and other (wide) columns are never decoded. Work
//! can be split by row groups and, inside a large row group, by rows ([`open_part`]). A bad row
//! (null id, missing or empty text, bytes that are not UTF-8 in a binary column) is reported with
//! its row number and, when readable, its id, and the reader moves on. A file-level problem is an
//! [`Error`] naming the file: a missing column or wrong column type is [`Error::Columns`] (the
//! job's columns do not fit the file), a corrupt or truncated file is [`Error::Parquet`].

use std::ops::Range;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BinaryArray, ListArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ArrowReaderBuilder, RowSelection, RowSelector};
use parquet::arrow::ProjectionMask;

use super::{text, Document, Word};
use crate::error::{Error, Result};
use crate::store;

/// Rows decoded per step: bounds memory to a few hundred documents per reader.
const BATCH_ROWS: usize = 256;

/// Column names of the input table. When both content columns exist, a row's text wins and its
/// sentences are used only where the text is null. A configured content column that the file
/// lacks is skipped as long as the other one is there, so the defaults fit both kinds of file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputColumns {
    pub id: String,
    pub text: Option<String>,
    pub sentences: Option<String>,
}

impl Default for InputColumns {
    fn default() -> Self {
        InputColumns {
            id: "id".into(),
            text: Some("text".into()),
            sentences: Some("sentences".into()),
        }
    }
}

/// One input row: its 0-based row number in the file, its id when readable (also for rejected
/// rows, so the `documents` table can name them) and the document, or why it was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct RowResult {
    pub row: usize,
    pub id: Option<String>,
    pub doc: std::result::Result<Document, String>,
}

/// Number of row groups of a Parquet file (the unit production runs split work by).
pub fn row_group_count(path: &Path) -> Result<usize> {
    Ok(builder(path)?.metadata().num_row_groups())
}

/// Rows in each row group of a Parquet file, for balancing work units.
pub fn row_group_rows(path: &Path) -> Result<Vec<usize>> {
    Ok(builder(path)?
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as usize)
        .collect())
}

/// Opens a whole file.
pub fn open(path: &Path, columns: &InputColumns) -> Result<DocReader> {
    let count = row_group_count(path)?;
    open_row_groups(path, columns, 0..count)
}

/// Opens row groups `groups` of a file; rows are still numbered from the start of the file.
pub fn open_row_groups(
    path: &Path,
    columns: &InputColumns,
    groups: Range<usize>,
) -> Result<DocReader> {
    open_part(path, columns, groups, None)
}

/// Opens row groups `groups` of a file and, when `rows` is given, only those rows of them
/// (counted from the first row of `groups`); rows are still numbered from the start of the file.
pub fn open_part(
    path: &Path,
    columns: &InputColumns,
    groups: Range<usize>,
    rows: Option<Range<usize>>,
) -> Result<DocReader> {
    reader(path, columns, groups, rows, true)
}

/// Like [`open_part`], but decodes only the id column: for checks that need every row's id
/// without the cost of its text. The file must still fit the job's columns, so it yields ids
/// of exactly the rows [`open_part`] yields documents of.
pub fn open_ids(
    path: &Path,
    columns: &InputColumns,
    groups: Range<usize>,
    rows: Option<Range<usize>>,
) -> Result<IdReader> {
    reader(path, columns, groups, rows, false).map(IdReader)
}

/// What [`reader`] selects of a file: the projected columns, the row groups and rows, and the
/// batch size, for either kind of source.
struct Selection {
    mask: ProjectionMask,
    groups: Vec<usize>,
    rows: Option<RowSelection>,
}

impl store::read::Settings for Selection {
    fn apply<T>(&self, b: ArrowReaderBuilder<T>) -> ArrowReaderBuilder<T> {
        let b = b
            .with_projection(self.mask.clone())
            .with_row_groups(self.groups.clone())
            .with_batch_size(BATCH_ROWS);
        match &self.rows {
            Some(rows) => b.with_row_selection(rows.clone()),
            None => b,
        }
    }
}

fn reader(
    path: &Path,
    columns: &InputColumns,
    groups: Range<usize>,
    rows: Option<Range<usize>>,
    content: bool,
) -> Result<DocReader> {
    let source = builder(path)?;
    let count = source.metadata().num_row_groups();
    if groups.start > groups.end || groups.end > count {
        return Err(Error::Parquet {
            path: path.to_path_buf(),
            message: format!("row groups {groups:?} out of range ({count} row groups)"),
        });
    }
    let group_rows = |r: Range<usize>| -> usize {
        source.metadata().row_groups()[r]
            .iter()
            .map(|g| g.num_rows() as usize)
            .sum()
    };
    let mut first_row = group_rows(0..groups.start);
    let total = group_rows(groups.clone());
    let resolved = resolve(source.schema(), columns).map_err(|message| Error::Columns {
        path: path.to_path_buf(),
        message,
    })?;
    let roots: Vec<usize> = resolved
        .iter()
        .filter(|(_, role)| content || *role == Role::Id)
        .map(|(i, _)| *i)
        .collect();
    let mut selection = Selection {
        mask: ProjectionMask::roots(source.parquet_schema(), roots),
        groups: groups.clone().collect(),
        rows: None,
    };
    if let Some(rows) = rows {
        if rows.start > rows.end || rows.end > total {
            return Err(Error::Parquet {
                path: path.to_path_buf(),
                message: format!(
                    "rows {rows:?} of row groups {groups:?} out of range ({total} rows)"
                ),
            });
        }
        first_row += rows.start;
        selection.rows = Some(RowSelection::from(vec![
            RowSelector::skip(rows.start),
            RowSelector::select(rows.len()),
            RowSelector::skip(total - rows.end),
        ]));
    }
    let batches = source.build(path, &selection)?;
    let name = |role: Role| {
        resolved
            .iter()
            .find(|(_, r)| *r == role && content)
            .map(|_| role.column(columns).to_string())
    };
    Ok(DocReader {
        path: path.to_path_buf(),
        id: columns.id.clone(),
        text: name(Role::Text),
        sentences: name(Role::Sentences),
        batches,
        batch: None,
        next_row: first_row,
        done: false,
    })
}

/// Yields the rows of a file (or row-group range) in order; see [`open`].
pub struct DocReader {
    path: PathBuf,
    id: String,
    text: Option<String>,
    sentences: Option<String>,
    batches: store::read::Batches,
    batch: Option<(Rows, usize)>,
    next_row: usize,
    done: bool,
}

impl DocReader {
    /// The file being read (for the documents table's `source_file`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Normalizes a record batch's columns to plain Utf8 (or Binary) / List<List<Utf8>> arrays
    /// (a no-op for files written that way), so row conversion has one code path.
    fn rows(&self, batch: &RecordBatch) -> Result<Rows> {
        let column = |name: &str| {
            batch.column_by_name(name).ok_or_else(|| Error::Parquet {
                path: self.path.clone(),
                message: format!("column {name:?} missing from a record batch"),
            })
        };
        let ids = StrColumn::new(column(&self.id)?)?;
        let text = match &self.text {
            Some(name) => Some(StrColumn::new(column(name)?)?),
            None => None,
        };
        let sentences = match &self.sentences {
            Some(name) => Some(
                cast(column(name)?, &sentences_type())?
                    .as_list::<i32>()
                    .clone(),
            ),
            None => None,
        };
        Ok(Rows {
            ids,
            text,
            sentences,
        })
    }
}

impl DocReader {
    /// The next row's number and `f` of it, or the error that ends the stream.
    fn next_with<T>(&mut self, f: impl Fn(&Rows, usize) -> T) -> Option<Result<(usize, T)>> {
        loop {
            if self.done {
                return None;
            }
            if let Some((rows, i)) = &mut self.batch {
                if *i < rows.ids.len() {
                    let value = f(rows, *i);
                    *i += 1;
                    let row = self.next_row;
                    self.next_row += 1;
                    return Some(Ok((row, value)));
                }
            }
            let next = match self.batches.next() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(batch) => batch.and_then(|b| self.rows(&b)),
            };
            match next {
                Ok(rows) => self.batch = Some((rows, 0)),
                // An object store that failed or refused mid-read: not the file's fault.
                Err(e @ Error::Store { .. }) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Err(e) => {
                    // A decoding error leaves the stream in an unknown state: stop after it.
                    self.done = true;
                    return Some(Err(Error::Parquet {
                        path: self.path.clone(),
                        message: format!("near row {}: {e}", self.next_row),
                    }));
                }
            }
        }
    }
}

impl Iterator for DocReader {
    type Item = Result<RowResult>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_with(Rows::document)
            .map(|r| r.map(|(row, (id, doc))| RowResult { row, id, doc }))
    }
}

/// Yields each row's number and its id when readable (see [`open_ids`]).
pub struct IdReader(DocReader);

impl Iterator for IdReader {
    type Item = Result<(usize, Option<String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0
            .next_with(|rows, i| rows.id(i).ok().map(str::to_string))
    }
}

/// A string column as read. Binary columns stay bytes and are checked for UTF-8 row by row, so
/// one row of bad bytes is rejected instead of failing the whole file.
enum StrColumn {
    Utf8(StringArray),
    Binary(BinaryArray),
}

impl StrColumn {
    fn new(array: &dyn Array) -> Result<StrColumn> {
        Ok(if is_binary(array.data_type()) {
            StrColumn::Binary(cast(array, &DataType::Binary)?.as_binary::<i32>().clone())
        } else {
            StrColumn::Utf8(cast(array, &DataType::Utf8)?.as_string::<i32>().clone())
        })
    }

    fn len(&self) -> usize {
        match self {
            StrColumn::Utf8(a) => a.len(),
            StrColumn::Binary(a) => a.len(),
        }
    }

    /// The value of row `i`: `None` when null, an error naming the first bad byte when the
    /// bytes are not UTF-8.
    fn get(&self, i: usize) -> Option<std::result::Result<&str, String>> {
        match self {
            StrColumn::Utf8(a) => a.is_valid(i).then(|| Ok(a.value(i))),
            StrColumn::Binary(a) => a.is_valid(i).then(|| {
                std::str::from_utf8(a.value(i))
                    .map_err(|e| format!("is not valid UTF-8 (byte {})", e.valid_up_to()))
            }),
        }
    }
}

/// One record batch's columns, normalized.
struct Rows {
    ids: StrColumn,
    text: Option<StrColumn>,
    sentences: Option<ListArray>,
}

impl Rows {
    /// Row `i`'s id, or why it has none.
    fn id(&self, i: usize) -> std::result::Result<&str, String> {
        match self.ids.get(i) {
            None => Err("null id".into()),
            Some(Err(e)) => Err(format!("id {e}")),
            Some(Ok(id)) if id.trim().is_empty() => Err("empty id".into()),
            Some(Ok(id)) => Ok(id),
        }
    }

    /// Row `i`'s id (when readable) and its document or why it is rejected.
    fn document(&self, i: usize) -> (Option<String>, std::result::Result<Document, String>) {
        match self.id(i) {
            Ok(id) => (Some(id.to_string()), self.content(id, i)),
            Err(e) => (None, Err(e)),
        }
    }

    /// Text wins; empty text falls back to the row's sentences, if any.
    fn content(&self, id: &str, i: usize) -> std::result::Result<Document, String> {
        let text = self.text.as_ref().and_then(|t| t.get(i)).transpose();
        let text = text.map_err(|e| format!("text {e}"))?;
        if let Some(t) = text {
            let doc = text::segment(id, t);
            if !doc.sentences.is_empty() {
                return Ok(doc);
            }
        }
        if let Some(sentences) = self.sentences.as_ref().filter(|s| !s.is_null(i)) {
            return pretokenized(id, &sentences.value(i));
        }
        let text = self.text.as_ref().map(|_| match text {
            Some(_) => "text is empty or has no words",
            None => "null text",
        });
        let sentences = self.sentences.as_ref().map(|_| "null sentences");
        Err(text
            .into_iter()
            .chain(sentences)
            .collect::<Vec<_>>()
            .join(" and "))
    }
}

/// A document from a row's list of sentences of words (no text, so no char offsets).
fn pretokenized(id: &str, sentences: &dyn Array) -> std::result::Result<Document, String> {
    let sentences = sentences.as_list::<i32>();
    let mut out = Vec::with_capacity(sentences.len());
    for s in 0..sentences.len() {
        if sentences.is_null(s) {
            return Err(format!("sentence {s} is null"));
        }
        let words = sentences.value(s);
        let words = words.as_string::<i32>();
        let mut sentence = Vec::with_capacity(words.len());
        for w in 0..words.len() {
            if words.is_null(w) || words.value(w).is_empty() {
                return Err(format!("sentence {s} word {w} is null or empty"));
            }
            sentence.push(Word {
                text: words.value(w).to_string(),
                chars: None,
            });
        }
        out.push(sentence);
    }
    if out.iter().all(Vec::is_empty) {
        return Err("sentences have no words".into());
    }
    Ok(Document {
        id: id.to_string(),
        text: None,
        sentences: out,
        gold: None,
    })
}

/// Opens a file or object and reads its footer.
fn builder(path: &Path) -> Result<store::read::Source> {
    store::read::Source::open(path)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Id,
    Text,
    Sentences,
}

impl Role {
    fn column(self, columns: &InputColumns) -> &str {
        match self {
            Role::Id => &columns.id,
            Role::Text => columns.text.as_deref().unwrap_or_default(),
            Role::Sentences => columns.sentences.as_deref().unwrap_or_default(),
        }
    }
}

/// Finds the configured columns in the file's schema and checks their types: the root column
/// index of each used column with its role.
fn resolve(
    schema: &Schema,
    columns: &InputColumns,
) -> std::result::Result<Vec<(usize, Role)>, String> {
    let find = |name: &str| schema.index_of(name).ok();
    let id = find(&columns.id).ok_or_else(|| format!("no id column {:?}", columns.id))?;
    let mut out = vec![(id, Role::Id)];
    let text = columns.text.as_deref().and_then(find);
    let sentences = columns.sentences.as_deref().and_then(find);
    if text.is_none() && sentences.is_none() {
        return Err(format!(
            "no content column: neither text {:?} nor sentences {:?} is in the file",
            columns.text.as_deref().unwrap_or("(none)"),
            columns.sentences.as_deref().unwrap_or("(none)")
        ));
    }
    out.extend(text.map(|i| (i, Role::Text)));
    out.extend(sentences.map(|i| (i, Role::Sentences)));
    for &(i, role) in &out {
        let dt = schema.field(i).data_type();
        let ok = match role {
            Role::Id => is_string(dt) || is_binary(dt) || dt.is_integer(),
            Role::Text => is_string(dt) || is_binary(dt),
            Role::Sentences => list_item(dt).and_then(list_item).is_some_and(is_string),
        };
        if !ok {
            let want = match role {
                Role::Id => "a string, binary (UTF-8) or integer",
                Role::Text => "a string or binary (UTF-8)",
                Role::Sentences => "a list of lists of strings",
            };
            return Err(format!(
                "column {:?} has type {dt}, expected {want}",
                role.column(columns)
            ));
        }
    }
    Ok(out)
}

/// Why the job's `columns` do not fit a file of `schema`, if they do not.
pub fn check_columns(schema: &Schema, columns: &InputColumns) -> std::result::Result<(), String> {
    resolve(schema, columns).map(|_| ())
}

/// Every string encoding producers write: plain, large (Polars), view, and dictionary-encoded
/// (pyarrow's `dictionary_encode`, Spark), which the reader casts to plain strings.
fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

fn is_binary(dt: &DataType) -> bool {
    match dt {
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => true,
        DataType::Dictionary(_, values) => is_binary(values),
        _ => false,
    }
}

fn list_item(dt: &DataType) -> Option<&DataType> {
    match dt {
        DataType::List(f) | DataType::LargeList(f) => Some(f.data_type()),
        _ => None,
    }
}

fn sentences_type() -> DataType {
    DataType::new_list(DataType::new_list(DataType::Utf8, true), true)
}

#[cfg(test)]
mod tests;
