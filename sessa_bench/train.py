"""Train one (family, task, budget, seed) run into its run folder; skip it when already finished.

    sessa-bench train model=mamba2 task=symbol_soup budget=tiny trainer.max_steps=200
    python -m sessa_bench.train -m model=sessa,transformer,mamba2 seed=0,1     # Hydra multirun
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sessa_bench import cuda_graphs, schema, wandb_run
from sessa_bench.budget import Budget, count_params, describe, solve
from sessa_bench.callbacks import KillAtStep
from sessa_bench.compose import CONF_DIR  # absolute: works however the module is started
from sessa_bench.console import quiet_lightning
from sessa_bench.errors import debug, user_error_types, user_errors
from sessa_bench.flops import mfu
from sessa_bench.data import TaskDataModule
from sessa_bench.distributed import ddp_scope, is_rank_zero
from sessa_bench.lit_module import LitSequenceModel
from sessa_bench.loggers import JsonlLogger
from sessa_bench.models.config import ModelConfig
from sessa_bench.run_folder import (RunFolder, atomic_write_text, concurrent_runs, extension_of, git_commit, hardware,
                                    placement, resolved_config)

log = logging.getLogger("sessa_bench")
schema.register()


def build_task(cfg: DictConfig):
    try:
        return instantiate(cfg.task)
    except Exception as e:  # Hydra wraps constructor errors; surface the task's own message
        cause = e.__cause__ or e
        if isinstance(cause, TypeError):
            raise ValueError(f"task ({cfg.task_name}): {cause}; see conf/task/{cfg.task_name}.yaml") from e
        raise cause from None


def resolve_model(cfg: DictConfig, task) -> tuple[ModelConfig, Budget]:
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))
    family = OmegaConf.to_container(cfg.model, resolve=True)
    return solve(family, budget, task.vocab_size, head=task.head, n_classes=task.num_classes), budget


def parameter_table(model_cfg: ModelConfig, budget: Budget, seq_len: int) -> tuple[str, dict]:
    d = describe(model_cfg, seq_len, budget.target_params)
    state = (f"{d['state_per_token']:,} elements/token + {d['state_fixed']:,} fixed"
             if d["state_per_token"] is not None else
             f"not declared ({model_cfg.mixer} defines neither state_per_token nor state_fixed)")
    text = (f"model: {model_cfg.mixer} x {d['layers']} layers, d_model={d['d_model']}, heads={d['n_heads']}, "
            f"block={model_cfg.block}\n"
            f"params: total {d['params_total']:,} (target {budget.target_params:,}, {d['deviation']:+.2%}), "
            f"non-embedding {d['params_non_embedding']:,}\n"
            f"decode state: {state}; "
            f"train FLOPs/token at T={seq_len}: {d['train_flops_per_token'] / 1e6:.1f}M")
    return text, d


def _resume_step(cfg: DictConfig, folder: RunFolder) -> int | None:
    """Step of the checkpoint to resume from, or None for a fresh start."""
    if str(cfg.resume).lower() == "false" or not folder.checkpoint.exists():
        return None
    ckpt = folder.read_checkpoint()  # plain data only: a crafted file is refused, never executed
    try:
        step = int(ckpt["global_step"])
    except (KeyError, TypeError, ValueError):
        raise RuntimeError(f"checkpoint {folder.checkpoint} has no global_step; delete it to restart this run "
                           f"from scratch, or pass resume=false") from None
    if (cfg.get("callbacks") or {}).get("best") is not None and not any(
            str(k).startswith("ModelCheckpoint") for k in (ckpt.get("callbacks") or {})):
        # Saved by a training that kept no best-validation checkpoint (an extension that adds callbacks.best):
        # resumed, the best would be sought only from this step on, so the run trains again from step 0.
        print(f"{folder.checkpoint} (step {step}) holds no best-validation state and this run keeps one "
              f"(callbacks.best): training from step 0", flush=True)
        return None
    return step


def runtime_args(name: str, cfg: DictConfig, folder: RunFolder) -> dict:
    """What a callback of conf/callbacks needs from this run besides its own config."""
    if name == "checkpoint":
        return {"path": folder.checkpoint}
    if name == "throughput":
        return {"window": cfg.trainer.log_every_n_steps}
    if name == "best":  # a ModelCheckpoint keeping the best-validation weights (Table 2, the ablation)
        return {"dirpath": str(folder.checkpoint.parent)}
    return {}


def _instantiate(what: str, node, **kwargs):
    """hydra.utils.instantiate with the constructor's own message, prefixed by the config field."""
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # Hydra wraps constructor errors (Lightning's MisconfigurationException, ...)
        cause = e.__cause__ or e
        raise ValueError(f"{what}: {type(cause).__name__}: {cause}") from None


def fixed_length(cfg: DictConfig) -> bool:
    """Batches of one length per split (the split's longest): a compiled model traces one shape, CUDA graphs
    replay one."""
    return bool(cfg.compile or cuda_graphs.enabled(cfg))


def check_splits(cfg: DictConfig, dm: TaskDataModule) -> None:
    """Every split holds at least one example (else training, validation or testing fails at its end)."""
    for split in ("train", "val", "test"):
        if len(dm.split(split)) == 0:  # builds or loads the data now: a missing dataset fails here too
            data_dir = cfg.task.get("data_dir")
            where = (f"{data_dir}/{split}.tsv (task.data_dir) holds no examples" if data_dir else
                     f"task.n_{split}={cfg.task.get(f'n_{split}')!r} must be >= 1")
            raise ValueError(f"the {split} split of task {cfg.task_name} is empty: {where}")


def _finish_counters(trainer) -> None:
    """A fit restored from a checkpoint at max_steps trains nothing and skips the end of its loop, so its
    logging step and epoch stay where the checkpoint was taken (inside the last batch). Set them to what an
    uninterrupted run has after fit, so the final val/test lines carry the same step numbers."""
    loop = trainer.fit_loop
    loop.epoch_loop._batches_that_stepped = trainer.global_step
    if loop.epoch_progress.current.completed < loop.epoch_progress.current.ready:  # the epoch it was inside
        loop.epoch_progress.increment_processed()
        loop.epoch_progress.increment_completed()


def run(cfg: DictConfig) -> dict:
    failed = True
    try:
        with ddp_scope():  # under DDP: the other ranks run this run alone; a no-op on one process
            summary = _run(cfg)
        failed = False
        return summary
    finally:  # one W&B run per run, also when it raised (else the next run in this process joins it)
        wandb_run.finish_active(failed)


def _run(cfg: DictConfig) -> dict:
    quiet_lightning()
    schema.validate(cfg)
    folder = RunFolder.of(cfg)
    extending = False
    if folder.is_finished():
        folder.check_config(cfg, "a finished run")
        extending = bool(extension_of(OmegaConf.to_container(OmegaConf.load(folder.config)), resolved_config(cfg)))
        if not extending:
            log.info("skipping finished run %s (delete its summary.json to rerun)", folder.path)
            return folder.read_summary()

    # Everything that can fail on bad input happens before the run folder is touched: the data of every
    # split, the model, the trainer, its loggers and callbacks.
    task = build_task(cfg)
    dm = TaskDataModule(task, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.seed, cfg.data.num_workers,
                        fixed_length=fixed_length(cfg))  # one sequence length per split: compiled or graphed
    check_splits(cfg, dm)
    model_cfg, budget = resolve_model(cfg, task)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # before the model's initialisation
    lit = LitSequenceModel(model_cfg.to_dict(), OmegaConf.to_container(cfg.optim), cfg.trainer.max_steps,
                           tuple(task.slice_names), compile=cfg.compile,
                           cuda_graphs=cuda_graphs.enabled(cfg))
    callbacks = {name: _instantiate(f"callbacks.{name}", c, **runtime_args(name, cfg, folder))
                 for name, c in cfg.callbacks.items()}
    if cfg.debug.kill_at_step:
        callbacks["kill"] = KillAtStep(cfg.debug.kill_at_step)
    loggers = [JsonlLogger(folder), *(_instantiate(f"logger.{name}", c) for name, c in cfg.logger.items())]
    # The data module shards train and eval batches itself (data.batch_size is the global batch; eval shards
    # without duplicates), so Lightning must not put a DistributedSampler in.
    trainer = _instantiate("trainer", cfg.trainer, logger=loggers, callbacks=list(callbacks.values()),
                           default_root_dir=str(folder.path), use_distributed_sampler=False)

    if is_rank_zero():  # DDP ranks > 0 re-run this script inside the run of rank 0
        folder.lock()  # a second process with this run name stops here (RunInUse)
    try:
        if folder.is_finished() and not extending:  # finished by another process since the first check
            folder.check_config(cfg, "a finished run")
            return folder.read_summary()
        if extending and is_rank_zero():  # more steps under a constant schedule: resume from the last step
            folder.reopen(cfg)
            print(f"extending {folder.path} to {cfg.trainer.max_steps} steps", flush=True)
        start_step = _resume_step(cfg, folder)
        if start_step is not None:
            folder.check_config(cfg, "an unfinished run")
        return _train(cfg, folder, task, dm, model_cfg, budget, lit, trainer, loggers, callbacks, start_step)
    finally:
        folder.unlock()


def _train(cfg, folder, task, dm, model_cfg, budget, lit, trainer, loggers, callbacks, start_step) -> dict:
    throughput = callbacks.get("throughput")
    table, cost = parameter_table(model_cfg, budget, task.max_len)
    print(f"[{cfg.experiment_name}/{cfg.run_name}]\n{table}", flush=True)

    writer = is_rank_zero()  # under DDP only global rank 0 writes the run folder
    retrain = folder.previous.exists() and (folder.metrics.exists() or folder.metrics_prev.exists())
    if writer and start_step is None and retrain:
        # An extension retrained from step 0 (no checkpoint): keep the lines of every finished training
        # (a sweep score may come from any of them) and summary.prev.json for the time they took.
        folder.keep_training()
        print(f"no checkpoint in {folder.path}: the extension trains from step 0 (same data order, so its first "
              f"steps repeat the finished ones; their lines stay in {folder.metrics_prev.name})", flush=True)
        folder.summary.unlink(missing_ok=True)
    elif writer and start_step is None:
        for stale in (folder.metrics, folder.summary, folder.previous, folder.metrics_prev):
            stale.unlink(missing_ok=True)
    elif writer:
        folder.truncate_metrics(start_step)
        print(f"resuming from {folder.checkpoint} at step {start_step}"
              + (" (training is done: evaluating only)" if start_step >= cfg.trainer.max_steps else ""),
              flush=True)
    for lg in loggers:
        if hasattr(lg, "restart"):  # the CSV log keeps the rows from before a kill
            lg.restart(start_step)
    if writer:
        atomic_write_text(folder.config, OmegaConf.to_yaml(resolved_config(cfg)))
        wandb_run.log_config(loggers, cfg, cost["params_total"])  # W&B's logger is a no-op on other ranks

    t0, wall_before = time.time(), folder.wall_seconds_before()
    trainer.fit(lit, datamodule=dm, ckpt_path=str(folder.checkpoint) if start_step is not None else None,
                weights_only=True)
    if start_step is not None and start_step >= cfg.trainer.max_steps:
        _finish_counters(trainer)
    fit_rows = folder.read_metrics()  # the training's lines, what an extension keeps (evaluation follows)
    fit_metrics_lines = len(fit_rows)
    # With a `best` ModelCheckpoint (monitor: a validation metric), validation and test use its weights.
    best = callbacks.get("best")
    test_from = "best" if best is not None and best.best_model_path else "last"
    best_step = (int(torch.load(best.best_model_path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
                 if test_from == "best" else None)
    ckpt = "best" if test_from == "best" else None
    final = {}
    # weights_only=True, as for fit: the best checkpoint is a file in the run folder, never unpickled freely
    final.update(trainer.validate(lit, datamodule=dm, verbose=False, ckpt_path=ckpt, weights_only=True)[0])
    final.update(trainer.test(lit, datamodule=dm, verbose=False, ckpt_path=ckpt, weights_only=True)[0])
    for factor in cfg.eval.lengths:  # length generalisation: the same model on longer sequences
        if int(factor) != 1:
            longer = task.scaled(int(factor))
            lit.test_prefix, lit.slice_names = f"test@{factor}x", tuple(getattr(longer, "slice_names", ()))
            final.update(trainer.test(lit, datamodule=TaskDataModule(longer, cfg.data.batch_size,
                                                                    cfg.data.eval_batch_size, cfg.seed,
                                                                    fixed_length=fixed_length(cfg)),
                                      verbose=False)[0])

    total, _ = count_params(lit.model)
    wall = time.time() - t0
    tps = throughput.tokens_per_s if throughput else None
    # MFU of this run's training steps over the GPUs it used (a GPU shared with other runs counts whole);
    # FLOPs per token at the task's longest example (an upper bound for the attention term). None on CPU.
    # The device trained on, not the parameters' device now: Lightning's teardown has moved the model to the
    # CPU by here, which left every GPU run's mfu null until this was found (2026-11-29).
    run_mfu = mfu(tps, cost["train_flops_per_token"], trainer.strategy.root_device, trainer.world_size,
                  unknown=None) if tps else None
    summary = {
        "final": final,
        "experiment": cfg.experiment_name, "run_name": cfg.run_name, "family": cfg.model.family,
        "task": cfg.task_name, "task_facts": task.facts(), "budget": budget.name, "seed": cfg.seed,
        "params": {"total": total, "non_embedding": cost["params_non_embedding"],
                   "target": budget.target_params, "deviation": (total - budget.target_params) / budget.target_params},
        "cost": cost, "model": model_cfg.to_dict(), "optim": OmegaConf.to_container(cfg.optim),
        "steps": trainer.global_step, "batch_size": cfg.data.batch_size, "seq_len": task.max_len,
        "throughput_tokens_per_s": tps, "mfu": run_mfu,
        "wall_seconds_this_process": wall, "resumed_from_step": start_step,
        "wall_seconds_total": wall_before + wall, "fit_metrics_lines": fit_metrics_lines,
        "test_from": test_from, "best_step": best_step,
        "concurrent_runs": concurrent_runs(), "placement": placement(), "world_size": trainer.world_size,
        "backends": sorted({str(m.backend_used()) for m in lit.model.mixers}),
        "precision": cfg.trainer.precision, "compile": bool(cfg.compile),
        "compile_check": lit.compile_check, "hardware": hardware(),
        "cuda_graphs": cuda_graphs.enabled(cfg),
        "cuda_graphs_capture": lit.graphs.info() if lit.graphs is not None else None,
        "git_commit": git_commit(),
        # when it ended (UTC): the time limit's estimates prefer the newest of equally long runs (timing.pace)
        "finished_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    summary["startup_seconds"] = folder.startup_seconds(summary, fit_rows)  # the time limit counts it once a run
    if not trainer.is_global_zero:
        return summary
    folder.write_summary(summary)
    wandb_run.log_summary(loggers, summary)
    print(f"finished {folder.path}: " + ", ".join(f"{k}={v:.4f}" for k, v in final.items()
                                                  if "/acc" in k or "/ppl" in k)[:600], flush=True)
    if cfg.probe:  # checkpoints stay on the training machine: probe the trained model where it is
        # after trainer.test(ckpt_path="best") the model holds the best-validation weights it reported
        probe_trained(cfg, lit.model, dm, folder, trainer.global_step, summary["git_commit"])
    return summary


def probe_trained(cfg, model, dm, folder: RunFolder, step: int, commit) -> None:
    """The memory-tail probe of the trained model -> probe.json, after summary.json: the run is finished
    whatever happens here. Bounded in time, so it cannot outlive a GPU lease; a failure is one line."""
    from sessa_bench.probe import TRAINED, describe_run, probe_model, write_probe

    try:
        result = probe_model(model, dm.val_dataloader(), **TRAINED, max_seconds=120,
                             progress=lambda line: print(line, flush=True))
    except Exception as e:  # noqa: BLE001 - the run is already finished; say why there is no probe.json
        print(f"probe: no probe.json for {folder.path}: {type(e).__name__}: {e}", flush=True)
        return
    _, checkpoint, checkpoint_step = folder.reported()  # from summary.json, written before: the weights held
    result.update(run=describe_run(cfg, "trained", step, checkpoint, checkpoint_step), git_commit=commit)
    write_probe(folder.path, result)


_FAILED: list[Exception] = []  # user errors of this process's jobs, raised once Hydra has returned


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except user_error_types() as e:  # Hydra would add its own "Error executing job ..." line: keep it for the end
        if debug():
            raise
        _FAILED.append(e)


def raise_failures() -> None:
    """After main(): raise the first job's user error (entry points print it as one line)."""
    if _FAILED:
        raise _FAILED[0]


if __name__ == "__main__":
    with user_errors("python -m sessa_bench.train"):
        main()
        raise_failures()
