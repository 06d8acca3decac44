//! Corpus readers end to end: Parquet input → documents → word pieces, and the content hash the
//! documents table records.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use jerex::corpus::{parquet as input, text, Document, Word};
use jerex::testing::require_encoder;
use jerex::tokenize::WordPieceTokenizer;
use parquet::arrow::ArrowWriter;

fn pretokenized(sentences: &[&[&str]]) -> Document {
    Document {
        id: "p".into(),
        sentences: sentences
            .iter()
            .map(|s| {
                s.iter()
                    .map(|w| Word {
                        text: w.to_string(),
                        chars: None,
                    })
                    .collect()
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn content_hash_tracks_content_only() {
    let a = text::segment("a", "One two. Three.");
    let b = text::segment("b", "One two. Three.");
    assert_eq!(a.content_hash(), b.content_hash(), "the id is not content");
    assert_eq!(a.content_hash().len(), 64);
    assert_ne!(
        a.content_hash(),
        text::segment("a", "One two. Three!").content_hash()
    );
    // Word and sentence boundaries are content for pre-tokenized documents.
    let hashes = [
        pretokenized(&[&["ab"]]).content_hash(),
        pretokenized(&[&["a", "b"]]).content_hash(),
        pretokenized(&[&["a"], &["b"]]).content_hash(),
        pretokenized(&[&["a", "b"], &[]]).content_hash(),
    ];
    for i in 0..hashes.len() {
        for j in i + 1..hashes.len() {
            assert_ne!(hashes[i], hashes[j], "{i} vs {j}");
        }
    }
}

#[test]
fn parquet_text_to_word_pieces() {
    let Some(encoder) = require_encoder() else {
        return;
    };
    let tokenizer = WordPieceTokenizer::from_file(&encoder.join("tokenizer.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.parquet");
    let ids: ArrayRef = Arc::new(StringArray::from(vec!["x1", "x2", "x3"]));
    let texts: ArrayRef = Arc::new(StringArray::from(vec![
        Some("Dr. Quill founded Vexo Labs in Lyon. It grew fast."),
        None,
        Some("Zürich ☕ and 東京 are far apart."),
    ]));
    let batch = RecordBatch::try_from_iter([("id", ids), ("text", texts)]).unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(&path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let rows: Vec<input::RowResult> = input::open(&path, &input::InputColumns::default())
        .unwrap()
        .collect::<jerex::Result<_>>()
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].doc, Err("null text".to_string()));
    for row in [&rows[0], &rows[2]] {
        let doc = row.doc.as_ref().unwrap();
        let pieces = tokenizer.tokenize(doc);
        assert_eq!(pieces.word_pieces.len(), doc.word_count());
        let text: Vec<char> = doc.text.as_ref().unwrap().chars().collect();
        for (w, &(s, e)) in doc.words().zip(&pieces.word_pieces) {
            assert!(s < e);
            let (cs, ce) = w.chars.unwrap();
            assert_eq!(text[cs..ce].iter().collect::<String>(), w.text);
        }
    }
    let first = rows[0].doc.as_ref().unwrap();
    assert_eq!(
        first.sentences.len(),
        2,
        "the title abbreviation must not end a sentence"
    );
}
