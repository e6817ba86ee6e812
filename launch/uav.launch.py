"""Launch ssp_node for one UAV camera with the documented defaults of config/uav.yaml.

    ros2 launch ssp_perception uav.launch.py camera_topic:=/uav/camera/image_raw

Outputs appear as `labels`, `color`, `overlay`, `confidence`, `status` and `class_info` in
`namespace`. The `model`, `device`, `dtype` and `use_sim_time` arguments override the params
file only when given; left empty, the params file decides.

Every process this file starts gets the Fast DDS transport profile `transport_profile`
(default: $FASTDDS_DEFAULT_PROFILES_FILE if set, else config/fastdds_large_frames.xml, whose
shared-memory segment carries 4K rgb8 frames); `transport_profile:=''` starts them with the
middleware's defaults. The camera driver's process needs the same profile (docs/NODE.md).

`managed:=true` starts ssp_node as a managed (lifecycle) node; with `autostart:=true` (the
default) the launch configures it and, once it is inactive, activates it, so one command still
brings it up. `autostart:=false` leaves it unconfigured for a lifecycle manager or
`ros2 lifecycle set`.
"""

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, OpaqueFunction,
                            RegisterEventHandler, SetEnvironmentVariable,
                            UnsetEnvironmentVariable)
from launch.events import matches_action
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

# Launch argument -> ssp_node parameter, applied over the params file only when non-empty.
OVERRIDES = {"model": "model_path", "device": "device", "dtype": "dtype",
             "use_sim_time": "use_sim_time"}
# Fast DDS 3 (Kilted on) reads the first name; Fast DDS 2 (Humble, Iron, Jazzy) the second.
PROFILE_VARIABLES = {"FASTDDS_DEFAULT_PROFILES_FILE": None,
                     "FASTRTPS_DEFAULT_PROFILES_FILE": ("humble", "iron", "jazzy")}


def _transport_actions(context):
    """Return the actions that give (or take away) the transport profile of started processes."""
    profile = LaunchConfiguration("transport_profile").perform(context)
    distro = EnvironmentVariable("ROS_DISTRO", default_value="").perform(context)
    actions = []
    for name, distros in PROFILE_VARIABLES.items():
        if profile and (distros is None or distro in distros):
            actions.append(SetEnvironmentVariable(name, profile))
        else:
            actions.append(UnsetEnvironmentVariable(name))
    return actions


def _true(context, name):
    return LaunchConfiguration(name).perform(context).lower() in ("true", "1")


def _node(context):
    """Return ssp_node with the params file and the launch arguments that were given."""
    given = {param: LaunchConfiguration(arg).perform(context) for arg, param in OVERRIDES.items()}
    overrides = {param: value for param, value in given.items() if value}
    if "use_sim_time" in overrides:
        overrides["use_sim_time"] = overrides["use_sim_time"].lower() in ("true", "1")
    managed = _true(context, "managed")
    node = (LifecycleNode if managed else Node)(
        package="ssp_perception",
        executable="ssp_node",
        name="ssp_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=[("image", LaunchConfiguration("camera_topic"))],
        arguments=["--managed"] if managed else [],
        output="screen",
    )
    if not (managed and _true(context, "autostart")):
        return [node]
    return [node, *_autostart(node)]


def _autostart(node):
    """Return the actions that configure ``node`` and activate it once it is inactive."""
    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition_id))

    # Once, and only after configuring: a later deactivate also ends in inactive, and a
    # supervisor that deactivates the node must not see the launch activate it again.
    activate = OnStateTransition(target_lifecycle_node=node, start_state="configuring",
                                 goal_state="inactive", handle_once=True,
                                 entities=[change(Transition.TRANSITION_ACTIVATE)])
    # The handler first: the configure request must not overtake it.
    return [RegisterEventHandler(activate), change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    """Return the launch description: ten arguments, the transport profile and one node."""
    share = FindPackageShare("ssp_perception")
    arguments = [
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="input sensor_msgs/Image topic (remapped to 'image')"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and its outputs"),
        DeclareLaunchArgument(
            "params_file", default_value=PathJoinSubstitution([share, "config", "uav.yaml"]),
            description="ROS 2 parameters file of ssp_node"),
        DeclareLaunchArgument("model", default_value="",
                              description="model artifact (.safetensors); empty = params file"),
        DeclareLaunchArgument("device", default_value="",
                              description="torch device: cpu, cuda, cuda:N; empty = params file"),
        DeclareLaunchArgument("dtype", default_value="",
                              description="float32, float16 or bfloat16; empty = params file"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true when replaying a bag; empty = params file"),
        DeclareLaunchArgument(
            "transport_profile",
            default_value=EnvironmentVariable(
                "FASTDDS_DEFAULT_PROFILES_FILE",
                default_value=PathJoinSubstitution([share, "config", "fastdds_large_frames.xml"])),
            description="Fast DDS XML profile of every started process; empty = DDS defaults"),
        DeclareLaunchArgument("managed", default_value="false",
                              description="true: ssp_node as a managed (lifecycle) node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with managed:=true, configure and activate it at "
                                          "launch; false: leave it unconfigured"),
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_transport_actions),
                                          OpaqueFunction(function=_node)])
