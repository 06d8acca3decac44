//! Corpus preparation speed in words per second: raw-text segmentation and word-piece
//! tokenization of the Re-DocRED dev set (500 documents), the CPU work in front of the encoder.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use jerex::corpus::{docred, text, Document};
use jerex::testing;
use jerex::tokenize::WordPieceTokenizer;

fn bench(c: &mut Criterion) {
    let (Some(encoder), Some(dev)) = (
        testing::require_encoder(),
        testing::require_shared("redocred/dev_revised.json"),
    ) else {
        return;
    };
    let tokenizer = WordPieceTokenizer::from_file(&encoder.join("tokenizer.json")).unwrap();
    let docs = docred::read_docred(&dev).unwrap();
    let words: usize = docs.iter().map(Document::word_count).sum();
    // The same words as raw text, to time segmentation on realistic input.
    let texts: Vec<String> = docs
        .iter()
        .map(|d| {
            d.words()
                .map(|w| w.text.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();

    let mut group = c.benchmark_group("redocred_dev");
    group.throughput(Throughput::Elements(words as u64));
    group.sample_size(20);
    // Warm: the word cache holds the corpus vocabulary after the first iteration.
    group.bench_function("tokenize", |b| {
        b.iter(|| {
            docs.iter()
                .map(|d| tokenizer.tokenize(d).ids.len())
                .sum::<usize>()
        })
    });
    // A fresh tokenizer per iteration: the first pass over a corpus, with an empty word cache.
    let path = encoder.join("tokenizer.json");
    group.bench_function("tokenize_cold", |b| {
        b.iter_batched(
            || WordPieceTokenizer::from_file(&path).unwrap(),
            |tokenizer| {
                docs.iter()
                    .map(|d| tokenizer.tokenize(d).ids.len())
                    .sum::<usize>()
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("segment", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| text::segment("b", t).word_count())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
