# credex: the two commands a newcomer needs are `make test` and `make demo`.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint typecheck unit proto clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "credex needs Python 3.11+ as '$(PYTHON)' (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy catalog keys adapters node bench tests

unit: $(STAMP)
	@# pyproject.toml's addopts run the tests on one pytest-xdist worker per CPU (`-n 0`: serially).
	@# pytest exits 5 when it collected nothing: a suite that ran no test is a failure, not a pass.
	@$(VENV)/bin/pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

test: lint typecheck unit

demo: $(STAMP)
	$(PY) -m node.demo

bench: $(STAMP)
	$(PY) bench/run_all.py

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache
