"""``/pasta/set_prompts``: set and clear the node's iCAS prompts from image files or a bag.

rclpy-free: :func:`apply_request` takes the service request's fields as a :class:`PromptRequest`
and an :class:`~pasta_ros.core.icas.prompting.ICASPredictor`; the node maps the message onto it.
A prompt is encoded completely before it is installed, so a failed call (missing file, mask of
another size, empty mask, no images, wrong bag topic...) leaves the prompts as they were.

Actions:

- ``normal``: the images are normal shots (k >= 1) -> normal prompting;
- ``anomaly``: the first image with ``mask_file`` (nonzero = anomaly) or with ``points`` /
  ``boxes`` (turned into area masks), plus optional ``negative_points`` (clicks on what is not
  the anomaly) -> anomaly prompting;
- ``clear_normal``, ``clear_anomaly``, ``clear``: drop those prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from pasta_ros.core.errors import PastaError
from pasta_ros.core.icas.prompting import ICASPredictor, area_mask, negative_mask
from pasta_ros.data.bags import read_bag_images
from pasta_ros.data.images import read_image

ACTIONS = ("normal", "anomaly", "clear_normal", "clear_anomaly", "clear")


@dataclass(frozen=True)
class PromptRequest:
    """The service request: see ``pasta_msgs/srv/SetPrompts.srv`` for each field."""

    action: str
    image_files: Sequence[str] = ()
    bag: str = ""
    image_topic: str = ""
    max_images: int = 8
    mask_file: str = ""
    points: Sequence[float] = field(default_factory=tuple)
    boxes: Sequence[float] = field(default_factory=tuple)
    negative_points: Sequence[float] = field(default_factory=tuple)


def _pairs(values: Sequence[float], size: int, name: str) -> list[tuple[float, ...]]:
    if len(values) % size:
        raise PastaError(f"{name}: expected groups of {size} numbers, got {len(values)}")
    return [tuple(float(v) for v in values[i:i + size]) for i in range(0, len(values), size)]


def prompt_images(req: PromptRequest) -> list[np.ndarray]:
    """The request's images as ``(H, W, 3) uint8`` RGB: the files, or up to ``max_images``
    frames of ``image_topic`` in ``bag``. Raises PastaError / ImageReadError / BagError."""
    if req.image_files and req.bag:
        raise PastaError("give image_files or a bag, not both")
    if req.image_files:
        return [read_image(f) for f in req.image_files]
    if req.bag:
        if not req.image_topic:
            raise PastaError("a prompt bag needs image_topic")
        if req.max_images < 1:
            raise PastaError(f"max_images must be >= 1, got {req.max_images}")
        frames = [rgb for _, rgb in read_bag_images(req.bag, req.image_topic,
                                                    max_frames=req.max_images)]
        if not frames:
            raise PastaError(f"bag {req.bag} holds no readable frame on {req.image_topic}")
        return frames
    raise PastaError(f"action {req.action!r} needs prompt images: image_files or a bag")


def apply_request(predictor: ICASPredictor, req: PromptRequest) -> str:
    """Carry out one request on ``predictor``; returns what was done (for the response).

    Raises:
        PastaError, ImageReadError, BagError: the request cannot be carried out; the message
            names the problem and the prompts are unchanged.
    """
    if req.action not in ACTIONS:
        raise PastaError(f"action must be one of {', '.join(ACTIONS)}, got {req.action!r}")
    if req.action.startswith("clear"):
        which = req.action.partition("_")[2] or "all"
        predictor.clear(which)
        return f"cleared the {which} prompt{'s' if which == 'all' else ''}"
    images = prompt_images(req)
    if req.action == "normal":
        predictor.set_prompt(predictor.encode_normal_prompt(images))
        return f"normal prompt set from {len(images)} image(s)"
    image = images[0]
    if req.mask_file and (req.points or req.boxes):
        raise PastaError("give mask_file or points/boxes for the anomaly prompt, not both")
    if req.mask_file:
        mask = read_image(req.mask_file)[..., 0] > 0
    elif req.points or req.boxes:
        mask = area_mask(image.shape[:2], _pairs(req.points, 2, "points"),
                         _pairs(req.boxes, 4, "boxes"))
    else:
        raise PastaError("an anomaly prompt needs mask_file, or points / boxes on the image")
    negative = negative_mask(image.shape[:2], _pairs(req.negative_points, 2, "negative_points"))
    predictor.set_prompt(predictor.encode_anomaly_prompt(image, mask, negative))
    extra = "" if negative is None else f", {len(req.negative_points) // 2} negative click(s)"
    return f"anomaly prompt set ({int(mask.sum())} prompt pixels{extra})"


def prompt_state(predictor: ICASPredictor | None) -> dict:
    """``{"normal_shots": int, "anomaly_prompt": bool}`` of the prompts in use."""
    if predictor is None:
        return {"normal_shots": 0, "anomaly_prompt": False}
    normal, anomaly = predictor.prompts()
    return {"normal_shots": 0 if normal is None else int(normal.ntp.shape[0]),
            "anomaly_prompt": anomaly is not None}
