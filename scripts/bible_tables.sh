#!/usr/bin/env bash
# Table 2 and then the ablation on the King James Bible (the offline stand-in for SimpleStories: `make
# table2-bible ablation-bible`), the whole protocol within SECONDS, for a lease's BESIDE or TAIL:
#   BESIDE="bash scripts/bible_tables.sh /tmp/paper_runs /tmp/session/tables 1500"
# Their runs are short (300 steps of 64 x 256 tokens), so one per GPU beside the Table 1 runs
# (BIBLE_PER_GPU, default 1) finishes both tables in a lease; each table gets what is left of SECONDS as its
# --time-limit, so a run that cannot finish does not start. Run folders go to RUNS, the tables to OUT; more
# arguments are overrides for both tables' runs (a CPU dry run: trainer=cpu budget=tiny trainer.max_steps=5).
set -uo pipefail
usage="usage: bible_tables.sh RUNS OUT SECONDS [OVERRIDES...]"
runs=${1:?$usage} out=${2:?$usage} limit=${3:?$usage}
shift 3
end=$(( $(date +%s) + limit ))
# the Makefile's BIBLE_ARGS (tests/test_gpu_session_script.py keeps the two equal), without the probe
bible=(task=bible trainer.max_steps=300 trainer.val_check_interval=50 callbacks.checkpoint.every_n_steps=100)
for table in table2 ablation; do
  left=$(( end - $(date +%s) - 30 ))  # 30 s to write the table
  if (( left < 60 )); then echo "bible_tables: $table not started (${left} s left)"; break; fi
  python3 -m sessa_bench.tables "$table" --run --jobs-per-gpu "${BIBLE_PER_GPU:-1}" \
    --results-dir "$runs" --out-dir "$out" --time-limit "$left" "${bible[@]}" probe=false \
    trainer.enable_progress_bar=false "$@"
  echo "bible_tables: $table exit $?"
done
