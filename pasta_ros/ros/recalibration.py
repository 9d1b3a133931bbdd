"""Hot recalibration from bags and the on-disk model store (no rclpy in this module's logic).

Store layout under ``models_root``: one folder per recalibrated model, named by its model id,
and ``latest``, a one-line text file with the newest good model's folder name, replaced
atomically (write temporary, fsync, rename) only after the new model was saved and loaded back.
A restart therefore finds either the previous or the new model, never half of one.

:class:`Recalibrator` runs one recalibration at a time in a background thread; a second request
while one runs is refused. Failures (missing bag, wrong topic, empty bag, too few frames,
corrupt bag, bad override) come back as ``Outcome(success=False, message=...)`` naming the
problem; the running model is only replaced on success.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import USER_ERRORS, ModelError, PastaError
from pasta_ros.core.model_io import CalibratedModel, load_model
from pasta_ros.data.bags import BagError, read_bag_images
from pasta_ros.pipeline import PastaPipeline

log = logging.getLogger(__name__)
LATEST = "latest"


# --------------------------------------------------------------------------- model store


def write_latest(models_root: Path, name: str) -> None:
    """Point ``models_root/latest`` at ``name`` atomically (and durably)."""
    tmp = models_root / f".{LATEST}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, models_root / LATEST)


def read_latest(models_root: Path) -> Path | None:
    """The model folder ``models_root/latest`` names, or None when there is no pointer."""
    pointer = models_root / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8").strip()
    return models_root / name if name and "/" not in name and name not in (".", "..") else None


def default_models_root(model_dir: str, models_root: str) -> Path:
    """``models_root``, or the parent folder of ``model_dir`` when it is ''."""
    return Path(models_root).expanduser() if models_root else \
        Path(model_dir).expanduser().resolve().parent


def lineage_of(model: CalibratedModel) -> str:
    """The lineage of a model: the id of the model its recalibrations started from (kept in
    ``stats['lineage']``); a model calibrated from scratch starts its own."""
    return str(model.stats.get("lineage") or model.model_id)


def resolve_model(model_dir: str, models_root: Path) -> tuple[Path, str]:
    """The newest good model: ``model_dir`` or the one ``models_root/latest`` names,
    whichever was created later (both loaded and checked). Returns (folder, why).
    A ``latest`` of another lineage than ``model_dir``'s model (another line's recalibration
    in a shared models_root) is ignored with a warning.

    Raises:
        ModelError: neither loads; the message says why for each.
    """
    candidates: list[tuple[Path, str]] = []
    if model_dir:
        candidates.append((Path(model_dir).expanduser(), "model_dir"))
    latest = read_latest(models_root)
    if latest is not None:
        candidates.append((latest, f"{models_root / LATEST}"))
    elif (models_root / LATEST).exists():
        log.warning("ignoring %s: it does not name a model folder", models_root / LATEST)
    good: list[tuple[str, Path, str]] = []
    problems = []
    lineage = None  # model_dir's: a 'latest' of another lineage is another line's model
    for path, source in candidates:
        try:
            model = load_model(path)
            if source == "model_dir":
                lineage = lineage_of(model)
            elif lineage is not None and lineage_of(model) != lineage:
                log.warning("ignoring %s: it names %s of lineage %s, not model_dir's lineage %s "
                            "(another line's recalibration; give each line its own "
                            "models_root)", models_root / LATEST, path.name, lineage_of(model),
                            lineage)
                continue
            good.append((model.created, path, source))
        except ModelError as exc:
            problems.append(f"{source}: {exc}")
            if source != "model_dir":
                log.warning("the newest recalibrated model cannot be loaded (%s); falling back",
                            exc)
    if not good:
        if not candidates:
            problems.append(f"model_dir is '' and {models_root / LATEST} does not exist")
        raise ModelError("no usable model: " + "; ".join(problems))
    created, path, source = max(good, key=lambda g: g[0])
    return path, f"newest good model (created {created}) from {source}"


# --------------------------------------------------------------------------- one recalibration


@dataclass
class Request:
    """What a /pasta/recalibrate call asks for (overrides: None = unset)."""

    baseline_bag: str
    reference_bag: str
    empty_bag: str
    topic: str
    clusters: int | None = None
    ratio_threshold: float | None = None
    vote_threshold: float | None = None


@dataclass
class Outcome:
    """Result of one recalibration; ``pipeline``/``model`` set on success only."""

    success: bool
    message: str
    model: CalibratedModel | None = None
    model_dir: Path | None = None
    pipeline: PastaPipeline | None = None
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    cancelled: bool = False  # answered before the work ended (cancel, shutdown)


def recalibration_config(cfg: PastaConfig, running: CalibratedModel, req: Request) -> PastaConfig:
    """The node's config, pinned to the running model's backbone, input size, colour
    weight, method and the method's settings (so the new model drops in), with the request's
    overrides (validated)."""
    changes = {"backbone": running.backbone, "input_width": running.input_size[0],
               "input_height": running.input_size[1], "color_weight": running.color_weight,
               "method": running.method}
    changes |= {k: v for k, v in running.method_params.items() if hasattr(cfg, k)}
    for name in ("clusters", "ratio_threshold", "vote_threshold"):
        if getattr(req, name) is not None:
            changes[name] = getattr(req, name)
    return cfg.replace(**changes)


def _check_bag(role: str, bag: str, topic: str, min_frames: int) -> int:
    """The number of frames of ``bag`` on ``topic``; BagError naming the bag and the fix."""
    if not bag:
        raise BagError(f"{role} bag: no path given")
    try:
        n = read_bag_images(bag, topic).message_count
    except BagError as exc:
        raise BagError(f"{role} bag: {exc}") from None
    if n < min_frames:
        raise BagError(f"{role} bag {bag} has {n} frame(s) on {topic}; at least {min_frames} "
                       "are needed (parameter min_recalibration_frames)")
    return n


class RecalibrationCancelled(PastaError):
    """The caller cancelled (or the node is shutting down); nothing was committed."""


# feedback(phase, images_done, images_total); may raise RecalibrationCancelled
Feedback = Callable[[str, int, int], None]


def recalibrate(req: Request, cfg: PastaConfig, running: CalibratedModel, models_root: Path,
                min_frames: int, feedback: Feedback | None = None) -> Outcome:
    """Check the bags, calibrate, save under ``models_root/<model id>`` and load it back as a
    pipeline. Commits nothing: the ``latest`` pointer and the swap are the caller's
    (:meth:`Recalibrator.run`). Never touches the running pipeline.

    Returns an Outcome; user errors become ``success=False`` with the reason. A cancel raised
    by ``feedback`` propagates (the saved folder, if any, is removed first).
    """
    from pasta_ros.core.backbones import weights_fingerprint
    from pasta_ros.core.methods import METHODS
    from pasta_ros.core.model_io import save_model
    from pasta_ros.pipeline import build_extractor
    from pasta_ros.sources import bag_source

    t0 = time.perf_counter()
    total = [0]

    def report(phase: str, done: int = 0) -> None:
        if feedback is not None:
            feedback(phase, done, total[0])

    out: Path | None = None
    try:
        report("reading")
        ccfg = recalibration_config(cfg, running, req)
        total[0] = (_check_bag("baseline", req.baseline_bag, req.topic, min_frames)
                    + _check_bag("reference", req.reference_bag, req.topic, min_frames))
        if req.empty_bag:
            total[0] += _check_bag("empty", req.empty_bag, req.topic, 1)
        sources = [bag_source(b, req.topic) if b else None
                   for b in (req.baseline_bag, req.reference_bag, req.empty_bag)]
        fingerprint = weights_fingerprint(ccfg.backbone, ccfg.weights)
        extractor = build_extractor(ccfg, weights_hash=fingerprint)
        calibrate = METHODS[ccfg.method].calibrate  # the running model's method
        model = calibrate(extractor, sources[0], sources[1], sources[2], ccfg,
                          weights_hash=fingerprint,
                          quiet=True, progress=report)
        model.stats |= {"lineage": lineage_of(running), "parent_model_id": running.model_id}
        report("saving", total[0])
        models_root.mkdir(parents=True, exist_ok=True)
        out = save_model(model, models_root / model.model_id)
        pipeline = PastaPipeline.load(out, ccfg, extractor=extractor)
        if hasattr(extractor.backbone, "install"):  # exported graphs beside the new model
            extractor.backbone.install(out / "engines")
        report("swap", total[0])
    except RecalibrationCancelled:
        discard(out)
        raise
    except USER_ERRORS as exc:
        discard(out)
        return Outcome(False, f"recalibration failed: {exc}",
                       seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    s = model.stats
    message = (f"recalibrated in {seconds:.1f} s from {s['baseline_images']} baseline, "
               f"{s['reference_images']} reference and {s['empty_images']} empty frames: "
               f"model {model.model_id} ({int(model.anomaly.sum())} anomaly of {model.k} "
               f"clusters) saved to {out}")
    return Outcome(True, message, model, out, pipeline, seconds, dict(s))


def discard(model_dir: Path | None) -> None:
    """Remove a model folder that was saved but not committed (cancel, abandon, failure)."""
    if model_dir is not None and model_dir.is_dir():
        shutil.rmtree(model_dir, ignore_errors=True)


# --------------------------------------------------------------------------- one at a time


def _lower_priority(nice: int = 10) -> None:
    """Lower this thread's CPU priority (Linux: threads are tasks; the threads it starts,
    torch's OpenMP team included, inherit it) so inference keeps the cores first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


class Recalibrator:
    """Runs :func:`recalibrate` in a background thread, one at a time, and commits its result.

    ``run(...)`` blocks the caller (a service or action callback on an executor thread) until
    the work is done, cancelled (``cancelled()`` turns true) or ``stop`` is set, while
    inference goes on elsewhere. Committing (``latest`` pointer, then ``on_success`` to swap
    the pipeline in) and giving up (cancel, shutdown) take one lock, so an answer of
    "cancelled" or "abandoned" means nothing was committed, and "success" means it all was.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._busy = threading.Lock()

    @property
    def running(self) -> bool:
        return self._busy.locked()

    def run(self, req: Request, cfg: PastaConfig, running: CalibratedModel, models_root: Path,
            min_frames: int, on_success: Callable[[Outcome], None], *,
            feedback: Feedback | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> Outcome:
        if not self._busy.acquire(blocking=False):
            return Outcome(False, "refused: a recalibration is already running; call again "
                                  "when it has finished")
        box: list[Outcome] = []
        done = threading.Event()
        commit = threading.Lock()
        gave_up: list[str] = []  # set under ``commit``: the caller was answered without it

        def check(phase: str, n: int, total: int) -> None:
            if gave_up or cancelled() or self.stop.is_set():
                raise RecalibrationCancelled(f"cancelled during {phase}")
            if feedback is not None:
                feedback(phase, n, total)

        def work() -> None:
            try:
                _lower_priority()
                outcome = recalibrate(req, cfg, running, models_root, min_frames, check)
                with commit:
                    if outcome.success and (gave_up or cancelled() or self.stop.is_set()):
                        discard(outcome.model_dir)
                        outcome = Outcome(False, "recalibration cancelled: nothing committed")
                    elif outcome.success:
                        write_latest(models_root, outcome.model_dir.name)
                        on_success(outcome)
                box.append(outcome)
            except RecalibrationCancelled as exc:
                box.append(Outcome(False, f"recalibration {exc}: nothing committed"))
            except Exception as exc:  # noqa: BLE001 - report, never kill the node
                log.exception("recalibration crashed")
                box.append(Outcome(False, f"recalibration failed: internal error: {exc!r}"))
            finally:
                self._busy.release()
                done.set()

        threading.Thread(target=work, name="pasta-recalibrate", daemon=True).start()
        while not done.wait(0.1):
            for why, now in (("abandoned: the node is shutting down", self.stop.is_set()),
                             ("cancelled", cancelled())):
                if now:
                    with commit:
                        if not done.is_set() and not box:
                            gave_up.append(why)
                            return Outcome(False, f"recalibration {why}: nothing committed",
                                           cancelled=True)
        return box[0]
