#!/usr/bin/env bash
# One-command GPU verification (issue 13): install the gpu extra, run the CuPy test matrix,
# compare device gradients with the CPU's and time the P1 MLP and a conv ODE block
# (benchmarks/gpu_check.py). Everything within about 8 minutes on one GPU; the summary goes to
# ${OUT:-.}/gpu_check.json and the test log to ${OUT:-.}/gpu_tests.log.
# Usage (repository root, CUDA 12 machine): bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
python -m pip install --quiet -e ".[gpu,test]" || { echo "pip install of the gpu extra failed"; exit 2; }
python -c "import cupy; print('CuPy', cupy.__version__, 'devices:', cupy.cuda.runtime.getDeviceCount())" \
    || { echo "CuPy cannot see a CUDA device"; exit 2; }
status=0
timeout 300 python -m pytest -q -n 4 -m "gpu" -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.log" | tail -5 \
    || status=1
timeout 240 python benchmarks/gpu_check.py --backend cupy --out "$out/gpu_check.json" || status=1
exit $status
