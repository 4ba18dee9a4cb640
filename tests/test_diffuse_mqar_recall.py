"""Diffuse MQAR's reference levels (tasks/diffuse_mqar_recall.py): a hand-made example scored by hand, and on
generated data the ceiling of 1 and the key-blind baseline computed another way."""

from types import SimpleNamespace

import numpy as np
import pytest

from sessa_bench.tasks.diffuse_mqar import DiffuseMQAR
from sessa_bench.tasks.diffuse_mqar_recall import recall
from sessa_bench.tasks.retrieval import AnswerRows, pack_rows


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SESSA_BENCH_CACHE", str(tmp_path / "cache"))


def test_a_hand_made_example():
    # keys over a=3 b=4 c=5 d=6, values 7..10; <bos>, memory (a b 7) (c d 8), a noise pattern (a d 9) that
    # shares the first key's first token and the second key's last, then the queries (c d -> 8), (a b -> 7)
    x = np.array([1, 3, 4, 7, 5, 6, 8, 3, 6, 9, 5, 6, 8, 3, 4, 7])
    rows = pack_rows([x], [(np.array([12, 15]), np.array([0, 1]))], pad_id=0, vocab_size=11)
    task = SimpleNamespace(key_len=2, value_len=1, key_offset=3, value_offset=7, n_pairs=2,
                           slice_names=("near", "far"), dataset=lambda split: AnswerRows(rows))
    r = recall(task)
    assert r["n"] == 2
    assert r["exact"] == {"acc": 1.0, "slices": {"near": 1.0, "far": 1.0}}
    # first token: c d finds (c d 8); a b finds the noise (a d 9) after (a b 7): wrong
    assert r["key_token_0"] == {"acc": 0.5, "slices": {"near": 1.0, "far": 0.0}}
    # last token: c d finds the noise (a d 9), wrong; a b finds (a b 7)
    assert r["key_token_1"] == {"acc": 0.5, "slices": {"near": 0.0, "far": 1.0}}
    assert r["memory"] == {"acc": 0.5, "slices": {"near": 0.5, "far": 0.5}}
    # the second query, after the first was answered 8, has only (a b 7) left
    assert r["memory_unanswered"] == {"acc": 0.75, "slices": {"near": 0.5, "far": 1.0}}


def small(**kw) -> DiffuseMQAR:
    return DiffuseMQAR(**{"n_pairs": 4, "n_queries": 4, "train_lag": (8, 63), "n_train": 4, "n_val": 4,
                          "n_test": 60, **kw})


@pytest.mark.parametrize("value_len", [1, 2])
def test_generated_data_ceiling_is_one_and_the_memory_guesses(value_len):
    task = small(value_len=value_len)
    r = recall(task)
    assert r["exact"]["acc"] == 1.0 and r["n"] == 60 * 4 * value_len
    assert 0 < r["key_token_0"]["acc"] < 1 and 0 < r["key_token_1"]["acc"] < 1
    assert r["memory"]["acc"] <= r["memory_unanswered"]["acc"] < 1
    if value_len == 1:  # the memory guess from the generator's layout: <bos>, then pairs of P = 3 tokens
        ds, hits = task.dataset("test"), []
        for i in range(len(ds)):
            x = ds.ids[i].numpy()
            memory = x[1 + 2 + 3 * np.arange(task.n_pairs)]
            hits += [np.mean(memory == x[a]) for a in ds.ans_pos[i].numpy() if a >= 0]
        assert r["memory"]["acc"] == pytest.approx(np.mean(hits), abs=1e-12)
    facts = task.facts()
    assert facts["ceiling"] == 1.0 and facts["baseline"] == r["memory_unanswered"]["acc"]


def test_cli_rows_per_candidate_and_one_line_for_another_task(monkeypatch, capsys):
    import sessa_bench.calibrate as calibrate
    from sessa_bench.tasks import diffuse_mqar_recall as cli
    tiny = ["task.n_train=4", "task.n_val=4", "task.n_test=20"]
    sweep = {"base": ["experiment=table1_diffuse_mqar", *tiny],
             "candidates": {"a": ["task.n_pairs=4", "task.n_queries=4", "task.train_lag=[8,63]"],
                            "b": ["task.n_pairs=2", "task.n_queries=2", "task.train_lag=[8,63]"]}}
    monkeypatch.setattr(calibrate, "load", lambda name: sweep)
    rows = cli.main(["--calibration", "tiny"])
    out = capsys.readouterr().out
    for name, task in (("a", small(n_test=20)), ("b", DiffuseMQAR(n_pairs=2, n_queries=2, train_lag=(8, 63),
                                                                  n_train=4, n_val=4, n_test=20))):
        r = recall(task)
        assert rows[name][1] == r
        line = next(ln for ln in out.splitlines() if ln.startswith(f"| {name} |"))
        assert line.endswith(f"| {r['memory']['acc']:.4f} | {r['memory_unanswered']['acc']:.4f} |")
    with pytest.raises(ValueError, match=r"^--experiment table1_symbol_soup trains task symbol_soup, not "
                                         r"diffuse_mqar$"):
        cli.main(["--experiment", "table1_symbol_soup"])


def test_elimination_drops_one_pair_per_earlier_query_of_two_value_tokens():
    # memory (a b 7 7) (c d 7 7) (a d 8 9): two pairs share the value 7 7; the query (c d -> 7 7), then (a b ->
    # 7 7). The second query's elimination drops one of the two 7 7 pairs (one earlier query, two answer tokens):
    # first token 7 among {7 7, 8 9} -> 1/2; second given 7 -> the 7 7 pair alone -> 1.
    x = np.array([1, 3, 4, 7, 7, 5, 6, 7, 7, 3, 6, 8, 9, 5, 6, 7, 7, 3, 4, 7, 7])
    rows = pack_rows([x], [(np.array([15, 16, 19, 20]), np.array([0, 0, 0, 0]))], pad_id=0, vocab_size=11)
    task = SimpleNamespace(key_len=2, value_len=2, key_offset=3, value_offset=7, n_pairs=3,
                           slice_names=("all",), dataset=lambda split: AnswerRows(rows))
    r = recall(task)
    assert r["exact"]["acc"] == 1.0
    # memory: first tokens 7, 7, 8 -> 2/3 each query; second given 7: {7 7, 7 7} -> 1
    assert r["memory"]["acc"] == pytest.approx((2 / 3 + 1 + 2 / 3 + 1) / 4)
    # unanswered: the first query has all three (2/3, then 1); the second drops one 7 7 pair: 1/2, then 1
    assert r["memory_unanswered"]["acc"] == pytest.approx((2 / 3 + 1 + 1 / 2 + 1) / 4)
