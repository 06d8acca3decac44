#!/usr/bin/env bash
# The quality cost of long documents (docs/performance.md): Re-DocRED dev documents scored one by
# one, and joined N at a time (gold annotations shifted) into long documents scored end to end
# with the strict metrics, both whole (quadratic, what jerex did before segments) and in
# segments. Prints one markdown table row per run: mention, coreference, entity, relation F1
# (precision/recall for relations).
#
#   scripts/long_quality.sh [MODEL_DIR]
#
# Held-out: the last 50 documents of dev_revised.json, which the default model never trained on
# (its card: trained on the first 450). All: the 500 documents, 450 of them training documents,
# so their absolute scores are inflated; only the differences between rows mean something.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$JEREX_ROOT"
MODEL="${1:-models/default}"
DEV=../shared/data/redocred/dev_revised.json
JEREX=target/release/jerex
[ -x "$JEREX" ] || cargo build --release --bin jerex
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -c "import json, sys; json.dump(json.load(open(sys.argv[1]))[450:], open(sys.argv[2], 'w'))" \
  "$DEV" "$TMP/heldout.json"

echo "| documents | joined | prediction | words/doc | mention | coref | entity | relation P / R / F1 | seconds |"
echo "|---|---|---|---|---|---|---|---|---|"
row() {
  local label=$1 data=$2 concat=$3 how=$4; shift 4
  local start end
  start=$(date +%s.%N)
  "$JEREX" eval --model "$MODEL" --data "$data" --end-to-end --concat "$concat" "$@" \
    > "$TMP/out.json" 2> "$TMP/err.txt" || { cat "$TMP/err.txt" >&2; exit 1; }
  end=$(date +%s.%N)
  python3 - "$TMP/out.json" "$label" "$concat" "$how" "$data" "$start" "$end" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
label, concat, how, data, start, end = sys.argv[2:8]
docs = json.load(open(data))
words = sum(len(s) for doc in docs for s in doc["sents"]) / max(1, d["documents"])
f = lambda k: "%.2f" % d[k]["f1"]
r = d["relation"]
print(f"| {label} | {concat} | {how} | {words:.0f} | {f('mention')} | {f('coreference')} | "
      f"{f('entity')} | {r['precision']:.2f} / {r['recall']:.2f} / {r['f1']:.2f} | "
      f"{float(end) - float(start):.0f} |")
EOF
}
H="$TMP/heldout.json"
row "held-out 50" "$H" 1 "one by one"
for n in 10 50; do
  row "held-out 50" "$H" "$n" "whole" --whole-pieces 100000000
  row "held-out 50" "$H" "$n" "segments (default)"
  row "held-out 50" "$H" "$n" "segments of 892" --segment-pieces 892
done
row "all 500" "$DEV" 1 "one by one"
row "all 500" "$DEV" 20 "whole" --whole-pieces 100000000
row "all 500" "$DEV" 20 "segments (default)"
row "all 500" "$DEV" 20 "segments of 892" --segment-pieces 892
row "all 500" "$DEV" 20 "segments, overlap 64" --overlap-pieces 64
row "all 500" "$DEV" 20 "segments, overlap 192" --overlap-pieces 192
