"""Measure how many camera frames one process delivers to another over the real ROS graph.

A camera driver and ``ssp_node`` are separate processes on a drone. Large images between
processes depend on the DDS transport (shared memory segment size, UDP fragments) and on the
QoS of both ends, so this tool measures rather than assumes:

    python -m ssp_perception.ros.delivery --size 1280x720 --sub-qos best_effort
    python -m ssp_perception.ros.delivery --size 1280x720 --profile config/fastdds_large_frames.xml

starts a subscriber process, then a publisher process that sends rgb8 frames at a fixed rate,
and prints one JSON object: frames sent, received, missing and latency. ``--matrix`` measures
the grid of sizes, rates, QoS pairs and profiles that docs/NODE.md reports. The ``publish`` and
``subscribe`` sub-commands are the two roles; tests use ``publish`` as a camera driver.

Frame ``k`` carries the stamp ``t0 + k / rate`` (the time it is sent), so the receiver's stamps
say exactly which frames are missing.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
import itertools
import json
import os
from pathlib import Path
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from ..cli import run_main

QOS_CHOICES = ("reliable", "best_effort")
SIDES = ("both", "publisher", "subscriber")
# Fast DDS 3 (Kilted on) reads the first name, Fast DDS 2 (Humble, Iron, Jazzy) the second;
# Fast DDS 3 warns that the second is deprecated, so it is set only where it is read.
PROFILE_ENV = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS2_DISTROS = ("humble", "iron", "jazzy")
DEFAULT_PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_frames.xml"
_TOPIC = "delivery/image"


def parse_size(text: str) -> tuple[int, int]:
    """Return ``WxH`` (e.g. ``1280x720``) as (width, height)."""
    try:
        wid, hgt = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 1280x720, got {text!r}") from None
    if wid <= 0 or hgt <= 0:
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return wid, hgt


def profile_env(profile: str | os.PathLike | None,
                base: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``base`` (default: this process's env) with the Fast DDS profile set or removed."""
    env = dict(os.environ if base is None else base)
    for name in PROFILE_ENV:
        env.pop(name, None)
    if profile:
        names = PROFILE_ENV if env.get("ROS_DISTRO") in FASTDDS2_DISTROS else PROFILE_ENV[:1]
        env.update({name: str(Path(profile).resolve()) for name in names})
    return env


def _qos(reliability: str, depth: int) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    policy = {"reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def _frames(width: int, height: int, count: int = 4) -> list[Any]:
    """Return ``count`` rgb8 Image messages of noise (incompressible, like a real scene)."""
    import array

    from sensor_msgs.msg import Image
    rng = np.random.default_rng(0)
    msgs = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (height, width, 3), np.uint8)
        msgs.append(Image(height=height, width=width, encoding="rgb8", is_bigendian=0,
                          step=3 * width, data=array.array("B", pixels.tobytes())))
    return msgs


def publish(topic: str, size: tuple[int, int], rate: float, duration: float, qos: str,
            frame_id: str = "camera", wait_match_s: float = 10.0) -> dict[str, Any]:
    """Publish ``rate * duration`` rgb8 frames at ``rate`` Hz; return what was sent.

    Waits up to ``wait_match_s`` for a first subscriber (a camera driver does not, but a
    measurement that starts before discovery measures discovery). Frame k is stamped
    ``t0_ns + k * period_ns`` on the system clock and sent at that instant.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    rclpy.init()
    try:
        node = rclpy.create_node("delivery_publisher")
        pub = node.create_publisher(Image, topic, _qos(qos, 1))
        frames = _frames(*size)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        t_wait = time.monotonic()
        while pub.get_subscription_count() == 0 and time.monotonic() - t_wait < wait_match_s:
            executor.spin_once(timeout_sec=0.05)
        matched_after = time.monotonic() - t_wait
        period_ns = int(round(1e9 / rate))
        count = int(round(rate * duration))
        t0_ns = time.time_ns() + 50_000_000
        mono0 = time.monotonic() + 0.05
        late = 0
        for k in range(count):
            delay = mono0 + k * period_ns / 1e9 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late += 1
            msg = frames[k % len(frames)]
            stamp = t0_ns + k * period_ns
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            msg.header.frame_id = frame_id
            pub.publish(msg)
        time.sleep(0.5)   # let the last frames leave before the participant goes away
        return {"sent": count, "t0_ns": t0_ns, "period_ns": period_ns, "qos": qos,
                "width": size[0], "height": size[1], "rate_hz": rate,
                "subscribers": pub.get_subscription_count(),
                "matched_after_s": round(matched_after, 3), "sent_late": late}
    finally:
        rclpy.try_shutdown()


def subscribe(topic: str, qos: str, depth: int = 1, stop: threading.Event | None = None,
              ready: Any = None) -> dict[str, Any]:
    """Count frames on ``topic`` until ``stop`` is set; return their stamps and latencies.

    ``ready`` is called once the subscription exists (the caller then starts the publisher).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    stop = stop or threading.Event()
    stamps: list[int] = []
    latency_ms: list[float] = []

    def on_image(msg: Image) -> None:
        now = time.time_ns()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        stamps.append(stamp)
        latency_ms.append((now - stamp) / 1e6)

    rclpy.init()
    try:
        node = rclpy.create_node("delivery_subscriber")
        node.create_subscription(Image, topic, on_image, _qos(qos, depth))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        if ready is not None:
            ready()
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)
        return {"stamps_ns": stamps, "latency_ms": latency_ms, "qos": qos, "depth": depth}
    finally:
        rclpy.try_shutdown()


@dataclass(frozen=True)
class Case:
    """One measurement: frame size, rate, QoS of both ends and where the profile applies."""

    width: int
    height: int
    rate_hz: float
    duration_s: float
    pub_qos: str
    sub_qos: str
    profile: str = ""
    """Fast DDS XML profile; "" = the middleware's defaults."""
    profile_side: str = "both"


def _role_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "ssp_perception.ros.delivery", *args]


def summarize(sent: dict[str, Any], received: dict[str, Any]) -> dict[str, Any]:
    """Return counts (sent, received, missing, after discovery) and latency percentiles."""
    period, t0, count = sent["period_ns"], sent["t0_ns"], sent["sent"]
    index = sorted({int(round((s - t0) / period)) for s in received["stamps_ns"]})
    got = [k for k in index if 0 <= k < count]
    first = got[0] if got else count
    after = count - first
    lat = np.asarray(received["latency_ms"], float)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 2) if lat.size else None

    return {"sent": count, "received": len(got),
            "received_pct": round(100.0 * len(got) / max(count, 1), 1),
            "first_received": first if got else None,
            "sent_after_discovery": after,
            "received_after_discovery_pct": round(100.0 * len(got) / after, 1) if after else 0.0,
            "latency_ms_p50": pct(50), "latency_ms_p95": pct(95),
            "publisher_matched_after_s": sent["matched_after_s"], "sent_late": sent["sent_late"]}


def measure(case: Case, topic: str = _TOPIC, depth: int = 1,
            timeout_s: float = 60.0) -> dict[str, Any]:
    """Run one case as two processes (subscriber first) and return its summary."""
    base = profile_env(None)
    pub_env = profile_env(case.profile if case.profile_side in ("both", "publisher") else None,
                          base)
    sub_env = profile_env(case.profile if case.profile_side in ("both", "subscriber") else None,
                          base)
    size = f"{case.width}x{case.height}"
    sub = subprocess.Popen(_role_command(["subscribe", "--topic", topic, "--qos", case.sub_qos,
                                          "--depth", str(depth)]),
                           env=sub_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
    try:
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscriber process did not start")
        pub = subprocess.run(
            _role_command(["publish", "--topic", topic, "--size", size,
                           "--rate", str(case.rate_hz), "--duration", str(case.duration_s),
                           "--qos", case.pub_qos]),
            env=pub_env, capture_output=True, text=True, timeout=timeout_s)
        if pub.returncode != 0:
            last = (pub.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"the publisher process failed ({pub.returncode}): {last}")
        time.sleep(0.5)
        received_text, _ = sub.communicate("stop\n", timeout=timeout_s)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
    result = summarize(json.loads(pub.stdout), json.loads(received_text))
    case_dict = asdict(case)
    case_dict["profile"] = Path(case.profile).name if case.profile else "none"
    return {**case_dict, **result}


def matrix(profile: str, duration_s: float) -> Iterator[Case]:
    """Yield the cases docs/NODE.md reports: sizes x rates x QoS pairs x profile."""
    sizes = ((640, 360), (1280, 720))
    qos_pairs = (("reliable", "best_effort"), ("reliable", "reliable"),
                 ("best_effort", "best_effort"))
    for (wid, hgt), rate, (pq, sq), prof in itertools.product(
            sizes, (10.0, 20.0), qos_pairs, ("", profile)):
        yield Case(wid, hgt, rate, duration_s, pq, sq, prof)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (measure by default; publish / subscribe roles)."""
    p = argparse.ArgumentParser(
        prog="python -m ssp_perception.ros.delivery",
        description="Measure frame delivery between two ROS processes; prints JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("role", nargs="?", default="measure",
                   choices=("measure", "publish", "subscribe"),
                   help="measure = start both roles as processes and summarise")
    p.add_argument("--topic", default=_TOPIC, help="image topic")
    p.add_argument("--size", type=parse_size, default=(1280, 720), help="frame size WxH")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of frames")
    p.add_argument("--qos", choices=QOS_CHOICES, default="reliable",
                   help="reliability of this role (publish / subscribe)")
    p.add_argument("--pub-qos", choices=QOS_CHOICES, default="reliable",
                   help="publisher reliability (measure)")
    p.add_argument("--sub-qos", choices=QOS_CHOICES, default="best_effort",
                   help="subscriber reliability (measure)")
    p.add_argument("--depth", type=int, default=1, help="subscriber history depth")
    p.add_argument("--profile", default="",
                   help=f"Fast DDS XML profile for the processes, e.g. {DEFAULT_PROFILE.name}; "
                        "'' = middleware defaults")
    p.add_argument("--profile-side", choices=SIDES, default="both",
                   help="which process gets the profile")
    p.add_argument("--wait-match", type=float, default=10.0,
                   help="publish: wait this long for a first subscriber")
    p.add_argument("--matrix", action="store_true",
                   help="measure every size x rate x QoS pair, with and without --profile "
                        "(default profile: config/fastdds_large_frames.xml)")
    return p


def _check_profile(parser: argparse.ArgumentParser, profile: str) -> None:
    if profile and not Path(profile).is_file():
        parser.error(f"--profile {profile!r}: no such file")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one role, one measurement, or the matrix; print JSON to stdout."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_main(lambda: _run(parser, args), "delivery",
                    runtime_errors=(RuntimeError, subprocess.SubprocessError),
                    interrupted="measurement abandoned")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.duration <= 0 or args.depth < 1:
        parser.error("--rate and --duration must be positive and --depth at least 1")
    if args.role == "publish":
        print(json.dumps(publish(args.topic, args.size, args.rate, args.duration, args.qos,
                                 wait_match_s=args.wait_match)))
        return 0
    if args.role == "subscribe":
        stop = threading.Event()

        def wait_for_stop() -> None:
            sys.stdin.readline()
            stop.set()

        threading.Thread(target=wait_for_stop, daemon=True).start()
        result = subscribe(args.topic, args.qos, args.depth, stop,
                           ready=lambda: print("ready", flush=True))
        print(json.dumps(result))
        return 0
    if args.matrix:
        profile = args.profile or str(DEFAULT_PROFILE)
        _check_profile(parser, profile)
        for case in matrix(profile, args.duration):
            print(json.dumps(measure(case, depth=args.depth)), flush=True)
        return 0
    _check_profile(parser, args.profile)
    case = Case(args.size[0], args.size[1], args.rate, args.duration, args.pub_qos,
                args.sub_qos, args.profile, args.profile_side)
    print(json.dumps(measure(case, depth=args.depth)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
