"""Launch smoke test: uav.launch.py starts ssp_node, which answers frames with labels.

Twice: the plain node, and the managed node with ``managed:=true`` (the launch file's
autostart configures and activates it, so frames get labels just the same).

Runs under launch_testing (``launch_test test/test_node_launch.py`` or pytest with the
launch_testing plugin). launch, launch_ros and launch_testing come with a ROS 2 install and
have no PyPI wheels, so the module skips where they are missing.
"""

from pathlib import Path
import tempfile
import time
import unittest

import pytest

# launch_ros first: from the repository root the launch/ folder imports as a namespace package.
pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 install only)")
launch_testing = pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed (ROS 2 install only)")
import launch  # noqa: E402, I100

from launch.actions import IncludeLaunchDescription, SetLaunchConfiguration  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, qos_profile_sensor_data, QoSProfile  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from ssp_msgs.msg import ClassInfo, SegmentationStatus  # noqa: E402

from ssp_perception.artifact import save_artifact  # noqa: E402
from ssp_perception.classes import UAVID  # noqa: E402
from ssp_perception.config import preset  # noqa: E402
from ssp_perception.models import create_model  # noqa: E402
from ssp_perception.ros import conversions  # noqa: E402
from ssp_perception.synthetic import synthetic_frames  # noqa: E402

pytestmark = pytest.mark.slow

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "uav.launch.py"
SIZE = (96, 128)


@pytest.mark.launch_test
@launch_testing.parametrize("managed", ["false", "true"])
def generate_test_description(managed):
    """Launch uav.launch.py with a tiny random model, in namespace /uav."""
    model = Path(tempfile.mkdtemp()) / "tiny.safetensors"
    save_artifact(model, create_model(preset("lite", input_size=(64, 96))), UAVID)
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={"model": str(model), "camera_topic": "/test_cam/image",
                          "namespace": "uav", "managed": managed}.items())
    # Unloading torch's shared libraries can take more than launch's default 5 s between
    # SIGINT and SIGTERM on a loaded CI machine; the node itself stops in milliseconds.
    patience = SetLaunchConfiguration("sigterm_timeout", "60")
    return launch.LaunchDescription([patience, include, launch_testing.actions.ReadyToTest()])


class TestNodeAnswers(unittest.TestCase):
    """While the launch runs: frames in on the camera topic, labels out in the namespace."""

    @classmethod
    def setUpClass(cls):
        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.probe = rclpy.create_node("launch_probe", context=cls.context)
        cls.executor = SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.probe)

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.probe.destroy_node()
        rclpy.shutdown(context=cls.context)

    def test_labels_and_class_info(self, managed):
        labels, info, statuses = [], [], []
        self.probe.create_subscription(SegmentationStatus, "/uav/status", statuses.append, 10)
        self.probe.create_subscription(Image, "/uav/labels", labels.append, 10)
        self.probe.create_subscription(
            ClassInfo, "/uav/class_info", info.append,
            QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        pub = self.probe.create_publisher(Image, "/test_cam/image", qos_profile_sensor_data)
        frames = [f for f, _ in synthetic_frames(SIZE, 50)]
        deadline = time.monotonic() + 120.0   # model loading dominates
        k = 0
        while not (labels and info and statuses) and time.monotonic() < deadline:
            msg = conversions.array_to_msg(frames[k % len(frames)], "rgb8",
                                           conversions.Header(frame_id="cam"))
            msg.header.stamp = self.probe.get_clock().now().to_msg()
            pub.publish(msg)
            k += 1
            self.executor.spin_once(timeout_sec=0.2)
        self.assertTrue(labels, "no labels from the launched node")
        self.assertEqual((labels[0].height, labels[0].width), SIZE)
        self.assertEqual(list(info[0].class_names), list(UAVID.names))
        self.assertTrue(statuses, "no status from the launched node")
        # The managed node says it is active; the plain node has no lifecycle state.
        self.assertEqual(statuses[-1].lifecycle_state, "active" if managed == "true" else "")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After the launch: the node exited as Ctrl-C ends it, after its cleanup."""

    def test_exit_code(self, proc_info):
        # launch stops its processes with SIGINT; ssp_node ends every SIGINT with 130
        # (ssp_perception.cli), whoever sends it.
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[130])
