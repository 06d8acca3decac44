//! DocRED-format JSON (a list of documents with `title`, `sents`, `vertexSet`, optional
//! `labels`) → [`Document`]s with document-level gold spans.
//!
//! Every index in the file is checked, so a bad annotation fails here with the file, document and
//! problem named, instead of as an index panic deep inside training.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::{Annotations, Document, GoldEntity, GoldRelation, Span, Word};
use crate::error::{Error, Result};

#[derive(Deserialize)]
struct RawDoc {
    #[serde(default)]
    title: String,
    sents: Vec<Vec<String>>,
    #[serde(rename = "vertexSet", default)]
    vertex_set: Vec<Vec<RawMention>>,
    labels: Option<Vec<RawLabel>>,
}

#[derive(Deserialize)]
struct RawMention {
    /// Sentence-level word range `[start, end)`.
    pos: (usize, usize),
    sent_id: usize,
    #[serde(rename = "type")]
    entity_type: String,
}

#[derive(Deserialize)]
struct RawLabel {
    h: usize,
    t: usize,
    r: String,
    #[serde(default)]
    evidence: Vec<usize>,
}

/// Reads a DocRED JSON file. Document ids are the titles; a repeated title gets a `#2`, `#3`...
/// suffix (the first occurrence keeps the bare title) and an empty title becomes `doc-INDEX`, so
/// ids are unique within the file and the same on every read. `relations` is `None` for a
/// document without a `labels` key (DocRED test).
pub fn read_docred(path: &Path) -> Result<Vec<Document>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    // Parse generically first so a field of the wrong type is reported with its document.
    let values: Vec<serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
    let mut ids = UniqueIds::new(
        values
            .iter()
            .map(|v| v["title"].as_str().unwrap_or("").to_string()),
    );
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            let bad = |message: String| Error::Format {
                path: path.to_path_buf(),
                message: format!("document {index}: {message}"),
            };
            let raw: RawDoc = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            let id = ids.next(index, &raw.title);
            convert(raw, id).map_err(|(title, message)| bad(format!("({title:?}): {message}")))
        })
        .collect()
}

/// Relation keys and names from DocRED's `rel_info.json` (`{"P6": "head of government", ...}`),
/// sorted by key so the order is the same on every read.
pub fn relation_names(rel_info: &Path) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(rel_info).map_err(|e| Error::io(rel_info, e))?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: rel_info.to_path_buf(),
            source,
        })?;
    Ok(map.into_iter().collect())
}

/// Checks one raw document and turns sentence-level positions into document-level spans. Errors
/// carry the title for the message.
fn convert(raw: RawDoc, id: String) -> Result<Document, (String, String)> {
    let fail = |message: String| (raw.title.clone(), message);
    let mut starts = Vec::with_capacity(raw.sents.len());
    let mut acc = 0;
    for s in &raw.sents {
        starts.push(acc);
        acc += s.len();
    }
    let mut entities = Vec::with_capacity(raw.vertex_set.len());
    for (e, mentions) in raw.vertex_set.iter().enumerate() {
        let Some(first) = mentions.first() else {
            return Err(fail(format!("entity {e} has no mentions")));
        };
        let mut spans = Vec::with_capacity(mentions.len());
        for (m, mention) in mentions.iter().enumerate() {
            let (start, end) = mention.pos;
            let Some(sentence) = raw.sents.get(mention.sent_id) else {
                return Err(fail(format!(
                    "entity {e} mention {m}: sent_id {} out of range ({} sentences)",
                    mention.sent_id,
                    raw.sents.len()
                )));
            };
            if start >= end || end > sentence.len() {
                return Err(fail(format!(
                    "entity {e} mention {m}: pos [{start}, {end}) is not a word range of sentence {} ({} words)",
                    mention.sent_id,
                    sentence.len()
                )));
            }
            let offset = starts[mention.sent_id];
            spans.push(Span {
                start: offset + start,
                end: offset + end,
                sent: mention.sent_id,
            });
        }
        entities.push(GoldEntity {
            mentions: spans,
            entity_type: first.entity_type.clone(),
        });
    }
    let relations = match &raw.labels {
        None => None,
        Some(labels) => {
            let mut out = Vec::with_capacity(labels.len());
            for (i, l) in labels.iter().enumerate() {
                if l.h >= entities.len() || l.t >= entities.len() {
                    return Err(fail(format!(
                        "label {i}: h {} / t {} out of range ({} entities)",
                        l.h,
                        l.t,
                        entities.len()
                    )));
                }
                if let Some(&s) = l.evidence.iter().find(|&&s| s >= raw.sents.len()) {
                    return Err(fail(format!(
                        "label {i}: evidence sentence {s} out of range ({} sentences)",
                        raw.sents.len()
                    )));
                }
                out.push(GoldRelation {
                    head: l.h,
                    tail: l.t,
                    relation: l.r.clone(),
                    evidence: l.evidence.clone(),
                });
            }
            Some(out)
        }
    };
    let sentences = raw
        .sents
        .into_iter()
        .map(|s| {
            s.into_iter()
                .map(|text| Word { text, chars: None })
                .collect()
        })
        .collect();
    Ok(Document {
        id,
        text: None,
        sentences,
        gold: Some(Annotations {
            entities,
            relations,
        }),
    })
}

/// Hands out unique ids: the title itself the first time, then `title#2`, `title#3`... skipping
/// any that is some other document's title.
struct UniqueIds {
    titles: HashSet<String>,
    used: HashSet<String>,
}

impl UniqueIds {
    fn new(titles: impl Iterator<Item = String>) -> Self {
        UniqueIds {
            titles: titles.collect(),
            used: HashSet::new(),
        }
    }

    fn next(&mut self, index: usize, title: &str) -> String {
        let base = if title.is_empty() {
            format!("doc-{index}")
        } else {
            title.to_string()
        };
        let mut id = base.clone();
        let mut k = 2;
        while self.used.contains(&id) || (id != base && self.titles.contains(&id)) {
            id = format!("{base}#{k}");
            k += 1;
        }
        self.used.insert(id.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn write(json: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), json).unwrap();
        f
    }

    const TINY: &str = r#"[
      {"title": "Zed", "sents": [["Zed", "lives", "in", "Qux", "."], ["He", "likes", "Qux", "City", "."]],
       "vertexSet": [
         [{"name": "Zed", "pos": [0, 1], "sent_id": 0, "type": "PER"},
          {"name": "He", "pos": [0, 1], "sent_id": 1, "type": "ORG"}],
         [{"name": "Qux", "pos": [3, 4], "sent_id": 0, "type": "LOC"},
          {"name": "Qux City", "pos": [2, 4], "sent_id": 1, "type": "LOC"}]],
       "labels": [{"h": 0, "t": 1, "r": "P551", "evidence": [0, 1]}]},
      {"title": "Zed", "sents": [["Nothing", "here"]], "vertexSet": []},
      {"title": "Zed#2", "sents": [], "vertexSet": [], "labels": []},
      {"title": "", "sents": [["x"]], "vertexSet": []}
    ]"#;

    #[test]
    fn reads_tiny_file() {
        let f = write(TINY);
        let docs = read_docred(f.path()).unwrap();
        let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["Zed", "Zed#3", "Zed#2", "doc-3"]);
        let d = &docs[0];
        assert_eq!(d.word_count(), 10);
        assert!(d.text.is_none() && d.words().all(|w| w.chars.is_none()));
        let gold = d.gold.as_ref().unwrap();
        // Type of the first mention wins.
        assert_eq!(gold.entities[0].entity_type, "PER");
        assert_eq!(
            gold.entities[1].mentions,
            vec![
                Span {
                    start: 3,
                    end: 4,
                    sent: 0
                },
                Span {
                    start: 7,
                    end: 9,
                    sent: 1
                }
            ]
        );
        assert_eq!(d.phrase(gold.entities[1].mentions[1]), "Qux City");
        let rel = &gold.relations.as_ref().unwrap()[0];
        assert_eq!((rel.head, rel.tail, rel.relation.as_str()), (0, 1, "P551"));
        assert_eq!(rel.evidence, vec![0, 1]);
        // No `labels` key: relations unknown, not empty.
        assert!(docs[1].gold.as_ref().unwrap().relations.is_none());
        assert_eq!(docs[2].gold.as_ref().unwrap().relations, Some(vec![]));
    }

    fn error_of(json: &str) -> String {
        let f = write(json);
        let e = read_docred(f.path()).unwrap_err().to_string();
        assert!(e.contains(&f.path().display().to_string()), "{e}");
        e
    }

    #[test]
    fn malformed_documents_are_named() {
        let doc = |vertex: &str, labels: &str| {
            format!(
                r#"[{{"title": "ok", "sents": [["a"]], "vertexSet": []}},
                  {{"title": "Bad", "sents": [["a", "b"], ["c"]], "vertexSet": {vertex}, "labels": {labels}}}]"#
            )
        };
        let m = |pos: &str, sent: usize| {
            format!(r#"[[{{"name": "a", "pos": {pos}, "sent_id": {sent}, "type": "X"}}]]"#)
        };
        let e = error_of(&doc(&m("[1, 3]", 0), "[]"));
        assert!(
            e.contains("document 1") && e.contains("\"Bad\"") && e.contains("pos [1, 3)"),
            "{e}"
        );
        let e = error_of(&doc(&m("[1, 1]", 0), "[]"));
        assert!(e.contains("pos [1, 1)"), "{e}");
        let e = error_of(&doc(&m("[0, 1]", 2), "[]"));
        assert!(e.contains("sent_id 2 out of range"), "{e}");
        let e = error_of(&doc(&m("[0, 1]", 1), r#"[{"h": 0, "t": 1, "r": "P1"}]"#));
        assert!(e.contains("label 0: h 0 / t 1 out of range"), "{e}");
        let e = error_of(&doc(
            &m("[0, 1]", 1),
            r#"[{"h": 0, "t": 0, "r": "P1", "evidence": [5]}]"#,
        ));
        assert!(e.contains("evidence sentence 5"), "{e}");
        let e = error_of(&doc("[[]]", "[]"));
        assert!(e.contains("entity 0 has no mentions"), "{e}");
        let e = error_of(&doc(&m("[-1, 1]", 0), "[]"));
        assert!(e.contains("document 1"), "{e}");
        let e = error_of(r#"{"not": "a list"}"#);
        assert!(e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = read_docred(Path::new("/nonexistent/x.json")).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
    }

    fn check_real(rel: &str, count: usize, labelled: bool) {
        let Some(path) = testing::require_shared(rel) else {
            return;
        };
        let docs = read_docred(&path).unwrap();
        assert_eq!(docs.len(), count, "{rel}");
        let ids: HashSet<&str> = docs.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), count, "{rel}: ids not unique");
        for d in &docs {
            let gold = d.gold.as_ref().unwrap();
            assert_eq!(gold.relations.is_some(), labelled, "{}", d.id);
            assert!(!gold.entities.is_empty(), "{}", d.id);
            let starts = d.sentence_starts();
            for e in &gold.entities {
                for m in &e.mentions {
                    assert!(starts[m.sent] <= m.start && m.end <= starts[m.sent + 1]);
                }
            }
        }
        if labelled {
            let rels: usize = docs
                .iter()
                .map(|d| d.gold.as_ref().unwrap().relations.as_ref().unwrap().len())
                .sum();
            assert!(rels > count, "{rel}: only {rels} relations");
        }
    }

    #[test]
    fn reads_redocred_dev() {
        check_real("redocred/dev_revised.json", 500, true);
    }

    #[test]
    fn reads_docred_test() {
        check_real("docred/test.json", 1000, false);
    }

    #[test]
    fn reads_docred_train_sample() {
        check_real("docred/train_annotated_first200.json", 200, true);
    }

    #[test]
    fn reads_relation_names() {
        let Some(path) = testing::require_shared("docred/rel_info.json") else {
            return;
        };
        let names = relation_names(&path).unwrap();
        assert_eq!(names.len(), 96);
        assert!(names.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(names
            .iter()
            .all(|(k, v)| k.starts_with('P') && !v.is_empty()));
    }
}
