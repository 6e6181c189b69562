#!/usr/bin/env bash
# Issues 11 and 12's GPU checks as one run, for a session lent a GPU (CUDA here, the same code as Metal).
# Install MLX's CUDA backend first (../shared/gpu/README.md: stage.sh, then two device calls), then:
#
#   export PYTHONPATH=/tmp/site:$PWD; PEAK=989 bash benchmarks/gpu_checks.sh      # PEAK: dense bf16 TFLOP/s
#
# Each step has its own timeout and writes its log under $OUT (default gpu_results), so a cut-off
# run still brings back what finished. About 8 minutes in all on an H200 (kernel JIT included).
set -uo pipefail
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MLX_ENABLE_TF32=0  # TF32 matmuls would miss float32 parity

step() {  # step NAME SECONDS COMMAND...
  local name=$1 seconds=$2
  shift 2
  echo "== $name ($(date +%T))"
  timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
  echo "rc=$?" >>"$OUT/$name.log"
  tail -n 6 "$OUT/$name.log"
}

python3 -c "import mlx.core as mx; print('mlx', mx.__version__, mx.default_device(), mx.device_info())"
# Parity of everything the GPU path changes: fused QKV, shapeless kernels, slicing, no-mask attention.
step tests 240 python3 -m pytest -q -p no:cacheprovider tests/test_parity.py tests/test_compile.py \
  tests/test_memory.py tests/test_gradients.py tests/test_inputs.py -k "not live"
step packed 120 python3 -m pytest -q -p no:cacheprovider tests/test_pipelines.py -k "packed or embeddings"
# Speed, memory against the bound, TFLOP/s, time to first result; then each candidate on its own.
step bench 240 python3 benchmarks/bench.py --device gpu --dtypes bfloat16 --batch 1,32,256 --seq 128 \
  --train --first --peak-tflops "${PEAK:-790}" --out "$OUT/bench"
step bench512 120 python3 benchmarks/bench.py --device gpu --dtypes bfloat16 --batch 64 --seq 512 \
  --peak-tflops "${PEAK:-790}" --out "$OUT/bench512"
step fused 120 python3 benchmarks/bench.py --device gpu --dtypes bfloat16 --batch 256 --seq 128 \
  --fuse-qkv --no-padding --torch sdpa --peak-tflops "${PEAK:-790}" --out "$OUT/fused"
step nomask 120 python3 benchmarks/bench.py --device gpu --dtypes bfloat16 --batch 256 --seq 128 \
  --no-padding --torch sdpa --peak-tflops "${PEAK:-790}" --out "$OUT/nomask"
# Issue 12: batching's gain where the forward is not CPU-bound (needs the [serve] extra: starlette, uvicorn).
step serve 150 python3 benchmarks/serve_load.py --clients 1,32 --seconds 5 --repeats 2 --out "$OUT/serve"
echo "results under $OUT: bench*/bench-gpu.md, serve/serve_load.json, *.log"
