//! Times the parts of one training step on real documents (encoder forward, heads, backward,
//! optimizer) to find where training time goes.
use std::time::Instant;

use jerex::corpus::docred::read_docred;
use jerex::encoder::{load_pretrained, BertConfig};
use jerex::model::folder::special_ids;
use jerex::model::{HeadConfig, JerexModel, ModelConfig, PreparedDoc, Thresholds, WindowConfig};
use jerex::tokenize::WordPieceTokenizer;
use jerex::train::optim::{AdamW, AdamWConfig};
use jerex::train::sample::{sample_document, SamplingConfig};
use rand::SeedableRng;

fn main() -> anyhow::Result<()> {
    let enc = jerex::testing::require_encoder().ok_or_else(|| anyhow::anyhow!("no encoder"))?;
    let docs = read_docred(&jerex::testing::shared_data_dir().join("redocred/dev_revised.json"))?;
    let tok = WordPieceTokenizer::from_file(&enc.join("tokenizer.json"))?;
    let refs: Vec<&jerex::corpus::Document> = docs.iter().collect();
    let (et, rt) = jerex::train::data::collect_types(&refs, None);
    let config = ModelConfig {
        entity_types: et,
        relation_types: rt,
        thresholds: Thresholds::default(),
        heads: HeadConfig::default(),
        window: WindowConfig::default(),
        encoder: BertConfig::load(&enc.join("config.json"))?,
        training: serde_json::Value::Null,
    };
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = JerexModel::new(&vs.root(), &config, special_ids(&tok), Default::default())?;
    load_pretrained(&mut vs, &enc.join("model.safetensors"), "bert.")?;
    let mut opt = AdamW::new(&vs, AdamWConfig::default())?;
    let n: usize = std::env::args().nth(1).map_or(6, |s| s.parse().unwrap());
    let prepared: Vec<PreparedDoc> = docs[..n]
        .iter()
        .map(|d| PreparedDoc::new(d.clone(), &tok, 10))
        .collect();
    let sc = SamplingConfig::for_model(&config);
    for (i, p) in prepared.iter().enumerate() {
        let t0 = Instant::now();
        let s = sample_document(
            &p.doc,
            &config,
            &sc,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(i as u64),
        )?;
        let t1 = Instant::now();
        let ids: Vec<i64> = p.tokens.ids.iter().map(|&x| x as i64).collect();
        let e = model.encoder().encode(&[&ids], true);
        let enc_loss = e.states.sum(tch::Kind::Float);
        let t2 = Instant::now();
        enc_loss.backward();
        let t3 = Instant::now();
        opt.zero_grad();
        let l = model.loss(std::slice::from_ref(p), std::slice::from_ref(&s))?;
        let _ = l.total.double_value(&[]);
        let t4 = Instant::now();
        l.total.backward();
        let t5 = Instant::now();
        opt.clip_grad_norm(1.0);
        opt.step(1e-5);
        let t6 = Instant::now();
        println!(
            "doc {i}: pieces {} spans {} coref {} relpairs {} | sample {:.0}ms enc-fwd {:.0}ms enc-bwd {:.0}ms loss-fwd {:.0}ms loss-bwd {:.0}ms opt {:.0}ms",
            p.tokens.ids.len(), s.spans.len(), s.coref_pairs.len(), s.rel_pairs.len(),
            (t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3, (t3 - t2).as_secs_f64() * 1e3,
            (t4 - t3).as_secs_f64() * 1e3, (t5 - t4).as_secs_f64() * 1e3, (t6 - t5).as_secs_f64() * 1e3
        );
    }
    Ok(())
}
