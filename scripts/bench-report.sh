#!/usr/bin/env bash
# Regenerates docs/benchmarks.md on this machine: runs every benchmark of bitnet-bench into a
# results folder (JSON files with machine, date, commit and command), then writes the report
# and its SVG plots (docs/plots/); the JSON files are kept in docs/results/. Takes about half an hour on 2 cores; SOAK_SECONDS=600 adds
# the 10-minute serving soak (memory slope of the coordinator and two worker processes).
#
#   scripts/bench-report.sh [RESULTS_DIR]
#
# Environment: THREADS (default: physical cores), BUDGET_GB (sweep memory budget, default 8),
# SOAK_SECONDS (default 0: no soak), OUT (report file, default docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

RESULTS=${1:-bench-results/$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-docs/benchmarks.md}
BUDGET_GB=${BUDGET_GB:-8}
SOAK_SECONDS=${SOAK_SECONDS:-0}
mkdir -p "$RESULTS"

cargo build --release -p bitnet-bench -p bitnet-coordinator
B=target/release/bitnet-bench
T=()
if [[ -n "${THREADS:-}" ]]; then T=(--threads "$THREADS"); fi

run() { echo "+ $*" >&2; "$@"; }

run $B kernels "${T[@]}" --n 1,16 --json "$RESULTS/kernels.json"
run $B model --preset bitnet-2b4t "${T[@]}" --batch 1,4,16 --prompt-len 128 --gen-len 16 \
    --max-prefill-tokens 128 --json "$RESULTS/model-bitnet-2b4t.json"
run $B model --preset bitnet-2b4t "${T[@]}" --batch 1,16 --prompt-len 128 --gen-len 16 \
    --max-prefill-tokens 0 --lm-head int8 --json "$RESULTS/model-bitnet-2b4t-int8.json"
run $B model --preset llama-2b4t "${T[@]}" --batch 1,4 --prompt-len 128 --gen-len 6 \
    --max-prefill-tokens 128 --json "$RESULTS/model-llama-2b4t.json"
run $B model --preset bitnet-2b4t "${T[@]}" --sweep-to-memory --memory-budget "$BUDGET_GB" \
    --sweep-seq-len 512 --sweep-steps 3 --json "$RESULTS/sweep-2b4t.json"
run $B serve --preset bitnet-2b4t "${T[@]}" --concurrency 1,4,16,32 --prompts-per-concurrency 2 \
    --input-len 128 --output-len 64 --goodput ttft:5000,tpot:1000 --json "$RESULTS/serve-bitnet-2b4t.json"
run $B serve --launch --tp 2 --threads 1 --concurrency 1,8,32 --prompts-per-concurrency 4 \
    --input-len 64 --output-len 64 --json "$RESULTS/serve-demo-tp2.json"
if [[ "$SOAK_SECONDS" != 0 ]]; then
  run $B serve --launch --tp 2 --threads 1 --concurrency 16 --input-len 64 --output-len 64 \
      --num-prompts 256 --duration "$SOAK_SECONDS" --rss-interval 10 --json "$RESULTS/soak-demo-tp2.json"
fi
printf 'The quick brown fox jumps over the lazy dog.\nBitNet b1.58 stores every weight in 1.58 bits.\n' > "$RESULTS/ppl.txt"
run $B ppl --model tests/fixtures/bitnet-packed/model --text "$RESULTS/ppl.txt" --seqlen 64 \
    "${T[@]}" --json "$RESULTS/ppl-fixture.json"

# The JSON files travel with the report (docs/results) so every figure can be traced.
rm -rf docs/results && mkdir -p docs/results && cp "$RESULTS"/*.json docs/results/
run $B report docs/results --out "$OUT" --note "Produced on this machine by \`scripts/bench-report.sh\` (results in \`docs/results\`). The \`bitnet-*\` and \`llama-*\` presets are random weights of the published shapes, run by the same engine; the perplexity row is a tiny random test fixture (the command for real checkpoints is the same). The GPU sections arrive with docs/gpu-results.md."
echo "wrote $OUT"
