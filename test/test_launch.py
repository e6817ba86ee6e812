"""uav.launch.py and config/uav.yaml, checked without a ROS graph.

The file is parsed with ``ast`` (launch / launch_ros are not on PyPI, so they are missing
here); where they are installed, the description is also built for real. The launch_testing
smoke test that starts the node lives in test_node_launch.py.
"""

import ast
import importlib.util
from pathlib import Path

import pytest
from rcl_interfaces.msg import ParameterType

from ssp_perception.ros.params import build_configs, parameter_specs
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "uav.launch.py"
PARAMS_FILE = ROOT / "config" / "uav.yaml"
ARGUMENTS = {"camera_topic", "namespace", "params_file", "model", "device", "dtype",
             "use_sim_time", "transport_profile", "managed", "autostart"}
# Arguments read as booleans through the launch file's _true(context, name).
FLAGS = {"managed", "autostart"}
# Arguments that override the params file only when given (default "" = the file decides).
OVERRIDES = {"model": "model_path", "device": "device", "dtype": "dtype",
             "use_sim_time": "use_sim_time"}


def _load_launch_module():
    """Import the launch file's module-level names without launch installed (ast only)."""
    tree = ast.parse(LAUNCH_FILE.read_text())
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            names[node.targets[0].id] = ast.literal_eval(node.value)
    return type("LaunchModule", (), names)


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _keyword(call, name):
    return next(k.value for k in call.keywords if k.arg == name)


def test_launch_file_declares_the_documented_arguments_and_one_node():
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    declared = [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")]
    assert sorted(declared) == sorted(ARGUMENTS)
    for call in _calls(tree, "DeclareLaunchArgument"):
        assert any(k.arg == "description" for k in call.keywords), call.args[0].value
    for call in _calls(tree, "DeclareLaunchArgument"):
        if call.args[0].value in OVERRIDES:
            assert _keyword(call, "default_value").value == "", call.args[0].value
    literal = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")
               if isinstance(c.args[0], ast.Constant)}
    flags = {c.args[1].value for c in _calls(tree, "_true")}
    assert flags == FLAGS
    module = _load_launch_module()
    assert module.OVERRIDES == OVERRIDES
    used = literal | set(module.OVERRIDES) | flags
    assert used == ARGUMENTS, "every argument is used and nothing undeclared is read"
    # One node, a plain Node or a LifecycleNode with the same options.
    (node,) = [c for c in ast.walk(tree) if isinstance(c, ast.Call)
               and any(k.arg == "executable" for k in c.keywords)]
    assert {node.func.body.id, node.func.orelse.id} == {"LifecycleNode", "Node"}
    assert _keyword(node, "package").value == "ssp_perception"
    assert _keyword(node, "executable").value == "ssp_node"
    assert "uav.yaml" in LAUNCH_FILE.read_text()
    assert "fastdds_large_frames.xml" in LAUNCH_FILE.read_text()
    assert (ROOT / "config" / "fastdds_large_frames.xml").is_file()
    # Relative "image" remapped to the camera topic: the node itself never hard-codes topics.
    (remap,) = _keyword(node, "remappings").elts
    assert remap.elts[0].value == "image"


def test_launch_file_imports_only_the_launch_api():
    tree = ast.parse(LAUNCH_FILE.read_text())
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom)}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
              for a in n.names}
    assert roots <= {"launch", "launch_ros", "lifecycle_msgs"}


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


PY_TYPES = {ParameterType.PARAMETER_BOOL: bool, ParameterType.PARAMETER_INTEGER: int,
            ParameterType.PARAMETER_DOUBLE: float, ParameterType.PARAMETER_STRING: str,
            ParameterType.PARAMETER_INTEGER_ARRAY: list,
            ParameterType.PARAMETER_STRING_ARRAY: list}


def test_params_file_keys_are_declared_parameters_of_the_right_type():
    data = yaml.safe_load(PARAMS_FILE.read_text())
    assert list(data) == ["/**"] and list(data["/**"]) == ["ros__parameters"]
    values = dict(_flatten(data["/**"]["ros__parameters"]))
    specs = {s.name: s for s in parameter_specs()}
    unknown = sorted(set(values) - set(specs))
    assert not unknown, f"config/uav.yaml sets parameters ssp_node does not declare: {unknown}"
    for name, value in values.items():
        assert type(value) is PY_TYPES[specs[name].type_], (name, value)
    build_configs(values)   # the configs accept every value
    assert values["device"] == "cpu" and values["model_path"] == ""


def test_launch_description_builds_where_launch_ros_exists():
    pytest.importorskip("launch_ros", reason="launch_ros is not installed here (not on PyPI)")
    spec = importlib.util.spec_from_file_location("uav_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.get_launch_arguments()}
    assert names == ARGUMENTS


PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def _launch_environment(monkeypatch, profile, distro, preset_profile=""):
    """Return the profile variables uav.launch.py leaves for the processes it starts."""
    launch = pytest.importorskip("launch", reason="launch is not installed (not on PyPI)")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI)")
    spec = importlib.util.spec_from_file_location("uav_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # launch's context.environment is os.environ: monkeypatch restores what the actions change.
    for name in PROFILE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if preset_profile:
        monkeypatch.setenv(PROFILE_VARIABLES[0], preset_profile)
    monkeypatch.setenv("ROS_DISTRO", distro)
    context = launch.LaunchContext()
    context.launch_configurations["transport_profile"] = profile
    for action in module._transport_actions(context):
        action.execute(context)
    return {name: context.environment.get(name) for name in PROFILE_VARIABLES}


def test_launch_sets_the_transport_profile_or_removes_it(monkeypatch, tmp_path):
    profile = str(tmp_path / "p.xml")
    # Fast DDS 3 warns that the FASTRTPS_ name is deprecated: set it only where it is read.
    assert _launch_environment(monkeypatch, profile, "kilted") == {
        "FASTDDS_DEFAULT_PROFILES_FILE": profile, "FASTRTPS_DEFAULT_PROFILES_FILE": None}
    assert _launch_environment(monkeypatch, profile, "jazzy") == {
        "FASTDDS_DEFAULT_PROFILES_FILE": profile, "FASTRTPS_DEFAULT_PROFILES_FILE": profile}
    assert _launch_environment(monkeypatch, "", "kilted", preset_profile=profile) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": None, "FASTRTPS_DEFAULT_PROFILES_FILE": None}


def _node_actions(managed, autostart):
    """Return the actions uav.launch.py's _node gives for the managed/autostart arguments."""
    launch = pytest.importorskip("launch", reason="launch is not installed (not on PyPI)")
    pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI)")
    spec = importlib.util.spec_from_file_location("uav_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = launch.LaunchContext()
    for argument in module.generate_launch_description().get_launch_arguments():
        context.launch_configurations[argument.name] = "".join(
            s.perform(context) for s in argument.default_value)
    context.launch_configurations.update(managed=managed, autostart=autostart)
    return module._node(context)


def test_managed_launch_configures_then_activates_once():
    (plain,) = _node_actions("false", "true")     # skips here without launch_ros
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch_ros.actions import LifecycleNode, Node
    from lifecycle_msgs.msg import Transition

    assert type(plain) is Node and "--managed" not in plain.cmd[1:]
    (bare,) = _node_actions("true", "false")
    assert isinstance(bare, LifecycleNode)
    node, handler, configure = _node_actions("true", "true")
    assert isinstance(node, LifecycleNode)
    assert isinstance(handler, RegisterEventHandler) and isinstance(configure, EmitEvent)
    assert configure.event.transition_id == Transition.TRANSITION_CONFIGURE
    (activate,) = handler.event_handler.entities
    assert activate.event.transition_id == Transition.TRANSITION_ACTIVATE
    assert handler.event_handler.handle_once
