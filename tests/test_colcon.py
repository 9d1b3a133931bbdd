"""The colcon workspace build (scripts/colcon_build.sh, ``make colcon``) and pasta_node started
from its install space.

Nothing is sourced: the environment ``. install/setup.sh`` gives is built here from the same
.dsv files its shell code reads (each package's package.dsv and hooks), over the venv as the
only underlay (as /opt/ros/jazzy is on a robot) and without this checkout's PYTHONPATH. The node
is the installed console script, started with the --ros-args that the installed launch file
passes, in a leased domain with loopback discovery; every wait is bounded and the node is
always ended.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_ros

require_ros("rclpy", "pasta_msgs.msg", "pasta_msgs.srv", "colcon_core")

from sensor_msgs.msg import Image  # noqa: E402

from pasta_ros.data.synth import render_scene  # noqa: E402
from pasta_ros.ros.process import NodeProcess  # noqa: E402
from pasta_ros.testing.launch_args import node_command  # noqa: E402
from pasta_ros.testing.ros_session import (  # noqa: E402
    Outputs,
    RosSession,
    get_parameters,
    handshake,
    image_msg,
)

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install"
VENV = Path(sys.prefix)
SHARE = INSTALL / "pasta_ros" / "share" / "pasta_ros"
# where ros2 run and launch_ros look for a package's executables: <prefix>/lib/<package>/
NODE_EXE = INSTALL / "pasta_ros" / "lib" / "pasta_ros" / "pasta_node"
PROBE = """
import json
import pasta_msgs, pasta_ros
from ament_index_python.packages import get_package_share_directory
from pasta_msgs.msg import InstanceArray
from pasta_msgs.srv import Recalibrate, SetPrompts
print(json.dumps({"pasta_ros": pasta_ros.__file__, "pasta_msgs": pasta_msgs.__file__,
                  "share": get_package_share_directory("pasta_ros"),
                  "msgs_share": get_package_share_directory("pasta_msgs")}))
"""


@pytest.fixture(scope="module")
def install() -> Path:
    """install/, built by scripts/colcon_build.sh (a no-op when ``make colcon`` already built
    it from these sources)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "colcon_build.sh"), str(VENV)],
                          capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return INSTALL


def workspace_packages(install: Path) -> list[str]:
    """The installed packages, each after the workspace packages it depends on (colcon's
    order, from ``<pkg>/share/colcon-core/packages/<pkg>``)."""
    deps = {f.name: set(filter(None, f.read_text().strip().split(os.pathsep)))
            for f in install.glob("*/share/colcon-core/packages/*")}
    order: list[str] = []
    while deps:
        ready = sorted(n for n, d in deps.items() if not d & deps.keys())
        assert ready, f"dependency cycle among {sorted(deps)}"
        order += ready
        for n in ready:
            del deps[n]
    return order


def apply_dsv(path: Path, prefix: Path, env: dict[str, str]) -> None:
    """Apply one colcon .dsv file to ``env`` as install/setup.sh does: path lists extended
    without duplicates, ``source`` lines followed to their .dsv twins. A hook that exists only
    as a shell script raises: it would need sourcing, which this test does not do."""
    sources: dict[str, None] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, _, rest = line.partition(";")
        if kind == "source":
            sources.setdefault(os.path.splitext(rest)[0])
        elif kind in ("prepend-non-duplicate", "prepend-non-duplicate-if-exists",
                      "append-non-duplicate"):
            name, *values = rest.split(";")
            for v in values:
                value = str(prefix / v) if v else str(prefix)
                parts = [p for p in env.get(name, "").split(os.pathsep) if p]
                if value in parts or (kind.endswith("-if-exists") and not Path(value).exists()):
                    continue
                env[name] = os.pathsep.join([*parts, value] if kind.startswith("append")
                                            else [value, *parts])
        else:
            raise ValueError(f"{path}: hook type {kind!r} is not handled here")
    for base in sources:
        twin = prefix / f"{base}.dsv"
        if not twin.is_file():
            raise ValueError(f"{path}: {base} has no .dsv twin (shell-only hook)")
        apply_dsv(twin, prefix, env)


def install_env(install: Path, base: dict[str, str]) -> dict[str, str]:
    """``base`` as after ``. install/setup.sh`` with the venv as the underlay."""
    env = {k: v for k, v in base.items()
           if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH",
                        "COLCON_PREFIX_PATH")}
    env["AMENT_PREFIX_PATH"] = str(VENV)
    for pkg in workspace_packages(install):
        apply_dsv(install / pkg / "share" / pkg / "package.dsv", install / pkg, env)
    return env


def test_colcon_finds_each_package_once():
    out = subprocess.run([str(VENV / "bin" / "colcon"), "--log-base", os.devnull, "list",
                          "--base-paths", str(ROOT), str(ROOT / "pasta_msgs")],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = sorted((name, kind) for name, _, kind in (line.split("\t") for line in
                                                      out.splitlines()))
    assert rows == [("pasta_msgs", "(ros.ament_cmake)"), ("pasta_ros", "(ros.ament_python)")], out


def test_the_install_space_holds_both_packages_and_the_share_folder(install, tmp_path):
    env = install_env(install, dict(os.environ))
    assert env["PYTHONPATH"].split(os.pathsep)[:2] == [
        str(install / p / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" /
            "site-packages")
        for p in ("pasta_ros", "pasta_msgs")]
    assert str(install / "pasta_msgs" / "lib") in env["LD_LIBRARY_PATH"].split(os.pathsep)
    # cwd away from the checkout: `python -c` puts the cwd first on sys.path
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[-1])
    assert Path(found["pasta_ros"]).is_relative_to(install / "pasta_ros"), found
    assert Path(found["pasta_msgs"]).is_relative_to(install / "pasta_msgs"), found
    assert Path(found["share"]) == SHARE
    assert Path(found["msgs_share"]) == install / "pasta_msgs" / "share" / "pasta_msgs"
    for rel in ("launch/sorter.launch.py", "config/sorter.yaml", "config/fastdds_shm.xml",
                "models/icas/icas_lite0.pt", "package.xml"):
        assert (SHARE / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    for exe in ("pasta_node", "pasta"):
        script = NODE_EXE.parent / exe
        assert os.access(script, os.X_OK), script
        shebang = script.read_text().splitlines()[0]
        assert Path(shebang.removeprefix("#!")).parent == Path(sys.executable).parent, shebang


def same_interfaces_as_the_checkout() -> None:
    """Fail unless the pasta_msgs this process imports was built from this checkout's .msg/.srv
    files, as install/'s was: otherwise the node's messages do not deserialize here."""
    import pasta_msgs

    share = Path(pasta_msgs.__file__).resolve().parents[4] / "share" / "pasta_msgs"
    sources = sorted([*(ROOT / "pasta_msgs").glob("msg/*.msg"),
                      *(ROOT / "pasta_msgs").glob("srv/*.srv")])
    built = {f: share / f.parent.name / f.name for f in sources}
    stale = [str(f.relative_to(ROOT)) for f, b in built.items()
             if not b.is_file() or b.read_bytes() != f.read_bytes()]
    if stale:
        pytest.fail(f"the pasta_msgs of {share.parents[1]} was not built from this checkout's "
                    f"{stale}: run make setup (scripts/build_msgs.sh)", pytrace=False)


def test_pasta_node_starts_from_the_install_space(install, tiny_model, tmp_path):
    same_interfaces_as_the_checkout()
    ns = "cell_colcon"
    executable, ros_args = node_command(SHARE / "launch" / "sorter.launch.py",
                                        {"model_dir": str(tiny_model), "namespace": ns},
                                        share=SHARE, params_dir=tmp_path)
    assert NODE_EXE.name == executable
    assert ros_args[ros_args.index("--params-file") + 1] == str(SHARE / "config" / "sorter.yaml")
    session = RosSession("pasta_test_colcon_client")
    node = NodeProcess(ros_args, install_env(install, session.env), tmp_path / "node.log")
    node.cmd = [str(NODE_EXE), "--ros-args", *ros_args]  # the installed script, not python -m
    try:
        node.start()
        node.wait_ready(session.client, f"/{ns}/pasta/recalibrate", timeout=120.0)
        name = f"/{ns}/pasta_node"
        assert get_parameters(session.client, name, ["model_dir", "image_topic"]) == {
            "model_dir": str(tiny_model), "image_topic": "image"}
        out = Outputs(session.client, f"/{ns}")
        out.wait_matched(30.0)
        camera = session.client.node.create_publisher(Image, "/camera/image_raw", 10)
        rgb, _, _ = render_scene("steel", np.random.default_rng(0), 224, 128, 4, 1)
        handshake(camera, out, lambda stamp: image_msg(rgb, "rgb8", stamp))
        camera.publish(image_msg(rgb, "rgb8", 6_000_000_321))
        labels, inst = out.wait_frame((6, 321), 30.0)
        assert (labels.width, labels.height) == (224, 128) and inst.model_id
        diag = out.wait_diagnostics(lambda v: v["frames_processed"] >= 2, 30.0)
        assert diag["model_id"] == inst.model_id
        # the message libraries the node loaded are the workspace's, not the venv's
        maps = Path(f"/proc/{node.pid}/maps").read_text().splitlines()
        loaded = {line.split()[-1] for line in maps if "pasta_msgs" in line}
        assert loaded, "pasta_node mapped no pasta_msgs library"
        assert all(Path(p).is_relative_to(install / "pasta_msgs") for p in loaded), loaded
        assert node.alive()
    finally:
        node.stop()
        session.close()
