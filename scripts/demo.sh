#!/usr/bin/env bash
# The main job on the embedded default: bootstrap (idempotent), then the demo corpus through the
# shipped default model, ending with a short summary of what was extracted.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$JEREX_ROOT"
scripts/bootstrap.sh
# The demo's input table, made from its committed text source when missing (jerex run never
# writes into its inputs).
if [ ! -f data/sample/sample.parquet ]; then
  cargo run --release --quiet --example sample_corpus -- \
    data/sample/sample.jsonl data/sample/sample.parquet
fi
# --overwrite: the demo always shows a fresh extraction, whatever an earlier run left in out/demo.
exec target/release/jerex run jobs/demo.toml --overwrite "$@"
