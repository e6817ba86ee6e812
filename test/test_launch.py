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
ARGUMENTS = {"camera_topic", "namespace", "params_file", "model", "device", "use_sim_time"}


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
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used == ARGUMENTS, "every argument is used and nothing undeclared is read"
    (node,) = _calls(tree, "Node")
    assert _keyword(node, "package").value == "ssp_perception"
    assert _keyword(node, "executable").value == "ssp_node"
    assert "uav.yaml" in LAUNCH_FILE.read_text()
    # Relative "image" remapped to the camera topic: the node itself never hard-codes topics.
    (remap,) = _keyword(node, "remappings").elts
    assert remap.elts[0].value == "image"


def test_launch_file_imports_only_the_launch_api():
    tree = ast.parse(LAUNCH_FILE.read_text())
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom)}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
              for a in n.names}
    assert roots <= {"launch", "launch_ros"}


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
