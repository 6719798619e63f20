# evalkit: two commands on a fresh machine
#   make demo   set up .venv (pinned), run the default analysis on synthetic data
#   make test   set up .venv (pinned), run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.evalkit-installed
OUT    ?= runs/demo

.PHONY: demo test lab lock bench docs clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	.ci/system-packages
	$(VENV)/bin/evalkit run params/demo.yaml --out $(OUT)
	@echo "Open $(OUT)/brief.html or $(OUT)/03_utilization.html in a browser, or $(OUT)/results.json."

test: $(STAMP)
	.ci/system-packages
	$(PY) -m pytest -q -p no:cacheprovider

lab: $(STAMP)
	$(VENV)/bin/jupyter lab workbooks/

bench: $(STAMP)
	$(PY) benchmarks/aggregation.py

# regenerate docs/params.md after changing the params schema
docs: $(STAMP)
	$(PY) -c "from evalkit.params import write_reference; write_reference('docs/params.md')"

# re-pin after changing dependencies in pyproject.toml
lock: $(STAMP)
	$(PY) -m pip freeze --exclude-editable | grep -v '^evalkit' > requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache
