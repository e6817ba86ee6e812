"""The camera subscription of one stream, with a reliability that follows its publishers.

``input_reliability`` ``auto`` (the default) subscribes RELIABLE when every discovered
publisher is reliable and BEST_EFFORT otherwise, and re-creates the subscription when the
publishers change, the way ``ros2 bag record`` adapts to what it records. Why: a best-effort
reader of a reliable camera driver is legal but loses most large frames between processes
(measured: 1 of 50 1280x720 frames at 10 Hz, Fast DDS defaults), while a reliable reader of
the same writer gets all of them; a reliable reader of a best-effort writer does not connect at
all. ``reliable`` and ``best_effort`` fix the policy. History is KEEP_LAST with depth 1 in
every mode (the latest-frame policy), durability VOLATILE.

``qos_overrides.<topic>.subscription.{history,depth,reliability}`` still apply: an explicit
reliability override pins the policy, as if ``input_reliability`` named it.

ROS 2 Humble keeps the QoS event classes in ``rclpy.qos_event`` (renamed ``rclpy.event_handler``
in Iron) and has no ``matched`` subscription event: there the node's periodic publisher check
(``QOS_CHECK_PERIOD_S``) alone follows the publishers. Written against Humble's rclpy sources;
untested on Humble (no Humble wheels on the build machine's registry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import copy
import inspect
import time
from typing import Any

try:  # Iron and later
    from rclpy.event_handler import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
except ImportError:  # Humble: the same classes under their old module name
    from rclpy.qos_event import QoSRequestedIncompatibleQoSInfo, SubscriptionEventCallbacks
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile,
                       ReliabilityPolicy)
from rclpy.qos_overriding_options import QoSOverridingOptions

# Longest overlap of the old and the new subscription when the reliability changes.
HANDOVER_S = 2.0
_POLICY = {"reliable": ReliabilityPolicy.RELIABLE, "best_effort": ReliabilityPolicy.BEST_EFFORT}
# False on Humble, whose subscriptions report no match events.
HAS_MATCHED_EVENT = "matched" in inspect.signature(SubscriptionEventCallbacks).parameters
__all__ = ["QoSRequestedIncompatibleQoSInfo", "InputSubscription", "choose_reliability",
           "describe_publishers", "policy_name", "subscription_events"]


def choose_reliability(mode: str, offered: Sequence[ReliabilityPolicy]) -> ReliabilityPolicy:
    """Return the reader reliability for ``mode`` given the publishers' ``offered`` policies.

    ``auto`` is RELIABLE only when there is at least one publisher and all are reliable: a
    reliable reader would not connect to a best-effort writer, and with no publisher yet best
    effort connects to whichever kind comes.
    """
    if mode != "auto":
        return _POLICY[mode]
    if offered and all(p == ReliabilityPolicy.RELIABLE for p in offered):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


def policy_name(policy: Any) -> str:
    """Return a QoS policy enum as its lower-case ROS name ("reliable", "keep_last", ...)."""
    return getattr(policy, "name", str(policy)).lower()


def describe_publishers(infos: Sequence[Any]) -> str:
    """Return the publishers of a topic and their QoS in one line, e.g. for the log."""
    if not infos:
        return "no publishers"
    parts = []
    for info in infos:
        qos = info.qos_profile
        # DDS discovery carries no history or depth, and the node name only once the
        # publisher's node is known: leave out what is unknown.
        node = (f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                if info.node_name != "_NODE_NAME_UNKNOWN_" else "a publisher")
        parts.append(f"{node} ({policy_name(qos.reliability)}, {policy_name(qos.durability)})")
    return f"{len(infos)} publisher(s): " + ", ".join(parts)


def subscription_events(incompatible_qos: Callable[[Any], None],
                        matched: Callable[[Any], None],
                        has_matched: bool = HAS_MATCHED_EVENT) -> SubscriptionEventCallbacks:
    """Return the event callbacks of a camera subscription; ``matched`` only where rclpy has it."""
    if has_matched:
        return SubscriptionEventCallbacks(incompatible_qos=incompatible_qos, matched=matched)
    return SubscriptionEventCallbacks(incompatible_qos=incompatible_qos)


class InputSubscription:
    """Own one stream's camera subscription and re-create it when its reliability must change."""

    def __init__(self, node: Any, msg_type: type, topic: str, callback: Callable[[Any], None],
                 mode: str, on_incompatible: Callable[[Any], None]) -> None:
        self._node, self._msg_type, self._callback = node, msg_type, callback
        self._on_incompatible = on_incompatible
        self.mode = mode
        self.publishers = "no publishers"
        """The last discovered publishers and their QoS (log line, diagnostics)."""
        self._seen: tuple[Any, ...] | None = None
        # Make before break: the old subscription stays until the new one has matched the
        # publishers, and a frame that comes through both is delivered once.
        self._retiring: Any = None
        self._retire_when = 0
        self._retire_by = 0.0
        self._last_stamp: tuple[int, int] | None = None
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=choose_reliability(mode, ()),
                         durability=DurabilityPolicy.VOLATILE)
        # The first subscription declares the qos_overrides parameters (rclpy reads and
        # applies them); later ones re-apply history and depth from the same parameters.
        self.subscription = self._create(topic, qos, QoSOverridingOptions.with_default_policies())
        self.topic = self.subscription.topic_name          # resolved and remapped
        requested = f"qos_overrides.{self.topic}.subscription.reliability"
        # A reliability the user gave explicitly (params file, -p, launch) wins over auto.
        self.pinned = requested in getattr(node, "_parameter_overrides", {})
        if self.pinned:
            self.mode = policy_name(self.subscription.qos_profile.reliability)

    @property
    def reliability(self) -> str:
        """Return the current reader reliability: reliable or best_effort."""
        return policy_name(self.subscription.qos_profile.reliability)

    def describe(self) -> str:
        """Return the policy and why, e.g. "auto: reliable" or "reliable (qos_overrides)"."""
        if self.pinned:
            return f"{self.reliability} (qos_overrides)"
        reliability = self.reliability
        return reliability if self.mode == reliability else f"auto: {reliability}"

    def update(self) -> str | None:
        """Look at the publishers; re-create the subscription if needed; return a log line.

        Returns None when neither the publishers nor the policy changed.
        """
        self._retire()
        infos = self._node.get_publishers_info_by_topic(self.topic)
        seen = tuple(sorted((bytes(i.endpoint_gid), i.node_name, i.node_namespace,
                             int(i.qos_profile.reliability)) for i in infos))
        if seen == self._seen:
            return None
        self._seen = seen
        self.publishers = describe_publishers(infos)
        want = choose_reliability(self.mode, [i.qos_profile.reliability for i in infos])
        changed = not self.pinned and want != self.subscription.qos_profile.reliability
        if changed:
            qos = copy.copy(self.subscription.qos_profile)
            qos.reliability = want
            if self._retiring is not None:
                self._node.destroy_subscription(self._retiring)
            self._retiring = self.subscription
            self._retire_when, self._retire_by = len(infos), time.monotonic() + HANDOVER_S
            self.subscription = self._create(self.topic, qos, QoSOverridingOptions(
                (QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH)))
        return (f"{self.topic}: {self.publishers}; input reliability {self.describe()}"
                + (" (subscription re-created)" if changed else ""))

    def _retire(self) -> None:
        """Destroy the old subscription once the new one hears the publishers (or after 2 s)."""
        if self._retiring is None:
            return
        if (self.subscription.get_publisher_count() >= self._retire_when
                or time.monotonic() > self._retire_by):
            self._node.destroy_subscription(self._retiring)
            self._retiring = None

    def _deliver(self, msg: Any) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if self._retiring is not None and self._last_stamp is not None and (
                stamp <= self._last_stamp):
            return   # the same frame through the other subscription of a handover
        self._last_stamp = stamp
        self._callback(msg)

    def _create(self, topic: str, qos: QoSProfile, overrides: QoSOverridingOptions) -> Any:
        events = subscription_events(self._incompatible, lambda _info: self._node_update())
        return self._node.create_subscription(self._msg_type, topic, self._deliver, qos,
                                              event_callbacks=events,
                                              qos_overriding_options=overrides)

    def _incompatible(self, info: Any) -> None:
        before = self.subscription
        self._node_update()
        if self.subscription is before:     # auto did not resolve it: the user must
            self._on_incompatible(info)

    def _node_update(self) -> None:
        line = self.update()
        if line is not None:
            self._node.get_logger().info(line)

    def close(self) -> None:
        """Destroy the subscription, and one still retiring from a handover."""
        for sub in (self._retiring, self.subscription):
            if sub is not None:
                self._node.destroy_subscription(sub)
        self._retiring = None
