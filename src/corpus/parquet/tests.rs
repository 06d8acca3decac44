use super::*;
use arrow::array::{ArrayRef, Int64Array, LargeStringArray, ListBuilder, StringBuilder};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::sync::Arc;

/// Writes `columns` to a Parquet file with `rows_per_group` rows per row group.
fn write(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>, rows_per_group: usize) -> PathBuf {
    let path = dir.join(name);
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_size(rows_per_group)
        .build();
    let mut w =
        ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn strings(values: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(values.to_vec()))
}

fn sentences(rows: &[Option<Vec<Vec<Option<&str>>>>]) -> ArrayRef {
    let mut b = ListBuilder::new(ListBuilder::new(StringBuilder::new()));
    for row in rows {
        match row {
            None => b.append(false),
            Some(sents) => {
                for s in sents {
                    for w in s {
                        b.values().values().append_option(*w);
                    }
                    b.values().append(true);
                }
                b.append(true);
            }
        }
    }
    Arc::new(b.finish())
}

fn read_all(path: &Path, cols: &InputColumns) -> Vec<RowResult> {
    open(path, cols)
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

#[test]
fn reads_text_rows_and_reports_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "t.parquet",
        vec![
            (
                "id",
                strings(&[Some("a"), None, Some("c"), Some("d"), Some(" ")]),
            ),
            (
                "extra",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            ),
            (
                "text",
                strings(&[
                    Some("Ann saw Bo. Bo ran."),
                    Some("x"),
                    None,
                    Some("  "),
                    Some("y"),
                ]),
            ),
        ],
        2,
    );
    assert_eq!(row_group_count(&path).unwrap(), 3);
    assert_eq!(row_group_rows(&path).unwrap(), vec![2, 2, 1]);
    let rows = read_all(&path, &InputColumns::default());
    let rows: Vec<(usize, std::result::Result<&Document, &str>)> = rows
        .iter()
        .map(|r| (r.row, r.doc.as_ref().map_err(String::as_str)))
        .collect();
    assert_eq!(rows.len(), 5);
    let doc = rows[0].1.unwrap();
    assert_eq!((doc.id.as_str(), doc.sentences.len()), ("a", 2));
    assert_eq!(doc.text.as_deref(), Some("Ann saw Bo. Bo ran."));
    assert_eq!(doc.sentences[1][0].chars, Some((12, 14)));
    assert_eq!(rows[1], (1, Err("null id")));
    assert_eq!(rows[2], (2, Err("null text")));
    assert_eq!(rows[3], (3, Err("text is empty or has no words")));
    assert_eq!(rows[4], (4, Err("empty id")));
}

#[test]
fn rejected_rows_keep_their_id_and_binary_columns_are_checked_per_row() {
    use arrow::array::BinaryArray;
    let dir = tempfile::tempdir().unwrap();
    let bytes = |v: &[Option<&[u8]>]| Arc::new(BinaryArray::from(v.to_vec())) as ArrayRef;
    let path = write(
        dir.path(),
        "bin.parquet",
        vec![
            (
                "id",
                bytes(&[Some(b"a"), Some(b"b"), Some(b"c\xff"), Some(b"d")]),
            ),
            (
                "text",
                bytes(&[
                    Some("Zoë ran.".as_bytes()),
                    Some(b"bad \xc3\x28 bytes"),
                    Some(b"Fine."),
                    None,
                ]),
            ),
        ],
        10,
    );
    let rows = read_all(&path, &InputColumns::default());
    let doc = rows[0].doc.as_ref().unwrap();
    assert_eq!(
        (doc.id.as_str(), doc.sentences[0][0].text.as_str()),
        ("a", "Zoë")
    );
    assert_eq!(rows[1].id.as_deref(), Some("b"));
    assert_eq!(
        rows[1].doc,
        Err("text is not valid UTF-8 (byte 4)".to_string())
    );
    assert_eq!(rows[2].id, None);
    assert_eq!(
        rows[2].doc,
        Err("id is not valid UTF-8 (byte 1)".to_string())
    );
    assert_eq!(rows[3].id.as_deref(), Some("d"));
    assert_eq!(rows[3].doc, Err("null text".to_string()));
}

#[test]
fn row_group_ranges_keep_file_row_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let n = 600;
    let ids: Vec<String> = (0..n).map(|i| format!("doc{i}")).collect();
    let texts: Vec<String> = (0..n).map(|i| format!("Item {i} is here.")).collect();
    let path = write(
        dir.path(),
        "g.parquet",
        vec![
            ("key", Arc::new(StringArray::from(ids)) as ArrayRef),
            ("body", Arc::new(LargeStringArray::from(texts)) as ArrayRef),
        ],
        100,
    );
    let cols = InputColumns {
        id: "key".into(),
        text: Some("body".into()),
        sentences: None,
    };
    let reader = open_row_groups(&path, &cols, 2..5).unwrap();
    assert_eq!(reader.path(), path);
    let rows: Vec<RowResult> = reader.collect::<Result<_>>().unwrap();
    assert_eq!(rows.len(), 300);
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(r.row, 200 + k);
        let doc = r.doc.as_ref().unwrap();
        assert_eq!(doc.id, format!("doc{}", 200 + k));
        assert_eq!(doc.sentences[0][1].text, (200 + k).to_string());
    }
    assert_eq!(open_row_groups(&path, &cols, 3..3).unwrap().count(), 0);
    // Rows inside a range of row groups (a large group split into several units), and the
    // ids alone of exactly those rows.
    let part: Vec<RowResult> = open_part(&path, &cols, 2..4, Some(150..170))
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    let numbers: Vec<usize> = part.iter().map(|r| r.row).collect();
    assert_eq!(numbers, (350..370).collect::<Vec<_>>());
    assert_eq!(part[0].doc.as_ref().unwrap().id, "doc350");
    let ids: Vec<(usize, Option<String>)> = open_ids(&path, &cols, 2..4, Some(150..170))
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    let expected: Vec<(usize, Option<String>)> =
        part.iter().map(|r| (r.row, r.id.clone())).collect();
    assert_eq!(ids, expected);
    let e = open_part(&path, &cols, 2..4, Some(150..201)).err().unwrap();
    assert!(e.to_string().contains("out of range"), "{e}");
    let e = open_row_groups(&path, &cols, 4..7)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("g.parquet") && e.contains("out of range"), "{e}");
}

#[test]
fn reads_pretokenized_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "p.parquet",
        vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![7, 8, 9, 10])) as ArrayRef,
            ),
            (
                "sentences",
                sentences(&[
                    Some(vec![
                        vec![Some("Ann"), Some("ran")],
                        vec![],
                        vec![Some(".")],
                    ]),
                    None,
                    Some(vec![vec![Some("a"), None]]),
                    Some(vec![vec![]]),
                ]),
            ),
        ],
        10,
    );
    let rows = read_all(&path, &InputColumns::default());
    let doc = rows[0].doc.as_ref().unwrap();
    assert_eq!(doc.id, "7");
    assert!(doc.text.is_none() && doc.words().all(|w| w.chars.is_none()));
    assert_eq!(doc.sentence_starts(), vec![0, 2, 2, 3]);
    assert_eq!(rows[1].doc, Err("null sentences".to_string()));
    assert_eq!(
        rows[2].doc,
        Err("sentence 0 word 1 is null or empty".to_string())
    );
    assert_eq!(rows[3].doc, Err("sentences have no words".to_string()));
}

#[test]
fn text_wins_over_sentences_when_both_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "b.parquet",
        vec![
            (
                "id",
                strings(&[Some("a"), Some("b"), Some("c"), Some("d"), Some("e")]),
            ),
            (
                "text",
                strings(&[Some("Raw text."), None, None, Some(" "), Some("")]),
            ),
            (
                "sentences",
                sentences(&[
                    Some(vec![vec![Some("ignored")]]),
                    Some(vec![vec![Some("pre")]]),
                    None,
                    Some(vec![vec![Some("kept")]]),
                    None,
                ]),
            ),
        ],
        10,
    );
    let rows = read_all(&path, &InputColumns::default());
    assert_eq!(rows[0].doc.as_ref().unwrap().sentences[0][0].text, "Raw");
    assert_eq!(rows[1].doc.as_ref().unwrap().sentences[0][0].text, "pre");
    assert_eq!(rows[2].doc, Err("null text and null sentences".to_string()));
    assert_eq!(rows[2].id.as_deref(), Some("c"));
    // Blank text falls back to the row's sentences; without them the row is rejected.
    assert_eq!(rows[3].doc.as_ref().unwrap().sentences[0][0].text, "kept");
    assert_eq!(
        rows[4].doc,
        Err("text is empty or has no words and null sentences".to_string())
    );
}

#[test]
fn file_level_problems_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "w.parquet",
        vec![
            ("id", strings(&[Some("a")])),
            ("text", Arc::new(Int64Array::from(vec![3])) as ArrayRef),
        ],
        10,
    );
    let e = open(&path, &InputColumns::default()).err().unwrap();
    // The job's columns do not fit this file: the file's own problem (the plan checks that
    // they fit some input at all).
    assert!(matches!(e, Error::Columns { .. }), "{e:?}");
    let e = e.to_string();
    assert!(
        e.contains("w.parquet") && e.contains("column \"text\" has type Int64, expected a string"),
        "{e}"
    );
    let cols = InputColumns {
        id: "doc".into(),
        ..Default::default()
    };
    let e = open(&path, &cols).err().unwrap().to_string();
    assert!(e.contains("no id column \"doc\""), "{e}");
    let cols = InputColumns {
        text: Some("body".into()),
        ..Default::default()
    };
    let e = open(&path, &cols).err().unwrap().to_string();
    assert!(e.contains("no content column"), "{e}");
    let e = open(&dir.path().join("missing.parquet"), &cols)
        .err()
        .unwrap();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

#[test]
fn truncated_and_corrupt_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..50).map(|i| format!("Text number {i}.")).collect();
    let ids: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    let path = write(
        dir.path(),
        "c.parquet",
        vec![
            ("id", Arc::new(StringArray::from(ids)) as ArrayRef),
            ("text", Arc::new(StringArray::from(texts)) as ArrayRef),
        ],
        10,
    );
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = open(&truncated, &InputColumns::default()).err().unwrap();
    assert!(matches!(e, Error::Parquet { .. }) && e.to_string().contains("truncated.parquet"));
    // Footer intact, first page header destroyed: the error comes while reading.
    let mut damaged = bytes.clone();
    damaged[4..40].fill(0xFF);
    let corrupt = dir.path().join("corrupt.parquet");
    std::fs::write(&corrupt, &damaged).unwrap();
    let result: Result<Vec<RowResult>> =
        open(&corrupt, &InputColumns::default()).and_then(|r| r.collect());
    let e = result.err().unwrap().to_string();
    assert!(e.contains("corrupt.parquet"), "{e}");
}
