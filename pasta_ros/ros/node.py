"""``pasta_node``: camera images in, 3-class masks and anomaly instances out (rclpy).

A thin shell around :class:`~pasta_ros.pipeline.PastaPipeline`:

- subscribes ``image_topic`` (``sensor_msgs/Image`` or ``CompressedImage``), converts each frame
  in the callback and leaves it in a single-slot buffer (:mod:`pasta_ros.ros.frames`);
- an inference thread takes the newest frame, runs the pipeline and publishes
  ``pasta/segmentation`` (mono8 labels 0/1/2), ``pasta/anomaly_masks``
  (``pasta_msgs/InstanceArray``) and, optionally, ``pasta/overlay`` (rgb8), all with the input's
  header; frames that arrive while it is busy replace the waiting one (dropped and counted);
- serves ``pasta/recalibrate`` (:mod:`pasta_ros.ros.recalibration`), ``pasta/select_model``
  (:mod:`pasta_ros.ros.model_selection`) and ``pasta/set_prompts`` (:mod:`pasta_ros.ros.prompts`:
  iCAS prompts, used as the anomaly vote when ``icas_mode`` is ``replace`` or ``combine``), and
  publishes ``/diagnostics`` (:mod:`pasta_ros.ros.diagnostics`).

Run: ``pasta_node --ros-args --params-file config/sorter.yaml -p model_dir:=MODEL``
(or ``python -m pasta_ros.ros.node ...``). Bad parameters or an unusable model: one
``error:`` line on stderr and exit status 2. SIGINT/SIGTERM: clean shutdown, status 0.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from pasta_msgs.action import Recalibrate as RecalibrateAction
from pasta_msgs.msg import InstanceArray
from pasta_msgs.srv import Recalibrate, SelectModel, SetPrompts
from pasta_ros.core.config import ConfigError
from pasta_ros.core.errors import USER_ERRORS
from pasta_ros.core.icas.model import default_checkpoint
from pasta_ros.core.icas.prompting import ICASPredictor
from pasta_ros.core.icas.vote import IcasVote
from pasta_ros.core.model_store import ModelStore, lineage_name, resolve_model
from pasta_ros.data.images import check_encoded_pixels, check_image_size
from pasta_ros.export.icas_decoder import use_decoder_backend
from pasta_ros.pipeline import PastaPipeline
from pasta_ros.ros import convert
from pasta_ros.ros.camera_info import CameraInfoCache
from pasta_ros.ros.cdr import (
    instance_array_cdr,
    matches_rclpy,
    mono8_cdr,
    stamp_processing_time,
)
from pasta_ros.ros.diagnostics import (
    DiagnosticsPublisher,
    Limits,
    self_check_values,
    status_name,
)
from pasta_ros.ros.executor import InlineExecutor
from pasta_ros.ros.frames import Frame, LatestFrame
from pasta_ros.ros.model_selection import ModelSelectionInterface
from pasta_ros.ros.params import RUNTIME_CONFIG, apply_changes, declarations, declare_all
from pasta_ros.ros.prompts import PromptRequest, apply_request, prompt_state
from pasta_ros.ros.recalibration import Recalibrator, default_models_root
from pasta_ros.ros.recalibration_interface import RecalibrationInterface


class PastaNodeMixin(RecalibrationInterface, ModelSelectionInterface):
    """The node's behaviour, for a plain :class:`rclpy.node.Node` (:class:`PastaNode`) and a
    managed one (:class:`~pasta_ros.ros.lifecycle_node.ManagedPastaNode`). Life cycle:
    :meth:`init_pasta` (parameters), :meth:`configure` (model), :meth:`activate` (interfaces,
    inference thread), :meth:`deactivate`, :meth:`cleanup`."""

    def init_pasta(self, stop: threading.Event) -> None:
        """Declare and validate the parameters; nothing is loaded yet. ``stop`` is set by the
        signal handlers to end everything."""
        self.stop = stop
        self.settings = declare_all(self)
        self.pipeline: PastaPipeline | None = None
        self.model_dir = None
        self._swap = threading.Lock()
        self._icas_lock = threading.Lock()
        self.icas: ICASPredictor | None = None
        self.last_vote = "pasta"
        self.frames = LatestFrame()
        self.camera_frame_id = ""  # hardware_id of the diagnostics: the last frame's frame_id
        self.recalibrator = Recalibrator(stop)
        self.worker: threading.Thread | None = None
        self._halt = threading.Event()
        self._entities: list = []
        # callbacks that take seconds to minutes (recalibration, prompts, model selection):
        # the executor runs them in its pool, everything else (the camera) inline
        self.blocking_group = ReentrantCallbackGroup()
        self.add_on_set_parameters_callback(self._on_parameters)

    def configure(self) -> None:
        """Load the newest good model and (when icas_mode is on) the iCAS checkpoint, so a bad
        one stops the start, never a frame. Raises the user errors."""
        s = self.settings
        self.store = ModelStore(default_models_root(s.model_dir, s.models_root),
                                s.lineage or lineage_name(self.get_fully_qualified_name()))
        self.cache_dir = Path(s.feature_cache_dir) if s.feature_cache_dir \
            else self.store.cache_dir
        for path in self.store.clean_stale(self.cache_dir):
            self.get_logger().warning(f"removed {path}: left by a run that was killed")
        model_dir, why = resolve_model(s.model_dir, self.store, s.follow_latest)
        self.pipeline = PastaPipeline.load(model_dir, s.pipeline_config(),
                                           explicit=s.explicit_fields())
        self.model_dir = model_dir
        self.get_logger().info(f"model {self.pipeline.model.model_id} from {model_dir} ({why})")
        if s.icas_mode != "off":
            self._icas_predictor()

    def activate(self) -> None:
        """Subscriptions, publishers, services, action, diagnostics and the inference thread."""
        self._create_interfaces()
        self._halt.clear()
        self.worker = threading.Thread(target=self._inference_loop, name="pasta-inference",
                                       daemon=True)
        self.worker.start()

    def deactivate(self) -> None:
        """End the inference thread (after its current frame) and release the interfaces."""
        self._halt.set()
        if self.worker is not None:
            self.worker.join(timeout=10.0)
            self.worker = None
        for destroy, entity in reversed(self._entities):
            destroy(entity)
        self._entities.clear()

    def cleanup(self) -> None:
        """Release the model and the iCAS predictor."""
        self.pipeline = None
        self.icas = None

    # ------------------------------------------------------------------ wiring
    def _create_interfaces(self) -> None:
        s = self.settings
        reliability = (ReliabilityPolicy.RELIABLE if s.qos_reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=s.qos_depth,
                            reliability=reliability)
        msg_type = CompressedImage if s.input_type == "compressed" else Image
        self.sub = self._input_subscription(msg_type, in_qos)
        self.pub_labels = self._output(Image, "segmentation")
        self.pub_instances = self._output(InstanceArray, "anomaly_masks")
        self._raw_messages = self.settings.serialized_outputs and self._check_raw_messages()
        self.pub_overlay = self._output(Image, "overlay")
        self.camera_info: CameraInfoCache | None = None
        if s.camera_info_topic:
            self.camera_info = CameraInfoCache(s.camera_info_slop)
            self.sub_info = self.create_subscription(
                CameraInfo, s.camera_info_topic, self.camera_info.put,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.BEST_EFFORT),
                callback_group=MutuallyExclusiveCallbackGroup())
            self.pub_info = self._output(CameraInfo, "camera_info")
        self.srv = self.create_service(Recalibrate, "pasta/recalibrate", self._on_recalibrate,
                                       callback_group=self.blocking_group)
        self.action = ActionServer(self, RecalibrateAction, "pasta/recalibrate",
                                   execute_callback=self._execute_recalibration,
                                   goal_callback=self._on_goal,
                                   cancel_callback=lambda _goal: CancelResponse.ACCEPT,
                                   callback_group=self.blocking_group)
        self.srv_prompts = self.create_service(SetPrompts, "pasta/set_prompts",
                                               self._on_set_prompts,
                                               callback_group=self.blocking_group)
        self.srv_select = self.create_service(SelectModel, "pasta/select_model",
                                              self._on_select_model,
                                              callback_group=self.blocking_group)
        self.diagnostics = DiagnosticsPublisher(self, status_name(self.get_fully_qualified_name()))
        self.timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        subs = [self.sub] + ([self.sub_info] if self.camera_info is not None else [])
        pubs = [self.pub_labels, self.pub_instances, self.pub_overlay, self.diagnostics.pub]
        pubs += [self.pub_info] if self.camera_info is not None else []
        self._entities = ([(self.destroy_subscription, e) for e in subs]
                          + [(self.destroy_publisher, e) for e in pubs]
                          + [(self.destroy_service, e) for e in (self.srv, self.srv_prompts,
                                                                   self.srv_select)]
                          + [(self.destroy_timer, self.timer),
                             (lambda a: a.destroy(), self.action)])
        self.get_logger().info(f"listening on {self.sub.topic_name} ({msg_type.__name__}); "
                               f"cv_bridge {'on' if convert.bridge_available() else 'off'}")

    def _check_raw_messages(self) -> bool:
        """Whether :mod:`.cdr` writes the label image and the InstanceArray as rclpy would
        (checked once per activation on probe messages); a mismatch is logged and message
        objects are used."""
        try:
            ok = matches_rclpy(self.settings.max_contour_vertices)
        except Exception as exc:  # noqa: BLE001 - any failure means "build message objects"
            ok, why = False, repr(exc)
        else:
            why = "its bytes differ from rclpy's for the probe message"
        if not ok:
            self.get_logger().warning(f"serialized message writer not used ({why}); "
                                      "building message objects instead (slower)")
        return ok

    def _input_subscription(self, msg_type, qos: QoSProfile):
        """The camera subscription, counting the frames the middleware reports lost (where it
        reports them) in diagnostics (frames_lost_dds)."""
        def lost(status) -> None:
            self.frames.lost_in_middleware(status.total_count_change)
            self.get_logger().warning(f"{status.total_count_change} camera frame(s) lost in "
                                      f"the middleware ({status.total_count} in all); for "
                                      "large frames on one machine use the shared-memory "
                                      "transport (config/fastdds_shm.xml)",
                                      throttle_duration_sec=5.0)

        group = MutuallyExclusiveCallbackGroup()
        try:
            return self.create_subscription(
                msg_type, self.settings.image_topic, self._on_image, qos, callback_group=group,
                event_callbacks=SubscriptionEventCallbacks(message_lost=lost))
        except UnsupportedEventTypeError:
            self.get_logger().info("this middleware does not report lost messages: "
                                   "frames_lost_dds stays 0")
            return self.create_subscription(msg_type, self.settings.image_topic,
                                            self._on_image, qos, callback_group=group)

    def _output(self, msg_type, name: str):
        """The ``pasta/<name>`` publisher with its ``<name>_qos_*`` parameters."""
        s = self.settings
        reliable = getattr(s, f"{name}_qos_reliability") == "reliable"
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=getattr(s, f"{name}_qos_depth"),
                         reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return self.create_publisher(msg_type, f"pasta/{name}", qos)

    # ------------------------------------------------------------------ frames
    def _on_image(self, msg: Image | CompressedImage) -> None:
        t0 = time.perf_counter()
        limit = self.settings.config.max_image_pixels
        try:
            if isinstance(msg, CompressedImage):  # refused from the header, before decoding
                check_encoded_pixels(msg.data, limit, "frame")
                rgb = convert.compressed_to_rgb(msg)
                check_image_size(rgb.shape[1], rgb.shape[0], limit, "frame")
            else:  # the message states its size: checked before converting
                check_image_size(msg.width, msg.height, limit, "frame")
                rgb = convert.image_to_rgb(msg)
        except Exception as exc:  # noqa: BLE001 - any bad frame is skipped, never fatal
            self.frames.bad_frame(str(exc))
            self.get_logger().warning(f"skipping frame: {exc}", throttle_duration_sec=5.0)
            return
        self.camera_frame_id = msg.header.frame_id
        self.frames.put(Frame(rgb, msg.header, t0, time.perf_counter()))

    def _inference_loop(self) -> None:
        while not self.stop.is_set() and not self._halt.is_set():
            frame = self.frames.take(timeout=0.1)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as exc:  # noqa: BLE001 - keep serving the next frames
                self.frames.failed(f"processing failed: {exc!r}")
                self.get_logger().error(f"frame failed: {exc!r}", throttle_duration_sec=5.0)

    def _process(self, frame: Frame) -> None:
        pipeline = self.pipeline  # one reference per frame: a swap never splits a frame
        result = pipeline.process(frame.rgb, icas=self._icas_vote())
        self.last_vote = result.vote
        t_built = time.perf_counter()
        h, w = frame.rgb.shape[:2]
        if self._raw_messages:
            stamp = frame.header.stamp
            self.pub_labels.publish(mono8_cdr(result.labels, (stamp.sec, stamp.nanosec),
                                              frame.header.frame_id))
        else:
            self.pub_labels.publish(convert.mono8_image(result.labels, frame.header))
        self._publish_instances(result, frame, w, h)
        if self.camera_info is not None:
            self._publish_camera_info(frame.header, w, h)
        t_published = time.perf_counter()
        # the overlay costs a few ms per frame: drawn only while someone subscribes
        if self.settings.publish_overlay and self.pub_overlay.get_subscription_count() > 0:
            self.pub_overlay.publish(convert.overlay_image(frame.rgb, result.labels,
                                                           frame.header))
        overhead = (frame.t_converted - frame.t_received) + (t_published - t_built)
        self.frames.done((time.perf_counter() - frame.t_received) * 1e3, overhead * 1e3)

    def _publish_instances(self, result, frame: Frame, width: int, height: int) -> None:
        """The InstanceArray of ``result``, written as serialized bytes when the writer
        matched rclpy at activation (2-3x cheaper than message objects), else built as
        message objects; processing_time_ms is stamped last."""
        vertices = self.settings.max_contour_vertices
        if self._raw_messages:
            stamp = frame.header.stamp
            raw, at = instance_array_cdr(result.instances, (stamp.sec, stamp.nanosec),
                                         frame.header.frame_id, width, height,
                                         result.model_id, vertices)
            stamp_processing_time(raw, at, (time.perf_counter() - frame.t_received) * 1e3)
            self.pub_instances.publish(bytes(raw))
            return
        msg = convert.instance_array(result.instances, frame.header, width, height,
                                     result.model_id, vertices)
        msg.processing_time_ms = (time.perf_counter() - frame.t_received) * 1e3
        self.pub_instances.publish(msg)

    def _publish_camera_info(self, header, width: int, height: int) -> None:
        """The CameraInfo paired with this frame, restamped with its header; a missing or
        mismatched one is counted (diagnostics) and warned about, never published."""
        info, why = self.camera_info.match(header, width, height)
        if info is None:
            self.get_logger().warning(f"pasta/camera_info not published: {why}",
                                      throttle_duration_sec=5.0)
            return
        out = copy.copy(info)  # the cached message may pair with another frame too
        out.header = header
        self.pub_info.publish(out)

    # ------------------------------------------------------------------ iCAS
    def _icas_predictor(self) -> ICASPredictor:
        """The iCAS predictor, loaded on first use (PastaError for a bad checkpoint)."""
        with self._icas_lock:
            if self.icas is None:
                s = self.settings
                path = s.icas_checkpoint or str(default_checkpoint())
                device = "cuda" if self.pipeline.centers.is_cuda else "cpu"
                # the vote's threshold is icas_threshold, read per frame (_icas_vote)
                icas = ICASPredictor.from_checkpoint(path, weights=s.icas_weights,
                                                     device=device)
                shared = s.icas_share_backbone and self.pipeline.share_icas_backbone(
                    icas, s.icas_max_cells)
                use_decoder_backend(icas, s.icas_decoder_backend)
                self.icas = icas
                self.get_logger().info(f"iCAS model loaded from {path}" + (
                    " (scoring on PASTA's backbone features: one encoder pass)" if shared
                    else ""))
            return self.icas

    def _icas_vote(self) -> IcasVote | None:
        s = self.settings
        if s.icas_mode == "off" or self.icas is None:
            return None
        return IcasVote(self.icas, s.icas_mode, s.icas_threshold)

    def _on_set_prompts(self, request, response):
        s = self.settings
        req = PromptRequest(request.action, list(request.image_files), request.bag,
                            request.image_topic or self.sub.topic_name,
                            int(request.max_images) or s.icas_max_prompt_images,
                            request.mask_file, list(request.points), list(request.boxes),
                            # absent from a pasta_msgs built before negative clicks
                            list(getattr(request, "negative_points", ())))
        try:
            response.message = apply_request(self._icas_predictor(), req)
            response.success = True
            self.get_logger().info(f"set_prompts: {response.message}")
        except USER_ERRORS as exc:
            response.success, response.message = False, f"set_prompts failed: {exc}"
            self.get_logger().warning(response.message)
        except Exception as exc:  # noqa: BLE001 - always answer the caller
            response.success = False
            response.message = f"set_prompts failed: internal error: {exc!r}"
            self.get_logger().error(response.message)
        state = prompt_state(self.icas)
        response.normal_shots = state["normal_shots"]
        response.anomaly_prompt = state["anomaly_prompt"]
        return response

    # ------------------------------------------------------------------ diagnostics
    def _self_checks(self) -> dict:
        """The running model's calibration self-checks (computed once per model)."""
        model = self.pipeline.model
        if getattr(self, "_checks", (None,))[0] != model.model_id:
            self._checks = (model.model_id, self_check_values(model))
        return self._checks[1]

    def status(self) -> dict:
        return self.frames.snapshot() | self._self_checks() | {
            "model_id": self.pipeline.model.model_id, "model_dir": str(self.model_dir),
            "lineage": self.store.lineage, "backend": self.pipeline.backend,
            "recalibrating": self.recalibrator.running,
            "icas_mode": self.settings.icas_mode, "vote": self.last_vote,
            **prompt_state(self.icas),
            **({f"camera_info_{k}": v for k, v in self.camera_info.counts.items()}
               if self.camera_info is not None else {})}

    def _publish_diagnostics(self) -> None:
        s = self.settings
        self.diagnostics.publish(self.status(), self.camera_frame_id,
                                 Limits(s.input_timeout_s, s.diag_latency_warn_ms,
                                        s.diag_latency_error_ms, s.diag_min_rate_hz,
                                        s.diag_drop_share_warn))

    # ------------------------------------------------------------------ parameters
    def _on_parameters(self, params) -> SetParametersResult:
        names = {d.name for d in declarations()}
        changes = {p.name: p.value for p in params if p.name in names}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = apply_changes(self.settings, changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        runtime = RUNTIME_CONFIG & changes.keys()
        with self._swap:
            if runtime and self.pipeline is not None:
                self.pipeline = self.pipeline.with_runtime_config(new.config, runtime)
            self.settings = new
        return SetParametersResult(successful=True)

    def close(self) -> None:
        """Stop the inference thread (bounded wait)."""
        self.stop.set()
        if self.worker is not None:
            self.worker.join(timeout=10.0)


class PastaNode(PastaNodeMixin, Node):
    """The plain node: configured and active from construction (see the module docstring)."""

    def __init__(self, stop: threading.Event) -> None:
        Node.__init__(self, "pasta_node")
        self.init_pasta(stop)
        self.configure()
        self.activate()


def spin_until_stopped(node_class, args: list[str]) -> int:
    """Init rclpy, build ``node_class(stop)`` and spin it until SIGINT/SIGTERM (exit 0); a bad
    parameter or model at construction: one ``error:`` line, exit 2."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = node_class(stop)
    except USER_ERRORS as exc:
        print(f"pasta_node: error: {exc}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    # inline: only the camera (and camera_info) subscriptions, in their own groups; the
    # default group (timer, parameters, life-cycle transitions) and the blocking group run
    # in the pool as under rclpy's MultiThreadedExecutor, so a slow transition or parameter
    # change never holds the camera
    executor = InlineExecutor(blocking=[node.blocking_group, node.default_callback_group],
                              threads=4)
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as exc:  # noqa: BLE001 - a failing callback must not end the node
                node.get_logger().error(f"callback failed: {exc!r}",
                                        throttle_duration_sec=5.0)
    finally:
        node.get_logger().info("shutting down")
        node.close()
        executor.shutdown(timeout_sec=5.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pasta_node``: exit 0 on SIGINT/SIGTERM, 2 on bad parameters/model."""
    return spin_until_stopped(PastaNode, sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
