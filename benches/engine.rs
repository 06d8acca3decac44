//! Engine hot spots off the device: packing documents into batches, building table rows from
//! predictions, and writing part files. The predictions come from the deterministic fake backend
//! over the sample corpus, repeated to a realistic volume.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jerex::corpus::text;
use jerex::engine::job::{BatchConfig, Compression, OutputFormat};
use jerex::engine::BackendFactory;
use jerex::model::{PreparedDoc, Thresholds};
use jerex::output::{doc_rows, record_batch, MentionRow, PartWriter};
use jerex::pipeline::bucket::{pack, Cost};
use jerex::testing::{numbered_types, require_tokenizer, sample_corpus, FakeFactory, TinyModel};
use jerex::tokenize::WordPieceTokenizer;
use tch::Device;

fn bench(c: &mut Criterion) {
    // Packing: 10,000 documents of DocRED-like lengths (pseudo-random, fixed).
    let costs: Vec<Cost> = (0..10_000u64)
        .map(|i| {
            let len = 80 + (i.wrapping_mul(2_654_435_761) % 500) as usize;
            Cost {
                row_len: len,
                rows: 1,
                word_pieces: len,
                spans: len * 8,
                pairs: len,
            }
        })
        .collect();
    let cfg = BatchConfig {
        lookahead: 10_000,
        ..BatchConfig::default()
    };
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(costs.len() as u64));
    group.bench_function("pack_10k_docs", |b| {
        b.iter_batched(
            || costs.clone(),
            |items| pack(items, &cfg, |c| *c),
            BatchSize::SmallInput,
        )
    });

    let Some(tok) = require_tokenizer() else {
        return;
    };
    let tokenizer = WordPieceTokenizer::from_file(&tok).unwrap();
    let source = sample_corpus();
    let mut docs = Vec::new();
    for round in 0..25 {
        for d in &source {
            let doc = text::segment(&format!("{}-{round}", d.id), d.text.as_deref().unwrap());
            docs.push(PreparedDoc::new(doc, &tokenizer, 10));
        }
    }
    let config = TinyModel::with_tokenizer(&tok)
        .entity_types(numbered_types("E", 6))
        .relation_types(numbered_types("P", 96))
        .window(Default::default())
        .config();
    let factory = FakeFactory {
        thresholds: Thresholds {
            mention: 0.5,
            coref: 0.5,
            relation: 0.3,
        },
        ..FakeFactory::new(&config)
    };
    let preds = factory.create(Device::Cpu).unwrap().predict(&docs).unwrap();

    group.throughput(Throughput::Elements(docs.len() as u64));
    group.bench_function("table_rows_500_docs", |b| {
        b.iter(|| {
            docs.iter()
                .zip(&preds)
                .map(|(d, p)| doc_rows(&d.doc, p, &config).unwrap())
                .collect::<Vec<_>>()
        })
    });

    let mentions: Vec<MentionRow> = docs
        .iter()
        .zip(&preds)
        .flat_map(|(d, p)| doc_rows(&d.doc, p, &config).unwrap().mentions)
        .collect();
    group.throughput(Throughput::Elements(mentions.len() as u64));
    group.bench_function("mention_record_batch", |b| {
        b.iter(|| record_batch(&mentions).unwrap())
    });
    let batch = record_batch(&mentions).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (format, compression, name) in [
        (
            OutputFormat::Parquet,
            Compression::Zstd,
            "write_parquet_zstd",
        ),
        (OutputFormat::Arrow, Compression::Lz4, "write_arrow_lz4"),
    ] {
        let w = PartWriter::new(dir.path(), &["mentions"], format, compression).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| w.write("mentions", "part-bench-00000", &batch).unwrap())
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
