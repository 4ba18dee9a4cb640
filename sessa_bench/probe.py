"""Memory tail: how much the input at position t - L moves the hidden state at t, as a function of the lag L.

    sessa-bench probe RUN_DIR [--init] [--lags 1 2 4 ...] [--n-examples 4] [--method auto] [--probes 8]

Influence at lag L is the Jacobian norm ||d h_t / d x_{t-L}||_F, where x is the input embedding (after the
token embedding) and h_t a hidden state: the final one (after the last LayerNorm, before the head) and,
per layer l, the output of block l. Two curves are reported, each for the final state and every layer:

- by_position: the root mean square over examples and output positions t >= L (positions sampled evenly
  with a random offset per example, or all of them), i.e. the average over all pairs (t, t - L);
- from_source: the root mean square over examples of ||d h_{s+L} / d x_s|| for one fixed early source s
  (default 0): how one token's influence on later outputs fades, the quantity the power-law theory is about.

A root mean square (not a mean of norms) because the Hutchinson estimate below is unbiased for squared
norms. The model is causal, so one backward pass from the output at t yields d h_t / d x_s for every s <= t;
on CPU only the prefix x[:t+1] is run, on a GPU rows of several positions share one padded batch (fewer,
larger kernels; `squared_norms_at`). ||J||_F^2 = sum_i ||e_i^T J||^2 over the D output coordinates (`exact`:
D backward rows) or E ||v^T J||^2 with v ~ N(0, I) (`hutchinson`: K rows, unbiased, with a standard error from
the spread over probes); `auto` takes the exact sum when D <= K. The rows run as copies of the example in
one batch, so any kernel that trains (custom autograd functions included) can be probed.

At the end of a training run (the model on any device, outside inference mode):

    result = probe_model(lit.model, dm.val_dataloader(), n_examples=4, max_seconds=120)
    write_probe(folder.path, result)       # -> <run folder>/probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

import torch

from sessa_bench.tail_fit import fit_tail

METHODS = ("auto", "exact", "hutchinson")
# A trained model's probe: at the end of its run (train.probe_trained) or after a lease's sweep
# (scripts/probe_chosen.py), with the same settings, so their probe.json files compare.
TRAINED = dict(n_examples=4, probes=8)
CURVES = ("by_position", "from_source")
FINAL = "final"
DEFINITION = ("influence(L) = sqrt(mean ||d h_t / d x_{t-L}||_F^2): x = input embedding, h = final hidden "
              "state (after ln_f, before the head) or the output of block l; by_position: mean over examples "
              "and output positions t >= L; from_source: mean over examples at t = source + L")


def lag_grid(max_lag: int, per_octave: int = 2) -> list[int]:
    """Distinct integer lags from 1 to max_lag, evenly spaced on a log axis (per_octave points per doubling)."""
    if max_lag < 1 or per_octave < 1:
        raise ValueError(f"lag grid needs max_lag >= 1 and per_octave >= 1, got {max_lag}, {per_octave}")
    n = int(math.floor(math.log2(max_lag) * per_octave + 1e-9))
    return sorted({round(2 ** (k / per_octave)) for k in range(n + 1)})


def check_lags(lags) -> list[int]:
    lags = sorted({int(L) for L in lags})
    if not lags or lags[0] < 1:
        raise ValueError(f"lags must be positive integers (they live on a log axis), got {lags}")
    return lags


class ProbeTimeout(RuntimeError):
    """The probe's time budget ran out before one example was finished."""


# --- one example, many output positions --------------------------------------------------------------------
def squared_norms_at(fn, x: torch.Tensor, ts, d_out: int, method: str, probes: int, generator: torch.Generator,
                     max_rows: int = 64, max_tokens: int = 32768, pad_to: int | None = None,
                     deadline: float | None = None) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """||d out_l[t] / d x[s]||_F^2 for every output l of fn, every t in ts and every s <= t, for one example
    x: (T, D). Returns {t: (estimate, variance of the estimate)}, both (n_outputs, t + 1) in float64; the
    variance is 0 for method='exact'.

    fn maps (R, T', D) -> a list of (R, T', d_out) tensors, causally. A row of a batch is one (t, probe vector)
    pair; one forward and one backward per output serve a batch of up to max_rows rows. With pad_to=1 (the
    default on CPU, where arithmetic is the cost) a batch holds rows of one t and runs the prefix x[:t+1].
    With pad_to=P > 1 (the default on GPU, where kernel launches are the cost) a batch mixes positions, up to
    max_tokens tokens, and runs the prefix up to its largest t rounded up to a multiple of P, so few distinct
    shapes reach the kernels (causality: the inputs after t do not change d out[t] / d x[s]). The default,
    32768 tokens (under two of Table 1's training batches), lets 64 rows of a 600-token example share one
    batch: at 8192, Mamba2's probe (26 outputs, so 26 backward passes a batch) ran out of its 89 s on the H200.
    Past `deadline` (a time.time() value), ProbeTimeout is raised between two batches."""
    ts = sorted({int(t) for t in ts})
    pad_to = pad_to if pad_to is not None else (64 if x.is_cuda else 1)

    def span(t: int) -> int:  # the prefix a row of position t runs
        return min(x.shape[0], -(-(t + 1) // pad_to) * pad_to)

    total = d_out if method == "exact" else probes
    rows: list[tuple[int, torch.Tensor]] = []
    for t in ts:  # one draw per t, in order of t: the probe vectors do not depend on the batching
        v = (torch.eye(d_out, dtype=torch.float64) if method == "exact"
             else torch.randn(total, d_out, generator=generator, dtype=torch.float64))
        rows += [(t, v[r]) for r in range(total)]
    sums: dict[int, torch.Tensor] = {}
    sumsq: dict[int, torch.Tensor] = {}
    start = 0
    while start < len(rows):
        if deadline is not None and time.time() > deadline:
            raise ProbeTimeout(f"{start} of {len(rows)} rows done")
        length, R = span(rows[start][0]), 1
        while start + R < len(rows) and R < max_rows:
            t = rows[start + R][0]
            if t != rows[start][0] if pad_to == 1 else (R + 1) * max(length, span(t)) > max_tokens:
                break
            length, R = max(length, span(t)), R + 1
        chunk = rows[start:start + R]
        start += R
        X = x[:length].detach()[None].expand(R, -1, -1).clone().requires_grad_(True)
        outs = fn(X)
        at = torch.tensor([t for t, _ in chunk], device=X.device)
        V = torch.stack([v for _, v in chunk])
        per_out = []
        for i, o in enumerate(outs):
            (g,) = torch.autograd.grad(o[torch.arange(R, device=X.device), at], X,
                                       grad_outputs=V.to(o.device, o.dtype), retain_graph=i + 1 < len(outs))
            per_out.append(g.double().pow(2).sum(-1))  # (R, length): ||v_r^T J_{t_r,s}||^2
        sq = torch.stack(per_out, 1).cpu()  # (R, n_out, length), one copy to the host per batch
        for r, (t, _) in enumerate(chunk):
            q = sq[r, :, : t + 1]
            if t in sums:
                sums[t] += q
                sumsq[t] += q * q
            else:
                sums[t], sumsq[t] = q.clone(), q * q
    out = {}
    for t in ts:
        if method == "exact":
            out[t] = (sums[t], torch.zeros_like(sums[t]))
        else:
            mean = sums[t] / total
            sample_var = (sumsq[t] - total * mean.pow(2)).clamp(min=0) / (total - 1)
            out[t] = (mean, sample_var / total)
    return out


def squared_norms(fn, x: torch.Tensor, t: int, d_out: int, method: str, probes: int,
                  generator: torch.Generator, max_rows: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """squared_norms_at for one output position t: (estimate, variance), both (n_outputs, t + 1)."""
    return squared_norms_at(fn, x, [t], d_out, method, probes, generator, max_rows)[t]


def positions_for(length: int, n_positions: int | None, generator: torch.Generator) -> list[int]:
    """Output positions for the by_position average: all of them (n_positions=None) or n evenly spaced ones
    with one random offset, so every position is equally likely to be picked."""
    if n_positions is None or n_positions >= length:
        return list(range(length))
    u = torch.rand((), generator=generator, dtype=torch.float64).item()
    return sorted({min(length - 1, int((k + u) * length / n_positions)) for k in range(n_positions)})


def influence(fn, inputs: list[torch.Tensor], lags, *, n_positions: int | None = 4, source: int = 0,
              method: str = "auto", probes: int = 8, seed: int = 0, max_rows: int = 64,
              output_names: list[str] | None = None, max_seconds: float | None = None,
              progress=None) -> dict:
    """Influence curves of a causal map fn over examples `inputs` (each (T_b, D)). See the module docstring.
    With max_seconds, an example not finished within that time budget (of the whole call) is left out and
    the later ones are not started (`n_examples` says how many were used); ProbeTimeout if none finished.
    `progress`, if given, is called with one line per finished example.
    Returns {"method", "probes", "curves": {curve: {output: {"influence", "se", "count"}}}, ...}."""
    if method not in METHODS:
        raise ValueError(f"probe method={method!r} is not one of {METHODS}")
    if probes < 2 and method != "exact":
        raise ValueError(f"probe probes={probes} must be >= 2 (the standard error needs two)")
    if source < 0:
        raise ValueError(f"probe source={source} must be >= 0")
    if not inputs:
        raise ValueError("probe needs at least one example")
    lags = check_lags(lags)
    # Separate streams: the positions drawn do not depend on the method or the number of probes.
    pos_gen, probe_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        outs = fn(inputs[0][None, :1].detach())
    n_out, widths = len(outs), {o.shape[-1] for o in outs}
    if len(widths) != 1:
        raise ValueError(f"probe: every output must have the same width, got {sorted(widths)}")
    d_out = widths.pop()
    names = output_names or [f"out_{i}" for i in range(n_out)]
    if len(names) != n_out:
        raise ValueError(f"probe: {len(names)} output names for {n_out} outputs")
    if method == "auto":
        method = "exact" if d_out <= probes else "hutchinson"
    # acc[curve][output][lag] = [sum of estimates, sum of variances, count]
    acc = {c: [{L: [0.0, 0.0, 0] for L in lags} for _ in range(n_out)] for c in CURVES}
    t0, done = time.time(), 0
    deadline = None if max_seconds is None else t0 + max_seconds
    for x in inputs:
        T = x.shape[0]
        pos = set(positions_for(T, n_positions, pos_gen))
        src = {source + L: L for L in lags if source + L < T}
        try:
            norms = squared_norms_at(fn, x, pos | set(src), d_out, method, probes, probe_gen, max_rows,
                                     deadline=deadline)
        except ProbeTimeout as e:
            if not done:
                raise ProbeTimeout(f"probe: the first example ({T} tokens) did not finish within "
                                   f"max_seconds={max_seconds:g} ({e})") from None
            break
        done += 1
        if progress is not None:
            progress(f"probe: example {done}/{len(inputs)} ({T} tokens, {len(norms)} output positions) "
                     f"after {time.time() - t0:.1f} s")
        for t, (est, var) in sorted(norms.items()):
            for o in range(n_out):
                if t in pos:
                    for L in lags:
                        if L <= t:
                            a = acc["by_position"][o][L]
                            a[0] += est[o, t - L].item(); a[1] += var[o, t - L].item(); a[2] += 1
                if t in src:
                    a = acc["from_source"][o][src[t]]
                    a[0] += est[o, source].item(); a[1] += var[o, source].item(); a[2] += 1
    curves = {}
    for c in CURVES:
        curves[c] = {}
        for o, name in enumerate(names):
            infl, se, count = [], [], []
            for L in lags:
                s, v, n = acc[c][o][L]
                sq = s / n if n else None
                infl.append(math.sqrt(max(sq, 0.0)) if n else None)
                # se of the root from the se of the mean square (delta method); None where unmeasured
                se_sq = math.sqrt(v) / n if n else None
                se.append(se_sq / (2 * infl[-1]) if n and infl[-1] > 0 else (0.0 if n else None))
                count.append(n)
            curves[c][name] = {"influence": infl, "se": se, "count": count}
    return {"definition": DEFINITION, "method": method, "probes": None if method == "exact" else probes,
            "n_examples": done, "positions_per_example": n_positions, "source": source, "seed": seed,
            "lags": lags, "outputs": names, "curves": curves}


def add_fits(result: dict, min_lag: int = 4, max_lag: int | None = None) -> dict:
    """Power-law and exponential fits of every curve (in place; also returned)."""
    for c in CURVES:
        for curve in result["curves"][c].values():
            curve["fit"] = fit_tail(result["lags"], curve["influence"], min_lag, max_lag)
    return result


# --- a Backbone ------------------------------------------------------------------------------------------
def hidden_states(model, x: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
    """Backbone.forward from the embedding output x onwards: the outputs of blocks `layers`, then the final
    hidden state (after ln_f, before the head)."""
    outs = []
    for i, block in enumerate(model.blocks):
        x = block(x)
        if i in layers:
            outs.append(x)
    outs.append(model.ln_f(x))
    return outs


def _check_layers(layers, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    layers = sorted({int(i) for i in layers})
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"probe layers={bad} out of range: the model has blocks 0..{n_layers - 1}")
    return layers


def examples_from(batches, n_examples: int) -> list[torch.Tensor]:
    """The first n_examples token sequences (1-D, padding cut off using `lengths`) of an iterable of batch
    dicts with input_ids (B, T) and optionally lengths (B,)."""
    if n_examples < 1:
        raise ValueError(f"probe n_examples={n_examples} must be >= 1")
    out = []
    for batch in batches:
        ids, lengths = batch["input_ids"], batch.get("lengths")
        for b in range(ids.shape[0]):
            n = int(lengths[b]) if lengths is not None else ids.shape[1]
            out.append(ids[b, :n].cpu())
            if len(out) == n_examples:
                return out
    if not out:
        raise ValueError("probe: the batches hold no examples")
    return out


def probe_model(model, batches, lags=None, *, n_examples: int = 4, n_positions: int | None = 4,
                source: int = 0, method: str = "auto", probes: int = 8, layers=None, min_lag: int = 4,
                max_fit_lag: int | None = None, seed: int = 0, max_rows: int = 64,
                lags_per_octave: int = 2, max_seconds: float | None = None, progress=None) -> dict:
    """Influence curves and tail fits of a Backbone on the first n_examples sequences of `batches`.

    lags default to a log grid (lags_per_octave per doubling) up to the longest example; layers=None probes
    every block (plus the final state), [] only the final state. Runs on the model's device and dtype, in eval
    mode (restored after), with gradients enabled even when called under torch.no_grad()."""
    seqs = examples_from(batches, n_examples)
    layers = _check_layers(layers, len(model.blocks))
    lags = check_lags(lags) if lags is not None else lag_grid(max(len(s) for s in seqs) - 1, lags_per_octave)
    dev = model.embed.weight.device
    was_training = model.training
    model.eval()
    t0 = time.time()
    try:
        with torch.enable_grad():
            inputs = [model.embed(s.to(dev)[None])[0].detach() for s in seqs]
            result = influence(lambda x: hidden_states(model, x, layers), inputs, lags,
                               n_positions=n_positions, source=source, method=method, probes=probes,
                               seed=seed, max_rows=max_rows, max_seconds=max_seconds, progress=progress,
                               output_names=[f"layer_{i}" for i in layers] + [FINAL])
    finally:
        model.train(was_training)
    used = seqs[: result["n_examples"]]
    result.update(min_lag=min_lag, model=model.cfg.to_dict(), lengths=[len(s) for s in used], device=str(dev),
                  dtype=str(model.embed.weight.dtype).replace("torch.", ""), seconds=round(time.time() - t0, 1))
    return add_fits(result, min_lag, max_fit_lag)


def write_probe(folder_path, result: dict, name: str = "probe.json") -> Path:
    """Write a probe result into a run folder (atomically); returns the file's path."""
    from sessa_bench.run_folder import atomic_write_text
    path = Path(folder_path) / name
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=True))
    return path


# --- a run folder ----------------------------------------------------------------------------------------
def model_config_of(folder, cfg, task):
    """The run's ModelConfig: summary.json["model"] when the run finished, else the budget solver on its
    config (the same call training makes)."""
    from sessa_bench.models.config import ModelConfig
    if folder is not None and folder.summary.exists():
        model = folder.read_summary().get("model")
        if model:
            return ModelConfig(**model)
    from omegaconf import OmegaConf

    from sessa_bench.budget import Budget, solve
    budget = Budget(**OmegaConf.to_container(cfg.budget, resolve=True))
    family = OmegaConf.to_container(cfg.model, resolve=True)
    return solve(family, budget, task.vocab_size, head=task.head, n_classes=task.num_classes)


def fresh_model(model_cfg, seed: int):
    """A Backbone with freshly initialised weights, seeded like the run."""
    from sessa_bench.models.backbone import Backbone
    torch.manual_seed(int(seed))
    return Backbone(model_cfg)


def val_batches(task, n_examples: int):
    """The first n_examples of the task's val split, one example per batch (no padding)."""
    ds = task.dataset("val")
    if len(ds) == 0:
        raise ValueError("probe: the task's val split is empty")
    return [task.collate([ds[i]]) for i in range(min(n_examples, len(ds)))]


def describe_run(cfg, weights: str, steps=None, checkpoint: str | None = None, checkpoint_step=None) -> dict:
    """What was probed. A trained model: `steps` the run's training length, `checkpoint` which of its weights
    (`best`: the best-validation ones the run reports, saved at `checkpoint_step`; `last`)."""
    out = {"family": cfg.model.family, "task": cfg.get("task_name"), "budget": cfg.budget.name,
           "seed": int(cfg.seed), "experiment": cfg.get("experiment_name"), "run_name": cfg.get("run_name"),
           "weights": weights, "steps": steps}
    if checkpoint is not None:
        out.update(checkpoint=checkpoint, checkpoint_step=checkpoint_step)
    return out


def probe_config(cfg, weights: str = "init", model=None, folder=None, device: str | None = None, **kw) -> dict:
    """Probe the model of a composed or saved training config `cfg`: the given (trained) model, or a fresh
    one (weights='init') with the run's model config and seed, on `device` (default: where it is). Examples
    come from the task's val split."""
    from hydra.utils import instantiate
    task = instantiate(cfg.task)
    steps, which = None, {}
    if model is None:
        model = fresh_model(model_config_of(folder, cfg, task), cfg.seed)
    elif folder is not None and folder.summary.exists():
        steps = folder.read_summary().get("steps")
        _, which["checkpoint"], which["checkpoint_step"] = folder.reported()  # the weights load_run loaded
    if device is not None:
        model = model.to(device)
    result = probe_model(model, val_batches(task, kw.pop("n_examples", 4)), **kw)
    from sessa_bench.run_folder import git_commit
    result["run"], result["git_commit"] = describe_run(cfg, weights, steps, **which), git_commit()
    return result


def probe_run(path, init: bool = False, out: str | Path | None = None, **kw) -> tuple[Path, dict]:
    """Probe a run folder's trained model (the checkpoint it reports, best or last: RunFolder.reported) or,
    with init=True, a fresh model of the same config (kw: probe_config's and probe_model's). Writes
    <run folder>/probe.json (probe_init.json with init=True) or `out`."""
    from omegaconf import OmegaConf

    from sessa_bench.run_folder import RunFolder
    folder = RunFolder(path)
    if not folder.config.exists():
        raise FileNotFoundError(f"{folder.path} is not a run folder (no config.yaml)")
    if init:
        cfg, model = OmegaConf.load(folder.config), None
    else:
        from sessa_bench.evaluate import load_run
        _, cfg, lit = load_run(folder.path)
        model = lit.model
    result = probe_config(cfg, "init" if init else "trained", model, folder, **kw)
    target = Path(out) if out else folder.path / ("probe_init.json" if init else "probe.json")
    return write_probe(target.parent, result, target.name), result


def summary_line(result: dict, curve: str = "by_position") -> str:
    fit = result["curves"][curve][FINAL]["fit"]
    if fit["better"] is None:
        return f"{curve}: too few lags to fit"
    p, e = fit["power"], fit["exponential"]
    tau = f"{e['tau']:.4g}" if e["tau"] is not None else "none (no decay)"
    return (f"{curve}: power law exponent {p['exponent']:.3f} (R^2 {p['r2']:.3f}); exponential tau {tau} "
            f"(R^2 {e['r2']:.3f}); better: {fit['better']}")


def device_arg(text: str) -> str:
    """A --device value: cpu, cuda or cuda:N as given; auto becomes cuda when there is a GPU, else cpu."""
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: must be auto, cpu, cuda or cuda:N")


def _layers_arg(text: str):
    if text == "all":
        return None
    if text == "none":
        return []
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers={text!r} must be 'all', 'none' or comma-separated block indices") from None


def add_probe_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--lags", nargs="+", type=int, default=None,
                    help="lags to measure (default: a log grid, 2 per octave, up to the longest example)")
    ap.add_argument("--n-examples", type=int, default=4, help="val examples to average over (default 4)")
    ap.add_argument("--positions", type=int, default=4,
                    help="output positions per example for by_position; 0 = all (default 4)")
    ap.add_argument("--source", type=int, default=0, help="the fixed source position of from_source")
    ap.add_argument("--method", default="auto", choices=METHODS,
                    help="exact (D backward rows), hutchinson (--probes rows) or auto (exact when D <= probes)")
    ap.add_argument("--probes", type=int, default=8, help="Hutchinson probe vectors per position (default 8)")
    ap.add_argument("--layers", default="all", help="blocks to probe besides the final state: all, none, 0,3,5")
    ap.add_argument("--min-lag", type=int, default=4, help="smallest lag in the tail fits (default 4)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the positions and probe vectors")


def probe_kwargs(args) -> dict:
    return dict(lags=args.lags, n_examples=args.n_examples, n_positions=args.positions or None,
                source=args.source, method=args.method, probes=args.probes, layers=_layers_arg(args.layers),
                min_lag=args.min_lag, seed=args.seed)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="sessa-bench probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--init", action="store_true",
                    help="a freshly initialised model of the run's config instead of its checkpoint")
    ap.add_argument("--out", default=None, help="where to write the JSON (default: in the run folder)")
    ap.add_argument("--device", default="auto", type=device_arg,
                    help="where the model runs: auto (a GPU when there is one), cpu, cuda, cuda:N")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="time budget: examples not finished by then are left out (default: none)")
    add_probe_args(ap)
    args = ap.parse_args(argv)
    path, result = probe_run(args.run_dir, args.init, args.out, device=args.device, max_seconds=args.max_seconds,
                             **probe_kwargs(args))
    print(f"{path} ({result['method']}, {result['seconds']} s)")
    for c in CURVES:
        print("  " + summary_line(result, c))


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.probe"):
        main()
