"""Hot recalibration from bags into the node's lineage of the model store (no rclpy in this
module's logic; the store is :mod:`pasta_ros.core.model_store`).

The new model is saved (temporary name, fsync, rename) and loaded back before anything is
committed; committing is pointing the lineage's ``latest`` at it and swapping the pipeline.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pasta_ros.core.config import PastaConfig
from pasta_ros.core.errors import USER_ERRORS
from pasta_ros.core.model_io import CalibratedModel
from pasta_ros.core.model_store import ModelStore
from pasta_ros.data.bags import BagError, read_bag_images
from pasta_ros.pipeline import PastaPipeline

log = logging.getLogger(__name__)


def default_models_root(model_dir: str, models_root: str) -> Path:
    """``models_root``, or the parent folder of ``model_dir`` when it is ''."""
    return Path(models_root).expanduser() if models_root else \
        Path(model_dir).expanduser().resolve().parent


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


# feedback(phase, images_done, images_total)
Feedback = Callable[[str, int, int], None]


def calibrate_into_store(req: Request, cfg: PastaConfig, running: CalibratedModel,
                         store: ModelStore, min_frames: int, feedback: Feedback | None = None,
                         cache_dir: Path | None = None,
                         on_saved: Callable[[Path], None] | None = None) -> Outcome:
    """Check the bags, calibrate (feature cache files in ``cache_dir``, removed afterwards)
    and save the model into ``store`` (``<lineage>/<model id>``; ``on_saved(folder)`` right
    after). Commits nothing and builds no pipeline: that is :class:`Recalibrator`'s.

    Returns an Outcome (``model``, ``model_dir`` set on success); user errors (bad bag, bad
    override, disk full) become ``success=False`` with the reason.
    """
    from pasta_ros.core.backbones import weights_fingerprint
    from pasta_ros.core.methods import METHODS
    from pasta_ros.pipeline import build_extractor
    from pasta_ros.sources import bag_source

    t0 = time.perf_counter()
    total = [0]

    def report(phase: str, done: int = 0) -> None:
        if feedback is not None:
            feedback(phase, done, total[0])

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
                          weights_hash=fingerprint, quiet=True, progress=report,
                          cache_dir=cache_dir)
        model.stats |= {"lineage": store.lineage, "parent_model_id": running.model_id}
        report("saving", total[0])
        out = store.save(model)
        if on_saved is not None:
            on_saved(out)
    except USER_ERRORS as exc:
        return Outcome(False, f"recalibration failed: {exc}", seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    s = model.stats
    message = (f"recalibrated in {seconds:.1f} s from {s['baseline_images']} baseline, "
               f"{s['reference_images']} reference and {s['empty_images']} empty frames: "
               f"model {model.model_id} ({int(model.anomaly.sum())} anomaly of {model.k} "
               f"clusters) saved to {out}")
    return Outcome(True, message, model, out, None, seconds, dict(s))


def new_pipeline(model_dir: Path, model: CalibratedModel, cfg: PastaConfig,
                 running: PastaPipeline) -> PastaPipeline:
    """The pipeline for a recalibrated model on the running pipeline's backend: its feature
    extractor is reused as it is (same backbone, input size and colour weight by
    construction), so an ONNX Runtime / TensorRT node stays on it with no export; a fused
    graph (centres inside) is exported for the new model into its ``engines/``."""

    if running.cluster_map_fn is not None:
        return PastaPipeline.load(model_dir, cfg)
    return PastaPipeline.assemble(model, running.extractor, cfg, model.vote_threshold)


def discard(model_dir: Path | None) -> None:
    """Remove a model folder that was saved but not committed (cancel, abandon, failure)."""
    if model_dir is not None and Path(model_dir).is_dir():
        shutil.rmtree(model_dir, ignore_errors=True)


# --------------------------------------------------------------------------- worker process


def _exit_with_parent(parent: int) -> None:
    """End this process at once when the node that started it is gone (a kill -9 of the node
    must not leave a recalibration running on its own)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="pasta-recalibrate-watchdog", daemon=True).start()


def _worker(conn, req: Request, cfg: PastaConfig, running: CalibratedModel, root: Path,
            lineage: str, min_frames: int, cache_dir: Path | None, parent: int) -> None:
    """Body of the recalibration process: messages ("progress", phase, done, total),
    ("saved", folder) and finally ("done", Outcome) on ``conn``."""
    _exit_with_parent(parent)
    try:
        os.nice(10)  # inference keeps the cores first
    except OSError:
        pass
    try:
        outcome = calibrate_into_store(
            req, cfg, running, ModelStore(root, lineage), min_frames,
            lambda phase, n, total: conn.send(("progress", phase, n, total)), cache_dir,
            lambda folder: conn.send(("saved", folder)))
    except Exception as exc:  # noqa: BLE001 - reported to the node, which stays up
        log.exception("recalibration crashed")
        outcome = Outcome(False, f"recalibration failed: internal error: {exc!r}")
    conn.send(("done", outcome))
    conn.close()


def _end(proc, at_once: bool = False) -> None:
    """Stop the worker process: SIGTERM, then SIGKILL after 5 s; ``at_once`` (a cancel: what
    it wrote is discarded anyway) sends SIGKILL first."""
    if proc.is_alive() and not at_once:
        proc.terminate()
        proc.join(5.0)
    if proc.is_alive():
        proc.kill()
    proc.join(5.0)


# --------------------------------------------------------------------------- one at a time


class Recalibrator:
    """Runs a recalibration in a worker process, one at a time, and commits its result.

    The feature extraction and K-Means run in a separate, lower-priority process (spawned), so
    they never hold the node's interpreter lock: inference goes on at its rate, and a worker
    that crashes or runs out of memory costs the recalibration, not the node.
    ``run(...)`` blocks the caller (a service or action callback on an executor thread) until
    the work is done, cancelled (``cancelled()`` turns true) or ``stop`` is set. Everything,
    the commit included (new pipeline built, ``latest`` pointer written, ``on_success``
    swapping it in), happens in the calling thread after the last cancel check, so an answer
    of "cancelled" or "abandoned" means nothing was committed and "success" means all was.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self._busy = threading.Lock()

    @property
    def running(self) -> bool:
        return self._busy.locked()

    @contextmanager
    def exclusive(self) -> Iterator[bool]:
        """Hold the one-at-a-time lock for other model changes (a selection); yields False,
        holding nothing, while a recalibration runs."""
        got = self._busy.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._busy.release()

    def run(self, req: Request, cfg: PastaConfig, running: PastaPipeline, store: ModelStore,
            min_frames: int, on_success: Callable[[Outcome], None], *,
            feedback: Feedback | None = None, cache_dir: Path | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> Outcome:
        with self.exclusive() as free:
            if not free:
                return Outcome(False, "refused: a recalibration is already running; call "
                                      "again when it has finished")
            return self._run(req, cfg, running, store, min_frames, on_success, feedback,
                             cache_dir, cancelled)

    def _gave_up(self, cancelled: Callable[[], bool]) -> Outcome | None:
        """The answer when the caller cancelled or the node is stopping, else None."""
        why = "abandoned: the node is shutting down" if self.stop.is_set() else \
            "cancelled" if cancelled() else None
        return None if why is None else Outcome(
            False, f"recalibration {why}: nothing committed", cancelled=True)

    def _run(self, req, cfg, running, store, min_frames, on_success, feedback, cache_dir,
             cancelled) -> Outcome:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # never fork a process with DDS threads
        receive, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, name="pasta-recalibrate", daemon=True,
                           args=(send, req, cfg, running.model, store.root, store.lineage,
                                 min_frames, cache_dir, os.getpid()))
        proc.start()
        send.close()
        saved: list[Path] = []
        outcome = gave_up = None
        try:
            while outcome is None:
                gave_up = self._gave_up(cancelled)
                if gave_up is not None:
                    return gave_up
                if not receive.poll(0.1):
                    if proc.is_alive():
                        continue
                    if not receive.poll():
                        break
                try:
                    message = receive.recv()
                except EOFError:
                    break
                if message[0] == "progress" and feedback is not None:
                    feedback(*message[1:])
                elif message[0] == "saved":
                    saved.append(Path(message[1]))
                elif message[0] == "done":
                    outcome = message[1]
        finally:
            _end(proc, at_once=gave_up is not None)
            receive.close()
            if outcome is None or not outcome.success:
                for folder in saved:
                    discard(folder)
            store.clean_stale(cache_dir)  # what the ended worker may have left
        if outcome is None:
            return Outcome(False, "recalibration failed: the worker process ended with exit "
                                  f"code {proc.exitcode} before finishing (out of memory? see "
                                  "the node's log); nothing committed")
        if not outcome.success:
            return outcome
        return self._commit(outcome, req, cfg, running, store, on_success, feedback,
                            cancelled)

    def _commit(self, outcome, req, cfg, running, store, on_success, feedback,
                cancelled) -> Outcome:
        try:
            if feedback is not None:
                total = sum(outcome.stats.get(f"{s}_images", 0)
                            for s in ("baseline", "reference", "empty"))
                feedback("swap", total, total)
            outcome.pipeline = new_pipeline(outcome.model_dir, outcome.model,
                                            recalibration_config(cfg, running.model, req),
                                            running)
            gave_up = self._gave_up(cancelled)
            if gave_up is not None:
                discard(outcome.model_dir)
                return gave_up
            store.set_latest(outcome.model_dir.name)
        except USER_ERRORS as exc:
            discard(outcome.model_dir)
            return Outcome(False, f"recalibration failed: the new model could not be "
                                  f"prepared on the node's backend ({exc}); nothing committed")
        on_success(outcome)
        return outcome
