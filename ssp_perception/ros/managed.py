"""ssp_node as a managed (lifecycle) node: the node's start-up phases, run on transitions.

``ssp_node --managed`` starts ``ManagedSegmentationNode`` (``ros/node.py``: this mixin, rclpy's
``LifecycleNodeMixin`` and ``SegmentationNode``) in the *unconfigured* state, with only its
parameters, the ``reset`` service, ``/diagnostics`` and the lifecycle services. The
transitions run the phases of the plain node:

* configure: validate the parameters, load the model, warm it up, create the streams (their
  publishers are lifecycle publishers, disabled) and ``class_info``. A failure returns FAILURE
  with the reason in the log and in ``/diagnostics``, and undoes whatever was created: the
  node is unconfigured, never half-loaded.
* activate: enable the publishers, publish ``class_info``, subscribe to the inputs and start
  the workers. Frames were not seen since the last deactivate, so every stream that had
  processed frames resets its temporal state first (its next status: ``RESET_MANUAL``,
  ``reset_detail`` "node activated ...").
* deactivate: unsubscribe, stop the workers after the frame in progress, disable the
  publishers, drop every stream's temporal state and release cached memory (``gc``, glibc's
  free heap, the CUDA cache). The model stays loaded: activate takes milliseconds.
* cleanup: unload the model and destroy the streams. shutdown (from any state): the same,
  then the process exits with code 0. An unexpected error in a transition goes through
  rclpy's error processing, which unloads everything (back to unconfigured).

Parameters that the plain node fixes at start (model, device, topics, ...) can be set while
the managed node is unconfigured or inactive; while it is active they are refused with a
message saying to deactivate first. Set while inactive, they take effect at the next activate,
which then reloads the model (configure's checks apply; a failure unloads it).
"""

from __future__ import annotations

import ctypes
import gc
import os
import time
import traceback
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import Executor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
import torch

from . import conversions
from .errors import StartupError
from .params import NodeConfig, plain_value
from .ros_cli import RCLError
from .worker import window_values

# Read-only in both modes: the diagnostics timer exists in every lifecycle state.
NODE_LIFETIME_PARAMETERS = ("diagnostics_period_s",)
ACTIVATED_NOTE = "node activated: frames between deactivate and activate were not seen"
# After the shutdown transition the process keeps spinning this long, so that the response of
# the change_state call that asked for it reaches the caller before the participant goes.
LINGER_S = 0.2


class ManagedNodeMixin:
    """Lifecycle transitions over the phases of ``SegmentationNode`` (see the module docstring).

    Mixed into ``ManagedSegmentationNode`` before rclpy's ``LifecycleNodeMixin``, whose
    ``on_activate`` / ``on_deactivate`` enable and disable the lifecycle publishers.
    """

    finalized = False
    """True once the shutdown transition ran: the process may exit."""

    # -- construction: the unconfigured state ------------------------------------------------

    def _start(self) -> None:
        self._declare()
        period = self._values["diagnostics_period_s"]
        try:   # the configs are checked at configure; the timer's period is needed now
            self.config = NodeConfig(diagnostics_period_s=period)
        except ValueError as err:
            raise StartupError(str(err)) from None
        self._stale: set[str] = set()      # configure-time parameters set while inactive
        self._last_error = ""
        self._activations = 0
        self._create_services()
        self.get_logger().info("managed node unconfigured: configure loads the model, "
                               "activate starts processing")

    def _read_only(self, spec: Any) -> bool:
        return spec.read_only and spec.name in NODE_LIFETIME_PARAMETERS

    @property
    def lifecycle_state(self) -> str:
        """Return the current lifecycle state label ("unconfigured", "active", ...)."""
        machine = getattr(self, "_state_machine", None)
        return "unconfigured" if machine is None else machine.current_state[1]

    @property
    def _device(self) -> str:
        config = getattr(self, "config", None)   # None when the declaration failed
        return "cpu" if config is None else config.device

    @property
    def loaded(self) -> bool:
        """Return True while a model is loaded: the node is configured (inactive or active)."""
        return hasattr(self, "segmenter")

    # -- transitions -------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Validate the parameters, load the model, create the streams; undo all on failure."""
        try:
            self._configure_phases()
        except StartupError as err:
            return self._failed("configure", str(err))
        except Exception:  # noqa: B902 - reported with its traceback, the node left clean
            return self._failed("configure", traceback.format_exc())
        self._last_error = ""
        self.get_logger().info(f"configured: {', '.join(self.workers)} with "
                               f"{self._summary()}; {memory_text(self._device)}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Enable the publishers, subscribe and start the workers (streams reset first)."""
        if self._stale:
            names = ", ".join(sorted(self._stale))
            self.get_logger().info(f"{names} changed while inactive: reloading")
            self._unload()
            try:
                self._configure_phases()
            except StartupError as err:
                # ERROR, not FAILURE: inactive needs a model, and the old one is gone.
                self._failed("activate (reload)", str(err))
                return TransitionCallbackReturn.ERROR
        for worker in self.workers.values():
            if worker.stats.processed:
                worker.request_reset(ACTIVATED_NOTE)
        try:
            super().on_activate(state)          # LifecycleNodeMixin: enable the publishers
            self._publish_class_info()
            self._start_inputs()
        except Exception:  # noqa: B902 - e.g. invalid qos_overrides; back to inactive
            self._stop_inputs()
            super().on_deactivate(state)
            return self._failed("activate", traceback.format_exc(), unload=False)
        self._activations += 1
        self._last_error = ""
        self.get_logger().info(f"active: segmenting {', '.join(self.workers)}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop inference and the workers; keep the model; release what can be released."""
        self._stop_inputs()
        super().on_deactivate(state)            # LifecycleNodeMixin: disable the publishers
        for worker in self.workers.values():
            worker.stream.reset("manual")       # frees the state now; activate notes why
        release_memory(self._device)
        self.get_logger().info(f"inactive: model kept; {memory_text(self._device)}")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload the model and destroy the streams."""
        self._unload()
        self.get_logger().info(f"unconfigured: model unloaded; "
                               f"{memory_text(self._device)}")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload everything (from any state); the process exits after this transition."""
        self._unload()
        self.finalized = True
        self.get_logger().info(f"finalized from {state.label}: exiting")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unload everything after an error in a transition: back to unconfigured."""
        self._unload()
        if not self._last_error:
            self._last_error = f"error while leaving {state.label}"
        self.get_logger().error(f"error processing: model unloaded, node unconfigured "
                                f"({self._last_error})")
        return TransitionCallbackReturn.SUCCESS

    def _configure_phases(self) -> None:
        try:
            self._configure()
            self._load()
            self._create_outputs()
        except BaseException:
            self._unload()
            raise
        self._stale.clear()

    def _failed(self, transition: str, reason: str,
                unload: bool = True) -> TransitionCallbackReturn:
        if unload:
            self._unload()
        self._last_error = f"{transition} failed: {reason.strip()}"
        self.get_logger().error(self._last_error)
        return TransitionCallbackReturn.FAILURE

    def _unload(self) -> None:
        """Undo configure: stop and destroy the streams, drop the model, release memory."""
        self._stop_inputs()
        self._destroy_outputs()
        for name in ("segmenter", "meta", "model_id", "palette"):
            self.__dict__.pop(name, None)
        release_memory(self._device)

    def destroy_publisher(self, publisher: Any) -> bool:
        """Destroy a publisher, and forget it if it is a lifecycle publisher."""
        getattr(self, "_managed_entities", set()).discard(publisher)
        return super().destroy_publisher(publisher)

    def _create_output_publisher(self, msg_type: type, topic: str, qos: Any,
                                 **kwargs: Any) -> Any:
        # Disabled until activate: publishing while inactive is a no-op.
        return self.create_lifecycle_publisher(msg_type, topic, qos, **kwargs)

    def destroy_node(self) -> None:
        """Unload (Ctrl-C in any state), then destroy the node."""
        self._unload()
        super().destroy_node()

    # -- parameters --------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        fixed = sorted(p.name for p in params if self._configure_time(p.name))
        if fixed and self.lifecycle_state == "active":
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)} cannot change while the node is active (the model is "
                f"reloaded or the streams re-created): deactivate first "
                f"(ros2 lifecycle set {self.get_fully_qualified_name()} deactivate), set it, "
                f"then activate"))
        return super()._validate_parameters(params)

    def _apply_parameters(self, params: list[Parameter]) -> None:
        if not self.loaded:   # unconfigured: configure reads the values
            changes = {p.name: plain_value(p.value) for p in params if p.name in self._specs}
            self._values.update(changes)
            if changes:
                self.get_logger().info(f"parameters changed (used at configure): {changes}")
            return
        self._stale.update(p.name for p in params if self._configure_time(p.name))
        super()._apply_parameters(params)

    def _configure_time(self, name: str) -> bool:
        spec = self._specs.get(name)
        return spec is not None and spec.read_only and name not in NODE_LIFETIME_PARAMETERS

    # -- diagnostics -------------------------------------------------------------------------

    def _model_diagnostic(self) -> Any:
        state = self.lifecycle_state
        values = {"lifecycle_state": state, "activations": self._activations,
                  "last_transition_error": self._last_error}
        values.update(memory_values(self._device))
        if self.loaded:
            values.update(self._model_values())
            hardware_id, level = self.model_id, "ok"
            message = {"active": "active: model loaded, processing frames",
                       "inactive": "inactive: model loaded, not subscribed (activate to "
                                   "process frames)"}.get(state, f"{state}: model loaded")
            if self._stale:
                message += (f"; {', '.join(sorted(self._stale))} changed: the model is "
                            f"reloaded on activate")
        else:
            hardware_id = ""
            level, message = (("error", self._last_error) if self._last_error else
                              ("ok", f"{state}: no model loaded (configure loads it)"))
        return conversions.diagnostic_status(f"{self.get_fully_qualified_name()}: model",
                                             hardware_id, level, message, values)

    def _stream_diagnostic(self, worker: Any, now: float) -> Any:
        if self.lifecycle_state == "active":
            return super()._stream_diagnostic(worker, now)
        st, frames, elapsed = worker.take_window()
        values = window_values(st, frames, elapsed)
        values["lifecycle_state"] = self.lifecycle_state
        return conversions.diagnostic_status(
            f"{self.get_fully_qualified_name()}: {worker.stream_id}", worker.stream_id, "ok",
            f"{self.lifecycle_state}: not subscribed", values)


def spin_until_finalized(executor: Executor, node: ManagedNodeMixin) -> None:
    """Spin until the shutdown transition ran, then a moment more for its service response."""
    while not node.finalized:
        try:
            executor.spin_once(timeout_sec=0.5)
        except RCLError as err:
            # Jazzy's rclpy (7.x) raises out of its change_state service when a transition is
            # not valid from the current state (Kilted answers success=false). A supervisor's
            # wrong request must not kill the node: say so and keep serving; that request
            # gets no answer.
            if "not registered" not in str(err):
                raise
            node.get_logger().warning(f"refused a lifecycle transition that is not valid in "
                                      f"state {node.lifecycle_state!r}: {err}")
    deadline = time.monotonic() + LINGER_S
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=LINGER_S / 4)


def release_memory(device: str) -> None:
    """Return freed memory: Python's cycles, glibc's free heap pages, the CUDA cache."""
    gc.collect()
    if _LIBC is not None:
        # Freed tensors below glibc's mmap threshold stay in the heap, counted in the RSS,
        # until the allocator trims it; this hands those pages back to the system.
        _LIBC.malloc_trim(0)
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def memory_values(device: str) -> dict[str, float]:
    """Return the process's resident memory and, on CUDA, torch's allocated/reserved MiB."""
    values = {"rss_mb": rss_mb()}
    if device.startswith("cuda") and torch.cuda.is_available():
        values["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        values["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return values


def memory_text(device: str) -> str:
    """Return :func:`memory_values` for the log, e.g. "RSS 412 MiB"."""
    values = memory_values(device)
    text = f"RSS {values['rss_mb']:.0f} MiB"
    if "cuda_reserved_mb" in values:
        text += (f", CUDA {values['cuda_allocated_mb']:.0f} MiB allocated / "
                 f"{values['cuda_reserved_mb']:.0f} MiB reserved")
    return text


def rss_mb(pid: int | str = "self") -> float:
    """Return the resident set size of process ``pid`` in MiB (Linux /proc; NaN elsewhere)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _load_libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim   # glibc only (musl has no malloc_trim)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()
