#!/usr/bin/env bash
# Fashion-MNIST rows of the results table on a lent GPU machine, in one call of the `device`
# tool (see docs/results.md, "Where the figures come from"). Every run is the runner's own
# `deepcluster` command (device auto = the GPU), each in its own runner process so that they
# share the GPU; finished runs land in OUT/runs.jsonl (the runner's store format, with the
# GPU's name), to be appended to docs/results/runs.jsonl here.
#
#   bash tests/results/device_fmnist.sh OUT SECONDS DATA_DIR
#
# DATA_DIR holds fmnist.parquet and the seed-0 autoencoder ae_s0.pt (so seed 0's runs share
# the autoencoder of the CPU rows). Runs still going after SECONDS are stopped and left out.
# Settings (environment): TIMING=0 skips the per-epoch timings; SEED0 (the methods on seed 0)
# and SEEDS12 (on seeds 1 and 2, after their autoencoders) are space-separated method lists;
# TESTS=N also runs the test suite on the GPU for at most N seconds. The seeds' autoencoders
# are copied into OUT as soon as they are trained, for the runs left to the CPU.
set -u
OUT=${1:?OUT}
LIMIT=${2:?SECONDS}
SRC=${3:?DATA_DIR}
START=$(date +%s)
PY=${PY:-python3}
DATA=$HOME/.cache/deepcluster-data
WORK=$HOME/.cache/deepcluster-results
mkdir -p "$DATA" "$WORK/fmnist" "$OUT/logs" "$OUT/store"
cp "$SRC/fmnist.parquet" "$DATA/"
cp "$SRC/ae_s0.pt" "$WORK/fmnist/"

# `deepcluster` as the runner calls it: the installed entry point, else a launcher of this tree
if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 ||
    ! [ -x "$(dirname "$(command -v "$PY")")/deepcluster" ]; then
    mkdir -p /tmp/dcbin
    printf '#!/bin/sh\nexec %s -m deepcluster_cli "$@"\n' "$(command -v "$PY")" >/tmp/dcbin/deepcluster
    chmod +x /tmp/dcbin/deepcluster
    export DEEPCLUSTER_BIN=/tmp/dcbin PYTHONPATH=$PWD
fi
DC=${DEEPCLUSTER_BIN:-$(dirname "$(command -v "$PY")")}/deepcluster
echo "deepcluster: $DC"

left() { echo $((LIMIT - ($(date +%s) - START))); }

# runner NAME SEEDS METHODS: one runner process, its own store and log
runner() {
    local t
    t=$(left)
    if [ "$t" -le 5 ]; then return; fi
    timeout "$t" "$PY" tests/results/run.py --sets fmnist --seeds "$2" --methods "$3" \
        --threads 1 --store "$OUT/store/$1.jsonl" --out "/tmp/table_$1.md" \
        >"$OUT/logs/$1.log" 2>&1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/logs/gpu.txt"

# 1. per-epoch GPU times, each run alone on the GPU (3 epochs; json progress on stderr)
timing() {
    local name=$1
    shift
    local t
    t=$(left)
    if [ "$t" -gt 120 ]; then t=120; fi
    if [ "$t" -le 5 ]; then return; fi
    timeout "$t" "$DC" "$@" --label-column label --threads 1 --log-format json \
        >"$OUT/logs/timing_$name.log" 2>&1
}
if [ "${TIMING:-1}" = 1 ]; then
timing pretrain pretrain "$DATA/fmnist.parquet" --epochs 3 --seed 9 -o /tmp/t_ae.pt
timing dec train "$DATA/fmnist.parquet" -m dec -k 10 --epochs 3 --seed 0 \
    --pretrained "$WORK/fmnist/ae_s0.pt" -o /tmp/t_dec.pt
timing cnet train "$DATA/fmnist.parquet" -m cnet -k 10 --preset fmnist --epochs 3 --seed 0 \
    --pretrained "$WORK/fmnist/ae_s0.pt" -o /tmp/t_cnet.pt
fi

# the test suite on the GPU (device auto), beside the runs
if [ -n "${TESTS:-}" ]; then
    timeout "$TESTS" "$PY" -m pytest -v -rf -n 4 -p no:cacheprovider --timeout 120 \
        >"$OUT/logs/pytest.txt" 2>&1 &
fi

# 2. seeds 1 and 2: the autoencoder (through aekm), then the methods in parallel
seed() {
    runner "ae$1" "$1" aekm
    cp "$WORK/fmnist/ae_s$1.pt" "$OUT/" 2>/dev/null
    for m in ${SEEDS12-cnet dec dcn ckm idec}; do
        runner "${m}$1" "$1" "$m" &
    done
    wait
}
seed 1 &
seed 2 &
if [ -n "${KMEANS12-1}" ]; then runner kmeans12 1,2 kmeans & fi
# 3. seed 0: the methods not yet measured there (its autoencoder came from the CPU)
for m in ${SEED0-idec vade kdae kdvae repnet cm dgg}; do
    runner "${m}0" 0 "$m" &
done
wait

cat "$OUT"/store/*.jsonl >"$OUT/runs.jsonl" 2>/dev/null
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs store
rm -rf "$OUT/logs" "$OUT/store"
echo "done in $(($(date +%s) - START)) s"
