//! Fixtures shared by the integration tests: type inventories and tiny randomly initialised
//! models saved as model folders. Each test crate uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use jerex::device::Precision;
use jerex::model::{folder, JerexModel, ModelConfig, Thresholds, TypeInfo, WindowConfig};
use jerex::tokenize::WordPieceTokenizer;

/// Types with these keys (named `"{key} name"`).
pub fn types(keys: &[&str]) -> Vec<TypeInfo> {
    keys.iter()
        .map(|k| TypeInfo {
            key: k.to_string(),
            name: format!("{k} name"),
        })
        .collect()
}

/// `n` types keyed `{prefix}0`, `{prefix}1`, ...
pub fn numbered_types(prefix: &str, n: usize) -> Vec<TypeInfo> {
    (0..n)
        .map(|i| TypeInfo {
            key: format!("{prefix}{i}"),
            name: format!("{prefix} type {i}"),
        })
        .collect()
}

/// The configuration of a tiny encoder (`BertConfig::tiny`) over `vocab` word pieces with the
/// given types and thresholds.
pub fn tiny_config(
    vocab: i64,
    entity_types: Vec<TypeInfo>,
    relation_types: Vec<TypeInfo>,
    thresholds: Thresholds,
    window: WindowConfig,
) -> ModelConfig {
    ModelConfig {
        entity_types,
        relation_types,
        thresholds,
        heads: Default::default(),
        window,
        encoder: jerex::encoder::BertConfig::tiny(vocab),
        training: serde_json::Value::Null,
    }
}

/// Windows of 64 pieces: the tiny encoder has 128 positions, and longer documents are encoded
/// in several windows.
pub const TINY_WINDOW: WindowConfig = WindowConfig {
    max_len: 64,
    overlap: 16,
    framing: jerex::model::Framing::ClsSep,
};

/// A tiny model's configuration with the tokenizer's vocabulary and [`TINY_WINDOW`].
pub fn tiny_config_for(
    tokenizer_json: &Path,
    entity_types: Vec<TypeInfo>,
    relation_types: Vec<TypeInfo>,
    thresholds: Thresholds,
) -> ModelConfig {
    let tokenizer = WordPieceTokenizer::from_file(tokenizer_json).unwrap();
    tiny_config(
        tokenizer.vocab_size() as i64,
        entity_types,
        relation_types,
        thresholds,
        TINY_WINDOW,
    )
}

/// Saves a model with `config` and weights drawn from `seed` as `dir/name`.
///
/// BERT's N(0, 0.02) init puts every mention probability within a hair of 0.5; `mention_spread`
/// multiplies the mention classifier's weights so that a threshold above 0.5 keeps a few
/// percent of the candidates (1.0 leaves them as drawn).
pub fn save_tiny_model(
    dir: &Path,
    name: &str,
    config: &ModelConfig,
    tokenizer_json: &Path,
    seed: i64,
    mention_spread: f64,
) -> PathBuf {
    tch::manual_seed(seed);
    let tokenizer = WordPieceTokenizer::from_file(tokenizer_json).unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let specials = folder::special_ids(&tokenizer);
    JerexModel::new(&vs.root(), config, specials, Precision::Fp32).unwrap();
    tch::no_grad(|| {
        let mut w = vs
            .variables()
            .remove("mention_localization.mention_classifier.weight")
            .unwrap();
        let wider = &w * mention_spread;
        w.copy_(&wider);
    });
    let out = dir.join(name);
    JerexModel::save(&out, &vs, config, tokenizer_json).unwrap();
    out
}

/// `.venv/bin/python` when it can import `modules` (e.g. `"pyarrow, duckdb"`); CI must have them
/// (scripts/requirements.txt), so there a missing one fails the test instead of skipping it.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let python = jerex::paths::repo_root().join(".venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    match (ok, jerex::paths::under_ci()) {
        (true, _) => Some(python),
        (false, true) => panic!("CI needs {modules} in .venv (scripts/requirements.txt)"),
        (false, false) => {
            eprintln!("skipping: .venv/bin/python cannot import {modules}");
            None
        }
    }
}
