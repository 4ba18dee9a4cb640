#!/usr/bin/env bash
# One call on a 4-GPU machine (nvidia-h200-x4), at most ~8.5 minutes, for issue 15's GPU evidence and a first short
# learning-rate sweep of Table 1's SymbolSoup on the official generator (issue 12):
#   1. scripts/ddp_check.py on GPUs 0,1: one run on 2 GPUs (trainer=ddp) against the same run on 1 GPU;
#   2. scripts/gpu_busy.py around `python -m sessa_bench.runs` spreading 9 short runs (3 families x 3 learning
#      rates, seed 0) over all 4 GPUs, up to 3 per GPU, sampling nvidia-smi.
# Usage (from the repo root, .wheelhouse carried): bash scripts/gpu_scaleout_session.sh $OUT [sweep steps]
# Writes to $OUT: ddp_check.md, ddp.log, gpu_util.csv, busy.log, sweep_runs.tar.gz (run folders without
# checkpoints) and summary.md (the short tables, also printed last).
set -uo pipefail
out=${1:?usage: gpu_scaleout_session.sh OUT [steps]}
steps=${2:-300}
cd "$(dirname "$0")/.."
source .wheelhouse/bootstrap.sh .wheelhouse >/dev/null
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
export PYTHONPATH=.
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader > "$out/gpus.txt"

CUDA_VISIBLE_DEVICES=0,1 timeout 240 python3 scripts/ddp_check.py --out "$out" --model transformer \
    --steps 300 --batch-size 64 > "$out/ddp.log" 2>&1
echo "ddp_check exit $?" >> "$out/ddp.log"

runs=/tmp/sweep_runs
timeout 270 python3 scripts/gpu_busy.py --log "$out/gpu_util.csv" --skip 60 -- \
    python3 -m sessa_bench.runs --jobs-per-gpu 3 experiment=table1_symbol_soup \
    model=sessa,transformer,mamba2 optim.lr=1e-4,3e-4,1e-3 seed=0 results_dir=$runs \
    experiment_name=sweep_short_symbol_soup 'run_name=${model.family}-lr${optim.lr}-s${seed}' \
    trainer.max_steps=$steps trainer.val_check_interval=$((steps / 3)) \
    callbacks.checkpoint.every_n_steps=$steps > "$out/busy.log" 2>&1
echo "gpu_busy exit $?" >> "$out/busy.log"
tar czf "$out/sweep_runs.tar.gz" --exclude='*.ckpt' -C "$runs" . 2>/dev/null

{
  echo "## ddp_check"; cat "$out/ddp_check.md" 2>/dev/null || tail -20 "$out/ddp.log"
  echo; echo "## GPU utilisation"; tail -12 "$out/busy.log"
  echo; echo "## sweep (val/acc at the last step, from summary.json)"
  python3 - "$runs" <<'PY'
import json, sys, pathlib
for p in sorted(pathlib.Path(sys.argv[1]).glob("*/*/summary.json")):
    s = json.loads(p.read_text())
    print(f"{p.parent.name:28s} steps {s['steps']:5d} val/acc {s['final'].get('val/acc', float('nan')):.4f} "
          f"test/acc {s['final'].get('test/acc', float('nan')):.4f} tok/s {s.get('throughput_tokens_per_s') or 0:,.0f}"
          f" gpu {s.get('placement')}")
PY
} | tee "$out/summary.md"
