"""ament_python package pasta_ros (also pip-installable: `pip install -e .`)."""

import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "pasta_ros"
TEST_ONLY = {"pytest", "pytest-timeout"}


def requirements(path: Path = Path(__file__).resolve().parent / "requirements.txt"):
    """requirements.txt's pins -> (runtime, test-only): comments and blank lines skipped."""
    runtime, test = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        req = line.split("#", 1)[0].strip()
        if req:
            name = re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()
            (test if name in TEST_ONLY else runtime).append(req)
    return runtime, test


RUNTIME, TEST = requirements()

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["pasta_ros", "pasta_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/models/icas", glob("models/icas/*.pt") + glob("models/icas/*.md")),
    ],
    install_requires=RUNTIME,
    extras_require={"test": TEST},
    zip_safe=True,
    maintainer="pasta_ros developers",
    maintainer_email="dev@pasta-ros.invalid",
    description="Label-free anomaly and target segmentation for robotic sorting (PASTA, iCAS).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": ["pasta = pasta_ros.cli:main",
                                      "pasta_node = pasta_ros.ros.node:main",
                                      "pasta_lifecycle_node = pasta_ros.ros.lifecycle_node:main"]},
)
