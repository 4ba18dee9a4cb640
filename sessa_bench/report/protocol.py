"""The paper-table protocol, computed from run folders alone (used by the table runner and the report alike):

- learning-rate selection: each family trains seed 0 at every rate of the table's grid (`sweep.lr`); the
  rate with the best validation metric at the grid's step count wins (validation only, never test): the last
  validation at or before it, or with `sweep.score: best` (the default of best-checkpoint runs) the best one
  up to it. When the winner is at an edge of the grid, the grid grows by one step beyond it (x3 or /3), at
  most MAX_EXTENSIONS times. A best rate at an edge among the rates scored so far has its extension trained
  beside the rates still missing (Cell.ahead): the same choice a round earlier, unless a missing rate wins.
  Scores come from metrics.jsonl at the grid's step count, so extending the winning run later does not change
  the choice; a run retrained from step 0 to be extended (its checkpoint stayed on the GPU machine it trained
  on) is scored from the lines of its first training that reached the grid's step count,
  kept in metrics.prev.jsonl (GPU training is not bit-reproducible, so a retrain's curve differs).
- convergence: a run is converged when its validation metric moved by less than 0.01 (accuracy, absolute)
  or 1 % (perplexity, relative to the last value) over the last quarter of its steps: max - min over the
  validations in that quarter and the last one before it. With a best-checkpoint (`callbacks.best`) the
  curve is the best-so-far one, since that is what the reported checkpoint follows. An accuracy that is flat
  but no better than the task's trivial level (its `baseline`, e.g. naive Bayes on SymbolSoup's symbol counts,
  else its `chance`, from the run's task facts) plus 0.01 is a plateau, not convergence: such a run is
  extended like an unconverged one (up to the cap). On SymbolSoup the small models sit at the counts
  baseline for the first thousand steps and leave it thousands of steps later, if at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf

from sessa_bench.compose import compose_train
from sessa_bench import cuda_graphs
from sessa_bench.report.timing import execution
from sessa_bench.run_folder import RunFolder, extension_of, last_step, resolved_config
from sessa_bench.schema import SWEEP_SCORES

MAX_EXTENSIONS = 2
STEP = 3.0            # grid extension factor
ACC_TOL = 0.01        # convergence: absolute, for accuracies
PPL_TOL = 0.01        # convergence: relative, for perplexities


def grid_value(lr: float) -> float:
    """A grid value rounded to 2 significant digits, so that 1e-4 / 3 is 3.3e-05 (a clean run name)."""
    return float(f"{lr:.2g}")


def mode_of(metric: str) -> str:
    return "min" if metric.split("/")[-1] in ("ppl", "loss") else "max"


def better(a: float | None, b: float | None, mode: str) -> bool:
    """a strictly better than b; a missing or non-finite score is worst."""
    if a is None or not math.isfinite(a):
        return False
    if b is None or not math.isfinite(b):
        return True
    return a > b if mode == "max" else a < b


def select_lr(grid: list[float], scores: dict[float, float | None], mode: str,
              max_extensions: int = MAX_EXTENSIONS) -> tuple[float | None, list[float], list[float]]:
    """(chosen rate or None, rates tried in order, rates still to run). Ties go to the smaller rate. The
    edge rule applies only to grids of two or more rates; a single rate is simply the rate."""
    tried = sorted(grid_value(x) for x in grid)
    if not tried:
        raise ValueError("sweep.lr is empty: nothing to select from")
    extensions = 0
    while True:
        missing = [x for x in tried if x not in scores]
        if missing:
            return None, tried, missing
        best = tried[0]
        for x in tried[1:]:
            if better(scores[x], scores[best], mode):
                best = x
        edge = len(tried) >= 2 and best in (tried[0], tried[-1])
        if not edge or extensions >= max_extensions or not all(
                s is not None and math.isfinite(s) for s in [scores[best]]):
            return best, tried, []
        new = grid_value(best * STEP if best == tried[-1] else best / STEP)
        tried = sorted([*tried, new])
        extensions += 1


def curve(rows: list[dict], metric: str) -> list[tuple[int, float]]:
    """(step, value) of the validations logged during training, one per step (the last one logged)."""
    out: dict[int, float] = {}
    for r in rows:
        if metric in r and "step" in r:
            out[int(r["step"])] = float(r[metric])
    return sorted(out.items())


def score_at(rows: list[dict], metric: str, steps: int, best: bool) -> float | None:
    """The validation metric at `steps`: the last validation at or before it, or (best-checkpoint runs) the
    best one up to it."""
    pts = [v for s, v in curve(rows, metric) if s <= steps]
    if not pts:
        return None
    if not best:
        return pts[-1]
    finite = [v for v in pts if math.isfinite(v)]
    return (min(finite) if mode_of(metric) == "min" else max(finite)) if finite else pts[-1]


def convergence(rows: list[dict], metric: str, steps: int, best: bool = False,
                trivial: float | None = None) -> tuple[bool, float | None]:
    """(converged, movement over the last quarter of `steps`) by the rule of the module docstring; trivial:
    the task's trivial accuracy (baseline or chance), below which a flat curve is a plateau."""
    pts = curve(rows, metric)
    if best:
        run, acc = [], None
        for s, v in pts:
            acc = v if acc is None or better(v, acc, mode_of(metric)) else acc
            run.append((s, acc))
        pts = run
    start = steps - steps / 4
    before = [p for p in pts if p[0] <= start]
    window = before[-1:] + [p for p in pts if start < p[0] <= steps]
    if len(window) < 2 or not all(math.isfinite(v) for _, v in window):
        return False, None
    vals = [v for _, v in window]
    moved = max(vals) - min(vals)
    if mode_of(metric) == "min":
        moved /= abs(vals[-1])
        return moved < PPL_TOL, moved
    plateau = trivial is not None and vals[-1] <= trivial + ACC_TOL
    return moved < ACC_TOL and not plateau, moved


def trivial_level(task_facts: dict | None) -> float | None:
    """What a model reaches without learning the task: the task's baseline, else its chance level."""
    facts = task_facts or {}
    return next((float(facts[k]) for k in ("baseline", "chance") if facts.get(k) is not None), None)


@lru_cache(maxsize=4096)
def _compose(overrides: tuple[str, ...]):
    cfg = compose_train(list(overrides))
    return cfg, resolved_config(cfg)  # resolved now: ${hydra:...} reads the last composed config


@dataclass
class Run:
    lr: float
    seed: int
    overrides: list[str]          # to train it (steps as requested)
    folder: RunFolder
    steps_requested: int
    summary: dict | None = None   # when finished with this config (or an extension of it)
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl lines of the training (no final evaluation)
    earlier: list[list[dict]] = field(default_factory=list)  # retrained from step 0 to extend it: the lines of
    #                                                            each earlier training, shortest first

    @property
    def steps(self) -> int:
        return self.summary["steps"] if self.summary else self.steps_requested


@dataclass
class Cell:
    """One family in one experiment (a table column): its grid, selection and seeds."""
    experiment: str
    family: str
    overrides: list[str]
    metric: str                   # the selection / convergence metric (validation)
    grid: list[float]             # sweep.lr as configured ([] = no sweep: optim.lr)
    lr: float                     # optim.lr of the config
    steps: int                    # trainer.max_steps of the config: the grid's step count
    constant: bool                # optim.schedule == constant: runs can be extended
    best: bool                    # a best-checkpoint callback: report from the best validation
    names: dict = field(default_factory=dict)  # experiment_name, task_name, budget, results_dir
    execution: str = "eager"      # how its runs train (report.timing.execution): the estimates' pace
    score_best: bool | None = None  # sweep.score == best: a rate's score is its best validation up to the
    #                                 grid's step count, else the last one (None: as `best`)
    cap: int | None = None        # sweep.max_steps_cap: extensions stop there (None: 4x `steps`)
    seeds: list[int] | None = None  # sweep.seeds: the seeds of its table cell (None: the command line's)

    def seed_list(self, given: list[int] | None) -> list[int]:
        """The seeds its cell reports and trains: those given on the command line (--seeds), else its
        experiment's sweep.seeds, else DEFAULT_SEEDS."""
        return list(given) if given is not None else list(self.seeds or DEFAULT_SEEDS)

    def reported(self, lr: float, seeds: list[int] | None) -> list[Run]:
        """The finished runs its table cell reports at rate lr: one per seed of seed_list(seeds) that has
        trained the cell's step count (a shorter run of a seed is left out)."""
        return [r for s in self.seed_list(seeds) if (r := self.run(lr, s)).summary]

    @property
    def max_steps(self) -> int:
        """The longest an extension of this cell trains: its experiment's cap, else 4x the grid's steps."""
        return self.cap if self.cap is not None else 4 * self.steps

    def run(self, lr: float, seed: int, steps: int | None = None) -> Run:
        steps = steps or self.steps
        ov = [f"experiment={self.experiment}", f"model={self.family}", f"seed={seed}", *self.overrides,
              f"optim.lr={lr!r}", f"trainer.max_steps={steps}"]
        _, want = _compose(tuple(ov))  # the resolved dict: `cfg` resolves ${hydra:...} by the last composition
        folder = RunFolder(Path(want["results_dir"]) / want["experiment_name"] / want["run_name"])
        r = Run(lr, seed, ov, folder, steps)
        if folder.config.exists():
            have = OmegaConf.to_container(OmegaConf.load(folder.config))
            more = extension_of(want, have)   # the folder holds this run extended to more steps
            if more:
                r.overrides = [*ov[:-1], f"trainer.max_steps={more}"]
                r.steps_requested = more
            if more is not None and folder.is_finished():
                r.summary = folder.read_summary()
                folder.check_steps(r.summary, have)  # else a plan here and ensure on the GPU disagree about it
                r.rows = folder.fit_metrics(r.summary)
                r.earlier = folder.earlier_trainings()
        return r

    def score(self, r: Run) -> float | None:
        """The sweep score: from the first training that reached the grid's step count, when the run was
        retrained to be extended (its checkpoint stayed on another machine), so the choice made from that
        training does not move; from its current lines when no earlier training got that far."""
        reached = [rows for rows in r.earlier if last_step(rows) >= self.steps - 1]
        rows = reached[0] if reached else r.rows
        return score_at(rows, self.metric, self.steps, self.scores_best()) if r.summary else None

    def scores_best(self) -> bool:
        """Whether the sweep scores a rate by its best validation up to the grid's step count (else the last)."""
        return self.best if self.score_best is None else self.score_best

    def selection(self) -> tuple[float | None, list[float], dict[float, float | None], list[float]]:
        """(chosen rate, rates tried, their scores, rates still to run)."""
        if not self.grid:
            return self.lr, [self.lr], {}, []
        scores: dict[float, float | None] = {}
        while True:
            chosen, tried, missing = select_lr(self.grid, scores, mode_of(self.metric))
            runs = {x: self.run(x, 0) for x in missing}  # each composes a config: once per rate
            todo = [x for x in missing if runs[x].summary is None]
            for x in missing:
                if x not in todo:
                    scores[x] = self.score(runs[x])
            if todo or chosen is not None:
                return chosen, tried, {x: scores.get(x) for x in tried}, todo + self.ahead(scores, todo)

    def ahead(self, scores: dict[float, float | None], missing: list[float]) -> list[float]:
        """The rates the edge rule will ask for once the `missing` rates have trained, should none of them win
        (select_lr with each missing rate scored worst): when the best rate scored so far is at an edge of the
        grid, its extension trains in the same round as the rates still missing, not a round (a lease) later.
        Should a missing rate win after all, the early run is not part of the grid (select_lr never reads a
        rate it did not ask for), so the choice is the rule's, whichever way it goes."""
        if not missing:
            return []
        known = {**scores, **{x: None for x in missing}}
        while True:
            more = select_lr(self.grid, known, mode_of(self.metric))[2]
            runs = {x: self.run(x, 0) for x in more}
            todo = [x for x in more if runs[x].summary is None]
            if todo or not more:
                return todo
            known.update({x: self.score(runs[x]) for x in more})  # trained early already: the next one past it

    def converged(self, r: Run) -> tuple[bool, float | None]:
        if not r.summary:
            return False, None
        done, moved = convergence(r.rows, self.metric, r.steps, self.best, trivial_level(r.summary.get("task_facts")))
        # a run kept before its config asked for the best checkpoint reports its last model: not the result
        # the table asks for, whatever its curve did (its extension retrains from step 0 with the best kept)
        return done and (not self.best or r.summary.get("test_from") == "best"), moved


def for_family(overrides: list[str], family: str) -> list[str]:
    """The overrides that apply to `family`: plain ones, and `<family>:<override>` ones without the scope."""
    out = []
    for o in overrides:
        head, sep, rest = o.partition(":")
        if not sep or "=" in head:  # a colon only after the '=' belongs to the value
            out.append(o)
        elif head == family:
            out.append(rest)
    return out


def cell(experiment: str, family: str, overrides: list[str], metric: str) -> Cell:
    overrides = for_family(overrides, family)
    cfg, res = _compose((f"experiment={experiment}", f"model={family}", "seed=0", *overrides))
    return Cell(experiment, family, list(overrides), metric, list(res["sweep"]["lr"]), float(res["optim"]["lr"]),
                int(res["trainer"]["max_steps"]), res["optim"]["schedule"] == "constant",
                "best" in (res.get("callbacks") or {}),
                {"experiment_name": res["experiment_name"], "task_name": res["task_name"],
                 "budget": res["budget"]["name"], "results_dir": res["results_dir"]},
                planned_execution(res), score_of(res["sweep"]), cap_of(res["sweep"]), seeds_of(res["sweep"]))


def planned_execution(res: dict) -> str:
    """How a run of this resolved config will train (timing.execution's names: compile, cuda_graphs, eager),
    with `cuda_graphs: auto` settled for the GPUs visible here."""
    return execution({**res, "cuda_graphs": cuda_graphs.enabled(res)})


def cap_of(sweep: dict) -> int | None:
    """sweep.max_steps_cap (absent: None), or one clear error for a value that is not a positive integer."""
    cap = sweep.get("max_steps_cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ValueError(f"sweep.max_steps_cap={cap!r}: must be a positive integer (steps), or absent (4x the "
                         f"experiment's trainer.max_steps)")
    return cap


DEFAULT_SEEDS = (0, 1)  # at least 2 seeds per cell (issue 12); an experiment asks for more with sweep.seeds


def seeds_of(sweep: dict) -> list[int] | None:
    """sweep.seeds (absent: None), or one clear error for a value that is not a list of distinct seeds
    holding 0, the sweep's own seed (its run at the chosen rate is the cell's seed 0)."""
    seeds = sweep.get("seeds")
    if seeds is None:
        return None
    ok = (isinstance(seeds, (list, tuple)) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0
                                                   for x in seeds) and len(set(seeds)) == len(seeds) and 0 in seeds)
    if not ok:
        raise ValueError(f"sweep.seeds={seeds!r}: must be a list of distinct seeds (integers >= 0) holding 0, the "
                         f"sweep's seed, or absent (the command line's --seeds, else {list(DEFAULT_SEEDS)})")
    return list(seeds)


def score_of(sweep: dict) -> bool | None:
    """sweep.score: `best` (the best validation up to the grid's step count), `last` (the last one at or
    before it), absent: as the run's callbacks.best says. One clear error for another value."""
    score = sweep.get("score")
    if score not in SWEEP_SCORES:
        raise ValueError(f"sweep.score={score!r}: must be best or last")
    return None if score is None else score == "best"
