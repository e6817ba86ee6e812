"""The pinned requirements: one home for the non-ROS pins, and the environment is what they say.

requirements/common.txt holds every package that does not come from ROS 2; kilted.txt and
jazzy.txt include it and add only their distribution's ROS 2 wheels, so a package added once
serves both distributions (and a line added to a distribution file by mistake fails here).
"""

from importlib.metadata import PackageNotFoundError, version
import os
from pathlib import Path
import re

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
DISTROS = ("kilted", "jazzy")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


def _lines(path):
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _pins(path):
    return dict(PIN.match(line).groups() for line in _lines(path) if not line.startswith("-r"))


def test_common_pins_every_non_ros_package_exactly_and_no_ros_wheel():
    lines = _lines(REQ / "common.txt")
    assert lines and all(PIN.match(line) for line in lines), "every line is name==version"
    assert not [line for line in lines if line.lower().startswith("ros-")]


@pytest.mark.parametrize("distro", DISTROS)
def test_a_distribution_file_adds_only_its_ros_wheels_to_common(distro):
    lines = _lines(REQ / f"{distro}.txt")
    assert lines[0] == "-r common.txt"
    rest = lines[1:]
    assert rest and all(PIN.match(line) for line in rest), "every line is name==version"
    strays = [line for line in rest if not line.startswith("ros-")]
    assert not strays, f"non-ROS pins belong in requirements/common.txt: {strays}"
    others = tuple(f"ros-{d}-" for d in DISTROS if d != distro)
    other = [line for line in rest if line.startswith(others)]
    assert not other, f"{distro}.txt pins another distribution's wheels: {other}"
    assert any(line.startswith(f"ros-{distro}-rclpy==") for line in rest)


def test_this_environment_has_exactly_the_pinned_versions():
    distro = os.environ.get("ROS_DISTRO", "kilted")
    if distro not in DISTROS:
        pytest.skip(f"ROS_DISTRO={distro}: not an environment that make setup builds")
    pins = {**_pins(REQ / "common.txt"), **_pins(REQ / f"{distro}.txt")}
    wrong = {}
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"pinned vs installed (run make setup ROS_DISTRO={distro}): {wrong}"
