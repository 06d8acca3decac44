//! The corpus engine end to end: Parquet in, part files out, with the deterministic fake backend
//! (batching, devices, threads, failures, formats, reruns) and with a tiny random real model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow::array::{Array, ArrayRef, Float32Array, RecordBatch};
use arrow::compute::{concat_batches, lexsort_to_indices, take, SortColumn};
use jerex::corpus::{text, Document};
use jerex::device::Precision;
use jerex::engine::job::{BatchConfig, OutputFormat};
use jerex::engine::{
    execute, BackendFactory, ModelFactory, ModelInfo, PipelineConfig, Report, Unit,
};
use jerex::model::WindowConfig;
use jerex::schema;
use jerex::schema::TABLES;
use jerex::testing::{
    files, read_batches, require_tokenizer, sample_corpus, types, Failures, FakeFactory, TinyModel,
};
use jerex::tools::sample;
use tch::Device;

/// Six entity and four relation types.
fn typed(model: TinyModel) -> TinyModel {
    model
        .entity_types(types(&["PER", "ORG", "LOC", "TIME", "NUM", "MISC"]))
        .relation_types(types(&["R1", "R2", "R3", "R4"]))
        .thresholds(0.6, 0.5, 0.5)
}

/// The fake's CPU side: the pretrained encoder's tokenizer and a made-up type inventory.
fn fake_model(tok: &Path) -> ModelInfo {
    typed(TinyModel::with_tokenizer(tok))
        .window(WindowConfig::default())
        .fake_info()
}

fn fake(failures: Failures) -> FakeFactory {
    FakeFactory {
        failures,
        delay: Duration::from_millis(3),
        ..FakeFactory::new(&typed(TinyModel::new(10)).config())
    }
}

/// Two input files: the sample corpus as text (plus a blank row the reader rejects), and the
/// same documents pre-tokenized under other ids.
fn corpus(dir: &Path) -> Vec<Unit> {
    let mut docs = sample_corpus();
    let pretokenized: Vec<Document> = docs
        .iter()
        .map(|d| {
            let mut s = text::segment(&format!("tok-{}", d.id), d.text.as_deref().unwrap());
            s.text = None;
            for w in s.sentences.iter_mut().flatten() {
                w.chars = None;
            }
            s
        })
        .collect();
    docs.push(Document {
        id: "blank".into(),
        text: Some("   ".into()),
        ..Default::default()
    });
    let a = dir.join("text.parquet");
    let b = dir.join("tokens.parquet");
    sample::write_input_parquet(&a, &docs).unwrap();
    sample::write_input_parquet(&b, &pretokenized).unwrap();
    vec![Unit::file(&a), Unit::file(&b)]
}

struct Setup {
    devices: Vec<Device>,
    batch: BatchConfig,
    threads: usize,
    rows_per_part: usize,
    format: OutputFormat,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            devices: vec![Device::Cpu],
            batch: BatchConfig::default(),
            threads: 1,
            rows_per_part: 1_000_000,
            format: OutputFormat::Parquet,
        }
    }
}

/// Small batches, several devices, two threads, many small parts.
fn busy_setup() -> Setup {
    Setup {
        devices: vec![Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)],
        batch: BatchConfig {
            max_word_pieces: 400,
            max_docs: 3,
            lookahead: 7,
            max_spans: 2_000,
            max_pairs: 10_000,
        },
        threads: 2,
        rows_per_part: 7,
        format: OutputFormat::Parquet,
    }
}

fn run(
    units: &[Unit],
    out: &Path,
    setup: &Setup,
    model: &ModelInfo,
    factory: &dyn BackendFactory,
) -> jerex::Result<Report> {
    let mut cfg = PipelineConfig {
        devices: setup.devices.clone(),
        batch: setup.batch,
        threads: setup.threads,
        ..jerex::testing::pipeline_config(units, out)
    };
    let output = cfg.output.as_mut().unwrap();
    output.format = setup.format;
    output.rows_per_part = setup.rows_per_part;
    execute(&cfg, model, factory)
}

/// Every file of a table folder: temporary files left behind are parts too, so they show.
fn part_files(dir: &Path) -> Vec<PathBuf> {
    assert!(dir.is_dir(), "{}", dir.display());
    files(dir)
}

/// A whole table read back from its part files, sorted by the schema's sort key (documents also
/// by source file and row: rejected rows have no id), without the `seconds` timing column.
fn read_table(out: &Path, table: &str) -> RecordBatch {
    let schema = schema::table(table).arrow_schema();
    let mut batches = Vec::new();
    for path in part_files(&out.join(table)) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temporary file left behind: {name}");
        batches.extend(read_batches(&path));
    }
    let all = concat_batches(&schema, &batches).unwrap();
    let mut key: Vec<String> = schema::table(table).sort_key.clone();
    if table == schema::DOCUMENTS {
        key.extend(["source_file".to_string(), "source_row".to_string()]);
    }
    let cols: Vec<SortColumn> = key
        .iter()
        .map(|k| SortColumn {
            values: all.column_by_name(k).unwrap().clone(),
            options: None,
        })
        .collect();
    let idx = lexsort_to_indices(&cols, None).unwrap();
    let mut sorted: Vec<(String, ArrayRef)> = Vec::new();
    for (f, c) in schema.fields().iter().zip(all.columns()) {
        if f.name() != "seconds" {
            sorted.push((f.name().clone(), take(c.as_ref(), &idx, None).unwrap()));
        }
    }
    RecordBatch::try_from_iter(sorted).unwrap()
}

fn tables(out: &Path) -> Vec<RecordBatch> {
    TABLES.iter().map(|t| read_table(out, t)).collect()
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<T>()
        .unwrap()
}

fn statuses(docs: &RecordBatch) -> Vec<(Option<String>, String)> {
    let ids = column::<arrow::array::StringArray>(docs, "doc_id");
    let st = column::<arrow::array::StringArray>(docs, "status");
    (0..docs.num_rows())
        .map(|i| {
            (
                ids.is_valid(i).then(|| ids.value(i).to_string()),
                st.value(i).to_string(),
            )
        })
        .collect()
}

#[test]
fn fake_tables_do_not_depend_on_devices_batching_or_threads() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let factory = fake(Failures::default());

    let base = run(
        &units,
        &dir.path().join("a"),
        &Setup::default(),
        &model,
        &factory,
    )
    .unwrap();
    assert_eq!(
        (base.documents, base.ok, base.rejected, base.failed),
        (41, 40, 1, 0)
    );
    assert!(
        base.mentions > 100 && base.entities > 50 && base.relations > 20,
        "{base:?}"
    );
    assert_eq!(base.parts, [2, 2, 2, 2], "one part per unit and table");

    let busy = run(
        &units,
        &dir.path().join("b"),
        &busy_setup(),
        &model,
        &factory,
    )
    .unwrap();
    assert!(busy.batches > 14, "small batches: {}", busy.batches);
    for d in &busy.devices {
        assert!(
            d.batches > 0,
            "every device receives work: {:?}",
            busy.devices
        );
    }
    assert!(busy.parts[0] > 4, "rows_per_part splits parts");
    let (a, b) = (tables(&dir.path().join("a")), tables(&dir.path().join("b")));
    for (t, (x, y)) in TABLES.iter().zip(a.iter().zip(&b)) {
        assert_eq!(x, y, "table {t} differs");
    }
    assert_eq!(a[0].num_rows(), base.mentions);
    assert_eq!(a[3].num_rows(), 41);

    // Part names carry the unit, and every part is sorted by the table's key.
    let names: Vec<String> = part_files(&dir.path().join("b/mentions"))
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in &names {
        let rest = n
            .strip_prefix("part-")
            .unwrap()
            .strip_suffix(".parquet")
            .unwrap();
        let (hash, number) = rest.split_once('-').unwrap();
        assert!(units.iter().any(|u| u.hash == hash), "{n}");
        assert_eq!(number.len(), 5, "{n}");
    }

    // The rejected row is accounted for, under its id.
    let docs = &a[3];
    let st = statuses(docs);
    assert_eq!(st.iter().filter(|s| s.1 == "rejected").count(), 1);
    assert!(st.contains(&(Some("blank".into()), "rejected".into())));
}

#[test]
fn failing_batches_are_split_and_only_bad_documents_fail() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let setup = Setup {
        batch: BatchConfig {
            max_docs: 8,
            lookahead: 16,
            ..BatchConfig::default()
        },
        devices: vec![Device::Cuda(0), Device::Cuda(1)],
        ..Setup::default()
    };
    run(
        &units,
        &dir.path().join("clean"),
        &setup,
        &model,
        &fake(Failures::default()),
    )
    .unwrap();
    let clean = tables(&dir.path().join("clean"));

    // Out of memory above two documents: every batch is split until it fits; nothing is lost.
    let oom = Failures {
        max_docs: Some(2),
        ..Failures::default()
    };
    let r = run(&units, &dir.path().join("oom"), &setup, &model, &fake(oom)).unwrap();
    assert_eq!(r.failed, 0);
    assert!(r.devices.iter().map(|d| d.retries).sum::<usize>() > 0);
    assert_eq!(tables(&dir.path().join("oom")), clean);

    // One poisoned document, by error and by panic: it alone fails, the rest is as clean.
    for panic in [false, true] {
        let poison = Failures {
            poison: vec!["org-toyota".into()],
            panic,
            ..Failures::default()
        };
        let out = dir.path().join(format!("poison-{panic}"));
        let r = run(&units, &out, &setup, &model, &fake(poison)).unwrap();
        assert_eq!((r.failed, r.ok), (1, 39));
        let got = tables(&out);
        let st = statuses(&got[3]);
        let failed: Vec<_> = st.iter().filter(|s| s.1 == "failed").collect();
        assert_eq!(
            failed,
            vec![&(Some("org-toyota".to_string()), "failed".to_string())]
        );
        let reasons = column::<arrow::array::StringArray>(&got[3], "reason");
        let i = st.iter().position(|s| s.1 == "failed").unwrap();
        assert!(
            reasons.value(i).contains("fake failure"),
            "{}",
            reasons.value(i)
        );
        // Every other document's mentions are exactly the clean run's.
        let keep = |b: &RecordBatch| {
            let ids = column::<arrow::array::StringArray>(b, "doc_id");
            let mask: arrow::array::BooleanArray = (0..b.num_rows())
                .map(|i| Some(ids.value(i) != "org-toyota"))
                .collect();
            arrow::compute::filter_record_batch(b, &mask).unwrap()
        };
        assert_eq!(keep(&got[0]), keep(&clean[0]));
        assert!(got[0].num_rows() < clean[0].num_rows());
    }
}

#[test]
fn a_dead_device_leaves_its_share_to_the_others() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let setup = Setup {
        devices: vec![Device::Cuda(0), Device::Cuda(1)],
        ..busy_setup()
    };
    let one_dead = Failures {
        dead_devices: vec![Device::Cuda(1)],
        ..Failures::default()
    };
    let r = run(
        &units,
        &dir.path().join("a"),
        &setup,
        &model,
        &fake(one_dead),
    )
    .unwrap();
    assert_eq!((r.ok, r.failed), (40, 0));
    assert!(r.devices[1].error.is_some() && r.devices[0].batches > 0);

    let all_dead = Failures {
        dead_devices: vec![Device::Cuda(0), Device::Cuda(1)],
        ..Failures::default()
    };
    let err = run(
        &units,
        &dir.path().join("b"),
        &setup,
        &model,
        &fake(all_dead),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no device"), "{err}");
}

#[test]
fn reruns_replace_a_units_parts_and_arrow_ipc_works() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let factory = fake(Failures::default());
    let out = dir.path().join("out");
    run(&units, &out, &busy_setup(), &model, &factory).unwrap();
    let first = tables(&out);
    // Fewer, larger parts the second time: stale small parts must not survive.
    run(&units, &out, &Setup::default(), &model, &factory).unwrap();
    assert_eq!(tables(&out), first);
    assert_eq!(part_files(&out.join("mentions")).len(), 2);

    let ipc = Setup {
        format: OutputFormat::Arrow,
        ..Setup::default()
    };
    run(&units, &dir.path().join("ipc"), &ipc, &model, &factory).unwrap();
    assert_eq!(tables(&dir.path().join("ipc")), first);
}

#[test]
fn output_directories_are_pyarrow_datasets() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let Some(python) = jerex::testing::python_with("pyarrow.dataset") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let factory = fake(Failures::default());
    for (format, ds_format) in [
        (OutputFormat::Parquet, "parquet"),
        (OutputFormat::Arrow, "ipc"),
    ] {
        let out = dir.path().join(ds_format);
        let setup = Setup {
            format,
            ..busy_setup()
        };
        let r = run(&units, &out, &setup, &model, &factory).unwrap();
        let script = format!(
            "import pyarrow.dataset as ds, sys\n\
             for t in ['mentions', 'entities', 'relations', 'documents']:\n\
             \x20   d = ds.dataset(sys.argv[1] + '/' + t, format='{ds_format}')\n\
             \x20   print(t, d.count_rows(), ','.join(d.schema.names))\n"
        );
        let output = std::process::Command::new(&python)
            .args(["-c", &script, out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let counts = [r.mentions, r.entities, r.relations, r.documents];
        for ((line, table), count) in stdout.lines().zip(TABLES).zip(counts) {
            let names: Vec<&str> = schema::table(table)
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(line, format!("{table} {count} {}", names.join(",")));
        }
    }
}

/// With this spread about 4% of the candidates score above `MENTION_THRESHOLD`.
const MENTION_SPREAD: f64 = 30.0;
const MENTION_THRESHOLD: f32 = 0.7;
/// Untrained relation probabilities all lie in 0.5..0.502; this keeps about the top 5%.
const RELATION_THRESHOLD: f32 = 0.5013;

/// A tiny randomly initialised real model saved as a model folder; its mention classifier is
/// widened so that `MENTION_THRESHOLD` keeps a few percent of the candidates.
fn tiny_model_folder(dir: &Path, tok: &Path) -> PathBuf {
    typed(TinyModel::with_tokenizer(tok))
        // Untrained coreference scores sit at 0.5: no merging (0.9) keeps the test clear of ties.
        .thresholds(MENTION_THRESHOLD, 0.9, RELATION_THRESHOLD)
        .seed(11)
        .mention_spread(MENTION_SPREAD)
        .save(dir, "tiny-model")
}

/// Float columns within `tol`, every other column exactly.
fn assert_close(t: &str, a: &RecordBatch, b: &RecordBatch, tol: f32) {
    assert_eq!(a.schema(), b.schema(), "{t}");
    assert_eq!(a.num_rows(), b.num_rows(), "{t}: row counts");
    for (f, (x, y)) in a
        .schema()
        .fields()
        .iter()
        .zip(a.columns().iter().zip(b.columns()))
    {
        match (
            x.as_any().downcast_ref::<Float32Array>(),
            y.as_any().downcast_ref::<Float32Array>(),
        ) {
            (Some(x), Some(y)) => {
                for (p, q) in x.values().iter().zip(y.values().iter()) {
                    assert!((p - q).abs() <= tol, "{t}.{}: {p} vs {q}", f.name());
                }
            }
            _ => assert_eq!(x, y, "{t}.{}", f.name()),
        }
    }
}

#[test]
fn tiny_real_model_tables_do_not_depend_on_batching_devices_or_threads() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<Document> = sample_corpus().into_iter().take(8).collect();
    let input = dir.path().join("in.parquet");
    sample::write_input_parquet(&input, &docs).unwrap();
    let units = vec![Unit::file(&input)];
    let model_dir = tiny_model_folder(dir.path(), &tok);
    let model = ModelInfo::load(&model_dir).unwrap();
    assert!(
        model.model_id.starts_with("tiny-model@"),
        "{}",
        model.model_id
    );
    let factory = ModelFactory {
        dir: model_dir.clone(),
        thresholds: model.config.thresholds,
        precision: Precision::Fp32,
        threads: 1,
    };
    let one = Setup::default();
    let r1 = run(&units, &dir.path().join("a"), &one, &model, &factory).unwrap();
    assert_eq!((r1.ok, r1.failed), (8, 0));
    assert!(r1.mentions > 0 && r1.entities > 0, "{r1:?}");
    assert!(r1.word_pieces > r1.words, "windows carry special tokens");
    let two = Setup {
        devices: vec![Device::Cpu, Device::Cpu],
        batch: BatchConfig {
            max_word_pieces: 200,
            max_docs: 2,
            lookahead: 3,
            ..BatchConfig::default()
        },
        threads: 2,
        rows_per_part: 5,
        format: OutputFormat::Parquet,
    };
    let r2 = run(&units, &dir.path().join("b"), &two, &model, &factory).unwrap();
    assert!(r2.batches > r1.batches);
    for (t, (x, y)) in TABLES.iter().zip(
        tables(&dir.path().join("a"))
            .iter()
            .zip(&tables(&dir.path().join("b"))),
    ) {
        assert_close(t, x, y, 1e-4);
    }
}

#[test]
fn progress_free_runs_report_stage_times() {
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let units = corpus(dir.path());
    let model = fake_model(&tok);
    let r = run(
        &units,
        &dir.path().join("o"),
        &Setup::default(),
        &model,
        &fake(Failures::default()),
    )
    .unwrap();
    let s = &r.stages;
    assert!(
        s.read > 0.0 && s.prepare > 0.0 && s.device > 0.0 && s.decode > 0.0 && s.write > 0.0,
        "{s:?}"
    );
    assert!(r.padded_word_pieces >= r.word_pieces && r.word_pieces > 0);
    let text = jerex::engine::summary(&r, &dir.path().join("o"));
    assert!(
        text.starts_with("41 documents (40 ok, 1 rejected, 0 failed)"),
        "{text}"
    );
    assert!(text.contains("examples:") && text.contains("--["), "{text}");
}

/// Sharding: every shard writing its part of the plan into one output directory (as on a shared
/// volume) gives exactly a single run's tables.
#[test]
fn shards_together_write_exactly_the_single_run_tables() {
    use jerex::engine::plan::{Plan, Shard};
    let Some(tok) = require_tokenizer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let docs = sample_corpus();
    // 300 rows in row groups of 128 make three units of the big file; the small one is a fourth.
    let many: Vec<Document> = (0..15)
        .flat_map(|r| {
            docs.iter().map(move |d| Document {
                id: format!("{}-{r}", d.id),
                ..d.clone()
            })
        })
        .collect();
    let files = [
        dir.path().join("big.parquet"),
        dir.path().join("small.parquet"),
    ];
    sample::write_input_parquet(&files[0], &many).unwrap();
    sample::write_input_parquet(&files[1], &docs).unwrap();
    let plan = Plan::new(&files, dir.path(), 128, &Default::default()).unwrap();
    assert_eq!(plan.units.len(), 4);
    let model = fake_model(&tok);
    let factory = fake(Failures::default());
    let setup = Setup::default();

    let all: Vec<Unit> = plan.units.iter().map(|u| u.unit.clone()).collect();
    let single = run(&all, &dir.path().join("single"), &setup, &model, &factory).unwrap();
    assert_eq!(single.documents, 320);
    let count = 3;
    let mut documents = 0;
    for index in 0..count {
        let mine = plan.shard(Shard { index, count });
        assert!(!mine.is_empty(), "shard {index} has work");
        let report = run(&mine, &dir.path().join("sharded"), &setup, &model, &factory).unwrap();
        documents += report.documents;
    }
    assert_eq!(documents, single.documents, "no document runs twice");
    let single = tables(&dir.path().join("single"));
    let sharded = tables(&dir.path().join("sharded"));
    for (t, (x, y)) in TABLES.iter().zip(single.iter().zip(&sharded)) {
        assert_eq!(x, y, "table {t} differs");
    }
    assert!(single[0].num_rows() > 300, "mentions were written");
}
