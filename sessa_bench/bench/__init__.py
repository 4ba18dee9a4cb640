"""Benchmarks (`make bench`): mixer/block speed and memory, training throughput (a bare step and the real
training loop beside it), decoding.

Every number in a table is measured by this package in one run, so ratios compare like with like.
`python -m sessa_bench.bench --preset gpu` is the real thing; `--preset cpu` runs the same code at toy
shapes so CI exercises it.
"""
