"""Reference levels of Diffuse MQAR, computed on its data: what simple readers of the context score on a
split, among them the task's ceiling and its trivial baseline.

Every answer token is predicted from its context alone (teacher forcing, as the models get: the earlier answer
tokens of its query are given). Levels, each an accuracy (an expected one for the guessers):
- exact: copy from the most recent earlier pattern (a key followed by a value) whose whole key equals the
  query's, the value token at the answer's offset. True keys are distinct and no noise key equals one, so
  the only match is the pair in memory: 1.0 by construction (the ceiling), computed so a broken generator shows.
- key token u: the same with only key token u matched. The most recent key sharing it can be a noise pattern
  or a structured distractor (a true key's prefix, another suffix): recall by one token of the key.
- memory: a uniform guess among the memory's pairs (those whose value agrees with the answer tokens already
  given): what a model reaches that knows where the values are but reads no query key.
- memory, unanswered: the same among the pairs whose value no earlier query of the example was answered with
  (every pair is queried at most once): key-blind guessing by elimination, the better of the two (the
  baseline: a model below it has not learnt to use the query's key).

CLI (a table per lag bucket; or a row per candidate of a calibration sweep):
    python -m sessa_bench.tasks.diffuse_mqar_recall --experiment table1_diffuse_mqar [--split test]
    python -m sessa_bench.tasks.diffuse_mqar_recall --calibration diffuse_mqar
"""

from __future__ import annotations

import argparse

import numpy as np

LEVELS = ("exact", "memory", "memory_unanswered")  # and "key_token_<u>" for each key position u


def _guess(values: np.ndarray, given: np.ndarray, target: int) -> float:
    """Expected accuracy of a uniform guess among candidate values (rows) agreeing with the given prefix."""
    cand = values[(values[:, :len(given)] == given).all(1)]
    return float((cand[:, len(given)] == target).mean()) if len(cand) else 0.0


def recall(task, split: str = "test") -> dict:
    """{level: {"acc": float, "slices": {lag bucket: acc}}} for every level above, and "n" (answer tokens),
    on `split` (from the task cache)."""
    ds = task.dataset(split)
    K, V, lo, hi = task.key_len, task.value_len, task.key_offset, task.value_offset
    names = [LEVELS[0], *(f"key_token_{u}" for u in range(K)), *LEVELS[1:]]
    rows, slices = [], []
    for i in range(len(ds)):
        x = ds.ids[i, : int(ds.lengths[i])].numpy().astype(np.int64)
        keep = ds.ans_pos[i].numpy() >= 0
        ans, sl = ds.ans_pos[i].numpy()[keep].astype(np.int64), ds.ans_slice[i].numpy()[keep]
        is_key = (x >= lo) & (x < hi)
        starts = np.nonzero(is_key[1:] & ~is_key[:-1])[0] + 1  # every maximal run of key tokens is one key
        keys = x[starts[:, None] + np.arange(K)]
        memory = x[starts[: task.n_pairs, None] + K + np.arange(V)]  # the memory's values, in memory order
        q = np.searchsorted(starts, ans, side="right") - 1  # the query pattern each answer token belongs to
        offset = ans - starts[q] - K                         # its position in the value
        for n in np.argsort(ans):  # in sequence order, for the elimination
            qi, j, a = q[n], offset[n], ans[n]
            earlier, row = keys[:qi], []
            for match in [(earlier == keys[qi]).all(1), *(earlier.T == keys[qi][:, None])]:
                hit = np.nonzero(match)[0]
                row.append(float(len(hit) > 0 and x[starts[hit[-1]] + K + j] == x[a]))
            given = x[a - j: a]
            row.append(_guess(memory, given, x[a]))
            left = list(range(task.n_pairs))  # drop one memory pair per value an earlier query was answered with
            for e in np.unique(q[q < qi]):  # each earlier query once (a value of V tokens has V answers)
                v = x[starts[e] + K + np.arange(V)]
                same = [p for p in left if (memory[p] == v).all()]
                if same:
                    left.remove(same[0])
            row.append(_guess(memory[left], given, x[a]))
            rows.append(row)
            slices.append(sl[n])
    r, sl = np.array(rows).reshape(-1, len(names)), np.array(slices, dtype=np.int64)
    out = {}
    for c, name in enumerate(names):
        by = {task.slice_names[s]: float(r[sl == s, c].mean()) for s in np.unique(sl)}
        out[name] = {"acc": float(r[:, c].mean()) if len(r) else 0.0, "slices": by}
    return {**out, "n": len(r)}


def _task(overrides: list[str], what: str):
    from hydra.utils import instantiate

    from sessa_bench.compose import compose_train
    cfg = compose_train(overrides)
    if cfg.task_name != "diffuse_mqar":
        raise ValueError(f"{what} trains task {cfg.task_name}, not diffuse_mqar")
    return instantiate(cfg.task)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="Diffuse MQAR's reference levels (copying by the whole key or by one "
                                             "key token, key-blind guesses) on a split of an experiment's task")
    ap.add_argument("--experiment", default="table1_diffuse_mqar")
    ap.add_argument("--calibration", metavar="SWEEP",
                    help="instead: one row of overall levels per candidate of conf/calibrate/SWEEP.yaml")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    args = ap.parse_args(argv)
    cmd = "python -m sessa_bench.tasks.diffuse_mqar_recall"
    about = ("`exact` copies after the query key's earlier occurrence (the ceiling), `key_token_<u>` after the most "
             "recent key sharing its token u, `memory` guesses uniformly among the memory's values, "
             "`memory_unanswered` among those no earlier query was answered with (the baseline)")
    if args.calibration:
        from sessa_bench.calibrate import load
        sweep, rows = load(args.calibration), {}
        for name, extra in sweep["candidates"].items():
            task = _task([*sweep["base"], *extra], f"candidate {name}")
            rows[name] = (extra, recall(task, args.split), task.chance)
        names = [k for k in next(iter(rows.values()))[1] if k != "n"]
        print(f"# Diffuse MQAR reference levels of the calibration's candidates ({args.split} split)\n\n"
              f"`{cmd} --calibration {args.calibration} --split {args.split}`: each candidate of "
              f"conf/calibrate/{args.calibration}.yaml, accuracy over all its answer tokens (tasks/"
              f"diffuse_mqar_recall.py): {about}.\n")
        print("| candidate | overrides | chance | " + " | ".join(names) + " |\n|---|---|---|" + "---|" * len(names))
        for name, (extra, r, chance) in rows.items():
            print(f"| {name} | `{' '.join(extra)}` | {chance:.4f} | " + " | ".join(f"{r[k]['acc']:.4f}" for k in names)
                  + " |")
        return rows
    task = _task([f"experiment={args.experiment}"], f"--experiment {args.experiment}")
    r = recall(task, args.split)
    names = [k for k in r if k != "n"]
    print(f"# Diffuse MQAR reference levels: experiment {args.experiment}, {args.split} split\n\n"
          f"`{cmd} --experiment {args.experiment} --split {args.split}`; {r['n']} answer tokens, chance "
          f"{task.chance:.4f}. Accuracy of each reader of the context per lag bucket (tasks/diffuse_mqar_recall.py): "
          f"{about}.\n")
    print("| lag | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for s in r["exact"]["slices"]:
        print(f"| {s} | " + " | ".join(f"{r[k]['slices'][s]:.4f}" for k in names) + " |")
    print("| all | " + " | ".join(f"{r[k]['acc']:.4f}" for k in names) + " |")
    return r


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    with user_errors("python -m sessa_bench.tasks.diffuse_mqar_recall"):
        main()
