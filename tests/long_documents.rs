//! Long documents. A document of at most `heads.long_documents.whole_pieces` word pieces is
//! predicted whole, exactly as before; a longer one as overlapping segments whose predictions
//! are merged, the same in the model and in the engine (where its segments travel in separate
//! batches); and a 50,000-word document runs through the engine within a memory cap.

use std::path::{Path, PathBuf};

use arrow::array::{Array, Float32Array, RecordBatch, StringArray, UInt32Array};
use jerex::corpus::Document;
use jerex::device::Precision;
use jerex::engine::job::BatchConfig;
use jerex::engine::{execute, ModelFactory, ModelInfo, PipelineConfig, Unit};
use jerex::model::segment::{merge, plan, segment_doc};
use jerex::model::{JerexModel, LongDocuments, PreparedDoc, Thresholds};
use jerex::output::doc_rows;
use jerex::schema;
use jerex::testing::{
    check_well_formed, pipeline_config, read_table, repo_root, require_shared, require_tokenizer,
    sample_corpus, strings, synthetic_document, synthetic_prepared, types, window, JobFile,
    TinyModel,
};
use jerex::tools::sample;
use tch::{nn, Device};

const VOCAB: i64 = 64;

/// A tiny random model (three entity and four relation types) with short encoder windows whose
/// mention classifier is widened, so that a threshold of 0.7 keeps about a tenth of the
/// candidates.
fn tiny_model() -> (nn::VarStore, JerexModel) {
    TinyModel::new(VOCAB)
        .window(window(32, 8))
        .seed(17)
        .mention_spread(400.0)
        .build()
}

/// Sentences of synthetic words with one to three pieces each (equal words, equal pieces).
fn prepared(id: &str, sentence_lengths: &[usize], seed: usize) -> PreparedDoc {
    synthetic_prepared(synthetic_document(id, sentence_lengths, seed), VOCAB)
}

#[test]
fn short_documents_are_predicted_whole_and_long_ones_as_merged_segments() {
    let (_vs, mut model) = tiny_model();
    let limits = LongDocuments {
        whole_pieces: 200,
        segment_pieces: 160,
        overlap_pieces: 48,
    };
    model.set_long_documents(limits);
    let thresholds = Thresholds {
        mention: 0.7,
        coref: 0.5,
        relation: 0.5,
    };
    let short = vec![prepared("a", &[8, 8, 8], 1), prepared("b", &[5, 30, 12], 4)];
    for d in &short {
        assert!(d.piece_count() <= limits.whole_pieces);
    }
    let lengths: Vec<usize> = (0..36).map(|i| 6 + (i * 5) % 11).collect();
    let long = prepared("long", &lengths, 2);
    assert!(
        long.piece_count() > 3 * limits.whole_pieces,
        "{}",
        long.piece_count()
    );

    // Within the limit: exactly what `predict` gives, alone or beside a long document.
    let whole = model.predict(&short, &thresholds).unwrap();
    assert!(whole.iter().all(|p| !p.mentions.is_empty()));
    assert_eq!(
        model.predict_segmented(&short, &thresholds, 8192).unwrap(),
        whole
    );
    let mixed = vec![short[0].clone(), long.clone(), short[1].clone()];
    let p = model.predict_segmented(&mixed, &thresholds, 8192).unwrap();
    assert_eq!((&p[0], &p[2]), (&whole[0], &whole[1]));

    // Beyond it: the merge of the segments' own predictions.
    let segments = plan(&long, &limits).unwrap();
    assert!(segments.len() >= 4, "{} segments", segments.len());
    let docs: Vec<PreparedDoc> = segments.iter().map(|s| segment_doc(&long, s)).collect();
    let local = model.predict(&docs, &thresholds).unwrap();
    let merged = merge(&segments, &local);
    assert_eq!(
        model
            .predict_segmented(std::slice::from_ref(&long), &thresholds, usize::MAX)
            .unwrap()[0],
        merged
    );
    // Budget groups (here one segment at a time) change batching only.
    let grouped = &p[1];
    assert_eq!(grouped.mentions.len(), merged.mentions.len());
    for (a, b) in grouped.mentions.iter().zip(&merged.mentions) {
        assert_eq!(a.span, b.span);
        assert!((a.score - b.score).abs() < 1e-5);
    }
    check_well_formed(&merged, long.doc.word_count(), 3, 4);
    assert!(merged.entities.len() > 10 && !merged.relations.is_empty());
    // Each mention comes from the segment owning its first word, with that segment's score
    // and the document's sentence numbering.
    let sentence_of = |w: usize| {
        let starts = long.doc.sentence_starts();
        starts.partition_point(|&s| s <= w) - 1
    };
    for m in &merged.mentions {
        let k = segments
            .iter()
            .position(|s| s.own.contains(&m.span.start))
            .unwrap();
        let s = &segments[k];
        let found = local[k].mentions.iter().find(|x| {
            (x.span.start + s.words.start, x.span.end + s.words.start) == (m.span.start, m.span.end)
        });
        assert_eq!(found.map(|x| x.score), Some(m.score));
        assert_eq!(m.span.sent, sentence_of(m.span.start));
    }
    // Some entity continues across a segment boundary.
    assert!(
        merged.entities.iter().any(|e| {
            let first = merged.mentions[e.mentions[0]].span.start;
            let last = merged.mentions[*e.mentions.last().unwrap()].span.start;
            segments
                .iter()
                .any(|s| s.own.contains(&first) && !s.own.contains(&last))
        }),
        "no entity spans two segments"
    );
}

fn run(units: &[Unit], out: &Path, model: &ModelInfo, factory: &ModelFactory) {
    let mut cfg = PipelineConfig {
        devices: vec![Device::Cpu, Device::Cpu],
        batch: BatchConfig {
            max_word_pieces: 1024,
            max_docs: 4,
            lookahead: 8,
            ..BatchConfig::default()
        },
        threads: 2,
        ..pipeline_config(units, out)
    };
    cfg.output.as_mut().unwrap().rows_per_part = 100_000;
    let report = execute(&cfg, model, factory).unwrap();
    assert_eq!(report.failed + report.rejected, 0);
}

/// A table's rows of one document as strings (scores rounded to 1e-4, timing left out), sorted.
fn rows_of(batch: &RecordBatch, doc: &str) -> Vec<String> {
    let ids = batch
        .column_by_name("doc_id")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..batch.num_rows() {
        if !ids.is_valid(i) || ids.value(i) != doc {
            continue;
        }
        let mut row = Vec::new();
        for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
            if f.name() == "seconds" {
                continue;
            }
            match c.as_any().downcast_ref::<Float32Array>() {
                Some(x) => row.push(format!("{:.4}", x.value(i))),
                None => row.push(format!("{:?}", c.slice(i, 1))),
            }
        }
        out.push(row.join("|"));
    }
    out.sort();
    out
}

fn u32_column(batch: &RecordBatch, name: &str) -> Vec<u32> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// The sample corpus's 20 documents plus all of them joined into one (about 1,000 words, a few
/// segments): the short ones get the same rows whether or not long documents are segmented,
/// and the long one the rows of the model's own segmented prediction, though its segments went
/// through different batches and devices.
#[test]
fn the_engine_merges_segments_from_separate_batches_as_the_model_does() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut docs = sample_corpus();
    let joined = Document::join("joined".into(), &docs);
    docs.push(joined);
    let input = dir.path().join("in.parquet");
    sample::write_input_parquet(&input, &docs).unwrap();
    let units = vec![Unit::file(&input)];

    let model_dir = TinyModel::with_tokenizer(&tok)
        .entity_types(types(&["PER", "ORG", "LOC", "TIME", "NUM", "MISC"]))
        .relation_types(types(&["R1", "R2", "R3", "R4"]))
        .thresholds(0.7, 0.5, 0.5013)
        .seed(11)
        .mention_spread(30.0)
        .save(dir.path(), "tiny");
    let segmented = ModelInfo::load(&model_dir).unwrap();
    assert_eq!(
        segmented.config.heads.long_documents,
        LongDocuments::default()
    );
    let mut whole = ModelInfo::load(&model_dir).unwrap();
    whole.config.heads.long_documents.whole_pieces = 100_000;
    let factory = ModelFactory {
        dir: model_dir.clone(),
        thresholds: segmented.config.thresholds,
        precision: Precision::Fp32,
        threads: 1,
    };
    let (a, b) = (dir.path().join("segmented"), dir.path().join("whole"));
    run(&units, &a, &segmented, &factory);
    run(&units, &b, &whole, &factory);

    let documents = read_table(&a, schema::DOCUMENTS);
    let segments = u32_column(&documents, "segments");
    let pieces = u32_column(&documents, "word_pieces");
    let ids: Vec<String> = strings(&documents, "doc_id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let limit = segmented.config.heads.long_documents.whole_pieces as u32;
    for ((id, &s), &p) in ids.iter().zip(&segments).zip(&pieces) {
        if id == "joined" {
            assert!(p > limit && s >= 2, "{id}: {p} pieces in {s} segments");
        } else {
            assert!(p <= limit && s == 1, "{id}: {p} pieces in {s} segments");
        }
    }
    for table in [schema::MENTIONS, schema::ENTITIES, schema::RELATIONS] {
        let (x, y) = (read_table(&a, table), read_table(&b, table));
        for id in ids.iter().filter(|id| *id != "joined") {
            assert_eq!(rows_of(&x, id), rows_of(&y, id), "{table} of {id}");
        }
    }

    // The long document's rows are those of the model's segmented prediction.
    let loaded = JerexModel::load(&model_dir, Device::Cpu, Precision::Fp32).unwrap();
    // As the reader segments the text.
    let text = docs.last().unwrap().text.as_deref().unwrap();
    let long = segmented.prepare(jerex::corpus::text::segment("joined", text));
    let p = loaded
        .model
        .predict_segmented(
            std::slice::from_ref(&long),
            &segmented.config.thresholds,
            8192,
        )
        .unwrap();
    let expected = doc_rows(&long.doc, &p[0], &segmented.config).unwrap();
    assert!(!expected.mentions.is_empty() && !expected.relations.is_empty());
    let mentions = read_table(&a, schema::MENTIONS);
    let entities = read_table(&a, schema::ENTITIES);
    let relations = read_table(&a, schema::RELATIONS);
    assert_eq!(rows_of(&mentions, "joined").len(), expected.mentions.len());
    assert_eq!(rows_of(&entities, "joined").len(), expected.entities.len());
    assert_eq!(
        rows_of(&relations, "joined").len(),
        expected.relations.len()
    );
    let mention_rows = jerex::output::record_batch(&expected.mentions).unwrap();
    assert_eq!(
        rows_of(&mentions, "joined"),
        rows_of(&mention_rows, "joined")
    );
    let relation_rows = jerex::output::record_batch(&expected.relations).unwrap();
    assert_eq!(
        rows_of(&relations, "joined"),
        rows_of(&relation_rows, "joined")
    );
}

/// Peak resident set of the largest terminated child of this process, in bytes.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss as u64 * 1024
}

/// A document of about 50,000 words (the first Re-DocRED dev documents joined, the size the
/// default `input.max_words` admits) through `jerex run` with the default model, under an
/// address-space limit (`ulimit -v`) of 1.5 GiB; its peak resident set stays within the 1 GiB
/// the engine keeps for DocRED-sized corpora. Before segments it peaked at several GB.
#[test]
fn a_50000_word_document_runs_within_a_memory_cap() {
    use std::os::unix::process::CommandExt;
    let Some(data) = require_shared("redocred/dev_revised.json") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut docs = jerex::corpus::docred::read_docred(&data).unwrap();
    for d in &mut docs {
        d.gold = None;
    }
    let first = jerex::corpus::runs_up_to(&docs, 50_000).remove(0);
    let long = Document::join("long".into(), &docs[first]);
    let words = long.word_count();
    assert!((45_000..=50_000).contains(&words), "{words} words");
    let input = dir.path().join("long.parquet");
    sample::write_input_parquet(&input, &[long]).unwrap();
    let out = dir.path().join("out");
    let job = JobFile::new(&[&input], &out, &shipped_model())
        .set("devices", "cpu")
        .set("threads", 2)
        .write(&dir.path().join("job.toml"));
    const CAP: u64 = 3 << 29; // 1.5 GiB of address space
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jerex"));
    cmd.args(["run", job.to_str().unwrap(), "--no-progress"])
        .env("JEREX_LOAD_CUDA", "never")
        .env("RUST_LOG", "warn");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CAP,
                rlim_max: CAP,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let start = std::time::Instant::now();
    let output = cmd.output().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "jerex run failed under the cap: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let peak = children_max_rss();
    eprintln!(
        "{words} words in {seconds:.1} s (with model loading), peak RSS {} MiB",
        peak >> 20
    );
    assert!(peak <= 1 << 30, "peak RSS {} MiB", peak >> 20);
    let documents = read_table(&out, schema::DOCUMENTS);
    assert_eq!(documents.num_rows(), 1);
    assert_eq!(strings(&documents, "status"), [Some("ok".to_string())]);
    assert_eq!(u32_column(&documents, "words"), [words as u32]);
    let segments = u32_column(&documents, "segments")[0];
    let mentions = u32_column(&documents, "mentions")[0];
    let entities = u32_column(&documents, "entities")[0];
    assert!(segments > 50, "{segments} segments");
    // About one mention every eight words, as in the documents one by one.
    assert!(mentions as usize > words / 12, "{mentions} mentions");
    assert!(entities > 0 && entities < mentions);
    assert_eq!(
        read_table(&out, schema::MENTIONS).num_rows(),
        mentions as usize
    );
}

/// The job file's `[long_documents]` and the flags replace the model's limits for the run (and
/// so for the job's fingerprint); impossible limits are configuration errors naming the field.
#[test]
fn job_limits_replace_the_models_and_are_checked() {
    use jerex::engine::{prepare_job, Job, JobOverrides, Shard};
    let dir = tempfile::tempdir().unwrap();
    let job = Job::parse(
        "[input]\npaths = [\"x.parquet\"]\n[output]\ndir = \"out\"\n\
         [long_documents]\nwhole_pieces = 2000\nsegment_pieces = 700\n",
    )
    .unwrap();
    let limits = job.long_documents.apply(LongDocuments::default());
    assert_eq!(
        limits,
        LongDocuments {
            whole_pieces: 2000,
            segment_pieces: 700,
            overlap_pieces: 128
        }
    );
    assert!(Job::parse(
        "[input]\npaths = []\n[output]\ndir = \"o\"\n[long_documents]\nsegments = 3\n"
    )
    .unwrap_err()
    .contains("segments"));

    let demo = repo_root().join("jobs/demo.toml");
    let flags = |overlap| JobOverrides {
        model: Some(shipped_model()),
        output: Some(dir.path().join("out")),
        long_documents: jerex::model::segment::LongDocumentOverrides {
            segment_pieces: Some(400),
            overlap_pieces: Some(overlap),
            ..Default::default()
        },
        ..Default::default()
    };
    let p = prepare_job(&demo, &flags(100), Shard::ALL, false, false).unwrap();
    let l = p.model.config.heads.long_documents;
    assert_eq!(
        (l.whole_pieces, l.segment_pieces, l.overlap_pieces),
        (1024, 400, 100)
    );
    // The prepared run holds the output's lease until it is dropped.
    drop(p);
    let err = prepare_job(&demo, &flags(200), Shard::ALL, false, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("long_documents.overlap_pieces"), "{err}");
}

/// Every document of the DocRED files here (Re-DocRED dev, DocRED test and train) is within
/// `whole_pieces` with the default model's tokenizer, so it takes the unchanged whole-document
/// path: DocRED-sized outputs cannot change. The longest has under 600 pieces.
#[test]
fn every_docred_document_is_predicted_whole() {
    let model = ModelInfo::load(&shipped_model()).unwrap();
    let limits = model.config.heads.long_documents;
    assert_eq!(limits, LongDocuments::default());
    let mut longest = 0;
    for file in [
        "redocred/dev_revised.json",
        "docred/test.json",
        "docred/train_annotated_first200.json",
    ] {
        let Some(path) = require_shared(file) else {
            return;
        };
        for doc in jerex::corpus::docred::read_docred(&path).unwrap() {
            let id = doc.id.clone();
            let prepared = model.prepare(doc);
            assert!(
                plan(&prepared, &limits).is_none(),
                "{file}: {id} would be segmented"
            );
            longest = longest.max(prepared.piece_count());
        }
    }
    assert!(longest > 500 && longest < 600, "longest: {longest} pieces");
}

/// The shipped default model of this checkout (committed, so always there).
fn shipped_model() -> PathBuf {
    repo_root().join("models/default")
}
