"""ament_python package pasta_ros (also pip-installable: `pip install -e .`)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "pasta_ros"

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
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="pasta_ros developers",
    maintainer_email="dev@pasta-ros.invalid",
    description="Label-free anomaly and target segmentation for robotic sorting (PASTA, iCAS).",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={"console_scripts": ["pasta = pasta_ros.cli:main",
                                      "pasta_node = pasta_ros.ros.node:main"]},
)
