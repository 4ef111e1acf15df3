# Two promises: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
# The demo installs the runtime only (the daemon never imports torch); tests add the training
# and development extras.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint mutation bench-ingest bench-inference bench-e2e bench-e2e-hog bench-e2e-control bench-chaos weights clean

# The interpreter is checked first: a venv of another Python is refused by pip only after it
# is made, and then kept. A venv that fails half-made (Debian or Ubuntu without the
# python3.11-venv package: python is there, ensurepip and so pip are not) leaves no
# $(BIN)/python, so the next run makes it again instead of taking it as made.
$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { \
		echo "make: corticast needs Python 3.11, and PYTHON=$(PYTHON) is not it (or not" \
			"found): name yours, e.g. make demo PYTHON=/usr/bin/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip \
		|| { rm -f $(BIN)/python; exit 1; }

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,train]'
	touch $(RUNTIME) $(DEV)

DURATION ?= 60
demo: $(RUNTIME)
	$(BIN)/corticast demo --seconds $(DURATION)

# Two worker processes, each given whole files (a module's fixtures are built once): many
# tests wait on a daemon, a rig or a socket, so on 2 cores the suite takes ~0.6x the time of
# one process. Tests marked `alone` assert that the whole loop keeps up in real time (the
# demo delivers a pulse, the chaos soak delivers one through its faults): they run afterwards,
# with the machine to themselves; phase 2 collects only the files that hold them (collecting the
# whole suite again cost ~15 s; tests/test_make_test.py checks that the list names every one).
TEST_WORKERS ?= 2
ALONE_TESTS := tests/service/cli/test_cli.py tests/bench/benchmarks/chaos/test_chaos_soak.py
# The lint first, all of it (`ruff format --check` too: seconds, and what `make lint` refuses
# should not pass `make test`).
test: $(DEV) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not alone"
	$(BIN)/python -m pytest -m alone $(ALONE_TESTS)

lint: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Mutation testing of the safety core (interlocks, bridge, policy; [tool.mutmut] in
# pyproject.toml): about an hour on 2 cores, so not part of `make test`. tests/MUTATION.md
# records the last score and why each surviving mutant survives.
MUTATION := $(VENV)/.installed-mutation
$(MUTATION): pyproject.toml $(DEV)
	$(BIN)/python -m pip install --quiet -e '.[dev,train,mutation]'
	touch $(MUTATION)

mutation: $(MUTATION)
	OMP_NUM_THREADS=1 $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

bench-ingest: $(RUNTIME)
	$(BIN)/python -m bench.benchmarks.ingest --speed 10 --seconds 60

bench-inference: $(DEV)
	$(BIN)/python -m bench.benchmarks.inference_latency --model $(SHIPPED) --step $(SHIPPED_STEP) \
		--checkpoint $(SHIPPED_WEIGHTS_RUN) --runs 2000 --int8
	$(BIN)/python -m bench.benchmarks.streaming_accuracy --model $(SHIPPED) --step $(SHIPPED_STEP) \
		--data synthetic:900@60

bench-e2e: $(RUNTIME)
	$(BIN)/python -m bench.benchmarks.end_to_end_latency --seconds 300

# The same, 60 s quiet then 60 s beside 2 CPU-burning processes, in one table with the ratio;
# as the realtime.conf drop-in and [realtime] run the daemon (deploy/README.md, "Real-time
# scheduling"; needs the permission, else each part says it was refused).
bench-e2e-hog: $(RUNTIME)
	$(BIN)/python -m bench.benchmarks.end_to_end_latency --seconds 60 --hog 2
	$(BIN)/python -m bench.benchmarks.end_to_end_latency --seconds 60 --hog 2 \
		--daemon-policy rr1 --realtime fifo

# The same, 60 s quiet then 60 s while 4 HTTP clients poll /status and /metrics and 4 ZeroMQ
# clients ask the query socket (each kind its own process): what the control plane, in a process
# of its own by default ([api] own_process; --control-plane shared for the loop's), costs the loop.
bench-e2e-control: $(RUNTIME)
	$(BIN)/python -m bench.benchmarks.end_to_end_latency --seconds 60 --control-load 4

# The real daemon, rig and emulator under injected faults; an independent auditor checks every
# pulse the emulator delivered against the interlock rules (bench/benchmarks/chaos/soak.py).
MINUTES ?= 10
bench-chaos: $(RUNTIME)
	$(BIN)/python -m bench.benchmarks.chaos.soak --minutes $(MINUTES)

# Reproduce the shipped default model: train (3,000 steps of batch 32; the shipped one was
# trained on an NVIDIA H200 at about 10 steps/s), export both graphs and the weights that
# `corticast adapt --from default` tunes, evaluate. The data is the generator mixture (every
# background family) plus the original generator, so that no one generator's habits are learnt.
SHIPPED := models/weights/default.onnx
SHIPPED_STEP := models/weights/default.step.onnx
SHIPPED_WEIGHTS_RUN := models/weights/default.run
SHIPPED_RUN := runs/default-mr_layer_lstm-16-residual
SHIPPED_DATA := --data synthetic-mix:100-119@60 --data synthetic:100-103@60
weights: $(DEV)
	$(BIN)/corticast train mr_layer_lstm $(SHIPPED_DATA) --run $(SHIPPED_RUN) \
		--steps 3000 --hidden 16,16 --kernel-size 3 --batch-size 32 --adversarial --residual \
		--seed 0 --checkpoint-every 250 --threads 2
	$(BIN)/corticast export $(SHIPPED_RUN) $(SHIPPED) --step $(SHIPPED_STEP) \
		--weights-copy $(SHIPPED_WEIGHTS_RUN)
	$(BIN)/corticast evaluate $(SHIPPED) $(SHIPPED_DATA) --out $(SHIPPED_RUN)/evaluation

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
