#!/usr/bin/env bash
# The GPU check of issue 6, in two halves:
#   here (no GPU):   scripts/gpu-check.sh build
#       builds the release test binaries (feature cuda,nccl) and bitnet-cluster / bitnet-bench
#       into gpu-bundle/ (git-ignored), with the fixtures they read, to carry to a GPU machine;
#   on the GPU:      scripts/gpu-check.sh run   (default when nvidia-smi is present)
#       runs from gpu-bundle/: the CUDA kernel parity suite (BITNET_REQUIRE_CUDA=1: no GPU or
#       zero CUDA cases fails; paged attention included), the device collectives, sampling on
#       the GPU against the CPU sampler, the fixture logits on CudaBackend and through the
#       device-resident CUDA model (logits, greedy ids, chunked batches, TP = 2 on one GPU), a
#       generate, `up` (also --tp 2 sharing one GPU over the host-staged collective) and the
#       benchmarks with --device cuda (kernels, model, and the batch sweep to the memory limit
#       at sequence 512 for the 2B-4T and 3B shapes), and writes docs/gpu-results.md (date, card,
#       driver, every figure, each step's status). NVRTC / cuBLAS / NCCL come from the CUDA
#       install there, or from pip wheels in gpu-bundle/wheels (see README "GPU checks").
set -uo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-}"
if [[ -z "$MODE" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1; then MODE=run; else MODE=build; fi
fi
BUNDLE=gpu-bundle

if [[ "$MODE" == build ]]; then
    set -e
    rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin"
    # Test binaries: cargo prints each executable it built as JSON; keep the ones we run.
    cargo test --release --features cuda,nccl --no-run --message-format=json \
        -p bitnet-kernels -p bitnet-worker -p bitnet-tests 2>/dev/null |
        python3 -c '
import json, sys, shutil
keep = {"parity_cuda", "cuda_start", "collective_cuda", "sampling_cuda", "cuda_device_forward"}
for line in sys.stdin:
    m = json.loads(line)
    exe = m.get("executable")
    if m.get("reason") == "compiler-artifact" and exe and m["target"]["name"] in keep:
        crate = m["package_id"].split("#")[0].rstrip("/").split("/")[-1]
        dst = f"'"$BUNDLE"'/bin/{crate}-{m[\"target\"][\"name\"]}"
        shutil.copy(exe, dst)
        print("gpu-check: bundled", dst)
'
    cargo build --release --features cuda,nccl --bin bitnet-cluster --bin bitnet-bench
    cp target/release/bitnet-cluster target/release/bitnet-bench "$BUNDLE/bin/"
    du -sh "$BUNDLE"
    echo "gpu-check: carry gpu-bundle/ (and tests/fixtures, tracked) and run: scripts/gpu-check.sh run"
    exit 0
fi

[[ "$MODE" == run ]] || { echo "usage: scripts/gpu-check.sh [build|run]" >&2; exit 2; }
[[ -d "$BUNDLE/bin" ]] || { echo "gpu-check: no $BUNDLE/bin: run 'scripts/gpu-check.sh build' first" >&2; exit 1; }
# Optional wheels (NVRTC / cuBLAS / NCCL for CUDA 13) carried in gpu-bundle/wheels.
if compgen -G "$BUNDLE/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/bitnet-cuda-libs "$BUNDLE"/wheels/*.whl
    for d in /tmp/bitnet-cuda-libs/nvidia/*/lib; do LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
    [[ -e /tmp/bitnet-cuda-libs/nvidia/nccl/lib/libnccl.so.2 ]] &&
        ln -sf libnccl.so.2 /tmp/bitnet-cuda-libs/nvidia/nccl/lib/libnccl.so
    export LD_LIBRARY_PATH
fi
export BITNET_REQUIRE_CUDA=1 BITNET_CUDA_CACHE="${BITNET_CUDA_CACHE:-/tmp/bitnet-cuda-cache}"
OUTDIR="${OUT:-/tmp}/gpu-check"
mkdir -p "$OUTDIR"
RESULTS=docs/gpu-results.md
CARD="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
{
    echo "# GPU results"
    echo
    echo "Written by \`scripts/gpu-check.sh run\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "- card, driver, memory: $CARD"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "| step | status | seconds | summary |"
    echo "|---|---|---|---|"
} >"$RESULTS.tmp"
FAILED=0
SUMMARY='cases|fixtures|max \|Δlogit\||test result|GB/s|tok/s|error'
step() { # name, command...
    step_with "$SUMMARY" "$@"
}
step_with() { # summary pattern (grep -E over the log, last 4 lines kept), name, command...
    local pattern="$1" name="$2"; shift 2
    local log="$OUTDIR/$name.log" start=$SECONDS status=pass
    echo "== gpu-check: $name: $*"
    if ! "$@" >"$log" 2>&1; then status=FAIL; FAILED=1; fi
    local summary
    summary="$(grep -E "$pattern" "$log" | tail -4 | tr '\n' ';' | sed 's/|/\\|/g')"
    echo "| $name | $status | $((SECONDS - start)) | ${summary:0:400} |" >>"$RESULTS.tmp"
    tail -20 "$log"
}
B="$BUNDLE/bin"
step cuda-start "$B/bitnet-kernels-cuda_start" --nocapture --test-threads=1
step kernel-parity "$B/bitnet-kernels-parity_cuda" --nocapture --test-threads=1
step collectives "$B/bitnet-worker-collective_cuda" --nocapture --test-threads=1
step sampling "$B/bitnet-worker-sampling_cuda" --nocapture --test-threads=1
step fixture-logits "$B/bitnet-tests-parity_cuda" --nocapture
step device-forward "$B/bitnet-tests-cuda_device_forward" --nocapture
step generate "$B/bitnet-cluster" generate --device cuda --prompt "Hello" --max-new-tokens 16 --json
step up-generate bash -c "'$B/bitnet-cluster' up --device cuda --port 50557 & pid=\$!; \
    sleep 5; '$B/bitnet-cluster' generate --server 127.0.0.1:50557 --prompt Hello --json; rc=\$?; \
    kill \$pid; wait \$pid; exit \$rc"
step up-tp2-one-gpu bash -c "CUDA_VISIBLE_DEVICES=0 '$B/bitnet-cluster' up --device cuda --tp 2 \
    --port 50558 & pid=\$!; sleep 10; '$B/bitnet-cluster' generate --server 127.0.0.1:50558 \
    --prompt Hello --json; rc=\$?; kill \$pid; wait \$pid; exit \$rc"
step bench-kernels "$B/bitnet-bench" kernels --device cuda --json "$OUTDIR/kernels.json"
step bench-model-2b4t "$B/bitnet-bench" model --device cuda --preset bitnet-2b4t --batch 1 \
    --prompt-len 128 --json "$OUTDIR/model-2b4t.json"
step bench-model-llama "$B/bitnet-bench" model --device cuda --preset llama-2b4t --batch 1 \
    --prompt-len 128 --json "$OUTDIR/model-llama.json"
# The paper's Table 3 protocol on this GPU: the largest batch of 512-token sequences that fits
# (device free memory less a margin), BitNet and the FP16 LLaMA of the same shape; the summary
# keeps the `sweep:` line (both largest batches, their tok/s and the ratios) and any OOM note.
for shape in 2b4t 3b; do
    step_with '^sweep:|^note:|^error' "bench-sweep-$shape" "$B/bitnet-bench" model --device cuda \
        --preset "bitnet-$shape" --sweep-to-memory --sweep-seq-len 512 \
        --json "$OUTDIR/sweep-$shape.json"
done
{
    echo
    echo "Logs of every step: \`\$OUT/gpu-check/<step>.log\` of the run (not kept in the repository)."
} >>"$RESULTS.tmp"
mv "$RESULTS.tmp" "$RESULTS"
cp "$RESULTS" "$OUTDIR/" 2>/dev/null || true
cat "$RESULTS"
exit $FAILED
