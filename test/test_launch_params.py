"""uav.launch.py with a params file: the file decides, launch arguments override only when given.

Starts the real launch file (through the launch API, as ``ros2 launch`` does) in a child
process and asks the running ssp_node for its parameters. launch / launch_ros come with a ROS 2
install and have no PyPI wheels, so the module skips where they are missing.
"""

import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installed (ROS 2 install only)")
from rcl_interfaces.srv import GetParameters  # noqa: E402, I100
import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from ssp_perception.artifact import save_artifact  # noqa: E402
from ssp_perception.classes import UAVID  # noqa: E402
from ssp_perception.config import preset  # noqa: E402
from ssp_perception.models import create_model  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "uav.launch.py"
CHECKED = ("model_path", "device", "dtype", "num_threads")
# What `ros2 launch <file> name:=value ...` does, without needing the ros2 CLI.
RUNNER = """
import sys
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
args = dict(a.split(":=", 1) for a in sys.argv[2:])
service = LaunchService()
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=args.items()))
sys.exit(service.run())
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two tiny model artifacts and a params file naming the first one."""
    tmp = tmp_path_factory.mktemp("launch_params")
    first, second = tmp / "first.safetensors", tmp / "second.safetensors"
    save_artifact(first, create_model(preset("lite", input_size=(64, 96))), UAVID)
    shutil.copy(first, second)
    params = tmp / "my.yaml"
    # "cpu:0" is a device the launch file never writes itself: seeing it proves the file won.
    params.write_text("/**:\n  ros__parameters:\n"
                      f"    model_path: {first}\n    device: 'cpu:0'\n    dtype: bfloat16\n"
                      "    num_threads: 1\n")
    return {"first": str(first), "second": str(second), "params": str(params)}


def _parameters(arguments, namespace, timeout=120.0):
    """Launch uav.launch.py with ``arguments``; return the CHECKED parameters of its node."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    launch = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(LAUNCH_FILE), f"namespace:={namespace}",
         "camera_topic:=/launch_params/image", *arguments],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("launch_params_probe", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        client = node.create_client(GetParameters, f"/{namespace}/ssp_node/get_parameters")
        deadline = time.monotonic() + timeout
        values = None
        while values is None and time.monotonic() < deadline and launch.poll() is None:
            # The node answers parameter requests only once its model is loaded and it spins.
            if client.wait_for_service(timeout_sec=0.5):
                future = client.call_async(GetParameters.Request(names=list(CHECKED)))
                executor.spin_until_future_complete(future, timeout_sec=10.0)
                if future.done():
                    values = {name: _value(v) for name, v in zip(CHECKED, future.result().values)}
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGINT)
        output, _ = launch.communicate(timeout=60)
    assert values is not None, f"ssp_node never answered; launch output:\n{output[-3000:]}"
    return values


def _value(v):
    return {2: v.integer_value, 4: v.string_value}.get(v.type, v)


def test_params_file_decides_when_no_argument_is_given(files):
    got = _parameters([f"params_file:={files['params']}"], "lp_file")
    assert got == {"model_path": files["first"], "device": "cpu:0", "dtype": "bfloat16",
                   "num_threads": 1}


def test_given_arguments_override_the_params_file(files):
    got = _parameters([f"params_file:={files['params']}", f"model:={files['second']}",
                       "device:=cpu", "dtype:=float32"], "lp_args")
    assert got == {"model_path": files["second"], "device": "cpu", "dtype": "float32",
                   "num_threads": 1}
