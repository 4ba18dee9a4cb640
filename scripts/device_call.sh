# Sourced by the GPU-lease scripts (gpu_session.sh, bench_session.sh): what every device call needs first.
# refuse_long_call NAME SECONDS: the device tool kills a call at 600 s with everything in it, before the
# script packs $OUT, so a call given more than 580 s brings nothing back (results/bench/h200-run6-session.log).
refuse_long_call() {
  if (( $2 > 580 )); then
    echo "$1: SECONDS=$2: a device call is limited to 600 s; give at most 580" >&2
    exit 2
  fi
}

# device_env: compile caches under /tmp for the whole call, no NVLink multicast, and Triton caches of earlier
# leases: a cold process spent 100-245 s compiling and autotuning mamba_ssm's kernels
# (bench/nvidia-h200-mamba2-speed-ab.md). Two sources, both unpacked on a fresh machine: the committed
# scripts/cache/triton-h200.tar.gz (mamba_ssm's kernels and ours, their autotune results and the launchers,
# no Inductor kernels: 10 MB, from lease 24 with the long column's shapes; a session's ignored files do not
# reach the next session's checkout, so a cache that only travels as a carried path is lost between sessions)
# and, over it, a carried .triton-cache.tar.gz (TRITON_CACHE_OUT=1 of this session's earlier lease). Keyed by
# source, Triton version and GPU: a stale entry is ignored, never wrong. Run from the root.
TRACKED_TRITON_CACHE=scripts/cache/triton-h200.tar.gz
device_env() {
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
  export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache TRITON_CACHE_DIR=/tmp/triton-cache
  export TRITON_CACHE_AUTOTUNING=1  # later processes reuse autotune results (mamba_ssm tunes many kernels)
  [[ -d /tmp/triton-cache ]] && return 0  # an earlier call of this lease unpacked (and has added to) it
  local archive
  for archive in "$TRACKED_TRITON_CACHE" .triton-cache.tar.gz; do
    [[ -f $archive ]] || continue
    mkdir -p /tmp/triton-cache && tar xzf "$archive" -C /tmp/triton-cache 2>/dev/null \
      && echo "triton cache: $(find /tmp/triton-cache -type f | wc -l) files after $archive" >> /tmp/triton-cache.txt
  done
  return 0
}

# snapshot_tree DEST: a copy of the working tree (without .git and the carried caches) for work that outlives
# its call: the device tool sends the tree again at every call, and a detached table step that composed its
# configs while the next call's copy arrived found no conf/ ("Cannot find primary config 'train'", lease 16:
# the step ended the moment call 3 began, so its table went unwritten; a run starting then would fail too).
snapshot_tree() {
  rm -rf "$1" && mkdir -p "$1" || return 1
  tar cf - --exclude=./.git --exclude=./.wheelhouse --exclude=./.triton-cache.tar.gz --exclude=./.venv . \
    | tar xf - -C "$1"
}
