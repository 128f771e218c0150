#!/usr/bin/env bash
# On a machine with a CUDA device, in under 5 minutes: the test suite's GPU-marked tests, then the
# 1.3B preset's KV-cached chunk latency against recompute at 480x832 in bf16, with its MFU.
# Run in the project's environment: bash bench/gpu_check.sh (PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" - <<'PY' || { echo "gpu_check: no CUDA device here; nothing to check" >&2; exit 2; }
import sys, torch
sys.exit(0 if torch.cuda.is_available() else 1)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
echo "== GPU-marked tests"
"${PYTHON:-python}" -m pytest -q -m gpu -p no:cacheprovider tests
echo "== 1.3B streaming step, bf16, 480x832"
"${PYTHON:-python}" bench/gpu_check.py --device cuda "$@"
