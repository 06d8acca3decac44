//! Input tables written by jerex itself: the sample corpus (`data/sample/sample.parquet`, made
//! from the committed `sample.jsonl` text source next to it by `scripts/demo.sh`) and Parquet
//! copies of other corpora (the benchmark converts DocRED JSON at run time).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, ListBuilder, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde::Deserialize;

use crate::corpus::Document;
use crate::error::{Error, Result};
use crate::schema;

/// Rows per row group of written input tables: small groups give work units to split on.
const ROWS_PER_GROUP: usize = 128;

/// Writes `docs` as an input table (`schemas/documents_input.json`): the text of documents that
/// have one, else their pre-tokenized sentences. Written to a temporary name and renamed, so a
/// concurrent reader never sees half a file.
pub fn write_input_parquet(path: &Path, docs: &[Document]) -> Result<()> {
    let schema = schema::table(schema::DOCUMENTS_INPUT).arrow_schema();
    let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
        docs.iter().map(|d| d.id.as_str()),
    ));
    let text: ArrayRef = Arc::new(
        docs.iter()
            .map(|d| d.text.as_deref())
            .collect::<StringArray>(),
    );
    let mut sentences = ListBuilder::new(ListBuilder::new(StringBuilder::new()));
    for d in docs {
        if d.text.is_some() {
            sentences.append(false);
            continue;
        }
        for s in &d.sentences {
            for w in s {
                sentences.values().values().append_value(&w.text);
            }
            sentences.values().append(true);
        }
        sentences.append(true);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "id" => Ok(ids.clone()),
            "text" => Ok(text.clone()),
            "sentences" => Ok(Arc::new(sentences.finish_cloned()) as ArrayRef),
            other => Err(Error::Config(format!(
                "input table column {other} has no writer in tools::sample"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let pq_err = |e: parquet::errors::ParquetError| Error::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    let props = WriterProperties::builder()
        .set_max_row_group_size(ROWS_PER_GROUP)
        .set_created_by(format!("jerex {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut w = ArrowWriter::try_new(tmp.as_file(), schema, Some(props)).map_err(pq_err)?;
    w.write(&batch).map_err(pq_err)?;
    w.close().map_err(pq_err)?;
    let mut perms = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .permissions();
    // Temporary files are private (0600); the corpus is an ordinary readable file.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file()
        .set_permissions(perms)
        .map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// One line of a sample corpus source: `{"id": ..., "text": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceLine {
    id: String,
    text: String,
}

/// Reads a JSON-lines text source into documents with text only (segmentation happens when the
/// Parquet is read, like for any text input).
pub fn read_jsonl(path: &Path) -> Result<Vec<Document>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let s: SourceLine = serde_json::from_str(line).map_err(|e| Error::BadRow {
                path: path.to_path_buf(),
                row: i,
                message: e.to_string(),
            })?;
            Ok(Document {
                id: s.id,
                text: Some(s.text),
                sentences: Vec::new(),
                gold: None,
            })
        })
        .collect()
}

/// What [`docred_to_parquet`] converted, recorded beside its output (`<out>.source.json`): the
/// output is reused only for the same source file, unchanged, and the same number of copies.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct SourceRecord {
    path: PathBuf,
    bytes: u64,
    modified_ns: u128,
    copies: usize,
}

impl SourceRecord {
    fn of(json: &Path, copies: usize) -> Result<SourceRecord> {
        let path = json.canonicalize().map_err(|e| Error::io(json, e))?;
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Ok(SourceRecord {
            path,
            bytes: meta.len(),
            modified_ns,
            copies,
        })
    }

    fn file(out: &Path) -> PathBuf {
        let mut name = out.as_os_str().to_owned();
        name.push(".source.json");
        PathBuf::from(name)
    }

    fn read(out: &Path) -> Option<SourceRecord> {
        let text = std::fs::read_to_string(SourceRecord::file(out)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Writes DocRED JSON (`corpus::docred`) as a pre-tokenized input table, `copies` times over
/// (copy `k > 0` of a document is named `<id> (copy <k>)`), unless `out` was already made from
/// the same, unchanged source with as many copies. Used by the benchmark so the shared data is
/// never copied into the repository.
pub fn docred_to_parquet(json: &Path, out: &Path, copies: usize) -> Result<()> {
    let source = SourceRecord::of(json, copies)?;
    if out.exists() && SourceRecord::read(out).as_ref() == Some(&source) {
        return Ok(());
    }
    let mut docs = crate::corpus::docred::read_docred(json)?;
    for d in &mut docs {
        d.text = None;
        d.gold = None;
    }
    let copied: Vec<Document> = (1..copies)
        .flat_map(|k| {
            docs.iter().map(move |d| Document {
                id: format!("{} (copy {k})", d.id),
                ..d.clone()
            })
        })
        .collect();
    docs.extend(copied);
    write_input_parquet(out, &docs)?;
    crate::durable::write_json_atomic(&SourceRecord::file(out), &source)
}

/// True when `out` is missing, or was made by [`docred_to_parquet`] from something other than
/// `json` (unchanged) with `copies`. A file without a record is the user's own and is kept.
pub fn needs_docred_conversion(json: &Path, out: &Path, copies: usize) -> bool {
    if !out.exists() {
        return true;
    }
    match (SourceRecord::read(out), SourceRecord::of(json, copies)) {
        (Some(made), Ok(source)) => made != source,
        _ => false,
    }
}

/// Writes DocRED JSON as a pre-tokenized input table of long documents: consecutive documents
/// joined ([`Document::join`]) into runs of at most `max_words` words, the last run left out
/// when it is under 90% of that, so every document is near the size asked for. Skipped when
/// `out` is newer than the source.
pub fn docred_joined_to_parquet(json: &Path, out: &Path, max_words: usize) -> Result<()> {
    let fresh = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(o), Some(j)) = (fresh(out), fresh(json)) {
        if o >= j {
            return Ok(());
        }
    }
    let mut docs = crate::corpus::docred::read_docred(json)?;
    for d in &mut docs {
        d.text = None;
        d.gold = None;
    }
    let mut runs = crate::corpus::runs_up_to(&docs, max_words);
    let words = |r: &std::ops::Range<usize>| -> usize {
        docs[r.clone()].iter().map(Document::word_count).sum()
    };
    if runs.len() > 1 && runs.last().is_some_and(|r| 10 * words(r) < 9 * max_words) {
        runs.pop();
    }
    let joined: Vec<Document> = runs
        .iter()
        .map(|r| Document::join(format!("dev {}-{}", r.start, r.end - 1), &docs[r.clone()]))
        .collect();
    write_input_parquet(out, &joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::parquet::{open, InputColumns};
    use crate::corpus::Word;

    #[test]
    fn written_inputs_read_back_with_the_corpus_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.parquet");
        let word = |w: &str| Word {
            text: w.into(),
            chars: None,
        };
        let docs = vec![
            Document {
                id: "t".into(),
                text: Some("Ann met Bo in Rome. They ate.".into()),
                ..Default::default()
            },
            Document {
                id: "s".into(),
                text: None,
                sentences: vec![vec![word("Cy"), word("ran"), word(".")], vec![word("Ok")]],
                gold: None,
            },
        ];
        write_input_parquet(&path, &docs).unwrap();
        let rows: Vec<_> = open(&path, &InputColumns::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(rows.len(), 2);
        let t = rows[0].doc.as_ref().unwrap();
        assert_eq!(t.text.as_deref(), docs[0].text.as_deref());
        assert!(t.word_count() >= 8);
        let s = rows[1].doc.as_ref().unwrap();
        assert_eq!(s.sentences, docs[1].sentences);
    }

    #[test]
    fn docred_copies_repeat_every_document_under_new_ids() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("d.json");
        let doc = |title: &str| {
            serde_json::json!({"title": title, "sents": [["Ann", "met", "Bo", "."]],
                "vertexSet": [[{"name": "Ann", "pos": [0, 1], "sent_id": 0, "type": "PER"}]],
                "labels": []})
        };
        std::fs::write(&json, serde_json::json!([doc("a"), doc("b")]).to_string()).unwrap();
        let out = dir.path().join("d.x3.parquet");
        docred_to_parquet(&json, &out, 3).unwrap();
        let ids: Vec<String> = open(&out, &InputColumns::default())
            .unwrap()
            .map(|r| r.unwrap().doc.unwrap().id)
            .collect();
        assert_eq!(
            ids,
            [
                "a",
                "b",
                "a (copy 1)",
                "b (copy 1)",
                "a (copy 2)",
                "b (copy 2)"
            ]
        );
    }

    #[test]
    fn a_converted_input_is_redone_for_another_source() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, title: &str| {
            let json = dir.path().join(name);
            let doc = serde_json::json!([{"title": title, "sents": [["Ann", "."]],
                "vertexSet": [], "labels": []}]);
            std::fs::write(&json, doc.to_string()).unwrap();
            json
        };
        let ids = |out: &Path| -> Vec<String> {
            open(out, &InputColumns::default())
                .unwrap()
                .map(|r| r.unwrap().doc.unwrap().id)
                .collect()
        };
        let (a, b) = (write("a.json", "from a"), write("b.json", "from b"));
        let out = dir.path().join("bench.parquet");
        docred_to_parquet(&a, &out, 1).unwrap();
        assert!(!needs_docred_conversion(&a, &out, 1));
        // b is older than the output: by modification time the output would look fresh.
        assert!(needs_docred_conversion(&b, &out, 1));
        docred_to_parquet(&b, &out, 1).unwrap();
        assert_eq!(ids(&out), ["from b"]);
        assert!(needs_docred_conversion(&b, &out, 2));
        // A file the converter did not make is never replaced.
        let own = dir.path().join("own.parquet");
        std::fs::copy(&out, &own).unwrap();
        assert!(!needs_docred_conversion(&a, &own, 1));
    }

    #[test]
    fn docred_joined_documents_stay_under_the_size_and_drop_a_short_tail() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("d.json");
        let doc = |title: &str| {
            serde_json::json!({"title": title, "sents": [["Ann", "met"], ["Bo", "."]],
                "vertexSet": [[{"name": "Ann", "pos": [0, 1], "sent_id": 0, "type": "PER"}]],
                "labels": []})
        };
        let docs: Vec<_> = ["a", "b", "c", "d", "e"].into_iter().map(doc).collect();
        std::fs::write(&json, serde_json::Value::from(docs).to_string()).unwrap();
        let out = dir.path().join("d.long8.parquet");
        docred_joined_to_parquet(&json, &out, 8).unwrap();
        let read: Vec<Document> = open(&out, &InputColumns::default())
            .unwrap()
            .map(|r| r.unwrap().doc.unwrap())
            .collect();
        // a+b and c+d (8 words each); e alone (4 words) is under 90% of 8 and left out.
        let shape: Vec<(String, usize, usize)> = read
            .iter()
            .map(|d| (d.id.clone(), d.word_count(), d.sentences.len()))
            .collect();
        assert_eq!(shape, [("dev 0-1".into(), 8, 4), ("dev 2-3".into(), 8, 4)]);
    }

    #[test]
    fn the_committed_sample_corpus_matches_its_source() {
        let sample = crate::testing::repo_root().join("data/sample");
        let source = read_jsonl(&sample.join("sample.jsonl")).unwrap();
        assert!(source.len() >= 20, "about 20 sample documents");
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("sample.parquet");
        write_input_parquet(&fresh, &source).unwrap();
        let read = |p: &Path| -> Vec<_> {
            open(p, &InputColumns::default())
                .unwrap()
                .map(|r| r.unwrap().doc.unwrap())
                .collect()
        };
        let generated = read(&fresh);
        assert_eq!(generated.len(), source.len());
        assert_eq!(
            read(&sample.join("sample.parquet")),
            generated,
            "data/sample/sample.parquet is stale: make it again with scripts/demo.sh"
        );
    }
}
