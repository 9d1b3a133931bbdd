"""Model directories: save/load round trip, every corruption named, runtime mismatches."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import ModelError
from pasta_ros.core.model_io import (
    ARRAYS,
    FORMAT,
    MANIFEST,
    CalibratedModel,
    load_model,
    save_model,
)
from pasta_ros.core.segmenters.color_model import N_BINS
from pasta_ros.pipeline import PastaPipeline

K, C = 5, 7
LITE0_CHANNELS = 152  # efficientnet_lite0 default taps s8 (40) + s16 (112)


def make_model(k: int = K, c: int = C, *, backbone: str = "efficientnet_lite0",
               weights_hash: str = "", input_size: tuple[int, int] = (96, 64),
               seed: int = 3, color_weight: float = 0.0) -> CalibratedModel:
    """A hand-built model: no backbone or calibration needed."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, c)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    p_base = rng.dirichlet(np.ones(k))
    p_ref = p_base.copy()
    p_ref[1] = p_ref[3] = 0.0  # clusters 1 and 3 never occur in the reference: anomalies
    p_ref /= p_ref.sum()
    anomaly = np.zeros(k, bool)
    anomaly[[1, 3]] = True
    background = np.zeros(k, bool)
    background[0] = True
    return CalibratedModel(
        backbone=backbone, weights_hash=weights_hash, input_size=input_size, stride=8,
        centers=centers, p_baseline=p_base, p_reference=p_ref, anomaly=anomaly,
        background=background,
        color_log_odds=rng.uniform(-4, 4, N_BINS).astype(np.float32),
        ratio_threshold=0.05, vote_threshold=0.1, seed=seed, background_source="empty",
        p_empty=rng.dirichlet(np.ones(k)), stats={"baseline_images": 3},
        color_weight=color_weight)


@pytest.fixture
def saved(tmp_path: Path) -> tuple[CalibratedModel, Path]:
    model = make_model(color_weight=2.0)
    return model, save_model(model, tmp_path / "model")


def read_manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text())


def write_manifest(d: Path, manifest: dict) -> None:
    (d / MANIFEST).write_text(json.dumps(manifest))


def rewrite_arrays(d: Path, change: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Edit arrays.npz and update its checksum, so only later checks can catch the edit."""
    with np.load(d / ARRAYS) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (d / ARRAYS).write_bytes(buf.getvalue())
    manifest = read_manifest(d)
    manifest["arrays_sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    write_manifest(d, manifest)


# --------------------------------------------------------------------------- round trip


def test_round_trip_keeps_every_array_and_field(saved) -> None:
    model, d = saved
    assert sorted(p.name for p in d.iterdir()) == [ARRAYS, MANIFEST]  # no temporaries left
    loaded = load_model(d)
    for name in ("centers", "p_baseline", "p_reference", "anomaly", "background",
                 "color_log_odds", "p_empty"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name), err_msg=name)
    assert loaded.centers.dtype == np.float32 and loaded.anomaly.dtype == bool
    for name in ("backbone", "weights_hash", "stride", "ratio_threshold", "vote_threshold",
                 "seed", "background_source", "color_weight", "stats", "model_id", "created"):
        assert getattr(loaded, name) == getattr(model, name), name
    assert tuple(loaded.input_size) == (96, 64)
    assert (loaded.k, loaded.channels) == (K, C)


def test_manifest_fields(saved) -> None:
    model, d = saved
    m = read_manifest(d)
    assert m["format"] == FORMAT
    assert m["backbone"] == "efficientnet_lite0" and m["weights_hash"] == ""
    assert m["input_size"] == [96, 64]
    assert (m["clusters"], m["channels"]) == (K, C)
    assert (m["ratio_threshold"], m["vote_threshold"], m["color_weight"]) == (0.05, 0.1, 2.0)
    np.testing.assert_allclose(m["p_baseline"], model.p_baseline, atol=1e-8)
    np.testing.assert_allclose(m["p_reference"], model.p_reference, atol=1e-8)
    np.testing.assert_allclose(m["p_empty"], model.p_empty, atol=1e-8)
    assert m["anomaly_clusters"] == [1, 3] and m["background_clusters"] == [0]
    assert {"pasta_ros", "numpy", "torch", "python"} <= set(m["versions"])
    assert m["model_id"] == model.model_id
    assert m["model_id"].startswith("efficientnet_lite0-k5-s3-")
    assert m["arrays_sha256"] == hashlib.sha256((d / ARRAYS).read_bytes()).hexdigest()


def test_model_id_is_stamped_once(tmp_path: Path) -> None:
    model = make_model()
    assert model.model_id == ""
    save_model(model, tmp_path / "a")
    first = model.model_id
    save_model(model, tmp_path / "b")  # saving again keeps the id
    assert model.model_id == first == load_model(tmp_path / "b").model_id


# --------------------------------------------------------------------------- corruption


def _drop(name: str) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        manifest = read_manifest(d)
        del manifest[name]
        write_manifest(d, manifest)
    return corrupt


def _set(name: str, value) -> Callable[[Path], None]:
    def corrupt(d: Path) -> None:
        manifest = read_manifest(d)
        manifest[name] = value
        write_manifest(d, manifest)
    return corrupt


def _reshape(name: str, shape: tuple[int, ...]) -> Callable[[Path], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = np.zeros(shape, arrays[name].dtype)
    return lambda d: rewrite_arrays(d, change)


def _flip_byte(d: Path) -> None:
    blob = bytearray((d / ARRAYS).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (d / ARRAYS).write_bytes(bytes(blob))


def _del_array(name: str) -> Callable[[Path], None]:
    return lambda d: rewrite_arrays(d, lambda arrays: arrays.pop(name))


CORRUPTIONS = {
    "manifest missing": (lambda d: (d / MANIFEST).unlink(), "is not a PASTA model"),
    "invalid json": (lambda d: (d / MANIFEST).write_text('{"format": '), "not valid JSON"),
    "wrong format": (_set("format", "pasta-model/0"), "format 'pasta-model/0', expected"),
    "no format": (_drop("format"), "format None"),
    "arrays missing": (lambda d: (d / ARRAYS).unlink(), "arrays.npz is missing"),
    "arrays modified": (_flip_byte, "does not match the checksum"),
    "arrays truncated": (lambda d: (d / ARRAYS).write_bytes((d / ARRAYS).read_bytes()[:100]),
                         "does not match the checksum"),
    "checksum missing": (_drop("arrays_sha256"), "does not match the checksum"),
    "no backbone key": (_drop("backbone"), "lacks 'backbone'"),
    "no clusters key": (_drop("clusters"), "lacks 'clusters'"),
    "no input_size key": (_drop("input_size"), "lacks 'input_size'"),
    "no centers array": (_del_array("centers"), "lacks 'centers'"),
    "centers wrong shape": (_reshape("centers", (K, C + 1)),
                            r"array centers has shape \(5, 8\), expected \(5, 7\)"),
    "p_baseline wrong shape": (_reshape("p_baseline", (K + 1,)),
                               r"array p_baseline has shape \(6,\), expected \(5,\)"),
    "colour table wrong shape": (_reshape("color_log_odds", (N_BINS // 2,)),
                                 "array color_log_odds has shape"),
    "anomaly list disagrees": (_set("anomaly_clusters", [1]), "anomaly clusters .* disagree"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_model_is_a_model_error(saved, case: str) -> None:
    _, d = saved
    corrupt, message = CORRUPTIONS[case]
    corrupt(d)
    with pytest.raises(ModelError, match=message):
        load_model(d)


# A manifest that is valid JSON of the wrong kind must still be a ModelError (one CLI error
# line), never an AttributeError/ValueError/TypeError traceback.
MALFORMED = {
    "manifest is a list": lambda d: (d / MANIFEST).write_text("[]"),
    "clusters not a number": _set("clusters", "eight"),
    "input_size null": _set("input_size", None),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_manifest_is_a_model_error(saved, case: str) -> None:
    _, d = saved
    MALFORMED[case](d)
    with pytest.raises(ModelError):
        load_model(d)


def test_missing_directory_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a PASTA model.*pasta calibrate --out"):
        load_model(tmp_path / "nowhere")


# --------------------------------------------------------------------------- runtime checks


def test_explicit_backbone_must_match(tmp_path: Path) -> None:
    d = save_model(make_model(backbone="dinov2_vits14"), tmp_path / "m")
    with pytest.raises(ModelError, match="backbone 'dinov2_vits14' but 'efficientnet_lite0'"):
        PastaPipeline.load(d, PastaConfig(), explicit={"backbone"})


def test_explicit_input_size_must_match(tmp_path: Path) -> None:
    d = save_model(make_model(), tmp_path / "m")
    cfg = PastaConfig(input_width=128, input_height=64)
    with pytest.raises(ModelError, match="input size 96x64 but 128x64"):
        PastaPipeline.load(d, cfg, explicit={"input_width", "input_height"})


def test_channel_mismatch(tmp_path: Path) -> None:
    d = save_model(make_model(c=7), tmp_path / "m")
    with pytest.raises(ModelError, match="7-dim centres .* 152 channels"):
        PastaPipeline.load(d, PastaConfig(device="cpu"))


def test_weights_hash_mismatch(tmp_path: Path) -> None:
    d = save_model(make_model(c=LITE0_CHANNELS, weights_hash="0123456789abcdef"), tmp_path / "m")
    with pytest.raises(ModelError, match="weights 0123456789abcdef"):
        PastaPipeline.load(d, PastaConfig(device="cpu"))


def test_implicit_settings_come_from_the_model(tmp_path: Path) -> None:
    """Settings the user did not give explicitly never contradict the model: it wins."""
    d = save_model(make_model(c=LITE0_CHANNELS), tmp_path / "m")
    cfg = PastaConfig(input_width=640, input_height=480, vote_threshold=0.7, device="cpu")
    pipe = PastaPipeline.load(d, cfg, explicit=set())
    assert pipe.extractor.max_size == (96, 64) and pipe.vote_threshold == 0.1
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    r = pipe.process(image)
    assert r.labels.shape == (48, 80) and r.labels.dtype == np.uint8
    assert set(np.unique(r.labels)) <= {0, 1, 2}
    # 80x48 fitted into 96x64 keeps the aspect: 96x57.6, rounded to stride 8 -> 96x56
    assert r.cluster_map.shape == (56 // 8, 96 // 8)
