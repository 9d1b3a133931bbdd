# pasta_ros: `make demo` runs the main job, `make test` runs the tests. Both set up first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	$(PY) -m pasta_ros.demo --out demo_out

test: setup
	$(PY) -m pytest -q -m "not gpu"

lint: setup
	$(PY) -m pip install -q ruff==0.17.5
	$(VENV)/bin/ruff check pasta_ros tests

clean:
	rm -rf $(VENV) demo_out build *.egg-info
