# deepcluster: developer and demo targets. `make demo` and `make test` are what README promises.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO   := demo-out
TORCH  := torch==2.13.0
COLS   := --id-column image_id --label-column label

.PHONY: install demo test test-all test-gpu lint format bench results completion clean

install: $(VENV)/.installed

# torch is pinned and installed first: an unpinned torch in a fresh resolution pulls the
# multi-gigabyte CUDA build; pyproject.toml keeps a range (torch>=2.2) for users elsewhere.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

demo: install
	@mkdir -p $(DEMO)
	$(BIN)/python cli/digits_csv.py $(DEMO)/digits.csv
	$(BIN)/deepcluster pretrain $(DEMO)/digits.csv $(COLS) --scale minmax \
		--arch 256,128 --epochs 100 --batch-size 64 -o $(DEMO)/ae.pt
	$(BIN)/deepcluster train $(DEMO)/digits.csv $(COLS) -m aekm -k 10 \
		--pretrained $(DEMO)/ae.pt -o $(DEMO)/model.pt
	$(BIN)/deepcluster assign $(DEMO)/model.pt $(DEMO)/digits.csv $(COLS) \
		-o $(DEMO)/labels.csv
	$(BIN)/deepcluster evaluate $(DEMO)/labels.csv --truth $(DEMO)/digits.csv \
		--label-column label --id-column image_id

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m ""

# the CUDA path (tests/test_gpu.py) on a machine with a GPU; skipped where there is none
test-gpu: install
	DEEPCLUSTER_TEST_GPU=1 $(BIN)/python -m pytest -q -m gpu

lint: install
	$(BIN)/ruff check deepcluster_cli tests cli
	$(BIN)/ruff format --check deepcluster_cli tests cli

format: install
	$(BIN)/ruff format deepcluster_cli tests cli
	$(BIN)/ruff check --fix deepcluster_cli tests cli

# Speed and memory figures -> docs/benchmarks.md (tests/bench/run.py, about 15 minutes on
# 2 cores); not part of `make test`. BENCH_THREADS=N (default: all cores); BENCH_QUICK=1:
# small sizes, to debug the scripts. ClustPy, the peer it compares with, is optional: its
# install is tried here (torch pinned on the same line, or pip pulls the CUDA build); without
# it the page shows ClustPy's reference figures, marked as not measured in the run.
bench: install
	-$(BIN)/python -m pip install -q --disable-pip-version-check "torchvision==0.28.0" -e '.[bench]' $(TORCH)
	$(BIN)/python tests/bench/run.py $(if $(BENCH_THREADS),--threads $(BENCH_THREADS)) \
		$(if $(filter-out 0,$(BENCH_QUICK)),--quick)

# The results table -> docs/results/table.md (tests/results/run.py): every method over seeds
# on the real data sets (~/.cache/deepcluster-data, `python ../shared/data/fetch.py`), beside
# the papers and ClustPy. Finished runs are stored in docs/results/runs.jsonl (committed) and
# resumed; checkpoints and labels go to ~/.cache/deepcluster-results.
# RESULTS_SETS=digits,mnist10k,fmnist,fortunes,mnist (default digits: about 2 hours on 2 cores;
# fortunes: tests/results/text_data.py, mnist, the whole 70k: tests/results/mnist_data.py),
# RESULTS_SEEDS=0,1,2, RESULTS_METHODS=..., RESULTS_THREADS=N.
RESULTS_SETS ?= digits
RESULTS_SEEDS ?= 0,1,2
results: install
	-$(BIN)/python -m pip install -q --disable-pip-version-check "torchvision==0.28.0" -e '.[bench]' $(TORCH)
	$(BIN)/python tests/results/run.py --sets $(RESULTS_SETS) --seeds $(RESULTS_SEEDS) --clustpy \
		$(if $(RESULTS_METHODS),--methods $(RESULTS_METHODS)) \
		$(if $(RESULTS_THREADS),--threads $(RESULTS_THREADS))

# the completion scripts in cli/completion (for shells the detection misses, system installs)
completion: install
	$(BIN)/python cli/completion/make_scripts.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
