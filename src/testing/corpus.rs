//! What the engine tests feed it: input files, pipeline configurations and job files.

use std::path::{Path, PathBuf};

use tch::Device;

use crate::corpus::Document;
use crate::engine::{PipelineConfig, Unit};
use crate::pipeline::OutputSettings;
use crate::testing::repo_root;
use crate::tools::sample;

/// The committed sample corpus (`data/sample/sample.jsonl`: 40 short news-like documents).
pub fn sample_corpus() -> Vec<Document> {
    sample::read_jsonl(&repo_root().join("data/sample/sample.jsonl")).unwrap()
}

/// Writes documents given as (id, text) as an input Parquet file.
pub fn write_texts(path: &Path, docs: &[(impl AsRef<str>, impl AsRef<str>)]) {
    let docs: Vec<Document> = docs
        .iter()
        .map(|(id, text)| Document {
            id: id.as_ref().to_string(),
            text: Some(text.as_ref().to_string()),
            ..Default::default()
        })
        .collect();
    sample::write_input_parquet(path, &docs).unwrap();
}

/// A prediction run of `units` into `out` in the library: one CPU device, one thread, default
/// batches and checks, zstd Parquet parts of up to a million rows, no progress bar.
pub fn pipeline_config(units: &[Unit], out: &Path) -> PipelineConfig {
    PipelineConfig {
        units: units.to_vec(),
        columns: Default::default(),
        devices: vec![Device::Cpu],
        batch: Default::default(),
        threads: 1,
        output: Some(OutputSettings {
            dir: out.to_path_buf(),
            open: crate::engine::manifest::open_sink,
            format: Default::default(),
            compression: Default::default(),
            rows_per_part: 1_000_000,
        }),
        progress: false,
        checks: Default::default(),
        first_seen: None,
    }
}

/// A job file, built key by key (`"batch.max_docs"` names a key of a table) and written as TOML.
#[derive(Debug, Clone, Default)]
pub struct JobFile {
    table: toml::Table,
}

impl JobFile {
    /// A job reading `inputs` into `output` with the model folder `model`.
    pub fn new(inputs: &[impl AsRef<Path>], output: impl AsRef<Path>, model: &Path) -> JobFile {
        let inputs: Vec<toml::Value> = inputs.iter().map(|p| path_value(p.as_ref())).collect();
        JobFile::default()
            .set("input.paths", inputs)
            .set("output.dir", path_value(output.as_ref()))
            .set("model.dir", path_value(model))
    }

    /// Sets `key` (dotted: `table.key`) to `value`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> JobFile {
        let mut table = &mut self.table;
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().unwrap();
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{part} of {key} is not a table"));
        }
        table.insert(last.to_string(), value.into());
        self
    }

    /// Writes the job to `path` and returns the path.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, toml::to_string(&self.table).unwrap()).unwrap();
        path.to_path_buf()
    }
}

fn path_value(p: &Path) -> toml::Value {
    toml::Value::String(p.to_str().expect("a UTF-8 path").to_string())
}
