//! The encoder: parity with PyTorch `transformers` on the pretrained weights, batching and
//! windowing invariants on tiny random encoders, and weight loading errors.

use std::path::Path;
use std::time::Instant;

use jerex::device::Precision;
use jerex::encoder::{
    load_all, load_pretrained, plan_windows, save_all, BertConfig, BertModel, Encoder, SpecialIds,
};
use jerex::model::WindowConfig;
use jerex::testing::require_encoder;
use jerex::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn, Device, Kind, Tensor};

const TINY_VOCAB: i64 = 100;
/// Fits the tiny encoder's 128 positions.
const TINY_WINDOW: WindowConfig = WindowConfig {
    max_len: 64,
    overlap: 16,
    framing: jerex::model::Framing::ClsSep,
};
const TINY_SPECIALS: SpecialIds = SpecialIds {
    cls: 1,
    sep: 2,
    pad: 0,
};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    if a.numel() == 0 {
        return 0.0;
    }
    (a - b).abs().max().double_value(&[])
}

fn random_ids(rng: &mut ChaCha8Rng, len: usize, lo: i64, hi: i64) -> Vec<i64> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

fn tiny_encoder(seed: i64, window: WindowConfig) -> (nn::VarStore, Encoder) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(
        vs.root() / "bert",
        &BertConfig::tiny(TINY_VOCAB),
        TINY_SPECIALS,
        window,
        Precision::Fp32,
    )
    .unwrap();
    (vs, enc)
}

/// `[CLS] ids [SEP]` through the bare model in one pass; rows of the pieces only.
fn single_pass(bert: &BertModel, specials: SpecialIds, ids: &[i64]) -> Tensor {
    let mut seq = vec![specials.cls];
    seq.extend_from_slice(ids);
    seq.push(specials.sep);
    let n = seq.len() as i64;
    let input = Tensor::from_slice(&seq).view([1, n]);
    let mask = Tensor::ones([1, n], (Kind::Int64, Device::Cpu));
    bert.forward_t(&input, &mask, false)
        .squeeze_dim(0)
        .narrow(0, 1, n - 2)
}

struct Fixture {
    ids: Tensor,
    mask: Tensor,
    hidden: Tensor,
}

fn read_fixture() -> Fixture {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/encoder_parity.safetensors");
    let named = Tensor::read_safetensors(&path).expect("run scripts/make_encoder_fixture.py");
    let get = |name: &str| {
        named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .unwrap_or_else(|| panic!("fixture lacks {name}"))
    };
    Fixture {
        ids: get("input_ids"),
        mask: get("attention_mask"),
        hidden: get("last_hidden_state"),
    }
}

/// The pretrained encoder with its weights, or None (skip) when it is not installed.
fn pretrained(window: WindowConfig) -> Option<(nn::VarStore, Encoder, SpecialIds)> {
    let dir = require_encoder()?;
    let cfg = BertConfig::load(&dir.join("config.json")).unwrap();
    let fx = read_fixture();
    let n0 = fx.mask.get(0).sum(Kind::Int64).int64_value(&[]);
    let specials = SpecialIds {
        cls: fx.ids.int64_value(&[0, 0]),
        sep: fx.ids.int64_value(&[0, n0 - 1]),
        pad: cfg.pad_token_id,
    };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let enc = Encoder::new(vs.root() / "bert", &cfg, specials, window, Precision::Fp32).unwrap();
    load_pretrained(&mut vs, &dir.join("model.safetensors"), "bert.").unwrap();
    Some((vs, enc, specials))
}

#[test]
fn matches_transformers_on_pretrained_weights() {
    let Some((_vs, enc, _)) = pretrained(WindowConfig::default()) else {
        return;
    };
    let fx = read_fixture();
    let _guard = tch::no_grad_guard();

    // The padded batch at once; padded positions carry no meaning and are not compared.
    let out = enc.bert.forward_t(&fx.ids, &fx.mask, false);
    let real = fx.mask.unsqueeze(-1).to_kind(Kind::Float);
    let batch_diff = max_abs_diff(&(&out * &real), &(&fx.hidden * &real));

    // Each sentence alone through the windowed encoder, from pieces without specials.
    let rows = fx.ids.size()[0];
    let mut docs = Vec::new();
    let mut lens = Vec::new();
    for b in 0..rows {
        let n = fx.mask.get(b).sum(Kind::Int64).int64_value(&[]);
        docs.push(Vec::<i64>::try_from(fx.ids.get(b).narrow(0, 1, n - 2)).unwrap());
        lens.push(n);
    }
    let doc_refs: Vec<&[i64]> = docs.iter().map(Vec::as_slice).collect();
    let encoded = enc.encode(&doc_refs, false);
    let mut encode_diff: f64 = 0.0;
    for (b, &n) in lens.iter().enumerate() {
        let ours = encoded.states.narrow(0, encoded.offsets[b] as i64, n - 2);
        let theirs = fx.hidden.get(b as i64).narrow(0, 1, n - 2);
        encode_diff = encode_diff.max(max_abs_diff(&ours, &theirs));
    }
    println!(
        "max abs diff vs transformers: padded batch {batch_diff:.3e}, encode {encode_diff:.3e}"
    );
    assert!(batch_diff < 1e-4, "padded batch differs by {batch_diff}");
    assert!(encode_diff < 1e-4, "encode differs by {encode_diff}");
}

#[test]
fn batched_encoding_equals_one_document_at_a_time() {
    let (_vs, enc) = tiny_encoder(
        1,
        WindowConfig {
            max_len: 40,
            overlap: 10,
            framing: jerex::model::Framing::ClsSep,
        },
    );
    // A small budget forces several passes mixing documents and windows of different lengths.
    let enc = enc.with_max_batch_tokens(120);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let docs: Vec<Vec<i64>> = [5, 38, 1, 0, 90, 17, 38, 64]
        .iter()
        .map(|&n| random_ids(&mut rng, n, 3, TINY_VOCAB))
        .collect();
    let refs: Vec<&[i64]> = docs.iter().map(Vec::as_slice).collect();
    let _guard = tch::no_grad_guard();
    let all = enc.encode(&refs, false);
    assert!(all.passes.len() > 1);
    assert_eq!(all.offsets.len(), docs.len() + 1);
    assert_eq!(all.states.size(), [*all.offsets.last().unwrap() as i64, 32]);
    for (i, doc) in refs.iter().enumerate() {
        let alone = enc.encode(&[doc], false);
        let rows = all.states.narrow(
            0,
            all.offsets[i] as i64,
            (all.offsets[i + 1] - all.offsets[i]) as i64,
        );
        let diff = max_abs_diff(&rows, &alone.states);
        assert!(
            diff <= 1e-5,
            "document {i}: batched vs alone differ by {diff}"
        );
    }
}

#[test]
fn windowed_equals_single_pass_when_document_fits() {
    let (_vs, enc) = tiny_encoder(
        2,
        WindowConfig {
            max_len: 40,
            overlap: 10,
            framing: jerex::model::Framing::ClsSep,
        },
    );
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let _guard = tch::no_grad_guard();
    for len in [1, 20, 38] {
        let doc = random_ids(&mut rng, len, 3, TINY_VOCAB);
        let windowed = enc.encode(&[&doc], false);
        let single = single_pass(&enc.bert, TINY_SPECIALS, &doc);
        assert_eq!(windowed.passes, vec![(1, len + 2)]);
        assert_eq!(max_abs_diff(&windowed.states, &single), 0.0, "len {len}");
    }
}

#[test]
fn unframed_windows_encode_the_bare_pieces() {
    let window = WindowConfig {
        max_len: 40,
        overlap: 10,
        framing: jerex::model::Framing::None,
    };
    let (_vs, enc) = tiny_encoder(3, window);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let _guard = tch::no_grad_guard();
    // A document of exactly the window's positions is one pass over its pieces alone, batched
    // with a shorter one (padding must not leak).
    let docs: Vec<Vec<i64>> = [40, 7]
        .iter()
        .map(|&n| random_ids(&mut rng, n, 3, TINY_VOCAB))
        .collect();
    let refs: Vec<&[i64]> = docs.iter().map(Vec::as_slice).collect();
    let batch = enc.encode(&refs, false);
    assert_eq!(batch.passes, vec![(2, 40)]);
    for (i, doc) in docs.iter().enumerate() {
        let n = doc.len() as i64;
        let input = Tensor::from_slice(doc).view([1, n]);
        let mask = Tensor::ones([1, n], (Kind::Int64, Device::Cpu));
        let bare = enc.bert.forward_t(&input, &mask, false).squeeze_dim(0);
        let rows = batch.states.narrow(0, batch.offsets[i] as i64, n);
        let diff = max_abs_diff(&rows, &bare);
        assert!(diff <= 1e-5, "document {i} differs by {diff}");
    }
    // One piece more than the positions: two windows of 40 pieces each, every piece kept once.
    let long = random_ids(&mut rng, 41, 3, TINY_VOCAB);
    let out = enc.encode(&[&long], false);
    assert_eq!(out.passes, vec![(2, 40)]);
    assert_eq!(out.states.size(), [41, 32]);
}

#[test]
fn word_shapes_add_their_rows_to_the_input_embeddings() {
    let (_vs, enc) = tiny_encoder(4, TINY_WINDOW);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let _guard = tch::no_grad_guard();
    let doc = random_ids(&mut rng, 100, 3, TINY_VOCAB);
    let shapes: Vec<i64> = (0..100).map(|i| 1 + i % 6).collect();
    let plain = enc.encode(&[&doc], false);
    // A zero table (as training starts) changes nothing; a learned one changes the states.
    let zero = enc.with_shape_embeddings(Tensor::zeros([7, 32], (Kind::Float, Device::Cpu)));
    let shaped = zero.encode_shaped(&[&doc], Some(&[&shapes]), false);
    assert_eq!(max_abs_diff(&plain.states, &shaped.states), 0.0);
    let learned = zero.with_shape_embeddings(Tensor::randn([7, 32], (Kind::Float, Device::Cpu)));
    let shaped = learned.encode_shaped(&[&doc], Some(&[&shapes]), false);
    assert!(max_abs_diff(&plain.states, &shaped.states) > 0.1);
    // Windows keep each piece's shape: a short document alone matches its direct forward.
    let short = &doc[..20];
    let out = learned.encode_shaped(&[short], Some(&[&shapes[..20]]), false);
    let mut seq = vec![TINY_SPECIALS.cls];
    seq.extend_from_slice(short);
    seq.push(TINY_SPECIALS.sep);
    let mut seq_shapes = vec![0i64];
    seq_shapes.extend_from_slice(&shapes[..20]);
    seq_shapes.push(0);
    let n = seq.len() as i64;
    let extra = learned
        .shape_table()
        .unwrap()
        .index_select(0, &Tensor::from_slice(&seq_shapes))
        .view([1, n, 32]);
    let direct = learned
        .bert
        .forward_in(
            &Tensor::from_slice(&seq).view([1, n]),
            &Tensor::ones([1, n], (Kind::Int64, Device::Cpu)),
            Some(&extra),
            false,
            Kind::Float,
        )
        .squeeze_dim(0)
        .narrow(0, 1, n - 2);
    assert!(max_abs_diff(&out.states, &direct) <= 1e-5);
}

#[test]
fn reduced_precision_stays_close_and_masks_padding_safely() {
    let (_vs, enc) = tiny_encoder(10, TINY_WINDOW);
    let mut rng = ChaCha8Rng::seed_from_u64(16);
    // Two rows, the second padded: half-precision masking must not turn padding into NaN.
    let mut ids = random_ids(&mut rng, 24, 3, TINY_VOCAB);
    ids[18..].fill(TINY_SPECIALS.pad);
    let ids = Tensor::from_slice(&ids).view([2, 12]);
    let mask = ids.ne(TINY_SPECIALS.pad).to_kind(Kind::Int64);
    let real = mask.unsqueeze(-1).to_kind(Kind::Float);
    let _guard = tch::no_grad_guard();
    let full = enc.bert.forward_t(&ids, &mask, false);
    for kind in [Kind::BFloat16, Kind::Half] {
        let reduced = enc.bert.forward_in(&ids, &mask, None, false, kind);
        assert_eq!(reduced.kind(), Kind::Float);
        assert!(
            bool::try_from(reduced.isfinite().all()).unwrap(),
            "{kind:?}"
        );
        let diff = max_abs_diff(&(&reduced * &real), &(&full * &real));
        assert!(diff < 0.1, "{kind:?} differs from fp32 by {diff}");
    }
}

#[test]
fn long_document_is_encoded_in_bounded_windows() {
    let window = WindowConfig {
        max_len: 34,
        overlap: 8,
        framing: jerex::model::Framing::ClsSep,
    };
    let budget = 256;
    let (_vs, enc) = tiny_encoder(3, window);
    let enc = enc.with_max_batch_tokens(budget);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // About 5,000 words' worth of word pieces.
    let doc = random_ids(&mut rng, 6500, 3, TINY_VOCAB);
    let _guard = tch::no_grad_guard();
    let out = enc.encode(&[&doc], false);
    assert_eq!(out.states.size(), [6500, 32]);
    assert_eq!(out.offsets, vec![0, 6500]);
    assert!(bool::try_from(out.states.isfinite().all()).unwrap());
    assert!(out.passes.iter().all(|&(rows, len)| rows * len <= budget));
    let windows = plan_windows(doc.len(), &window);
    assert_eq!(out.passes.iter().map(|p| p.0).sum::<usize>(), windows.len());
    // Rows come from the window that keeps them, at the right place.
    for w in [
        windows[0],
        windows[windows.len() / 2],
        windows[windows.len() - 1],
    ] {
        let alone = single_pass(&enc.bert, TINY_SPECIALS, &doc[w.start..w.end]);
        let kept = alone.narrow(
            0,
            (w.keep_start - w.start) as i64,
            (w.keep_end - w.keep_start) as i64,
        );
        let got = out
            .states
            .narrow(0, w.keep_start as i64, (w.keep_end - w.keep_start) as i64);
        assert!(max_abs_diff(&kept, &got) <= 1e-5, "window {w:?}");
    }
}

#[test]
fn long_document_on_pretrained_encoder() {
    let Some((_vs, enc, _)) = pretrained(WindowConfig::default()) else {
        return;
    };
    let enc = enc.with_max_batch_tokens(2048);
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let doc = random_ids(&mut rng, 2600, 1000, 30000);
    let _guard = tch::no_grad_guard();
    let start = Instant::now();
    let out = enc.encode(&[&doc], false);
    println!(
        "2600 pieces in {} passes: {:.2}s",
        out.passes.len(),
        start.elapsed().as_secs_f64()
    );
    assert_eq!(out.states.size(), [2600, 384]);
    assert!(bool::try_from(out.states.isfinite().all()).unwrap());
    assert!(out.passes.iter().all(|&(rows, len)| rows * len <= 2048));
}

#[test]
fn training_mode_applies_dropout_and_passes_gradients() {
    let (vs, enc) = tiny_encoder(
        4,
        WindowConfig {
            max_len: 20,
            overlap: 4,
            framing: jerex::model::Framing::ClsSep,
        },
    );
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    let docs = [
        random_ids(&mut rng, 50, 3, TINY_VOCAB),
        random_ids(&mut rng, 7, 3, TINY_VOCAB),
    ];
    let refs: Vec<&[i64]> = docs.iter().map(Vec::as_slice).collect();
    let eval = tch::no_grad(|| {
        (
            enc.encode(&refs, false).states,
            enc.encode(&refs, false).states,
        )
    });
    assert_eq!(max_abs_diff(&eval.0, &eval.1), 0.0);
    let train = enc.encode(&refs, true);
    assert!(
        max_abs_diff(&train.states, &eval.0) > 0.0,
        "dropout inactive in training"
    );
    train.states.sum(Kind::Float).backward();
    let vars = vs.variables();
    let grad = vars["bert.encoder.layer.1.attention.self.query.weight"].grad();
    assert!(grad.defined() && grad.abs().sum(Kind::Float).double_value(&[]) > 0.0);
}

#[test]
fn save_and_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, enc) = tiny_encoder(5, TINY_WINDOW);
    let doc = [5i64, 6, 7, 8];
    let expected = tch::no_grad(|| enc.encode(&[&doc], false).states);

    // fp32 storage, strict load: identical outputs.
    let fp32 = dir.path().join("model.safetensors");
    save_all(&vs, &fp32, Kind::Float).unwrap();
    let (mut vs2, enc2) = tiny_encoder(6, TINY_WINDOW);
    load_all(&mut vs2, &fp32).unwrap();
    let got = tch::no_grad(|| enc2.encode(&[&doc], false).states);
    assert_eq!(max_abs_diff(&expected, &got), 0.0);

    // fp16 storage loads into fp32 variables, rounded to half precision.
    let fp16 = dir.path().join("half.safetensors");
    save_all(&vs, &fp16, Kind::Half).unwrap();
    assert!(std::fs::metadata(&fp16).unwrap().len() < std::fs::metadata(&fp32).unwrap().len());
    let (mut vs3, _) = tiny_encoder(7, TINY_WINDOW);
    load_all(&mut vs3, &fp16).unwrap();
    let name = "bert.encoder.layer.0.intermediate.dense.weight";
    let (a, b) = (&vs.variables()[name], &vs3.variables()[name]);
    assert_eq!(b.kind(), Kind::Float);
    assert_eq!(
        max_abs_diff(&a.to_kind(Kind::Half).to_kind(Kind::Float), b),
        0.0
    );
}

fn weights_message(err: Error) -> String {
    match err {
        Error::Weights { message, .. } => message,
        other => panic!("expected a weights error, got {other}"),
    }
}

#[test]
fn pretrained_keys_with_or_without_bert_prefix() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(8);
    let cfg = BertConfig::tiny(TINY_VOCAB);
    // A bare BertModel checkpoint (no prefix) plus the pooler and position_ids, as HF saves it.
    let bare = nn::VarStore::new(Device::Cpu);
    let _model = BertModel::new(bare.root(), &cfg);
    let mut named: Vec<(String, Tensor)> = bare.variables().into_iter().collect();
    named.push((
        "pooler.dense.weight".into(),
        Tensor::zeros([32, 32], (Kind::Float, Device::Cpu)),
    ));
    named.push((
        "embeddings.position_ids".into(),
        Tensor::arange(128, (Kind::Int64, Device::Cpu)).view([1, 128]),
    ));
    let bare_file = dir.path().join("bare.safetensors");
    Tensor::write_safetensors(&named, &bare_file).unwrap();
    // The same weights under `bert.`, as a task model saves them, plus its MLM head.
    let prefixed: Vec<(String, Tensor)> = named
        .iter()
        .map(|(n, t)| (format!("bert.{n}"), t.shallow_clone()))
        .chain([(
            "cls.predictions.bias".to_string(),
            Tensor::zeros([TINY_VOCAB], (Kind::Float, Device::Cpu)),
        )])
        .collect();
    let prefixed_file = dir.path().join("prefixed.safetensors");
    Tensor::write_safetensors(&prefixed, &prefixed_file).unwrap();

    let key = "encoder.layer.1.output.dense.weight";
    for file in [&bare_file, &prefixed_file] {
        let mut vs = nn::VarStore::new(Device::Cpu);
        let _bert = BertModel::new(vs.root() / "bert", &cfg);
        // A head outside the prefix is neither filled nor reported.
        let head = (vs.root() / "head").var("weight", &[3], nn::Init::Const(7.0));
        load_pretrained(&mut vs, file, "bert.").unwrap();
        let loaded = &vs.variables()[&format!("bert.{key}")];
        assert_eq!(max_abs_diff(loaded, &bare.variables()[key]), 0.0);
        assert_eq!(head.sum(Kind::Float).double_value(&[]), 21.0);
    }
}

#[test]
fn weight_errors_name_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let (vs, _enc) = tiny_encoder(9, TINY_WINDOW);
    let file = dir.path().join("tiny.safetensors");
    save_all(&vs, &file, Kind::Float).unwrap();

    // One more layer and a wider feed-forward than the file: missing and mismatched tensors.
    let mut cfg = BertConfig::tiny(TINY_VOCAB);
    cfg.num_hidden_layers = 3;
    cfg.intermediate_size = 48;
    let mut bigger = nn::VarStore::new(Device::Cpu);
    let _bert = BertModel::new(bigger.root() / "bert", &cfg);
    let before = bigger.variables()["bert.embeddings.word_embeddings.weight"].copy();
    let msg = weights_message(load_pretrained(&mut bigger, &file, "bert.").unwrap_err());
    assert!(msg.contains("missing"), "{msg}");
    assert!(
        msg.contains("encoder.layer.2.attention.self.query.weight"),
        "{msg}"
    );
    assert!(msg.contains("shape mismatch"), "{msg}");
    assert!(
        msg.contains(
            "bert.encoder.layer.0.intermediate.dense.weight (file [64, 32], model [48, 32])"
        ),
        "{msg}"
    );
    // A failed load changes nothing.
    let after = &bigger.variables()["bert.embeddings.word_embeddings.weight"];
    assert_eq!(max_abs_diff(&before, after), 0.0);

    // Strict load: the model lacks a tensor the file has, and has one the file lacks.
    let mut other = nn::VarStore::new(Device::Cpu);
    let _bert = BertModel::new(other.root() / "bert", &BertConfig::tiny(TINY_VOCAB));
    let _head = (other.root() / "relation").var("weight", &[2, 2], nn::Init::Const(0.0));
    let msg = weights_message(load_all(&mut other, &file).unwrap_err());
    assert!(msg.contains("missing (1): relation.weight"), "{msg}");

    // Unknown extra keys in a pretrained checkpoint are reported, not silently dropped.
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.push((
        "bert.encoder.layer.0.adapter.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    let extra = dir.path().join("extra.safetensors");
    Tensor::write_safetensors(&named, &extra).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let _bert = BertModel::new(vs2.root() / "bert", &BertConfig::tiny(TINY_VOCAB));
    let msg = weights_message(load_pretrained(&mut vs2, &extra, "bert.").unwrap_err());
    assert!(
        msg.contains("unexpected (1): bert.encoder.layer.0.adapter.weight"),
        "{msg}"
    );

    // A missing file is an I/O error naming it.
    let gone = dir.path().join("gone.safetensors");
    match load_all(&mut vs2, &gone) {
        Err(Error::Io { path, .. }) => assert_eq!(path, gone),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
