"""W&B run hygiene, offline: one W&B run per run folder (also several runs in one process), each carrying
the flattened resolved config and the run folder's summary. Runs are read back from the transaction log
that wandb itself wrote (sessa_bench.wandb_offline), never from our own copy of what we sent."""

import json
import struct
import time

import pytest
from omegaconf import OmegaConf

from sessa_bench import wandb_offline
from sessa_bench.run_folder import RunFolder
from sessa_bench.runs import ensure
from sessa_bench.wandb_run import flatten

from test_harness import overrides

RUNS = [("transformer", 0), ("mamba2", 0), ("transformer", 1)]


def read_written(path, timeout: float = 30.0):
    """The offline run once its writer has finished the file: the writer is W&B's service, another process,
    and on a loaded 2-core CI machine a file read just after wandb.finish() held no record yet (2026-11-29)."""
    deadline = time.monotonic() + timeout
    while (run := wandb_offline.read(path)).exit_code is None and time.monotonic() < deadline:
        time.sleep(0.5)
    return run


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-elsewhere"))  # save_dir must win over it


def test_three_runs_in_one_process_are_three_wandb_runs(tmp_path, offline):
    ensure([overrides(tmp_path, f"model={fam}", f"seed={seed}", "logger=wandb", "trainer.max_steps=3",
                      "trainer.val_check_interval=3") for fam, seed in RUNS], jobs=1)
    exp = tmp_path / "runs" / "default"
    seen = set()
    for fam, seed in RUNS:
        folder = RunFolder(exp / f"{fam}-symbol_soup-tiny-s{seed}")
        files = list((folder.path / "wandb").glob("offline-run-*/*.wandb"))
        assert len(files) == 1, files
        w = read_written(files[0])
        summary, config = folder.read_summary(), OmegaConf.to_container(OmegaConf.load(folder.config))
        assert w.id == f"default-{fam}-symbol_soup-tiny-s{seed}" and w.group == "default"
        assert w.name == folder.path.name and f"family:{fam}" in w.tags
        assert w.exit_code == 0
        seen.add(w.id)
        # the full resolved config, flattened, plus the parameter count
        flat = flatten(config)
        for key in ("model.family", "budget.name", "task_name", "optim.lr", "seed", "trainer.max_steps",
                    "data.batch_size"):
            assert w.config[key] == flat[key], key
        assert all(w.config[k] == v for k, v in flat.items())
        assert w.config["model.family"] == fam and w.config["seed"] == seed
        assert w.config["params"] == summary["params"]["total"]
        # its own history: the run's logged steps, and nothing of another run
        steps = sorted({int(r["trainer/global_step"]) for r in w.history if "train/loss" in r})
        jsonl = sorted({r["step"] for r in folder.read_metrics() if "train/loss" in r})
        assert steps == jsonl and len(steps) >= 2
        assert any("val/acc" in r for r in w.history)
        # the summary: the same numbers as summary.json
        for k, v in summary["final"].items():
            assert w.summary[k] == pytest.approx(v), k
        assert w.summary["params.total"] == summary["params"]["total"]
        assert w.summary["throughput_tokens_per_s"] == pytest.approx(summary["throughput_tokens_per_s"])
        assert w.summary["task_facts.chance"] == pytest.approx(summary["task_facts"]["chance"])
        assert w.summary["family"] == fam and w.summary["experiment"] == "default"
    assert len(seen) == 3
    assert not (tmp_path / "wandb-elsewhere").exists() or not list((tmp_path / "wandb-elsewhere").rglob("*.wandb"))


def test_a_failing_run_finishes_its_wandb_run(tmp_path, offline, monkeypatch):
    import wandb
    from sessa_bench import train
    from sessa_bench.compose import compose_train

    def broken(model):
        raise RuntimeError("boom after training")
    monkeypatch.setattr(train, "count_params", broken)
    cfg = compose_train(overrides(tmp_path, "model=transformer", "logger=wandb", "trainer.max_steps=2",
                                  "trainer.val_check_interval=2"))
    with pytest.raises(RuntimeError, match="boom after training"):
        train.run(cfg)
    assert wandb.run is None
    files = list((tmp_path / "runs" / "default" / "transformer-symbol_soup-tiny-s0" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(files) == 1 and read_written(files[0]).exit_code == 1


def test_reader_joins_records_split_across_blocks(tmp_path):
    # A record longer than a block is written as FIRST, MIDDLE..., LAST fragments; a block tail shorter
    # than a header is zero padding (LevelDB's log format, which W&B uses behind its own header).
    from wandb.proto import wandb_internal_pb2 as pb
    rec = pb.Record()
    rec.config.update.add(key="big", value_json=json.dumps("x" * 70000))
    payload = rec.SerializeToString()
    small = pb.Record()
    small.summary.update.add(key="a", value_json="1")
    out = bytearray(wandb_offline.HEADER)

    def put(data: bytes):
        first = True
        while True:
            room = wandb_offline.BLOCK - len(out) % wandb_offline.BLOCK
            if room < 7:
                out.extend(b"\0" * room)
                continue
            part, data = data[:room - 7], data[room - 7:]
            kind = (1 if not data else 2) if first else (4 if not data else 3)
            out.extend(b"\0\0\0\0" + struct.pack("<HB", len(part), kind) + part)
            first = False
            if not data:
                return
    put(payload)
    out.extend(b"\0" * (wandb_offline.BLOCK - len(out) % wandb_offline.BLOCK - 3))  # leave a 3-byte tail
    put(small.SerializeToString())
    path = tmp_path / "run-x.wandb"
    path.write_bytes(bytes(out))
    got = wandb_offline.read(path)
    assert got.config["big"] == "x" * 70000 and got.summary == {"a": 1}
    path.write_bytes(b"not a log")
    with pytest.raises(ValueError, match="not a W&B transaction log"):
        wandb_offline.read(path)
