//! A model folder: `config.json` ([`ModelConfig`]), `model.safetensors` (every parameter, named
//! like the reference checkpoint) and `tokenizer.json`. Loading checks that the tokenizer's
//! ids fit the encoder's vocabulary, so no document can index past the embedding table.

use std::path::Path;

use tch::{nn, Device, Kind};

use crate::device::Precision;
use crate::durable::write_atomic;
use crate::encoder::{load_all, save_all, SpecialIds};
use crate::error::{Error, Result};
use crate::model::config::{CorefStrings, ModelConfig};
use crate::model::joint::JerexModel;
use crate::tokenize::WordPieceTokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Everything a model folder holds, ready to run. The VarStore owns the parameters the model's
/// tensors point to (keep it alive; the trainer's optimizer is built from it).
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: JerexModel,
    pub config: ModelConfig,
    pub tokenizer: WordPieceTokenizer,
}

/// The encoder's special ids from the tokenizer.
pub fn special_ids(tokenizer: &WordPieceTokenizer) -> SpecialIds {
    SpecialIds {
        cls: i64::from(tokenizer.cls_id()),
        sep: i64::from(tokenizer.sep_id()),
        pad: i64::from(tokenizer.pad_id()),
    }
}

/// Fails when the tokenizer can produce ids the encoder has no embedding for.
pub fn check_vocab(tokenizer: &WordPieceTokenizer, config: &ModelConfig, dir: &Path) -> Result<()> {
    let vocab = tokenizer.vocab_size() as i64;
    if vocab > config.encoder.vocab_size {
        return Err(Error::Format {
            path: dir.join(TOKENIZER_FILE),
            message: format!(
                "tokenizer has {vocab} ids but the encoder only {} embeddings",
                config.encoder.vocab_size
            ),
        });
    }
    Ok(())
}

impl JerexModel {
    /// Loads a model folder onto `device`; the encoder runs in `precision` (fp32 on CPU).
    pub fn load(dir: &Path, device: Device, precision: Precision) -> Result<LoadedModel> {
        let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
        let tokenizer = WordPieceTokenizer::from_file(&dir.join(TOKENIZER_FILE))?;
        check_vocab(&tokenizer, &config, dir)?;
        let mut vs = nn::VarStore::new(device);
        let mut model = JerexModel::new(&vs.root(), &config, special_ids(&tokenizer), precision)?;
        if config.heads.coref_strings == CorefStrings::DecodedPieces {
            model = model.with_piece_decoder(tokenizer.piece_decoder());
        }
        load_all(&mut vs, &dir.join(WEIGHTS_FILE))?;
        Ok(LoadedModel {
            vs,
            model,
            config,
            tokenizer,
        })
    }

    /// Writes a model folder: `config` as `config.json`, every variable of `vs` as fp32
    /// safetensors, and a copy of `tokenizer_json` (unless it already is the folder's).
    pub fn save(
        dir: &Path,
        vs: &nn::VarStore,
        config: &ModelConfig,
        tokenizer_json: &Path,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(config).map_err(|source| Error::Json {
            path: config_path.clone(),
            source,
        })?;
        write_atomic(&config_path, text.as_bytes())?;
        save_all(vs, &dir.join(WEIGHTS_FILE), Kind::Float)?;
        let target = dir.join(TOKENIZER_FILE);
        let same = match (tokenizer_json.canonicalize(), target.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            let bytes = std::fs::read(tokenizer_json).map_err(|e| Error::io(tokenizer_json, e))?;
            write_atomic(&target, &bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_model_is_found_by_its_config_file() {
        assert_eq!(super::CONFIG_FILE, crate::paths::MODEL_MARKER);
    }
}
