//! `jerex import-reference`: a reference checkpoint folder → a jerex model folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};

use super::checkpoint::Checkpoint;
use super::pickle::Value;
use crate::device::Precision;
use crate::encoder::BertConfig;
use crate::error::{Error, Result};
use crate::model::folder::{special_ids, CONFIG_FILE, TOKENIZER_FILE};
use crate::model::{
    CorefPairOrder, CorefStrings, Framing, HeadConfig, JerexModel, ModelConfig, RelationHead,
    Thresholds, TypeInfo, WindowConfig,
};
use crate::tokenize::WordPieceTokenizer;

/// `jerex import-reference`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The reference's checkpoint folder: the checkpoint, `config.json` (the encoder) and
    /// `vocab.txt` (the tokenizer), as its training saved them.
    pub dir: PathBuf,
    /// The jerex model folder to write; it must not exist yet (or be empty).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The checkpoint file inside DIR.
    #[arg(long, default_value = "model.ckpt")]
    pub checkpoint: String,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub output: PathBuf,
    pub config: ModelConfig,
    /// State-dict tensors read (every one was mapped or checked).
    pub tensors: usize,
}

/// Runs `jerex import-reference`: the folder, then a summary on stderr.
pub fn run(args: &ImportArgs) -> Result<()> {
    let imported = import(&args.dir.join(&args.checkpoint), &args.dir, &args.output)?;
    let c = &imported.config;
    let t = &c.thresholds;
    eprintln!(
        "imported {} tensors into {}: {} entity types, {} relation types, {} head, \
         thresholds mention {} coref {} relation {} (as trained; override them with \
         --mention-threshold etc. or `jerex tune`)",
        imported.tensors,
        imported.output.display(),
        c.entity_types.len(),
        c.relation_types.len(),
        head_name(c.heads.relation_head),
        t.mention,
        t.coref,
        t.relation
    );
    Ok(())
}

/// Imports checkpoint `ckpt` with the encoder config and vocabulary of `dir` into a new model
/// folder `output`. The folder is assembled beside `output` and renamed into place, so it
/// appears whole or not at all.
pub fn import(ckpt: &Path, dir: &Path, output: &Path) -> Result<Imported> {
    check_output(output)?;
    let checkpoint = Checkpoint::open(ckpt)?;
    let hp = Hyper {
        path: ckpt,
        value: checkpoint
            .root
            .get("hyper_parameters")
            .ok_or_else(|| format_error(ckpt, "no hyper_parameters in the checkpoint".into()))?,
    };
    let config = model_config(&hp, dir)?;

    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".jerex-import")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    let tokenizer_json = staging.path().join(TOKENIZER_FILE);
    WordPieceTokenizer::from_vocab(&dir.join("vocab.txt"), hp.bool("lowercase")?)?
        .save(&tokenizer_json, false)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tokenizer_json.display())))?;
    let tokenizer = WordPieceTokenizer::from_file(&tokenizer_json)?;
    crate::model::folder::check_vocab(&tokenizer, &config, dir)?;

    let vs = nn::VarStore::new(Device::Cpu);
    JerexModel::new(
        &vs.root(),
        &config,
        special_ids(&tokenizer),
        Precision::Fp32,
    )?;
    fill(&vs, &checkpoint)?;
    JerexModel::save(staging.path(), &vs, &config, &tokenizer_json)?;
    let card = model_card(&checkpoint, &config);
    std::fs::write(staging.path().join("README.md"), card)
        .map_err(|e| Error::io(staging.path(), e))?;

    if output.is_dir() {
        // Checked empty above; rename cannot replace a directory.
        std::fs::remove_dir(output).map_err(|e| Error::io(output, e))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, output).map_err(|e| Error::io(output, e))?;
    Ok(Imported {
        output: output.to_path_buf(),
        config,
        tensors: checkpoint.state_dict.len(),
    })
}

fn format_error(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

fn check_output(output: &Path) -> Result<()> {
    if output.exists() {
        let empty = output.is_dir()
            && std::fs::read_dir(output)
                .map_err(|e| Error::io(output, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::Config(format!(
                "{}: already exists; import into a new folder",
                output.display()
            )));
        }
    }
    Ok(())
}

/// The checkpoint's `hyper_parameters`, with errors that name the missing or mistyped key.
struct Hyper<'a> {
    path: &'a Path,
    value: &'a Value,
}

impl Hyper<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.value
            .get(key)
            .ok_or_else(|| format_error(self.path, format!("hyper_parameters has no '{key}'")))
    }

    fn typed<T>(&self, key: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> Result<T> {
        f(self.get(key)?).ok_or_else(|| {
            format_error(self.path, format!("hyper_parameters '{key}' is not {what}"))
        })
    }

    fn int(&self, key: &str) -> Result<i64> {
        self.typed(key, "an integer", Value::as_int)
    }

    fn float(&self, key: &str) -> Result<f64> {
        self.typed(key, "a number", Value::as_float)
    }

    fn bool(&self, key: &str) -> Result<bool> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// `entity_types` / `relation_types`: an ordered dict of the reference's type objects,
    /// whose `_index` is the class index.
    fn types(&self, key: &str) -> Result<Vec<TypeInfo>> {
        let bad = |m: String| format_error(self.path, format!("hyper_parameters '{key}': {m}"));
        let items = self
            .get(key)?
            .as_dict()
            .ok_or_else(|| bad("not a dictionary".into()))?;
        let mut types = Vec::with_capacity(items.len());
        for (k, v) in items {
            let field = |f: &str| v.get(f).ok_or_else(|| bad(format!("a type has no {f}")));
            let index = field("_index")?
                .as_int()
                .ok_or_else(|| bad("_index is not an integer".into()))?;
            let identifier = field("_identifier")?.as_str().or(k.as_str());
            let verbose = field("_verbose_name")?.as_str();
            match (identifier, verbose) {
                (Some(key), Some(name)) => types.push((
                    index,
                    TypeInfo {
                        key: key.to_string(),
                        name: name.to_string(),
                    },
                )),
                _ => return Err(bad("a type's names are not strings".into())),
            }
        }
        types.sort_by_key(|t| t.0);
        if types.iter().enumerate().any(|(i, t)| t.0 != i as i64) {
            return Err(bad("the type indices are not 0..n".into()));
        }
        Ok(types.into_iter().map(|t| t.1).collect())
    }
}

/// The model configuration that reproduces the reference's inference for this checkpoint.
fn model_config(hp: &Hyper, dir: &Path) -> Result<ModelConfig> {
    let relation_head =
        match hp.typed("model_type", "a string", |v| v.as_str().map(String::from))? {
            t if t == "joint_multi_instance" => RelationHead::Mrc,
            t if t == "joint_global" => RelationHead::Grc,
            other => {
                return Err(format_error(
                    hp.path,
                    format!(
                        "model_type '{other}' is a single-task model; only the joint models \
                     (joint_multi_instance, joint_global) can be imported"
                    ),
                ))
            }
        };
    let count = |key: &str| -> Result<i64> {
        let n = hp.int(key)?;
        if n < 1 {
            return Err(format_error(
                hp.path,
                format!("hyper_parameters '{key}' is {n}"),
            ));
        }
        Ok(n)
    };
    let positions = count("position_embeddings_count")?;
    let mut encoder = BertConfig::load(&dir.join(CONFIG_FILE))?;
    // As the reference builds its encoder: the position table grown to the configured count.
    encoder.max_position_embeddings = encoder.max_position_embeddings.max(positions);
    let threshold = |key: &str| -> Result<f32> { Ok(hp.float(key)? as f32) };
    let max_len = positions as usize;
    Ok(ModelConfig {
        entity_types: hp.types("entity_types")?,
        relation_types: hp.types("relation_types")?,
        thresholds: Thresholds {
            mention: threshold("mention_threshold")?,
            coref: threshold("coref_threshold")?,
            relation: threshold("rel_threshold")?,
        },
        heads: HeadConfig {
            relation_head,
            meta_embedding_size: count("meta_embedding_size")?,
            max_span_words: count("max_span_size")? as usize,
            size_embeddings: count("size_embeddings_count")?,
            ed_embeddings: count("ed_embeddings_count")?,
            token_distance_embeddings: count("token_dist_embeddings_count")?,
            sentence_distance_embeddings: count("sentence_dist_embeddings_count")?,
            dropout: hp.float("prop_drop")?,
            coref_pair_order: CorefPairOrder::Candidate,
            coref_strings: CorefStrings::DecodedPieces,
            word_shapes: false,
            long_documents: Default::default(),
        },
        // The reference encodes a whole document in one pass; only documents longer than its
        // positions (which crash the reference) are windowed.
        window: WindowConfig {
            max_len,
            overlap: WindowConfig::default().overlap.min(max_len / 4),
            framing: Framing::None,
        },
        encoder,
        training: serde_json::json!({
            "source": "imported from a checkpoint of the reference implementation (lavis-nlp/jerex)",
            "lowercase": hp.bool("lowercase")?,
        }),
    })
}

/// Copies every state-dict tensor into its variable, or fails listing every tensor that has no
/// variable or the wrong shape and every variable left unfilled.
fn fill(vs: &nn::VarStore, checkpoint: &Checkpoint) -> Result<()> {
    let variables = vs.variables();
    let mut filled = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, tensor) in &checkpoint.state_dict {
        let Some(key) = name.strip_prefix("model.") else {
            problems.push(format!("'{name}' is not under 'model.'"));
            continue;
        };
        if key == "bert.embeddings.position_ids" {
            // A constant buffer: positions 0..n, which the encoder computes itself.
            let n = tensor.numel() as i64;
            let expected = Tensor::arange(n, (Kind::Int64, Device::Cpu)).view([1, n]);
            if tensor.kind() != Kind::Int64 || !tensor.equal(&expected) {
                problems.push(format!("'{name}' is not the positions 0..{n}"));
            }
            continue;
        }
        match variables.get(key) {
            None => problems.push(format!("'{name}' has no counterpart in a jerex model")),
            Some(var) if var.size() != tensor.size() => problems.push(format!(
                "'{name}' has shape {:?}, the model expects {:?}",
                tensor.size(),
                var.size()
            )),
            Some(var) => {
                tch::no_grad(|| var.shallow_clone().copy_(&tensor.to_kind(var.kind())));
                filled.insert(key.to_string());
            }
        }
    }
    for name in variables.keys() {
        if !filled.contains(name) {
            problems.push(format!("no tensor for the model's 'model.{name}'"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Weights {
            path: checkpoint.path.clone(),
            message: problems.join("; "),
        })
    }
}

fn head_name(head: RelationHead) -> &'static str {
    match head {
        RelationHead::Mrc => "multi-instance (MRC)",
        RelationHead::Grc => "global (GRC)",
    }
}

fn model_card(checkpoint: &Checkpoint, config: &ModelConfig) -> String {
    let int = |key: &str| {
        checkpoint
            .root
            .get(key)
            .and_then(Value::as_int)
            .map_or("unknown".to_string(), |v| v.to_string())
    };
    let t = &config.thresholds;
    format!(
        "# Imported reference checkpoint\n\n\
         Converted by `jerex import-reference` from `{file}` (epoch {epoch}, global step {step}), \
         a checkpoint of the reference implementation of JEREX (lavis-nlp/jerex).\n\n\
         - Encoder: BERT, {layers} layers, hidden size {hidden}, {positions} positions; \
         documents are encoded without `[CLS]`/`[SEP]`, as the reference does.\n\
         - {n_et} entity types, {n_rt} relation types ({head} relation head).\n\
         - Thresholds from the checkpoint's hyper-parameters: mention {m}, coreference {c}, \
         relation {r}. The reference's test defaults are 0.85 / 0.85 / 0.6; override with \
         `--mention-threshold` etc. or tune them with `jerex tune`.\n\n\
         Scores: run `jerex eval --model THIS_FOLDER --data FILE` on labelled documents.\n",
        file = checkpoint
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        epoch = int("epoch"),
        step = int("global_step"),
        layers = config.encoder.num_hidden_layers,
        hidden = config.encoder.hidden_size,
        positions = config.window.max_len,
        n_et = config.entity_types.len(),
        n_rt = config.relation_types.len(),
        head = head_name(config.heads.relation_head),
        m = t.mention,
        c = t.coref,
        r = t.relation,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::SpecialIds;

    fn tiny() -> (nn::VarStore, Checkpoint) {
        let config = ModelConfig {
            entity_types: vec![TypeInfo {
                key: "PER".into(),
                name: "person".into(),
            }],
            relation_types: vec![TypeInfo {
                key: "P1".into(),
                name: "one".into(),
            }],
            thresholds: Thresholds::default(),
            heads: HeadConfig::default(),
            window: WindowConfig::default(),
            encoder: BertConfig::tiny(50),
            training: serde_json::Value::Null,
        };
        let config = ModelConfig {
            window: WindowConfig {
                max_len: 128,
                overlap: 32,
                framing: Framing::None,
            },
            ..config
        };
        let specials = SpecialIds {
            cls: 1,
            sep: 2,
            pad: 0,
        };
        let source = nn::VarStore::new(Device::Cpu);
        JerexModel::new(&source.root(), &config, specials, Precision::Fp32).unwrap();
        let mut state_dict: Vec<(String, Tensor)> = source
            .variables()
            .into_iter()
            .map(|(name, t)| (format!("model.{name}"), t.detach().copy()))
            .collect();
        state_dict.sort_by(|a, b| a.0.cmp(&b.0));
        state_dict.push((
            "model.bert.embeddings.position_ids".into(),
            Tensor::arange(128, (Kind::Int64, Device::Cpu)).view([1, 128]),
        ));
        let target = nn::VarStore::new(Device::Cpu);
        JerexModel::new(&target.root(), &config, specials, Precision::Fp32).unwrap();
        let checkpoint = Checkpoint {
            path: "model.ckpt".into(),
            root: Value::None,
            state_dict,
        };
        (target, checkpoint)
    }

    fn fill_error(vs: &nn::VarStore, checkpoint: &Checkpoint) -> String {
        fill(vs, checkpoint).unwrap_err().to_string()
    }

    #[test]
    fn fills_every_variable_from_the_state_dict() {
        let (vs, checkpoint) = tiny();
        fill(&vs, &checkpoint).unwrap();
        let vars = vs.variables();
        for (name, tensor) in &checkpoint.state_dict {
            if let Some(var) = vars.get(name.trim_start_matches("model.")) {
                assert!(var.equal(tensor), "{name}");
            }
        }
    }

    #[test]
    fn unmapped_mis_shaped_and_missing_tensors_are_named() {
        let (vs, mut checkpoint) = tiny();
        let removed = checkpoint.state_dict.remove(0).0;
        checkpoint.state_dict.push((
            "model.pooler.dense.weight".into(),
            Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)),
        ));
        let (name, t) = checkpoint
            .state_dict
            .iter_mut()
            .find(|(n, _)| n.ends_with("rel_classifier.weight"))
            .unwrap();
        *t = Tensor::zeros([7, 3], (Kind::Float, Device::Cpu));
        let name = name.clone();
        let e = fill_error(&vs, &checkpoint);
        assert!(
            e.contains("'model.pooler.dense.weight' has no counterpart"),
            "{e}"
        );
        assert!(e.contains(&format!("'{name}' has shape [7, 3]")), "{e}");
        assert!(
            e.contains(&format!("no tensor for the model's '{removed}'")),
            "{e}"
        );

        let (vs, mut checkpoint) = tiny();
        let last = checkpoint.state_dict.len() - 1;
        checkpoint.state_dict[last].1 = Tensor::zeros([1, 128], (Kind::Int64, Device::Cpu));
        let e = fill_error(&vs, &checkpoint);
        assert!(
            e.contains("position_ids' is not the positions 0..128"),
            "{e}"
        );
    }
}
