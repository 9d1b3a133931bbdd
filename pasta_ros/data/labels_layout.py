"""Labels-only few-shot sets (no masks) in the dataset layout, from an image list with labels.

Built for the ELPV electroluminescence solar cells (``scripts/elpv_layout.py``), whose
``labels.csv`` rows are ``<path> <defect probability> <type>`` separated by spaces. The
protocol: normal = probability 0, anomalous = probability 1 (the uncertain 1/3 and 2/3 are
left out); the normals are split 75/25 by a fixed seed: 75% are the shot pool (``reference/``),
25% go to the test set with every anomalous image. The test set is then split in a *dev* half
(to tune on) and a *held-out* half (to report), stratified by label, by the same seed, before
anything is measured. Each half is a dataset root::

    OUT/dev/reference/*.png          the shot pool (the same 75% normals in both halves)
    OUT/dev/baseline/*.png           a copy of reference/ (the layout requires the folder)
    OUT/dev/test/images/*.png        its half of the test images
    OUT/dev/test/labels.csv          stem,label (0 normal, 1 anomalous); no masks/
    OUT/heldout/...                  the same for the other half
    OUT/split.json                   seed, counts and every stem of every part
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pasta_ros.data.layout import LayoutError, write_labels_csv


@dataclass(frozen=True)
class LabelledImage:
    """path: image file; label: 0 normal, 1 anomalous; group: e.g. the ELPV cell type."""

    path: Path
    label: int
    group: str


def read_elpv_labels(path: str | Path, group: str | None = "mono") -> list[LabelledImage]:
    """ELPV ``labels.csv`` (``images/cellNNNN.png <probability> <type>``) -> the certain rows
    (probability 0 or 1) of ``group`` (None: all types). Paths are resolved next to the file.

    Raises:
        LayoutError: missing file, a row without 3 fields or with a non-numeric probability.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"ELPV labels file not found: {path}")
    out = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3:
            raise LayoutError(f"{path}:{line_no}: expected 'path probability type', got {line!r}")
        try:
            prob = float(fields[1])
        except ValueError as exc:
            raise LayoutError(f"{path}:{line_no}: probability {fields[1]!r} is not a number"
                              ) from exc
        if prob not in (0.0, 1.0) or (group is not None and fields[2] != group):
            continue
        out.append(LabelledImage(path.parent / fields[0], int(prob), fields[2]))
    return out


@dataclass(frozen=True)
class FewShotSplit:
    """Disjoint parts, each a sorted list of images: shot pool, dev test, held-out test."""

    pool: list[LabelledImage]
    dev: list[LabelledImage]
    heldout: list[LabelledImage]


def split_few_shot(items: list[LabelledImage], seed: int = 0, pool_share: float = 0.75
                   ) -> FewShotSplit:
    """Normals ``pool_share`` / rest; test = rest + all anomalous, halved per label into dev and
    held-out. Deterministic for a seed; raises LayoutError when a part would be empty."""
    rng = np.random.default_rng(seed)
    by_name = lambda xs: sorted(xs, key=lambda x: x.path.name)  # noqa: E731
    normals = by_name([x for x in items if x.label == 0])
    anomalous = by_name([x for x in items if x.label == 1])
    if len(normals) < 4 or len(anomalous) < 2:
        raise LayoutError(f"need >= 4 normal and >= 2 anomalous images, got {len(normals)} and "
                          f"{len(anomalous)}")
    order = rng.permutation(len(normals))
    n_pool = int(round(pool_share * len(normals)))
    pool = [normals[i] for i in order[:n_pool]]
    dev, held = [], []
    for group in ([normals[i] for i in order[n_pool:]], anomalous):
        perm = rng.permutation(len(group))
        half = len(group) // 2
        dev += [group[i] for i in perm[:half]]
        held += [group[i] for i in perm[half:]]
    return FewShotSplit(by_name(pool), by_name(dev), by_name(held))


def _write_root(root: Path, pool: list[LabelledImage], test: list[LabelledImage]) -> None:
    for sub in ("reference", "baseline", "test/images"):
        d = root / sub
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for x in pool:
        shutil.copyfile(x.path, root / "reference" / x.path.name)
        shutil.copyfile(x.path, root / "baseline" / x.path.name)
    for x in test:
        shutil.copyfile(x.path, root / "test/images" / x.path.name)
    write_labels_csv(root / "test/labels.csv", {x.path.stem: x.label for x in test})


def write_few_shot_layout(split: FewShotSplit, out: str | Path, seed: int) -> dict:
    """Write ``out/dev`` and ``out/heldout`` (see the module docstring) and ``split.json``;
    returns the counts."""
    out = Path(out)
    for name, test in (("dev", split.dev), ("heldout", split.heldout)):
        _write_root(out / name, split.pool, test)
    stems = lambda xs: [x.path.stem for x in xs]  # noqa: E731
    counts = {"seed": seed, "pool_normal": len(split.pool),
              **{f"{n}_{k}": sum(x.label == v for x in part)
                 for n, part in (("dev", split.dev), ("heldout", split.heldout))
                 for k, v in (("normal", 0), ("anomalous", 1))}}
    (out / "split.json").write_text(json.dumps(
        {**counts, "pool": stems(split.pool), "dev": stems(split.dev),
         "heldout": stems(split.heldout)}, indent=1))
    return counts
