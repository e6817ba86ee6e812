"""ssp_node as its own process, fed by a camera-like publisher process: the real ROS graph.

A drone's camera driver is another process. These tests start ``ssp_node`` as a subprocess
with its defaults (bundled lite demo model, ``input_reliability`` auto) and a separate
publisher process (``python -m ssp_perception.ros.delivery publish``) that sends 1280x720 rgb8
frames, then read the node's ``status``:

- 10 Hz, RELIABLE publisher (the default of most camera drivers); the node's input
  reliability ``auto`` follows it;
- 20 Hz, BEST_EFFORT publisher: the node cannot keep up on a small CPU, so it drops by the
  latest-frame policy, and every frame sent is accounted for in ``status``;
- 10 Hz, BEST_EFFORT, the same node.

Both processes get config/fastdds_large_frames.xml, as scripts/env.sh and uav.launch.py give
it and as docs/NODE.md tells camera drivers to do.

"Reached the node" = received (then processed, or dropped by the latest-frame policy); frames
before the first received one are discovery, not delivery.
"""

import json
import os
from pathlib import Path
import random
import subprocess
import sys
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ssp_msgs.msg import ClassInfo, SegmentationStatus

from ssp_perception.ros.delivery import profile_env
from ssp_perception.testing import spin_until

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_frames.xml"
TOPIC = "/graph_cam/image"
STATUS = "/graph_cam/status"
CLASS_INFO = "/graph_cam/class_info"
SIZE = "1280x720"


def _node_command():
    # In namespace /graph_cam: input /graph_cam/image, outputs /graph_cam/status, ...
    return [sys.executable, "-m", "ssp_perception.ros.node", "--ros-args",
            "-r", "__ns:=/graph_cam"]


class Graph:
    """One ssp_node process on a private domain, and a probe that records its status.

    A context manager: leaving the ``with`` block stops the node and the probe.
    """

    def __init__(self, profile):
        self.domain = random.randint(150, 230)
        self.env = profile_env(profile, dict(os.environ, ROS_DOMAIN_ID=str(self.domain),
                                             ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                                             PYTHONUNBUFFERED="1"))
        self.node = subprocess.Popen(_node_command(), env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        self.probe = rclpy.create_node("graph_probe", context=self.context)
        self.statuses = []
        self.probe.create_subscription(
            SegmentationStatus, STATUS, self.statuses.append,
            QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))
        # Created after the status reader: see _wait_status_link.
        self.class_info = []
        self.probe.create_subscription(
            ClassInfo, CLASS_INFO, self.class_info.append,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.probe)

    def _wait_status_link(self, timeout=180.0):
        # The node publishes a status only for frames, and a status published before its
        # writer and the probe's reader have matched is lost (volatile): the run's first
        # statuses would be missing and its accounting would start at a later frame.
        # Discovery is not symmetric, so the probe seeing the node's status writer does not
        # say that the writer has seen the probe. The latched class_info does: its delivery
        # shows that both sides have matched their class_info endpoints, which each side
        # announced (in order, over the reliable discovery channel) after its status one: the
        # probe creates its status reader first, the node its status writer.
        spin_until(self.executor, lambda: self.class_info, timeout, self.node)
        assert self.node.poll() is None, self._node_output()
        assert self.class_info, f"no class_info from ssp_node within {timeout:.0f} s"

    def run(self, rate, seconds, qos, timeout=240.0):
        """Publish from another process; return what it sent and the statuses of its frames.

        Also returns the last status before the run (None for the first run).
        """
        self._wait_status_link()
        before = len(self.statuses)
        pub = subprocess.Popen(
            [sys.executable, "-m", "ssp_perception.ros.delivery", "publish", "--topic", TOPIC,
             "--size", SIZE, "--rate", str(rate), "--duration", str(seconds), "--qos", qos,
             "--wait-match", "180"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        spin_until(self.executor, lambda: pub.poll() is not None, timeout, self.node)
        assert self.node.poll() is None, self._node_output()
        if pub.poll() is None:
            pub.kill()
        out, err = pub.communicate()
        assert pub.returncode == 0, err[-2000:]
        sent = json.loads(out)
        quiet_since = time.monotonic()
        count = len(self.statuses)
        while time.monotonic() - quiet_since < 2.0:     # the node finishes its last frame
            self.executor.spin_once(timeout_sec=0.05)
            if len(self.statuses) != count:
                count, quiet_since = len(self.statuses), time.monotonic()
        return sent, self.statuses[before:], self.statuses[before - 1] if before else None

    def _node_output(self):
        out, _ = self.node.communicate(timeout=10)
        return f"ssp_node exited with {self.node.returncode}:\n{out[-3000:]}"

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        """Stop the node (SIGINT, as Ctrl-C) and the probe."""
        self.executor.shutdown()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)
        if self.node.poll() is None:
            self.node.send_signal(2)
            try:
                self.node.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.node.kill()
                self.node.communicate()


def _stamp_ns(status):
    return status.header.stamp.sec * 1_000_000_000 + status.header.stamp.nanosec


def _account(sent, statuses, baseline=None):
    """Return the run's numbers: frames after discovery and what the node's counters say."""
    assert statuses, "the node published no status for this run"
    first = round((_stamp_ns(statuses[0]) - sent["t0_ns"]) / sent["period_ns"])
    last = statuses[-1]
    names = ("frames_received", "frames_processed", "frames_dropped", "frames_rejected",
             "frames_missing")
    counts = {n: getattr(last, n) - (getattr(baseline, n) if baseline else 0) for n in names}
    # Frames the node had counted (received or missing) by the first status the probe saw.
    at_first = sum(getattr(statuses[0], n) - (getattr(baseline, n) if baseline else 0)
                   for n in ("frames_received", "frames_missing"))
    gap_resets = [s.reset_detail for s in statuses[1:]
                  if s.reset_reason == SegmentationStatus.RESET_TIME_GAP]
    # Where the time went, for the failure message: per-frame latency of the first frames.
    total_ms = [round(s.total_ms) for s in statuses[:8]]
    return {"after_discovery": sent["sent"] - first, "counted_at_first_status": at_first,
            "gap_resets": gap_resets, **counts, "first_total_ms": total_ms}


def _check_delivery(run, min_fraction, gap_resets=False):
    print(json.dumps(run))      # the measured numbers, with pytest -s
    reached = run["frames_received"]
    assert reached >= min_fraction * run["after_discovery"], run
    # Every frame that reached the node was processed or counted.
    assert reached == (run["frames_processed"] + run["frames_dropped"]
                       + run["frames_rejected"]), run
    if not gap_resets:
        assert not run["gap_resets"], run


def test_reliable_camera_process_at_10_hz_reaches_the_node():
    # With the profile, as scripts/env.sh and uav.launch.py give every process: reliable over
    # the default UDP transport also delivers on an idle machine (docs/NODE.md table), but its
    # repairs stall for ~1 s under heavy CPU load (76/100 measured at load average 12).
    with Graph(profile=PROFILE) as graph:
        sent, statuses, _ = graph.run(rate=10, seconds=10, qos="reliable")
        _check_delivery(_account(sent, statuses), 0.95)


def test_best_effort_camera_with_the_profile_at_10_and_20_hz():
    with Graph(profile=PROFILE) as graph:
        sent, statuses, _ = graph.run(rate=20, seconds=10, qos="best_effort")
        run = _account(sent, statuses)
        # Twice the rate the node keeps up with on 2 cores: a processing stall beyond
        # stream.max_gap_s may reset the state there, by design; delivery is what is checked.
        _check_delivery(run, 0.95, gap_resets=True)
        # The counts add up to what the publisher sent: received + never arrived. The first
        # status the probe sees need not be the node's first frame (one the latest-frame
        # policy dropped has no status; the status link may match a frame late), so the
        # frames the node counted before it make the upper bound (measured on Jazzy: 193
        # received + 4 missing, 194 sent from the first status on).
        counted = run["frames_received"] + run["frames_missing"]
        before_first = run["counted_at_first_status"] - 1
        assert run["after_discovery"] <= counted <= run["after_discovery"] + before_first, run
        # The same node, 10 Hz. Its last status above is final (the node was idle since), so
        # counters are taken from there; the pause between the runs is not this run's loss.
        sent, statuses, previous = graph.run(rate=10, seconds=10, qos="best_effort")
        _check_delivery(_account(sent, statuses, baseline=previous), 0.95)
