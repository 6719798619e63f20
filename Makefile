# evalkit: two commands on a fresh machine
#   make demo   set up .venv from the runtime lock, run the default analysis on synthetic data
#   make test   add the development lock (pytest, JupyterLab, pyspark, docs), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.evalkit-installed
DEVSTAMP = $(VENV)/.evalkit-dev-installed
OUT    ?= runs/demo
# `make lock` resolves in its own throw-away environment, with uv (pip-tools' format and
# results, in seconds rather than many minutes: it reads the hashes from the registry
# instead of downloading every file), for the Python that runs it
LOCKVENV ?= $(or $(TMPDIR),/tmp)/evalkit-lock-venv
UV       = uv==0.13.9
COMPILE  = $(LOCKVENV)/bin/uv pip compile --quiet --generate-hashes \
           --python $(LOCKVENV)/bin/python --custom-compile-command "make lock"

.PHONY: demo test lab lock bench docs clean

# runtime: what `evalkit run` needs (requirements.lock), and evalkit itself (editable)
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# development: the runtime lock plus what the tests and the docs add (requirements-dev.lock)
$(DEVSTAMP): $(STAMP) requirements-dev.lock
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock -r requirements-dev.lock
	touch $(DEVSTAMP)

demo: $(STAMP)
	.ci/system-packages
	$(VENV)/bin/evalkit run params/demo.yaml --out $(OUT)
	@echo "Open $(OUT)/brief.html or $(OUT)/03_utilization.html in a browser, or $(OUT)/results.json."

# the suite in two processes (pytest-xdist), each group of tests in one of them (a test
# file, or the part of one its xdist_group marks name), the longest groups first
# (tests/conftest.py); the runs that several groups read are made once and shared through
# the session's temporary folder (tests/shared_runs.py). TEST_WORKERS=0 runs it in this
# process alone.
TEST_WORKERS ?= 2
test: $(DEVSTAMP)
	.ci/system-packages
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder

# JupyterLab on the first workbook, its built-in example prepared beforehand
lab: $(DEVSTAMP)
	$(PY) -c "from evalkit.examples import run_params; print('example ready:', run_params())"
	$(VENV)/bin/jupyter lab workbooks/01_data_quality.ipynb

bench: $(STAMP)
	$(PY) benchmarks/aggregation.py

# docs/params.md and docs/params.schema.json from the params schema, and the API
# reference from the docstrings (mkdocs + mkdocstrings, into site/)
docs: $(DEVSTAMP)
	$(PY) -c "from evalkit.params import write_reference; write_reference('docs/params.md', 'docs/params.schema.json')"
	$(VENV)/bin/mkdocs build --strict --quiet

# re-pin after changing dependencies in pyproject.toml: pins already in the locks are
# kept (add --upgrade-package NAME to COMPILE to move one); the development lock is
# constrained by the runtime lock, so the two agree on every shared package
lock:
	$(PYTHON) -m venv $(LOCKVENV)
	$(LOCKVENV)/bin/python -m pip install --quiet $(UV)
	$(COMPILE) --output-file requirements.lock pyproject.toml
	$(COMPILE) --extra dev --extra spark --constraint requirements.lock \
	  --output-file requirements-dev.lock pyproject.toml

clean:
	rm -rf $(VENV) runs site .pytest_cache
