#!/usr/bin/env bash
# CUDA checks that need no GPU (called by .ci/run):
#   1. installs the NVRTC / CUDA headers / ptxas wheels pinned to CUDA 13.0 (the toolkit the
#      code targets: cudarc feature cuda-13000, driver 580 on the GPU machines) into a cached
#      folder (pip --target; reused while the pins do not change);
#   2. compiles every kernels/cuda/*.cu to PTX for sm_80 and sm_90 (and sm_90a where a source
#      asks for it) with NVRTC, assembles with `ptxas -v`, prints registers and spills per
#      kernel, and fails on a compile error or an unexpected spill (scripts/nvrtc_check.py);
#   3. runs the Rust NVRTC path (kernels/tests/cuda_start.rs: every source to a cached cubin,
#      and CudaBackend::new() failing cleanly without a GPU);
#   4. `cargo build --release --features cuda,nccl` (the GPU-enabled bitnet-cluster and
#      bitnet-bench) and clippy on the cuda,nccl build.
# Options: --kernels-only (steps 1-2). Environment: BITNET_CUDA_TOOLS (the wheel folder;
# default ~/.cache/bitnet-cuda/cuda-13.0.88), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

KERNELS_ONLY=0
[[ "${1:-}" == "--kernels-only" ]] && KERNELS_ONLY=1

PYTHON="${PYTHON:-python3}"
# Pins: CUDA 13.0 (keep in step with the cudarc feature in Cargo.toml).
PINS=(nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvcc==13.0.88
      nvidia-cuda-cccl==13.0.85)
TOOLS="${BITNET_CUDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/bitnet-cuda/cuda-13.0.88}"
STAMP="$TOOLS/.pins"

if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "check-cuda: $PYTHON not found (needed to install the NVRTC wheels)" >&2
    exit 1
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "${PINS[*]}" ]]; then
    echo "== check-cuda: installing ${PINS[*]} into $TOOLS"
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        echo "check-cuda: pip is missing: install it (python3 -m ensurepip) first" >&2
        exit 1
    fi
    rm -rf "$TOOLS.tmp"
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$TOOLS.tmp" "${PINS[@]}"
    rm -rf "$TOOLS"
    mv "$TOOLS.tmp" "$TOOLS"
    echo "${PINS[*]}" >"$STAMP"
fi
CU="$TOOLS/nvidia/cu13"
for f in "$CU/lib/libnvrtc.so.13" "$CU/bin/ptxas" "$CU/include/cuda_fp16.h"; do
    [[ -e "$f" ]] || { echo "check-cuda: $f is missing from the wheels" >&2; exit 1; }
done
export LD_LIBRARY_PATH="$CU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== check-cuda: NVRTC → PTX → ptxas -v (sm_80, sm_90)"
"$PYTHON" scripts/nvrtc_check.py --lib "$CU/lib" --ptxas "$CU/bin/ptxas" --src kernels/cuda
[[ $KERNELS_ONLY == 1 ]] && exit 0

echo "== check-cuda: Rust NVRTC path and clean start-up errors (kernels/tests/cuda_start.rs)"
BITNET_REQUIRE_NVRTC=1 cargo test --release -p bitnet-kernels --features cuda --test cuda_start \
    -- --nocapture
echo "== check-cuda: cargo build --release --features cuda,nccl"
cargo build --release --features cuda,nccl
echo "== check-cuda: cargo clippy --workspace --all-targets --features cuda,nccl -- -D warnings"
cargo clippy --workspace --all-targets --features cuda,nccl -- -D warnings
echo "check-cuda: ok"
