//! Output read back: the part files of a table folder, their record batches, whole tables, and
//! what the binary printed.

use std::path::{Path, PathBuf};
use std::process::Output;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::schema;

/// Every entry of `dir`, sorted; none when `dir` does not exist.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// The part files (`part-*`) of a table folder, sorted; none when it does not exist.
pub fn part_files(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect()
}

/// Every row of every output table of `out` as text, sorted, leaving out the columns named in
/// `ignore` (those that differ between runs of one job, such as `seconds`): tables compare as
/// multisets, so a lost or duplicated row shows.
pub fn table_rows(out: &Path, ignore: &[&str]) -> Vec<Vec<String>> {
    let options = FormatOptions::default();
    schema::TABLES
        .iter()
        .map(|t| {
            let mut rows = Vec::new();
            for path in files(&out.join(t)) {
                for batch in read_batches(&path) {
                    let columns: Vec<ArrayFormatter> = batch
                        .schema()
                        .fields()
                        .iter()
                        .zip(batch.columns())
                        .filter(|(f, _)| !ignore.contains(&f.name().as_str()))
                        .map(|(_, c)| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                        .collect();
                    for i in 0..batch.num_rows() {
                        let cells: Vec<String> =
                            columns.iter().map(|c| c.value(i).to_string()).collect();
                        rows.push(format!("{t}\t{}", cells.join("\t")));
                    }
                }
            }
            rows.sort();
            rows
        })
        .collect()
}

/// The record batches of one part file: Parquet (`.parquet`), else Arrow IPC.
pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    if path.extension().is_some_and(|e| e == "parquet") {
        parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(f, 4096)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    } else {
        arrow::ipc::reader::FileReader::try_new(f, None)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }
}

/// All rows of `table` under the output directory `out`, in part file order.
pub fn read_table(out: &Path, table: &str) -> RecordBatch {
    let batches: Vec<RecordBatch> = part_files(&out.join(table))
        .iter()
        .flat_map(|p| read_batches(p))
        .collect();
    concat_batches(&schema::table(table).arrow_schema(), &batches).unwrap()
}

/// A string column's values (`None` for nulls).
pub fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let a = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"))
        .as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
        .collect()
}

/// Bytes printed by a process, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// The exit code of a process that exited (not killed by a signal).
pub fn exit_code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

/// The stdout of a process that succeeded; otherwise fails with both its outputs.
pub fn success(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}
