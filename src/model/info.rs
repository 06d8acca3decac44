//! The CPU side of a model: what preparing documents and building table rows need, without the
//! weights.

use std::path::Path;

use crate::corpus::Document;
use crate::error::{Error, Result};
use crate::model::{folder, ModelConfig, PreparedDoc};
use crate::tokenize::WordPieceTokenizer;

/// The CPU side of a model: what preparing documents and building tables need.
pub struct ModelInfo {
    pub config: ModelConfig,
    pub tokenizer: WordPieceTokenizer,
    /// Identifies the model in the `documents` table: folder name and a hash of its weights.
    pub model_id: String,
}

impl ModelInfo {
    /// Loads `config.json` and `tokenizer.json` of a model folder. The id hashes
    /// `model.safetensors` when present (a folder without weights can only drive a test backend).
    pub fn load(dir: &Path) -> Result<ModelInfo> {
        let config = ModelConfig::load(&dir.join(folder::CONFIG_FILE))?;
        let tokenizer = WordPieceTokenizer::from_file(&dir.join(folder::TOKENIZER_FILE))?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let weights = dir.join(folder::WEIGHTS_FILE);
        let model_id = if weights.is_file() {
            let file = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
            let mut hasher = blake3::Hasher::new();
            hasher
                .update_reader(std::io::BufReader::with_capacity(1 << 20, file))
                .map_err(|e| Error::io(&weights, e))?;
            format!("{name}@{}", &hasher.finalize().to_hex()[..12])
        } else {
            format!("{name}@no-weights")
        };
        Ok(ModelInfo {
            config,
            tokenizer,
            model_id,
        })
    }

    /// Tokenizes a document and enumerates its candidate spans.
    pub fn prepare(&self, doc: Document) -> PreparedDoc {
        PreparedDoc::new(doc, &self.tokenizer, self.config.heads.max_span_words)
    }
}
