# Sourced by the GPU-lease scripts (gpu_session.sh, bench_session.sh): what every device call needs first.
# refuse_long_call NAME SECONDS: the device tool kills a call at 600 s with everything in it, before the
# script packs $OUT, so a call given more than 580 s brings nothing back (results/bench/h200-run6-session.log).
refuse_long_call() {
  if (( $2 > 580 )); then
    echo "$1: SECONDS=$2: a device call is limited to 600 s; give at most 580" >&2
    exit 2
  fi
}

# device_env: compile caches under /tmp for the whole call, no NVLink multicast, and an earlier lease's Triton
# cache (TRITON_CACHE_OUT=1 brought it back; carry it as .triton-cache.tar.gz): a cold process spent 100 s
# compiling and autotuning mamba_ssm's kernels (bench/nvidia-h200-mamba2-speed-ab.md). Run from the root.
device_env() {
  export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # no NVLink multicast
  export TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-cache TRITON_CACHE_DIR=/tmp/triton-cache
  export TRITON_CACHE_AUTOTUNING=1  # later processes reuse autotune results (mamba_ssm tunes many kernels)
  if [[ -f .triton-cache.tar.gz && ! -d /tmp/triton-cache ]]; then
    mkdir -p /tmp/triton-cache && tar xzf .triton-cache.tar.gz -C /tmp/triton-cache 2>/dev/null \
      && echo "triton cache: $(find /tmp/triton-cache -type f | wc -l) files from .triton-cache.tar.gz" \
        >> /tmp/triton-cache.txt
  fi
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
