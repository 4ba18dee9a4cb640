#!/usr/bin/env bash
# One GPU call of a benchmark lease (issues 13 and 14): `make bench`'s parts side by side, one bench process
# per GPU, each pinned to its GPU and cut at the call's limit, so a whole `make bench` fits a lease of
# 2x H200 in three calls (a part alone can take most of one: the train part compiles every family).
#   BENCH0="--parts blocks" BENCH1="--parts decode" bash scripts/bench_session.sh $OUT SECONDS
# BENCHk: the arguments of `python3 -m sessa_bench.bench --preset gpu` on GPU k (unset: GPU k idles); each
# writes its own <device>.md/.csv/.png under $OUT/gpuK (the bench writes as it goes: a cut keeps the finished
# rows, marked partial) and its log to $OUT/gpuK.log. Back here, copy each .md/.csv into results/bench/ under
# a name that says its part and date (as nvidia-h200-blocks-2026-11-30.md). A plan for three calls:
#   1: BENCH0="--parts blocks"                        BENCH1="--parts decode"
#   2: BENCH0="--parts train --families sessa"        BENCH1="--parts train --families transformer"
#   3: BENCH0="--parts train --families mamba2"       BENCH1="--parts profile"
# Start the command with `source .wheelhouse/bootstrap.sh .wheelhouse` and carry .triton-cache.tar.gz (as
# scripts/gpu_session.sh does: unpacked, mamba_ssm's kernels are not compiled and autotuned again).
set -uo pipefail
usage="usage: BENCH0=\"...\" BENCH1=\"...\" bench_session.sh OUT SECONDS"
out=${1:?$usage} budget=${2:?$usage}
source "$(dirname "$0")/device_call.sh"
refuse_long_call bench_session.sh "$budget"
mkdir -p "$out"
device_env
limit=$(( budget - 20 ))  # 20 s to collect the tails
pids=()
for k in 0 1; do
  var="BENCH$k"
  [[ -n ${!var:-} ]] || continue
  mkdir -p "$out/gpu$k"
  # shellcheck disable=SC2086  # the arguments are words
  CUDA_VISIBLE_DEVICES=$k timeout -k 10 "$limit" python3 -m sessa_bench.bench --preset gpu ${!var} \
    --out-dir "$out/gpu$k" > "$out/gpu$k.log" 2>&1 &
  pids+=("$k:$!")
done
for p in "${pids[@]}"; do
  wait "${p#*:}"
  echo "## GPU ${p%%:*} (BENCH${p%%:*}): exit $? (124: cut at $limit s)"
  tail -5 "$out/gpu${p%%:*}.log"
done
