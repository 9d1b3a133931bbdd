"""The node's ``pasta/select_model`` service: switch the running model to another model of its
lineage (or an outside model folder, copied into the lineage), or roll back to its parent.

A mixin of :class:`~pasta_ros.ros.node.PastaNodeMixin`. The selection is validated (the model
loads, and has the running backbone, input size and colour weight, so the running backend is
reused) and swapped like a recalibration: the lineage's ``latest`` is written first, then the
pipeline is replaced under the swap lock; a failure leaves both untouched. It is refused while
a recalibration runs (they share the one-at-a-time lock).
"""

from __future__ import annotations

from pathlib import Path

from pasta_ros.core.errors import USER_ERRORS, ModelError
from pasta_ros.core.model_io import CalibratedModel, load_model
from pasta_ros.core.model_store import ModelStore
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.ros.recalibration import new_pipeline


def check_compatible(model: CalibratedModel, running: CalibratedModel) -> None:
    """ModelError unless ``model`` can run on ``running``'s backbone as it is."""
    for what, new, old in (("backbone", model.backbone, running.backbone),
                           ("weights", model.weights_hash, running.weights_hash),
                           ("input size", tuple(model.input_size), tuple(running.input_size)),
                           ("colour weight", model.color_weight, running.color_weight)):
        if new != old:
            raise ModelError(f"model {model.model_id} has {what} {new} but the node runs "
                             f"{old}; restart the node with model_dir:=<its folder> to "
                             "change it")


def selected_model(store: ModelStore, running: CalibratedModel, model_id: str,
                   model_dir: str, rollback: bool) -> tuple[CalibratedModel, Path]:
    """The model a select_model request names, checked against ``running``, and its folder in
    the lineage (an outside folder is copied in only once it passed). ModelError naming the
    problem."""
    if rollback:
        model_id = str(running.stats.get("parent_model_id") or "")
        if not model_id:
            raise ModelError(f"the running model {running.model_id} has no parent (it is the "
                             "first of its line)")
    if model_id:
        folder = store.find(model_id)
        model = load_model(folder)
        check_compatible(model, running)
        return model, folder
    if not model_dir:
        raise ModelError("give model_id, model_dir or rollback:=true")
    model = load_model(model_dir)
    check_compatible(model, running)
    return model, store.save(model)


class ModelSelectionInterface:
    """The select_model handler; the node creates the service in its wiring."""

    def _on_select_model(self, request, response):
        response.success, response.message = self._select(request)
        if response.success:
            self.get_logger().info(response.message)
        else:
            self.get_logger().warning(response.message)
        response.model_id = self.pipeline.model.model_id
        response.model_dir = str(self.model_dir)
        return response

    def _select(self, request) -> tuple[bool, str]:
        with self.recalibrator.exclusive() as free:
            if not free:
                return False, "select_model refused: a recalibration is running; call " \
                              "again when it has finished"
            try:
                running = self.pipeline
                model, folder = selected_model(self.store, running.model, request.model_id,
                                               request.model_dir, request.rollback)
                pipeline = new_pipeline(folder, model, self.settings.config, running)
                self.store.set_latest(folder.name)
            except USER_ERRORS as exc:
                return False, f"select_model failed: {exc}"
            self._swap_selected(pipeline, folder)
        return True, f"model {model.model_id} from {folder} is running (lineage " \
                     f"{self.store.lineage}; latest updated)"

    def _swap_selected(self, pipeline: PastaPipeline, folder: Path) -> None:
        with self._swap:  # a vote_threshold the user set applies, as at start
            explicit = {"vote_threshold"} & self.settings.explicit_fields()
            self.pipeline = pipeline.with_runtime_config(self.settings.config, explicit)
            self.model_dir = folder
