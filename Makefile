# The two commands of the README: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: install test serve models bench clean container-check

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

# Build the real Dockerfile and prove `docker compose up` with podman, offline (docs/container.md).
container-check:
	scripts/container-check

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
