//! Writes a JSON-lines text corpus (`{"id": ..., "text": ...}` per line) as an input table; the
//! demo's `data/sample/sample.parquet` is made this way from `sample.jsonl` by `scripts/demo.sh`:
//! `cargo run --release --example sample_corpus -- SOURCE.jsonl OUT.parquet`.
use std::path::PathBuf;

use anyhow::{bail, Result};
use jerex::tools::sample::{read_jsonl, write_input_parquet};

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [source, out] = &args[..] else {
        bail!("usage: sample_corpus SOURCE.jsonl OUT.parquet");
    };
    write_input_parquet(out, &read_jsonl(source)?)?;
    Ok(())
}
