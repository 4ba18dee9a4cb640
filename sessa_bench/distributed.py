"""One run on several processes (DDP): which process writes, and how the other ranks are started.

Lightning starts the other ranks of a single-node DDP run by re-executing the command line (sys.argv, plus
hydra.run.dir under Hydra). That is wrong twice for us: under a multirun (`-m`) the command line is the
whole sweep, and a run started in process (`runs.ensure`, `tables --run`) has no command line of its own.
So while a run trains, the other ranks get `python -m sessa_bench.train <this run's own overrides>`
(HydraConfig's task overrides, set both by @hydra.main per job and by compose_train): one run, the same
config. Lightning also leaves the DDP environment variables (LOCAL_RANK, ...) in the launching process,
which would make the next run of a sweep believe its ranks were started externally; `ddp_scope` restores
them and closes the process group when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import sys

from hydra.core.hydra_config import HydraConfig

# Set by a launcher (Lightning's, torchrun, SLURM's srun, jsrun) in processes other than global rank 0.
RANK_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def is_rank_zero() -> bool:
    """Whether this process will be global rank 0, known before the trainer exists: every rank variable a
    launcher may have set is 0 (a child of Lightning's launcher inherits SLURM_PROCID=0 but has LOCAL_RANK>0;
    rank 0 of another node has NODE_RANK>0)."""
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in RANK_VARS)


def rank_command(local_rank: int) -> tuple[list[str], str]:
    """The command and working directory of another rank of the run being trained in this process."""
    overrides = list(HydraConfig.get().overrides.task)
    return [sys.executable, "-m", "sessa_bench.train", *overrides], os.getcwd()


@contextlib.contextmanager
def ddp_scope():
    """Around one run's trainer: other ranks started as this run alone; the launching process left as it was
    found (environment restored, process group destroyed) for the next run of a sweep."""
    from lightning.pytorch.strategies.launchers import subprocess_script

    saved_env = {k: os.environ.get(k) for k in DDP_ENV}
    saved_cmd = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = rank_command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = saved_cmd
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
