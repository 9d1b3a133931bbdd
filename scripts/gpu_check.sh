#!/usr/bin/env bash
# One go on a GPU machine (< 10 min): the `gpu` tests, then the GPU benchmarks.
#   scripts/gpu_check.sh [OUT_DIR]       (default gpu_check_out/)
# Needs a CUDA build of torch; TensorRT (pip install "tensorrt<11") for the engine parts;
# onnxruntime-gpu for ONNX Runtime on CUDA. Results: OUT_DIR/*.json and OUT_DIR/pytest.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export PASTA_THREADS=${PASTA_THREADS:-4}
status=0
"$PY" - <<'PYEOF' | tee "$OUT/env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
for m in ("tensorrt", "onnxruntime"):
    try:
        mod = __import__(m)
        print(m, mod.__version__, getattr(mod, "get_available_providers", lambda: "")())
    except ImportError:
        print(m, "not installed")
PYEOF
timeout 300 "$PY" -m pytest -q -m gpu tests -rs 2>&1 | tee "$OUT/pytest.txt" || status=1
timeout 150 "$PY" -m pasta_ros.cli -q bench frame --device cuda --repeats 30 \
    --json "$OUT/bench_frame_cuda.json" || status=1
timeout 120 "$PY" -m pasta_ros.cli -q bench backends --backend tensorrt --repeats 30 \
    --json "$OUT/bench_backends_tensorrt.json" || status=1
echo "gpu_check: exit $status; results in $OUT/"
exit $status
