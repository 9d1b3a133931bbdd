"""The plug-in registries are the one place a backbone, segmenter or method is added: the config
schema, the CLI flags, the ROS parameters and `pasta config` are generated from them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from pasta_ros.core.config import (
    BACKBONE_CHOICES,
    METHOD_CHOICES,
    SEGMENTER_CHOICES,
    PastaConfig,
    field_specs,
    plugin_options,
)
from pasta_ros.core.errors import PastaError
from pasta_ros.core.methods import METHODS
from pasta_ros.core.segmenters import SEGMENTERS, build_segmenter


def test_choices_come_from_the_registries():
    from pasta_ros.core.backbones import BACKBONES

    assert SEGMENTER_CHOICES == tuple(SEGMENTERS)
    assert METHOD_CHOICES == tuple(METHODS)
    assert BACKBONE_CHOICES == tuple(BACKBONES)


def test_plugin_options_are_named_for_their_plugin_and_are_config_fields():
    names = {f.name for f in field_specs()}
    for registry in (SEGMENTERS, METHODS):
        for plugin, entry in registry.items():
            for option in entry.options:
                assert option.name.startswith(f"{plugin}_"), option.name
                assert option.name in names
                assert getattr(PastaConfig(), option.name) == option.default


def test_every_config_field_is_a_cli_flag_and_a_ros_parameter():
    from pasta_ros.cli import build_parser
    from pasta_ros.ros.params import declarations

    args = build_parser().parse_args(["calibrate", "--baseline", "b", "--reference", "r",
                                      "--out", "o", "--no-split-clusters",
                                      "--color-weight", "1.5", "--sam3-nms-iou", "0.3"])
    from pasta_ros.cli.args import config_from_args

    cfg, explicit = config_from_args(args)
    assert (cfg.split_clusters, cfg.color_weight, cfg.sam3_nms_iou) == (False, 1.5, 0.3)
    assert explicit == {"split_clusters", "color_weight", "sam3_nms_iou"}
    declared = {d.name for d in declarations()}
    assert {f.name for f in field_specs()} <= declared


def test_an_unknown_segmenter_names_the_registry():
    with pytest.raises(PastaError, match="available: clusters, sam3"):
        build_segmenter("nope", None, PastaConfig())  # type: ignore[arg-type]


def test_a_new_segmenter_is_one_registry_entry():
    """A segmenter added to SEGMENTERS alone (as a newcomer would, before anything else reads
    the registry) is a config choice with its option, a CLI flag, a ROS parameter, a line of
    `pasta config`, and is built by build_segmenter."""
    script = textwrap.dedent('''
        import numpy as np
        from pasta_ros.core.options import Option
        from pasta_ros.core.segmenters.registry import SEGMENTERS, SegmenterEntry

        class Toy:
            def __init__(self, radius):
                self.radius = radius
            def __call__(self, image):
                return np.zeros(image.shape[:2], np.int32)

        SEGMENTERS["toy"] = SegmenterEntry(lambda model, cfg: Toy(cfg.toy_radius), "a toy",
                                           (Option("toy_radius", 3, "radius", lo=1, hi=9),))
        from pasta_ros.cli import build_parser
        from pasta_ros.cli.args import config_from_args
        from pasta_ros.cli.config import params_yaml
        from pasta_ros.core.config import ConfigError, PastaConfig
        from pasta_ros.core.segmenters import build_segmenter
        from pasta_ros.ros.params import declarations

        args = build_parser().parse_args(["segment", "--model", "m", "--images", "i", "--out",
                                          "o", "--segmenter", "toy", "--toy-radius", "5",
                                          "--no-instance-split"])
        cfg, _ = config_from_args(args)
        assert build_segmenter(cfg.segmenter, None, cfg).radius == 5
        assert "toy_radius" in {d.name for d in declarations()}
        assert "toy_radius: 3" in params_yaml()
        try:
            PastaConfig(toy_radius=10).validate()
        except ConfigError as exc:
            assert "toy_radius" in str(exc)
        else:
            raise AssertionError("out of range accepted")
        print("ok")
    ''')
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_pasta_config_round_trips_to_the_defaults(tmp_path, run_cli):
    from pasta_ros.core.config import load_yaml_config

    code, _, err = run_cli(["config", "--out", tmp_path / "all.yaml"])
    assert code == 0, err
    assert PastaConfig.from_dict(load_yaml_config(tmp_path / "all.yaml")) == PastaConfig()
    names = {o.name for o in plugin_options()}
    assert all(f"{n}:" in (tmp_path / "all.yaml").read_text() for n in names)
