#!/usr/bin/env bash
# Training throughput: `jerex train` with the default model's settings (models/default/README.md)
# on the labelled Re-DocRED dev file for a few minutes, then one JSON line with documents/s and
# peak memory. The reference implementation trains at 1.1 documents/s on this machine.
# Usage: scripts/bench_train.sh [MINUTES (default 3)] [extra jerex train flags...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$JEREX_ROOT"
scripts/bootstrap.sh
minutes=${1:-3}
shift || true
data=../shared/data
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# No validation set: the figure is training alone (steps, sampling, optimizer), not evaluation.
target/release/jerex train --train "$data/redocred/dev_revised.json" \
  --rel-info "$data/docred/rel_info.json" -o "$out/model" \
  --epochs 14 --batch-size 4 --freeze-word-embeddings --attention-dropout 0 --lr 1.5e-4 \
  --seed 42 --max-minutes "$minutes" "$@" 2>"$out/log" >"$out/summary.json"
.venv/bin/python - "$out/summary.json" "$minutes" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(json.dumps({
    "minutes": float(sys.argv[2]),
    "train_documents_trained": round(s["train_docs_per_second"] * s["train_seconds"]),
    "train_docs_per_s": round(s["train_docs_per_second"], 3),
    "vs_reference_1_1_docs_per_s": round(s["train_docs_per_second"] / 1.1, 2),
    "peak_rss_mib": s["peak_rss_mib"],
}))
PY
