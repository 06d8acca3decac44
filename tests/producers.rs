//! Corpora as producers write them: Parquet files made by the real pyarrow, Polars and DuckDB
//! (from the project's `.venv`) with every string encoding they use (plain, large, view,
//! dictionary) and integer ids, all read by one `jerex run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use jerex::testing::{python_with, require_tokenizer, types, JobFile, TinyModel};

/// Writes one file per producer and encoding into the folder given as `sys.argv[1]`; ids are
/// distinct across files, DuckDB's are integers.
const WRITE: &str = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq, polars as pl, duckdb
out = sys.argv[1]
texts = ["Anna Berg lives in Oslo.", "The Nile flows north."]
def table(prefix, kind):
    ids = [f"{prefix}-{i}" for i in range(len(texts))]
    return pa.table({"id": pa.array(ids, kind), "text": pa.array(texts, kind)})
pq.write_table(table("plain", pa.string()), f"{out}/pyarrow-plain.parquet")
pq.write_table(table("large", pa.large_string()), f"{out}/pyarrow-large.parquet")
pq.write_table(table("view", pa.string_view()), f"{out}/pyarrow-view.parquet")
t = table("dict", pa.string())
t = pa.table({c: t[c].dictionary_encode() for c in t.column_names})
pq.write_table(t, f"{out}/pyarrow-dictionary.parquet")
pl.DataFrame({"id": ["polars-0", "polars-1"], "text": texts}).write_parquet(f"{out}/polars.parquet")
duckdb.sql(
    f"COPY (SELECT * FROM (VALUES (101, '{texts[0]}'), (102, '{texts[1]}')) t(id, text)) "
    f"TO '{out}/duckdb.parquet' (FORMAT PARQUET)"
)
for name in ["pyarrow-dictionary", "polars", "duckdb"]:
    print(name, pq.read_schema(f"{out}/{name}.parquet").types)
"#;

/// `documents` rows as (id, status), read back with pyarrow.
fn documents(python: &Path, out: &Path) -> BTreeMap<String, String> {
    let script = "import sys, pyarrow.dataset as ds\n\
        t = ds.dataset(sys.argv[1] + '/documents', format='parquet').to_table()\n\
        for i, s in zip(t['doc_id'].to_pylist(), t['status'].to_pylist()): print(i, s)";
    let output = Command::new(python)
        .args(["-c", script])
        .arg(out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (id, status) = l.split_once(' ').unwrap();
            (id.to_string(), status.to_string())
        })
        .collect()
}

#[test]
fn every_producer_encoding_is_read() {
    let (Some(python), Some(tok)) = (python_with("pyarrow, polars, duckdb"), require_tokenizer())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let written = Command::new(&python)
        .args(["-c", WRITE])
        .arg(&input)
        .output()
        .unwrap();
    assert!(written.status.success(), "{written:?}");
    // The files really use the encodings under test.
    let schemas = String::from_utf8_lossy(&written.stdout);
    assert!(schemas.contains("dictionary<values=string"), "{schemas}");
    assert!(schemas.contains("large_string"), "{schemas}");
    assert!(schemas.contains("int32"), "{schemas}");

    let model = TinyModel::with_tokenizer(&tok)
        .entity_types(types(&["PER", "LOC"]))
        .relation_types(types(&["R1"]))
        .thresholds(0.99, 0.99, 0.99)
        .seed(5)
        .save(dir.path(), "model");
    let out = dir.path().join("out");
    let job = JobFile::new(&[&input], &out, &model)
        .set("threads", 1)
        .write(&dir.path().join("job.toml"));
    let run = Command::new(env!("CARGO_BIN_EXE_jerex"))
        .arg("run")
        .arg(&job)
        .arg("--no-progress")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(0), "{run:?}");

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for prefix in ["plain", "large", "view", "dict", "polars"] {
        for i in 0..2 {
            expected.insert(format!("{prefix}-{i}"), "ok".into());
        }
    }
    // Integer ids are kept as their decimal strings.
    expected.insert("101".into(), "ok".into());
    expected.insert("102".into(), "ok".into());
    assert_eq!(documents(&python, &out), expected);
}
