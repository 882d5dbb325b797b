#!/usr/bin/env bash
# The checks to run first on a lent GPU (docs/scaling.md, "CUDA graphs on a GPU"), in one call
# of the device tool, about 3 minutes on an H200:
#   1. the CUDA-path tests (make test-gpu: tests/test_gpu.py);
#   2. the per-step benchmark, eager against replayed CUDA graphs (bench_gpu_step.py);
#   3. one whole `deepcluster pretrain` (Fashion-MNIST's shape, 70,000 x 784 random rows) timed
#      with CUDA graphs and without (DEEPCLUSTER_CUDA_GRAPHS=0), seconds per epoch from its log.
#
#   bash tests/bench/gpu_check.sh "$OUT"        # there: python3 is the machine's PyTorch
#   DEVICE=cpu ROWS=2000 EPOCHS=2 bash tests/bench/gpu_check.sh /tmp/check   # checks the script
#
# Settings: PYTHON (python3), DEVICE (cuda), ROWS (70000), EPOCHS (5). Results in OUT:
# tests.txt, gpu_step.json, pretrain.txt; everything big stays in a temporary folder.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT_DIR}
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
rows=${ROWS:-70000}
epochs=${EPOCHS:-5}
here=$(cd "$(dirname "$0")/../.." && pwd -P)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"
cd "$here" || exit 2
export PYTHONUNBUFFERED=1 PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version --format=csv,noheader

echo "## 1. make test-gpu"
workers=()
"$py" -c "import xdist" 2>/dev/null && workers=(-n 4)
DEEPCLUSTER_TEST_GPU=1 DEEPCLUSTER_TEST_GPU_DEVICE="$device" timeout 150 \
    "$py" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider "${workers[@]}" \
    > "$out/tests.txt" 2>&1
echo "rc $?: $(tail -n 1 "$out/tests.txt")"

echo "## 2. bench_gpu_step.py"
quick=()
[ "$device" = cpu ] && quick=(--quick)
timeout 120 "$py" tests/bench/bench_gpu_step.py --device "$device" --repeats 3 \
    --batches 256,175 --json "$out/gpu_step.json" "${quick[@]}" 2>&1 | tail -n 4

echo "## 3. deepcluster pretrain, $rows x 784, $epochs epochs, with and without CUDA graphs"
"$py" -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(0).random(($rows, 784), dtype=np.float32))" \
    "$work/rows.npy"
for graphs in 1 0; do
    start=$(date +%s.%N)
    DEEPCLUSTER_CUDA_GRAPHS=$graphs "$py" -m deepcluster_cli pretrain "$work/rows.npy" \
        --epochs "$epochs" --device "$device" --log-format json -o "$work/ae$graphs.pt" \
        2> "$work/log$graphs.jsonl"
    rc=$?
    wall=$("$py" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" \
        "$start" "$(date +%s.%N)")
    epochs_s=$("$py" -c "
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
print(' '.join(f\"{r['seconds']:.3f}\" for r in rows if r.get('event') == 'epoch'))" \
        "$work/log$graphs.jsonl")
    echo "graphs=$graphs rc=$rc wall ${wall} s; seconds per epoch: $epochs_s" | tee -a "$out/pretrain.txt"
done
