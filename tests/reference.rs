//! A real checkpoint of the reference implementation (lavis-nlp/jerex), with its own outputs on
//! 20 documents (`../shared/fixtures/reference-jerex`): imported, it must reproduce the
//! reference's raw head scores entry by entry, its decisions and its strict scores.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use jerex::corpus::docred::read_docred;
use jerex::corpus::Span;
use jerex::device::Precision;
use jerex::model::{DocPrediction, DocTrace, JerexModel, PreparedDoc, Thresholds};
use jerex::testing::require_fixture;
use serde_json::Value;
use tch::Device;

/// The reference's test thresholds (its defaults, given on its command line).
const THRESHOLDS: Thresholds = Thresholds {
    mention: 0.85,
    coref: 0.85,
    relation: 0.6,
};
const TOLERANCE: f64 = 1e-4;

struct Fixture {
    dir: PathBuf,
    /// Holds the unpacked checkpoint and the imported model.
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn get() -> Option<Fixture> {
        let dir = require_fixture("reference-jerex")?;
        let tmp = tempfile::tempdir().unwrap();
        let mut packed = Vec::new();
        std::fs::File::open(dir.join("model.ckpt.gz"))
            .unwrap()
            .read_to_end(&mut packed)
            .unwrap();
        let mut ckpt = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut ckpt)
            .unwrap();
        std::fs::write(tmp.path().join("model.ckpt"), ckpt).unwrap();
        Some(Fixture { dir, tmp })
    }

    fn ckpt(&self) -> PathBuf {
        self.tmp.path().join("model.ckpt")
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join(name)).unwrap()).unwrap()
    }
}

fn spans(v: &Value) -> Vec<(usize, usize)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s[0].as_u64().unwrap() as usize,
                s[1].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn words(s: &Span) -> (usize, usize) {
    (s.start, s.end)
}

/// A cluster as the set of its mentions' word spans.
type SpanSet = BTreeSet<(usize, usize)>;

/// A decision of the reference (its probability `p` against `threshold`) that lies within the
/// tolerance of the threshold, where float differences may flip it.
fn close_call(p: f64, threshold: f32) -> bool {
    (p - f64::from(threshold)).abs() <= TOLERANCE
}

#[test]
fn imported_checkpoint_reproduces_the_reference_head_by_head() {
    let Some(fx) = Fixture::get() else { return };
    let out = fx.tmp.path().join("imported");
    let imported = jerex::reference::import(&fx.ckpt(), &fx.dir, &out).unwrap();
    assert_eq!(imported.tensors, 61, "every state_dict tensor is read");
    let loaded = JerexModel::load(&out, Device::Cpu, Precision::Fp32).unwrap();
    let scores = fx.json("scores.json");
    let predictions = fx.json("predictions.json");
    let entity_types: Vec<String> = scores["entity_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let relation_types: Vec<String> = scores["relation_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let key = |t: &jerex::model::TypeInfo| t.key.clone();
    assert_eq!(
        loaded
            .config
            .entity_types
            .iter()
            .map(key)
            .collect::<Vec<_>>(),
        entity_types
    );
    assert_eq!(
        loaded
            .config
            .relation_types
            .iter()
            .map(key)
            .collect::<Vec<_>>(),
        relation_types
    );

    let docs = read_docred(&fx.dir.join("test_docs.json")).unwrap();
    let prepared: Vec<PreparedDoc> = docs
        .into_iter()
        .map(|d| PreparedDoc::new(d, &loaded.tokenizer, loaded.config.heads.max_span_words))
        .collect();
    // Batches of four documents of different lengths: padding must not change any score.
    let mut traces: Vec<(DocPrediction, DocTrace)> = Vec::new();
    let mut plain: Vec<DocPrediction> = Vec::new();
    for batch in prepared.chunks(4) {
        let (p, t) = loaded.model.predict_traced(batch, &THRESHOLDS).unwrap();
        traces.extend(p.into_iter().zip(t));
        plain.extend(loaded.model.predict(batch, &THRESHOLDS).unwrap());
    }

    let mut compared = [0usize; 4];
    let mut close_calls = Vec::new();
    for (d, (doc, (pred, trace))) in prepared.iter().zip(&traces).enumerate() {
        let s = &scores["documents"][d];
        let title = s["title"].as_str().unwrap();
        let ids: Vec<u64> = doc.tokens.ids.iter().map(|&i| u64::from(i)).collect();
        let encodings: Vec<u64> = s["encodings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(ids, encodings, "{title}: word pieces");

        // Mentions: every candidate, in the reference's order.
        let cands = &s["mention_candidates"];
        let cand_spans = spans(&cands["orig_spans"]);
        let cand_probs = floats(&cands["probs"]);
        let ours: Vec<(usize, usize)> = trace.candidates.iter().map(|(s, _)| words(s)).collect();
        assert_eq!(ours, cand_spans, "{title}: candidate spans and their order");
        for (i, ((_, p), &q)) in trace.candidates.iter().zip(&cand_probs).enumerate() {
            let gap = (f64::from(*p) - q).abs();
            assert!(gap <= TOLERANCE, "{title}: candidate {i}: {p} vs {q}");
            if close_call(q, THRESHOLDS.mention) {
                close_calls.push(format!("{title}: mention {:?} p={q}", cand_spans[i]));
            }
            compared[0] += 1;
        }
        let cand_index: HashMap<(usize, usize), usize> = cand_spans
            .iter()
            .enumerate()
            .map(|(i, &s)| (s, i))
            .collect();

        // Coreference: both directions of every pair of predicted mentions.
        let coref = &s["coref"];
        let ref_pairs: HashMap<(usize, usize), f64> = coref["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(floats(&coref["probs"]))
            .map(|(p, q)| {
                (
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as usize,
                    ),
                    q,
                )
            })
            .collect();
        let mut seen = 0;
        for (a, b, p) in &trace.coref {
            let key = (cand_index[&words(a)], cand_index[&words(b)]);
            let Some(&q) = ref_pairs.get(&key) else {
                panic!("{title}: coreference pair {a:?} {b:?} is not one of the reference's");
            };
            assert!(
                (f64::from(*p) - q).abs() <= TOLERANCE,
                "{title}: coreference {key:?}: {p} vs {q}"
            );
            if close_call(q, THRESHOLDS.coref) {
                close_calls.push(format!("{title}: coreference {key:?} p={q}"));
            }
            seen += 1;
        }
        assert_eq!(seen, ref_pairs.len(), "{title}: coreference pair count");
        compared[1] += seen;

        // Entities: the same clusters, each with the same type probabilities.
        let cluster_of =
            |members: &[usize]| -> SpanSet { members.iter().map(|&c| cand_spans[c]).collect() };
        let ref_clusters: Vec<SpanSet> = s["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| cluster_of(&indices(c)))
            .collect();
        let our_clusters: Vec<SpanSet> = pred
            .entities
            .iter()
            .map(|e| {
                e.mentions
                    .iter()
                    .map(|&m| words(&pred.mentions[m].span))
                    .collect()
            })
            .collect();
        let mut sorted_ref = ref_clusters.clone();
        let mut sorted_ours = our_clusters.clone();
        sorted_ref.sort();
        sorted_ours.sort();
        assert_eq!(sorted_ours, sorted_ref, "{title}: clusters");
        let ours_at: HashMap<&SpanSet, usize> = our_clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c, i))
            .collect();
        for (c, probs) in ref_clusters
            .iter()
            .zip(s["entities"]["probs"].as_array().unwrap())
        {
            let e = ours_at[c];
            for (t, (p, q)) in trace.entity_types[e].iter().zip(floats(probs)).enumerate() {
                assert!(
                    (f64::from(*p) - q).abs() <= TOLERANCE,
                    "{title}: entity {c:?} type {t}: {p} vs {q}"
                );
            }
            compared[2] += 1;
        }

        // Relations: every ordered entity pair, every relation type.
        let our_pairs: HashMap<(usize, usize), &Vec<f32>> =
            trace.relations.iter().map(|(k, v)| (*k, v)).collect();
        let rel = &s["relations"];
        let ref_pairs = rel["entity_pairs"].as_array().unwrap();
        assert_eq!(our_pairs.len(), ref_pairs.len(), "{title}: entity pairs");
        for (pair, probs) in ref_pairs.iter().zip(rel["probs"].as_array().unwrap()) {
            let (h, t) = (
                ours_at[&ref_clusters[pair[0].as_u64().unwrap() as usize]],
                ours_at[&ref_clusters[pair[1].as_u64().unwrap() as usize]],
            );
            for (r, (p, q)) in our_pairs[&(h, t)].iter().zip(floats(probs)).enumerate() {
                assert!(
                    (f64::from(*p) - q).abs() <= TOLERANCE,
                    "{title}: relation {pair} type {r}: {p} vs {q}"
                );
                if close_call(q, THRESHOLDS.relation) {
                    close_calls.push(format!("{title}: relation {pair} type {r} p={q}"));
                }
            }
            compared[3] += 1;
        }

        // Decisions: the traced and the fast path agree, and both equal the reference's.
        assert_same_decisions(title, &plain[d], pred);
        check_decisions(title, pred, &predictions[d], &loaded.config, &close_calls);
    }
    eprintln!(
        "compared {} mention candidates, {} coreference pairs, {} entities, {} entity pairs; \
         decisions within {TOLERANCE} of a threshold: {close_calls:?}",
        compared[0], compared[1], compared[2], compared[3]
    );
    assert!(compared.iter().all(|&n| n > 0));
}

/// The fast path (screened mention scores) decides as the traced one (exact scores): the
/// scores differ only in summation order.
fn assert_same_decisions(title: &str, fast: &DocPrediction, traced: &DocPrediction) {
    let mentions = |p: &DocPrediction| -> Vec<Span> { p.mentions.iter().map(|m| m.span).collect() };
    let entities = |p: &DocPrediction| -> Vec<(Vec<usize>, usize)> {
        p.entities
            .iter()
            .map(|e| (e.mentions.clone(), e.entity_type))
            .collect()
    };
    let relations = |p: &DocPrediction| -> Vec<(usize, usize, usize)> {
        p.relations
            .iter()
            .map(|r| (r.head, r.tail, r.relation))
            .collect()
    };
    assert_eq!(
        mentions(fast),
        mentions(traced),
        "{title}: fast and traced mentions"
    );
    assert_eq!(
        entities(fast),
        entities(traced),
        "{title}: fast and traced entities"
    );
    assert_eq!(
        relations(fast),
        relations(traced),
        "{title}: fast and traced relations"
    );
    for (a, b) in fast.mentions.iter().zip(&traced.mentions) {
        assert!((a.score - b.score).abs() < 1e-5, "{title}: {a:?} vs {b:?}");
    }
}

/// Predicted mentions, clusters (as sets), entity types and relations equal the reference's
/// `predictions.json` entry, except decisions listed in `close_calls`.
fn check_decisions(
    title: &str,
    pred: &DocPrediction,
    reference: &Value,
    config: &jerex::model::ModelConfig,
    close_calls: &[String],
) {
    let excused = |what: &str| {
        close_calls
            .iter()
            .any(|c| c.starts_with(&format!("{title}: {what}")))
    };
    let ref_mentions: Vec<(usize, usize)> = reference["mentions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["start"].as_u64().unwrap() as usize,
                m["end"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let ours: BTreeSet<(usize, usize)> = pred.mentions.iter().map(|m| words(&m.span)).collect();
    let theirs: BTreeSet<(usize, usize)> = ref_mentions.iter().copied().collect();
    if ours != theirs {
        assert!(
            excused("mention"),
            "{title}: mentions {ours:?} vs {theirs:?}"
        );
        return;
    }
    let entity = |spans: SpanSet, ty: &str| (spans, ty.to_string());
    let ref_entities: Vec<(SpanSet, String)> = reference["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            entity(
                indices(&e["mentions"])
                    .iter()
                    .map(|&m| ref_mentions[m])
                    .collect(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    let our_entities: Vec<(SpanSet, String)> = pred
        .entities
        .iter()
        .map(|e| {
            entity(
                e.mentions
                    .iter()
                    .map(|&m| words(&pred.mentions[m].span))
                    .collect(),
                &config.entity_types[e.entity_type].key,
            )
        })
        .collect();
    let sorted = |v: &[(SpanSet, String)]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&our_entities),
        sorted(&ref_entities),
        "{title}: entities"
    );
    let ref_relations: BTreeSet<(SpanSet, SpanSet, String)> = reference["relations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                ref_entities[r["head"].as_u64().unwrap() as usize].0.clone(),
                ref_entities[r["tail"].as_u64().unwrap() as usize].0.clone(),
                r["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let our_relations: BTreeSet<(SpanSet, SpanSet, String)> = pred
        .relations
        .iter()
        .map(|r| {
            (
                our_entities[r.head].0.clone(),
                our_entities[r.tail].0.clone(),
                config.relation_types[r.relation].key.clone(),
            )
        })
        .collect();
    if our_relations != ref_relations {
        assert!(
            excused("relation"),
            "{title}: relations {our_relations:?} vs {ref_relations:?}"
        );
    }
}

fn jerex() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jerex"))
}

/// Precision, recall and F1 of one task in the reference's printed evaluation
/// (`reference_scores.txt`): the `micro` row after the task's heading.
fn reference_prf(text: &str, heading: &str) -> [f64; 3] {
    let section = &text[text.find(heading).unwrap()..];
    let row = section
        .lines()
        .find(|l| l.trim_start().starts_with("micro"))
        .unwrap();
    let field = |i: usize| row.split_whitespace().nth(i).unwrap().parse().unwrap();
    [field(1), field(2), field(3)]
}

#[test]
fn imported_model_evaluates_to_the_reference_scores() {
    let Some(fx) = Fixture::get() else { return };
    let out = fx.tmp.path().join("cli-import");
    let status = jerex()
        .args(["import-reference", fx.dir.to_str().unwrap(), "-o"])
        .arg(&out)
        .arg("--checkpoint")
        .arg(fx.ckpt())
        .status()
        .unwrap();
    assert!(status.success());
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let eval = jerex()
        .args(["eval", "--model"])
        .arg(&out)
        .arg("--data")
        .arg(fx.dir.join("test_docs.json"))
        .args([
            "--mention-threshold",
            "0.85",
            "--coref-threshold",
            "0.85",
            "--relation-threshold",
            "0.6",
        ])
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let report: Value = serde_json::from_slice(&eval.stdout).unwrap();
    let text = std::fs::read_to_string(fx.dir.join("reference_scores.txt")).unwrap();
    for (task, heading) in [
        ("mention", "--- Entity Mentions ---"),
        ("coreference", "--- Clusters"),
        ("entity", "--- Entities ---"),
        ("relation", "With entity type"),
    ] {
        let theirs = reference_prf(&text, heading);
        for (i, field) in ["precision", "recall", "f1"].into_iter().enumerate() {
            let ours = report[task][field].as_f64().unwrap();
            assert!(
                (ours - theirs[i]).abs() < 0.005,
                "{task} {field}: {ours} vs the reference's {}",
                theirs[i]
            );
        }
    }
}

/// A copy of the checkpoint whose pickle first calls `os.system` (as a malicious checkpoint
/// would), then goes on as the real one.
fn poisoned_copy(ckpt: &Path, to: &Path, marker: &Path) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(ckpt).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(to).unwrap());
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if name.ends_with("data.pkl") {
            let command = format!("touch {}", marker.display());
            let mut evil = b"\x80\x02cos\nsystem\nX".to_vec();
            evil.extend((command.len() as u32).to_le_bytes());
            evil.extend(command.as_bytes());
            // (command,) → os.system(command), popped; then the original pickle without its
            // protocol header.
            evil.extend(b"\x85R0");
            evil.extend(&bytes[2..]);
            bytes = evil;
        }
        writer.start_file(name, stored).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
}

#[test]
fn a_checkpoint_that_would_run_code_is_refused() {
    let Some(fx) = Fixture::get() else { return };
    let evil = fx.tmp.path().join("evil.ckpt");
    let marker = fx.tmp.path().join("owned");
    poisoned_copy(&fx.ckpt(), &evil, &marker);
    let out = fx.tmp.path().join("never");
    let run = jerex()
        .args(["import-reference", fx.dir.to_str().unwrap(), "-o"])
        .arg(&out)
        .arg("--checkpoint")
        .arg(&evil)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("os.system"), "{stderr}");
    assert!(!marker.exists(), "the pickled command ran");
    assert!(!out.exists(), "nothing is written");
}
