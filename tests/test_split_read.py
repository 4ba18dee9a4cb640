"""The split-KV Triton read of a static decode step (models/kernels/split_read_triton.py), run by Triton's CPU
interpreter in float32, against softmax attention over the unmasked positions in float64
(test_masked_read.reference): grouped-query heads, odd head dims, a single wide head (Sessa's feedback
read), masks that leave whole splits empty, one split and many; and static decoding with read="triton"
against the parallel forward (the Transformer and Sessa with grouped-query heads, whose reads go through it)."""

import sys

import pytest
import torch

from sessa_bench.models.masked_read import masked_read
from test_masked_read import reference
from triton_interpreter import patch_interpreter, run_interpreted

CASES = {  # name -> (B, H, Hkv, d, L, mask)
    "mha-d5": (3, 4, 4, 5, 11, "some"),
    "gqa-d3": (2, 6, 2, 3, 37, "some"),
    "transformer-like-d66": (1, 12, 12, 66, 130, "causal"),
    "one-wide-head-d96": (1, 1, 1, 96, 70, "some"),          # Sessa's feedback read, narrower
    "empty-splits": (1, 2, 2, 8, 300, "last"),               # only the last positions visible
    "first-only": (2, 3, 3, 4, 50, "first"),                 # Sessa at pos 0: column 0 alone
}


def mask_of(kind: str, L: int, g: torch.Generator) -> torch.Tensor:
    if kind == "causal":
        return torch.arange(L) <= L // 2
    if kind == "last":
        return torch.arange(L) >= L - 5
    if kind == "first":
        return torch.arange(L) == 0
    m = torch.rand(L, generator=g) < 0.6
    m[3 % L] = True
    return m


def interpreted_errors() -> dict:
    patch_interpreter()
    from sessa_bench.models.kernels import split_read_triton as sr

    errors = {}
    for name, (B, H, Hkv, d, L, kind) in CASES.items():
        g = torch.Generator().manual_seed(L * d)
        q = torch.randn(B, H, d, dtype=torch.float64, generator=g)
        K, V = (torch.randn(B, L, Hkv, d, dtype=torch.float64, generator=g) for _ in range(2))
        mask = mask_of(kind, L, g)
        ref = reference(q, K, V, mask)
        out = masked_read(q.float(), K.float(), V.float(), mask, "triton")
        errors[name] = {"rel": float((out.double() - ref).norm() / ref.norm()),
                        "splits": sr.splits(B * H, L, d), "dtype": str(out.dtype)}
    # decoding: every token through the static step with read="triton", from an empty cache longer than
    # needed (masked tail), against the parallel forward; float32, both mixers that read a cache
    from test_decode_static import make
    for family in ("transformer", "sessa_gqa"):  # sessa_gqa: Sessa's feedback read and a grouped-query one
        torch.manual_seed(0)
        model = make(family, dtype=torch.float32)
        idx = torch.randint(0, 17, (3, 9))
        caches = model.init_cache(3, 12)
        for c in caches:
            c.read = "triton"
        pos = torch.zeros(1, dtype=torch.long)
        with torch.no_grad():
            ref = model(idx)
            steps = []
            for t in range(9):
                steps.append(model.decode_step(idx[:, t:t + 1], caches, pos))
                pos += 1
        got = torch.stack(steps, 1)
        errors[f"decode-{family}"] = {"rel": float((got - ref).norm() / ref.norm()), "splits": 0,
                                      "dtype": str(got.dtype)}
    return errors


@pytest.fixture(scope="module")
def interpreted():
    return run_interpreted(__file__)


@pytest.mark.parametrize("case", list(CASES))
def test_split_read_interpreted_float32(interpreted, case):
    r = interpreted[case]
    assert r["dtype"] == "torch.float32" and r["rel"] <= 1e-5, r


def test_some_cases_split_the_cache(interpreted):
    assert max(interpreted[c]["splits"] for c in CASES) >= 8 and min(interpreted[c]["splits"] for c in CASES) <= 2


@pytest.mark.parametrize("family", ["transformer", "sessa_gqa"])
def test_decoding_with_the_triton_read_follows_the_parallel_forward(interpreted, family):
    assert interpreted[f"decode-{family}"]["rel"] <= 1e-5, interpreted[f"decode-{family}"]


def test_the_triton_read_needs_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    q = torch.zeros(1, 1, 2)
    with pytest.raises(ValueError, match="decode read='triton' needs the triton package and CUDA tensors"):
        masked_read(q, q[:, None], q[:, None], torch.ones(1, dtype=torch.bool), "triton")


if __name__ == "__main__" and sys.argv[1:] == ["--interpret"]:
    import json
    print(json.dumps(interpreted_errors()))
