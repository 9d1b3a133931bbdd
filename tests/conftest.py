"""Session fixtures: one tiny synthetic steel set, one model calibrated on it, a CLI runner."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pasta_ros.data.layout import DatasetLayout

# Two shared CPU cores: one OpenMP thread per process (torch, sklearn; inherited by CLI
# subprocesses) stops threads spin-waiting against other jobs; tests/test_cli.py took 27 s
# instead of 56 s on a loaded machine. Set before any test module imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_SIZE = (224, 128)  # W, H: 28 x 16 patches at stride 8
TINY_K = 8
CliResult = tuple[int, str, str]


ROS_MODULES = ("rclpy", "pasta_msgs.msg", "pasta_msgs.srv")


def require_ros(*modules: str):
    """Import the ROS 2 modules a test module needs (default :data:`ROS_MODULES`); returns rclpy.

    Call it at the top of a ROS test module, before its ROS imports. When one does not import,
    the module is skipped, except with ``PASTA_REQUIRE_ROS=1`` (``.ci/run`` sets it): then
    collecting the module fails with what is broken and the fix, so a broken ROS 2 install or
    ``pasta_msgs`` build cannot turn CI green by skipping every ROS test.
    """
    for name in modules or ROS_MODULES:
        try:
            importlib.import_module(name)
            continue
        except Exception as exc:  # ImportError, or e.g. an OSError from a missing library
            what = f"{name} does not import ({type(exc).__name__}: {exc})"
        fix = ("run `make setup`: it installs the ROS 2 Jazzy wheels (requirements-ros.txt) and "
               "builds pasta_msgs (scripts/build_msgs.sh); `rm .venv/.setup-done` first if it "
               "says it is up to date")
        if os.environ.get("PASTA_REQUIRE_ROS") == "1":
            pytest.fail(f"PASTA_REQUIRE_ROS=1 and {what}; {fix}", pytrace=False)
        pytest.skip(f"{what}; {fix}", allow_module_level=True)
    return importlib.import_module("rclpy")


def cli_main(args: Sequence[str]) -> CliResult:
    """``pasta_ros.cli.main(args)`` in this process -> (exit code, stdout, stderr).

    Output is captured with redirect_stdout/stderr (not capsys) so session fixtures can use it
    too. An uncaught exception propagates, which is how a would-be traceback fails a test.
    """
    from pasta_ros.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def run_cli() -> Callable[[Sequence[str]], CliResult]:
    """``run_cli(args) -> (code, stdout, stderr)``: the CLI in this process."""
    return cli_main


@pytest.fixture(scope="session")
def tiny_steel(tmp_path_factory: pytest.TempPathFactory) -> DatasetLayout:
    """Synthetic steel set, 224x128: 8 baseline, 4 reference, 2 empty, 4 test images."""
    from pasta_ros.data.synth import generate

    return generate("steel", tmp_path_factory.mktemp("tiny_steel"), seed=0,
                    width=TINY_SIZE[0], height=TINY_SIZE[1], n_baseline=8, n_reference=4,
                    n_empty=2, n_test=4)


@pytest.fixture(scope="session")
def tiny_model(tiny_steel: DatasetLayout, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory calibrated on ``tiny_steel`` through the CLI (K=8, 224x128)."""
    out = tmp_path_factory.mktemp("tiny_model") / "model"
    code, stdout, stderr = cli_main([
        "-q", "calibrate", "--baseline", tiny_steel.baseline,
        "--reference", tiny_steel.reference, "--empty", tiny_steel.empty, "--out", out,
        "--input-size", f"{TINY_SIZE[0]}x{TINY_SIZE[1]}", "--clusters", TINY_K,
        "--device", "cpu"])
    assert code == 0, stderr
    assert json.loads(stdout)["model"] == str(out)
    return out


@pytest.fixture(scope="module")
def ros(request: pytest.FixtureRequest):
    """This module's ROS side: a RosSession (leased ROS_DOMAIN_ID, loopback-only discovery)
    and a client node in it, closed when the module's tests end."""
    from pasta_ros.testing.ros_session import RosSession

    name = request.module.__name__.rpartition(".")[2].removeprefix("test_")
    session = RosSession(f"pasta_test_{name}_client")
    yield session
    session.close()
