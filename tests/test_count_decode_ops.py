"""scripts/count_decode_ops.py: the op count of a decode step, each batched product counted once as the GPU runs
it (cuBLAS returns the float32 result itself; the CPU casts both operands first)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_the_count_leaves_out_exactly_the_cpu_casts_of_the_read_products():
    import count_decode_ops

    layers, gpu = count_decode_ops.count("sessa", "tiny", batch=2, context=16)
    _, cpu = count_decode_ops.count("sessa", "tiny", batch=2, context=16, gpu_products=False)
    assert gpu.ops["bmm"] == cpu.ops["bmm"] == 2 * layers    # the feedback read's two products a layer
    assert cpu.ops["_to_copy"] - gpu.ops["_to_copy"] == 4 * layers  # two operands of each, on the CPU only
    assert {k: v for k, v in gpu.ops.items() if k != "_to_copy"} == {k: v for k, v in cpu.ops.items()
                                                                    if k != "_to_copy"}
    assert not set(gpu.ops) & count_decode_ops.METADATA
    _, t = count_decode_ops.count("transformer", "tiny", batch=2, context=16)
    assert t.ops["bmm"] == 0 and t.ops["addmm"] > 0


def test_sessa_step_stays_at_thirty_eight_ops_a_layer():
    """Session 35 cut Sessa's eager decode step at `base` from 44 to 38 ops a layer on the CPU (the gated update
    f + g ctx in two kernels instead of five, the masked read's mask in one, the gain's bias read by its add,
    gamma_max and the pos > 0 switch in one factor per step): in a CUDA graph at batch 1 each is a launch of a
    few microseconds, 131 of them a step at `base`. More than 38 again fails here."""
    import count_decode_ops

    layers, c = count_decode_ops.count("sessa", "base", batch=2, context=16)
    assert sum(c.ops.values()) <= 38 * layers + 1  # the step's own ops (embedding, angles, head) included: 837
    assert c.ops["addcmul"] == layers and c.ops["where"] >= layers and c.ops["bitwise_not"] == 0
