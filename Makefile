# sessa-bench: `make help` lists the targets. Targets that run Python set up .venv first when it is
# missing (CPU torch 2.13.0, then the package with its dev extras), so a fresh machine needs nothing else.
# Override PYTHON to use another interpreter (the GPU machine: `make test-gpu PYTHON=python3`).

VENV      ?= .venv
PYTHON    ?= $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
BUDGET    ?= tiny
VOCAB     ?= 4096
SEQ_LEN   ?= 2048
# memory-tail: folders of run folders probed after training (default: Table 1's SymbolSoup and Diffuse MQAR runs).
RUNS      ?= $(wildcard results/runs/table1_symbol_soup results/runs/table1_diffuse_mqar)
# Table 2 and the ablation offline: the King James Bible instead of SimpleStories, 300 steps (~5 epochs of
# its 0.93M training tokens; the 3000 steps of table2_simplestories.yaml would be ~50).
BIBLE_ARGS ?= task=bible trainer.max_steps=300 trainer.val_check_interval=50 callbacks.checkpoint.every_n_steps=100

.DEFAULT_GOAL := help
.PHONY: help install demo test test-gpu params bench table1 table2 ablation tables table2-bible ablation-bible calibrate controls memory-tail dashboard

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q $(TORCH_PIN)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## create .venv: CPU torch first, then sessa-bench[dev] (editable)

# One worker per core (pytest-xdist; a test file stays on one worker, so module fixtures run once), one torch
# thread each: 294 s against 571 s for one process with torch's default threads on this 2-core machine.
TEST_WORKERS ?= auto
test: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## CPU test suite (GPU tests skipped), one worker per core
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile

# Several pytest processes share the GPU (correctness tests only, nothing is timed): lease 33 ran the suite as four
# processes sharing one H200 and every test passed (results/bench/h200-run25-session.log). 0: one process.
GPU_TEST_WORKERS ?= 4
test-gpu: ## GPU tests only: fast paths against the PyTorch references (needs CUDA)
	$(PYTHON) -m pytest -m gpu -rs -n $(GPU_TEST_WORKERS) --dist load

demo: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## tiny Sessa vs Transformer vs Mamba2 on SymbolSoup (CPU) -> results/demo.md
	$(PYTHON) -m sessa_bench.demo

bench: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## speed/memory/decode benchmark -> results/bench/<device>.md (toy shapes on CPU)
	$(PYTHON) -m sessa_bench.bench

params: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## per-family sizes for BUDGET=tiny|small|base (VOCAB, SEQ_LEN)
	$(PYTHON) -m sessa_bench.budget --budget $(BUDGET) --vocab $(VOCAB) --seq-len $(SEQ_LEN)

table1: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## paper Table 1 (SymbolSoup x2, Diffuse MQAR): lr sweep (seed 0), seeds at each family's best lr, extensions to convergence (GPU; ARGS="--jobs 4 --max-steps-cap 4000"; a baseline row: ARGS="--families sessa transformer mamba2 transformer_prenorm"), then results/table1.md
	$(PYTHON) -m sessa_bench.tables table1 --run $(ARGS)

table2: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## paper Table 2 (SimpleStories LM; needs the data, offline see table2-bible): lr sweep, seeds, extensions -> results/table2.md
	$(PYTHON) -m sessa_bench.tables table2 --run $(ARGS)

ablation: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## Sessa vs Sessa without feedback (reuses Table 2's Sessa runs) -> results/ablation.md
	$(PYTHON) -m sessa_bench.tables ablation --run $(ARGS)

tables: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## all three tables, same protocol (ARGS are passed on, e.g. ARGS="--seeds 0")
	$(PYTHON) -m sessa_bench.tables all --run $(ARGS)

table2-bible: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## Table 2 offline: King James Bible, 300 steps (BIBLE_ARGS) -> results/table2.md
	$(PYTHON) -m sessa_bench.tables table2 --run $(BIBLE_ARGS) $(ARGS)

ablation-bible: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## the ablation on the same Bible runs -> results/ablation.md
	$(PYTHON) -m sessa_bench.tables ablation --run $(BIBLE_ARGS) $(ARGS)

calibrate: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## Diffuse MQAR calibration: task settings x lr grid (small Transformer, GPU) -> results/calibration/diffuse_mqar_lr_grid.md
	$(PYTHON) -m sessa_bench.calibrate --run $(ARGS)

controls: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## the pre-norm control beside Table 1's Diffuse MQAR runs (from run folders) -> results/control_diffuse_mqar.md
	$(PYTHON) -m sessa_bench.report.controls control_diffuse_mqar_16000 table1_diffuse_mqar:transformer:0.0003 \
		table1_diffuse_mqar:sessa:0.0003 table1_diffuse_mqar:mamba2:0.0001 \
		--title "Diffuse MQAR: a pre-norm GPT block beside Table 1's runs" --out results/control_diffuse_mqar.md

memory-tail: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## influence vs lag at init (tiny, small; CPU) and for RUNS with checkpoints -> results/memory_tail.md
	$(PYTHON) -m sessa_bench.memory_tail --runs $(RUNS) $(ARGS)

dashboard: $(if $(filter $(VENV)/bin/python,$(PYTHON)),$(VENV)/.installed) ## the paper tables' dashboard from results/runs as one offline HTML page -> results/dashboard.html
	$(PYTHON) -m sessa_bench.dashboard.page results/runs --out results/dashboard.html
