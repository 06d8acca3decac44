//! `jerex train`, `eval` and `tune` end to end on a tiny randomly initialised "pretrained"
//! encoder folder and made-up DocRED-format files, all written to a temporary folder:
//! same seed → same weights, a run stopped by its time budget and resumed ends with exactly the
//! weights of an uninterrupted run, the model folder carries the training summary, evaluation
//! scores a folder (the `jerex eval` JSON with its relation views), and tuning writes
//! thresholds from the grid into `config.json`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tch::nn::VarStore;
use tch::{Device, Kind};

use jerex::corpus::docred::read_docred;
use jerex::device::Precision;
use jerex::encoder::{save_all, BertConfig, BertModel};
use jerex::eval::tune::{grid, Target, TuneArgs};
use jerex::eval::{evaluate_folder, EvalOptions, Scope};
use jerex::model::{JerexModel, ModelConfig, RelationHead};
use jerex::train::data::SplitSpec;
use jerex::train::TrainArgs;

const WORDS: [&str; 16] = [
    "anna", "ben", "clara", "paris", "rome", "oslo", "lima", "was", "born", "in", "lives", "he",
    "she", "acme", "works", "for",
];

/// A BERT WordPiece `tokenizer.json` over [`WORDS`] (lower-casing, BERT pre-tokenizer).
fn write_tokenizer(path: &Path) {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "."]
        .iter()
        .chain(WORDS.iter())
        .enumerate()
    {
        vocab.insert(w.to_string(), json!(i));
    }
    let added: Vec<Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .enumerate()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    });
    std::fs::write(path, tokenizer.to_string()).unwrap();
}

/// A "pretrained" encoder folder: tiny BERT config, random weights, the tokenizer.
fn write_encoder(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = BertConfig::tiny(WORDS.len() as i64 + 5);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let _bert = BertModel::new(vs.root() / "bert", &cfg);
    save_all(&vs, &dir.join("model.safetensors"), Kind::Float).unwrap();
    write_tokenizer(&dir.join("tokenizer.json"));
}

/// A DocRED-format document: "P was born in L . he lives in L2 . [P works for O .]".
fn docred_doc(i: usize) -> Value {
    let people = ["anna", "ben", "clara"];
    let places = ["paris", "rome", "oslo", "lima"];
    let person = people[i % 3];
    let (born, lives) = (places[i % 4], places[(i + 1) % 4]);
    let mut sents = vec![
        vec![person, "was", "born", "in", born, "."],
        vec!["he", "lives", "in", lives, "."],
    ];
    let m = |pos: [usize; 2], sent: usize, t: &str| json!({"name": "", "pos": pos, "sent_id": sent, "type": t});
    let mut vertex = vec![
        json!([m([0, 1], 0, "PER"), m([0, 1], 1, "PER")]),
        json!([m([4, 5], 0, "LOC")]),
        json!([m([3, 4], 1, "LOC")]),
    ];
    let mut labels = vec![
        json!({"h": 0, "t": 1, "r": "P19", "evidence": [0]}),
        json!({"h": 0, "t": 2, "r": "P551", "evidence": [1]}),
    ];
    if i % 2 == 1 {
        sents.push(vec![person, "works", "for", "acme", "."]);
        vertex[0].as_array_mut().unwrap().push(m([0, 1], 2, "PER"));
        vertex.push(json!([m([3, 4], 2, "ORG")]));
        labels.push(json!({"h": 0, "t": 3, "r": "P108", "evidence": [2]}));
    }
    json!({"title": format!("doc {i}"), "sents": sents, "vertexSet": vertex, "labels": labels})
}

fn write_data(path: &Path, docs: usize) {
    let docs: Vec<Value> = (0..docs).map(docred_doc).collect();
    std::fs::write(path, Value::Array(docs).to_string()).unwrap();
}

fn args(root: &Path, output: &str) -> TrainArgs {
    TrainArgs {
        train: vec![],
        partial_relations: vec![],
        validation: None,
        split: Some(SplitSpec {
            path: root.join("data.json"),
            train_docs: 6,
        }),
        rel_info: Some(root.join("rel_info.json")),
        encoder: Some(root.join("encoder")),
        output: root.join(output),
        epochs: 2,
        batch_size: 2,
        lr: 1e-3,
        seed: 7,
        max_minutes: None,
        resume: false,
        device: "cpu".into(),
        precision: Precision::Fp32,
        relation_head: RelationHead::Mrc,
        eval_batch_size: 4,
        // The default model's speed settings, so their code paths are trained here too.
        freeze_word_embeddings: true,
        attention_dropout: Some(0.0),
        // Trained, saved and loaded with the word-shape table, so that path is covered too.
        word_shapes: true,
    }
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    write_encoder(&root.join("encoder"));
    write_data(&root.join("data.json"), 8);
    std::fs::write(
        root.join("rel_info.json"),
        json!({"P19": "place of birth", "P551": "residence", "P108": "employer", "P17": "country"})
            .to_string(),
    )
    .unwrap();
    (tmp, root)
}

#[test]
fn train_resume_eval_and_tune() {
    let (_tmp, root) = setup();

    // An uninterrupted run, and the same run again.
    jerex::train::run(&args(&root, "a")).unwrap();
    jerex::train::run(&args(&root, "b")).unwrap();
    let (a, b) = (root.join("a"), root.join("b"));
    assert_eq!(
        weights(&a.join("checkpoint")),
        weights(&b.join("checkpoint")),
        "same seed, different model"
    );

    // Frozen word embeddings leave training exactly as pretrained; the rest moves.
    let tensor = |path: PathBuf, key: &str| {
        tch::Tensor::read_safetensors(path)
            .unwrap()
            .into_iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    };
    let trained = a.join("model.safetensors");
    let pretrained = root.join("encoder/model.safetensors");
    let word = "bert.embeddings.word_embeddings.weight";
    assert!(tensor(trained.clone(), word).equal(&tensor(pretrained.clone(), word)));
    let query = "bert.encoder.layer.0.attention.self.query.weight";
    assert!(!tensor(trained, query).equal(&tensor(pretrained, query)));

    // The output folder is a model folder with types from the data and rel_info and the summary.
    let config = ModelConfig::load(&a.join("config.json")).unwrap();
    let keys = |ts: &[jerex::model::TypeInfo]| ts.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&config.entity_types), ["LOC", "ORG", "PER"]);
    assert_eq!(keys(&config.relation_types), ["P108", "P17", "P19", "P551"]);
    assert_eq!(config.relation_types[2].name, "place of birth");
    let t = &config.training;
    assert_eq!(t["epochs"], 2);
    assert_eq!(t["steps"], 6);
    assert_eq!(t["train_documents"], 6);
    assert_eq!(t["validation_documents"], 2);
    assert_eq!(t["history"].as_array().unwrap().len(), 2);
    assert!(t["train_docs_per_second"].as_f64().unwrap() > 0.0);
    assert!(t["best_validation"]["gold_input"]["entity"]["f1"].is_number());
    assert!(matches!(t["best_epoch"].as_u64(), Some(1 | 2)));

    // A run whose budget is spent at once stops with a checkpoint; resuming finishes it with the
    // weights of the uninterrupted run.
    let mut stopped = args(&root, "c");
    stopped.max_minutes = Some(0.0);
    jerex::train::run(&stopped).unwrap();
    let c = root.join("c");
    let partial = ModelConfig::load(&c.join("config.json")).unwrap();
    assert_eq!(partial.training["stopped_by_budget"], true);
    assert_eq!(partial.training["epochs"], 0);
    let mut resumed = args(&root, "c");
    resumed.resume = true;
    jerex::train::run(&resumed).unwrap();
    assert_eq!(
        weights(&c.join("checkpoint")),
        weights(&a.join("checkpoint"))
    );

    // Resuming with other settings is refused.
    let mut other = args(&root, "c");
    other.resume = true;
    other.seed = 8;
    assert!(jerex::train::run(&other).is_err());

    // Evaluation of the folder on the validation documents, with relations predicted at the
    // lowest cut-off 0.1.
    let docs = read_docred(&root.join("data.json")).unwrap();
    let scores = evaluate_folder(
        &a,
        &[Device::Cpu],
        Precision::Fp32,
        &Default::default(),
        docs[6..].to_vec(),
        4,
        &EvalOptions {
            cutoffs: vec![0.5, 0.1],
            ..EvalOptions::default()
        },
    )
    .unwrap();
    assert_eq!(scores.documents, 2);
    let gold_mentions = 4 + 6;
    let m = scores.mention;
    assert_eq!(m.tp + m.fn_, gold_mentions as u64);
    // Gold relations: P19 and P551 in both documents, P108 in the second; every argument
    // string differs, so the lenient triples are as many.
    let support = |c: &jerex::eval::Counts| c.tp + c.fn_;
    let per_type: Vec<(&str, u64)> = scores
        .relation_per_type
        .iter()
        .filter(|(_, c)| support(c) > 0)
        .map(|(k, c)| (k.as_str(), support(c)))
        .collect();
    assert_eq!(per_type, [("P108", 1), ("P19", 2), ("P551", 2)]);
    assert_eq!(support(&scores.relation_lenient), 5);
    // The cut-offs with the model's threshold; the point at the threshold is the strict score.
    let threshold = config.thresholds.relation;
    let cutoffs: Vec<f32> = scores.relation_curve.iter().map(|p| p.cutoff).collect();
    assert_eq!(cutoffs, [0.1, 0.5, threshold]);
    let at_threshold = scores.relation_curve.iter().find(|p| p.cutoff == threshold);
    assert_eq!(at_threshold.unwrap().counts, scores.relation);
    for w in scores.relation_curve.windows(2) {
        let predicted = |c: jerex::eval::Counts| c.tp + c.fp;
        assert!(predicted(w[0].counts) >= predicted(w[1].counts));
        assert!(w[0].counts.tp >= w[1].counts.tp);
    }
    // The same scores as the end-to-end part of the trainer's final evaluation, which predicts
    // at the threshold itself.
    let loaded = JerexModel::load(&a, Device::Cpu, Precision::Fp32).unwrap();
    let prepared = jerex::eval::prepare_docs(docs[6..].to_vec(), &loaded.tokenizer, 10);
    let again = jerex::eval::evaluate(&loaded.model, &prepared, 1, Scope::Full).unwrap();
    assert_eq!(
        (again.mention, again.relation),
        (scores.mention, scores.relation)
    );
    assert_eq!(again.gold_input, scores.gold_input);
    assert_eq!(
        t["best_validation"]["relation"]["f1"].as_f64().unwrap(),
        scores.relation.f1()
    );

    // `jerex eval` prints the report's fields, then the relation views.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jerex"))
        .arg("eval")
        .arg("--model")
        .arg(&a)
        .arg("--data")
        .arg(root.join("data.json"))
        .args(["--cutoffs", "0.1,0.5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["documents"], 8);
    let positions: Vec<usize> = [
        "\"gold_input\"",
        "\"seconds\"",
        "\"relation_lenient\"",
        "\"relation_per_type\"",
        "\"relation_pr_curve\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or_else(|| panic!("no {k} in {text}")))
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(report["relation_lenient"]["f1"].is_number());
    assert_eq!(report["relation_per_type"]["P19"]["support"], 8);
    assert_eq!(report["relation_per_type"]["P108"]["support"], 4);
    let curve = report["relation_pr_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 3);
    assert_eq!(curve[0]["cutoff"].as_f64(), Some(0.1));
    let last = &curve[2];
    assert_eq!(last["cutoff"].as_f64().map(|c| c as f32), Some(threshold));
    for k in ["precision", "recall", "f1"] {
        assert_eq!(last[k], report["relation"][k], "{k}");
    }
    let table = String::from_utf8(out.stderr).unwrap();
    assert!(table.contains("(model threshold)"), "{table}");

    // Tuning writes grid values into config.json and keeps the training summary.
    jerex::eval::tune::run(&TuneArgs {
        model: Some(a.clone()),
        data: root.join("data.json"),
        step: 0.25,
        batch_size: 4,
        device: "cpu".into(),
        precision: Precision::Fp32,
        target: Target::F1,
    })
    .unwrap();
    let tuned = ModelConfig::load(&a.join("config.json")).unwrap();
    let values = grid(0.25).unwrap();
    for v in [
        tuned.thresholds.mention,
        tuned.thresholds.coref,
        tuned.thresholds.relation,
    ] {
        assert!(values.contains(&v), "{v} is not on the grid {values:?}");
    }
    let result = &tuned.training["tuning"]["result"];
    assert!(result["passes"].as_u64().unwrap() >= 4);
    assert_eq!(result["target"], "f1");
    assert!(result["relation_precision"].is_number() && result["relation_recall"].is_number());
    assert_eq!(tuned.training["epochs"], 2);
}
