//! What the trainer reads and how it orders it: training/validation documents by a fixed split
//! rule, the type inventories taken from the data, the per-epoch batch plan and the random
//! streams that make a run reproducible from its seed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::corpus::docred::read_docred;
use crate::corpus::Document;
use crate::error::{Error, Result};
use crate::model::TypeInfo;

/// `PATH:N`: the first `N` documents of `PATH` (file order) train, the remaining ones validate.
/// A fixed, order-based rule, so numbers stay comparable across runs and machines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec {
    pub path: PathBuf,
    pub train_docs: usize,
}

impl FromStr for SplitSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "split '{s}': expected PATH:N (N = training documents)"
            ))
        };
        let (path, n) = s.rsplit_once(':').ok_or_else(bad)?;
        let train_docs = n.trim().parse().map_err(|_| bad())?;
        if path.is_empty() {
            return Err(bad());
        }
        Ok(SplitSpec {
            path: PathBuf::from(path),
            train_docs,
        })
    }
}

/// Training and validation documents.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub train: Vec<Document>,
    /// Per training document: its relation labels are incomplete (see
    /// [`super::SamplingConfig::partial`]).
    pub partial_relations: Vec<bool>,
    pub validation: Vec<Document>,
}

/// Reads the training files (in order), the files with incomplete relation labels (`partial`),
/// then the validation file or the split file. Training documents without any gold annotation
/// cannot be trained on and are dropped (their number is returned); validation documents must
/// be labelled.
pub fn load_dataset(
    train: &[PathBuf],
    partial: &[PathBuf],
    validation: Option<&Path>,
    split: Option<&SplitSpec>,
) -> Result<(Dataset, usize)> {
    let mut data = Dataset::default();
    for path in train {
        data.train.extend(read_docred(path)?);
    }
    data.partial_relations.resize(data.train.len(), false);
    for path in partial {
        data.train.extend(read_docred(path)?);
    }
    data.partial_relations.resize(data.train.len(), true);
    if let Some(path) = validation {
        data.validation = read_docred(path)?;
    }
    if let Some(split) = split {
        let mut docs = read_docred(&split.path)?;
        if split.train_docs > docs.len() {
            return Err(Error::Config(format!(
                "split {}:{}: the file has only {} documents",
                split.path.display(),
                split.train_docs,
                docs.len()
            )));
        }
        data.validation.extend(docs.split_off(split.train_docs));
        data.train.extend(docs);
        data.partial_relations.resize(data.train.len(), false);
    }
    if let Some(doc) = data.validation.iter().find(|d| d.gold.is_none()) {
        return Err(Error::BadDocument {
            doc: doc.id.clone(),
            message: "validation document without gold annotations".into(),
        });
    }
    let before = data.train.len();
    let kept: Vec<(Document, bool)> = std::mem::take(&mut data.train)
        .into_iter()
        .zip(std::mem::take(&mut data.partial_relations))
        .filter(|(d, _)| d.gold.is_some())
        .collect();
    (data.train, data.partial_relations) = kept.into_iter().unzip();
    let dropped = before - data.train.len();
    Ok((data, dropped))
}

/// Entity types (sorted keys; the name is the key) and relation types: every key of
/// `rel_info` with its name (in the given order), then keys found only in the data, sorted.
/// Without `rel_info`, the sorted relation keys of the data.
pub fn collect_types(
    docs: &[&Document],
    rel_info: Option<&[(String, String)]>,
) -> (Vec<TypeInfo>, Vec<TypeInfo>) {
    let mut entity = BTreeSet::new();
    let mut relation = BTreeSet::new();
    for gold in docs.iter().filter_map(|d| d.gold.as_ref()) {
        entity.extend(gold.entities.iter().map(|e| e.entity_type.as_str()));
        relation.extend(gold.relations.iter().flatten().map(|r| r.relation.as_str()));
    }
    let info = |key: &str, name: &str| TypeInfo {
        key: key.to_string(),
        name: name.to_string(),
    };
    let entity_types = entity.iter().map(|k| info(k, k)).collect();
    let mut relation_types: Vec<TypeInfo> = rel_info
        .unwrap_or_default()
        .iter()
        .map(|(k, n)| info(k, n))
        .collect();
    for key in relation {
        if !relation_types.iter().any(|t| t.key == key) {
            relation_types.push(info(key, key));
        }
    }
    (entity_types, relation_types)
}

/// Batches in a pool: documents are shuffled, then sorted by length inside pools of this many
/// batches, so a batch holds documents of similar length (little padding) while batches still
/// come in random order.
const POOL_BATCHES: usize = 32;

/// The batches of one epoch (indices into the training documents), from `lengths` (word pieces
/// per document). Every document appears exactly once; the plan depends only on
/// `(seed, epoch)`, so a resumed run replays the same epoch.
pub fn plan_epoch(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut rng = epoch_rng(seed, epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(lengths.len().div_ceil(batch_size));
    for pool in order.chunks_mut(batch_size * POOL_BATCHES) {
        pool.sort_by_key(|&i| (lengths[i], i));
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// The random stream of the batch plan of `epoch`.
fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((1 << 63) | epoch as u64);
    rng
}

/// The random stream for sampling document `doc` in `epoch`: independent of the batch order
/// and of other documents, so sampling can run in any order (or in parallel) and a run resumed
/// in the middle of an epoch draws the same samples.
pub fn sample_rng(seed: u64, epoch: usize, doc: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 32) | doc as u64);
    rng
}

/// The libtorch seed for `epoch` (dropout), so each epoch's randomness is fixed by the run's
/// seed and the epoch alone.
pub fn torch_seed(seed: u64, epoch: usize) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) & (i64::MAX as u64)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::{Annotations, GoldEntity, GoldRelation, Span};
    use rand::Rng;

    #[test]
    fn split_spec_parses_path_and_count() {
        let s: SplitSpec = "../data/dev.json:400".parse().unwrap();
        assert_eq!(s.path, PathBuf::from("../data/dev.json"));
        assert_eq!(s.train_docs, 400);
        assert!("dev.json".parse::<SplitSpec>().is_err());
        assert!("dev.json:x".parse::<SplitSpec>().is_err());
        assert!(":3".parse::<SplitSpec>().is_err());
    }

    #[test]
    fn split_takes_the_first_n_documents_for_training() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docs.json");
        let doc = |title: &str, labels: bool| {
            let mut v = serde_json::json!({
                "title": title,
                "sents": [["a", "b", "c"]],
                "vertexSet": [[{"name": "a", "pos": [0, 1], "sent_id": 0, "type": "T"}]],
            });
            if labels {
                v["labels"] = serde_json::json!([]);
            }
            v
        };
        let docs = serde_json::json!([doc("x", true), doc("y", true), doc("z", false)]);
        std::fs::write(&path, docs.to_string()).unwrap();
        let split = SplitSpec {
            path: path.clone(),
            train_docs: 2,
        };
        let (data, dropped) = load_dataset(&[], &[], None, Some(&split)).unwrap();
        let ids = |d: &[Document]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&data.train), ["x", "y"]);
        assert_eq!(ids(&data.validation), ["z"]);
        assert_eq!(dropped, 0);
        let too_many = SplitSpec {
            path,
            train_docs: 4,
        };
        assert!(load_dataset(&[], &[], None, Some(&too_many)).is_err());
    }

    #[test]
    fn documents_of_partially_labelled_files_are_marked() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, titles: &[&str]| {
            let docs: Vec<serde_json::Value> = titles
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "title": t,
                        "sents": [["a", "b"]],
                        "vertexSet": [[{"name": "a", "pos": [0, 1], "sent_id": 0, "type": "T"}]],
                        "labels": [],
                    })
                })
                .collect();
            let path = dir.path().join(name);
            std::fs::write(&path, serde_json::Value::from(docs).to_string()).unwrap();
            path
        };
        let (full, partial) = (file("full.json", &["a", "b"]), file("part.json", &["c"]));
        let split = SplitSpec {
            path: file("split.json", &["d", "e"]),
            train_docs: 1,
        };
        let (data, _) = load_dataset(&[full], &[partial], None, Some(&split)).unwrap();
        let ids: Vec<&str> = data.train.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(data.partial_relations, [false, false, true, false]);
    }

    fn labelled(entity_types: &[&str], relations: Option<&[&str]>) -> Document {
        let span = Span {
            start: 0,
            end: 1,
            sent: 0,
        };
        Document {
            gold: Some(Annotations {
                entities: entity_types
                    .iter()
                    .map(|t| GoldEntity {
                        mentions: vec![span],
                        entity_type: t.to_string(),
                    })
                    .collect(),
                relations: relations.map(|rs| {
                    rs.iter()
                        .map(|r| GoldRelation {
                            head: 0,
                            tail: 0,
                            relation: r.to_string(),
                            evidence: vec![],
                        })
                        .collect()
                }),
            }),
            ..Document::default()
        }
    }

    #[test]
    fn types_come_from_the_data_and_rel_info() {
        let a = labelled(&["PER", "LOC"], Some(&["P9", "P1"]));
        let b = labelled(&["ORG", "PER"], None);
        let (ents, rels) = collect_types(&[&a, &b], None);
        let keys = |ts: &[TypeInfo]| ts.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&ents), ["LOC", "ORG", "PER"]);
        assert_eq!(keys(&rels), ["P1", "P9"]);
        let info = vec![
            ("P1".to_string(), "one".to_string()),
            ("P2".to_string(), "two".to_string()),
        ];
        let (_, rels) = collect_types(&[&a, &b], Some(&info));
        assert_eq!(keys(&rels), ["P1", "P2", "P9"]);
        assert_eq!(rels[1].name, "two");
        assert_eq!(rels[2].name, "P9");
    }

    #[test]
    fn epoch_plan_covers_every_document_once_and_is_reproducible() {
        let lengths: Vec<usize> = (0..203).map(|i| (i * 37) % 101 + 1).collect();
        let plan = plan_epoch(&lengths, 4, 9, 0);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..203).collect::<Vec<_>>());
        assert!(plan.iter().all(|b| !b.is_empty() && b.len() <= 4));
        assert_eq!(plan, plan_epoch(&lengths, 4, 9, 0));
        assert_ne!(plan, plan_epoch(&lengths, 4, 9, 1));
        assert_ne!(plan, plan_epoch(&lengths, 4, 10, 0));
        // Batches are length-homogeneous: within a batch, lengths are sorted (from one pool).
        assert!(plan
            .iter()
            .all(|b| b.windows(2).all(|w| lengths[w[0]] <= lengths[w[1]])));
        assert!(plan_epoch(&[], 4, 0, 0).is_empty());
    }

    #[test]
    fn sample_streams_are_independent_and_reproducible() {
        let draw = |e, d| sample_rng(1, e, d).random::<u64>();
        assert_eq!(draw(0, 0), draw(0, 0));
        assert_ne!(draw(0, 0), draw(0, 1));
        assert_ne!(draw(0, 0), draw(1, 0));
        assert_ne!(torch_seed(1, 0), torch_seed(1, 1));
        assert!(torch_seed(u64::MAX, 7) >= 0);
    }
}
