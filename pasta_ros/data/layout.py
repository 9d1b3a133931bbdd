"""The dataset folder layout shared by the CLI, the synthetic generator and the evaluation.

::

    D/
      baseline/*.png        mixed images: targets and anomalies ("before sorting")
      reference/*.png       anomaly-free images: targets only ("after sorting")
      empty/*.png           optional: background only (empty belt, bare soil)
      test/images/*.png     optional: evaluation images
      test/masks/<stem>.png (H, W) uint8 labels: 0 background, 1 target, 2 anomaly
      test/labels.csv       optional: "stem,label" with 0 normal, 1 anomalous
      test/instances/<stem>.png optional: (H, W) uint16 instance ids, 0 none
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pasta_ros.data.images import IMAGE_EXTENSIONS, ImageReadError, list_images

EXPECTED_TREE = """expected dataset layout:
  <root>/
    baseline/*.png        mixed images (targets + anomalies)
    reference/*.png       anomaly-free images (targets only)
    empty/*.png           optional: background only
    test/images/*.png     optional: evaluation images
    test/masks/<stem>.png optional: uint8 labels 0 background, 1 target, 2 anomaly
    test/labels.csv       optional: stem,label (0 normal, 1 anomalous)
    test/instances/<stem>.png optional: uint16 instance ids (0 none)"""

MASK_VALUES = (0, 1, 2)


class LayoutError(ImageReadError):
    """A dataset folder, mask or labels file does not follow the layout; names the path."""


@dataclass(frozen=True)
class DatasetLayout:
    """Resolved paths of one dataset; optional parts are ``None`` when absent."""

    root: Path
    baseline: Path
    reference: Path
    empty: Path | None = None
    test_images: Path | None = None
    test_masks: Path | None = None
    labels_csv: Path | None = None
    test_instances: Path | None = None

    @classmethod
    def for_test(cls, path: str | Path) -> DatasetLayout:
        """The test parts of a dataset, from its root (``D``) or its test folder
        (``D/test``); baseline and reference need not exist.

        Raises:
            LayoutError: the folder is missing or holds neither ``images/`` nor
                ``test/images/``.
        """
        path = Path(path)
        if not path.is_dir():
            raise LayoutError(f"test folder not found: {path}\n{EXPECTED_TREE}")
        test = path / "test" if (path / "test" / "images").is_dir() else path
        if not (test / "images").is_dir():
            raise LayoutError(f"{path} holds neither images/ nor test/images/; give the dataset "
                              f"root or its test folder\n{EXPECTED_TREE}")
        root = test.parent if test != path else path
        part = {n: test / n if (test / n).is_dir() else None for n in ("masks", "instances")}
        labels = test / "labels.csv" if (test / "labels.csv").is_file() else None
        empty = root / "empty" if (root / "empty").is_dir() else None
        return cls(root=root, baseline=root / "baseline", reference=root / "reference",
                   empty=empty, test_images=test / "images", test_masks=part["masks"],
                   labels_csv=labels, test_instances=part["instances"])

    @classmethod
    def discover(cls, root: str | Path) -> DatasetLayout:
        """Find the parts of the dataset under ``root``.

        Raises:
            LayoutError: ``root``, ``baseline/`` or ``reference/`` missing or without images,
                or ``test/masks/`` present without ``test/images/``; the message shows the
                expected tree.
        """
        root = Path(root)
        if not root.is_dir():
            raise LayoutError(f"dataset folder not found: {root}\n{EXPECTED_TREE}")
        for name in ("baseline", "reference"):
            folder = root / name
            if not folder.is_dir():
                raise LayoutError(f"missing required folder {folder}\n{EXPECTED_TREE}")
            if not list_images(folder):
                exts = ", ".join(sorted(IMAGE_EXTENSIONS))
                raise LayoutError(
                    f"{folder} holds no images ({exts})\n{EXPECTED_TREE}"
                )
        test = root / "test"
        images = test / "images" if (test / "images").is_dir() else None
        masks = test / "masks" if (test / "masks").is_dir() else None
        if masks is not None and images is None:
            raise LayoutError(f"{masks} exists but {test / 'images'} does not\n{EXPECTED_TREE}")
        labels = test / "labels.csv" if (test / "labels.csv").is_file() else None
        empty = root / "empty" if (root / "empty").is_dir() else None
        inst = test / "instances" if (test / "instances").is_dir() else None
        return cls(
            root=root, baseline=root / "baseline", reference=root / "reference", empty=empty,
            test_images=images, test_masks=masks, labels_csv=labels, test_instances=inst,
        )


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """Read a ``stem,label`` file (header required) into ``{stem: 0 normal | 1 anomalous}``.

    Blank lines are ignored; surrounding spaces are stripped.

    Raises:
        LayoutError: missing file, wrong header, wrong column count, empty stem, a label other
            than 0/1, or a duplicate stem; the message gives the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"labels file not found: {path}")
    labels: dict[str, int] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = [c.strip() for c in next(rows, [])]
        if header != ["stem", "label"]:
            raise LayoutError(f"{path}:1: header must be 'stem,label', got {','.join(header)!r}")
        for line, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            labels.update(_parse_label_row(path, line, row, labels))
    return labels


def _parse_label_row(path: Path, line: int, row: list[str], seen: dict[str, int]
                     ) -> dict[str, int]:
    if len(row) != 2:
        raise LayoutError(f"{path}:{line}: expected 2 columns (stem,label), got {len(row)}")
    stem, value = row[0].strip(), row[1].strip()
    if not stem:
        raise LayoutError(f"{path}:{line}: empty stem")
    if value not in ("0", "1"):
        raise LayoutError(f"{path}:{line}: label must be 0 or 1, got {value!r}")
    if stem in seen:
        raise LayoutError(f"{path}:{line}: duplicate stem {stem!r}")
    return {stem: int(value)}


def write_labels_csv(path: str | Path, labels: dict[str, int]) -> None:
    """Write ``{stem: 0|1}`` as a ``stem,label`` file, sorted by stem."""
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["stem", "label"])
        for stem in sorted(labels):
            w.writerow([stem, int(labels[stem])])


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask as ``(H, W) uint8`` with values in {0, 1, 2}.

    Single-channel 8- or 16-bit PNGs are accepted, and 3-channel files whose channels are
    equal (a gray mask saved as RGB).

    Raises:
        LayoutError: unreadable file, colour mask, or values outside {0, 1, 2} (listed).
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    mask = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if mask is None:
        raise LayoutError(f"cannot read mask file {path}: missing, corrupt or not an image")
    if mask.ndim == 3:
        if not all(np.array_equal(mask[:, :, 0], mask[:, :, c]) for c in range(mask.shape[2])):
            raise LayoutError(f"mask {path} has {mask.shape[2]} differing channels; expected "
                              "a single-channel label image")
        mask = mask[:, :, 0]
    bad = np.setdiff1d(np.unique(mask), MASK_VALUES)
    if bad.size:
        shown = ", ".join(str(v) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise LayoutError(f"mask {path} has values outside {{0, 1, 2}}: {shown}")
    return mask.astype(np.uint8)


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write an ``(H, W) uint8`` {0, 1, 2} label mask as a single-channel PNG."""
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise LayoutError(f"mask must be (H, W) uint8, got {mask.shape} {mask.dtype}")
    if not cv2.imwrite(str(path), mask):
        raise LayoutError(f"could not write mask {path}")


def test_pairs(layout: DatasetLayout) -> list[tuple[str, Path, Path]]:
    """``(stem, image_path, mask_path)`` for every test image, sorted by image name.

    Raises:
        LayoutError: the dataset has no test images or masks, or some images have no
            ``test/masks/<stem>.png`` (the first few stems are listed).
    """
    if layout.test_images is None or layout.test_masks is None:
        raise LayoutError(
            f"{layout.root} has no test/images and test/masks folders\n{EXPECTED_TREE}"
        )
    pairs, missing = [], []
    for image in list_images(layout.test_images):
        mask = layout.test_masks / f"{image.stem}.png"
        if mask.is_file():
            pairs.append((image.stem, image, mask))
        else:
            missing.append(image.stem)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise LayoutError(
            f"{len(missing)} test images have no mask in {layout.test_masks}: {shown}"
        )
    if not pairs:
        raise LayoutError(f"{layout.test_images} holds no images")
    return pairs


def test_items(layout: DatasetLayout) -> list[tuple[str, Path, Path | None]]:
    """``(stem, image_path, mask_path or None)`` for every test image, sorted by name.

    Masks are required unless the set has ``labels.csv`` and no ``masks/`` folder (then every
    mask is None: only the image AUROC can be computed).

    Raises:
        LayoutError: no test images; two images with one stem; images without masks; a
            labels.csv naming images that do not exist. Each names the file and the fix.
    """
    if layout.test_images is None:
        raise LayoutError(f"{layout.root} has no test/images folder\n{EXPECTED_TREE}")
    images = list_images(layout.test_images)
    if not images:
        raise LayoutError(f"{layout.test_images} holds no images")
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise LayoutError(f"{image} and {seen[image.stem]} have the same stem "
                              f"{image.stem!r}; rename or remove one (masks are matched by stem)")
        seen[image.stem] = image
    if layout.labels_csv is not None:
        unknown = sorted(set(read_labels_csv(layout.labels_csv)) - set(seen))
        if unknown:
            shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise LayoutError(f"{layout.labels_csv} names {len(unknown)} images that are not "
                              f"in {layout.test_images}: {shown}; remove those rows or add "
                              "the images")
    if layout.test_masks is None:
        if layout.labels_csv is None:
            raise LayoutError(f"{layout.test_images.parent} has neither masks/ nor labels.csv: "
                              f"nothing to evaluate against\n{EXPECTED_TREE}")
        return [(im.stem, im, None) for im in images]
    return test_pairs(layout)


def check_mask_size(mask: np.ndarray, image: np.ndarray, mask_path: Path,
                    image_path: Path) -> None:
    """LayoutError naming both files when a mask's size differs from its image's."""
    if mask.shape[:2] != image.shape[:2]:
        raise LayoutError(f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but image "
                          f"{image_path} is {image.shape[1]}x{image.shape[0]}; masks must have "
                          "their image's size (write them at the image resolution)")


def read_instances(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read an ``(H, W)`` uint8/uint16 instance-id PNG as int32; LayoutError naming the file
    when it is unreadable or of another size than ``shape``."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8) if path.is_file() else np.zeros(0, np.uint8)
    ids = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if ids is None or ids.ndim != 2:
        raise LayoutError(f"cannot read instance file {path}: expected a single-channel "
                          "uint8/uint16 PNG of instance ids")
    if ids.shape != tuple(shape):
        raise LayoutError(f"instance file {path} is {ids.shape[1]}x{ids.shape[0]}, its image "
                          f"{shape[1]}x{shape[0]}; write it at the image resolution")
    return ids.astype(np.int32)


test_items.__test__ = False  # type: ignore[attr-defined]
# pytest would otherwise try to collect test_pairs when a test module imports it by name.
test_pairs.__test__ = False  # type: ignore[attr-defined]
