# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: install test serve models bench bench-grpc soak container-check clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata changed (idempotent and fast on a second run).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# -- serving ------------------------------------------------------------------------------------
REPO     ?= model_repository
CKPT_DIR ?= build/default
HOST     ?= 127.0.0.1
PORT     ?= 8000
MONOSERVE := $(VENV)/bin/monoserve
# glibc malloc tuned for large request bodies (2-5x faster and stable with uvicorn; docs/service.md).
SERVE_ENV := MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=268435456

# $(call ensure_model,NAME,DATA,TRAIN-ARGS): train + export NAME only when REPO has no version of it.
define ensure_model
	@if ls -d $(REPO)/$(1)/[0-9]*/manifest.json >/dev/null 2>&1; then \
		echo "$(REPO)/$(1) already has a version: not retraining (delete it to rebuild)"; \
	else \
		set -e; \
		$(MONOSERVE) train $(1) --data $(2) $(3) --out $(CKPT_DIR)/$(1).ckpt; \
		$(MONOSERVE) export $(CKPT_DIR)/$(1).ckpt --repo $(REPO) --name $(1); \
	fi
endef

# The default models (Nile smoother, spam7 classifier), trained and exported only if missing.
# The classifier is the best monotone configuration measured (docs/training.md): tanh, log1p
# features, Platt calibration on the validation split, threshold by F1 on the validation split.
CLASSIFIER_ARGS ?= --label spam --activation tanh --transform log1p --calibrate platt --threshold-criterion f1
models: $(STAMP)
	$(call ensure_model,smoother,data/nile.csv,--column value)
	$(call ensure_model,classifier,data/spam7.csv,$(CLASSIFIER_ARGS))

serve: models
	exec env $(SERVE_ENV) $(MONOSERVE) serve --repo $(REPO) --host $(HOST) --port $(PORT)

# Build the real Dockerfile and prove `docker compose up` with podman, offline (docs/container.md).
container-check:
	scripts/container-check

# Benchmark (bench/run.py): `make bench` full, `make bench QUICK=1` (about 10 min with the six peers,
# which bench/peers/setup.py installs into bench/work/peers/ the first time; BENCH_ARGS=--peers=none skips them),
# HTTP and then OIP gRPC cells in the same run (BENCH_ARGS=--grpc=none skips gRPC).
bench: $(STAMP)
	$(PY) bench/run.py $(if $(QUICK),--quick) $(BENCH_ARGS)

# OIP gRPC alone (a subset of `make bench`; bench/grpc_side.py, about 4 min): the service, MLServer, KServe, PyTriton.
bench-grpc: $(STAMP)
	$(PY) bench/grpc_side.py $(GRPC_BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# Soak + hostile clients against `monoserve serve` with default settings (bench/soak.py, about 3 min):
# counts by status, p50/p99, peak RSS; results in bench/results/soak.json and docs/performance.md.
soak: $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)
