"""The Diffuse MQAR calibration table, from run folders only: test token accuracy overall, inside the
training lags and beyond them (the 4x extrapolation), next to chance."""

from __future__ import annotations

import statistics

from sessa_bench.report.markdown import md_table


def row(name: str, overrides: list[str], summary: dict, chosen: bool = False) -> dict:
    """One run of a candidate; chosen: the rate with the best validation accuracy among the candidate's."""
    facts, final = summary["task_facts"], summary["final"]
    task = facts["config"]
    inside = [final[f"test/acc/{s}"] for s in facts["slice_names"]
              if s not in facts["ood_slices"] and f"test/acc/{s}" in final]
    beyond = [final[f"test/acc/{s}"] for s in facts["ood_slices"] if f"test/acc/{s}" in final]
    return {"candidate": name, "overrides": " ".join(overrides) or "(first defaults)",
            "n_pairs": task["n_pairs"], "train_lag": "-".join(map(str, task["train_lag"])),
            "test_lag": "-".join(map(str, task["test_lag"])), "lengths": f"{task['seq_len']}/{task['test_seq_len']}",
            "chance": facts["chance"], "test_acc": final["test/acc"], "val_acc": final["val/acc"], "chosen": chosen,
            "inside": statistics.mean(inside) if inside else float("nan"),
            "beyond": statistics.mean(beyond) if beyond else float("nan"),
            "steps": summary["steps"], "lr": summary["optim"]["lr"], "budget": summary["budget"],
            "device": summary["hardware"].get("gpu") or "CPU", "commit": summary["git_commit"][:12]}


def render(rows: list[dict], target: list[float] | None = None, pending: list[str] = ()) -> str:
    """The table; with several rates per candidate, `*` marks the chosen one and, given a target band of test
    accuracy, a last line names the candidates whose chosen run lands in it. pending: runs the grids still
    need (a best rate at an edge): the table is then marked as not final."""
    grid = any(r["chosen"] for r in rows)
    table = md_table(
        ["candidate", "overrides", "pairs", "train lags", "test lags", "train/test length", "chance",
         *(["val acc"] if grid else []), "test acc", "acc, train lags", "acc, beyond (up to 4x)", "steps", "lr"],
        [[r["candidate"], f"`{r['overrides']}`", r["n_pairs"], r["train_lag"], r["test_lag"], r["lengths"],
          f"{r['chance']:.4f}", *([f"{r['val_acc']:.4f}"] if grid else []), f"{r['test_acc']:.4f}",
          f"{r['inside']:.4f}", f"{r['beyond']:.4f}", r["steps"],
          f"{r['lr']:g}{' *' if r['chosen'] else ''}"] for r in rows])
    meta = sorted({f"budget `{r['budget']}`, {r['device']}, commit {r['commit']}" for r in rows})
    notes = ""
    if grid:
        notes = ("\n\n`*`: the candidate's learning rate with the best validation accuracy; its test accuracy is "
                 "the candidate's.")
        if target is not None:
            lo, hi = target
            picked = [r for r in rows if r["chosen"]]
            inside = [f"{r['candidate']} ({r['test_acc']:.4f})" for r in picked if lo <= r["test_acc"] <= hi]
            notes += (f" In the target band [{lo:g}, {hi:g}] of test accuracy: "
                      f"{', '.join(inside) if inside else 'none'}.")
    if pending:
        notes += (f"\n\n**Not final**: a best rate at an edge of the grid adds the next rate past it (x3 or /3, at "
                  f"most twice), so `*` marks the best rate among the finished runs only; still to train: "
                  f"{', '.join(pending)} (`python -m sessa_bench.calibrate --run`).")
    return ("# Diffuse MQAR calibration (Transformer; Table 1's budget, optimiser and batch unless overridden; "
            "seed 0)\n\n"
            "Test token accuracy, bucketed by lag: inside the training lags and beyond them (test lags reach 4x "
            "the longest training lag). Means over the power-of-two lag buckets.\n\n" + table + notes
            + f"\n\n_{'; '.join(meta)}. Built by `python -m sessa_bench.calibrate` from run folders only._\n")
