"""Console-script entry points of ssp_perception: signal handlers first, then the tool.

Each function is what ``setup.py`` names for one console script. Importing this module costs
nothing, so Ctrl-C or SIGTERM during the seconds of ``import torch`` / ``import rclpy``
already ends with 130/143 and one line (see :mod:`ssp_perception.cli`).
"""

from typing import NoReturn

from .cli import entry


def ssp_node() -> NoReturn:
    """Run ``ssp_node``."""
    entry("ssp_node", "ssp_perception.ros.node")


def ssp_replay() -> NoReturn:
    """Run ``ssp_replay``."""
    entry("ssp_replay", "ssp_perception.ros.replay.cli")


def ssp_bench() -> NoReturn:
    """Run ``ssp_bench``."""
    entry("ssp_bench", "ssp_perception.tools.bench")
