#!/usr/bin/env bash
# One GPU call (at most 10 minutes) of a paper-table lease, on any number of GPUs. Call it back to back within
# one lease (a warm machine is given back after 30 s idle): run folders live in /tmp/paper_runs on the
# machine, so each call resumes the protocol where the last one stopped (checkpoints never leave the machine).
#   bash scripts/gpu_session.sh $OUT SECONDS first   # 1st call: DDP check (>= 2 GPUs), then the table runs
#   bash scripts/gpu_session.sh $OUT SECONDS         # later calls: the table runs go on
# The first call runs scripts/ddp_check.py on GPUs 0,1 with $DDP_ARGS when there are two (DDP_CHECK=0: not;
# it holds both GPUs for up to 420 s before the table step starts). With COMPILE_SMOKE=1
# (or COMPILE_SMOKE="sessa transformer": those families only; Mamba2's whole-model compile took 167 s for 40
# training steps on the H200 and its validation graph did not compile within the smoke's 240 s,
# results/bench/h200-run9-session.log; compile=true now compiles one graph for all blocks, 4x faster on CPU)
# it first trains each family for 40 steps with compile=true at the paper shapes, all at once over the GPUs;
# every compiled run first compares its compiled loss and gradients with the eager model's on its first batch
# and stops on a mismatch (sessa_bench/compile_check.py: a compiled Transformer trained to a constant
# prediction there), so a smoke passes only when the compiled graph computes what eager computes;
# the table runs of each family whose smoke passed compile (`<family>:compile=true`; an execution
# setting, recorded in each summary and the table's caption: the protocol itself is the same for all);
# without it they run eager, or with GRAPHS=1 in CUDA graphs (`cuda_graphs=true`, sessa_bench/cuda_graphs.py:
# eager's kernels replayed, 1.3-2.2x the eager loop's tokens/s at Table 1's shapes on the H200,
# results/bench/nvidia-h200-execution-ab.md). WORK=calibrate compiles only when every smoke passed. The table step is
# `sessa_bench.tables table1 --run --experiments $EXPERIMENTS` under scripts/gpu_busy.py (utilisation sampled), which stops the whole process group at its time limit.
# Without LEASE that limit is SECONDS after the call began, less 40 s to pack. With LEASE=S the table step
# runs detached (its own session, so it outlives the call) for at most S seconds, and every call of the lease
# waits for it until its own SECONDS are nearly up: no training time is lost between calls. The table step
# gets --time-limit of that limit less 60 s: it starts no run that its estimate says cannot end by then (of a
# round too long, the part that fits; a run killed midway leaves its reopened folder unfinished, and
# import_runs.py skips it, so its shorter result would be lost), writes the table and exits; what is left goes
# to PROBE and AFTER.
# (WORK=calibrate trains its whole grid in one call of sessa_bench.runs.ensure: no rounds; with --time-limit
# a run starts only when its estimate, from the calibration runs finished by then, fits.)
#   BEFORE="cmd" runs on a quiet GPU before the table step starts (benchmarks; the call that starts the table
#                step only); its output goes to $OUT/before.log. BEFORE_GATE=1: when it fails (GPU tests of
#                code the runs use, say), the table step does not start.
#   ALSO="cmd"   runs in the foreground while the tables train (checks whose timing does not matter: GPU
#                tests); its output goes to $OUT/also.log. Training runs here slow the table's runs, which
#                the round's estimate does not count: in a lease's last round they got two 8000-step
#                extensions killed at step ~7500 (results/bench/h200x2-run7-session.log).
#   GPU_TESTS="tests/test_gpu_x.py ..."  after ALSO, while the tables train: each file under pytest with its
#                own limit of GPU_TEST_SECONDS (default 180; pytest's faulthandler dumps the stacks of a test
#                running past 150 s), its report written to $OUT/gpu_tests.log as it goes, so a hung file
#                cannot take the others' reports with it (it did: h200-run8-session.log).
#   BESIDE="cmd" starts detached beside the table step, in the call that starts it, and like it outlives the call
#                (at most the table step's limit): work longer than one call that may share the GPUs with the
#                table runs, e.g. the Diffuse MQAR calibration on the ~500 s per GPU that a round of two
#                16000-step runs leaves idle (results/bench/h200x2-run4-session.log: ALSO, bound to its call,
#                would cut it). Its output goes to /tmp/session/logs/beside.log (in the bundle; its tail in
#                the summary); its run folders, under /tmp/paper_runs, come back with the table's.
#                Table 2 and the ablation on the Bible, whole protocol, one run per GPU beside the table's:
#                BESIDE="bash scripts/bible_tables.sh /tmp/paper_runs /tmp/session/tables 1560".
#                Its processes slow the table's runs (lease 14: 1.45-1.65x the estimates, one Bible run
#                beside two table runs per GPU): BESIDE_PER_GPU=K (`tables --beside K`) counts K such
#                processes on every GPU in the table step's estimates. A call that finds the table step done
#                and BESIDE running waits for it (as for TAIL), so its run folders come back in that bundle.
#   BESIDE_MPS=1 (with MPS) BESIDE is a client of the table step's MPS daemon instead of time-slicing beside
#                it, and the daemon is stopped only once both have ended (a daemon told to quit under a
#                running client was never tried here): one long run beside a round of one table run.
#   TAIL="cmd"   (with LEASE) starts detached in the call that starts the table step, waits for the table
#                step to finish and then runs until the step's limit, whichever call is running: work for the
#                GPUs a round leaves idle at its end (another experiment's sweep, the calibration), pinned
#                with CUDA_VISIBLE_DEVICES; $TAIL_LEFT holds its seconds left less 30 (for a --time-limit).
#                Every later call waits for it after PROBE and AFTER, so its run folders come back in the
#                bundle of the call it ends in; its output goes to /tmp/session/logs/tail.log (summary: tail).
#   AFTER="cmd"  runs once the table step has finished, in the call's remaining time (benchmarks on a quiet
#                GPU, say); its output goes to $OUT/after.log. BESIDE and TAIL may still run then (pinned to other
#                GPUs); AFTER_QUIET=1: the call first waits for both to end, so AFTER has the whole machine (one
#                GPU: control runs BESIDE, then the bench in the same call once they have ended).
#   PROBE=1      once the table step has finished, probes each family's chosen runs (scripts/probe_chosen.py:
#                the seeds at the chosen rate, those whose checkpoint this lease made), for runs trained
#                with probe=false.
#   TRITON_CACHE_OUT=1  packs /tmp/triton-cache into $OUT/triton-cache.tar.gz.part-a, -b, ... (15 MiB each, at
#                most 3), for the next lease: joined here into .triton-cache.tar.gz (git-ignored) and carried,
#                it is unpacked before anything runs, so mamba_ssm's kernels are not compiled and autotuned
#                again (100-245 s cold). It lasts the session only: what outlives it is the committed
#                scripts/cache/triton-h200.tar.gz (device_call.sh), refreshed from such a pack.
#   AGAIN=1      in a later call whose table step has finished: start another one (LEASE from now), for the
#                runs the last one's time limit left unstarted (the calibration lost two calls to estimates
#                1 s and 13 s over the time left: results/bench/h200x2-run2-session.log).
#   PACE="sessa:cuda_graphs=0.5 ..."  `tables --pace` (each value): a graphed (or compiled) run with no finished
#                run executed so to time it is timed by eager runs x the factor, a measured ratio
#                (results/bench/nvidia-h200-execution-ab.md); without it such runs are timed as eager ones.
#                "mamba2:conv_triton=0.8": Mamba2 runs that did not record the fused conv kernel time the next
#                ones x 0.8 until one that did has finished (1.45x a graphed step measured, i.e. 0.69).
#   SAFETY=1.1   `tables --safety`: the margin on the table step's estimates (default 1.2). Two 16000-step Mamba2
#                retrains, timed by its newest run (its start-up counted once), are ~1460 s each: x1.2 they fit
#                no lease (1751 s), x1.1 one of LEASE=1680 (1620 s left).
#   MPS=1        the table step's runs share the GPU through a CUDA MPS daemon started for it (pipe and log
#                folders under /tmp; where it does not start, they run without, and summary.md says so); the
#                daemon is stopped once the table step has finished, before PROBE and AFTER. It changes no
#                setting of the GPU. The default when PER_GPU > 1 (MPS=0: without): two graphed runs on one
#                H200 trained 1.02x one run's tokens/s time-sliced and 1.35x through MPS
#                (scripts/mps_check.py, results/bench/nvidia-h200-mps-check.md); each run records it
#                (placement.mps) and the table step's estimates count it (report/timing.py MPS_GAIN).
#                BESIDE's (unless BESIDE_MPS=1) and TAIL's processes are not its clients: beside the
#                table's runs they time-slice (BESIDE_PER_GPU counts them).
# The first call copies the committed run folders (SEED_FROM, default results/runs) into /tmp/paper_runs, so
# the protocol continues from what earlier leases finished (their checkpoints stayed there: an extension of
# such a folder retrains from step 0, and its sweep score keeps coming from the first training).
# The table step, BESIDE and TAIL run from a copy of the tree, /tmp/session/tree (snapshot_tree in
# device_call.sh), since each device call sends the tree again under whatever still runs. SESSION_ROOT (default
# /tmp) holds paper_runs/ and session/: a dry run elsewhere (tests/test_gpu_session_script.py).
# $OUT gets summary.md (also printed) and bundle.tar.gz (logs, run folders without checkpoints); the device
# tool brings back at most 8 files. Back here, `.venv/bin/python scripts/import_runs.py bundle.tar.gz results/runs`
# copies the finished run folders out of the last call's bundle (and replaces the ones it extended); with
# --restore-interrupted also the runs whose extension the lease's end killed, as their finished shorter runs.
# Pass SESSA_BENCH_GIT_COMMIT=<sha of the tree sent> in the command: the copy's .git may lag the tree, and run
# summaries record that commit instead (summary.md says which was recorded).
# WORK=calibrate runs `sessa_bench.calibrate --run` (the Diffuse MQAR grid) instead; WORK=table2 another table.
# Every step has a hard limit (timeout -k): Lightning catches SIGTERM and trains on, so TERM alone is not one.
set -uo pipefail
out=${1:?usage: gpu_session.sh OUT SECONDS [first]}
budget=${2:-560}
first=${3:-}
source "$(dirname "$0")/device_call.sh"
refuse_long_call gpu_session.sh "$budget"
WORK=${WORK:-table1}
if [[ $WORK == table1 ]]; then EXPERIMENTS=${EXPERIMENTS-table1_symbol_soup}; else EXPERIMENTS=${EXPERIMENTS-}; fi
SEEDS=${SEEDS:-}  # empty: each experiment's sweep.seeds, else 0 1 (tables --seeds)
CAP=${CAP:-}  # empty: each experiment's sweep.max_steps_cap (else 4x its grid's steps)
PER_GPU=${PER_GPU:-3}
MPS=${MPS:-$(( PER_GPU > 1 ? 1 : 0 ))}  # runs sharing a GPU overlap their kernels only through MPS
mps_pipe=/tmp/mps-pipe mps_log=/tmp/mps-log  # the MPS daemon's folders
# A stable rate, a batch large enough to be compute-bound, and compile (the eager step of a 20M model is
# launch-bound, so a second GPU saved little at batch 64: results/bench/h200x2-run1-session.log).
DDP_ARGS=${DDP_ARGS:---steps 120 --batch-size 256 optim.lr=3e-4 compile=true}
TABLE_OVERRIDES=${TABLE_OVERRIDES:-}  # more overrides for the table runs (a CPU dry run: trainer=cpu budget=tiny ...)
start=$SECONDS
cd "$(dirname "$0")/.."
source .wheelhouse/bootstrap.sh .wheelhouse >/dev/null
device_env
root=${SESSION_ROOT:-/tmp}  # the run folders and the session's logs (tests: a dry run in its own folder)
runs=$root/paper_runs work=$root/session
mkdir -p "$runs" "$work/logs"
seed_from=${SEED_FROM-results/runs}  # SEED_FROM= (empty): start from no run folders
if [[ ! -f $work/seeded && -n $seed_from && -d $seed_from ]]; then  # the protocol goes on from them
  for d in "$seed_from"/*/; do
    [[ -d $d && ! -e $runs/$(basename "$d") ]] && cp -r "$d" "$runs/"
  done
fi
touch -a "$work/seeded"  # its time: when the copied folders stopped being news (the summary's list)
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader > "$work/logs/gpus.txt"
ngpu=$(wc -l < "$work/logs/gpus.txt")

smoke=${COMPILE_SMOKE:-0}
[[ $smoke == 1 ]] && smoke="sessa transformer mamba2"
if [[ $first == first && $smoke != 0 ]]; then
  i=0; : > "$work/compile_families"
  for fam in $smoke; do
    # SIGABRT at the limit: faulthandler prints every thread's Python stack into the log, so a smoke that
    # runs out of time says where it was (Dynamo tracing, Inductor codegen, Triton autotuning)
    CUDA_VISIBLE_DEVICES=$((i % ngpu)) timeout -s ABRT -k 15 240 python3 -X faulthandler -m sessa_bench.train \
      experiment=table1_symbol_soup \
      model=$fam compile=true trainer.max_steps=40 trainer.val_check_interval=40 \
      callbacks.checkpoint.every_n_steps=40 probe=false logger=none results_dir=/tmp/smoke \
      experiment_name=compile_smoke > "$work/logs/smoke-$fam.log" 2>&1 &
    pids[$i]=$!; fams[$i]=$fam; i=$((i + 1))
  done
  for j in "${!pids[@]}"; do
    wait "${pids[$j]}"; rc=$?
    check=$(python3 -c "import glob, json; print(*[json.load(open(f)).get('compile_check') for f in
      glob.glob('/tmp/smoke/compile_smoke/${fams[$j]}-*/summary.json')])" 2>/dev/null)
    [[ $rc != 0 ]] && check=$(grep -ho "compile=true: the compiled model disagrees.*" "$work/logs/smoke-${fams[$j]}.log")
    echo "compile smoke ${fams[$j]}: exit $rc ${check}" | tee -a "$work/logs/smoke.txt"
    [[ $rc == 0 ]] && echo "${fams[$j]}" >> "$work/compile_families"
  done
fi
if [[ $first == first && ${DDP_CHECK:-1} != 0 ]] && (( ngpu >= 2 )); then
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=0,1 timeout -k 15 420 python3 scripts/ddp_check.py --out "$work/ddp" --model transformer \
    $DDP_ARGS > "$work/logs/ddp.log" 2>&1
  echo "ddp_check exit $?" >> "$work/logs/ddp.log"
  cp "$work/ddp/ddp_check.md" "$work/logs/" 2>/dev/null
fi
compile=false  # for the calibration: all families or none
[[ $(sort "$work/compile_families" 2>/dev/null | tr '\n' ' ') == "mamba2 sessa transformer " ]] && compile=true
per_family=(compile=false)  # the table runs: eager, but for the families whose compile smoke passed
for fam in $(cat "$work/compile_families" 2>/dev/null); do per_family+=("$fam:compile=true"); done
graphs=()  # GRAPHS=1: every run that does not compile replays its blocks in CUDA graphs (eager's kernels)
if [[ ${GRAPHS:-0} == 1 ]]; then
  for fam in sessa transformer mamba2; do
    grep -qx "$fam" "$work/compile_families" 2>/dev/null || per_family+=("$fam:cuda_graphs=true")
  done
  [[ $compile == false ]] && graphs=(cuda_graphs=true)
fi

if [[ $WORK == calibrate ]]; then  # the Diffuse MQAR calibration grid instead of a table
  what=(python3 -m sessa_bench.calibrate --run --jobs-per-gpu "$PER_GPU" --results-dir "$runs"
        --out "$work/calibration.md" compile="$compile" "${graphs[@]}" trainer.enable_progress_bar=false)
else
  # shellcheck disable=SC2206
  pace=()  # PACE="sessa:cuda_graphs=0.5 ...": tables --pace, the estimates of graphed runs without graphed history
  for p in ${PACE:-}; do pace+=(--pace "$p"); done
  what=(python3 -m sessa_bench.tables "$WORK" --run ${EXPERIMENTS:+--experiments $EXPERIMENTS} --jobs-per-gpu "$PER_GPU"
        "${pace[@]}" ${SAFETY:+--safety "$SAFETY"} ${BESIDE_PER_GPU:+--beside "$BESIDE_PER_GPU"}
        ${SEEDS:+--seeds $SEEDS} ${CAP:+--max-steps-cap "$CAP"} --results-dir "$runs" --out-dir "$work/tables" "${per_family[@]}"
        trainer.enable_progress_bar=false)
  plan=("${what[@]/#--run/--plan}")  # the same command's next round, for the summary (before --time-limit)
fi
LEASE=${LEASE:-0}
started=$work/tables.started done=$work/tables.done
if [[ ${AGAIN:-0} == 1 && -f $done ]]; then  # a later call: a new table step for what the last one left
  rm -f "$started" "$done"                   # unstarted (its time limit), with this call's LEASE
fi
left() { echo $((budget - (SECONDS - start) - 40)); }
if [[ ! -f $started && -n ${BEFORE:-} ]]; then
  echo "BEFORE started with $(left) s of this call left" > "$out/before.log"
  timeout -k 15 "$(left)" bash -c "$BEFORE" >> "$out/before.log" 2>&1
  rc=$?
  echo "exit $rc" >> "$out/before.log"
  if (( rc != 0 )) && [[ ${BEFORE_GATE:-0} == 1 ]]; then  # the checks the runs rely on failed: no table step
    touch "$started" "$done"                               # (AGAIN=1 in a later call starts one)
    echo "BEFORE failed (exit $rc) and BEFORE_GATE=1: the table step was not started" >> "$work/logs/tables.log"
  fi
fi
if [[ ! -f $started ]]; then
  touch "$started"
  limit=$( (( LEASE > 0 )) && echo "$LEASE" || left)
  # 60 s for the table's writing and the interpreter's start-up, which the protocol's clock does not see
  what+=(--time-limit "$(( limit > 61 ? limit - 60 : 1 ))")
  # shellcheck disable=SC2086
  busy=(python3 scripts/gpu_busy.py --log "$work/logs/gpu_util-$(date +%H%M%S).csv" --skip 30 --timeout
        "$limit" -- "${what[@]}" $TABLE_OVERRIDES)
  mps=()  # the table step's environment for an MPS daemon: only its processes are clients
  if [[ $MPS == 1 ]]; then
    mkdir -p "$mps_pipe" "$mps_log"
    if CUDA_MPS_PIPE_DIRECTORY=$mps_pipe CUDA_MPS_LOG_DIRECTORY=$mps_log nvidia-cuda-mps-control -d \
        >> "$work/logs/mps.txt" 2>&1; then
      echo "MPS daemon started for the table step" >> "$work/logs/mps.txt"; touch "$work/mps.on"
      mps=(env "CUDA_MPS_PIPE_DIRECTORY=$mps_pipe" "CUDA_MPS_LOG_DIRECTORY=$mps_log")
    else
      echo "MPS daemon did not start (exit $?): the table step runs without it" >> "$work/logs/mps.txt"
    fi
  fi
  # what may outlive this call runs from its own copy of the tree (snapshot_tree, device_call.sh), which the
  # next call's copy cannot change under it; the run folders and logs are under $root, absolute. The copy has
  # no .git: the runs record the commit of this one's (SESSA_BENCH_GIT_COMMIT, when the call did not give it)
  in_tree=()
  if snapshot_tree "$work/tree"; then
    export SESSA_BENCH_GIT_COMMIT=${SESSA_BENCH_GIT_COMMIT:-$(git rev-parse HEAD 2>/dev/null)}
    in_tree=(env -C "$work/tree" "PYTHONPATH=$work/tree:${PYTHONPATH:-}")
    echo "the table step runs from its copy of the tree, $work/tree" >> "$work/logs/tables.log"
  fi
  busy=("${in_tree[@]}" "${mps[@]}" "${busy[@]}")
  if [[ -n ${BESIDE:-} ]]; then  # its own session, bounded by the table step's limit; beside.done at its end
    beside_env=(); [[ ${BESIDE_MPS:-0} == 1 ]] && beside_env=("${mps[@]}")
    echo "beside started (limit $limit s${beside_env[*]:+, an MPS client}): $BESIDE" >> "$work/logs/beside.log"
    touch "$work/beside.started"
    setsid "${in_tree[@]}" "${beside_env[@]}" bash -c 'timeout -k 15 "$1" bash -c "$2"; echo "beside exit $?"
        touch "$0/beside.done"' "$work" "$limit" "$BESIDE" >> "$work/logs/beside.log" 2>&1 < /dev/null &
  fi
  if (( LEASE > 0 )); then  # detached: its own session outlives this call; done holds its exit status
    setsid bash -c '"$@" >> "$0/logs/tables.log" 2>&1; echo "tables exit $? ('"${per_family[*]}"')" \
      >> "$0/logs/tables.log"; touch "$0/tables.done"' "$work" "${busy[@]}" < /dev/null &
    if [[ -n ${TAIL:-} ]]; then  # detached as well: once the table step is done, until the step's limit
      echo "tail waits for the table step (limit $limit s from now): $TAIL" >> "$work/logs/tail.log"
      touch "$work/tail.started"
      # tail.done is touched whatever ends the tail (its own end or the limit), so no call waits for it in vain
      setsid "${in_tree[@]}" bash -c 'timeout -k 15 "$1" bash -c '"'"'while [[ ! -f "$0/tables.done" ]]; do sleep 5; done
          export TAIL_LEFT=$(( $1 - $(date +%s) - 30 )); echo "tail started $(date +%T), TAIL_LEFT=$TAIL_LEFT"
          bash -c "$2"; echo "tail exit $?"'"'"' "$0" "$2" "$3"; touch "$0/tail.done"' \
        "$work" "$limit" "$(( $(date +%s) + limit ))" "$TAIL" >> "$work/logs/tail.log" 2>&1 < /dev/null &
    fi
  else
    "${busy[@]}" >> "$work/logs/tables.log" 2>&1
    echo "tables exit $? (${per_family[*]})" >> "$work/logs/tables.log"
    touch "$done"
  fi
fi
if [[ -n ${ALSO:-} ]]; then
  timeout -k 15 "$(left)" bash -c "$ALSO" > "$out/also.log" 2>&1
  echo "exit $?" >> "$out/also.log"
fi
for f in ${GPU_TESTS:-}; do
  per=${GPU_TEST_SECONDS:-180}; (( per > $(left) )) && per=$(left)
  (( per > 10 )) || break
  echo "== $f (limit $per s)" >> "$out/gpu_tests.log"
  # -v names each test as it starts and --durations=0 times each one: a file cut at its limit says which test
  # it was in (test_gpu_cuda_graphs.py's third test ran past 200 s with no name: h200x2-run3-session.log)
  PYTHONUNBUFFERED=1 timeout -k 10 "$per" python3 -m pytest -m gpu -v -rA --durations=0 --tb=short -p no:cacheprovider \
    -o faulthandler_timeout=150 "$f" >> "$out/gpu_tests.log" 2>&1
  echo "exit $? ($f)" >> "$out/gpu_tests.log"
done
while [[ ! -f $done ]] && (( $(left) > 5 )); do sleep 5; done
beside_running() { [[ -f $work/beside.started && ! -f $work/beside.done ]]; }
stop_mps() {  # once the table step and every client of the daemon have ended
  [[ -f $done && -f $work/mps.on ]] || return 0
  [[ ${BESIDE_MPS:-0} == 1 ]] && beside_running && return 0
  echo quit | CUDA_MPS_PIPE_DIRECTORY=$mps_pipe timeout 60 nvidia-cuda-mps-control >> "$work/logs/mps.txt" 2>&1
  echo "MPS daemon stopped (exit $?)" >> "$work/logs/mps.txt"; rm -f "$work/mps.on"
}
stop_mps  # the probes and benchmarks after the table step run as usual
if [[ -f $done && ${PROBE:-0} == 1 ]] && (( $(left) > 30 )); then
  # shellcheck disable=SC2086
  timeout -k 15 "$(left)" python3 scripts/probe_chosen.py "$runs" --table "$WORK" ${EXPERIMENTS:+--experiments $EXPERIMENTS} \
    --max-seconds $(( ($(left) - 20) / 3 )) $TABLE_OVERRIDES >> "$work/logs/probe.log" 2>&1
  echo "probe_chosen exit $?" >> "$work/logs/probe.log"
fi
tail_running() { [[ -f $work/tail.started && ! -f $work/tail.done ]]; }
wait_for_beside_and_tail() {  # what they trained comes back in this call's bundle
  while tail_running && (( $(left) > 5 )); do sleep 5; done
  while [[ -f $done ]] && beside_running && (( $(left) > 5 )); do sleep 5; done
  stop_mps
}
if [[ ${AFTER_QUIET:-0} == 1 ]]; then wait_for_beside_and_tail; fi
quiet() { [[ ${AFTER_QUIET:-0} != 1 ]] || ! { tail_running || beside_running; }; }
# the time AFTER had goes in its log: lease 27's was cut before its first row with ~60 s, and its log said only
# "exit 124"
if [[ -f $done && -n ${AFTER:-} ]] && quiet && (( $(left) > 10 )); then
  echo "AFTER started with $(left) s of this call left" > "$out/after.log"
  timeout -k 15 "$(left)" bash -c "$AFTER" >> "$out/after.log" 2>&1
  echo "exit $?" >> "$out/after.log"
elif [[ -n ${AFTER:-} ]]; then
  echo "AFTER not started: $(if [[ ! -f $done ]]; then echo "the table step still runs"; elif ! quiet; then
    echo "BESIDE or TAIL still runs (AFTER_QUIET=1)"; else echo "$(left) s of this call left"; fi)" > "$out/after.log"
fi
# a TAIL or BESIDE still running: this call waits for it (what it trained comes back in this call's bundle)
wait_for_beside_and_tail

# no checkpoints directory at all: a run caught mid-save has a .last.ckpt.tmp there, which '*.ckpt' let through
# (lease 23's second call: 228 MB, and the device tool dropped the whole bundle)
tar czf "$out/bundle.tar.gz" --exclude=checkpoints --exclude='*.lock' --exclude=session/tree -C "$root" paper_runs session 2>/dev/null
if [[ ${TRITON_CACHE_OUT:-0} == 1 && -d /tmp/triton-cache ]]; then  # for the next lease to carry
  # The device tool brings back at most 16 MiB a file and 8 files: parts of 15 MiB, at most 3 (one lease's
  # cache was 35.7 MB gzipped: h200x2-run5-session.log)
  # only what Triton loads from its cache (each kernel's .json metadata and .cubin, the launchers' .so): the
  # ttir/ttgir/llir/ptx/source beside them were 3/4 of it, and the whole, carried beside the tracked tree,
  # went over the device tool's 64 MiB (lease 15: 41 MB -> 14.5 MB gzipped, and the Mamba2 run's first
  # 10 steps took 11.5 s with it, not 100-245 s)
  (cd /tmp/triton-cache && find . -type f \( -name '*.json' -o -name '*.cubin' -o -name '*.so' \) -print0 \
    | tar czf /tmp/triton-cache.tar.gz --null -T - 2>/dev/null)
  size=$(stat -c %s /tmp/triton-cache.tar.gz)
  if (( size > 3 * 15 * 1024 * 1024 )); then
    echo "triton cache: $size bytes, too large to bring back (at most 3 parts of 15 MiB)" >> /tmp/triton-cache.txt
  else
    split -b 15M -a 1 /tmp/triton-cache.tar.gz "$out/triton-cache.tar.gz.part-"
    echo "triton cache: $size bytes in $(ls "$out"/triton-cache.tar.gz.part-* | wc -l) parts (here: cat" \
      "triton-cache.tar.gz.part-* > .triton-cache.tar.gz, and carry it)" >> /tmp/triton-cache.txt
  fi
fi
{
  echo "commit recorded in the runs: ${SESSA_BENCH_GIT_COMMIT:-not given, so the .git of the copy, which may lag the tree}"
  echo; echo "## compile smoke"; cat "$work/logs/smoke.txt" 2>/dev/null
  [[ -f /tmp/triton-cache.txt ]] && { echo; echo "## triton cache"; cat /tmp/triton-cache.txt; }
  [[ -f $work/logs/mps.txt ]] && { echo; echo "## MPS"; cat "$work/logs/mps.txt"; }
  echo; echo "## ddp_check"; cat "$work/logs/ddp_check.md" 2>/dev/null || tail -5 "$work/logs/ddp.log" 2>/dev/null
  echo; echo "## tables (last lines; $([[ -f $done ]] && echo finished || echo "still running"))"
  grep -v "^\s*$" "$work/logs/tables.log" | tail -25
  [[ -f $work/logs/beside.log ]] && { echo; echo "## beside (last lines)"; tail -12 "$work/logs/beside.log"; }
  [[ -f $work/logs/tail.log ]] && { echo; echo "## tail ($([[ -f $work/tail.done ]] && echo finished || echo "still running"); last lines)"; tail -12 "$work/logs/tail.log"; }
  echo; echo "## probes"; tail -8 "$work/logs/probe.log" 2>/dev/null
  if [[ -f $done && $WORK != calibrate ]]; then  # what the next lease starts with (tables --plan, as this one ran)
    echo; echo "## next round (tables --plan on this lease's run folders; on the next lease's fresh machine no checkpoint is left, so an extension shown resumed retrains from step 0 there)"
    # shellcheck disable=SC2086
    # timed as the next lease's table step will run: through MPS when it is on (the daemon is stopped by now,
    # so the variable only tells the estimates; a CUDA client without its daemon runs as without MPS)
    mps_env=(); [[ $MPS == 1 ]] && mps_env=(env "CUDA_MPS_PIPE_DIRECTORY=$mps_pipe")
    timeout 120 "${mps_env[@]}" "${plan[@]}" $TABLE_OVERRIDES 2>&1 | tail -12
  fi
  echo; echo "## runs finished in this lease (val/acc at the last step)"
  python3 - "$runs" "$work/seeded" <<'PY'
import json, sys, pathlib
since = pathlib.Path(sys.argv[2]).stat().st_mtime  # the committed folders copied in are not news
for p in sorted(pathlib.Path(sys.argv[1]).glob("*/*/summary.json")):
    if p.stat().st_mtime <= since:  # <=: a copy can share the marker's (coarse) timestamp
        continue
    s = json.loads(p.read_text())
    f = s["final"]
    print(f"{p.parent.name:52s} {s['steps']:5d} steps val/acc {f.get('val/acc', float('nan')):.4f} "
          f"test/acc {f.get('test/acc', float('nan')):.4f} tok/s {s.get('throughput_tokens_per_s') or 0:,.0f} "
          f"gpu {s.get('placement')}")
PY
} | tee "$out/summary.md"
